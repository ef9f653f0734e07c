"""Torch references of the Triton SSD stages (`modeling_hydra/ssd_triton_*.py`), one `<stage>_ref` per kernel
launcher, for the interpreter checks; test code, so that it does not ship in the checkpoints' remote-code files.
Without sequence boundaries (`seq_idx`), which the checks test on the whole Function against the float64 oracle.

The chunked layout they share: zero padding to the chunk grid, the shifted C of each direction, groups expanded to
heads, and the in-chunk pair decays."""

import torch
import torch.nn.functional as F


def to_chunks(t: torch.Tensor, chunk_size: int, dtype=torch.float32) -> torch.Tensor:
    """(batch, seqlen, ...) -> (batch, nchunks, chunk_size, ...) in `dtype`, zero past `seqlen`."""
    nchunks = -(-t.shape[1] // chunk_size)
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


def heads_in_chunks(t: torch.Tensor, nheads: int, chunk_size: int) -> torch.Tensor:
    """(batch, seqlen, ngroups, d_state) -> float32 (batch, nchunks, chunk_size, nheads, d_state)."""
    return to_chunks(groups_to_heads(t, nheads), chunk_size)


def pair_decays(cum: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, reverse: bool) -> torch.Tensor:
    """In-chunk decay of each (output row t, input s) pair of one direction, float32 (batch, nchunks, nheads, Q, Q):
    exp(cum[t] - la[t] - cum[s]) on the direction's strict triangle (s < t forward, s > t backward), zero elsewhere.

    cum: (batch, nheads, nchunks, Q) from `chunk_cumsum`; dt: (batch, seqlen, nheads).
    """
    chunk_size = cum.shape[3]
    cum = cum.permute(0, 2, 1, 3)  # (batch, nchunks, nheads, Q)
    la = to_chunks(dt, chunk_size).permute(0, 1, 3, 2) * A.float()[:, None]
    seg = (cum - la)[..., :, None] - cum[..., None, :]
    idx = torch.arange(chunk_size, device=cum.device)
    triangle = idx[:, None] < idx[None, :] if reverse else idx[:, None] > idx[None, :]
    return torch.exp(seg.masked_fill(~triangle, float("-inf")))


def chunk_cumsum_ref(dt: torch.Tensor, A: torch.Tensor, chunk_size: int, reverse: bool) -> torch.Tensor:
    """Torch reference of `chunk_cumsum`."""
    batch, seqlen, nheads = dt.shape
    nchunks = -(-seqlen // chunk_size)
    la = torch.zeros(batch, nchunks * chunk_size, nheads, device=dt.device, dtype=torch.float32)
    la[:, :seqlen] = dt.float() * A.float()
    la = la.view(batch, nchunks, chunk_size, nheads).permute(0, 3, 1, 2)
    if reverse:
        return la.flip(-1).cumsum(-1).flip(-1)
    return la.cumsum(-1)


def chunk_cumsum_bwd_ref(dt, A, rowgrad, ddt_exp, reverse: bool):
    """Torch reference of `chunk_cumsum_bwd` (its docstring gives the arithmetic)."""
    batch, seqlen, nheads = dt.shape
    flat = lambda t: t.flatten(2)[..., :seqlen].transpose(1, 2)  # (batch, seqlen, nheads)
    R, E = flat(rowgrad), flat(ddt_exp)
    dtf = dt.float()
    K = dtf * E
    D = R - K
    if reverse:
        beyond = D.cumsum(1) - D
    else:
        beyond = D.flip(1).cumsum(1).flip(1) - D
    dla = beyond - K
    return E + A.float() * dla, (dtf * dla).sum((0, 1))


def chunk_state_ref(B, x, dt, A, cum, reverse: bool, adjoint: bool = False, row_shift: int = 0) -> torch.Tensor:
    """Torch reference of `chunk_state`."""
    batch, seqlen, nheads, headdim = x.shape
    ngroups = B.shape[2]
    nchunks, chunk_size = cum.shape[2], cum.shape[3]
    padded = nchunks * chunk_size
    f32 = torch.float32
    Bs = torch.zeros(batch, padded, ngroups, B.shape[3], device=x.device, dtype=f32)
    lo, hi = max(0, -row_shift), min(seqlen, seqlen - row_shift)
    Bs[:, lo:hi] = B[:, lo + row_shift:hi + row_shift].float()
    xs = torch.zeros(batch, padded, nheads, headdim, device=x.device, dtype=f32)
    xs[:, :seqlen] = x.float()
    dts = torch.zeros(batch, padded, nheads, device=x.device, dtype=f32)
    dts[:, :seqlen] = dt.float()
    dts = dts.view(batch, nchunks, chunk_size, nheads)
    cum = cum.permute(0, 2, 3, 1)  # (batch, nchunks, chunk_size, nheads)
    if adjoint:
        w = torch.exp(cum - dts * A.float())
    else:
        tot = cum[:, :, :1] if reverse else cum[:, :, -1:]
        w = torch.exp(tot - cum) * dts
    Bh = Bs.repeat_interleave(nheads // ngroups, dim=2).view(batch, nchunks, chunk_size, nheads, -1)
    xw = xs.view(batch, nchunks, chunk_size, nheads, headdim) * w[..., None]
    return torch.einsum("bcqhn,bcqhp->bchnp", Bh, xw)


def state_passing_ref(states: torch.Tensor, cum: torch.Tensor, backward_direction: bool, reverse: bool) -> torch.Tensor:
    """Torch reference of `state_passing` (without sequence boundaries)."""
    tot = cum[..., 0] if backward_direction else cum[..., -1]
    nchunks = states.shape[1]
    order = range(nchunks - 1, -1, -1) if reverse else range(nchunks)
    enter = torch.empty_like(states)
    carry = torch.zeros_like(states[:, 0])
    for c in order:
        enter[:, c] = carry
        carry = states[:, c] + torch.exp(tot[:, :, c])[..., None, None] * carry
    return enter


def chunk_cb_ref(B_f, C_f, B_b, C_b, chunk_size: int) -> torch.Tensor:
    """Torch reference of `chunk_cb` (without sequence boundaries)."""
    by_group = lambda t: to_chunks(t, chunk_size).transpose(2, 3)  # (batch, nchunks, ngroups, Q, d_state)
    cb_f = by_group(shift_rows(C_f, -1)) @ by_group(B_f).transpose(-1, -2)
    cb_b = by_group(shift_rows(C_b, 1)) @ by_group(B_b).transpose(-1, -2)
    idx = torch.arange(chunk_size, device=B_f.device)
    lower, upper = idx[:, None] > idx[None, :], idx[:, None] < idx[None, :]
    return torch.where(lower, cb_f, 0.0) + torch.where(upper, cb_b, 0.0)


def chunk_scan_ref(x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, cum_f, cum_b, enter_f, enter_b) -> torch.Tensor:
    """Torch reference of `chunk_scan` (float32 math, x's dtype out; C.B computed here, without sequence
    boundaries)."""
    batch, seqlen, nheads, headdim = x.shape
    nchunks, chunk_size = cum_f.shape[2], cum_f.shape[3]
    xc = to_chunks(x, chunk_size)  # (batch, nchunks, Q, nheads, headdim)
    y = to_chunks(diag, chunk_size)[..., None] * xc
    for dt, B, Cs, cum, enter, reverse in ((dt_f, B_f, shift_rows(C_f, -1), cum_f, enter_f, False),
                                          (dt_b, B_b, shift_rows(C_b, 1), cum_b, enter_b, True)):
        Bh, Csh = heads_in_chunks(B, nheads, chunk_size), heads_in_chunks(Cs, nheads, chunk_size)
        decay = pair_decays(cum, dt, A, reverse)  # (batch, nchunks, nheads, Q, Q)
        dt_s = to_chunks(dt, chunk_size).permute(0, 1, 3, 2)[..., None, :]  # (batch, nchunks, nheads, 1, Q)
        mix = torch.einsum("bcthn,bcshn->bchts", Csh, Bh) * decay * dt_s
        y = y + torch.einsum("bchts,bcshp->bcthp", mix, xc)
        out_decay = torch.exp(cum.permute(0, 2, 3, 1) - to_chunks(dt, chunk_size) * A.float())  # (b, c, Q, nheads)
        y = y + torch.einsum("bcthn,bchnp->bcthp", Csh, enter) * out_decay[..., None]
    return y.reshape(batch, nchunks * chunk_size, nheads, headdim)[:, :seqlen].to(x.dtype)


def chunk_scan_bwd_dx_ref(x, dy, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, cum_f, cum_b, dstate_f, dstate_b):
    """Torch reference of `chunk_scan_bwd_dx`."""
    batch, seqlen, nheads, headdim = x.shape
    nchunks, chunk_size = cum_f.shape[2], cum_f.shape[3]
    xc, dyc = to_chunks(x, chunk_size), to_chunks(dy, chunk_size)  # (batch, nchunks, Q, nheads, headdim)
    dx = to_chunks(diag, chunk_size)[..., None] * dyc
    ddt_exp = []
    for dt, B, Cs, cum, dstate, reverse in ((dt_f, B_f, shift_rows(C_f, -1), cum_f, dstate_f, False),
                                           (dt_b, B_b, shift_rows(C_b, 1), cum_b, dstate_b, True)):
        Bh, Csh = heads_in_chunks(B, nheads, chunk_size), heads_in_chunks(Cs, nheads, chunk_size)
        cum_q = cum.permute(0, 2, 3, 1)  # (batch, nchunks, Q, nheads)
        tot = cum_q[:, :, :1] if reverse else cum_q[:, :, -1:]
        mix = torch.einsum("bcthn,bcshn->bchts", Csh, Bh) * pair_decays(cum, dt, A, reverse)
        grad = torch.einsum("bchts,bcthp->bcshp", mix, dyc)
        grad = grad + torch.einsum("bcshn,bchnp->bcshp", Bh, dstate) * torch.exp(tot - cum_q)[..., None]
        dx = dx + grad * to_chunks(dt, chunk_size)[..., None]
        ddt_exp.append((grad * xc).sum(-1).permute(0, 3, 1, 2))
    unchunk = lambda t: t.reshape(batch, nchunks * chunk_size, *t.shape[3:])[:, :seqlen]
    ddiag = (dyc * xc).sum(-1)
    return unchunk(dx).to(x.dtype), unchunk(ddiag).to(diag.dtype), ddt_exp[0], ddt_exp[1]


def chunk_scan_bwd_dbc_ref(x, dy, dt_f, dt_b, A, B_f, C_f, B_b, C_b, cum_f, cum_b, enter_f, enter_b,
                           dstate_f, dstate_b):
    """Torch reference of `chunk_scan_bwd_db` and `chunk_scan_bwd_dc`: (dB_f, dB_b, dC_f, dC_b, rowgrad_f,
    rowgrad_b)."""
    batch, seqlen, nheads, headdim = x.shape
    ngroups = B_f.shape[2]
    nchunks, chunk_size = cum_f.shape[2], cum_f.shape[3]
    xc, dyc = to_chunks(x, chunk_size), to_chunks(dy, chunk_size)  # (batch, nchunks, Q, nheads, headdim)
    pair = torch.einsum("bcthp,bcshp->bchts", dyc, xc)  # dy[t] . x[s]
    to_groups = lambda t: t.reshape(batch, nchunks * chunk_size, ngroups, nheads // ngroups, -1).sum(3)[:, :seqlen]
    dB, dC, rowgrad = [], [], []
    for dt, B, C, shift, cum, enter, dstate, reverse in (
            (dt_f, B_f, C_f, -1, cum_f, enter_f, dstate_f, False), (dt_b, B_b, C_b, 1, cum_b, enter_b, dstate_b, True)):
        Bh, Csh = heads_in_chunks(B, nheads, chunk_size), heads_in_chunks(shift_rows(C, shift), nheads, chunk_size)
        cum_q = cum.permute(0, 2, 3, 1)  # (batch, nchunks, Q, nheads)
        dtc = to_chunks(dt, chunk_size)
        tot = cum_q[:, :, :1] if reverse else cum_q[:, :, -1:]
        weight = pair * pair_decays(cum, dt, A, reverse)  # (batch, nchunks, nheads, Q t, Q s)
        dCs = torch.einsum("bchts,bcshn->bcthn", weight * dtc.permute(0, 1, 3, 2)[..., None, :], Bh)
        dCs = dCs + torch.einsum("bcthp,bchnp->bcthn", dyc, enter) * torch.exp(cum_q - dtc * A.float())[..., None]
        grad_B = torch.einsum("bchts,bcthn->bcshn", weight, Csh)
        grad_B = grad_B + torch.einsum("bcshp,bchnp->bcshn", xc, dstate) * torch.exp(tot - cum_q)[..., None]
        rowgrad.append((dCs * Csh).sum(-1).permute(0, 3, 1, 2))
        dB.append(to_groups(grad_B * dtc[..., None]).to(B.dtype))
        dC.append(shift_rows(to_groups(dCs), -shift).to(C.dtype))
    return dB[0], dB[1], dC[0], dC[1], rowgrad[0], rowgrad[1]
