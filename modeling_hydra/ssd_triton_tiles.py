"""Tile loaders shared by the Triton chunk-scan kernels: state tiles, shifted rows of C, the step sizes of a block of
rows with their in-chunk cumulative log decays, and the sequence ids of rows (sequence boundaries, `seq_idx`)."""

from __future__ import annotations

from .ssd_triton_runtime import tl, triton_jit


@triton_jit
def load_state_tile(ptr, offset, offs_n, offs_p, mask_n, mask_p, headdim,
                    TRANSPOSED: tl.constexpr, DOT_DTYPE: tl.constexpr):
    """The (d_state, headdim) float32 state tile at `ptr + offset`, as a (BLOCK_N, BLOCK_P) tile or, when TRANSPOSED,
    a (BLOCK_P, BLOCK_N) tile, cast to DOT_DTYPE."""
    if TRANSPOSED:
        ptrs = offset + offs_n[None, :] * headdim + offs_p[:, None]
        mask = mask_p[:, None] & mask_n[None, :]
    else:
        ptrs = offset + offs_n[:, None] * headdim + offs_p[None, :]
        mask = mask_n[:, None] & mask_p[None, :]
    return tl.load(ptr + ptrs, mask=mask, other=0.0).to(DOT_DTYPE)


@triton_jit
def load_shifted_rows(base, rows, valid, seqlen, stride_l, offs_n, mask_n, stride_n,
                      SHIFT: tl.constexpr, TRANSPOSED: tl.constexpr):
    """Rows `rows + SHIFT` of a (seqlen, d_state) matrix at `base` (zero where `valid` is false or the shifted row
    is outside the sequence), as a (BLOCK, BLOCK_N) tile or, when TRANSPOSED, a (BLOCK_N, BLOCK) tile."""
    src = rows + SHIFT
    ok = valid & (src >= 0) & (src < seqlen)
    if TRANSPOSED:
        tile = tl.load(base + src[None, :] * stride_l + offs_n[:, None] * stride_n,
                       mask=mask_n[:, None] & ok[None, :], other=0.0)
    else:
        tile = tl.load(base + src[:, None] * stride_l + offs_n[None, :] * stride_n,
                       mask=ok[:, None] & mask_n[None, :], other=0.0)
    return tile


@triton_jit
def load_decay_rows(dt_base, stride_l, rows, valid, cum_base, offs, chunk_size):
    """Step sizes dt[rows] (float32, zero where not `valid`) and the in-chunk cumulative log decays cum[offs] of one
    direction; `dt_base` and `cum_base` point at this (batch, head) and (batch, head, chunk)."""
    dt = tl.load(dt_base + rows * stride_l, mask=valid, other=0.0).to(tl.float32)
    cum = tl.load(cum_base + offs, mask=offs < chunk_size, other=0.0)
    return dt, cum


@triton_jit
def load_seq_ids(seq_base, rows, valid, stride_l):
    """Sequence ids seq_idx[rows] of this batch row (int32; -1 where not `valid`)."""
    return tl.load(seq_base + rows * stride_l, mask=valid, other=-1).to(tl.int32)


@triton_jit
def load_seq_id(seq_base, row, seqlen, stride_l):
    """Sequence id of one row, clamped into the sequence (int32 scalar)."""
    row = tl.minimum(tl.maximum(row, 0), seqlen - 1)
    return tl.load(seq_base + row * stride_l).to(tl.int32)
