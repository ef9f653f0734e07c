"""Chunked bidirectional SSD in pure PyTorch (any device, exportable): the reference kernel of the Hydra mixer.

For one head, with decays a_k = exp(dt[k] * A), the mixer computes y = M x with the quasiseparable matrix
    M[t, s] = (C_f[t-1] . B_f[s]) prod_{k=s+1..t-1} a^f_k dt_f[s]    for s < t
    M[t, s] = (C_b[t+1] . B_b[s]) prod_{k=t+1..s-1} a^b_k dt_b[s]    for s > t
    M[t, t] = diag[t]
(Hwang et al. 2024, the Hydra paper's quasiseparable mixer; the authors' hydra/modules/hydra.py runs it as one
causal SSD over [x ; flip(x)] and shifts the outputs by one step.) With sequence boundaries, M is block diagonal:
one block per sequence, each the matrix of that sequence alone (the shifted C is never read across a boundary and
no term or state crosses one).

Both directions are evaluated from the same chunks of the unflipped inputs. Inside a chunk of length Q the lower
(forward) and upper (backward) triangles share one Q x Q matrix per head, built with a single exp. Across chunks,
each chunk's own forward state (at its end) and backward state (at its start) are combined by one
(chunks x chunks) decay matrix per head and direction, so there is no Python loop over chunks and no branch on the
sequence length (torch.export traces it with a dynamic length). Time O(L * Q + (L / Q)^2) per head, memory O(L).

Accuracy: every decay is the exp of a difference of prefix sums of log decays, and the exclusive sums are exact
shifted copies of the inclusive ones, so the factor between neighbours is exp(0) exactly and the rounding of large
prefix sums only touches terms that are already damped by exp(-|sum|). With boundaries the prefix sums restart at
every sequence start (computed in float64 and rebased there), so a neighbour's decays, however large, never enter a
sequence's exponents.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .tracing import is_tracing

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


def chunk_count(seqlen, chunk_size: int):
    """ceil(seqlen / chunk_size). Under torch.export an unbacked size: the exporter then reasons about the number of
    chunks and the padding without specializing on their values (as an expression of the dynamic length it would
    emit guards such as `(seqlen + 63) // 64 != 1` that no dynamic length satisfies)."""
    count = (seqlen + chunk_size - 1) // chunk_size
    if not torch.compiler.is_exporting():
        return count
    count = torch.scalar_tensor(count, dtype=torch.long).item()
    torch._check(count * chunk_size >= seqlen)
    torch._check(count * chunk_size < seqlen + chunk_size)
    return count


def _to_chunks(t: torch.Tensor, T, Q: int, dtype: torch.dtype, shift: int = 0) -> torch.Tensor:
    """(batch, seqlen, ...) -> (batch, T, Q, ...) in `dtype`, zero-padded to T * Q rows; row s holds t[s + shift]."""
    t = t.to(dtype)
    pad = T * Q - t.shape[1]
    if not (isinstance(pad, int) and shift == 0 and pad == 0):  # a symbolic length (export) always pads
        t = F.pad(t, (0, 0) * (t.dim() - 2) + (max(-shift, 0), pad + max(shift, 0)))
        t = t.narrow(1, max(shift, 0), T * Q)  # shift by slicing the padded rows (no slice of length seqlen - 1)
    return t.reshape(t.shape[0], T, Q, *t.shape[2:])


@dataclass(frozen=True)
class ChunkBoundaries:
    """The sequence boundaries of rows cut into chunks of `chunk_size`, prepared once per forward for every layer.

    All masks are 0/1 factors in `dtype` (torch.where with broadcast conditions is several times slower on CPU),
    shaped to broadcast against (batch, T, nheads, ...) tensors.
    """

    chunk_size: int
    dtype: torch.dtype
    pair_keep: torch.Tensor  # (b, T, 1, Q, Q): t != s and both in one sequence
    segment_start: torch.Tensor  # (b, T, 1, Q) long: in-chunk index where the token's sequence enters the chunk
    in_last: torch.Tensor  # (b, T, 1, Q): the token belongs to the sequence of the chunk's last token
    in_first: torch.Tensor  # (b, T, 1, Q): ... of the chunk's first token
    reads_from_left: torch.Tensor  # (b, T, 1, Q): ... of the previous chunk's last token (reads the entering state)
    reads_from_right: torch.Tensor  # (b, T, 1, Q): ... of the next chunk's first token
    pass_f: torch.Tensor  # (b, 1, T, T) bool: chunk c' < c whose end state reaches chunk c
    pass_b: torch.Tensor  # (b, 1, T, T) bool: chunk c' > c whose start state reaches chunk c


def chunk_boundaries(seq_idx: torch.Tensor, chunk_size: int, dtype: torch.dtype) -> ChunkBoundaries:
    """Prepare `seq_idx` (batch, seqlen) non-decreasing sequence ids for chunks of `chunk_size` tokens."""
    batch, seqlen = seq_idx.shape
    Q = chunk_size
    T = chunk_count(seqlen, Q)
    pad = T * Q - seqlen
    seq = torch.cat([seq_idx, seq_idx[:, -1:].expand(batch, pad)], dim=1).view(batch, T, Q)  # pad: last id
    idx = torch.arange(Q, device=seq_idx.device)
    same = seq[..., :, None] == seq[..., None, :]  # (b, T, Q, Q)
    pair_keep = (same & (idx[:, None] != idx[None, :])).to(dtype).unsqueeze(2)
    starts = F.pad(seq[..., 1:] != seq[..., :-1], (1, 0), value=True)  # (b, T, Q): chunk start or sequence start
    segment_start = torch.cummax(torch.where(starts, idx, 0), dim=-1).values.unsqueeze(2)
    first, last = seq[..., 0], seq[..., -1]  # (b, T)
    last_before = _exclusive(last)  # the previous chunk's last id (0 before the first chunk: never read)
    first_after = F.pad(first[:, 1:], (0, 1))
    chunk_idx = torch.arange(T, device=seq_idx.device)
    before = chunk_idx[:, None] > chunk_idx[None, :]  # (T, T): c' < c
    # chunk c' < c passes its end state to c when every token from c''s end to c's start is one sequence
    pass_f = before & (last[:, None, :] == last_before[:, :, None])  # (b, T, T)
    pass_b = before.transpose(0, 1) & (first[:, None, :] == first_after[:, :, None])
    factor = lambda mask: mask.to(dtype).unsqueeze(2)  # (b, T, Q) -> (b, T, 1, Q)
    return ChunkBoundaries(
        chunk_size=Q, dtype=dtype, pair_keep=pair_keep, segment_start=segment_start,
        in_last=factor(seq == last[..., None]), in_first=factor(seq == first[..., None]),
        reads_from_left=factor(seq == last_before[..., None]), reads_from_right=factor(seq == first_after[..., None]),
        pass_f=pass_f.unsqueeze(1), pass_b=pass_b.unsqueeze(1),
    )


def _log_decay_prefix_sums(dt: torch.Tensor, A: torch.Tensor, boundaries: ChunkBoundaries | None) -> torch.Tensor:
    """Inclusive in-chunk prefix sums of dt * A, (b, T, H, Q); with boundaries restarting at every sequence start.

    The restart subtracts the exclusive sum at the sequence's entry into the chunk; it is done in float64 so that a
    neighbour's large decays leave no rounding in this sequence's sums."""
    log_decay = dt * A  # (b, T, H, Q)
    if boundaries is None:
        return log_decay.cumsum(-1)
    cum = log_decay.double().cumsum(-1)
    start = boundaries.segment_start.expand_as(cum)
    return (cum - torch.gather(_exclusive(cum), -1, start)).to(dt.dtype)


def _chunk_level_prefix_sums(totals: torch.Tensor, reverse: bool) -> torch.Tensor:
    """Prefix (or suffix) sums over chunks of the per-chunk log decays (b, H, T), in float64 when they may run over
    many sequences, so that rebasing them in the decay matrix loses nothing."""
    sums = totals.double() if totals.dtype == torch.float32 else totals
    sums = sums.flip(-1).cumsum(-1).flip(-1) if reverse else sums.cumsum(-1)
    return sums


def _decay_matrix(row: torch.Tensor, col: torch.Tensor, keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """exp(row[..., i] - col[..., j]) where keep[..., i, j], else 0: (..., n) x (..., n) -> (..., n, n)."""
    exponent = (row[..., :, None] - col[..., None, :]).to(dtype)
    return _exp(exponent, upper=True) * keep


def ssd_bidirectional_torch(x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, chunk_size, seq_idx=None,
                            compute_dtype=None):
    """Bidirectional SSD of the Hydra mixer (the forward and backward scans, their shifts and the diagonal).

    Args:
        x: (batch, seqlen, nheads, headdim) shared input of both directions.
        dt_f, dt_b: (batch, seqlen, nheads) step sizes after softplus (zero at padding).
        A: (nheads,) negative decay rates.
        B_f, C_f, B_b, C_b: (batch, seqlen, ngroups, d_state); head h reads group h // (nheads // ngroups).
        diag: (batch, seqlen, nheads) the diagonal M[t, t].
        chunk_size: chunk length Q (any positive int; the result does not depend on it).
        seq_idx: None, (batch, seqlen) int sequence ids non-decreasing along each row, or their `ChunkBoundaries`
            prepared for `chunk_size` (what the execution plan passes, once for all layers).
        compute_dtype: accumulation dtype; float32 (float64 for float64 x) when None.
    Returns:
        y: (batch, seqlen, nheads, headdim) in the dtype of x.
    """
    if torch.is_autocast_enabled(x.device.type):  # the SSD keeps its own precision (see execution_plan.py)
        with torch.autocast(x.device.type, enabled=False):
            return ssd_bidirectional_torch(x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, chunk_size, seq_idx,
                                           compute_dtype)
    batch, seqlen, nheads, headdim = x.shape
    ngroups = B_f.shape[2]
    dtype = compute_dtype or (torch.float64 if x.dtype == torch.float64 else torch.float32)
    Q = chunk_size
    T = chunk_count(seqlen, Q)
    bounds = seq_idx
    if isinstance(seq_idx, torch.Tensor):
        bounds = chunk_boundaries(seq_idx, Q, dtype)
    assert bounds is None or (bounds.chunk_size == Q and bounds.dtype == dtype), "boundaries of another plan"

    chunks = lambda t, shift=0: _to_chunks(t, T, Q, dtype, shift)
    x_h = chunks(x).transpose(2, 3).contiguous()  # (b, T, H, Q, P)
    dt_fc, dt_bc, diag_c = (chunks(t).transpose(2, 3).contiguous() for t in (dt_f, dt_b, diag))  # (b, T, H, Q)
    # Row t of the forward scan reads C_f[t-1], of the backward scan C_b[t+1]: shift while padding to the grid.
    C_fc = chunks(C_f, shift=-1).transpose(2, 3)  # (b, T, G, Q, N)
    C_bc = chunks(C_b, shift=1).transpose(2, 3)
    Bt_f = chunks(B_f).permute(0, 1, 3, 4, 2)  # (b, T, G, N, Q)
    Bt_b = chunks(B_b).permute(0, 1, 3, 4, 2)
    A = A.to(dtype)[:, None]  # (H, 1)

    cum_f = _log_decay_prefix_sums(dt_fc, A, bounds)  # (b, T, H, Q) inclusive
    cum_b = _log_decay_prefix_sums(dt_bc, A, bounds)
    cumx_f, cumx_b = _exclusive(cum_f), _exclusive(cum_b)

    # --- intra-chunk: lower triangle exp(cumx_f[t] - cum_f[s]) dt_f[s], upper exp(cumx_b[s] - cum_b[t]) dt_b[s],
    # one exponent per (head, t, s) so that both directions cost a single exp; the diagonal term is added after the
    # product (out of place: the ONNX exporter's functional graph cannot take a copy into M's diagonal) ---
    idx = torch.arange(Q, device=x.device)
    lower = (idx[:, None] > idx[None, :]).to(dtype)  # (Q, Q) 1 where s < t (the forward triangle), else 0
    keep = bounds.pair_keep if bounds is not None else (idx[:, None] != idx[None, :]).to(dtype)
    col_f = torch.log(dt_fc.clamp(min=_LOG_DT_FLOOR)) - cum_f  # (b, T, H, Q)
    col_b = torch.log(dt_bc.clamp(min=_LOG_DT_FLOOR)) + cumx_b
    upper_seg = col_b[..., None, :] - cum_b[..., :, None]  # (b, T, H, Q, Q) exponents of s > t
    lower_seg = cumx_f[..., :, None] + col_f[..., None, :]  # ... of s < t
    hpg = nheads // ngroups
    inputs = (x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag)
    if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
        CB = torch.lerp(C_bc @ Bt_b, C_fc @ Bt_f, lower) * keep  # (b, T, G, Q, Q)
        M = _exp(torch.lerp(upper_seg, lower_seg, lower), upper=True)
        M = (M.view(batch, T, ngroups, hpg, Q, Q) * CB[:, :, :, None]).view(batch, T, nheads, Q, Q)
    else:  # the same chain in place: one (b, T, H, Q, Q) buffer instead of six (inference)
        CB = (C_bc @ Bt_b).lerp_(C_fc @ Bt_f, lower).mul_(keep)
        M = upper_seg.lerp_(lower_seg, lower).clamp_(min=_EXP_FLOOR, max=_EXP_CAP).exp_()
        M.view(batch, T, ngroups, hpg, Q, Q).mul_(CB[:, :, :, None])
    y = torch.addcmul(M @ x_h, x_h, diag_c[..., None])  # (b, T, H, Q, P)
    if not is_tracing() and T == 1:  # one chunk per row: no state to pass (a traced graph must serve any length)
        return _from_chunks(y, seqlen, x.dtype)
    y = _add_passed_states(y, x_h, dt_fc, dt_bc, cum_f, cum_b, Bt_f, Bt_b, C_fc, C_bc, bounds, ngroups)
    return _from_chunks(y, seqlen, x.dtype)


def _from_chunks(y: torch.Tensor, seqlen, dtype: torch.dtype) -> torch.Tensor:
    """(b, T, H, Q, P) -> (b, seqlen, H, P) in `dtype`."""
    batch, T, nheads, Q, headdim = y.shape
    return y.transpose(2, 3).reshape(batch, T * Q, nheads, headdim)[:, :seqlen].to(dtype)


def _add_passed_states(y, x_h, dt_fc, dt_bc, cum_f, cum_b, Bt_f, Bt_b, C_fc, C_bc, bounds, ngroups):
    """y plus what the states entering each chunk (from the left and from the right) add to its rows."""
    batch, T, nheads, Q, headdim = y.shape
    d_state, hpg, dtype = Bt_f.shape[3], nheads // ngroups, y.dtype
    # (b, T, H, Q, P) <-> (b, T, G, Q, hpg * P): heads of one group side by side, to share one product with B or C
    by_group = lambda t: t.view(batch, T, ngroups, hpg, Q, headdim).transpose(3, 4).reshape(
        batch, T, ngroups, Q, hpg * headdim)
    by_head = lambda t: t.view(batch, T, ngroups, Q, hpg, headdim).transpose(3, 4).reshape(
        batch, T, nheads, Q, headdim)
    # (b, T, G, N, hpg * P) <-> (b, H, T, N * P): the states of every chunk of a head, for the chunk-to-chunk product
    per_head = lambda s: s.view(batch, T, ngroups, d_state, hpg, headdim).permute(0, 2, 4, 1, 3, 5).reshape(
        batch, nheads, T, d_state * headdim)
    per_group = lambda s: s.view(batch, ngroups, hpg, T, d_state, headdim).permute(0, 3, 1, 4, 2, 5).reshape(
        batch, T, ngroups, d_state, hpg * headdim)

    tot_f, tot_b = cum_f[..., -1], cum_b[..., -1]  # (b, T, H): the log decay over each chunk (its last sequence)
    cumx_f = _exclusive(cum_f)
    # --- each chunk's own states: forward at its end (inputs of its last token's sequence), backward at its start ---
    # With boundaries the sums of different sequences have different bases: cap the exps that the masks then remove.
    w_f = _exp(tot_f[..., None] - cum_f, upper=True) * dt_fc  # (b, T, H, Q) weight of input s in the chunk-end state
    w_b = _exp(_exclusive(cum_b)) * dt_bc  # weight of input s in the chunk-start state
    if bounds is not None:
        w_f, w_b = w_f * bounds.in_last, w_b * bounds.in_first
    local_f = Bt_f @ by_group(x_h * w_f[..., None])  # (b, T, G, N, hpg * P)
    local_b = Bt_b @ by_group(x_h * w_b[..., None])

    # --- states entering each chunk: enter_f[c] = sum_{c' < c} exp(tot_f[c'+1..c-1]) local_f[c'], mirrored for the
    # backward direction; a state only reaches chunks whose boundary token belongs to its sequence ---
    chunk_idx = torch.arange(T, device=y.device)
    before = chunk_idx[:, None] > chunk_idx[None, :]  # (T, T): c' < c
    pass_f, pass_b = (bounds.pass_f, bounds.pass_b) if bounds is not None else (before, before.transpose(0, 1))
    cumT_f = _chunk_level_prefix_sums(tot_f.transpose(1, 2), reverse=False)  # (b, H, T)
    rcumT_b = _chunk_level_prefix_sums(tot_b.transpose(1, 2), reverse=True)
    D_f = _decay_matrix(_exclusive(cumT_f), cumT_f, pass_f, dtype)  # (b, H, T, T)
    D_b = _decay_matrix(F.pad(rcumT_b[..., 1:], (0, 1)), rcumT_b, pass_b, dtype)
    enter_f = per_group(D_f @ per_head(local_f))  # (b, T, G, N, hpg * P)
    enter_b = per_group(D_b @ per_head(local_b))

    # --- what the entering states add to each row (zero for rows of a sequence that starts inside the chunk) ---
    o_f = _exp(cumx_f)  # (b, T, H, Q) decay from the chunk start to row t (shifted)
    o_b = _exp(tot_b[..., None] - cum_b, upper=True)
    if bounds is not None:
        o_f, o_b = o_f * bounds.reads_from_left, o_b * bounds.reads_from_right
    y = torch.addcmul(y, by_head(C_fc @ enter_f), o_f[..., None])
    return torch.addcmul(y, by_head(C_bc @ enter_b), o_b[..., None])
