"""Issue 18 §5: chunk length of the torch SSD on full rows (the small pair's 8 heads of 64, d_state 64): CPU time
per call of ssd_bidirectional_torch at each chunk length, 1 thread, min of 5 interleaved repeats.

    PYTHONPATH=. .venv/bin/python benchmarks/perf18/chunk_sweep.py
"""

import time

import torch

from modeling_hydra.mixer_policy import ssd_chunk_length
from modeling_hydra.ssd_torch import ssd_bidirectional_torch


def main():
    torch.set_num_threads(1)
    for rows, L, H in ((32, 128, 8), (8, 512, 8)):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(rows, L, H, 64, generator=g)
        dt = torch.rand(rows, L, 2 * H, generator=g) * 0.1
        A = -torch.rand(H, generator=g) - 0.5
        BC = [torch.randn(rows, L, 1, 64, generator=g) * 0.3 for _ in range(4)]
        diag = torch.randn(rows, L, H, generator=g)
        args = (x, dt[..., :H], dt[..., H:], A, *BC, diag)
        chunks = [q for q in (32, 64, 128, 256) if q <= L]
        times = {q: [] for q in chunks}
        with torch.no_grad():
            for _ in range(6):
                for q in chunks:
                    c = time.process_time()
                    ssd_bidirectional_torch(*args, q)
                    times[q].append(time.process_time() - c)
        print(f"{rows} x {L}, {H} heads (policy picks {ssd_chunk_length('torch', 256, L)}): "
              + ", ".join(f"chunk {q}: {min(v[1:]) * 1e3:.1f} ms" for q, v in times.items()))
    print(f"# loadavg {open('/proc/loadavg').read().strip()}")


if __name__ == "__main__":
    main()
