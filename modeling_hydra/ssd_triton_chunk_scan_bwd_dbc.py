"""Backward pass of stage 4, part 2: gradients of B and C of both directions, summed over the heads of each group.

Per head h and direction (forward written; the backward direction mirrors triangles and shifts):
    dCs[t] = sum_{s < t in chunk} (dy[t] . x[s]) exp(cum[t] - la[t] - cum[s]) dt[s] B[s]
             + exp(cum[t] - la[t]) dy[t] . enter[c]                           (gradient of the shifted C row t)
    dB[s]  = dt[s] ( sum_{t > s in chunk} (x[s] . dy[t]) exp(cum[t] - la[t] - cum[s]) Cs[t]
             + exp(tot - cum[s]) x[s] . dstate[c] )
The terms through the chunk states come from chunk_state_grad (ssd_triton_chunk_state_grad.py); the kernels here add
the in-chunk sums, one launch per direction. The dC kernel also completes rowgrad[t] = Cs[t] . dCs_h[t] per head
(the sum of the loss weights of all pairs with output row t), which stage 1's backward needs for the decay
gradients; inside the chunk it sums it from the C.B products of `chunk_cb`. One program loops over the heads of its
group, so the group sums need no atomics. dCs row t belongs to C_f[t - 1] and C_b[t + 1]: the caller passes output
views shifted accordingly.
"""

from __future__ import annotations

import torch

from .ssd_triton_chunk_state_grad import chunk_state_grad
from .ssd_triton_launch import launch_config, seq_strides
from .ssd_triton_runtime import dot_config, tl, triton_jit
from .ssd_triton_tiles import (chunk_base, chunk_of_program, load_decay_rows, load_seq_ids, load_shifted_rows,
                              rows_in_chunk)


@triton_jit
def _chunk_scan_bwd_dc_kernel(
    x_ptr, dy_ptr, dt_ptr, A_ptr, B_ptr, seq_ptr, cb_ptr, cum_ptr, init_ptr, dCs_ptr, rowgrad_ptr,
    seqlen, nheads, heads_per_group, ngroups, d_state, headdim, chunk_size, nchunks,
    stride_x_b, stride_x_l, stride_x_h, stride_x_p, stride_dy_b, stride_dy_l, stride_dy_h, stride_dy_p,
    stride_dt_b, stride_dt_l, stride_dt_h, stride_B_b, stride_B_l, stride_B_g, stride_B_n,
    stride_seq_b, stride_seq_l, stride_init_b, stride_init_l, stride_init_g, stride_init_n,
    stride_dCs_b, stride_dCs_l, stride_dCs_g, stride_dCs_n,
    REVERSE: tl.constexpr, HAS_SEQ_IDX: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_PS: tl.constexpr,
    DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):
    # One direction (REVERSE=False: the forward one, pairs s < t, row t reads C[t - 1]); rows t of one chunk and
    # group, starting from the state part (init, rowgrad) of chunk_state_grad. Products over headdim run in steps of
    # BLOCK_PS. rowgrad[t], the sum of the loss weights W[t, s] = (dy[t] . x[s]) M[t, s] of row t, adds
    # W = weight * cb inside the chunk, so no per-head (BLOCK_M, d_state) gradient is held.
    pid_b, pid_c, chunk_start = chunk_of_program(nchunks, chunk_size)
    m0 = tl.program_id(1) * BLOCK_M
    pid_g = tl.program_id(2)
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    mask_n = offs_n < d_state
    valid_t = rows_in_chunk(offs_m, chunk_start, chunk_size, seqlen)
    B_base = chunk_base(B_ptr, pid_b, stride_B_b, chunk_start, stride_B_l) + pid_g * stride_B_g
    cb_base = cb_ptr + ((pid_b * nchunks + pid_c) * ngroups + pid_g) * chunk_size * chunk_size

    if HAS_SEQ_IDX:
        seq_base = chunk_base(seq_ptr, pid_b, stride_seq_b, chunk_start, stride_seq_l)
        seq_t = load_seq_ids(seq_base, offs_m, valid_t, stride_seq_l)
    if REVERSE:
        k_lo = (m0 // BLOCK_K) * BLOCK_K
        k_hi = chunk_size
    else:
        k_lo = 0
        k_hi = m0 + BLOCK_M

    mask_tn = valid_t[:, None] & mask_n[None, :]
    init_base = chunk_base(init_ptr, pid_b, stride_init_b, chunk_start, stride_init_l) + pid_g * stride_init_g
    group = tl.load(init_base + offs_m[:, None] * stride_init_l + offs_n[None, :] * stride_init_n, mask=mask_tn,
                    other=0.0)
    for hh in range(heads_per_group):
        pid_h = pid_g * heads_per_group + hh
        A = tl.load(A_ptr + pid_h).to(tl.float32)
        cum_off = ((pid_b * nheads + pid_h) * nchunks + pid_c) * chunk_size
        dt_base = chunk_base(dt_ptr, pid_b, stride_dt_b, chunk_start, stride_dt_l) + pid_h * stride_dt_h
        x_base = chunk_base(x_ptr, pid_b, stride_x_b, chunk_start, stride_x_l) + pid_h * stride_x_h
        dy_base = chunk_base(dy_ptr, pid_b, stride_dy_b, chunk_start, stride_dy_l) + pid_h * stride_dy_h
        dt_t, cum_t = load_decay_rows(dt_base, stride_dt_l, offs_m, valid_t, cum_ptr + cum_off, chunk_size)
        cumx_t = cum_t - A * dt_t
        rowgrad = tl.load(rowgrad_ptr + cum_off + offs_m, mask=offs_m < chunk_size, other=0.0)

        for k0 in range(k_lo, k_hi, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            valid_s = rows_in_chunk(offs_k, chunk_start, chunk_size, seqlen)
            pair = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)  # dy[t] . x[s]
            for p0 in range(0, headdim, BLOCK_PS):
                offs_p = p0 + tl.arange(0, BLOCK_PS)
                mask_p = offs_p < headdim
                dy_t = tl.load(dy_base + offs_m[:, None] * stride_dy_l + offs_p[None, :] * stride_dy_p,
                               mask=valid_t[:, None] & mask_p[None, :], other=0.0).to(DOT_DTYPE)
                x_s = tl.load(x_base + offs_k[None, :] * stride_x_l + offs_p[:, None] * stride_x_p,
                              mask=mask_p[:, None] & valid_s[None, :], other=0.0).to(DOT_DTYPE)  # (BLOCK_PS, BLOCK_K)
                pair += tl.dot(dy_t, x_s, input_precision=PRECISION)
            if REVERSE:
                pair_ok = (offs_m[:, None] < offs_k[None, :]) & valid_s[None, :]
            else:
                pair_ok = (offs_m[:, None] > offs_k[None, :]) & valid_s[None, :]
            if HAS_SEQ_IDX:
                pair_ok = pair_ok & (seq_t[:, None] == load_seq_ids(seq_base, offs_k, valid_s, stride_seq_l)[None, :])
            dt_s, cum_s = load_decay_rows(dt_base, stride_dt_l, offs_k, valid_s, cum_ptr + cum_off, chunk_size)
            decay = tl.exp(tl.minimum(cumx_t[:, None] - cum_s[None, :], 0.0))
            weight = tl.where(pair_ok, pair * decay * dt_s[None, :], 0.0)
            cb = tl.load(cb_base + offs_m[:, None] * chunk_size + offs_k[None, :],
                         mask=(offs_m < chunk_size)[:, None] & (offs_k < chunk_size)[None, :], other=0.0)
            rowgrad += tl.sum(weight * cb, axis=1)
            B_s = tl.load(B_base + offs_k[:, None] * stride_B_l + offs_n[None, :] * stride_B_n,
                          mask=valid_s[:, None] & mask_n[None, :], other=0.0).to(DOT_DTYPE)
            group += tl.dot(weight.to(DOT_DTYPE), B_s, input_precision=PRECISION)
        tl.store(rowgrad_ptr + cum_off + offs_m, rowgrad, mask=offs_m < chunk_size)

    dCs_base = chunk_base(dCs_ptr, pid_b, stride_dCs_b, chunk_start, stride_dCs_l) + pid_g * stride_dCs_g
    tl.store(dCs_base + offs_m[:, None] * stride_dCs_l + offs_n[None, :] * stride_dCs_n, group, mask=mask_tn)


@triton_jit
def _chunk_scan_bwd_db_kernel(
    x_ptr, dy_ptr, dt_ptr, A_ptr, C_ptr, seq_ptr, cum_ptr, init_ptr, dB_ptr,
    seqlen, nheads, heads_per_group, d_state, headdim, chunk_size, nchunks,
    stride_x_b, stride_x_l, stride_x_h, stride_x_p, stride_dy_b, stride_dy_l, stride_dy_h, stride_dy_p,
    stride_dt_b, stride_dt_l, stride_dt_h, stride_C_b, stride_C_l, stride_C_g, stride_C_n, stride_seq_b, stride_seq_l,
    stride_init_b, stride_init_l, stride_init_g, stride_init_n, stride_dB_b, stride_dB_l, stride_dB_g, stride_dB_n,
    REVERSE: tl.constexpr, HAS_SEQ_IDX: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_PS: tl.constexpr,
    DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):
    # One direction (REVERSE=False: the forward one, pairs t > s); input rows s of one chunk and group, starting
    # from the state part (init) of chunk_state_grad. Products over headdim run in steps of BLOCK_PS.
    pid_b, pid_c, chunk_start = chunk_of_program(nchunks, chunk_size)
    m0 = tl.program_id(1) * BLOCK_M
    pid_g = tl.program_id(2)
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    mask_n = offs_n < d_state
    valid_s = rows_in_chunk(offs_m, chunk_start, chunk_size, seqlen)
    C_base = chunk_base(C_ptr, pid_b, stride_C_b, chunk_start, stride_C_l) + pid_g * stride_C_g

    if REVERSE:
        k_lo = 0
        k_hi = m0 + BLOCK_M
    else:
        k_lo = (m0 // BLOCK_K) * BLOCK_K
        k_hi = chunk_size
    if HAS_SEQ_IDX:
        seq_base = chunk_base(seq_ptr, pid_b, stride_seq_b, chunk_start, stride_seq_l)
        seq_s = load_seq_ids(seq_base, offs_m, valid_s, stride_seq_l)

    mask_sn = valid_s[:, None] & mask_n[None, :]
    init_base = chunk_base(init_ptr, pid_b, stride_init_b, chunk_start, stride_init_l) + pid_g * stride_init_g
    group = tl.load(init_base + offs_m[:, None] * stride_init_l + offs_n[None, :] * stride_init_n, mask=mask_sn,
                    other=0.0)
    for hh in range(heads_per_group):
        pid_h = pid_g * heads_per_group + hh
        A = tl.load(A_ptr + pid_h).to(tl.float32)
        cum_off = ((pid_b * nheads + pid_h) * nchunks + pid_c) * chunk_size
        dt_base = chunk_base(dt_ptr, pid_b, stride_dt_b, chunk_start, stride_dt_l) + pid_h * stride_dt_h
        x_base = chunk_base(x_ptr, pid_b, stride_x_b, chunk_start, stride_x_l) + pid_h * stride_x_h
        dy_base = chunk_base(dy_ptr, pid_b, stride_dy_b, chunk_start, stride_dy_l) + pid_h * stride_dy_h
        dt_s, cum_s = load_decay_rows(dt_base, stride_dt_l, offs_m, valid_s, cum_ptr + cum_off, chunk_size)

        for k0 in range(k_lo, k_hi, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            valid_t = rows_in_chunk(offs_k, chunk_start, chunk_size, seqlen)
            pair = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)  # x[s] . dy[t]
            for p0 in range(0, headdim, BLOCK_PS):
                offs_p = p0 + tl.arange(0, BLOCK_PS)
                mask_p = offs_p < headdim
                x_s = tl.load(x_base + offs_m[:, None] * stride_x_l + offs_p[None, :] * stride_x_p,
                              mask=valid_s[:, None] & mask_p[None, :], other=0.0).to(DOT_DTYPE)
                dy_t = tl.load(dy_base + offs_k[None, :] * stride_dy_l + offs_p[:, None] * stride_dy_p,
                               mask=mask_p[:, None] & valid_t[None, :], other=0.0).to(DOT_DTYPE)  # (BLOCK_PS, BLOCK_K)
                pair += tl.dot(x_s, dy_t, input_precision=PRECISION)
            if REVERSE:
                pair_ok = (offs_k[None, :] < offs_m[:, None]) & valid_t[None, :]
                Cs = load_shifted_rows(C_base, offs_k, chunk_start, valid_t, seqlen, stride_C_l, offs_n,
                                       mask_n, stride_C_n, SHIFT=1, TRANSPOSED=False).to(DOT_DTYPE)  # (BLOCK_K, N)
            else:
                pair_ok = (offs_k[None, :] > offs_m[:, None]) & valid_t[None, :]
                Cs = load_shifted_rows(C_base, offs_k, chunk_start, valid_t, seqlen, stride_C_l, offs_n,
                                       mask_n, stride_C_n, SHIFT=-1, TRANSPOSED=False).to(DOT_DTYPE)
            if HAS_SEQ_IDX:
                pair_ok = pair_ok & (seq_s[:, None] == load_seq_ids(seq_base, offs_k, valid_t, stride_seq_l)[None, :])
            dt_t, cum_t = load_decay_rows(dt_base, stride_dt_l, offs_k, valid_t, cum_ptr + cum_off, chunk_size)
            decay = tl.exp(tl.minimum((cum_t - A * dt_t)[None, :] - cum_s[:, None], 0.0))
            weight = tl.where(pair_ok, pair * decay * dt_s[:, None], 0.0)
            group += tl.dot(weight.to(DOT_DTYPE), Cs, input_precision=PRECISION)

    dB_base = chunk_base(dB_ptr, pid_b, stride_dB_b, chunk_start, stride_dB_l) + pid_g * stride_dB_g
    tl.store(dB_base + offs_m[:, None] * stride_dB_l + offs_n[None, :] * stride_dB_n, group, mask=mask_sn)


def _launch(name, kernel, x, B, chunk_size):
    """Grid (chunks x row blocks x groups) and block sizes of the dB and dC kernels."""
    batch, seqlen, _, headdim = x.shape
    ngroups, d_state = B.shape[2], B.shape[3]
    config = launch_config(name, kernel, x.dtype, headdim, d_state, chunk_size,
                           blocks=("BLOCK_M", "BLOCK_K", "BLOCK_N", "BLOCK_PS"))
    grid = (batch * (-(-seqlen // chunk_size)), -(-chunk_size // config["BLOCK_M"]), ngroups)
    return grid, dict(config, **dot_config(x.dtype, kernel))


def chunk_scan_bwd_dc(x, dy, dt_f, dt_b, A, B_f, C_f, B_b, C_b, cb, cum_f, cum_b, enter_f, enter_b, seq_idx=None):
    """Returns dC_f, dC_b (like C_f, C_b) and per direction rowgrad, float32 (batch, nheads, nchunks, chunk_size).
    cb: `chunk_cb` of the inputs; seq_idx: optional int32 (batch, seqlen) sequence ids. Two launches per direction:
    the state part (chunk_state_grad), then the in-chunk part on top."""
    batch, seqlen, nheads, headdim = x.shape
    ngroups, d_state = C_f.shape[2], C_f.shape[3]
    nchunks, chunk_size = cum_f.shape[2], cum_f.shape[3]
    grid, config = _launch("chunk_scan_bwd_dc", _chunk_scan_bwd_dc_kernel, x, B_f, chunk_size)
    # dCs row t is the gradient of C_f[t - 1] and of C_b[t + 1]; the rows that no output reads stay zero.
    dC_f = torch.zeros(batch, seqlen + 1, ngroups, d_state, device=x.device, dtype=C_f.dtype)
    dC_b = torch.zeros(batch, seqlen + 1, ngroups, d_state, device=x.device, dtype=C_b.dtype)
    rowgrads = []
    for dt, B, C, cum, enter, dCs, reverse in ((dt_f, B_f, C_f, cum_f, enter_f, dC_f[:, :seqlen], False),
                                               (dt_b, B_b, C_b, cum_b, enter_b, dC_b[:, 1:], True)):
        init, rowgrad = chunk_state_grad(dy, dt, A, C, cum, enter, read_entering=True, reverse=reverse,
                                         seq_idx=seq_idx)
        _chunk_scan_bwd_dc_kernel[grid](
            x, dy, dt, A, B, seq_idx, cb, cum, init, dCs, rowgrad,
            seqlen, nheads, nheads // ngroups, ngroups, d_state, headdim, chunk_size, nchunks,
            *x.stride(), *dy.stride(), *dt.stride(), *B.stride(), *seq_strides(seq_idx), *init.stride(),
            *dCs.stride(), REVERSE=reverse, HAS_SEQ_IDX=seq_idx is not None, **config,
        )
        rowgrads.append(rowgrad)
    return dC_f[:, 1:], dC_b[:, :seqlen], rowgrads[0], rowgrads[1]


def chunk_scan_bwd_db(x, dy, dt_f, dt_b, A, B_f, C_f, B_b, C_b, cum_f, cum_b, dstate_f, dstate_b, seq_idx=None):
    """Returns dB_f, dB_b (like B_f, B_b); dstate_*: gradients of each chunk's own state (see chunk_scan_bwd_dx);
    seq_idx: optional int32 (batch, seqlen) sequence ids. Two launches per direction: the state part
    (chunk_state_grad), then the in-chunk part on top."""
    batch, seqlen, nheads, headdim = x.shape
    ngroups, d_state = B_f.shape[2], B_f.shape[3]
    nchunks, chunk_size = cum_f.shape[2], cum_f.shape[3]
    grid, config = _launch("chunk_scan_bwd_db", _chunk_scan_bwd_db_kernel, x, B_f, chunk_size)
    dB_f = torch.empty_like(B_f, memory_format=torch.contiguous_format)
    dB_b = torch.empty_like(B_b, memory_format=torch.contiguous_format)
    for dt, C, cum, dstate, dB, reverse in ((dt_f, C_f, cum_f, dstate_f, dB_f, False),
                                            (dt_b, C_b, cum_b, dstate_b, dB_b, True)):
        init, _ = chunk_state_grad(x, dt, A, C, cum, dstate, read_entering=False, reverse=reverse, seq_idx=seq_idx)
        _chunk_scan_bwd_db_kernel[grid](
            x, dy, dt, A, C, seq_idx, cum, init, dB,
            seqlen, nheads, nheads // ngroups, d_state, headdim, chunk_size, nchunks,
            *x.stride(), *dy.stride(), *dt.stride(), *C.stride(), *seq_strides(seq_idx), *init.stride(),
            *dB.stride(), REVERSE=reverse, HAS_SEQ_IDX=seq_idx is not None, **config,
        )
    return dB_f, dB_b
