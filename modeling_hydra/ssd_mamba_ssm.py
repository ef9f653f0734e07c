"""The official Hydra's way of running the bidirectional SSD: mamba_ssm's causal kernel on [x ; flip(x)].

The batch of 2 * batch sequences holds the forward inputs and the flipped backward inputs; the causal outputs are
shifted by one step (roll), the second half is flipped back and added to the first, plus the diagonal term. It needs
mamba_ssm, which only imports on machines with CUDA (its package imports a compiled extension), so it is imported
when first used. A baseline for the benchmarks and a third oracle for the kernels on GPUs.
"""

import torch

MAMBA_SSM_INSTALL_HINT = (
    "install it on a CUDA machine with `pip install mamba-ssm` (or `pip install 'hydra-transformers[mamba_ssm]'`)"
)


def load_mamba_chunk_scan_combined():
    """mamba_ssm's `mamba_chunk_scan_combined`; ValueError naming the install command when it cannot be imported."""
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception as error:  # ImportError, or the OSError/RuntimeError of a CUDA extension that cannot load
        raise ValueError(
            f"ssd_backend='mamba_ssm' needs the mamba_ssm package, which could not be imported ({error!r}); "
            f"{MAMBA_SSM_INSTALL_HINT}, or use ssd_backend='triton' or 'torch'."
        ) from error
    return mamba_chunk_scan_combined


def ssd_bidirectional_mamba_ssm(x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, chunk_size, seq_idx=None):
    """Bidirectional SSD through mamba_ssm as in the official Hydra code; arguments as `ssd_bidirectional_torch`.

    The flip and the shift cross sequence boundaries, so packed rows (`seq_idx`) are refused."""
    if seq_idx is not None:
        raise ValueError("ssd_backend='mamba_ssm' cannot keep packed sequences apart; use 'torch' or 'triton'.")
    mamba_chunk_scan_combined = load_mamba_chunk_scan_combined()
    batch = x.shape[0]
    flip = lambda t: torch.flip(t, (1,))
    y = mamba_chunk_scan_combined(
        torch.cat([x, flip(x)]),  # (2 * batch, seqlen, nheads, headdim)
        torch.cat([dt_f, flip(dt_b)]),  # already softplus-ed and masked
        A.float(),
        torch.cat([B_f, flip(B_b)]),
        torch.cat([C_f, flip(C_b)]),
        chunk_size=chunk_size,
        D=None,
        z=None,
    )
    y = torch.roll(y, shifts=1, dims=1)  # row t of each causal scan reads the state after row t - 1
    y[:, 0] = 0.0
    return y[:batch] + flip(y[batch:]) + x * diag.unsqueeze(-1).to(x.dtype)
