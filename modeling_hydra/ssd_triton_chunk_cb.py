"""The in-chunk C.B products of both directions, once per group: what every head of the group shares.

For each chunk and group, one (chunk_size x chunk_size) float32 matrix holds both triangles:
    cb[t, s] = C_f[t - 1] . B_f[s]   for s < t  (forward direction, row t reads the shifted C)
    cb[t, s] = C_b[t + 1] . B_b[s]   for s > t  (backward direction)
    cb[t, t] = 0, and cb[t, s] = 0 when t and s belong to different sequences (seq_idx).
The chunk scan (forward) and the dx kernel (backward) multiply it by each head's decays and step sizes, so the
products over d_state are computed once per group instead of once per head, and the kernels that read it hold one
tile less.
"""

from __future__ import annotations

import torch

from .ssd_triton_launch import launch_config, seq_strides
from .ssd_triton_runtime import dot_config, tl, triton_jit
from .ssd_triton_tiles import chunk_base, chunk_of_program, load_seq_ids, load_shifted_rows, rows_in_chunk


@triton_jit
def _chunk_cb_kernel(
    Bf_ptr, Cf_ptr, Bb_ptr, Cb_ptr, seq_ptr, cb_ptr,
    seqlen, ngroups, d_state, chunk_size, nchunks,
    stride_Bf_b, stride_Bf_l, stride_Bf_g, stride_Bf_n, stride_Cf_b, stride_Cf_l, stride_Cf_g, stride_Cf_n,
    stride_Bb_b, stride_Bb_l, stride_Bb_g, stride_Bb_n, stride_Cb_b, stride_Cb_l, stride_Cb_g, stride_Cb_n,
    stride_seq_b, stride_seq_l,
    HAS_SEQ_IDX: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_NS: tl.constexpr,
    DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):
    pid_b, pid_c, chunk_start = chunk_of_program(nchunks, chunk_size)
    pid_g = tl.program_id(1)
    num_k = tl.cdiv(chunk_size, BLOCK_K)
    m0 = (tl.program_id(2) // num_k) * BLOCK_M
    k0 = (tl.program_id(2) % num_k) * BLOCK_K
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_k = k0 + tl.arange(0, BLOCK_K)
    valid_t = rows_in_chunk(offs_m, chunk_start, chunk_size, seqlen)
    valid_s = rows_in_chunk(offs_k, chunk_start, chunk_size, seqlen)
    Bf_base = chunk_base(Bf_ptr, pid_b, stride_Bf_b, chunk_start, stride_Bf_l) + pid_g * stride_Bf_g
    Cf_base = chunk_base(Cf_ptr, pid_b, stride_Cf_b, chunk_start, stride_Cf_l) + pid_g * stride_Cf_g
    Bb_base = chunk_base(Bb_ptr, pid_b, stride_Bb_b, chunk_start, stride_Bb_l) + pid_g * stride_Bb_g
    Cb_base = chunk_base(Cb_ptr, pid_b, stride_Cb_b, chunk_start, stride_Cb_l) + pid_g * stride_Cb_g

    # Products over d_state in steps of BLOCK_NS.
    cb = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
    if k0 < m0 + BLOCK_M:  # some s < t: forward triangle
        for n0 in range(0, d_state, BLOCK_NS):
            offs_n = n0 + tl.arange(0, BLOCK_NS)
            mask_n = offs_n < d_state
            Cs = load_shifted_rows(Cf_base, offs_m, chunk_start, valid_t, seqlen, stride_Cf_l, offs_n,
                                   mask_n, stride_Cf_n,
                                   SHIFT=-1, TRANSPOSED=False).to(DOT_DTYPE)
            B = tl.load(Bf_base + offs_k[None, :] * stride_Bf_l + offs_n[:, None] * stride_Bf_n,
                        mask=mask_n[:, None] & valid_s[None, :], other=0.0).to(DOT_DTYPE)
            cb += tl.dot(Cs, B, input_precision=PRECISION)
        cb = tl.where(offs_m[:, None] > offs_k[None, :], cb, 0.0)
    if k0 + BLOCK_K > m0:  # some s > t: backward triangle
        upper = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
        for n0 in range(0, d_state, BLOCK_NS):
            offs_n = n0 + tl.arange(0, BLOCK_NS)
            mask_n = offs_n < d_state
            Cs = load_shifted_rows(Cb_base, offs_m, chunk_start, valid_t, seqlen, stride_Cb_l, offs_n,
                                   mask_n, stride_Cb_n,
                                   SHIFT=1, TRANSPOSED=False).to(DOT_DTYPE)
            B = tl.load(Bb_base + offs_k[None, :] * stride_Bb_l + offs_n[:, None] * stride_Bb_n,
                        mask=mask_n[:, None] & valid_s[None, :], other=0.0).to(DOT_DTYPE)
            upper += tl.dot(Cs, B, input_precision=PRECISION)
        cb += tl.where(offs_m[:, None] < offs_k[None, :], upper, 0.0)
    if HAS_SEQ_IDX:
        seq_base = chunk_base(seq_ptr, pid_b, stride_seq_b, chunk_start, stride_seq_l)
        same = load_seq_ids(seq_base, offs_m, valid_t, stride_seq_l)[:, None] == \
            load_seq_ids(seq_base, offs_k, valid_s, stride_seq_l)[None, :]
        cb = tl.where(same, cb, 0.0)
    out = cb_ptr + ((pid_b * nchunks + pid_c) * ngroups + pid_g) * chunk_size * chunk_size
    tl.store(out + offs_m[:, None] * chunk_size + offs_k[None, :], cb,
             mask=(offs_m < chunk_size)[:, None] & (offs_k < chunk_size)[None, :])


def chunk_cb(B_f, C_f, B_b, C_b, chunk_size: int, seq_idx=None) -> torch.Tensor:
    """float32 (batch, nchunks, ngroups, chunk_size, chunk_size) in-chunk products of both directions (see the
    module docstring). B_*, C_*: (batch, seqlen, ngroups, d_state); seq_idx: optional int32 (batch, seqlen)."""
    batch, seqlen, ngroups, d_state = B_f.shape
    nchunks = -(-seqlen // chunk_size)
    cb = torch.empty(batch, nchunks, ngroups, chunk_size, chunk_size, device=B_f.device, dtype=torch.float32)
    config = launch_config("chunk_cb", _chunk_cb_kernel, B_f.dtype, 0, d_state, chunk_size,
                           blocks=("BLOCK_M", "BLOCK_K", "BLOCK_NS"))
    nblocks = -(-chunk_size // config["BLOCK_M"])
    _chunk_cb_kernel[(batch * nchunks, ngroups, nblocks * nblocks)](
        B_f, C_f, B_b, C_b, seq_idx, cb, seqlen, ngroups, d_state, chunk_size, nchunks,
        *B_f.stride(), *C_f.stride(), *B_b.stride(), *C_b.stride(), *seq_strides(seq_idx),
        HAS_SEQ_IDX=seq_idx is not None, **config, **dot_config(B_f.dtype, _chunk_cb_kernel),
    )
    return cb
