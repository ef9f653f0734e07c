#!/usr/bin/env python
"""Float32 accuracy of the torch SSD at large decays: the norm-wise relative error ||y32 - y64|| / ||y64|| of
`ssd_bidirectional_torch` in float32 against float64 on the same (float32-rounded) inputs, as a function of the log
decay |A|·Δ per step, for several chunk lengths.

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


def float64_reference(x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag):
    """y of the torch SSD in float64 on the same inputs, chunk 64: (batch, seqlen, nheads, headdim). Its own error
    (about 1e-16 times |A|·Δ times the chunk length) is far below the float32 errors measured here;
    tests/test_ssd_accuracy.py checks it against the float64 materialized quasiseparable matrix."""
    return ssd_bidirectional_torch(*(t.double() for t in (x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag)), 64)


def relative_error(y: torch.Tensor, y64: torch.Tensor) -> float:
    """||y - y64|| / ||y64|| (Frobenius norms, in float64)."""
    return ((y.double() - y64).norm() / y64.norm()).item()


def accuracy_curve(seqlen, chunk_sizes, decays, seed=0):
    """{(v, chunk_size): norm-wise relative error of the float32 torch SSD} for one random row per v."""
    errors = {}
    for decay in decays:
        inputs = random_inputs(seqlen, decay, seed=seed)
        y64 = float64_reference(*inputs)
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
