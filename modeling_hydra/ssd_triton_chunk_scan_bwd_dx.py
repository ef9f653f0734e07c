"""Backward pass of stage 4, part 1: gradients of x and of the diagonal, and the dt gradients of the input factor.

One program takes a tile of input rows s of one chunk and head and computes, per direction, the gradient of the
direction's output with respect to (dt[s] x[s]):
    g_f[s] = sum_{t > s in chunk} (B_f[s] . C_f[t-1]) exp(cum_f[t] - la_f[t] - cum_f[s]) dy[t]
             + exp(tot_f - cum_f[s]) B_f[s] . dstate_f[c]
(mirrored for the backward direction), where dstate[c] is the gradient of chunk c's own state (stage 2 in adjoint
mode carried by stage 3). Then dx[s] = dt_f[s] g_f[s] + dt_b[s] g_b[s] + diag[s] dy[s], ddiag[s] = dy[s] . x[s] and
ddt_exp[s] = x[s] . g[s] per direction (the dt gradient through the input factor only; stage 1's backward adds the
part through the decays).
"""

from __future__ import annotations

import torch

from .ssd_chunk_layout import groups_to_heads, pair_decays, shift_rows, to_chunks
from .ssd_triton_runtime import block_size, dot_config, tl, triton_jit
from .ssd_triton_tiles import load_decay_rows, load_shifted_rows, load_state_tiles


@triton_jit
def _chunk_scan_bwd_dx_kernel(
    x_ptr, dy_ptr, dtf_ptr, dtb_ptr, A_ptr, Bf_ptr, Cf_ptr, Bb_ptr, Cb_ptr, diag_ptr,
    cumf_ptr, cumb_ptr, dstatef_ptr, dstateb_ptr, dx_ptr, ddiag_ptr, ddtf_ptr, ddtb_ptr,
    seqlen, nheads, heads_per_group, d_state, headdim, chunk_size, nchunks,
    stride_x_b, stride_x_l, stride_x_h, stride_x_p, stride_dy_b, stride_dy_l, stride_dy_h, stride_dy_p,
    stride_dtf_b, stride_dtf_l, stride_dtf_h, stride_dtb_b, stride_dtb_l, stride_dtb_h,
    stride_Bf_b, stride_Bf_l, stride_Bf_g, stride_Bf_n, stride_Cf_b, stride_Cf_l, stride_Cf_g, stride_Cf_n,
    stride_Bb_b, stride_Bb_l, stride_Bb_g, stride_Bb_n, stride_Cb_b, stride_Cb_l, stride_Cb_g, stride_Cb_n,
    stride_diag_b, stride_diag_l, stride_diag_h,
    stride_dx_b, stride_dx_l, stride_dx_h, stride_dx_p, stride_ddiag_b, stride_ddiag_l, stride_ddiag_h,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_P: tl.constexpr,
    DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):
    pid_bc = tl.program_id(0)
    pid_b = (pid_bc // nchunks).to(tl.int64)
    pid_c = pid_bc % nchunks
    pid_h = tl.program_id(1)
    pid_g = pid_h // heads_per_group
    m0 = tl.program_id(2) * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_p = tl.arange(0, BLOCK_P)
    mask_n = offs_n < d_state
    mask_p = offs_p < headdim
    s = pid_c * chunk_size + offs_m
    valid_s = (offs_m < chunk_size) & (s < seqlen)

    A = tl.load(A_ptr + pid_h).to(tl.float32)
    cum_off = ((pid_b * nheads + pid_h) * nchunks + pid_c) * chunk_size
    dtf_base = dtf_ptr + pid_b * stride_dtf_b + pid_h * stride_dtf_h
    dtb_base = dtb_ptr + pid_b * stride_dtb_b + pid_h * stride_dtb_h
    Cf_base = Cf_ptr + pid_b * stride_Cf_b + pid_g * stride_Cf_g
    Cb_base = Cb_ptr + pid_b * stride_Cb_b + pid_g * stride_Cb_g
    dy_base = dy_ptr + pid_b * stride_dy_b + pid_h * stride_dy_h

    mask_sp = valid_s[:, None] & mask_p[None, :]
    x_s = tl.load(x_ptr + pid_b * stride_x_b + pid_h * stride_x_h + s[:, None] * stride_x_l
                  + offs_p[None, :] * stride_x_p, mask=mask_sp, other=0.0).to(tl.float32)
    dy_s = tl.load(dy_base + s[:, None] * stride_dy_l + offs_p[None, :] * stride_dy_p, mask=mask_sp,
                   other=0.0).to(tl.float32)
    mask_sn = valid_s[:, None] & mask_n[None, :]
    Bf = tl.load(Bf_ptr + pid_b * stride_Bf_b + pid_g * stride_Bf_g + s[:, None] * stride_Bf_l
                 + offs_n[None, :] * stride_Bf_n, mask=mask_sn, other=0.0).to(DOT_DTYPE)
    Bb = tl.load(Bb_ptr + pid_b * stride_Bb_b + pid_g * stride_Bb_g + s[:, None] * stride_Bb_l
                 + offs_n[None, :] * stride_Bb_n, mask=mask_sn, other=0.0).to(DOT_DTYPE)
    dtf_s, cumf_s = load_decay_rows(dtf_base, stride_dtf_l, s, valid_s, cumf_ptr + cum_off, offs_m, chunk_size)
    dtb_s, cumb_s = load_decay_rows(dtb_base, stride_dtb_l, s, valid_s, cumb_ptr + cum_off, offs_m, chunk_size)
    totf = tl.load(cumf_ptr + cum_off + chunk_size - 1)
    totb = tl.load(cumb_ptr + cum_off)

    state_off = ((pid_b * nchunks + pid_c) * nheads + pid_h) * d_state * headdim
    dstate_f, dstate_b = load_state_tiles(dstatef_ptr, dstateb_ptr, state_off, offs_n, offs_p, mask_n, mask_p,
                                          headdim, TRANSPOSED=False, DOT_DTYPE=DOT_DTYPE)
    grad_f = tl.dot(Bf, dstate_f, input_precision=PRECISION) * tl.exp(totf - cumf_s)[:, None]
    grad_b = tl.dot(Bb, dstate_b, input_precision=PRECISION) * tl.exp(totb - cumb_s)[:, None]

    for k0 in range(0, chunk_size, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        t = pid_c * chunk_size + offs_k
        valid_t = (offs_k < chunk_size) & (t < seqlen)
        dy_t = tl.load(dy_base + t[:, None] * stride_dy_l + offs_p[None, :] * stride_dy_p,
                       mask=valid_t[:, None] & mask_p[None, :], other=0.0).to(DOT_DTYPE)
        if k0 + BLOCK_K > m0:  # some t > s: forward triangle
            Csf = load_shifted_rows(Cf_base, t, valid_t, seqlen, stride_Cf_l, offs_n, mask_n, stride_Cf_n,
                                    SHIFT=-1, TRANSPOSED=True).to(DOT_DTYPE)
            dtf_t = tl.load(dtf_base + t * stride_dtf_l, mask=valid_t, other=0.0).to(tl.float32)
            cumxf_t = tl.load(cumf_ptr + cum_off + offs_k, mask=offs_k < chunk_size, other=0.0) - A * dtf_t
            lower = (offs_k[None, :] > offs_m[:, None]) & valid_t[None, :]
            decay = tl.exp(tl.where(lower, cumxf_t[None, :] - cumf_s[:, None], float("-inf")))
            mix = tl.dot(Bf, Csf, input_precision=PRECISION) * decay  # (BLOCK_M s, BLOCK_K t)
            grad_f += tl.dot(mix.to(DOT_DTYPE), dy_t, input_precision=PRECISION)
        if k0 < m0 + BLOCK_M:  # some t < s: backward triangle
            Csb = load_shifted_rows(Cb_base, t, valid_t, seqlen, stride_Cb_l, offs_n, mask_n, stride_Cb_n,
                                    SHIFT=1, TRANSPOSED=True).to(DOT_DTYPE)
            dtb_t = tl.load(dtb_base + t * stride_dtb_l, mask=valid_t, other=0.0).to(tl.float32)
            cumxb_t = tl.load(cumb_ptr + cum_off + offs_k, mask=offs_k < chunk_size, other=0.0) - A * dtb_t
            upper = (offs_k[None, :] < offs_m[:, None]) & valid_t[None, :]
            decay = tl.exp(tl.where(upper, cumxb_t[None, :] - cumb_s[:, None], float("-inf")))
            mix = tl.dot(Bb, Csb, input_precision=PRECISION) * decay
            grad_b += tl.dot(mix.to(DOT_DTYPE), dy_t, input_precision=PRECISION)

    diag = tl.load(diag_ptr + pid_b * stride_diag_b + s * stride_diag_l + pid_h * stride_diag_h,
                   mask=valid_s, other=0.0).to(tl.float32)
    dx = grad_f * dtf_s[:, None] + grad_b * dtb_s[:, None] + diag[:, None] * dy_s
    tl.store(dx_ptr + pid_b * stride_dx_b + pid_h * stride_dx_h + s[:, None] * stride_dx_l
             + offs_p[None, :] * stride_dx_p, dx, mask=mask_sp)
    tl.store(ddiag_ptr + pid_b * stride_ddiag_b + s * stride_ddiag_l + pid_h * stride_ddiag_h,
             tl.sum(dy_s * x_s, axis=1), mask=valid_s)
    tl.store(ddtf_ptr + cum_off + offs_m, tl.sum(grad_f * x_s, axis=1), mask=offs_m < chunk_size)
    tl.store(ddtb_ptr + cum_off + offs_m, tl.sum(grad_b * x_s, axis=1), mask=offs_m < chunk_size)


def chunk_scan_bwd_dx(x, dy, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, cum_f, cum_b, dstate_f, dstate_b):
    """Returns dx (like x), ddiag (like diag) and per direction ddt_exp, float32 (batch, nheads, nchunks, chunk_size).

    dstate_f, dstate_b: float32 (batch, nchunks, nheads, d_state, headdim), the gradients of each chunk's own state.
    """
    batch, seqlen, nheads, headdim = x.shape
    ngroups, d_state = B_f.shape[2], B_f.shape[3]
    nchunks, chunk_size = cum_f.shape[2], cum_f.shape[3]
    dx = torch.empty_like(x, memory_format=torch.contiguous_format)
    ddiag = torch.empty_like(diag, memory_format=torch.contiguous_format)
    ddt_exp_f = torch.empty_like(cum_f)
    ddt_exp_b = torch.empty_like(cum_b)
    block_m = block_size(chunk_size, cap=64)
    grid = (batch * nchunks, nheads, -(-chunk_size // block_m))
    _chunk_scan_bwd_dx_kernel[grid](
        x, dy, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, cum_f, cum_b, dstate_f, dstate_b,
        dx, ddiag, ddt_exp_f, ddt_exp_b,
        seqlen, nheads, nheads // ngroups, d_state, headdim, chunk_size, nchunks,
        *x.stride(), *dy.stride(), *dt_f.stride(), *dt_b.stride(),
        *B_f.stride(), *C_f.stride(), *B_b.stride(), *C_b.stride(), *diag.stride(), *dx.stride(), *ddiag.stride(),
        BLOCK_M=block_m, BLOCK_K=block_m, BLOCK_N=block_size(d_state), BLOCK_P=block_size(headdim),
        **dot_config(x.dtype, _chunk_scan_bwd_dx_kernel),
    )
    return dx, ddiag, ddt_exp_f, ddt_exp_b


def chunk_scan_bwd_dx_ref(x, dy, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, cum_f, cum_b, dstate_f, dstate_b):
    """Torch reference of `chunk_scan_bwd_dx`."""
    batch, seqlen, nheads, headdim = x.shape
    nchunks, chunk_size = cum_f.shape[2], cum_f.shape[3]
    chunks = lambda t: to_chunks(t, nchunks, chunk_size)
    xc, dyc = chunks(x), chunks(dy)  # (batch, nchunks, Q, nheads, headdim)
    dx = chunks(diag)[..., None] * dyc
    ddt_exp = []
    for dt, B, Cs, cum, dstate, reverse in ((dt_f, B_f, shift_rows(C_f, -1), cum_f, dstate_f, False),
                                           (dt_b, B_b, shift_rows(C_b, 1), cum_b, dstate_b, True)):
        Bh, Csh = chunks(groups_to_heads(B, nheads)), chunks(groups_to_heads(Cs, nheads))
        cum_q = cum.permute(0, 2, 3, 1)  # (batch, nchunks, Q, nheads)
        tot = cum_q[:, :, :1] if reverse else cum_q[:, :, -1:]
        mix = torch.einsum("bcthn,bcshn->bchts", Csh, Bh) * pair_decays(cum, dt, A, reverse)
        grad = torch.einsum("bchts,bcthp->bcshp", mix, dyc)
        grad = grad + torch.einsum("bcshn,bchnp->bcshp", Bh, dstate) * torch.exp(tot - cum_q)[..., None]
        dx = dx + grad * chunks(dt)[..., None]
        ddt_exp.append((grad * xc).sum(-1).permute(0, 3, 1, 2))
    unchunk = lambda t: t.reshape(batch, nchunks * chunk_size, *t.shape[3:])[:, :seqlen]
    ddiag = (dyc * xc).sum(-1)
    return unchunk(dx).to(x.dtype), unchunk(ddiag).to(diag.dtype), ddt_exp[0], ddt_exp[1]
