"""Backward pass of stage 4, part 2: gradients of B and C of both directions, summed over the heads of each group.

Per head h and direction (forward written; the backward direction mirrors triangles and shifts):
    dCs[t] = sum_{s < t in chunk} (dy[t] . x[s]) exp(cum[t] - la[t] - cum[s]) dt[s] B[s]
             + exp(cum[t] - la[t]) dy[t] . enter[c]                           (gradient of the shifted C row t)
    dB[s]  = dt[s] ( sum_{t > s in chunk} (x[s] . dy[t]) exp(cum[t] - la[t] - cum[s]) Cs[t]
             + exp(tot - cum[s]) x[s] . dstate[c] )
The dC kernel also writes rowgrad[t] = Cs[t] . dCs_h[t] per head (the sum of the loss weights of all pairs with
output row t), which stage 1's backward needs for the decay gradients. One program loops over the heads of its
group, so the group sums need no atomics. dCs row t belongs to C_f[t - 1] and C_b[t + 1]: the caller passes
output views shifted accordingly.
"""

from __future__ import annotations

import torch

from .ssd_chunk_layout import groups_to_heads, pair_decays, shift_rows, to_chunks
from .ssd_triton_runtime import block_size, dot_config, tl, triton_jit
from .ssd_triton_tiles import load_decay_rows, load_shifted_rows, load_state_tiles


@triton_jit
def _chunk_scan_bwd_dc_kernel(
    x_ptr, dy_ptr, dtf_ptr, dtb_ptr, A_ptr, Bf_ptr, Cf_ptr, Bb_ptr, Cb_ptr,
    cumf_ptr, cumb_ptr, enterf_ptr, enterb_ptr, dCsf_ptr, dCsb_ptr, rowf_ptr, rowb_ptr,
    seqlen, nheads, heads_per_group, d_state, headdim, chunk_size, nchunks,
    stride_x_b, stride_x_l, stride_x_h, stride_x_p, stride_dy_b, stride_dy_l, stride_dy_h, stride_dy_p,
    stride_dtf_b, stride_dtf_l, stride_dtf_h, stride_dtb_b, stride_dtb_l, stride_dtb_h,
    stride_Bf_b, stride_Bf_l, stride_Bf_g, stride_Bf_n, stride_Cf_b, stride_Cf_l, stride_Cf_g, stride_Cf_n,
    stride_Bb_b, stride_Bb_l, stride_Bb_g, stride_Bb_n, stride_Cb_b, stride_Cb_l, stride_Cb_g, stride_Cb_n,
    stride_dCsf_b, stride_dCsf_l, stride_dCsf_g, stride_dCsf_n,
    stride_dCsb_b, stride_dCsb_l, stride_dCsb_g, stride_dCsb_n,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_P: tl.constexpr,
    DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):
    pid_bc = tl.program_id(0)
    pid_b = (pid_bc // nchunks).to(tl.int64)
    pid_c = pid_bc % nchunks
    m0 = tl.program_id(1) * BLOCK_M
    pid_g = tl.program_id(2)
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_p = tl.arange(0, BLOCK_P)
    mask_n = offs_n < d_state
    mask_p = offs_p < headdim
    t = pid_c * chunk_size + offs_m
    valid_t = (offs_m < chunk_size) & (t < seqlen)

    Csf = load_shifted_rows(Cf_ptr + pid_b * stride_Cf_b + pid_g * stride_Cf_g, t, valid_t, seqlen, stride_Cf_l,
                            offs_n, mask_n, stride_Cf_n, SHIFT=-1, TRANSPOSED=False).to(tl.float32)
    Csb = load_shifted_rows(Cb_ptr + pid_b * stride_Cb_b + pid_g * stride_Cb_g, t, valid_t, seqlen, stride_Cb_l,
                            offs_n, mask_n, stride_Cb_n, SHIFT=1, TRANSPOSED=False).to(tl.float32)
    Bf_base = Bf_ptr + pid_b * stride_Bf_b + pid_g * stride_Bf_g
    Bb_base = Bb_ptr + pid_b * stride_Bb_b + pid_g * stride_Bb_g
    group_f = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    group_b = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for hh in range(heads_per_group):
        pid_h = pid_g * heads_per_group + hh
        A = tl.load(A_ptr + pid_h).to(tl.float32)
        cum_off = ((pid_b * nheads + pid_h) * nchunks + pid_c) * chunk_size
        dtf_base = dtf_ptr + pid_b * stride_dtf_b + pid_h * stride_dtf_h
        dtb_base = dtb_ptr + pid_b * stride_dtb_b + pid_h * stride_dtb_h
        x_base = x_ptr + pid_b * stride_x_b + pid_h * stride_x_h
        dy_t = tl.load(dy_ptr + pid_b * stride_dy_b + pid_h * stride_dy_h + t[:, None] * stride_dy_l
                       + offs_p[None, :] * stride_dy_p, mask=valid_t[:, None] & mask_p[None, :],
                       other=0.0).to(DOT_DTYPE)
        cumxf_t = tl.load(cumf_ptr + cum_off + offs_m, mask=offs_m < chunk_size, other=0.0) \
            - A * tl.load(dtf_base + t * stride_dtf_l, mask=valid_t, other=0.0).to(tl.float32)
        cumxb_t = tl.load(cumb_ptr + cum_off + offs_m, mask=offs_m < chunk_size, other=0.0) \
            - A * tl.load(dtb_base + t * stride_dtb_l, mask=valid_t, other=0.0).to(tl.float32)

        state_off = ((pid_b * nchunks + pid_c) * nheads + pid_h) * d_state * headdim
        enter_f, enter_b = load_state_tiles(enterf_ptr, enterb_ptr, state_off, offs_n, offs_p, mask_n, mask_p,
                                            headdim, TRANSPOSED=True, DOT_DTYPE=DOT_DTYPE)  # (BLOCK_P, BLOCK_N)
        grad_f = tl.dot(dy_t, enter_f, input_precision=PRECISION) * tl.exp(cumxf_t)[:, None]
        grad_b = tl.dot(dy_t, enter_b, input_precision=PRECISION) * tl.exp(cumxb_t)[:, None]

        for k0 in range(0, chunk_size, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            s = pid_c * chunk_size + offs_k
            valid_s = (offs_k < chunk_size) & (s < seqlen)
            x_s = tl.load(x_base + s[None, :] * stride_x_l + offs_p[:, None] * stride_x_p,
                          mask=mask_p[:, None] & valid_s[None, :], other=0.0).to(DOT_DTYPE)  # (BLOCK_P, BLOCK_K)
            pair = tl.dot(dy_t, x_s, input_precision=PRECISION)  # (BLOCK_M t, BLOCK_K s): dy[t] . x[s]
            if k0 < m0 + BLOCK_M:  # some s < t: forward triangle
                dtf_s, cumf_s = load_decay_rows(dtf_base, stride_dtf_l, s, valid_s,
                                                cumf_ptr + cum_off, offs_k, chunk_size)
                lower = (offs_m[:, None] > offs_k[None, :]) & valid_s[None, :]
                decay = tl.exp(tl.where(lower, cumxf_t[:, None] - cumf_s[None, :], float("-inf")))
                Bf = tl.load(Bf_base + s[:, None] * stride_Bf_l + offs_n[None, :] * stride_Bf_n,
                             mask=valid_s[:, None] & mask_n[None, :], other=0.0).to(DOT_DTYPE)
                weight = (pair * decay * dtf_s[None, :]).to(DOT_DTYPE)
                grad_f += tl.dot(weight, Bf, input_precision=PRECISION)
            if k0 + BLOCK_K > m0:  # some s > t: backward triangle
                dtb_s, cumb_s = load_decay_rows(dtb_base, stride_dtb_l, s, valid_s,
                                                cumb_ptr + cum_off, offs_k, chunk_size)
                upper = (offs_m[:, None] < offs_k[None, :]) & valid_s[None, :]
                decay = tl.exp(tl.where(upper, cumxb_t[:, None] - cumb_s[None, :], float("-inf")))
                Bb = tl.load(Bb_base + s[:, None] * stride_Bb_l + offs_n[None, :] * stride_Bb_n,
                             mask=valid_s[:, None] & mask_n[None, :], other=0.0).to(DOT_DTYPE)
                weight = (pair * decay * dtb_s[None, :]).to(DOT_DTYPE)
                grad_b += tl.dot(weight, Bb, input_precision=PRECISION)

        tl.store(rowf_ptr + cum_off + offs_m, tl.sum(grad_f * Csf, axis=1), mask=offs_m < chunk_size)
        tl.store(rowb_ptr + cum_off + offs_m, tl.sum(grad_b * Csb, axis=1), mask=offs_m < chunk_size)
        group_f += grad_f
        group_b += grad_b

    mask_tn = valid_t[:, None] & mask_n[None, :]
    tl.store(dCsf_ptr + pid_b * stride_dCsf_b + pid_g * stride_dCsf_g + t[:, None] * stride_dCsf_l
             + offs_n[None, :] * stride_dCsf_n, group_f, mask=mask_tn)
    tl.store(dCsb_ptr + pid_b * stride_dCsb_b + pid_g * stride_dCsb_g + t[:, None] * stride_dCsb_l
             + offs_n[None, :] * stride_dCsb_n, group_b, mask=mask_tn)


@triton_jit
def _chunk_scan_bwd_db_kernel(
    x_ptr, dy_ptr, dtf_ptr, dtb_ptr, A_ptr, Cf_ptr, Cb_ptr,
    cumf_ptr, cumb_ptr, dstatef_ptr, dstateb_ptr, dBf_ptr, dBb_ptr,
    seqlen, nheads, heads_per_group, d_state, headdim, chunk_size, nchunks,
    stride_x_b, stride_x_l, stride_x_h, stride_x_p, stride_dy_b, stride_dy_l, stride_dy_h, stride_dy_p,
    stride_dtf_b, stride_dtf_l, stride_dtf_h, stride_dtb_b, stride_dtb_l, stride_dtb_h,
    stride_Cf_b, stride_Cf_l, stride_Cf_g, stride_Cf_n, stride_Cb_b, stride_Cb_l, stride_Cb_g, stride_Cb_n,
    stride_dBf_b, stride_dBf_l, stride_dBf_g, stride_dBf_n, stride_dBb_b, stride_dBb_l, stride_dBb_g, stride_dBb_n,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_P: tl.constexpr,
    DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):
    pid_bc = tl.program_id(0)
    pid_b = (pid_bc // nchunks).to(tl.int64)
    pid_c = pid_bc % nchunks
    m0 = tl.program_id(1) * BLOCK_M
    pid_g = tl.program_id(2)
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_p = tl.arange(0, BLOCK_P)
    mask_n = offs_n < d_state
    mask_p = offs_p < headdim
    s = pid_c * chunk_size + offs_m
    valid_s = (offs_m < chunk_size) & (s < seqlen)

    Cf_base = Cf_ptr + pid_b * stride_Cf_b + pid_g * stride_Cf_g
    Cb_base = Cb_ptr + pid_b * stride_Cb_b + pid_g * stride_Cb_g
    group_f = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    group_b = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for hh in range(heads_per_group):
        pid_h = pid_g * heads_per_group + hh
        A = tl.load(A_ptr + pid_h).to(tl.float32)
        cum_off = ((pid_b * nheads + pid_h) * nchunks + pid_c) * chunk_size
        dtf_base = dtf_ptr + pid_b * stride_dtf_b + pid_h * stride_dtf_h
        dtb_base = dtb_ptr + pid_b * stride_dtb_b + pid_h * stride_dtb_h
        dy_base = dy_ptr + pid_b * stride_dy_b + pid_h * stride_dy_h
        x_s = tl.load(x_ptr + pid_b * stride_x_b + pid_h * stride_x_h + s[:, None] * stride_x_l
                      + offs_p[None, :] * stride_x_p, mask=valid_s[:, None] & mask_p[None, :],
                      other=0.0).to(DOT_DTYPE)
        dtf_s, cumf_s = load_decay_rows(dtf_base, stride_dtf_l, s, valid_s, cumf_ptr + cum_off, offs_m, chunk_size)
        dtb_s, cumb_s = load_decay_rows(dtb_base, stride_dtb_l, s, valid_s, cumb_ptr + cum_off, offs_m, chunk_size)
        totf = tl.load(cumf_ptr + cum_off + chunk_size - 1)
        totb = tl.load(cumb_ptr + cum_off)

        state_off = ((pid_b * nchunks + pid_c) * nheads + pid_h) * d_state * headdim
        dstate_f, dstate_b = load_state_tiles(dstatef_ptr, dstateb_ptr, state_off, offs_n, offs_p, mask_n, mask_p,
                                              headdim, TRANSPOSED=True, DOT_DTYPE=DOT_DTYPE)  # (BLOCK_P, BLOCK_N)
        grad_f = tl.dot(x_s, dstate_f, input_precision=PRECISION) * tl.exp(totf - cumf_s)[:, None]
        grad_b = tl.dot(x_s, dstate_b, input_precision=PRECISION) * tl.exp(totb - cumb_s)[:, None]

        for k0 in range(0, chunk_size, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            t = pid_c * chunk_size + offs_k
            valid_t = (offs_k < chunk_size) & (t < seqlen)
            dy_t = tl.load(dy_base + t[None, :] * stride_dy_l + offs_p[:, None] * stride_dy_p,
                           mask=mask_p[:, None] & valid_t[None, :], other=0.0).to(DOT_DTYPE)  # (BLOCK_P, BLOCK_K)
            pair = tl.dot(x_s, dy_t, input_precision=PRECISION)  # (BLOCK_M s, BLOCK_K t): x[s] . dy[t]
            if k0 + BLOCK_K > m0:  # some t > s: forward triangle
                dtf_t = tl.load(dtf_base + t * stride_dtf_l, mask=valid_t, other=0.0).to(tl.float32)
                cumxf_t = tl.load(cumf_ptr + cum_off + offs_k, mask=offs_k < chunk_size, other=0.0) - A * dtf_t
                lower = (offs_k[None, :] > offs_m[:, None]) & valid_t[None, :]
                decay = tl.exp(tl.where(lower, cumxf_t[None, :] - cumf_s[:, None], float("-inf")))
                Csf = load_shifted_rows(Cf_base, t, valid_t, seqlen, stride_Cf_l, offs_n, mask_n, stride_Cf_n,
                                        SHIFT=-1, TRANSPOSED=False).to(DOT_DTYPE)
                grad_f += tl.dot((pair * decay).to(DOT_DTYPE), Csf, input_precision=PRECISION)
            if k0 < m0 + BLOCK_M:  # some t < s: backward triangle
                dtb_t = tl.load(dtb_base + t * stride_dtb_l, mask=valid_t, other=0.0).to(tl.float32)
                cumxb_t = tl.load(cumb_ptr + cum_off + offs_k, mask=offs_k < chunk_size, other=0.0) - A * dtb_t
                upper = (offs_k[None, :] < offs_m[:, None]) & valid_t[None, :]
                decay = tl.exp(tl.where(upper, cumxb_t[None, :] - cumb_s[:, None], float("-inf")))
                Csb = load_shifted_rows(Cb_base, t, valid_t, seqlen, stride_Cb_l, offs_n, mask_n, stride_Cb_n,
                                        SHIFT=1, TRANSPOSED=False).to(DOT_DTYPE)
                grad_b += tl.dot((pair * decay).to(DOT_DTYPE), Csb, input_precision=PRECISION)

        group_f += grad_f * dtf_s[:, None]
        group_b += grad_b * dtb_s[:, None]

    mask_sn = valid_s[:, None] & mask_n[None, :]
    tl.store(dBf_ptr + pid_b * stride_dBf_b + pid_g * stride_dBf_g + s[:, None] * stride_dBf_l
             + offs_n[None, :] * stride_dBf_n, group_f, mask=mask_sn)
    tl.store(dBb_ptr + pid_b * stride_dBb_b + pid_g * stride_dBb_g + s[:, None] * stride_dBb_l
             + offs_n[None, :] * stride_dBb_n, group_b, mask=mask_sn)


def _grid_and_blocks(x, B, chunk_size):
    batch, _, _, headdim = x.shape
    ngroups, d_state = B.shape[2], B.shape[3]
    nchunks_times_batch = batch * (-(-x.shape[1] // chunk_size))
    block_m = block_size(chunk_size, cap=64)
    grid = (nchunks_times_batch, -(-chunk_size // block_m), ngroups)
    blocks = dict(BLOCK_M=block_m, BLOCK_K=block_m, BLOCK_N=block_size(d_state), BLOCK_P=block_size(headdim),
                  **dot_config(x.dtype, _chunk_scan_bwd_dc_kernel))
    return grid, blocks


def chunk_scan_bwd_dc(x, dy, dt_f, dt_b, A, B_f, C_f, B_b, C_b, cum_f, cum_b, enter_f, enter_b):
    """Returns dC_f, dC_b (like C_f, C_b) and per direction rowgrad, float32 (batch, nheads, nchunks, chunk_size)."""
    batch, seqlen, nheads, headdim = x.shape
    ngroups, d_state = C_f.shape[2], C_f.shape[3]
    nchunks, chunk_size = cum_f.shape[2], cum_f.shape[3]
    # dCs row t is the gradient of C_f[t - 1] and of C_b[t + 1]; the rows that no output reads stay zero.
    dC_f = torch.zeros(batch, seqlen + 1, ngroups, d_state, device=x.device, dtype=C_f.dtype)
    dC_b = torch.zeros(batch, seqlen + 1, ngroups, d_state, device=x.device, dtype=C_b.dtype)
    dCs_f, dCs_b = dC_f[:, :seqlen], dC_b[:, 1:]
    rowgrad_f = torch.empty_like(cum_f)
    rowgrad_b = torch.empty_like(cum_b)
    grid, blocks = _grid_and_blocks(x, B_f, chunk_size)
    _chunk_scan_bwd_dc_kernel[grid](
        x, dy, dt_f, dt_b, A, B_f, C_f, B_b, C_b, cum_f, cum_b, enter_f, enter_b, dCs_f, dCs_b, rowgrad_f, rowgrad_b,
        seqlen, nheads, nheads // ngroups, d_state, headdim, chunk_size, nchunks,
        *x.stride(), *dy.stride(), *dt_f.stride(), *dt_b.stride(),
        *B_f.stride(), *C_f.stride(), *B_b.stride(), *C_b.stride(), *dCs_f.stride(), *dCs_b.stride(), **blocks,
    )
    return dC_f[:, 1:], dC_b[:, :seqlen], rowgrad_f, rowgrad_b


def chunk_scan_bwd_db(x, dy, dt_f, dt_b, A, B_f, C_f, B_b, C_b, cum_f, cum_b, dstate_f, dstate_b):
    """Returns dB_f, dB_b (like B_f, B_b); dstate_*: gradients of each chunk's own state (see chunk_scan_bwd_dx)."""
    batch, seqlen, nheads, headdim = x.shape
    ngroups, d_state = B_f.shape[2], B_f.shape[3]
    nchunks, chunk_size = cum_f.shape[2], cum_f.shape[3]
    dB_f = torch.empty_like(B_f, memory_format=torch.contiguous_format)
    dB_b = torch.empty_like(B_b, memory_format=torch.contiguous_format)
    grid, blocks = _grid_and_blocks(x, B_f, chunk_size)
    _chunk_scan_bwd_db_kernel[grid](
        x, dy, dt_f, dt_b, A, C_f, C_b, cum_f, cum_b, dstate_f, dstate_b, dB_f, dB_b,
        seqlen, nheads, nheads // ngroups, d_state, headdim, chunk_size, nchunks,
        *x.stride(), *dy.stride(), *dt_f.stride(), *dt_b.stride(), *C_f.stride(), *C_b.stride(),
        *dB_f.stride(), *dB_b.stride(), **blocks,
    )
    return dB_f, dB_b


def chunk_scan_bwd_dbc_ref(x, dy, dt_f, dt_b, A, B_f, C_f, B_b, C_b, cum_f, cum_b, enter_f, enter_b,
                           dstate_f, dstate_b):
    """Torch reference of `chunk_scan_bwd_db` and `chunk_scan_bwd_dc`: (dB_f, dB_b, dC_f, dC_b, rowgrad_f,
    rowgrad_b)."""
    batch, seqlen, nheads, headdim = x.shape
    ngroups = B_f.shape[2]
    nchunks, chunk_size = cum_f.shape[2], cum_f.shape[3]
    chunks = lambda t: to_chunks(t, nchunks, chunk_size)
    xc, dyc = chunks(x), chunks(dy)  # (batch, nchunks, Q, nheads, headdim)
    pair = torch.einsum("bcthp,bcshp->bchts", dyc, xc)  # dy[t] . x[s]
    to_groups = lambda t: t.reshape(batch, nchunks * chunk_size, ngroups, nheads // ngroups, -1).sum(3)[:, :seqlen]
    dB, dC, rowgrad = [], [], []
    for dt, B, C, shift, cum, enter, dstate, reverse in (
            (dt_f, B_f, C_f, -1, cum_f, enter_f, dstate_f, False), (dt_b, B_b, C_b, 1, cum_b, enter_b, dstate_b, True)):
        Bh, Csh = chunks(groups_to_heads(B, nheads)), chunks(groups_to_heads(shift_rows(C, shift), nheads))
        cum_q = cum.permute(0, 2, 3, 1)  # (batch, nchunks, Q, nheads)
        dtc = chunks(dt)
        tot = cum_q[:, :, :1] if reverse else cum_q[:, :, -1:]
        weight = pair * pair_decays(cum, dt, A, reverse)  # (batch, nchunks, nheads, Q t, Q s)
        dCs = torch.einsum("bchts,bcshn->bcthn", weight * dtc.permute(0, 1, 3, 2)[..., None, :], Bh)
        dCs = dCs + torch.einsum("bcthp,bchnp->bcthn", dyc, enter) * torch.exp(cum_q - dtc * A.float())[..., None]
        grad_B = torch.einsum("bchts,bcthn->bcshn", weight, Csh)
        grad_B = grad_B + torch.einsum("bcshp,bchnp->bcshn", xc, dstate) * torch.exp(tot - cum_q)[..., None]
        rowgrad.append((dCs * Csh).sum(-1).permute(0, 3, 1, 2))
        dB.append(to_groups(grad_B * dtc[..., None]).to(B.dtype))
        dC.append(shift_rows(to_groups(dCs), -shift).to(C.dtype))
    return dB[0], dB[1], dC[0], dC[1], rowgrad[0], rowgrad[1]
