"""Torch helpers for the chunked layout of the bidirectional SSD, shared by the `_ref` references of the Triton
stages: zero padding to the chunk grid, the shifted C of each direction, groups expanded to heads, and the in-chunk
pair decays."""

import torch
import torch.nn.functional as F


def to_chunks(t: torch.Tensor, nchunks: int, chunk_size: int, dtype=torch.float32) -> torch.Tensor:
    """(batch, seqlen, ...) -> (batch, nchunks, chunk_size, ...) in `dtype`, zero past `seqlen`."""
    pad = nchunks * chunk_size - t.shape[1]
    t = t.to(dtype)
    if pad:
        t = F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad))
    return t.reshape(t.shape[0], nchunks, chunk_size, *t.shape[2:])


def shift_rows(t: torch.Tensor, shift: int) -> torch.Tensor:
    """Row s of the result is row s + shift of `t` (zero outside the sequence): C_f is read at shift -1, C_b at +1."""
    if shift < 0:
        return F.pad(t[:, :shift], (0, 0) * (t.dim() - 2) + (-shift, 0))
    return F.pad(t[:, shift:], (0, 0) * (t.dim() - 2) + (0, shift))


def groups_to_heads(t: torch.Tensor, nheads: int) -> torch.Tensor:
    """(..., ngroups, d_state) -> (..., nheads, d_state): head h reads group h // (nheads // ngroups)."""
    return t.repeat_interleave(nheads // t.shape[-2], dim=-2)


def pair_decays(cum: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, reverse: bool) -> torch.Tensor:
    """In-chunk decay of each (output row t, input s) pair of one direction, float32 (batch, nchunks, nheads, Q, Q):
    exp(cum[t] - la[t] - cum[s]) on the direction's strict triangle (s < t forward, s > t backward), zero elsewhere.

    cum: (batch, nheads, nchunks, Q) from `chunk_cumsum`; dt: (batch, seqlen, nheads).
    """
    nchunks, chunk_size = cum.shape[2], cum.shape[3]
    cum = cum.permute(0, 2, 1, 3)  # (batch, nchunks, nheads, Q)
    la = to_chunks(dt, nchunks, chunk_size).permute(0, 1, 3, 2) * A.float()[:, None]
    seg = (cum - la)[..., :, None] - cum[..., None, :]
    idx = torch.arange(chunk_size, device=cum.device)
    triangle = idx[:, None] < idx[None, :] if reverse else idx[:, None] > idx[None, :]
    return torch.exp(seg.masked_fill(~triangle, float("-inf")))
