"""Stage 4 of the Triton SSD (forward pass): the outputs of both directions and the diagonal, chunk by chunk.

One program computes a tile of output rows t of one chunk and head:
    y[t] = sum_{s in chunk} M[t, s] x[s]                                  (intra-chunk, both triangles and the diagonal)
         + exp(cum_f[t] - la_f[t]) C_f[t-1] . enter_f[c]                 (state entering from the left)
         + exp(cum_b[t] - la_b[t]) C_b[t+1] . enter_b[c]                 (state entering from the right)
The in-chunk pairs read the group's C.B products from `chunk_cb` (zero across sequence boundaries) and multiply them
by this head's decays and step sizes (lower triangle: forward direction, upper: backward), so x is read once and y
written once for both directions. With seq_idx, a row reads an entering state only if it belongs to the state's
sequence (that of the token just before / after the chunk).
"""

from __future__ import annotations

import torch

from .ssd_triton_launch import launch_config, seq_strides
from .ssd_triton_runtime import dot_config, tl, triton_jit
from .ssd_triton_tiles import (chunk_base, chunk_of_program, load_decay_rows, load_seq_id, load_seq_ids,
                              load_shifted_rows, load_state_tile, rows_in_chunk)


@triton_jit
def _chunk_scan_kernel(
    x_ptr, dtf_ptr, dtb_ptr, A_ptr, Cf_ptr, Cb_ptr, diag_ptr, seq_ptr, cb_ptr,
    cumf_ptr, cumb_ptr, enterf_ptr, enterb_ptr, y_ptr,
    seqlen, nheads, heads_per_group, ngroups, d_state, headdim, chunk_size, nchunks,
    stride_x_b, stride_x_l, stride_x_h, stride_x_p,
    stride_dtf_b, stride_dtf_l, stride_dtf_h, stride_dtb_b, stride_dtb_l, stride_dtb_h,
    stride_Cf_b, stride_Cf_l, stride_Cf_g, stride_Cf_n, stride_Cb_b, stride_Cb_l, stride_Cb_g, stride_Cb_n,
    stride_diag_b, stride_diag_l, stride_diag_h, stride_seq_b, stride_seq_l,
    stride_y_b, stride_y_l, stride_y_h, stride_y_p,
    HAS_SEQ_IDX: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_NS: tl.constexpr,
    BLOCK_P: tl.constexpr, DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):
    pid_b, pid_c, chunk_start = chunk_of_program(nchunks, chunk_size)
    pid_h = tl.program_id(1)
    pid_g = pid_h // heads_per_group
    num_p = tl.cdiv(headdim, BLOCK_P)
    m0 = (tl.program_id(2) // num_p) * BLOCK_M
    offs_p = (tl.program_id(2) % num_p) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_m = m0 + tl.arange(0, BLOCK_M)
    mask_p = offs_p < headdim
    valid_t = rows_in_chunk(offs_m, chunk_start, chunk_size, seqlen)

    A = tl.load(A_ptr + pid_h).to(tl.float32)
    cum_off = ((pid_b * nheads + pid_h) * nchunks + pid_c) * chunk_size
    x_base = chunk_base(x_ptr, pid_b, stride_x_b, chunk_start, stride_x_l) + pid_h * stride_x_h
    dtf_base = chunk_base(dtf_ptr, pid_b, stride_dtf_b, chunk_start, stride_dtf_l) + pid_h * stride_dtf_h
    dtb_base = chunk_base(dtb_ptr, pid_b, stride_dtb_b, chunk_start, stride_dtb_l) + pid_h * stride_dtb_h
    cb_base = cb_ptr + ((pid_b * nchunks + pid_c) * ngroups + pid_g) * chunk_size * chunk_size

    cumxf_t = tl.load(cumf_ptr + cum_off + offs_m, mask=offs_m < chunk_size, other=0.0) \
        - A * tl.load(dtf_base + offs_m * stride_dtf_l, mask=valid_t, other=0.0).to(tl.float32)
    cumxb_t = tl.load(cumb_ptr + cum_off + offs_m, mask=offs_m < chunk_size, other=0.0) \
        - A * tl.load(dtb_base + offs_m * stride_dtb_l, mask=valid_t, other=0.0).to(tl.float32)
    # Decay of the entering states to row t; zero for rows of another sequence than the state's.
    out_f = tl.exp(cumxf_t)
    out_b = tl.exp(cumxb_t)
    if HAS_SEQ_IDX:
        seq_row0 = seq_ptr + pid_b * stride_seq_b
        seq_base = chunk_base(seq_ptr, pid_b, stride_seq_b, chunk_start, stride_seq_l)
        seq_t = load_seq_ids(seq_base, offs_m, valid_t, stride_seq_l)
        out_f = tl.where(seq_t == load_seq_id(seq_row0, chunk_start - 1, seqlen, stride_seq_l), out_f, 0.0)
        out_b = tl.where(seq_t == load_seq_id(seq_row0, chunk_start + chunk_size, seqlen, stride_seq_l), out_b, 0.0)

    # States entering from the left and the right; row t reads the shifted C: C_f[t - 1] and C_b[t + 1]. The
    # products run over d_state in steps of BLOCK_NS (at most 64), which keeps the operands small.
    state_off = ((pid_b * nchunks + pid_c) * nheads + pid_h) * d_state * headdim
    Cf_base = chunk_base(Cf_ptr, pid_b, stride_Cf_b, chunk_start, stride_Cf_l) + pid_g * stride_Cf_g
    Cb_base = chunk_base(Cb_ptr, pid_b, stride_Cb_b, chunk_start, stride_Cb_l) + pid_g * stride_Cb_g
    state = tl.zeros((BLOCK_M, BLOCK_P), dtype=tl.float32)
    for n0 in range(0, d_state, BLOCK_NS):
        offs_n = n0 + tl.arange(0, BLOCK_NS)
        mask_n = offs_n < d_state
        Cs = load_shifted_rows(Cf_base, offs_m, chunk_start, valid_t, seqlen, stride_Cf_l, offs_n, mask_n, stride_Cf_n,
                               SHIFT=-1, TRANSPOSED=False).to(DOT_DTYPE)
        enter = load_state_tile(enterf_ptr, state_off, offs_n, offs_p, mask_n, mask_p, headdim,
                                TRANSPOSED=False, DOT_DTYPE=DOT_DTYPE)
        state += tl.dot(Cs, enter, input_precision=PRECISION)
    acc = state * out_f[:, None]
    state = tl.zeros((BLOCK_M, BLOCK_P), dtype=tl.float32)
    for n0 in range(0, d_state, BLOCK_NS):
        offs_n = n0 + tl.arange(0, BLOCK_NS)
        mask_n = offs_n < d_state
        Cs = load_shifted_rows(Cb_base, offs_m, chunk_start, valid_t, seqlen, stride_Cb_l, offs_n, mask_n, stride_Cb_n,
                               SHIFT=1, TRANSPOSED=False).to(DOT_DTYPE)
        enter = load_state_tile(enterb_ptr, state_off, offs_n, offs_p, mask_n, mask_p, headdim,
                                TRANSPOSED=False, DOT_DTYPE=DOT_DTYPE)
        state += tl.dot(Cs, enter, input_precision=PRECISION)
    acc += state * out_b[:, None]

    x_t = tl.load(x_base + offs_m[:, None] * stride_x_l + offs_p[None, :] * stride_x_p,
                  mask=valid_t[:, None] & mask_p[None, :], other=0.0)
    diag_base = chunk_base(diag_ptr, pid_b, stride_diag_b, chunk_start, stride_diag_l) + pid_h * stride_diag_h
    diag = tl.load(diag_base + offs_m * stride_diag_l, mask=valid_t, other=0.0).to(tl.float32)
    acc += diag[:, None] * x_t.to(tl.float32)

    # In-chunk pairs: cb (zero on the diagonal and across sequences) times this head's decays and step sizes; the
    # lower triangle is the forward direction, the upper one the backward direction.
    for k0 in range(0, chunk_size, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        valid_s = rows_in_chunk(offs_k, chunk_start, chunk_size, seqlen)
        cb = tl.load(cb_base + offs_m[:, None] * chunk_size + offs_k[None, :],
                     mask=(offs_m < chunk_size)[:, None] & (offs_k < chunk_size)[None, :], other=0.0)
        dtf_s, cumf_s = load_decay_rows(dtf_base, stride_dtf_l, offs_k, valid_s, cumf_ptr + cum_off, chunk_size)
        dtb_s, cumb_s = load_decay_rows(dtb_base, stride_dtb_l, offs_k, valid_s, cumb_ptr + cum_off, chunk_size)
        lower = offs_m[:, None] > offs_k[None, :]
        exponent = tl.where(lower, cumxf_t[:, None] - cumf_s[None, :], cumxb_t[:, None] - cumb_s[None, :])
        step = tl.where(lower, dtf_s[None, :], dtb_s[None, :])
        mix = cb * tl.exp(tl.minimum(exponent, 0.0)) * step
        x_s = tl.load(x_base + offs_k[:, None] * stride_x_l + offs_p[None, :] * stride_x_p,
                      mask=valid_s[:, None] & mask_p[None, :], other=0.0)
        acc += tl.dot(mix.to(DOT_DTYPE), x_s.to(DOT_DTYPE), input_precision=PRECISION)

    y_base = chunk_base(y_ptr, pid_b, stride_y_b, chunk_start, stride_y_l) + pid_h * stride_y_h
    tl.store(y_base + offs_m[:, None] * stride_y_l + offs_p[None, :] * stride_y_p, acc,
             mask=valid_t[:, None] & mask_p[None, :])


def chunk_scan(x, dt_f, dt_b, A, C_f, C_b, diag, cb, cum_f, cum_b, enter_f, enter_b, seq_idx=None) -> torch.Tensor:
    """y (batch, seqlen, nheads, headdim) in x's dtype from the SSD inputs (shapes of `ssd_bidirectional_torch`),
    the in-chunk products `chunk_cb`, the in-chunk cumsums of both directions (`chunk_cumsum`), their entering
    states (`state_passing`) and the optional int32 sequence ids seq_idx (batch, seqlen)."""
    batch, seqlen, nheads, headdim = x.shape
    ngroups, d_state = C_f.shape[2], C_f.shape[3]
    nchunks, chunk_size = cum_f.shape[2], cum_f.shape[3]
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    config = launch_config("chunk_scan", _chunk_scan_kernel, x.dtype, headdim, d_state, chunk_size,
                           blocks=("BLOCK_M", "BLOCK_K", "BLOCK_NS", "BLOCK_P"))
    block_m, block_p = config["BLOCK_M"], config["BLOCK_P"]
    grid = (batch * nchunks, nheads, -(-chunk_size // block_m) * -(-headdim // block_p))
    _chunk_scan_kernel[grid](
        x, dt_f, dt_b, A, C_f, C_b, diag, seq_idx, cb, cum_f, cum_b, enter_f, enter_b, y,
        seqlen, nheads, nheads // ngroups, ngroups, d_state, headdim, chunk_size, nchunks,
        *x.stride(), *dt_f.stride(), *dt_b.stride(), *C_f.stride(), *C_b.stride(),
        *diag.stride(), *seq_strides(seq_idx), *y.stride(),
        HAS_SEQ_IDX=seq_idx is not None, **config, **dot_config(x.dtype, _chunk_scan_kernel),
    )
    return y
