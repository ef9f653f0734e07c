"""The float64 oracle of the tests: the Hydra mixer through its materialized quasiseparable matrix.

Hydra (Hwang et al. 2024, arXiv 2407.09941, Sec. 3; the authors' code github.com/goombalab/hydra,
`hydra/modules/hydra.py`) mixes each head with y = M x, where, with decays a_k = exp(dt[k] A),

    M[t, s] = (C_f[t-1] . B_f[s]) prod_{k=s+1..t-1} a^f_k dt_f[s]    for s < t   (forward scan, output shifted by one)
    M[t, s] = (C_b[t+1] . B_b[s]) prod_{k=t+1..s-1} a^b_k dt_b[s]    for s > t   (backward scan, output shifted by one)
    M[t, t] = diag[t]                                               (fc_D(x) + D)

and head h reads group h * ngroups // nheads of B and C. With sequence ids (`seq_idx`, a packed row) M is
block-diagonal: M[t, s] = 0 unless t and s belong to one sequence, so every sequence gets its stand-alone result.
Materializing M costs O(L^2) memory per head and shares no code with the package: the simplest independent oracle
for every fast path (chunked torch SSD, Triton kernels, the whole mixer).
"""

import torch


def _sequence_ids(seq_idx, batch, seqlen):
    """(batch, seqlen) int64 sequence ids; one sequence per row when `seq_idx` is None."""
    if seq_idx is None:
        return torch.zeros(batch, seqlen, dtype=torch.int64)
    seq_idx = torch.as_tensor(seq_idx)
    return seq_idx.expand(batch, seqlen).to(torch.int64)


def quasiseparable_matrix(dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, seq_idx=None) -> torch.Tensor:
    """M of the module docstring, float64 (batch, nheads, seqlen, seqlen).

    dt_*, diag: (batch, seqlen, nheads); A: (nheads,), or (batch, seqlen, nheads) for a decay rate per position (to
    differentiate with respect to each position's own); B_*, C_*: (batch, seqlen, ngroups, d_state);
    seq_idx: optional (batch, seqlen) sequence ids (only equality of ids matters). Differentiable.
    """
    dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag = (t.double() for t in (dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag))
    batch, seqlen, nheads = dt_f.shape
    group = torch.arange(nheads) * B_f.shape[2] // nheads  # (nheads,) the group of B and C each head reads
    ids = _sequence_ids(seq_idx, batch, seqlen)
    same = ids[:, :, None] == ids[:, None, :]  # (batch, t, s)
    t_idx = torch.arange(seqlen)
    below = (t_idx[:, None] > t_idx[None, :]) & same  # s < t within one sequence
    above = (t_idx[:, None] < t_idx[None, :]) & same  # s > t within one sequence
    zero = torch.zeros_like(C_f[:, :1])
    C_f_prev = torch.cat([zero, C_f[:, :-1]], dim=1)  # row t reads C_f[t-1]
    C_b_next = torch.cat([C_b[:, 1:], zero], dim=1)  # row t reads C_b[t+1]

    def one_direction(dt, C_shifted, B, mask, forward):
        log_a = (dt * A).transpose(1, 2).cumsum(-1)  # (batch, nheads, L): sum_{k <= i} dt[k] A
        before = torch.cat([torch.zeros_like(log_a[..., :1]), log_a[..., :-1]], dim=-1)  # sum_{k <= i-1}
        if forward:  # sum_{k=s+1..t-1} = before[t] - log_a[s]
            exponent = before[..., :, None] - log_a[..., None, :]
        else:  # sum_{k=t+1..s-1} = before[s] - log_a[t]
            exponent = before[..., None, :] - log_a[..., :, None]
        exponent = torch.where(mask[:, None], exponent, -torch.inf)  # (batch, nheads, t, s)
        CB = torch.einsum("btgn,bsgn->bgts", C_shifted, B)[:, group]  # (batch, nheads, t, s)
        return CB * torch.exp(exponent) * dt.transpose(1, 2)[:, :, None, :]

    M = one_direction(dt_f, C_f_prev, B_f, below, True) + one_direction(dt_b, C_b_next, B_b, above, False)
    return M + torch.diag_embed(diag.transpose(1, 2))


def apply_matrix(M, x) -> torch.Tensor:
    """y[b, t, h, :] = sum_s M[b, h, t, s] x[b, s, h, :]; x: (batch, seqlen, nheads, headdim)."""
    return torch.einsum("bhts,bshp->bthp", M, x.detach().double())


def ssd_oracle(x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, seq_idx=None) -> torch.Tensor:
    """y = M x in float64, (batch, seqlen, nheads, headdim): the contract of `ssd_bidirectional_torch`."""
    return apply_matrix(quasiseparable_matrix(dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, seq_idx), x)


def random_ssd_inputs(batch, seqlen, nheads, headdim, ngroups, d_state, seed=0):
    """Non-trivial float64 SSD inputs (x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag): positive steps of varied size,
    A in (-3, -0.1), a diagonal of both signs."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)
    x = rand(batch, seqlen, nheads, headdim)
    dt_f = torch.nn.functional.softplus(rand(batch, seqlen, nheads))
    dt_b = torch.nn.functional.softplus(rand(batch, seqlen, nheads))
    A = -(0.1 + 2.9 * torch.rand(nheads, generator=g, dtype=torch.float64))
    B_f, C_f, B_b, C_b = (rand(batch, seqlen, ngroups, d_state) for _ in range(4))
    diag = rand(batch, seqlen, nheads)
    return x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag


def _silu(v):
    return v / (1.0 + torch.exp(-v))


def _softplus(v):
    return torch.log1p(torch.exp(v))


def mixer_oracle(u, weights, headdim, ngroups, d_state, seq_idx=None) -> torch.Tensor:
    """The Hydra mixer in float64 for u (batch, seqlen, d) through the materialized matrix, (batch, seqlen, d).

    weights: the mixer's tensors by name as in the authors' checkpoints (`in_proj.weight`, `conv1d.weight` (channels,
    1, K), `conv1d.bias`, `dt_bias`, `A_log`, `D`, `fc_D.weight`, `norm.weight`, `out_proj.weight`, and the
    optional `in_proj.bias`, `out_proj.bias`); seq_idx: optional (batch, seqlen) ids of packed sequences, which the
    convolution and both scans do not cross.
    """
    w = {name: t.detach().double() for name, t in weights.items()}
    u = u.detach().double()
    batch, seqlen, _ = u.shape
    d_in = w["out_proj.weight"].shape[1]
    H, G, N = d_in // headdim, ngroups, d_state
    ids = _sequence_ids(seq_idx, batch, seqlen)

    zxbcdt = u @ w["in_proj.weight"].T + w.get("in_proj.bias", 0.0)  # [z | x B_f C_f B_b C_b | dt_f dt_b]
    z, xBC, dt = zxbcdt[..., :d_in], zxbcdt[..., d_in:2 * d_in + 4 * G * N], zxbcdt[..., 2 * d_in + 4 * G * N:]
    # Non-causal depthwise convolution, zero padding K // 2 on both sides and at sequence boundaries.
    conv_w = w["conv1d.weight"][:, 0]  # (channels, K)
    K = conv_w.shape[1]
    conv = w.get("conv1d.bias", torch.zeros(conv_w.shape[0], dtype=torch.float64)).expand(batch, seqlen, -1).clone()
    for t in range(seqlen):
        for j in range(K):
            src = t + j - K // 2
            if 0 <= src < seqlen:
                inside = (ids[:, t] == ids[:, src]).to(torch.float64)[:, None]  # (batch, 1)
                conv[:, t] += inside * conv_w[:, j] * xBC[:, src]
    xBC = _silu(conv)
    x = xBC[..., :d_in]
    B_f, C_f, B_b, C_b = (xBC[..., d_in + i * G * N: d_in + (i + 1) * G * N].reshape(batch, seqlen, G, N)
                          for i in range(4))
    dt_f = _softplus(dt[..., :H] + w["dt_bias"])  # one dt_bias for both directions
    dt_b = _softplus(dt[..., H:] + w["dt_bias"])
    A = -torch.exp(w["A_log"])
    diag = x @ w["fc_D.weight"].T + w["D"]
    y = ssd_oracle(x.reshape(batch, seqlen, H, headdim), dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, ids)
    y = y.reshape(batch, seqlen, d_in)
    # Gated RMSNorm over all d_in channels: normalize, then gate.
    y = y / torch.sqrt((y * y).mean(-1, keepdim=True) + 1e-5) * w["norm.weight"] * _silu(z)
    return y @ w["out_proj.weight"].T + w.get("out_proj.bias", 0.0)


def module_oracle(mixer, u, seq_idx=None) -> torch.Tensor:
    """`mixer_oracle` with the weights and sizes of a mixer module (its parameter names are the checkpoints')."""
    weights = dict(mixer.named_parameters())
    return mixer_oracle(u, weights, mixer.headdim, mixer.ngroups, mixer.d_state, seq_idx)
