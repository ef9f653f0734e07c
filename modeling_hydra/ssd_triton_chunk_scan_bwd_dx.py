"""Backward pass of stage 4, part 1: gradients of x and of the diagonal, and the dt gradients of the input factor.

One program takes a tile of input rows s of one chunk and head and computes, per direction, the gradient of the
direction's output with respect to (dt[s] x[s]):
    g_f[s] = sum_{t > s in chunk} (B_f[s] . C_f[t-1]) exp(cum_f[t] - la_f[t] - cum_f[s]) dy[t]
             + exp(tot_f - cum_f[s]) B_f[s] . dstate_f[c]
(mirrored for the backward direction), where dstate[c] is the gradient of chunk c's own state (stage 2 in adjoint
mode carried by stage 3). Then dx[s] = dt_f[s] g_f[s] + dt_b[s] g_b[s] + diag[s] dy[s], ddiag[s] = dy[s] . x[s] and
ddt_exp[s] = x[s] . g[s] per direction (the dt gradient through the input factor only; stage 1's backward adds the
part through the decays). The products B_f[s] . C_f[t-1] are read from `chunk_cb` (zero across sequence
boundaries); one launch per direction, the second adding its part to dx.
"""

from __future__ import annotations

import torch

from .ssd_triton_launch import launch_config, seq_strides
from .ssd_triton_runtime import dot_config, tl, triton_jit
from .ssd_triton_tiles import (chunk_base, chunk_of_program, load_decay_rows, load_seq_id, load_seq_ids,
                              load_state_tile, rows_in_chunk)


@triton_jit
def _chunk_scan_bwd_dx_kernel(
    x_ptr, dy_ptr, dt_ptr, A_ptr, B_ptr, diag_ptr, seq_ptr, cb_ptr, cum_ptr, dstate_ptr, dx_ptr, ddiag_ptr, ddt_exp_ptr,
    seqlen, nheads, heads_per_group, ngroups, d_state, headdim, chunk_size, nchunks,
    stride_x_b, stride_x_l, stride_x_h, stride_x_p, stride_dy_b, stride_dy_l, stride_dy_h, stride_dy_p,
    stride_dt_b, stride_dt_l, stride_dt_h, stride_B_b, stride_B_l, stride_B_g, stride_B_n,
    stride_diag_b, stride_diag_l, stride_diag_h,
    stride_seq_b, stride_seq_l,
    stride_dx_b, stride_dx_l, stride_dx_h, stride_dx_p, stride_ddiag_b, stride_ddiag_l, stride_ddiag_h,
    REVERSE: tl.constexpr, FIRST: tl.constexpr, HAS_SEQ_IDX: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_NS: tl.constexpr, BLOCK_P: tl.constexpr,
    DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):
    # One direction: the forward one (REVERSE=False: pairs t > s, row t reads C[t - 1]) or the backward one.
    # FIRST: this launch writes dx = dt g + diag dy and ddiag; the other direction's launch then adds its dt g.
    pid_b, pid_c, chunk_start = chunk_of_program(nchunks, chunk_size)
    pid_h = tl.program_id(1)
    pid_g = pid_h // heads_per_group
    m0 = tl.program_id(2) * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_p = tl.arange(0, BLOCK_P)
    mask_p = offs_p < headdim
    valid_s = rows_in_chunk(offs_m, chunk_start, chunk_size, seqlen)

    A = tl.load(A_ptr + pid_h).to(tl.float32)
    cum_off = ((pid_b * nheads + pid_h) * nchunks + pid_c) * chunk_size
    dt_base = chunk_base(dt_ptr, pid_b, stride_dt_b, chunk_start, stride_dt_l) + pid_h * stride_dt_h
    B_base = chunk_base(B_ptr, pid_b, stride_B_b, chunk_start, stride_B_l) + pid_g * stride_B_g
    cb_base = cb_ptr + ((pid_b * nchunks + pid_c) * ngroups + pid_g) * chunk_size * chunk_size
    dy_base = chunk_base(dy_ptr, pid_b, stride_dy_b, chunk_start, stride_dy_l) + pid_h * stride_dy_h
    dt_s, cum_s = load_decay_rows(dt_base, stride_dt_l, offs_m, valid_s, cum_ptr + cum_off, chunk_size)

    # Through the chunk's own state (the state leaving it): only rows of the sequence that state belongs to, the
    # sequence of the chunk's last (forward) or first (backward) token.
    if REVERSE:
        to_edge = tl.exp(tl.load(cum_ptr + cum_off) - cum_s)
        edge_row = chunk_start
    else:
        to_edge = tl.exp(tl.load(cum_ptr + cum_off + chunk_size - 1) - cum_s)
        edge_row = chunk_start + chunk_size - 1
    if HAS_SEQ_IDX:
        seq_row0 = seq_ptr + pid_b * stride_seq_b
        seq_base = chunk_base(seq_ptr, pid_b, stride_seq_b, chunk_start, stride_seq_l)
        seq_s = load_seq_ids(seq_base, offs_m, valid_s, stride_seq_l)
        to_edge = tl.where(seq_s == load_seq_id(seq_row0, edge_row, seqlen, stride_seq_l), to_edge, 0.0)
    state_off = ((pid_b * nchunks + pid_c) * nheads + pid_h) * d_state * headdim
    grad = tl.zeros((BLOCK_M, BLOCK_P), dtype=tl.float32)  # (BLOCK_M s, BLOCK_P)
    for n0 in range(0, d_state, BLOCK_NS):
        offs_n = n0 + tl.arange(0, BLOCK_NS)
        mask_n = offs_n < d_state
        B_s = tl.load(B_base + offs_m[:, None] * stride_B_l + offs_n[None, :] * stride_B_n,
                      mask=valid_s[:, None] & mask_n[None, :], other=0.0).to(DOT_DTYPE)
        dstate = load_state_tile(dstate_ptr, state_off, offs_n, offs_p, mask_n, mask_p, headdim,
                                 TRANSPOSED=False, DOT_DTYPE=DOT_DTYPE)
        grad += tl.dot(B_s, dstate, input_precision=PRECISION)
    grad = grad * to_edge[:, None]

    # Pairs (t, s) of this direction's triangle inside the chunk.
    if REVERSE:
        k_lo = 0
        k_hi = m0 + BLOCK_M
    else:
        k_lo = (m0 // BLOCK_K) * BLOCK_K
        k_hi = chunk_size
    for k0 in range(k_lo, k_hi, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        valid_t = rows_in_chunk(offs_k, chunk_start, chunk_size, seqlen)
        if REVERSE:
            pair_ok = offs_k[None, :] < offs_m[:, None]
        else:
            pair_ok = offs_k[None, :] > offs_m[:, None]
        # cb[t, s] (zero across sequences), read transposed as a (BLOCK_M s, BLOCK_K t) tile.
        cb = tl.load(cb_base + offs_k[None, :] * chunk_size + offs_m[:, None],
                     mask=(offs_m < chunk_size)[:, None] & (offs_k < chunk_size)[None, :], other=0.0)
        dt_t, cum_t = load_decay_rows(dt_base, stride_dt_l, offs_k, valid_t, cum_ptr + cum_off, chunk_size)
        exponent = tl.minimum((cum_t - A * dt_t)[None, :] - cum_s[:, None], 0.0)
        mix = tl.where(pair_ok, cb * tl.exp(exponent), 0.0)
        dy_t = tl.load(dy_base + offs_k[:, None] * stride_dy_l + offs_p[None, :] * stride_dy_p,
                       mask=valid_t[:, None] & mask_p[None, :], other=0.0).to(DOT_DTYPE)
        grad += tl.dot(mix.to(DOT_DTYPE), dy_t, input_precision=PRECISION)

    mask_sp = valid_s[:, None] & mask_p[None, :]
    x_base = chunk_base(x_ptr, pid_b, stride_x_b, chunk_start, stride_x_l) + pid_h * stride_x_h
    x_s = tl.load(x_base + offs_m[:, None] * stride_x_l + offs_p[None, :] * stride_x_p, mask=mask_sp,
                  other=0.0).to(tl.float32)
    tl.store(ddt_exp_ptr + cum_off + offs_m, tl.sum(grad * x_s, axis=1), mask=offs_m < chunk_size)
    dx_ptrs = chunk_base(dx_ptr, pid_b, stride_dx_b, chunk_start, stride_dx_l) + pid_h * stride_dx_h \
        + offs_m[:, None] * stride_dx_l + offs_p[None, :] * stride_dx_p
    dx = grad * dt_s[:, None]
    if FIRST:
        dy_s = tl.load(dy_base + offs_m[:, None] * stride_dy_l + offs_p[None, :] * stride_dy_p, mask=mask_sp,
                       other=0.0).to(tl.float32)
        diag_base = chunk_base(diag_ptr, pid_b, stride_diag_b, chunk_start, stride_diag_l) + pid_h * stride_diag_h
        diag = tl.load(diag_base + offs_m * stride_diag_l, mask=valid_s, other=0.0).to(tl.float32)
        dx += diag[:, None] * dy_s
        ddiag_base = chunk_base(ddiag_ptr, pid_b, stride_ddiag_b, chunk_start, stride_ddiag_l) + pid_h * stride_ddiag_h
        tl.store(ddiag_base + offs_m * stride_ddiag_l, tl.sum(dy_s * x_s, axis=1), mask=valid_s)
    else:
        dx += tl.load(dx_ptrs, mask=mask_sp, other=0.0).to(tl.float32)
    tl.store(dx_ptrs, dx, mask=mask_sp)


def chunk_scan_bwd_dx(x, dy, dt_f, dt_b, A, B_f, B_b, diag, cb, cum_f, cum_b, dstate_f, dstate_b, seq_idx=None):
    """Returns dx (like x), ddiag (like diag) and per direction ddt_exp, float32 (batch, nheads, nchunks, chunk_size).

    cb: `chunk_cb` of the inputs; dstate_f, dstate_b: float32 (batch, nchunks, nheads, d_state, headdim), the
    gradients of each chunk's own state; seq_idx: optional int32 (batch, seqlen) sequence ids. One launch per
    direction.
    """
    batch, seqlen, nheads, headdim = x.shape
    ngroups, d_state = B_f.shape[2], B_f.shape[3]
    nchunks, chunk_size = cum_f.shape[2], cum_f.shape[3]
    dx = torch.empty_like(x, memory_format=torch.contiguous_format)
    ddiag = torch.empty_like(diag, memory_format=torch.contiguous_format)
    ddt_exp_f = torch.empty_like(cum_f)
    ddt_exp_b = torch.empty_like(cum_b)
    config = launch_config("chunk_scan_bwd_dx", _chunk_scan_bwd_dx_kernel, x.dtype, headdim, d_state, chunk_size,
                           blocks=("BLOCK_M", "BLOCK_K", "BLOCK_NS", "BLOCK_P"))
    config["BLOCK_P"] = max(config["BLOCK_P"], headdim)  # one program holds all of headdim (ddt_exp sums over it)
    grid = (batch * nchunks, nheads, -(-chunk_size // config["BLOCK_M"]))
    for dt, B, cum, dstate, ddt_exp, reverse in ((dt_f, B_f, cum_f, dstate_f, ddt_exp_f, False),
                                                  (dt_b, B_b, cum_b, dstate_b, ddt_exp_b, True)):
        _chunk_scan_bwd_dx_kernel[grid](
            x, dy, dt, A, B, diag, seq_idx, cb, cum, dstate, dx, ddiag, ddt_exp,
            seqlen, nheads, nheads // ngroups, ngroups, d_state, headdim, chunk_size, nchunks,
            *x.stride(), *dy.stride(), *dt.stride(), *B.stride(), *diag.stride(), *seq_strides(seq_idx),
            *dx.stride(), *ddiag.stride(),
            REVERSE=reverse, FIRST=not reverse, HAS_SEQ_IDX=seq_idx is not None, **config,
            **dot_config(x.dtype, _chunk_scan_bwd_dx_kernel),
        )
    return dx, ddiag, ddt_exp_f, ddt_exp_b
