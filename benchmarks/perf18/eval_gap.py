"""Issue 18 §2: where Trainer.evaluate's time goes for Hydra-small vs BERT-small (SST-2 dev, eval batch 64).

One process, models interleaved (A B A B ...), medians over repeats of wall clock and process CPU time
(`time.process_time`, all threads of this process). Components, each in ms per batch (14 batches of 64; the last
has 40):
  collate       iterating the Trainer's eval dataloader alone (DataCollatorWithPadding)
  forward       model(**batch) under no_grad, model.eval(), on the collated batches (the model alone)
  forward_inf   the same under torch.inference_mode
  forward_train the same with model.train() (dropout on) under no_grad: does eval take another branch?
  layout        Hydra only: sequence_layout.unpad(mask) alone
  evaluate      Trainer.evaluate() / number of batches
  trainer_own   evaluate - collate - forward (prediction_step's own work, gathering, metrics)
Threads: the whole table is measured at each --threads value.

    PYTHONPATH=. .venv/bin/python benchmarks/perf18/eval_gap.py --threads 2 1 --repeats 5 --json out.json
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, DataCollatorWithPadding, PrinterCallback, Trainer, TrainingArguments
from transformers.utils import logging

from modeling_hydra.sequence_layout import unpad

from _common import REPO, benchmark

build_classifier = benchmark.build_classifier
load_classifier_config = benchmark.load_classifier_config
tokenized_glue_splits = benchmark.tokenized_glue_splits


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--eval_samples", type=int, default=None)
    p.add_argument("--hydra_overrides", type=json.loads, default={})
    p.add_argument("--json", default=None)
    args = p.parse_args()
    logging.set_verbosity_error()
    tok = AutoTokenizer.from_pretrained(REPO / "assets/tokenizer/bert-base-uncased")
    _, dev, nl = tokenized_glue_splits(str(REPO / "assets/glue_sample"), "sst2", tok, 128, 32, args.eval_samples)
    collator = DataCollatorWithPadding(tok)
    models = {}
    for name, src, ov in (("hydra", REPO / "configs/hydra-small.json", args.hydra_overrides),
                          ("bert", REPO / "configs/bert-small.json", {})):
        torch.manual_seed(0)
        models[name] = build_classifier(load_classifier_config(str(src), ov, nl))
    tmp = tempfile.mkdtemp()
    targs = TrainingArguments(output_dir=tmp, per_device_eval_batch_size=64, use_cpu=True, report_to="none",
                              disable_tqdm=True, dataloader_num_workers=0, dataloader_pin_memory=False)
    trainers = {n: Trainer(model=m, args=targs, eval_dataset=dev, data_collator=collator) for n, m in models.items()}
    for t in trainers.values():
        t.remove_callback(PrinterCallback)
    loader = trainers["hydra"].get_eval_dataloader()
    batches = [dict(b) for b in loader]
    nb = len(batches)
    masks = [b["attention_mask"] != 0 for b in batches]
    real = sum(int(m.sum()) for m in masks)
    pos = sum(m.numel() for m in masks)
    print(f"# {len(dev)} sentences, {nb} batches, real tokens {real / pos:.1%} of {pos} padded positions; "
          f"padded lengths {[m.shape[1] for m in masks]}")
    lay = [unpad(m) for m in masks]
    print(f"# hydra padding-free rows x width per batch: {[tuple(l.seq_idx.shape) for l in lay]}")

    def fwd(model, mode):
        def run():
            model.train(mode == "train")
            ctx = torch.inference_mode() if mode == "inf" else torch.no_grad()
            with ctx:
                for b in batches:
                    model(**b)
            model.eval()
        return run

    def collate():
        for _ in loader:
            pass

    def layouts():
        for m in masks:
            unpad(m)

    results = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for n in models:  # warm-up
            fwd(models[n], "eval")()
            trainers[n].evaluate()
        runs = {n: {} for n in models}
        for r in range(args.repeats):
            for n, m in models.items():
                parts = {"collate": collate, "forward": fwd(m, "eval"), "forward_inf": fwd(m, "inf"),
                         "forward_train": fwd(m, "train"), "evaluate": trainers[n].evaluate}
                if n == "hydra":
                    parts["layout"] = layouts
                for k, f in parts.items():
                    w, c = timed(f)
                    runs[n].setdefault(k, []).append((w, c))
            print(f"# threads {threads} repeat {r + 1}: hydra evaluate {runs['hydra']['evaluate'][-1][0] * 1e3:.0f} ms, "
                  f"bert {runs['bert']['evaluate'][-1][0] * 1e3:.0f} ms (loadavg {open('/proc/loadavg').read().split()[0]})",
                  flush=True)
        out = {}
        for n, parts in runs.items():
            out[n] = {k: {"wall_ms": statistics.median(w for w, _ in v) * 1e3 / nb,
                          "cpu_ms": statistics.median(c for _, c in v) * 1e3 / nb,
                          "wall_min_ms": min(w for w, _ in v) * 1e3 / nb} for k, v in parts.items()}
            for kind in ("wall_ms", "cpu_ms"):
                out[n]["trainer_own"] = out[n].get("trainer_own", {})
                out[n]["trainer_own"][kind] = (out[n]["evaluate"][kind] - out[n]["collate"][kind]
                                               - out[n]["forward"][kind])
        results[threads] = out
        print(f"\n## {threads} thread(s), ms per batch (median of {args.repeats}; wall / process CPU), loadavg "
              f"{open('/proc/loadavg').read().split()[0]}")
        print("| component | Hydra wall | Hydra CPU | BERT wall | BERT CPU | Hydra/BERT wall |")
        print("|---|---:|---:|---:|---:|---:|")
        for k in ("collate", "layout", "forward", "forward_inf", "forward_train", "trainer_own", "evaluate"):
            h, b = out["hydra"].get(k), out["bert"].get(k)
            bw = f"{b['wall_ms']:.1f}" if b else "-"
            bc = f"{b['cpu_ms']:.1f}" if b else "-"
            ratio = f"{h['wall_ms'] / b['wall_ms']:.2f}" if b and b["wall_ms"] > 0 else "-"
            print(f"| {k} | {h['wall_ms']:.1f} | {h['cpu_ms']:.1f} | {bw} | {bc} | {ratio} |")
        he, be = out["hydra"]["evaluate"]["wall_ms"], out["bert"]["evaluate"]["wall_ms"]
        print(f"evaluate samples/s: hydra {len(dev) / (he * nb / 1e3):.0f}, bert {len(dev) / (be * nb / 1e3):.0f}, "
              f"ratio {be / he:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"loadavg": open("/proc/loadavg").read(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
