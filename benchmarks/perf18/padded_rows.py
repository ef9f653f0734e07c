"""Issue 18 §2 table, padded rows ("before" column): HydraModel vs BertModel (sdpa) of benchmarks/benchmark.py's pairs
on full-length random rows, steps interleaved in one process, process CPU time and wall clock (median of repeats).
CPU time of one thread is what a loaded machine can still measure; wall clock with 2 threads needs a quiet one.

    PYTHONPATH=. .venv/bin/python benchmarks/perf18/padded_rows.py --threads 1 --repeats 3
"""

import argparse
import statistics
import time
from pathlib import Path

import torch

from _common import REPO, benchmark

build = benchmark.build
make_step = benchmark.make_step

ROWS = [("small", 128, 32, False), ("small", 128, 32, True), ("small", 512, 8, False), ("base", 512, 4, False),
        ("base", 2048, 1, False), ("small", 8192, 1, False), ("small", 8192, 1, True)]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rows", type=int, nargs="+", default=None, help="indices into ROWS (default: all)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {args.threads} thread(s); Hydra/BERT of tokens per CPU-second and per wall-second, medians of "
          f"{args.repeats}")
    print("| pair | L x batch | mode | Hydra CPU ms | BERT CPU ms | **ratio (CPU)** | ratio (wall) | loadavg |")
    print("|---|---|---|---:|---:|---:|---:|---|")
    for i, (pair, L, batch, train) in enumerate(ROWS):
        if args.rows is not None and i not in args.rows:
            continue
        steps = {}
        for kind in ("hydra", "bert"):
            torch.manual_seed(0)
            steps[kind] = make_step(build(kind, pair, L, None), batch, L, train)
        times = {k: [] for k in steps}
        for r in range(args.repeats + 1):
            for k, step in steps.items():
                w, c = time.perf_counter(), time.process_time()
                step()
                if r:
                    times[k].append((time.process_time() - c, time.perf_counter() - w))
        med = {k: (statistics.median(c for c, _ in v), statistics.median(w for _, w in v)) for k, v in times.items()}
        print(f"| {pair} | {L} x {batch} | {'fwd+bwd' if train else 'forward'} | {med['hydra'][0] * 1e3:.0f} | "
              f"{med['bert'][0] * 1e3:.0f} | **{med['bert'][0] / med['hydra'][0]:.2f}** | "
              f"{med['bert'][1] / med['hydra'][1]:.2f} | {open('/proc/loadavg').read().split()[0]} |", flush=True)


if __name__ == "__main__":
    main()
