"""Stage 3 of the Triton SSD: carry chunk states across chunks, left to right or right to left.

enter[c] is the state entering chunk c from the side the scan comes from: with `reverse=False`
enter[0] = 0 and enter[c] = states[c - 1] + exp(tot[c - 1]) * enter[c - 1]; with `reverse=True` the mirror image
(enter[T - 1] = 0, enter[c] = states[c + 1] + exp(tot[c + 1]) * enter[c + 1]). The forward pass runs it left to right
for the forward direction and right to left for the backward one; the backward pass runs it the other way round on
the adjoint states, which gives the gradient of each chunk's own state.
"""

from __future__ import annotations

import torch

from .ssd_triton_runtime import block_size, tl, triton_jit


@triton_jit
def _state_passing_kernel(
    states_ptr, tot_ptr, out_ptr,
    nheads, nchunks, dim,
    stride_tot_b, stride_tot_h, stride_tot_c,
    REVERSE: tl.constexpr, BLOCK: tl.constexpr,
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
        carry = state + decay * carry


def state_passing(states: torch.Tensor, tot: torch.Tensor, reverse: bool) -> torch.Tensor:
    """states: float32 (batch, nchunks, nheads, d_state, headdim), contiguous; tot: (batch, nheads, nchunks) total
    log-decay of each chunk. Returns the entering states, float32, shaped like `states`."""
    batch, nchunks, nheads = states.shape[:3]
    dim = states[0, 0, 0].numel()
    enter = torch.empty_like(states)
    block = block_size(dim, cap=1024)
    grid = (batch, nheads, -(-dim // block))
    _state_passing_kernel[grid](states, tot, enter, nheads, nchunks, dim, *tot.stride(), REVERSE=reverse, BLOCK=block)
    return enter


def state_passing_ref(states: torch.Tensor, tot: torch.Tensor, reverse: bool) -> torch.Tensor:
    """Torch reference of `state_passing`."""
    nchunks = states.shape[1]
    order = range(nchunks - 1, -1, -1) if reverse else range(nchunks)
    enter = torch.empty_like(states)
    carry = torch.zeros_like(states[:, 0])
    for c in order:
        enter[:, c] = carry
        carry = states[:, c] + torch.exp(tot[:, :, c])[..., None, None] * carry
    return enter
