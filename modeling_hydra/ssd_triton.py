"""Bidirectional SSD of the Hydra mixer in Triton: forward and backward kernels behind one autograd Function.

Same contract as `ssd_bidirectional_torch`. Both directions share the chunk grid and read the same, unflipped tensors;
the backward direction only mirrors indices (suffix sums, right-to-left state passing, C read at t + 1):

    forward:  cumsum (stage 1) -> chunk states (2) -> state passing (3) -> in-chunk C.B products of both
              directions, once per group (chunk_cb) -> chunk scan (4), per direction except the last two
    backward: recompute stages 2-3 and chunk_cb; adjoint chunk states of dy (2) passed the other way (3) give each
              chunk state's gradient; the scan's backward kernels (one launch per direction) give dx, ddiag, dB,
              dC and the pair sums from which stage 1's backward forms ddt and dA.

Sequence boundaries (`seq_idx`, packed rows): every kernel masks the pairs (t, s) of different sequences, a chunk's
state only holds tokens of the sequence of its far edge, only rows of that sequence read it, and state passing stops
at a boundary; so each sequence gets exactly its stand-alone result, wherever the boundaries fall.

Float32 accumulation throughout; float32, bfloat16 and float16 inputs (float64 inputs are computed in float32);
tl.dot precision: see ssd_triton_runtime.py; block sizes: ssd_triton_launch.py.
"""

import torch

from .execution_plan import TRITON_MAX_CHUNK, TRITON_MIN_CHUNK
from .ssd_triton_chunk_cb import chunk_cb
from .ssd_triton_chunk_cumsum import chunk_cumsum, chunk_cumsum_bwd
from .ssd_triton_chunk_scan import chunk_scan
from .ssd_triton_chunk_scan_bwd_dbc import chunk_scan_bwd_db, chunk_scan_bwd_dc
from .ssd_triton_chunk_scan_bwd_dx import chunk_scan_bwd_dx
from .ssd_triton_chunk_state import chunk_state
from .ssd_triton_launch import MAX_D_STATE, MAX_HEADDIM
from .ssd_triton_runtime import is_interpreted
from .ssd_triton_state_passing import state_passing
from .ssd_triton_tiles import chunk_base

INPUT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def triton_kernels_interpreted() -> bool:
    """True when the kernels were built by Triton's interpreter (TRITON_INTERPRET=1), which runs them on CPU tensors.
    All of them are built alike when triton is first imported; `chunk_base` stands for them."""
    return is_interpreted(chunk_base)


def entering_states(x, dt_f, dt_b, A, B_f, B_b, cum_f, cum_b, seq_idx):
    """States entering each chunk from the left (forward direction) and from the right (backward direction)."""
    local_f = chunk_state(B_f, x, dt_f, A, cum_f, reverse=False, seq_idx=seq_idx)
    local_b = chunk_state(B_b, x, dt_b, A, cum_b, reverse=True, seq_idx=seq_idx)
    enter_f = state_passing(local_f, cum_f, backward_direction=False, reverse=False, seq_idx=seq_idx)
    enter_b = state_passing(local_b, cum_b, backward_direction=True, reverse=True, seq_idx=seq_idx)
    return enter_f, enter_b


class BidirectionalSSDTriton(torch.autograd.Function):
    """autograd Function of the Triton bidirectional SSD; the backward pass runs Triton kernels only.

    Inputs are taken as they come under autocast (custom_fwd without casts): x, B and C may be bfloat16 while dt,
    A and diag stay float32; the backward pass runs in the same autocast state as the forward pass.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, seq_idx, chunk_size):
        cum_f = chunk_cumsum(dt_f, A, chunk_size, reverse=False)  # (batch, nheads, nchunks, chunk_size)
        cum_b = chunk_cumsum(dt_b, A, chunk_size, reverse=True)
        enter_f, enter_b = entering_states(x, dt_f, dt_b, A, B_f, B_b, cum_f, cum_b, seq_idx)
        cb = chunk_cb(B_f, C_f, B_b, C_b, chunk_size, seq_idx)  # (batch, nchunks, ngroups, chunk_size, chunk_size)
        y = chunk_scan(x, dt_f, dt_b, A, C_f, C_b, diag, cb, cum_f, cum_b, enter_f, enter_b, seq_idx)
        ctx.save_for_backward(x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, seq_idx, cum_f, cum_b)
        return y

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, dy):
        x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, seq_idx, cum_f, cum_b = ctx.saved_tensors
        enter_f, enter_b = entering_states(x, dt_f, dt_b, A, B_f, B_b, cum_f, cum_b, seq_idx)
        # Gradient of each chunk's own state: what later (forward) or earlier (backward) chunks' rows send back.
        dlocal_f = chunk_state(C_f, dy, dt_f, A, cum_f, reverse=False, adjoint=True, row_shift=-1, seq_idx=seq_idx)
        dlocal_b = chunk_state(C_b, dy, dt_b, A, cum_b, reverse=True, adjoint=True, row_shift=1, seq_idx=seq_idx)
        dstate_f = state_passing(dlocal_f, cum_f, backward_direction=False, reverse=True, seq_idx=seq_idx)
        dstate_b = state_passing(dlocal_b, cum_b, backward_direction=True, reverse=False, seq_idx=seq_idx)
        scan_args = (x, dy, dt_f, dt_b, A, B_f, C_f, B_b, C_b)
        cb = chunk_cb(B_f, C_f, B_b, C_b, cum_f.shape[3], seq_idx)
        dx, ddiag, ddt_exp_f, ddt_exp_b = chunk_scan_bwd_dx(x, dy, dt_f, dt_b, A, B_f, B_b, diag, cb, cum_f, cum_b,
                                                            dstate_f, dstate_b, seq_idx)
        dB_f, dB_b = chunk_scan_bwd_db(*scan_args, cum_f, cum_b, dstate_f, dstate_b, seq_idx)
        dC_f, dC_b, rowgrad_f, rowgrad_b = chunk_scan_bwd_dc(*scan_args, cb, cum_f, cum_b, enter_f, enter_b,
                                                             seq_idx)
        ddt_f, dA_f = chunk_cumsum_bwd(dt_f, A, rowgrad_f, ddt_exp_f, reverse=False)
        ddt_b, dA_b = chunk_cumsum_bwd(dt_b, A, rowgrad_b, ddt_exp_b, reverse=True)
        return (dx, ddt_f.to(dt_f.dtype), ddt_b.to(dt_b.dtype), (dA_f + dA_b).to(A.dtype),
                dB_f, dC_f, dB_b, dC_b, ddiag, None, None)


def check_ssd_inputs(x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, chunk_size, seq_idx, interpreted: bool):
    """ValueError naming the offending argument when the inputs do not fit the Triton kernels."""
    named = dict(x=x, dt_f=dt_f, dt_b=dt_b, A=A, B_f=B_f, C_f=C_f, B_b=B_b, C_b=C_b, diag=diag)
    for name, t in named.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"ssd_bidirectional_triton: {name} must be a tensor, got {type(t).__name__}")
        if t.dtype not in INPUT_DTYPES:
            raise ValueError(f"ssd_bidirectional_triton: {name} has dtype {t.dtype}; the kernels support "
                             f"{', '.join(str(d) for d in INPUT_DTYPES)}")
    if (not isinstance(chunk_size, int) or not TRITON_MIN_CHUNK <= chunk_size <= TRITON_MAX_CHUNK
            or chunk_size & (chunk_size - 1)):
        raise ValueError(f"ssd_bidirectional_triton: chunk_size must be a power of two in [{TRITON_MIN_CHUNK}, "
                         f"{TRITON_MAX_CHUNK}], got "
                         f"{chunk_size!r}")
    if x.dim() != 4:
        raise ValueError(f"ssd_bidirectional_triton: x must be (batch, seqlen, nheads, headdim), got shape "
                         f"{tuple(x.shape)}")
    batch, seqlen, nheads, headdim = x.shape
    if B_f.dim() != 4:
        raise ValueError(f"ssd_bidirectional_triton: B_f must be (batch, seqlen, ngroups, d_state), got shape "
                         f"{tuple(B_f.shape)}")
    ngroups, d_state = B_f.shape[2], B_f.shape[3]
    expected = dict(dt_f=(batch, seqlen, nheads), dt_b=(batch, seqlen, nheads), A=(nheads,),
                    B_f=(batch, seqlen, ngroups, d_state), C_f=(batch, seqlen, ngroups, d_state),
                    B_b=(batch, seqlen, ngroups, d_state), C_b=(batch, seqlen, ngroups, d_state),
                    diag=(batch, seqlen, nheads))
    for name, shape in expected.items():
        if tuple(named[name].shape) != shape:
            raise ValueError(f"ssd_bidirectional_triton: {name} has shape {tuple(named[name].shape)}, expected "
                             f"{shape} to match x {tuple(x.shape)} and B_f {tuple(B_f.shape)}")
    if ngroups == 0 or nheads % ngroups:
        raise ValueError(f"ssd_bidirectional_triton: nheads ({nheads}) must be a multiple of ngroups ({ngroups})")
    if headdim > MAX_HEADDIM:
        raise ValueError(f"ssd_bidirectional_triton: x has headdim {headdim}; the kernels support at most "
                         f"{MAX_HEADDIM}")
    if d_state > MAX_D_STATE:
        raise ValueError(f"ssd_bidirectional_triton: B_f has d_state {d_state}; the kernels support at most "
                         f"{MAX_D_STATE}")
    for name in ("B_f", "C_f", "B_b", "C_b"):
        if named[name].dtype != x.dtype:
            raise ValueError(f"ssd_bidirectional_triton: {name} has dtype {named[name].dtype}, x has {x.dtype}; "
                             "x, B and C must share one dtype (dt, A and diag may differ)")
    if seq_idx is not None:
        if not isinstance(seq_idx, torch.Tensor) or seq_idx.dtype not in (torch.int32, torch.int64):
            raise ValueError("ssd_bidirectional_triton: seq_idx must be an int32 or int64 tensor or None, got "
                             f"{getattr(seq_idx, 'dtype', type(seq_idx).__name__)}")
        if tuple(seq_idx.shape) != (batch, seqlen):
            raise ValueError(f"ssd_bidirectional_triton: seq_idx has shape {tuple(seq_idx.shape)}, expected "
                             f"{(batch, seqlen)} (batch, seqlen) to match x {tuple(x.shape)}")
        named["seq_idx"] = seq_idx
    for name, t in named.items():
        if t.device != x.device:
            raise ValueError(f"ssd_bidirectional_triton: {name} is on {t.device}, x on {x.device}")
    if x.device.type != "cuda" and not interpreted:
        raise ValueError(f"ssd_bidirectional_triton: x is on {x.device}; the Triton kernels run on CUDA tensors "
                         "(or on CPU in Triton's interpreter, TRITON_INTERPRET=1 set before triton is imported)")


def ssd_bidirectional_triton(x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, chunk_size, seq_idx=None):
    """Bidirectional SSD of the Hydra mixer on Triton kernels; arguments and result as `ssd_bidirectional_torch`.

    chunk_size: a power of two in [TRITON_MIN_CHUNK, TRITON_MAX_CHUNK] (execution_plan.py); seq_idx: None or int32/int64 (batch, seqlen) sequence ids,
    non-decreasing along each row. Raises ValueError for inputs the kernels cannot take.
    """
    check_ssd_inputs(x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, chunk_size, seq_idx, triton_kernels_interpreted())
    inputs = [t.float() if t.dtype == torch.float64 else t for t in (x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag)]
    if seq_idx is not None:
        seq_idx = seq_idx.to(torch.int32)
    return BidirectionalSSDTriton.apply(*inputs, seq_idx, chunk_size).to(x.dtype)
