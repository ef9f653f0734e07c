"""Issue 18 §3: the gated RMSNorm (normalize, then gate) in fewer passes. CPU time per call at Hydra-small's eval
shape (2048 slots x d_inner 256, the gate a strided view of in_proj's output), 1 thread, interleaved.

    PYTHONPATH=. .venv/bin/python benchmarks/perf18/gated_norm.py
"""

import statistics
import time

import torch
import torch.nn.functional as F

from modeling_hydra.hydra_mixer import HydraRMSNormGated


def fused(y, gate, weight, eps):
    """y / rms(y) * weight * silu(gate) with one reduction and in-place products (float32 inputs)."""
    inv = torch.linalg.vector_norm(y, dim=-1, keepdim=True).square_().div_(y.shape[-1]).add_(eps).rsqrt_()
    return F.silu(gate).mul_(weight).mul_(y).mul_(inv)


def main():
    torch.set_num_threads(1)
    norm = HydraRMSNormGated(256)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    for slots in (2048, 8192):
        zxbcdt = torch.randn(slots, 776)
        z, y = zxbcdt[:, :256], torch.randn(slots, 256)
        with torch.no_grad():
            ref = norm(y, z)
            out = fused(y, z, norm.weight, norm.eps)
            err = ((out - ref).abs().max() / ref.abs().max()).item()
            fns = {"main": lambda: norm(y, z), "fused": lambda: fused(y, z, norm.weight, norm.eps)}
            times = {k: [] for k in fns}
            for _ in range(50):
                for k, f in fns.items():
                    c = time.process_time()
                    f()
                    times[k].append(time.process_time() - c)
        print(f"{slots} x 256: max rel. difference {err:.1e}; " + ", ".join(
            f"{k} {min(v) * 1e3:.3f} ms (median {statistics.median(v) * 1e3:.3f})" for k, v in times.items()))
    print(f"# loadavg {open('/proc/loadavg').read().strip()}")


if __name__ == "__main__":
    main()
