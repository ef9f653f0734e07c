"""Bidirectional SSD of the Hydra mixer in Triton: forward and backward kernels behind one autograd Function.

Same contract as `ssd_bidirectional_torch`. Both directions share the chunk grid and read the same, unflipped tensors;
the backward direction only mirrors indices (suffix sums, right-to-left state passing, C read at t + 1):

    forward:  cumsum (stage 1) -> chunk states (2) -> state passing (3) -> chunk scan (4), per direction except 4
    backward: recompute stages 2-3; adjoint chunk states of dy (2) passed the other way (3) give each chunk state's
              gradient; the scan's backward kernels give dx, ddiag, dB, dC and the pair sums from which stage 1's
              backward forms ddt and dA.

Float32 accumulation throughout; float32, bfloat16 and float16 inputs (float64 inputs are computed in float32).
"""

import torch

from .ssd_triton_chunk_cumsum import chunk_cumsum, chunk_cumsum_bwd
from .ssd_triton_chunk_scan import _chunk_scan_kernel, chunk_scan
from .ssd_triton_chunk_scan_bwd_dbc import chunk_scan_bwd_db, chunk_scan_bwd_dc
from .ssd_triton_chunk_scan_bwd_dx import chunk_scan_bwd_dx
from .ssd_triton_chunk_state import chunk_state
from .ssd_triton_runtime import is_interpreted
from .ssd_triton_state_passing import state_passing


def triton_kernels_interpreted() -> bool:
    """True when the kernels were built by Triton's interpreter (TRITON_INTERPRET=1), which runs them on CPU tensors."""
    return is_interpreted(_chunk_scan_kernel)


def _entering_states(x, dt_f, dt_b, A, B_f, B_b, cum_f, cum_b):
    """States entering each chunk from the left (forward direction) and from the right (backward direction)."""
    enter_f = state_passing(chunk_state(B_f, x, dt_f, A, cum_f, reverse=False), cum_f[..., -1], reverse=False)
    enter_b = state_passing(chunk_state(B_b, x, dt_b, A, cum_b, reverse=True), cum_b[..., 0], reverse=True)
    return enter_f, enter_b


class BidirectionalSSDTriton(torch.autograd.Function):
    """autograd Function of the Triton bidirectional SSD; the backward pass runs Triton kernels only."""

    @staticmethod
    def forward(ctx, x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, chunk_size):
        cum_f = chunk_cumsum(dt_f, A, chunk_size, reverse=False)  # (batch, nheads, nchunks, chunk_size)
        cum_b = chunk_cumsum(dt_b, A, chunk_size, reverse=True)
        enter_f, enter_b = _entering_states(x, dt_f, dt_b, A, B_f, B_b, cum_f, cum_b)
        y = chunk_scan(x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, cum_f, cum_b, enter_f, enter_b)
        ctx.save_for_backward(x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, cum_f, cum_b)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, cum_f, cum_b = ctx.saved_tensors
        enter_f, enter_b = _entering_states(x, dt_f, dt_b, A, B_f, B_b, cum_f, cum_b)
        # Gradient of each chunk's own state: what later (forward) or earlier (backward) chunks' rows send back.
        dlocal_f = chunk_state(C_f, dy, dt_f, A, cum_f, reverse=False, adjoint=True, row_shift=-1)
        dlocal_b = chunk_state(C_b, dy, dt_b, A, cum_b, reverse=True, adjoint=True, row_shift=1)
        dstate_f = state_passing(dlocal_f, cum_f[..., -1], reverse=True)
        dstate_b = state_passing(dlocal_b, cum_b[..., 0], reverse=False)
        scan_args = (x, dy, dt_f, dt_b, A, B_f, C_f, B_b, C_b)
        dx, ddiag, ddt_exp_f, ddt_exp_b = chunk_scan_bwd_dx(*scan_args, diag, cum_f, cum_b, dstate_f, dstate_b)
        dB_f, dB_b = chunk_scan_bwd_db(*scan_args, cum_f, cum_b, dstate_f, dstate_b)
        dC_f, dC_b, rowgrad_f, rowgrad_b = chunk_scan_bwd_dc(*scan_args, cum_f, cum_b, enter_f, enter_b)
        ddt_f, dA_f = chunk_cumsum_bwd(dt_f, A, rowgrad_f, ddt_exp_f, reverse=False)
        ddt_b, dA_b = chunk_cumsum_bwd(dt_b, A, rowgrad_b, ddt_exp_b, reverse=True)
        return (dx, ddt_f.to(dt_f.dtype), ddt_b.to(dt_b.dtype), (dA_f + dA_b).to(A.dtype),
                dB_f, dC_f, dB_b, dC_b, ddiag, None)


def ssd_bidirectional_triton(x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, chunk_size):
    """Bidirectional SSD of the Hydra mixer on Triton kernels; arguments and result as `ssd_bidirectional_torch`."""
    seqlen = x.shape[1]
    chunk_size = min(chunk_size, seqlen)
    if x.dtype == torch.float64:
        args = [t.float() for t in (x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag)]
        return BidirectionalSSDTriton.apply(*args, chunk_size).double()
    return BidirectionalSSDTriton.apply(x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, chunk_size)
