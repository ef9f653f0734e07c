"""Stage 1 of the Triton SSD: log-decays summed inside each chunk, and the backward pass that turns them into dt and
A gradients.

For one direction with log-decays la[t] = dt[t] * A, the forward direction keeps inclusive prefix sums inside each
chunk (cum[t] = sum of la over chunk start..t) and the backward direction inclusive suffix sums (cum[t] = sum over
t..chunk end). With that single convention every later stage reads both directions the same way: the exclusive sum
is cum[t] - la[t], the chunk total is cum at the chunk's far edge, and decays are exp of differences of cums.
Positions past `seqlen` count as la = 0, so the cumsum buffer (batch, nheads, nchunks, chunk_size) is fully defined.
"""

from __future__ import annotations

import torch

from .ssd_triton_runtime import block_size, tl, triton_jit
from .ssd_triton_tiles import chunk_base


@triton_jit
def _chunk_cumsum_kernel(
    dt_ptr, A_ptr, cum_ptr,
    seqlen, nheads, chunk_size, nchunks,
    stride_dt_b, stride_dt_l, stride_dt_h,
    REVERSE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_Q: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    pid_c = tl.program_id(1)
    offs_h = tl.program_id(2) * BLOCK_H + tl.arange(0, BLOCK_H)
    offs_q = tl.arange(0, BLOCK_Q)
    chunk_start = pid_c * chunk_size
    mask_h = offs_h < nheads
    mask_q = offs_q < chunk_size
    dt = tl.load(chunk_base(dt_ptr, pid_b, stride_dt_b, chunk_start, stride_dt_l) + offs_q[None, :] * stride_dt_l
                 + offs_h[:, None] * stride_dt_h,
                 mask=mask_h[:, None] & (mask_q & (chunk_start + offs_q < seqlen))[None, :], other=0.0).to(tl.float32)
    A = tl.load(A_ptr + offs_h, mask=mask_h, other=0.0).to(tl.float32)
    cum = tl.cumsum(dt * A[:, None], axis=1, reverse=REVERSE)  # (BLOCK_H, BLOCK_Q)
    out = cum_ptr + (pid_b * nheads * nchunks + pid_c) * chunk_size
    tl.store(out + offs_h[:, None] * (nchunks * chunk_size) + offs_q[None, :], cum,
             mask=mask_h[:, None] & mask_q[None, :])


@triton_jit
def _chunk_cumsum_bwd_kernel(
    dt_ptr, A_ptr, rowgrad_ptr, ddt_exp_ptr, ddt_ptr, dA_ptr,
    seqlen, nheads, chunk_size, nchunks,
    stride_dt_b, stride_dt_l, stride_dt_h,
    stride_ddt_b, stride_ddt_l, stride_ddt_h,
    REVERSE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_Q: tl.constexpr,
):
    # R[t] = sum over pairs (t, s) with t the output row; K[s] = dt[s] * ddt_exp[s] = the same sum with s the input.
    # dla[k] = sum over pairs strictly spanning k = sum_{j beyond k} (R - K)[j] - K[k], "beyond" = later (forward
    # direction) or earlier (backward direction); chunks are visited from the far end with a running carry.
    pid_b = tl.program_id(0).to(tl.int64)
    offs_h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    offs_q = tl.arange(0, BLOCK_Q)
    mask_h = offs_h < nheads
    mask_q = offs_q < chunk_size
    A = tl.load(A_ptr + offs_h, mask=mask_h, other=0.0).to(tl.float32)
    carry = tl.zeros((BLOCK_H,), dtype=tl.float32)
    dA = tl.zeros((BLOCK_H,), dtype=tl.float32)
    for i in range(nchunks):
        if REVERSE:
            c = i
        else:
            c = nchunks - 1 - i
        chunk_start = c * chunk_size
        mask_t = mask_h[:, None] & (mask_q & (chunk_start + offs_q < seqlen))[None, :]
        dt = tl.load(chunk_base(dt_ptr, pid_b, stride_dt_b, chunk_start, stride_dt_l) + offs_q[None, :] * stride_dt_l
                     + offs_h[:, None] * stride_dt_h, mask=mask_t, other=0.0).to(tl.float32)
        buf = (pid_b * nheads * nchunks + c) * chunk_size  # this chunk of head 0 in the (batch, nheads, nchunks, Q)
        tile = offs_h[:, None] * (nchunks * chunk_size) + offs_q[None, :]
        R = tl.load(rowgrad_ptr + buf + tile, mask=mask_t, other=0.0)
        ddt_exp = tl.load(ddt_exp_ptr + buf + tile, mask=mask_t, other=0.0)
        K = dt * ddt_exp
        D = R - K
        if REVERSE:
            beyond = tl.cumsum(D, axis=1) - D
        else:
            beyond = tl.cumsum(D, axis=1, reverse=True) - D
        dla = carry[:, None] + beyond - K  # (BLOCK_H, BLOCK_Q)
        carry += tl.sum(D, axis=1)
        dA += tl.sum(dla * dt, axis=1)
        tl.store(chunk_base(ddt_ptr, pid_b, stride_ddt_b, chunk_start, stride_ddt_l) + offs_q[None, :] * stride_ddt_l
                 + offs_h[:, None] * stride_ddt_h, ddt_exp + A[:, None] * dla, mask=mask_t)
    tl.store(dA_ptr + pid_b * nheads + offs_h, dA, mask=mask_h)


def chunk_cumsum(dt: torch.Tensor, A: torch.Tensor, chunk_size: int, reverse: bool) -> torch.Tensor:
    """dt: (batch, seqlen, nheads), A: (nheads,) -> float32 (batch, nheads, nchunks, chunk_size) in-chunk sums of
    dt * A: inclusive prefix sums (`reverse=False`) or inclusive suffix sums (`reverse=True`)."""
    batch, seqlen, nheads = dt.shape
    nchunks = -(-seqlen // chunk_size)
    cum = torch.empty(batch, nheads, nchunks, chunk_size, device=dt.device, dtype=torch.float32)
    block_h = min(block_size(nheads, floor=1), 8)
    grid = (batch, nchunks, -(-nheads // block_h))
    _chunk_cumsum_kernel[grid](
        dt, A, cum, seqlen, nheads, chunk_size, nchunks, *dt.stride(),
        REVERSE=reverse, BLOCK_H=block_h, BLOCK_Q=block_size(chunk_size),
    )
    return cum


def chunk_cumsum_bwd(dt, A, rowgrad, ddt_exp, reverse: bool):
    """Gradients of one direction's dt and A from its pair sums.

    With W[t, s] the loss weight of the pair (output row t, input s) of one direction, rowgrad[t] = sum_s W[t, s] and
    dt[s] * ddt_exp[s] = sum_t W[t, s]; ddt_exp[s] is the gradient of dt[s] as the input factor of M[t, s]. The
    log-decay la[k] enters every pair that strictly spans k, which gives dla; then ddt = ddt_exp + A * dla and
    dA = sum dt * dla.

    dt: (batch, seqlen, nheads); rowgrad, ddt_exp: float32 (batch, nheads, nchunks, chunk_size).
    Returns ddt (batch, seqlen, nheads) in float32 and dA (nheads,) in float32.
    """
    batch, seqlen, nheads = dt.shape
    nchunks, chunk_size = rowgrad.shape[2], rowgrad.shape[3]
    ddt = torch.empty(batch, seqlen, nheads, device=dt.device, dtype=torch.float32)
    dA = torch.empty(batch, nheads, device=dt.device, dtype=torch.float32)
    block_q = block_size(chunk_size)
    block_h = max(1, min(block_size(nheads, floor=1), 1024 // block_q))  # 1024 elements per array: no spills
    grid = (batch, -(-nheads // block_h))
    _chunk_cumsum_bwd_kernel[grid](
        dt, A, rowgrad, ddt_exp, ddt, dA, seqlen, nheads, chunk_size, nchunks, *dt.stride(), *ddt.stride(),
        REVERSE=reverse, BLOCK_H=block_h, BLOCK_Q=block_q,
    )
    return ddt, dA.sum(0)
