#!/usr/bin/env python
"""Float32 accuracy of the torch SSD at large decays: the norm-wise relative error ||y32 - y64|| / ||y64|| of
`ssd_bidirectional_torch` in float32 against the float64 materialized matrix of HYDRA_SPEC §1 on the same
(float32-rounded) inputs, as a function of the log decay |A|·Δ per step, for several chunk lengths.

The inputs: x, B, C and the diagonal standard normal (B, C scaled by 1/sqrt(d_state)), Δ uniform in [0.5, 1] and
A = -v for every head, so that |A|·Δ per step lies in [v/2, v]; one row of --seqlen tokens.

    python benchmarks/ssd_accuracy_curve.py                  # L = 1024, chunks 64 and 256, v = 0.01 ... 1e4
    python benchmarks/ssd_accuracy_curve.py --seqlen 4096 --chunk_sizes 64 128 --decays 1 10 100

Prints a markdown table: one row per v, one column per chunk length.
"""

import argparse

import torch

from modeling_hydra.ssd_torch import ssd_bidirectional_torch

DECAYS = (0.01, 0.1, 1.0, 3.0, 10.0, 30.0, 100.0, 1e3, 1e4)


def random_inputs(seqlen, decay, nheads=4, headdim=16, ngroups=1, d_state=16, seed=0):
    """The nine float32 SSD inputs (x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag) of one row, |A|·Δ in [v/2, v]."""
    g = torch.Generator().manual_seed(seed)
    normal = lambda *shape: torch.randn(*shape, generator=g)
    x = normal(1, seqlen, nheads, headdim)
    dt_f, dt_b = (0.5 + 0.5 * torch.rand(1, seqlen, nheads, generator=g) for _ in range(2))
    A = torch.full((nheads,), -float(decay))
    B_f, C_f, B_b, C_b = (normal(1, seqlen, ngroups, d_state) / d_state ** 0.5 for _ in range(4))
    diag = normal(1, seqlen, nheads)
    return x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag


def materialized_ssd_float64(x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag):
    """y = M x in float64 with M of HYDRA_SPEC §1 built entry by entry (vectorized, O(L^2) memory per head):
    M[t, s] = (C_f[t-1] . B_f[s]) exp(sum_{k=s+1..t-1} dt_f[k] A) dt_f[s] for s < t, the mirror image for s > t,
    diag[t] on the diagonal. Shapes as `ssd_bidirectional_torch`; returns (batch, seqlen, nheads, headdim)."""
    x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag = (t.double() for t in (x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag))
    batch, seqlen, nheads, _ = x.shape
    group = torch.arange(nheads) * B_f.shape[2] // nheads  # the group of B and C each head reads
    t = torch.arange(seqlen)
    below, above = t[:, None] > t[None, :], t[:, None] < t[None, :]  # (L, L): s < t, s > t
    zero = torch.zeros_like(C_f[:, :1])
    C_f_prev = torch.cat([zero, C_f[:, :-1]], dim=1)  # row t reads C_f[t-1]
    C_b_next = torch.cat([C_b[:, 1:], zero], dim=1)  # row t reads C_b[t+1]
    y = torch.empty_like(x)
    for b in range(batch):
        log_f = (dt_f[b] * A).T.cumsum(-1)  # (H, L): sum_{k <= i} dt_f[k] A
        log_b = (dt_b[b] * A).T.cumsum(-1)
        excl_f = torch.cat([torch.zeros(nheads, 1, dtype=x.dtype), log_f[:, :-1]], dim=1)  # sum_{k <= i-1}
        excl_b = torch.cat([torch.zeros(nheads, 1, dtype=x.dtype), log_b[:, :-1]], dim=1)
        exp_f = torch.where(below, excl_f[:, :, None] - log_f[:, None, :], -torch.inf)  # (H, t, s)
        exp_b = torch.where(above, excl_b[:, None, :] - log_b[:, :, None], -torch.inf)
        CB_f = torch.einsum("tgn,sgn->gts", C_f_prev[b], B_f[b])[group]  # (H, t, s)
        CB_b = torch.einsum("tgn,sgn->gts", C_b_next[b], B_b[b])[group]
        M = CB_f * torch.exp(exp_f) * dt_f[b].T[:, None, :] + CB_b * torch.exp(exp_b) * dt_b[b].T[:, None, :]
        M = M + torch.diag_embed(diag[b].T)
        y[b] = torch.einsum("hts,shp->thp", M, x[b])
    return y


def relative_error(y: torch.Tensor, y64: torch.Tensor) -> float:
    """||y - y64|| / ||y64|| (Frobenius norms, in float64)."""
    return ((y.double() - y64).norm() / y64.norm()).item()


def accuracy_curve(seqlen, chunk_sizes, decays, seed=0):
    """{(v, chunk_size): norm-wise relative error of the float32 torch SSD} for one random row per v."""
    errors = {}
    for decay in decays:
        inputs = random_inputs(seqlen, decay, seed=seed)
        y64 = materialized_ssd_float64(*inputs)
        for chunk_size in chunk_sizes:
            errors[decay, chunk_size] = relative_error(ssd_bidirectional_torch(*inputs, chunk_size), y64)
    return errors


def markdown_table(errors, seqlen, chunk_sizes, decays) -> str:
    lines = [f"| \\|A\\|·Δ per step (L = {seqlen}) | " + " | ".join(f"chunk {q}" for q in chunk_sizes) + " |",
             "|---|" + "---|" * len(chunk_sizes)]
    for decay in decays:
        lines.append(f"| {decay / 2:g} – {decay:g} | " + " | ".join(f"{errors[decay, q]:.1e}" for q in chunk_sizes)
                     + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seqlen", type=int, default=1024, help="tokens in the row")
    parser.add_argument("--chunk_sizes", type=int, nargs="+", default=[64, 256], help="chunk lengths to compare")
    parser.add_argument("--decays", type=float, nargs="+", default=list(DECAYS), help="the values v of |A|")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    errors = accuracy_curve(args.seqlen, args.chunk_sizes, args.decays, args.seed)
    print(markdown_table(errors, args.seqlen, args.chunk_sizes, args.decays))


if __name__ == "__main__":
    main()
