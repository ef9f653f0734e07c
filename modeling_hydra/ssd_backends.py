"""The one place that chooses the kernel behind the Hydra mixer (`config.ssd_backend`).

Every backend has the signature of `ssd_bidirectional_torch`:
    (x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, chunk_size) -> y
with x: (batch, seqlen, nheads, headdim), dt_*/diag: (batch, seqlen, nheads), A: (nheads,),
B_*/C_*: (batch, seqlen, ngroups, d_state), y like x.

"auto" runs the Triton kernels on CUDA tensors when triton is installed and the torch path otherwise; "torch",
"triton" and "mamba_ssm" force one backend and raise ValueError where it cannot run. The Triton and mamba_ssm modules
are imported on first use only (on CPU, Triton's interpreter is chosen by TRITON_INTERPRET=1 when the kernels are
first imported).
"""

import importlib.util

import torch

from configuration_hydra.configuration_hydra import SSD_BACKENDS

from .ssd_torch import ssd_bidirectional_torch


def triton_is_installed() -> bool:
    """Whether the optional `triton` package is installed."""
    return importlib.util.find_spec("triton") is not None


def _triton_backend(device: torch.device):
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


def _mamba_ssm_backend(device: torch.device):
    from .ssd_mamba_ssm import load_mamba_chunk_scan_combined, ssd_bidirectional_mamba_ssm

    load_mamba_chunk_scan_combined()  # ValueError with an install hint when mamba_ssm cannot be imported
    if device.type != "cuda":
        raise ValueError(f"ssd_backend='mamba_ssm' runs on CUDA tensors, got tensors on {device}; use 'torch'.")
    return ssd_bidirectional_mamba_ssm


def resolve_ssd_backend(name: str, device: torch.device):
    """Return the SSD function for backend `name` on `device`; raise ValueError if it cannot run there."""
    device = torch.device(device)
    if name == "torch":
        return ssd_bidirectional_torch
    if name == "auto":
        if device.type == "cuda" and triton_is_installed():
            return _triton_backend(device)
        return ssd_bidirectional_torch
    if name == "triton":
        return _triton_backend(device)
    if name == "mamba_ssm":
        return _mamba_ssm_backend(device)
    raise ValueError(f"Unknown ssd_backend {name!r}; expected one of {SSD_BACKENDS}")
