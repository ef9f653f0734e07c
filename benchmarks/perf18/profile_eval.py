"""Issue 18 §2(a): torch.profiler of one eval batch (64 SST-2 dev sentences), Hydra-small vs BERT-small.

Profiles (1) one model forward under no_grad + model.eval() and (2) Trainer.evaluate on exactly that batch, and prints
the top ops by self CPU time with call counts, the total number of aten ops, and ops per encoder layer.

    PYTHONPATH=. .venv/bin/python benchmarks/perf18/profile_eval.py --threads 1 --batch_index 1
"""

import argparse
import tempfile
from collections import Counter
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import AutoTokenizer, DataCollatorWithPadding, PrinterCallback, Trainer, TrainingArguments
from transformers.utils import logging

from _common import REPO, benchmark

build_classifier = benchmark.build_classifier
load_classifier_config = benchmark.load_classifier_config
tokenized_glue_splits = benchmark.tokenized_glue_splits


def table(prof, steps, top):
    rows = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in rows) / steps / 1e3
    ncalls = sum(e.count for e in rows) / steps
    rows.sort(key=lambda e: -e.self_cpu_time_total)
    print(f"aten self CPU {total:.1f} ms per step, {ncalls:.0f} aten calls per step")
    print("| op | self ms/step | calls/step | us/call |")
    print("|---|---:|---:|---:|")
    for e in rows[:top]:
        print(f"| {e.key} | {e.self_cpu_time_total / steps / 1e3:.2f} | {e.count / steps:.0f} | "
              f"{e.self_cpu_time_total / max(e.count, 1):.1f} |")
    return total, ncalls


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch_index", type=int, default=1, help="which dev batch of 64 (0-based)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--hydra_overrides", default="{}")
    args = p.parse_args()
    import json
    logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(REPO / "assets/tokenizer/bert-base-uncased")
    _, dev, nl = tokenized_glue_splits(str(REPO / "assets/glue_sample"), "sst2", tok, 128, 32, None)
    dev = dev.select(range(64 * args.batch_index, 64 * (args.batch_index + 1)))
    collator = DataCollatorWithPadding(tok)
    batch = dict(collator([dev[i] for i in range(len(dev))]))
    print(f"# batch: {tuple(batch['input_ids'].shape)}, {int(batch['attention_mask'].sum())} real tokens, "
          f"{args.threads} thread(s), loadavg {open('/proc/loadavg').read().split()[0]}")
    for name, src, ov in (("hydra", "configs/hydra-small.json", json.loads(args.hydra_overrides)),
                          ("bert", "configs/bert-small.json", {})):
        torch.manual_seed(0)
        model = build_classifier(load_classifier_config(str(REPO / src), ov, nl)).eval()
        nlayers = model.config.num_hidden_layers
        with torch.no_grad():
            for _ in range(3):
                model(**batch)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(args.steps):
                    model(**batch)
        print(f"\n### {name}: model forward (no_grad, eval), {nlayers} layers")
        total, ncalls = table(prof, args.steps, args.top)
        print(f"wall of the profiled forward: {prof.profiler.total_average().cpu_time_total if False else ''}")
        tr = Trainer(model=model, eval_dataset=dev, data_collator=collator,
                     args=TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_eval_batch_size=64,
                                            use_cpu=True, report_to="none", disable_tqdm=True))
        tr.remove_callback(PrinterCallback)
        tr.evaluate()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                tr.evaluate()
        print(f"\n### {name}: Trainer.evaluate of the same 64 sentences (one batch)")
        t2, n2 = table(prof, args.steps, 12)
        print(f"Trainer.evaluate adds {t2 - total:.2f} ms and {n2 - ncalls:.0f} aten calls per batch over the forward")


if __name__ == "__main__":
    main()
