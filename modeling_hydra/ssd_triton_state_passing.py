"""Stage 3 of the Triton SSD: carry chunk states across chunks, left to right or right to left.

enter[c] is the state entering chunk c from the side the scan comes from: with `reverse=False`
enter[0] = 0 and enter[c] = states[c - 1] + exp(tot[c - 1]) * enter[c - 1]; with `reverse=True` the mirror image
(enter[T - 1] = 0, enter[c] = states[c + 1] + exp(tot[c + 1]) * enter[c + 1]). The forward pass runs it left to right
for the forward direction and right to left for the backward one; the backward pass runs it the other way round on
the adjoint states, which gives the gradient of each chunk's own state.
"""

from __future__ import annotations

import torch

from .ssd_triton_launch import seq_strides
from .ssd_triton_runtime import block_size, tl, triton_jit
from .ssd_triton_tiles import load_seq_id


@triton_jit
def _state_passing_kernel(
    states_ptr, tot_ptr, seq_ptr, out_ptr,
    nheads, nchunks, dim, seqlen, chunk_size,
    stride_tot_b, stride_tot_h, stride_tot_c, stride_seq_b, stride_seq_l,
    REVERSE: tl.constexpr, BACKWARD_DIRECTION: tl.constexpr, HAS_SEQ_IDX: tl.constexpr, BLOCK: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    pid_h = tl.program_id(1)
    offs = tl.program_id(2) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < dim
    carry = tl.zeros((BLOCK,), dtype=tl.float32)
    for i in range(nchunks):
        if REVERSE:
            c = nchunks - 1 - i
        else:
            c = i
        base = ((pid_b * nchunks + c) * nheads + pid_h) * dim
        tl.store(out_ptr + base + offs, carry, mask=mask)
        state = tl.load(states_ptr + base + offs, mask=mask, other=0.0)
        decay = tl.exp(tl.load(tot_ptr + pid_b * stride_tot_b + pid_h * stride_tot_h + c * stride_tot_c))
        if HAS_SEQ_IDX:
            # A state only passes through chunk c if chunk c and the token before it (forward direction) or after it
            # (backward direction) are one sequence.
            seq_base = seq_ptr + pid_b * stride_seq_b
            if BACKWARD_DIRECTION:
                near, far = c * chunk_size + chunk_size, c * chunk_size
            else:
                near, far = c * chunk_size - 1, c * chunk_size + chunk_size - 1
            same = load_seq_id(seq_base, near, seqlen, stride_seq_l) == load_seq_id(seq_base, far, seqlen,
                                                                                     stride_seq_l)
            decay = tl.where(same, decay, 0.0)
        carry = state + decay * carry


def state_passing(states: torch.Tensor, cum: torch.Tensor, backward_direction: bool, reverse: bool,
                  seq_idx=None) -> torch.Tensor:
    """Entering states (float32, shaped like `states`) of one SSD direction, carried right to left when `reverse`.

    states: float32 (batch, nchunks, nheads, d_state, headdim), contiguous; cum: that direction's `chunk_cumsum`
    (batch, nheads, nchunks, chunk_size), whose value at the chunk's far edge is the chunk's total log decay. The
    forward pass carries the forward direction left to right and the backward direction right to left; the adjoint
    pass carries each the other way round. With seq_idx (int32 (batch, seqlen)), nothing is carried through a chunk
    that is not all of one sequence with the token before it (forward direction) or after it (backward direction).
    """
    batch, nchunks, nheads = states.shape[:3]
    chunk_size = cum.shape[-1]
    tot = cum[..., 0] if backward_direction else cum[..., -1]  # (batch, nheads, nchunks)
    dim = states[0, 0, 0].numel()
    enter = torch.empty_like(states)
    block = block_size(dim, cap=1024)
    grid = (batch, nheads, -(-dim // block))
    seqlen = 0 if seq_idx is None else seq_idx.shape[1]
    _state_passing_kernel[grid](
        states, tot, seq_idx, enter, nheads, nchunks, dim, seqlen, chunk_size, *tot.stride(), *seq_strides(seq_idx),
        REVERSE=reverse, BACKWARD_DIRECTION=backward_direction, HAS_SEQ_IDX=seq_idx is not None, BLOCK=block,
    )
    return enter
