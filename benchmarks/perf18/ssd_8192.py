"""Issue 18 §2: the suspected ~15% SSD regression at 1 x 8192. Interleaves, in one process, the torch SSD of main
(at the chunk length mixer_policy picks for 8192 tokens, and at 64) against the version before the padding-free
rewrite (commit 84a74dd: chunk 64, states carried by a Python loop over chunks), forward and forward+backward,
CPU time of 1 thread (min and median of the repeats). The old file is read with `git show`.

    PYTHONPATH=. .venv/bin/python benchmarks/perf18/ssd_8192.py --heads 8 --repeats 7
"""

import argparse
import importlib
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from modeling_hydra.mixer_policy import ssd_chunk_length
from modeling_hydra.ssd_torch import ssd_bidirectional_torch

from _common import REPO, load_package
OLD = "84a74dd"


def load_old():
    """ssd_bidirectional_torch of commit OLD, read with `git show` into a temporary package."""
    folder = Path(tempfile.mkdtemp()) / "old_modeling_hydra"
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    for name in ("ssd_torch", "ssd_chunk_layout"):
        text = subprocess.run(["git", "-C", str(REPO), "show", f"{OLD}:modeling_hydra/{name}.py"], check=True,
                              capture_output=True, text=True).stdout
        (folder / f"{name}.py").write_text(text)
    load_package("old_modeling_hydra", folder)
    return importlib.import_module("old_modeling_hydra.ssd_torch").ssd_bidirectional_torch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seqlen", type=int, default=8192)
    p.add_argument("--heads", type=int, default=8, help="8: hydra small pair (d_inner 512); 24: base")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    old = load_old()
    g = torch.Generator().manual_seed(0)
    L, H, P, N = args.seqlen, args.heads, 64, 64
    x = torch.randn(1, L, H, P, generator=g)
    dt = torch.rand(1, L, 2 * H, generator=g) * 0.1
    A = -torch.rand(H, generator=g) - 0.5
    BC = [torch.randn(1, L, 1, N, generator=g) * 0.3 for _ in range(4)]
    diag = torch.randn(1, L, H, generator=g)
    base = (x, dt[..., :H], dt[..., H:], A, *BC, diag)
    policy_chunk = ssd_chunk_length("torch", 256, L)
    fns = {f"main chunk {policy_chunk} (policy)": lambda a: ssd_bidirectional_torch(*a, policy_chunk),
           "main chunk 64": lambda a: ssd_bidirectional_torch(*a, 64),
           f"{OLD} chunk 64": lambda a: old(*a, 64)}
    ref = fns[f"{OLD} chunk 64"](base)
    for name, f in fns.items():
        err = (f(base) - ref).abs().max().item() / ref.abs().max().item()
        print(f"# {name}: max rel. difference to {OLD} {err:.1e}")
    for mode in ("forward", "forward+backward"):
        times = {k: [] for k in fns}
        for r in range(args.repeats + 1):
            for k, f in fns.items():
                a = [t.clone().requires_grad_(mode != "forward" and t.is_floating_point()) for t in base]
                c = time.process_time()
                if mode == "forward":
                    with torch.no_grad():
                        f(a)
                else:
                    f(a).square().sum().backward()
                if r:
                    times[k].append((time.process_time() - c) * 1e3)
        ref_k = f"{OLD} chunk 64"
        for k, v in times.items():
            print(f"1 x {L}, {H} heads, {mode}: {k}: min {min(v):.1f} ms, median {statistics.median(v):.1f} ms "
                  f"({statistics.median(v) / statistics.median(times[ref_k]):.2f}x {OLD})")
    print(f"# {args.threads} thread(s), loadavg {open('/proc/loadavg').read().strip()}")


if __name__ == "__main__":
    main()
