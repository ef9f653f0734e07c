"""The one place that chooses the kernel behind the Hydra mixer (`config.ssd_backend`).

Every backend has the signature of `ssd_bidirectional_torch`:
    (x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, chunk_size) -> y
with x: (batch, seqlen, nheads, headdim), dt_*/diag: (batch, seqlen, nheads), A: (nheads,),
B_*/C_*: (batch, seqlen, ngroups, d_state), y like x.
"""

import torch

from configuration_hydra.configuration_hydra import SSD_BACKENDS

from .ssd_torch import ssd_bidirectional_torch


def resolve_ssd_backend(name: str, device: torch.device):
    """Return the SSD function for backend `name` on `device`; raise ValueError if it cannot run there."""
    if name == "torch":
        return ssd_bidirectional_torch
    if name == "auto":
        return ssd_bidirectional_torch
    if name in ("triton", "mamba_ssm"):
        raise ValueError(
            f"ssd_backend={name!r} is not available in this version; use ssd_backend='torch' or 'auto'."
        )
    raise ValueError(f"Unknown ssd_backend {name!r}; expected one of {SSD_BACKENDS}")
