"""Chunked bidirectional SSD in pure PyTorch (any device, exportable): the reference kernel of the Hydra mixer.

For one head, with decays a_k = exp(dt[k] * A), the mixer computes y = M x with the quasiseparable matrix
    M[t, s] = (C_f[t-1] . B_f[s]) prod_{k=s+1..t-1} a^f_k dt_f[s]    for s < t
    M[t, s] = (C_b[t+1] . B_b[s]) prod_{k=t+1..s-1} a^b_k dt_b[s]    for s > t
    M[t, t] = diag[t]
and, with `seq_idx`, M is block diagonal: one block per sequence, each the matrix of that sequence alone (the
shifted C is never read across a boundary and no term or state crosses one).

Both directions are evaluated from the same chunks of the unflipped inputs. Inside a chunk of length Q the lower
(forward) and upper (backward) triangles share one Q x Q matrix per head, built with a single exp. Across chunks,
each chunk's own forward state (at its end) and backward state (at its start) are combined by one
(chunks x chunks) decay matrix per head and direction, so there is no Python loop over chunks and no branch on the
sequence length (torch.export traces it with a dynamic length). Time O(L * Q + (L / Q)^2) per head, memory O(L).

Accuracy: every decay is the exp of a difference of in-chunk (or chunk-level) prefix sums, and the exclusive sums
are exact shifted copies of the inclusive ones, so the factor between neighbours is exp(0) exactly and the rounding
of large prefix sums only touches terms that are already damped by exp(-|sum|) (see the README's accuracy curve).
"""

import torch
import torch.nn.functional as F

from .mixer_policy import is_tracing, ssd_compute_dtype

# Floor of dt inside log(dt): dt = 0 (padding) then contributes exp(_EXP_FLOOR) * x = 0 since x = 0 there as well.
_LOG_DT_FLOOR = 1e-38
_EXP_FLOOR, _EXP_CAP = -80.0, 80.0


def _exp(exponent: torch.Tensor, upper: bool = False) -> torch.Tensor:
    """exp of decay exponents, floored at exp(_EXP_FLOOR) ~ 2e-35 (and, with `upper`, capped at exp(_EXP_CAP)).

    The floor keeps results out of the denormal range: on CPU, an exp that returns denormals and every product
    with them run about 20x slower. A factor below 2e-35 changes no result at float32 or float64 precision. The
    cap keeps entries that a 0/1 mask removes afterwards finite, so that 0 * inf never makes a NaN.
    """
    return torch.exp(exponent.clamp(min=_EXP_FLOOR, max=_EXP_CAP if upper else None))


def _exclusive(cum: torch.Tensor) -> torch.Tensor:
    """Exclusive prefix sums along the last dim as an exact shifted copy of the inclusive ones `cum`."""
    return F.pad(cum[..., :-1], (1, 0))


def _decay_matrix(row: torch.Tensor, col: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """exp(row[..., i] - col[..., j]) times the 0/1 mask keep[..., i, j]: (..., n) x (..., n) -> (..., n, n)."""
    return _exp(row[..., :, None] - col[..., None, :], upper=True) * keep


def ssd_bidirectional_torch(x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, chunk_size, seq_idx=None):
    """Bidirectional SSD of the Hydra mixer (the forward and backward scans, their shifts and the diagonal).

    Args:
        x: (batch, seqlen, nheads, headdim) shared input of both directions.
        dt_f, dt_b: (batch, seqlen, nheads) step sizes after softplus (zero at padding).
        A: (nheads,) negative decay rates.
        B_f, C_f, B_b, C_b: (batch, seqlen, ngroups, d_state); head h reads group h // (nheads // ngroups).
        diag: (batch, seqlen, nheads) the diagonal M[t, t].
        chunk_size: chunk length Q (any positive int, chosen by `mixer_policy.ssd_chunk_length`; the result does not
            depend on it).
        seq_idx: None, or (batch, seqlen) int sequence ids, non-decreasing along each row.
    Returns:
        y: (batch, seqlen, nheads, headdim) in the dtype of x; accumulation in float32 (float64 for float64).
    """
    batch, seqlen, nheads, headdim = x.shape
    ngroups, d_state = B_f.shape[2], B_f.shape[3]
    hpg = nheads // ngroups
    dtype = ssd_compute_dtype(x.dtype)
    Q = chunk_size
    T = (seqlen + Q - 1) // Q
    pad = T * Q - seqlen

    def chunks(t, before=0, after=0):  # (batch, seqlen', ...) -> (batch, T, Q, ...) in dtype, zero-padded
        t = t.to(dtype)
        if not (isinstance(pad, int) and before + after + pad == 0):  # a symbolic length (export) always pads
            t = F.pad(t, (0, 0) * (t.dim() - 2) + (before, after + pad))
        return t.reshape(batch, T, Q, *t.shape[2:])

    heads_last = lambda t: chunks(t).transpose(2, 3).contiguous()  # (batch, T, H, Q)
    x_h = chunks(x).transpose(2, 3).contiguous()  # (b, T, H, Q, P)
    dt_fc, dt_bc, diag_c = heads_last(dt_f), heads_last(dt_b), heads_last(diag)  # (b, T, H, Q)
    # Row t of the forward scan reads C_f[t-1], of the backward scan C_b[t+1]: shift while padding to the grid.
    C_fc = chunks(C_f[:, :-1], before=1).transpose(2, 3)  # (b, T, G, Q, N)
    C_bc = chunks(C_b[:, 1:], after=1).transpose(2, 3)
    Bt_f = chunks(B_f).permute(0, 1, 3, 4, 2)  # (b, T, G, N, Q)
    Bt_b = chunks(B_b).permute(0, 1, 3, 4, 2)
    A = A.to(dtype)[:, None]  # (H, 1)

    cum_f, cum_b = (dt_fc * A).cumsum(-1), (dt_bc * A).cumsum(-1)  # inclusive in-chunk log decays (b, T, H, Q)
    cumx_f, cumx_b = _exclusive(cum_f), _exclusive(cum_b)
    tot_f, tot_b = cum_f[..., -1], cum_b[..., -1]  # (b, T, H)

    idx = torch.arange(Q, device=x.device)
    lower = (idx[:, None] > idx[None, :]).to(dtype)  # (Q, Q) 1 where s < t (the forward triangle), else 0
    # Which (t, s) pairs of a chunk interact: off the diagonal (the diagonal term is added separately) and inside one
    # sequence. Masks are 0/1 factors: torch.where with broadcast conditions is several times slower on CPU.
    keep = (idx[:, None] != idx[None, :]).to(dtype)  # (Q, Q)
    seq = None
    if seq_idx is not None:
        seq = torch.cat([seq_idx, seq_idx[:, -1:].expand(batch, pad)], dim=1).view(batch, T, Q)  # pad: last id
        keep = keep * (seq[..., :, None] == seq[..., None, :]).unsqueeze(2)  # (b, T, 1, Q, Q)

    # --- intra-chunk: lower triangle exp(cumx_f[t] - cum_f[s]) dt_f[s], upper exp(cumx_b[s] - cum_b[t]) dt_b[s],
    # one exponent per (head, t, s) so that both directions cost a single exp ---
    col_f = torch.log(dt_fc.clamp(min=_LOG_DT_FLOOR)) - cum_f  # (b, T, H, Q)
    col_b = torch.log(dt_bc.clamp(min=_LOG_DT_FLOOR)) + cumx_b
    seg = torch.lerp(col_b[..., None, :] - cum_b[..., :, None], cumx_f[..., :, None] + col_f[..., None, :], lower)
    CB = torch.lerp(C_bc @ Bt_b, C_fc @ Bt_f, lower) * keep  # (b, T, G, Q, Q)
    M = (_exp(seg, upper=True).view(batch, T, ngroups, hpg, Q, Q) * CB[:, :, :, None]).view(batch, T, nheads, Q, Q)
    y = torch.addcmul(M @ x_h, x_h, diag_c[..., None])  # (b, T, H, Q, P)
    tokens = lambda t: t.transpose(2, 3).reshape(batch, T * Q, nheads, headdim)[:, :seqlen].to(x.dtype)
    if T == 1 and not is_tracing():  # one chunk per row: no state to pass (a traced graph must serve any length)
        return tokens(y)

    # --- each chunk's own states: forward at its end (inputs of its last token's sequence), backward at its start ---
    w_f = _exp(tot_f[..., None] - cum_f) * dt_fc  # (b, T, H, Q) weight of input s in the chunk-end state
    w_b = _exp(cumx_b) * dt_bc  # weight of input s in the chunk-start state
    if seq is not None:
        w_f = w_f * (seq == seq[..., -1:]).unsqueeze(2)
        w_b = w_b * (seq == seq[..., :1]).unsqueeze(2)
    by_group = lambda t: t.view(batch, T, ngroups, hpg, Q, headdim).transpose(3, 4).reshape(
        batch, T, ngroups, Q, hpg * headdim)  # (b, T, H, Q, P) -> (b, T, G, Q, hpg * P)
    by_head = lambda t: t.view(batch, T, ngroups, Q, hpg, headdim).transpose(3, 4).reshape(
        batch, T, nheads, Q, headdim)  # inverse of by_group
    local_f = Bt_f @ by_group(x_h * w_f[..., None])  # (b, T, G, N, hpg * P)
    local_b = Bt_b @ by_group(x_h * w_b[..., None])

    # --- states entering each chunk: enter_f[c] = sum_{c' < c} exp(tot_f[c'+1..c-1]) local_f[c'], mirrored for the
    # backward direction; a state only reaches chunks whose boundary token belongs to its sequence ---
    cumT_f = tot_f.transpose(1, 2).cumsum(-1)  # (b, H, T)
    rcumT_b = tot_b.transpose(1, 2).flip(-1).cumsum(-1).flip(-1)  # suffix sums
    chunk_idx = torch.arange(T, device=x.device)
    before = chunk_idx[:, None] > chunk_idx[None, :]  # (T, T): c' < c
    keep_f, keep_b = before, before.transpose(0, 1)
    if seq_idx is not None:
        last, first = seq[:, :, -1], seq[:, :, 0]  # (b, T)
        keep_f = keep_f & (last[:, None, :] == _exclusive(last)[:, :, None]).unsqueeze(1)  # (b, 1, T, T)
        next_first = F.pad(first[:, 1:], (0, 1))
        keep_b = keep_b & (first[:, None, :] == next_first[:, :, None]).unsqueeze(1)
    D_f = _decay_matrix(_exclusive(cumT_f), cumT_f, keep_f)  # (b, H, T, T)
    D_b = _decay_matrix(F.pad(rcumT_b[..., 1:], (0, 1)), rcumT_b, keep_b)
    per_head = lambda s: s.view(batch, T, ngroups, d_state, hpg, headdim).permute(0, 2, 4, 1, 3, 5).reshape(
        batch, nheads, T, d_state * headdim)  # (b, H, T, N * P)
    per_group = lambda s: s.view(batch, ngroups, hpg, T, d_state, headdim).permute(0, 3, 1, 4, 2, 5).reshape(
        batch, T, ngroups, d_state, hpg * headdim)  # inverse of per_head
    enter_f = per_group(D_f @ per_head(local_f))  # (b, T, G, N, hpg * P)
    enter_b = per_group(D_b @ per_head(local_b))

    # --- what the entering states add to each row (zero for rows of a sequence that starts inside the chunk) ---
    o_f = _exp(cumx_f)  # (b, T, H, Q) decay from the chunk start to row t (shifted)
    o_b = _exp(tot_b[..., None] - cum_b)
    if seq_idx is not None:
        o_f = o_f * (seq == _exclusive(last)[..., None]).unsqueeze(2)
        o_b = o_b * (seq == next_first[..., None]).unsqueeze(2)
    y = torch.addcmul(y, by_head(C_fc @ enter_f), o_f[..., None])
    y = torch.addcmul(y, by_head(C_bc @ enter_b), o_b[..., None])
    return tokens(y)
