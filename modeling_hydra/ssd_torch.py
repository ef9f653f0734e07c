"""Chunked bidirectional SSD in pure PyTorch (any device): the reference kernel of the Hydra mixer.

For one head, with decays a_k = exp(dt[k] * A), the mixer computes y = M x with the quasiseparable matrix
    M[t, s] = (C_f[t-1] . B_f[s]) prod_{k=s+1..t-1} a^f_k dt_f[s]    for s < t
    M[t, s] = (C_b[t+1] . B_b[s]) prod_{k=t+1..s-1} a^b_k dt_b[s]    for s > t
    M[t, t] = diag[t]
Both directions are evaluated from the same chunks of the unflipped inputs. Inside a chunk of length Q the lower
(forward) and upper (backward) triangles share one Q x Q mixing matrix per head, built with a single exp; across
chunks a forward and a backward state (d_state x headdim per head) are carried. Time O(L * Q), memory O(L) in the
sequence length; no L x L matrix is formed.
"""

import torch

from .ssd_chunk_layout import shift_rows, to_chunks

# Chunk length used on CPU: the intra-chunk work grows with Q and the state work shrinks; 64 is fastest on CPU for
# headdim 64 / d_state 64. The result does not depend on the chunk length.
CPU_CHUNK_SIZE = 64
# Floor of dt inside log(dt): dt = 0 (padding) then contributes exp(-87) * x = 0 since x = 0 there as well.
_LOG_DT_FLOOR = 1e-38


def _carry_states(local: torch.Tensor, decay: torch.Tensor, reverse: bool) -> torch.Tensor:
    """State entering each chunk: enter[c] = local[c-1] + decay[c-1] * enter[c-1] (mirrored when `reverse`).

    local: (batch, nchunks, ngroups, d_state, hpg * headdim); decay: (batch, nchunks, ngroups, 1, hpg * headdim).
    """
    nchunks = local.shape[1]
    order = range(nchunks - 1, 0, -1) if reverse else range(nchunks - 1)
    local, decay = local.unbind(1), decay.unbind(1)  # unbind, not indexing: one backward op instead of one each
    states = [torch.zeros_like(local[0])]
    for c in order:
        states.append(torch.addcmul(local[c], decay[c], states[-1]))
    if reverse:
        states.reverse()
    return torch.stack(states, dim=1)


def _ssd_chunked(x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, chunk_size):
    batch, seqlen, nheads, headdim = x.shape
    ngroups = B_f.shape[2]
    hpg = nheads // ngroups
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    Q = min(chunk_size, seqlen)
    T = -(-seqlen // Q)

    # Shifted C: row t of the forward scan reads C_f[t-1], of the backward scan C_b[t+1].
    C_f, C_b = shift_rows(C_f, -1), shift_rows(C_b, 1)
    # Contiguous layouts first: elementwise ops on strided views of the in_proj output are several times slower.
    x = to_chunks(x, T, Q, dtype).contiguous()  # (b, T, Q, H, P), token-major
    dt_f, dt_b, diag = (to_chunks(t, T, Q, dtype).contiguous() for t in (dt_f, dt_b, diag))  # (b, T, Q, H)
    C_f, C_b = (to_chunks(t, T, Q, dtype).transpose(2, 3).contiguous() for t in (C_f, C_b))  # (b, T, G, Q, N)
    Bt_f, Bt_b = (to_chunks(t, T, Q, dtype).permute(0, 1, 3, 4, 2).contiguous() for t in (B_f, B_b))
    # Bt_*: (b, T, G, N, Q), B transposed for the matmuls
    A = A.to(dtype)

    la_f, la_b = dt_f * A, dt_b * A  # log decays (b, T, Q, H)
    cum_f, cum_b = la_f.cumsum(2), la_b.cumsum(2)  # inclusive prefix sums inside each chunk
    cumx_f, cumx_b = cum_f - la_f, cum_b - la_b  # exclusive prefix sums
    tot_f, tot_b = cum_f[:, :, -1:], cum_b[:, :, -1:]  # (b, T, 1, H)

    # --- intra-chunk: lower triangle exp(cumx_f[t] - cum_f[s]) dt_f[s], upper exp(cumx_b[s] - cum_b[t]) dt_b[s],
    # one exponent per (head, t, s) so that both directions cost a single exp; the diagonal holds diag ---
    hq = lambda t: t.transpose(2, 3).contiguous()  # (b, T, Q, H) -> (b, T, H, Q)
    idx = torch.arange(Q, device=x.device)
    lower = idx[:, None] > idx[None, :]  # (Q, Q): s < t
    col_f = hq(torch.log(dt_f.clamp(min=_LOG_DT_FLOOR)) - cum_f)
    col_b = hq(torch.log(dt_b.clamp(min=_LOG_DT_FLOOR)) + cumx_b)
    row = torch.where(lower, hq(cumx_f)[..., :, None], hq(-cum_b)[..., :, None])  # (b, T, H, Q, Q)
    seg = row + torch.where(lower, col_f[..., None, :], col_b[..., None, :])
    seg.diagonal(dim1=-2, dim2=-1).fill_(float("-inf"))
    CB = torch.where(lower, C_f @ Bt_f, C_b @ Bt_b)  # (b, T, G, Q, Q)
    M = (torch.exp(seg).view(batch, T, ngroups, hpg, Q, Q) * CB[:, :, :, None]).view(batch, T, nheads, Q, Q)
    M.diagonal(dim1=-2, dim2=-1).copy_(hq(diag))
    y_intra = M @ x.transpose(2, 3)  # (b, T, H, Q, P)

    # --- inter-chunk: chunk-local states, carried across chunks in both directions ---
    w_f = torch.exp(tot_f - cum_f) * dt_f  # weight of input s in the state at the chunk end (b, T, Q, H)
    w_b = torch.exp(cumx_b) * dt_b  # weight of input s in the state at the chunk start
    by_group = lambda t: t.view(batch, T, Q, ngroups, hpg * headdim).transpose(2, 3)  # (b, T, G, Q, hpg * P)
    local_f = Bt_f @ by_group(x * w_f[..., None])  # (b, T, G, N, hpg * P)
    local_b = Bt_b @ by_group(x * w_b[..., None])
    per_channel = lambda t: t.view(batch, T, ngroups, hpg, 1).expand(-1, -1, -1, -1, headdim).reshape(
        batch, T, ngroups, 1, hpg * headdim)
    enter_f = _carry_states(local_f, per_channel(torch.exp(tot_f)), reverse=False)
    enter_b = _carry_states(local_b, per_channel(torch.exp(tot_b)), reverse=True)

    tokens = lambda t: t.transpose(2, 3).reshape(batch, T, Q, nheads, headdim)  # inverse of by_group
    o_f = torch.exp(cumx_f)[..., None]  # (b, T, Q, H, 1): decay from the chunk start to row t (shifted)
    o_b = torch.exp(tot_b - cum_b)[..., None]
    y = tokens(C_f @ enter_f) * o_f
    y = torch.addcmul(y, tokens(C_b @ enter_b), o_b) + y_intra.transpose(2, 3)
    return y.reshape(batch, T * Q, nheads, headdim)[:, :seqlen]


def ssd_bidirectional_torch(x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, chunk_size):
    """Bidirectional SSD of the Hydra mixer (spec §1 steps 4-6, shifts included).

    Args:
        x: (batch, seqlen, nheads, headdim) shared input of both directions.
        dt_f, dt_b: (batch, seqlen, nheads) step sizes after softplus (zero at padding).
        A: (nheads,) negative decay rates.
        B_f, C_f, B_b, C_b: (batch, seqlen, ngroups, d_state).
        diag: (batch, seqlen, nheads) the diagonal M[t, t].
        chunk_size: chunk length Q (any positive int; the result does not depend on it). On CPU at most
            `CPU_CHUNK_SIZE` is used.
    Returns:
        y: (batch, seqlen, nheads, headdim) in the dtype of x; accumulation in float32 (float64 for float64).
    """
    if x.device.type == "cpu":
        chunk_size = min(chunk_size, CPU_CHUNK_SIZE)
    return _ssd_chunked(x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, chunk_size).to(x.dtype)
