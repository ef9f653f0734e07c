"""Issue 18 §3: the one-chunk SSD (every padding-free GLUE row is one chunk) eager vs torch.compile(dynamic=True).

Compares, at the shapes of SST-2 dev batches in Hydra-small (rows x width 64, 4 heads of 64, d_state 64):
  main     ssd_bidirectional_torch of main (chunk = width, seq_idx)
  eager    `one_chunk` below: the same math with the per-batch mask (`keep`) passed in, no chunk machinery
  compiled torch.compile(one_chunk, dynamic=True)
Checks that all three agree (float32 vs main), counts compilations over rows in 8..40 and widths 16/32/64/128, and
prints compile time and per-call CPU time (1 thread, min and median over interleaved repeats).

    PYTHONPATH=. .venv/bin/python benchmarks/perf18/ssd_one_chunk_compile.py
"""

import statistics
import time

import torch
import torch._dynamo
import torch.nn.functional as F

from modeling_hydra.ssd_torch import ssd_bidirectional_torch


def one_chunk(x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, keep):
    """Bidirectional SSD of rows that are one chunk each. x (b, L, H, P), dt_* and diag (b, L, H), B_*/C_* (b, L, G, N),
    keep (b, 1, L, L) 0/1: off the diagonal and inside one sequence (a per-batch fact, computed once per forward)."""
    b, L, H, P = x.shape
    G = B_f.shape[2]
    idx = torch.arange(L, device=x.device)
    lower = (idx[:, None] > idx[None, :]).to(x.dtype)  # (L, L)
    cum_f = (dt_f * A).transpose(1, 2).cumsum(-1)  # (b, H, L)
    cum_b = (dt_b * A).transpose(1, 2).cumsum(-1)
    cumx_f, cumx_b = F.pad(cum_f[..., :-1], (1, 0)), F.pad(cum_b[..., :-1], (1, 0))
    col_f = torch.log(dt_f.transpose(1, 2).clamp(min=1e-38)) - cum_f
    col_b = torch.log(dt_b.transpose(1, 2).clamp(min=1e-38)) + cumx_b
    seg = torch.lerp(col_b[..., None, :] - cum_b[..., :, None], cumx_f[..., :, None] + col_f[..., None, :], lower)
    C_fs = F.pad(C_f, (0, 0, 0, 0, 1, 0))[:, :L].transpose(1, 2)  # (b, G, L, N): row t reads C_f[t-1]
    C_bs = F.pad(C_b, (0, 0, 0, 0, 0, 1))[:, 1:].transpose(1, 2)  # row t reads C_b[t+1]
    CB = torch.lerp(C_bs @ B_b.permute(0, 2, 3, 1), C_fs @ B_f.permute(0, 2, 3, 1), lower) * keep  # (b, G, L, L)
    M = torch.exp(seg.clamp(min=-80.0, max=80.0)).view(b, G, H // G, L, L) * CB[:, :, None]
    y = M.view(b, H, L, L) @ x.transpose(1, 2)  # (b, H, L, P)
    return torch.addcmul(y.transpose(1, 2), x, diag[..., None])  # (b, L, H, P)


def inputs(rows, width, H=4, P=64, G=1, N=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    seq, k = [], 0
    for _ in range(rows):
        ids, used, j = [], 0, 0
        while used < width:
            n = min(int(torch.randint(5, 50, (1,), generator=g)), width - used)
            ids += [j] * n
            used += n
            j += 1
        seq.append(ids)
    seq_idx = torch.tensor(seq, dtype=torch.int32)
    x = torch.randn(rows, width, H, P, generator=g)
    dt = torch.rand(rows, width, 2 * H, generator=g) * 0.1
    A = -torch.rand(H, generator=g) - 0.5
    BC = [torch.randn(rows, width, G, N, generator=g) * 0.3 for _ in range(4)]
    diag = torch.randn(rows, width, H, generator=g)
    idx = torch.arange(width)
    keep = ((seq_idx[:, :, None] == seq_idx[:, None, :]) & (idx[:, None] != idx[None, :])).unsqueeze(1).float()
    return (x, dt[..., :H], dt[..., H:], A, BC[0], BC[1], BC[2], BC[3], diag), seq_idx, keep


def main():
    torch.set_num_threads(1)
    torch._dynamo.config.cache_size_limit = 64
    compiled = torch.compile(one_chunk, dynamic=True)
    compiles = []
    t0 = time.perf_counter()
    for width in (16, 32, 64, 128):
        for rows in (8, 21, 33, 40):
            args, seq_idx, keep = inputs(rows, width)
            ref = ssd_bidirectional_torch(*args, width, seq_idx=seq_idx)
            c = time.perf_counter()
            out_c = compiled(*args, keep)
            compiles.append((width, rows, time.perf_counter() - c))
            err = max((one_chunk(*args, keep) - ref).abs().max().item(), (out_c - ref).abs().max().item())
            assert err < 1e-4, err
    frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    print(f"# compiled graphs over widths 16/32/64/128 x rows 8/21/33/40: {frames}; first-call seconds by "
          f"(width, rows): {[(w, r, round(s, 1)) for w, r, s in compiles if s > 0.5]}; total {time.perf_counter() - t0:.0f} s")
    for rows, width in ((32, 64), (16, 64), (8, 32)):
        args, seq_idx, keep = inputs(rows, width, seed=1)
        fns = {"main": lambda: ssd_bidirectional_torch(*args, width, seq_idx=seq_idx),
               "eager one_chunk": lambda: one_chunk(*args, keep), "compiled one_chunk": lambda: compiled(*args, keep)}
        times = {k: [] for k in fns}
        for r in range(25):
            for k, f in fns.items():
                c = time.process_time()
                f()
                times[k].append(time.process_time() - c)
        print(f"rows {rows} x width {width}: " + ", ".join(
            f"{k} {min(v) * 1e3:.2f} ms (median {statistics.median(v) * 1e3:.2f})" for k, v in times.items()))
    print(f"# loadavg {open('/proc/loadavg').read().strip()}")


if __name__ == "__main__":
    main()
