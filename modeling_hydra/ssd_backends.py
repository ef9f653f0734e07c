"""The registry of SSD kernels behind the Hydra mixer, and the one place that picks one (`config.ssd_backend`).

Every backend computes the bidirectional SSD with the signature of `ssd_bidirectional_torch`:
    (x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, chunk_size, seq_idx=None) -> y
with x: (batch, seqlen, nheads, headdim), dt_*/diag: (batch, seqlen, nheads), A: (nheads,),
B_*/C_*: (batch, seqlen, ngroups, d_state), seq_idx: None or (batch, seqlen) int, non-decreasing along each row
(tokens with equal ids form one sequence, which gets exactly its stand-alone result), y like x.

`SSD_BACKENDS` maps each name to its description and loader; config validation, dispatch, the benchmarks and the
tests all read it. "auto" is the Triton kernels on CUDA tensors when triton is installed and the torch path
otherwise (logged once when CUDA tensors fall back to torch). A backend that cannot run raises a ValueError that says
what to install or use instead. Resolution happens once per (name, device type) and is cached. The Triton and
mamba_ssm modules are imported on first use only (on CPU, Triton's interpreter is chosen by TRITON_INTERPRET=1 when
the kernels are first imported).
"""

import functools
import importlib.util
from dataclasses import dataclass
from typing import Callable

import torch
from transformers.utils import logging

from .ssd_torch import ssd_bidirectional_torch
from .tracing import is_exporting

logger = logging.get_logger(__name__)


@dataclass(frozen=True)
class SSDBackend:
    """One SSD kernel: `load(device)` returns its function or raises ValueError when it cannot run on `device`."""

    name: str
    description: str
    load: Callable[[torch.device], Callable]
    honours_boundaries: bool  # whether it implements `seq_idx` (padding-free and packed rows)


def triton_is_installed() -> bool:
    """Whether the optional `triton` package is installed."""
    return importlib.util.find_spec("triton") is not None


def _load_torch(device: torch.device):
    return ssd_bidirectional_torch


def _load_triton(device: torch.device):
    from .ssd_triton_runtime import TRITON_INSTALL_HINT

    if not triton_is_installed():
        raise ValueError(f"ssd_backend='triton' needs the triton package; {TRITON_INSTALL_HINT}, or use 'torch'.")
    from .ssd_triton import ssd_bidirectional_triton, triton_kernels_interpreted

    if device.type != "cuda" and not triton_kernels_interpreted():
        raise ValueError(
            f"ssd_backend='triton' runs on CUDA tensors, got tensors on {device}; use ssd_backend='torch' (or "
            "'auto'), or set TRITON_INTERPRET=1 before the kernels are imported to run them in Triton's CPU "
            "interpreter (slow, for tests)."
        )
    return ssd_bidirectional_triton


def _load_mamba_ssm(device: torch.device):
    from .ssd_mamba_ssm import load_mamba_chunk_scan_combined, ssd_bidirectional_mamba_ssm

    load_mamba_chunk_scan_combined()  # ValueError with an install hint when mamba_ssm cannot be imported
    if device.type != "cuda":
        raise ValueError(f"ssd_backend='mamba_ssm' runs on CUDA tensors, got tensors on {device}; use 'torch'.")
    return ssd_bidirectional_mamba_ssm


SSD_BACKENDS = {
    backend.name: backend
    for backend in (
        SSDBackend("torch", "chunked pure-PyTorch SSD; any device, float64 included; exportable", _load_torch, True),
        SSDBackend("triton", "fused Triton kernels with their own backward (CUDA; CPU interpreter for tests)",
                   _load_triton, True),
        SSDBackend("mamba_ssm", "the official Hydra's flip-and-batch use of mamba_ssm's causal kernel (CUDA "
                   "baseline); cannot honour sequence boundaries", _load_mamba_ssm, False),
    )
}
AUTO = "auto"
BACKEND_NAMES = (AUTO, *SSD_BACKENDS)


def validate_backend_name(name) -> None:
    """Raise ValueError unless `name` is "auto" or a registered backend."""
    if name not in BACKEND_NAMES:
        raise ValueError(f"HydraConfig.ssd_backend must be one of {BACKEND_NAMES}, got {name!r}")


@functools.lru_cache(maxsize=None)
def _resolve(name: str, device_type: str) -> tuple[SSDBackend, Callable]:
    device = torch.device(device_type)
    if name == AUTO:
        if device_type != "cuda":
            name = "torch"
        elif triton_is_installed():
            name = "triton"
        else:
            logger.warning("ssd_backend='auto' on CUDA: triton is not installed, so the slower torch path runs. "
                           "Install it with `pip install triton` for the fused kernels.")
            name = "torch"
    backend = SSD_BACKENDS[name]
    return backend, backend.load(device)  # load raises ValueError when it cannot run here


def resolve_ssd_backend(name: str, device: torch.device) -> tuple[SSDBackend, Callable]:
    """(backend, SSD function) that `name` ("auto" or a registered name) selects on `device`, cached per
    (name, device type); ValueError if it cannot run there.

    Under torch.export (and so torch.onnx.export) and torch.jit tracing the graph may hold torch operators only:
    "auto" selects the torch path there, and the kernel backends raise a ValueError.
    """
    validate_backend_name(name)
    if is_exporting():
        if name not in (AUTO, "torch"):
            raise ValueError(
                f"ssd_backend={name!r} cannot be exported or traced: its kernels are not torch operators that "
                "torch.export, torch.onnx.export or torch.jit.trace can capture. Use ssd_backend='torch' for export "
                "(set model.config.ssd_backend = 'torch', or load with from_pretrained(..., ssd_backend='torch'))."
            )
        name = "torch"
    return _resolve(name, torch.device(device).type)


def clear_backend_cache() -> None:
    """Forget resolved backends (after installing a package or changing TRITON_INTERPRET in a running process)."""
    _resolve.cache_clear()
