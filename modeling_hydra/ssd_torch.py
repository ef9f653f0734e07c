"""Chunked bidirectional SSD in pure PyTorch (any device): the reference kernel of the Hydra mixer.

For one head, with decays a_k = exp(dt[k] * A), the mixer computes y = M x with the quasiseparable matrix
    M[t, s] = (C_f[t-1] . B_f[s]) prod_{k=s+1..t-1} a^f_k dt_f[s]    for s < t
    M[t, s] = (C_b[t+1] . B_b[s]) prod_{k=t+1..s-1} a^b_k dt_b[s]    for s > t
    M[t, t] = diag[t]
Both directions are evaluated from the same chunks of the unflipped inputs: inside a chunk of length Q the
lower (forward) and upper (backward) triangles are summed into one Q x Q mixing matrix; across chunks a
forward and a backward state (nheads, d_state, headdim) are carried. Time O(L * Q), memory O(L) in the
sequence length; no L x L matrix is ever formed.
"""

import torch
import torch.nn.functional as F


def _chunk(t: torch.Tensor, nchunks: int, chunk_size: int) -> torch.Tensor:
    """(batch, seqlen, ...) -> (batch, nchunks, chunk_size, ...), zero-padding the tail."""
    pad = nchunks * chunk_size - t.shape[1]
    if pad:
        t = F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad))
    return t.reshape(t.shape[0], nchunks, chunk_size, *t.shape[2:])


def ssd_bidirectional_torch(x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, chunk_size):
    """Bidirectional SSD of the Hydra mixer (spec §1 steps 4-6, shifts included).

    Args:
        x: (batch, seqlen, nheads, headdim) shared input of both directions.
        dt_f, dt_b: (batch, seqlen, nheads) step sizes after softplus (zero at padding).
        A: (nheads,) negative decay rates.
        B_f, C_f, B_b, C_b: (batch, seqlen, ngroups, d_state).
        diag: (batch, seqlen, nheads) the diagonal M[t, t].
        chunk_size: chunk length Q (any positive int; the result does not depend on it).
    Returns:
        y: (batch, seqlen, nheads, headdim) in the dtype of x; accumulation in float32 (float64 for float64).
    """
    batch, seqlen, nheads, headdim = x.shape
    ngroups, d_state = B_f.shape[2], B_f.shape[3]
    hpg = nheads // ngroups
    out_dtype = x.dtype
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    Q = min(chunk_size, seqlen)
    T = -(-seqlen // Q)

    # Shifted C: row t of the forward scan reads C_f[t-1], of the backward scan C_b[t+1].
    C_f = F.pad(C_f[:, :-1], (0, 0, 0, 0, 1, 0))
    C_b = F.pad(C_b[:, 1:], (0, 0, 0, 0, 0, 1))

    x, dt_f, dt_b, diag = (_chunk(t.to(dtype), T, Q) for t in (x, dt_f, dt_b, diag))
    B_f, C_f, B_b, C_b = (_chunk(t.to(dtype), T, Q) for t in (B_f, C_f, B_b, C_b))
    # x: (b, T, Q, H, P); dt_*, diag: (b, T, Q, H); B_*, C_*: (b, T, Q, G, N)
    A = A.to(dtype)

    la_f = dt_f * A  # log decays (b, T, Q, H)
    la_b = dt_b * A
    cum_f = torch.cumsum(la_f, dim=2)  # inclusive prefix sums inside each chunk
    cum_b = torch.cumsum(la_b, dim=2)
    cumx_f = cum_f - la_f  # exclusive prefix sums
    cumx_b = cum_b - la_b
    tot_f = cum_f[:, :, -1]  # (b, T, H)
    tot_b = cum_b[:, :, -1]

    # --- intra-chunk: one Q x Q mixing matrix per (chunk, head) holding both triangles and the diagonal ---
    idx = torch.arange(Q, device=x.device)
    lower = idx[:, None] > idx[None, :]  # s < t
    upper = idx[:, None] < idx[None, :]  # s > t
    hq = lambda t: t.permute(0, 1, 3, 2)  # (b, T, Q, H) -> (b, T, H, Q)
    # forward: exp(cumx_f[t] - cum_f[s]) dt_f[s] for s < t
    seg_f = hq(cumx_f)[..., :, None] - hq(cum_f)[..., None, :]  # (b, T, H, Q, Q)
    L_f = torch.exp(seg_f.masked_fill(~lower, float("-inf"))) * hq(dt_f)[..., None, :]
    # backward: exp(cumx_b[s] - cum_b[t]) dt_b[s] for s > t
    seg_b = hq(cumx_b)[..., None, :] - hq(cum_b)[..., :, None]
    U_b = torch.exp(seg_b.masked_fill(~upper, float("-inf"))) * hq(dt_b)[..., None, :]

    gq = lambda t: t.permute(0, 1, 3, 2, 4)  # (b, T, Q, G, N) -> (b, T, G, Q, N)
    CB_f = gq(C_f) @ gq(B_f).transpose(-1, -2)  # (b, T, G, Q, Q)
    CB_b = gq(C_b) @ gq(B_b).transpose(-1, -2)
    shape6 = (batch, T, ngroups, hpg, Q, Q)
    M = CB_f[:, :, :, None] * L_f.view(shape6) + CB_b[:, :, :, None] * U_b.view(shape6)
    M = M.view(batch, T, nheads, Q, Q)
    M = M + torch.diag_embed(hq(diag))
    y = M @ x.permute(0, 1, 3, 2, 4)  # (b, T, H, Q, P)
    y = y.permute(0, 1, 3, 2, 4)  # (b, T, Q, H, P)

    # --- inter-chunk: chunk-local states, carried across chunks in both directions ---
    w_f = torch.exp(tot_f[:, :, None] - cum_f) * dt_f  # weight of input s in the state at the chunk end
    w_b = torch.exp(cumx_b) * dt_b  # weight of input s in the state at the chunk start
    xg = lambda w: (x * w[..., None]).reshape(batch, T, Q, ngroups, hpg * headdim).permute(0, 1, 3, 2, 4)
    local_f = gq(B_f).transpose(-1, -2) @ xg(w_f)  # (b, T, G, N, hpg * P)
    local_b = gq(B_b).transpose(-1, -2) @ xg(w_b)

    decay_f = torch.exp(tot_f).view(batch, T, ngroups, 1, hpg, 1).expand(-1, -1, -1, d_state, -1, headdim)
    decay_b = torch.exp(tot_b).view(batch, T, ngroups, 1, hpg, 1).expand(-1, -1, -1, d_state, -1, headdim)
    decay_f = decay_f.reshape(local_f.shape)
    decay_b = decay_b.reshape(local_b.shape)
    zero = torch.zeros_like(local_f[:, 0])
    enter_f = [zero]  # state entering chunk c from the left
    for c in range(T - 1):
        enter_f.append(local_f[:, c] + decay_f[:, c] * enter_f[-1])
    enter_b = [zero]  # state entering chunk c from the right
    for c in range(T - 1, 0, -1):
        enter_b.append(local_b[:, c] + decay_b[:, c] * enter_b[-1])
    enter_f = torch.stack(enter_f, dim=1)  # (b, T, G, N, hpg * P)
    enter_b = torch.stack(enter_b[::-1], dim=1)

    o_f = torch.exp(cumx_f)[..., None]  # (b, T, Q, H, 1): decay from the chunk start to row t (shifted)
    o_b = torch.exp(tot_b[:, :, None] - cum_b)[..., None]
    unflat = lambda t: t.reshape(batch, T, ngroups, Q, hpg, headdim).permute(0, 1, 3, 2, 4, 5).reshape(
        batch, T, Q, nheads, headdim)
    y = y + unflat(gq(C_f) @ enter_f) * o_f + unflat(gq(C_b) @ enter_b) * o_b

    return y.reshape(batch, T * Q, nheads, headdim)[:, :seqlen].to(out_dtype)
