"""Issue 18 §2(b): thread scaling of the model-alone eval forward (SST-2 dev, batches of 64, no_grad, eval mode),
Hydra-small vs BERT-small: wall clock per batch at 1 and 2 threads, threads and models interleaved, min and median.
The min is the least disturbed run: on a loaded machine the 2-thread medians mostly measure the other jobs.

    PYTHONPATH=. .venv/bin/python benchmarks/perf18/thread_scaling.py --repeats 9
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
    p.add_argument("--repeats", type=int, default=9)
    args = p.parse_args()
    logging.set_verbosity_error()
    tok = AutoTokenizer.from_pretrained(REPO / "assets/tokenizer/bert-base-uncased")
    _, dev, nl = tokenized_glue_splits(str(REPO / "assets/glue_sample"), "sst2", tok, 128, 32, None)
    col = DataCollatorWithPadding(tok)
    batches = [dict(col([dev[i] for i in range(s, min(s + 64, len(dev)))])) for s in range(0, len(dev), 64)]
    models = {}
    for n, src in (("hydra", "configs/hydra-small.json"), ("bert", "configs/bert-small.json")):
        torch.manual_seed(0)
        models[n] = build_classifier(load_classifier_config(str(REPO / src), {}, nl)).eval()
    times = {(n, t): [] for n in models for t in (1, 2)}
    loads = []
    with torch.no_grad():
        for r in range(args.repeats + 1):
            for t in (1, 2):
                torch.set_num_threads(t)
                for n, m in models.items():
                    w = time.perf_counter()
                    for b in batches:
                        m(**b)
                    if r:
                        times[n, t].append((time.perf_counter() - w) * 1e3 / len(batches))
            loads.append(float(open("/proc/loadavg").read().split()[0]))
    print(f"# wall ms per batch of 64, {args.repeats} interleaved repeats; loadavg {min(loads):.1f}-{max(loads):.1f}")
    print("| model | 1 thread min | 2 threads min | speed-up (min) | 1 thread median | 2 threads median |")
    print("|---|---:|---:|---:|---:|---:|")
    for n in models:
        a, b = times[n, 1], times[n, 2]
        print(f"| {n} | {min(a):.1f} | {min(b):.1f} | {min(a) / min(b):.2f}x | {statistics.median(a):.1f} | "
              f"{statistics.median(b):.1f} |")
    for t in (1, 2):
        print(f"Hydra/BERT speed at {t} thread(s): {min(times['bert', t]) / min(times['hydra', t]):.2f} (min), "
              f"{statistics.median(times['bert', t]) / statistics.median(times['hydra', t]):.2f} (median)")


if __name__ == "__main__":
    main()
