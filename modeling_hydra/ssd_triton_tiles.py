"""Helpers shared by the Triton SSD kernels: the chunk a program works on and the rows of it that exist, the 64-bit
base pointer of a chunk (tiles then index rows by 32-bit offsets inside the chunk), and tile loaders: state tiles,
shifted rows of C, the step sizes of a block of rows with their in-chunk cumulative log decays, and the sequence ids
of rows (sequence boundaries, `seq_idx`)."""

from __future__ import annotations

from .ssd_triton_runtime import tl, triton_jit


@triton_jit
def chunk_of_program(nchunks, chunk_size):
    """(batch row as int64, chunk index, first row of the chunk) of a program whose grid axis 0 runs over
    batch x nchunks, chunk-major within a batch row."""
    pid_bc = tl.program_id(0)
    pid_c = pid_bc % nchunks
    return (pid_bc // nchunks).to(tl.int64), pid_c, pid_c * chunk_size


@triton_jit
def rows_in_chunk(offs, chunk_start, chunk_size, seqlen):
    """Mask of the in-chunk offsets `offs` that are rows of the chunk starting at `chunk_start` and of the sequence."""
    return (offs < chunk_size) & (chunk_start + offs < seqlen)


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
def load_shifted_rows(base, offs, chunk_start, valid, seqlen, stride_l, offs_n, mask_n, stride_n,
                      SHIFT: tl.constexpr, TRANSPOSED: tl.constexpr):
    """Rows `offs + SHIFT` of the chunk at `base` (the chunk's row 0; rows chunk_start + offs + SHIFT of the
    (seqlen, d_state) matrix, zero where `valid` is false or the row is outside the sequence), as a
    (BLOCK, BLOCK_N) tile or, when TRANSPOSED, a (BLOCK_N, BLOCK) tile."""
    src = offs + SHIFT
    ok = valid & (chunk_start + src >= 0) & (chunk_start + src < seqlen)
    if TRANSPOSED:
        tile = tl.load(base + src[None, :] * stride_l + offs_n[:, None] * stride_n,
                       mask=mask_n[:, None] & ok[None, :], other=0.0)
    else:
        tile = tl.load(base + src[:, None] * stride_l + offs_n[None, :] * stride_n,
                       mask=ok[:, None] & mask_n[None, :], other=0.0)
    return tile


@triton_jit
def load_decay_rows(dt_base, stride_l, offs, valid, cum_base, chunk_size):
    """Step sizes dt[offs] (float32, zero where not `valid`) and the in-chunk cumulative log decays cum[offs] of one
    direction; `dt_base` and `cum_base` point at row 0 of this chunk for this (batch, head)."""
    dt = tl.load(dt_base + offs * stride_l, mask=valid, other=0.0).to(tl.float32)
    cum = tl.load(cum_base + offs, mask=offs < chunk_size, other=0.0)
    return dt, cum


@triton_jit
def load_seq_ids(seq_base, offs, valid, stride_l):
    """Sequence ids of rows `offs` of the chunk at `seq_base` (int32; -1 where not `valid`)."""
    return tl.load(seq_base + offs * stride_l, mask=valid, other=-1).to(tl.int32)


@triton_jit
def load_seq_id(seq_row0, row, seqlen, stride_l):
    """Sequence id of absolute row `row` (clamped into the sequence) of the batch row at `seq_row0` (int32 scalar)."""
    row = tl.minimum(tl.maximum(row, 0), seqlen - 1)
    return tl.load(seq_row0 + row.to(tl.int64) * stride_l).to(tl.int32)


@triton_jit
def chunk_base(ptr, pid_b, stride_b, chunk_start, stride_l):
    """`ptr` moved to row `chunk_start` of batch row `pid_b`, in 64-bit arithmetic, so that the tiles of a chunk can
    use 32-bit in-chunk offsets however long the rows are."""
    return ptr + pid_b.to(tl.int64) * stride_b + chunk_start.to(tl.int64) * stride_l
