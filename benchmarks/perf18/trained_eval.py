"""Issue 18 §2(d): does training change the cost of Hydra's eval forward? benchmarks/benchmark.py --glue evaluates after
one epoch of training at lr 1e-3; eval_gap.py evaluates the random initialization. Trains a copy of each model for
one epoch on the first 1024 SST-2 sentences (batch 32, AdamW lr 1e-3, as the Trainer would), then times the eval
forward over the dev batches of 64 of the initial and the trained weights, interleaved, with and without
torch.set_flush_denormal, 1 thread, CPU time. Also reports the smallest |decay exponent| statistics of the trained
mixer (dt and A).

    PYTHONPATH=. .venv/bin/python benchmarks/perf18/trained_eval.py
"""

import copy
import statistics
import time

import torch
import torch.nn.functional as F
from transformers.utils import logging

from _common import batches, classifier, sst2


def train_one_epoch(model, train_batches):
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for b in train_batches:
        loss = model(**b).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


def main():
    logging.set_verbosity_error()
    torch.set_num_threads(1)
    _, col, train, dev, nl = sst2(train_samples=1024)
    train_batches = batches(col, train, 32)
    dev_batches = batches(col, dev, 64)
    models = {}
    for name in ("hydra", "bert"):
        init = classifier(name, nl)
        models[f"{name} init"] = init
        models[f"{name} trained"] = train_one_epoch(copy.deepcopy(init), train_batches)
    mixer = models["hydra trained"].hydra.encoder.layer[0].mixer
    print(f"# trained hydra layer 0: A = {(-torch.exp(mixer.A_log)).tolist()}, softplus(dt_bias) = "
          f"{F.softplus(mixer.dt_bias).tolist()}")
    times = {(k, fd): [] for k in models for fd in (False, True)}
    with torch.no_grad():
        for r in range(6):
            for fd in (False, True):
                torch.set_flush_denormal(fd)
                for k, m in models.items():
                    c = time.process_time()
                    for b in dev_batches:
                        m(**b)
                    if r:
                        times[k, fd].append((time.process_time() - c) * 1e3 / len(dev_batches))
    torch.set_flush_denormal(False)
    print("| weights | ms per dev batch (CPU, median) | with flush_denormal |")
    print("|---|---:|---:|")
    for k in models:
        print(f"| {k} | {statistics.median(times[k, False]):.1f} | {statistics.median(times[k, True]):.1f} |")
    print(f"# loadavg {open('/proc/loadavg').read().strip()}")


if __name__ == "__main__":
    main()
