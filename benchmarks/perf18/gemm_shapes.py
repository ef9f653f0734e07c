"""Issue 18 §3: GEMM shapes of Hydra-small's projections at the eval batch (2048 slots, hidden 128): is in_proj's
output width (776 = 768 + 2 * 4 heads of dt) slow? CPU time per call, 1 thread, interleaved, min and median.

    PYTHONPATH=. .venv/bin/python benchmarks/perf18/gemm_shapes.py
"""

import statistics
import time

import torch
import torch.nn.functional as F


def main():
    torch.set_num_threads(1)
    x = torch.randn(2048, 128)
    y = torch.randn(2048, 256)
    shapes = {"in_proj 128->776 (main)": (x, torch.randn(776, 128)), "in_proj 128->768": (x, torch.randn(768, 128)),
              "in_proj 128->784 (16-multiple)": (x, torch.randn(784, 128)),
              "in_proj 128->832 (64-multiple)": (x, torch.randn(832, 128)),
              "z+xBC 128->768 and dt 128->8 (two GEMMs)": None,
              "out_proj 256->128": (y, torch.randn(128, 256)), "fc_D 256->4": (y, torch.randn(4, 256))}
    w768, w8 = torch.randn(768, 128), torch.randn(8, 128)
    times = {k: [] for k in shapes}
    for _ in range(40):
        for k, v in shapes.items():
            c = time.process_time()
            if v is None:
                F.linear(x, w768), F.linear(x, w8)
            else:
                F.linear(*v)
            times[k].append((time.process_time() - c) * 1e3)
    for k, v in times.items():
        flops = None if shapes[k] is None else 2 * shapes[k][0].shape[0] * shapes[k][1].numel()
        rate = f", {flops / min(v) / 1e6:.0f} GFLOP/s at the min" if flops else ""
        print(f"{k}: min {min(v):.3f} ms, median {statistics.median(v):.3f} ms{rate}")
    print(f"# loadavg {open('/proc/loadavg').read().strip()}")


if __name__ == "__main__":
    main()
