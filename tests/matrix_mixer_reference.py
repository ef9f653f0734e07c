"""An independent float64 reference of the paper's matrix mixers, for one sequence alone: every matrix materialized
entry by entry from the formulas of the authors' code (github.com/goombalab/hydra, hydra/modules/matrix_mixer.py and
hydra/modules/matrix_mixers/*.py), and the plan helper of the mixer tests.
"""

import math

import torch
import torch.nn.functional as F

from modeling_hydra.execution_plan import build_execution_plan

OMEGA = 2 * math.pi * 1e-3


def make_plan(mixer, batch, seqlen, dtype=torch.float64, attention_mask=None, packed_ids=None, training=False):
    """The model's execution plan for a mixer's config and these inputs."""
    return build_execution_plan(mixer.config, batch=batch, seqlen=seqlen, device=torch.device("cpu"), dtype=dtype,
                                training=training, gradient_checkpointing=False, attention_mask=attention_mask,
                                packed_ids=packed_ids)


def toeplitz_official(v, c, max_len):
    """The authors' recipe (in float64): L - 1 zeros put before v, circular convolution of length 2 max_len - 1 with
    c by FFT, first max_len outputs. v: (max_len, P) one head; c: (2 max_len - 1,)."""
    n = 2 * max_len - 1
    padded = F.pad(v.T, (max_len - 1, 0))  # (P, 2 max_len - 1)
    out = torch.fft.ifft(torch.fft.fft(padded, n=n) * torch.fft.fft(c, n=n), n=n).real
    return out[:, :max_len].T


def family_matrices(mixer, parts, L):
    """Per head the (L, L) matrix applied to v (identity term included for every family but quasiseparable)."""
    family, dd, H = mixer.family, mixer.data_dependent, mixer.nheads
    mm = mixer.matrix_mixer
    Lmax = mm.max_len
    t = torch.arange(L, dtype=torch.float64)[:, None]  # output position (column vector)
    s = torch.arange(L, dtype=torch.float64)[None, :]  # input position (row vector)
    lag_index = ((t - s).long() + Lmax) % (2 * Lmax - 1)  # Toeplitz: M[t, s] = c[(t - s + Lmax) mod (2 Lmax - 1)]
    Ms = []
    for h in range(H):
        if family == "dense":
            M = mm.M[h, :L, :L].double() / math.sqrt(Lmax)
        elif family == "toeplitz":
            if dd:
                f = torch.zeros(Lmax, dtype=torch.float64)
                r = torch.zeros(Lmax, dtype=torch.float64)
                f[:L], r[:L] = parts["f"][:, h], parts["r"][:, h]
                c = torch.cat([r[1:].flip(0), f])
            else:
                c = mm.conv_params[h].double()
            M = c[lag_index] * 0.5 / math.sqrt(Lmax)
        elif family == "vandermonde" and not dd:
            M = mm.dft_matrix[:L, :L].double() / math.sqrt(Lmax)
        else:
            if dd:
                qk = parts["q"].shape[1] // H
                q = parts["q"][:, h * qk:(h + 1) * qk]  # (L, qk)
                k = parts["k"][:, h * qk:(h + 1) * qk]
            elif family == "attention":  # read as (head, position, qk)
                qk = mm.q_matrix.shape[-1]
                q, k = mm.q_matrix[h, :L].double(), mm.k_matrix[h, :L].double()
            else:
                qk = mm.q_matrix.shape[-1]
                q, k = mm.q_matrix[:L, h].double(), mm.k_matrix[:L, h].double()
            qt, ks = q[:, None, :], k[None, :, :]  # (L, 1, qk) at t, (1, L, qk) at s
            if family == "vandermonde":
                M = (torch.cos(OMEGA * qt * s[..., None]) - torch.cos(OMEGA * ks * t[..., None])).sum(-1)
                M = M / math.sqrt(2 * Lmax * qk)
            elif family == "cauchy":
                bias = mm.bias.double() if dd else 0.0
                M = (1.0 / (torch.exp(qt) + bias + torch.exp(ks) + bias + 1e-8)).sum(-1) / math.sqrt(Lmax * qk)
            elif family == "low_rank":
                M = (qt * ks).sum(-1) / math.sqrt(Lmax * qk)
            else:
                M = torch.softmax((qt * ks).sum(-1) / math.sqrt(qk), dim=-1)
        Ms.append(M + torch.eye(L, dtype=torch.float64))
    return Ms


def quasiseparable_matrices(mixer, parts, dt, L):
    """Per head the quasiseparable (L, L) matrix: the shifted forward and backward scans and the diagonal."""
    mm, H = mixer.matrix_mixer, mixer.nheads
    N = mm.d_state
    if mixer.data_dependent:
        B, C = parts["B"], parts["C"]
        dt = F.softplus(dt + mm.dt_bias.double().repeat(2))
    else:
        B, C = mm.BC[:L, :N].double(), mm.BC[:L, N:].double()
        dt = F.softplus(mm.dt_bias.double()).repeat(2).expand(L, 2 * H)
    dt_f, dt_b = dt[:, :H], dt[:, H:]
    A = -torch.exp(mm.A_log.double())
    diag = parts["v"] @ mm.fc_D.weight.double().T + mm.D.double()  # (L, H)
    zero = torch.zeros(1, N, dtype=torch.float64)
    C_prev = torch.cat([zero, C[:-1]])  # row t reads C[t - 1] (forward) and C[t + 1] (backward)
    C_next = torch.cat([C[1:], zero])
    t = torch.arange(L)[:, None]
    s = torch.arange(L)[None, :]
    Ms = []
    for h in range(H):
        log_f = torch.cumsum(torch.log(torch.exp(dt_f[:, h] * A[h])), 0)  # sum_{k <= i} log a_k
        log_b = torch.cumsum(torch.log(torch.exp(dt_b[:, h] * A[h])), 0)
        # prod_{k = s+1}^{t-1} a^f_k (s < t) and prod_{k = t+1}^{s-1} a^b_k (s > t)
        decay_f = torch.exp(log_f[(t - 1).clamp(min=0)] - log_f[s])
        decay_b = torch.exp(log_b[(s - 1).clamp(min=0)] - log_b[t])
        lower = (C_prev @ B.T) * decay_f * dt_f[:, h][None, :]
        upper = (C_next @ B.T) * decay_b * dt_b[:, h][None, :]
        M = torch.where(s < t, lower, 0.0) + torch.where(s > t, upper, 0.0) + torch.diag(diag[:, h])
        Ms.append(M)
    return Ms


def reference_mixer(mixer, u):
    """The mixer's output for one sequence u (L, hidden_size) alone, float64, from materialized matrices."""
    L = u.shape[0]
    u = u.double()
    d_in, H, P = mixer.d_inner, mixer.nheads, mixer.headdim
    proj = u @ mixer.in_proj.weight.double().T
    z, stream, dt = proj[:, :d_in], proj[:, d_in:d_in + mixer.conv_dim], proj[:, d_in + mixer.conv_dim:]
    K = mixer.conv1d.weight.shape[-1]
    stream = F.conv1d(stream.T.unsqueeze(0), mixer.conv1d.weight.double(), mixer.conv1d.bias.double(),
                      padding=K // 2, groups=mixer.conv_dim)[0].T  # (L, conv_dim)
    widths = list(mixer.stream.values())
    parts = dict(zip(mixer.stream, stream.split(widths, dim=-1)))
    raw_qk = mixer.data_dependent and mixer.family in ("vandermonde", "cauchy", "attention")
    parts = {n: (t if raw_qk and n in ("q", "k") else F.silu(t)) for n, t in parts.items()}
    if mixer.family == "quasiseparable":
        Ms = quasiseparable_matrices(mixer, parts, dt, L)
    else:
        Ms = family_matrices(mixer, parts, L)
    v = parts["v"]
    y = torch.cat([Ms[h] @ v[:, h * P:(h + 1) * P] for h in range(H)], dim=-1)  # (L, d_in)
    y = y / torch.sqrt((y * y).mean(-1, keepdim=True) + 1e-5) * mixer.norm.weight.double() * F.silu(z)
    return y @ mixer.out_proj.weight.double().T
