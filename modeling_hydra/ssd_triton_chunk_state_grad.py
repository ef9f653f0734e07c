"""Backward pass of stage 4, the state terms of dB and dC: what flows through the chunk states, summed over the heads
of each group. The in-chunk terms are added on top by chunk_scan_bwd_db / chunk_scan_bwd_dc, which start from these
float32 partial sums (two kernels, so that neither holds both parts at once).

Per head h and direction (forward written; the backward direction mirrors the edges and shifts):
    dC part (READ_ENTERING): rows t read the state entering the chunk,
        g[t] = exp(cum[t] - la[t]) enter[c] dy[t]                 (d_state,), summed over heads into dCs[t],
        rowgrad[t] = Cs[t] . g[t] per head (the loss weight of row t's pairs with earlier chunks);
    dB part: rows s feed the chunk's own state,
        g[s] = dt[s] exp(tot - cum[s]) dstate[c] x[s]             (d_state,), summed over heads into dB[s].
With seq_idx, only rows of the state's sequence take part.
"""

from __future__ import annotations

import torch

from .ssd_triton_launch import launch_config, seq_strides
from .ssd_triton_runtime import dot_config, tl, triton_jit
from .ssd_triton_tiles import (chunk_base, chunk_of_program, load_decay_rows, load_seq_id, load_seq_ids,
                              load_shifted_rows, load_state_tile, rows_in_chunk)


@triton_jit
def _chunk_state_grad_kernel(
    rows_ptr, dt_ptr, A_ptr, C_ptr, seq_ptr, cum_ptr, state_ptr, out_ptr, rowgrad_ptr,
    seqlen, nheads, heads_per_group, d_state, headdim, chunk_size, nchunks,
    stride_r_b, stride_r_l, stride_r_h, stride_r_p, stride_dt_b, stride_dt_l, stride_dt_h,
    stride_C_b, stride_C_l, stride_C_g, stride_C_n, stride_seq_b, stride_seq_l,
    stride_out_b, stride_out_l, stride_out_g, stride_out_n,
    READ_ENTERING: tl.constexpr, REVERSE: tl.constexpr, HAS_SEQ_IDX: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_PS: tl.constexpr,
    DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):
    pid_b, pid_c, chunk_start = chunk_of_program(nchunks, chunk_size)
    m0 = tl.program_id(1) * BLOCK_M
    pid_g = tl.program_id(2)
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    mask_n = offs_n < d_state
    valid = rows_in_chunk(offs_m, chunk_start, chunk_size, seqlen)

    # The state's sequence is that of the token just outside the chunk (entering state) or of the chunk's far edge
    # (its own state).
    if READ_ENTERING:
        if REVERSE:
            edge_row = chunk_start + chunk_size
        else:
            edge_row = chunk_start - 1
    else:
        if REVERSE:
            edge_row = chunk_start
        else:
            edge_row = chunk_start + chunk_size - 1
    state_rows = valid
    if HAS_SEQ_IDX:
        seq_row0 = seq_ptr + pid_b * stride_seq_b
        seq_base = chunk_base(seq_ptr, pid_b, stride_seq_b, chunk_start, stride_seq_l)
        state_rows = state_rows & (load_seq_ids(seq_base, offs_m, valid, stride_seq_l)
                                   == load_seq_id(seq_row0, edge_row, seqlen, stride_seq_l))

    group = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for hh in range(heads_per_group):
        pid_h = pid_g * heads_per_group + hh
        A = tl.load(A_ptr + pid_h).to(tl.float32)
        cum_off = ((pid_b * nheads + pid_h) * nchunks + pid_c) * chunk_size
        rows_base = chunk_base(rows_ptr, pid_b, stride_r_b, chunk_start, stride_r_l) + pid_h * stride_r_h
        state_off = ((pid_b * nchunks + pid_c) * nheads + pid_h) * d_state * headdim
        prod = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for p0 in range(0, headdim, BLOCK_PS):
            offs_p = p0 + tl.arange(0, BLOCK_PS)
            mask_p = offs_p < headdim
            r = tl.load(rows_base + offs_m[:, None] * stride_r_l + offs_p[None, :] * stride_r_p,
                        mask=valid[:, None] & mask_p[None, :], other=0.0).to(DOT_DTYPE)
            state = load_state_tile(state_ptr, state_off, offs_n, offs_p, mask_n, mask_p, headdim,
                                    TRANSPOSED=True, DOT_DTYPE=DOT_DTYPE)  # (BLOCK_PS, BLOCK_N)
            prod += tl.dot(r, state, input_precision=PRECISION)
        dt_base = chunk_base(dt_ptr, pid_b, stride_dt_b, chunk_start, stride_dt_l) + pid_h * stride_dt_h
        dt, cum = load_decay_rows(dt_base, stride_dt_l, offs_m, valid, cum_ptr + cum_off, chunk_size)
        if READ_ENTERING:
            scale = tl.exp(cum - A * dt)
        else:
            if REVERSE:
                tot = tl.load(cum_ptr + cum_off)
            else:
                tot = tl.load(cum_ptr + cum_off + chunk_size - 1)
            scale = tl.exp(tot - cum) * dt
        prod = prod * tl.where(state_rows, scale, 0.0)[:, None]
        if READ_ENTERING:
            C_base = chunk_base(C_ptr, pid_b, stride_C_b, chunk_start, stride_C_l) + pid_g * stride_C_g
            if REVERSE:
                Cs = load_shifted_rows(C_base, offs_m, chunk_start, valid, seqlen, stride_C_l, offs_n,
                                       mask_n, stride_C_n, SHIFT=1, TRANSPOSED=False)
            else:
                Cs = load_shifted_rows(C_base, offs_m, chunk_start, valid, seqlen, stride_C_l, offs_n,
                                       mask_n, stride_C_n, SHIFT=-1, TRANSPOSED=False)
            tl.store(rowgrad_ptr + cum_off + offs_m, tl.sum(prod * Cs.to(tl.float32), axis=1),
                     mask=offs_m < chunk_size)
        group += prod

    out_base = chunk_base(out_ptr, pid_b, stride_out_b, chunk_start, stride_out_l) + pid_g * stride_out_g
    tl.store(out_base + offs_m[:, None] * stride_out_l + offs_n[None, :] * stride_out_n, group,
             mask=valid[:, None] & mask_n[None, :])


def chunk_state_grad(rows, dt, A, C, cum, state, read_entering: bool, reverse: bool, seq_idx=None):
    """The state part of dCs (read_entering=True: rows = dy, state = the entering states; also returns rowgrad)
    or of dB (False: rows = x, state = the gradient of each chunk's own state) of one direction.

    rows: (batch, seqlen, nheads, headdim); dt: (batch, seqlen, nheads); A: (nheads,); C: (batch, seqlen, ngroups,
    d_state) (read for rowgrad only); cum: that direction's `chunk_cumsum`; state: float32 (batch, nchunks, nheads,
    d_state, headdim). Returns a float32 (batch, seqlen, ngroups, d_state) sum over the heads of each group (row t of
    dCs is the gradient of the shifted C row t) and rowgrad, float32 (batch, nheads, nchunks, chunk_size) or None.
    """
    batch, seqlen, nheads, headdim = rows.shape
    ngroups, d_state = C.shape[2], C.shape[3]
    nchunks, chunk_size = cum.shape[2], cum.shape[3]
    out = torch.empty(batch, seqlen, ngroups, d_state, device=rows.device, dtype=torch.float32)
    rowgrad = torch.empty_like(cum) if read_entering else None
    config = launch_config("chunk_state_grad", _chunk_state_grad_kernel, rows.dtype, headdim, d_state, chunk_size,
                           blocks=("BLOCK_M", "BLOCK_N", "BLOCK_PS"))
    grid = (batch * nchunks, -(-chunk_size // config["BLOCK_M"]), ngroups)
    _chunk_state_grad_kernel[grid](
        rows, dt, A, C, seq_idx, cum, state, out, rowgrad,
        seqlen, nheads, nheads // ngroups, d_state, headdim, chunk_size, nchunks,
        *rows.stride(), *dt.stride(), *C.stride(), *seq_strides(seq_idx), *out.stride(),
        READ_ENTERING=read_entering, REVERSE=reverse, HAS_SEQ_IDX=seq_idx is not None, **config,
        **dot_config(rows.dtype, _chunk_state_grad_kernel),
    )
    return out, rowgrad
