"""Issue 18 §2: is the eval gap a property of the dev batches? Model-alone eval forward (no_grad, eval mode), CPU
time, Hydra-small vs BERT-small, interleaved, on: the first 8 train batches of 32 (what BENCHMARKS.md §0 measured),
the dev set in batches of 32, and the dev set in batches of 64 (what Trainer.evaluate runs).

    PYTHONPATH=. .venv/bin/python benchmarks/perf18/batch_regimes.py --threads 1 --repeats 5
"""

import argparse
import statistics
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, DataCollatorWithPadding
from transformers.utils import logging

from _common import REPO, benchmark

build_classifier = benchmark.build_classifier
load_classifier_config = benchmark.load_classifier_config
tokenized_glue_splits = benchmark.tokenized_glue_splits


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(REPO / "assets/tokenizer/bert-base-uncased")
    train, dev, nl = tokenized_glue_splits(str(REPO / "assets/glue_sample"), "sst2", tok, 128, 256, None)
    col = DataCollatorWithPadding(tok)
    cut = lambda ds, bs: [dict(col([ds[i] for i in range(s, min(s + bs, len(ds)))])) for s in range(0, len(ds), bs)]
    regimes = {"train 8x32": cut(train, 32), "dev x32": cut(dev, 32), "dev x64": cut(dev, 64)}
    models = {}
    for n, src in (("hydra", "configs/hydra-small.json"), ("bert", "configs/bert-small.json")):
        torch.manual_seed(0)
        models[n] = build_classifier(load_classifier_config(str(REPO / src), {}, nl)).eval()
    print(f"# {args.threads} thread(s); process CPU time, samples per CPU-second, median of {args.repeats}")
    print("| batches | real tokens / sentence | padded length | Hydra | BERT | Hydra/BERT | best-run ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    with torch.no_grad():
        for name, batches in regimes.items():
            n_s = sum(b["input_ids"].shape[0] for b in batches)
            real = sum(int(b["attention_mask"].sum()) for b in batches) / n_s
            padded = sum(b["input_ids"].numel() for b in batches) / n_s
            t = {n: [] for n in models}
            for r in range(args.repeats + 1):
                for n, m in models.items():
                    c = time.process_time()
                    for b in batches:
                        m(**b)
                    if r:
                        t[n].append(n_s / (time.process_time() - c))
            h, b = statistics.median(t["hydra"]), statistics.median(t["bert"])
            print(f"| {name} | {real:.1f} | {padded:.1f} | {h:.0f} | {b:.0f} | **{h / b:.2f}** | "
                  f"{max(t['hydra']) / max(t['bert']):.2f} |", flush=True)
    print(f"# loadavg {open('/proc/loadavg').read().strip()}")


if __name__ == "__main__":
    main()
