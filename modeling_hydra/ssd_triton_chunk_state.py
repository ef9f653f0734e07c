"""Stage 2 of the Triton SSD: the state each chunk contributes on its own, one (d_state x headdim) matrix per head.

Primal (forward pass), for the forward direction the state at the chunk's end, for the backward direction the state
at its start:  states[c] = sum_{s in c} B[s] (x) x[s] * exp(tot - cum[s]) * dt[s],  tot = the chunk's total
log-decay (cum at its far edge). Adjoint (backward pass): what the output rows of chunk c send back into the state
entering it,  states[c] = sum_{t in c} C[t + shift] (x) dy[t] * exp(cum[t] - la[t]),  with the shifted C of the
direction (shift -1 forward, +1 backward).
"""

from __future__ import annotations

import torch

from .ssd_triton_launch import launch_config, seq_strides
from .ssd_triton_runtime import dot_config, tl, triton_jit
from .ssd_triton_tiles import chunk_base, chunk_of_program, load_seq_id, load_seq_ids, load_shifted_rows, rows_in_chunk


@triton_jit
def _chunk_state_kernel(
    b_ptr, x_ptr, dt_ptr, A_ptr, cum_ptr, seq_ptr, out_ptr,
    seqlen, nheads, heads_per_group, d_state, headdim, chunk_size, nchunks,
    stride_b_b, stride_b_l, stride_b_g, stride_b_n,
    stride_x_b, stride_x_l, stride_x_h, stride_x_p,
    stride_dt_b, stride_dt_l, stride_dt_h, stride_seq_b, stride_seq_l,
    ROW_SHIFT: tl.constexpr, ADJOINT: tl.constexpr, REVERSE: tl.constexpr, HAS_SEQ_IDX: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr,
    DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):
    pid_b, pid_c, chunk_start = chunk_of_program(nchunks, chunk_size)
    pid_h = tl.program_id(1)
    pid_g = pid_h // heads_per_group
    offs_n = tl.arange(0, BLOCK_N)
    offs_p = tl.program_id(2) * BLOCK_P + tl.arange(0, BLOCK_P)
    mask_n = offs_n < d_state
    mask_p = offs_p < headdim
    A = tl.load(A_ptr + pid_h).to(tl.float32)
    cum_base = cum_ptr + ((pid_b * nheads + pid_h) * nchunks + pid_c) * chunk_size
    if REVERSE:
        tot = tl.load(cum_base)
    else:
        tot = tl.load(cum_base + chunk_size - 1)
    b_base = chunk_base(b_ptr, pid_b, stride_b_b, chunk_start, stride_b_l) + pid_g * stride_b_g
    x_base = chunk_base(x_ptr, pid_b, stride_x_b, chunk_start, stride_x_l) + pid_h * stride_x_h
    dt_base = chunk_base(dt_ptr, pid_b, stride_dt_b, chunk_start, stride_dt_l) + pid_h * stride_dt_h
    if HAS_SEQ_IDX:
        # Only rows of the state's sequence: the sequence of the token at the chunk's far edge (primal) or of the
        # token just beyond its near edge, whose state the rows read (adjoint).
        if ADJOINT:
            if REVERSE:
                edge_row = chunk_start + chunk_size
            else:
                edge_row = chunk_start - 1
        else:
            if REVERSE:
                edge_row = chunk_start
            else:
                edge_row = chunk_start + chunk_size - 1
        seq_row0 = seq_ptr + pid_b * stride_seq_b
        seq_base = chunk_base(seq_ptr, pid_b, stride_seq_b, chunk_start, stride_seq_l)
        state_seq = load_seq_id(seq_row0, edge_row, seqlen, stride_seq_l)
    acc = tl.zeros((BLOCK_N, BLOCK_P), dtype=tl.float32)
    for k0 in range(0, chunk_size, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        valid = rows_in_chunk(offs_k, chunk_start, chunk_size, seqlen)
        if HAS_SEQ_IDX:
            valid = valid & (load_seq_ids(seq_base, offs_k, valid, stride_seq_l) == state_seq)
        b = load_shifted_rows(b_base, offs_k, chunk_start, valid, seqlen, stride_b_l, offs_n, mask_n, stride_b_n,
                              SHIFT=ROW_SHIFT, TRANSPOSED=True)  # (BLOCK_N, BLOCK_K)
        x = tl.load(x_base + offs_k[:, None] * stride_x_l + offs_p[None, :] * stride_x_p,
                    mask=valid[:, None] & mask_p[None, :], other=0.0)  # (BLOCK_K, BLOCK_P)
        dt = tl.load(dt_base + offs_k * stride_dt_l, mask=valid, other=0.0).to(tl.float32)
        cum = tl.load(cum_base + offs_k, mask=offs_k < chunk_size, other=0.0)
        if ADJOINT:
            w = tl.exp(cum - dt * A)
        else:
            w = tl.exp(tot - cum) * dt
        w = tl.where(valid, w, 0.0)
        xw = (x.to(tl.float32) * w[:, None]).to(DOT_DTYPE)
        acc += tl.dot(b.to(DOT_DTYPE), xw, input_precision=PRECISION)
    out = out_ptr + ((pid_b * nchunks + pid_c) * nheads + pid_h) * d_state * headdim
    tl.store(out + offs_n[:, None] * headdim + offs_p[None, :], acc, mask=mask_n[:, None] & mask_p[None, :])


def chunk_state(B, x, dt, A, cum, reverse: bool, adjoint: bool = False, row_shift: int = 0,
                seq_idx=None) -> torch.Tensor:
    """Per-chunk states of one direction: float32 (batch, nchunks, nheads, d_state, headdim).

    B: (batch, seqlen, ngroups, d_state) (the shifted-C source in adjoint mode); x: (batch, seqlen, nheads, headdim)
    (dy in adjoint mode); dt: (batch, seqlen, nheads); A: (nheads,); cum: `chunk_cumsum(dt, A, ..., reverse)`;
    seq_idx: optional int32 (batch, seqlen) sequence ids. Row s reads B[s + row_shift] (zero outside the sequence).
    """
    batch, seqlen, nheads, headdim = x.shape
    ngroups, d_state = B.shape[2], B.shape[3]
    nchunks, chunk_size = cum.shape[2], cum.shape[3]
    states = torch.empty(batch, nchunks, nheads, d_state, headdim, device=x.device, dtype=torch.float32)
    config = launch_config("chunk_state", _chunk_state_kernel, x.dtype, headdim, d_state, chunk_size,
                           blocks=("BLOCK_K", "BLOCK_N", "BLOCK_P"))
    grid = (batch * nchunks, nheads, -(-headdim // config["BLOCK_P"]))
    _chunk_state_kernel[grid](
        B, x, dt, A, cum, seq_idx, states, seqlen, nheads, nheads // ngroups, d_state, headdim, chunk_size, nchunks,
        *B.stride(), *x.stride(), *dt.stride(), *seq_strides(seq_idx),
        ROW_SHIFT=row_shift, ADJOINT=adjoint, REVERSE=reverse, HAS_SEQ_IDX=seq_idx is not None,
        **config, **dot_config(x.dtype, _chunk_state_kernel),
    )
    return states
