"""An independent float64 reference of the paper's matrix mixers, for one sequence alone: every matrix materialized
entry by entry from the formulas of the authors' code (github.com/goombalab/hydra, hydra/modules/matrix_mixer.py and
hydra/modules/matrix_mixers/*.py), and a stand-in execution plan for the mixer modules.
"""

import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from modeling_hydra.depthwise_conv import depthwise_conv1d
from modeling_hydra.ssd_torch import ssd_bidirectional_torch

OMEGA = 2 * math.pi * 1e-3


class StandInPlan:
    """The execution-plan interface a mixer reads (compute dtype, layout, masking, conv, ssd), for the mixer tests."""

    def __init__(self, dtype, mask=None, seq_idx=None, tracing=False, recompute=False, chunk=4):
        self.compute_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        self.layout = SimpleNamespace(mask=mask, seq_idx=seq_idx)
        self.tracing = tracing
        self.recompute_mixer = recompute
        self.chunk = chunk

    def mask_padding(self, t):
        return t if self.layout.mask is None else torch.where(self.layout.mask.unsqueeze(-1), t, 0.0)

    def conv(self, x, weight, bias):
        return depthwise_conv1d(x, weight, bias, self.layout.seq_idx)

    def ssd(self, x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag):
        return ssd_bidirectional_torch(x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, self.chunk,
                                       seq_idx=self.layout.seq_idx)


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
    Ms = []
    for h in range(H):
        M = torch.zeros(L, L, dtype=torch.float64)
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
            for t in range(L):
                for s in range(L):
                    M[t, s] = c[(t - s + Lmax) % (2 * Lmax - 1)]
            M = M * 0.5 / math.sqrt(Lmax)
        elif family == "vandermonde":
            if dd:
                qk = parts["q"].shape[1] // H
                q = parts["q"][:, h * qk:(h + 1) * qk]
                k = parts["k"][:, h * qk:(h + 1) * qk]
                for t in range(L):
                    for s in range(L):
                        M[t, s] = (torch.cos(OMEGA * q[t] * s) - torch.cos(OMEGA * k[s] * t)).sum()
                M = M / math.sqrt(2 * Lmax * qk)
            else:
                M = mm.dft_matrix[:L, :L].double() / math.sqrt(Lmax)
        elif family in ("cauchy", "low_rank", "attention"):
            if dd:
                qk = parts["q"].shape[1] // H
                q = parts["q"][:, h * qk:(h + 1) * qk]
                k = parts["k"][:, h * qk:(h + 1) * qk]
            elif family == "attention":  # read as (head, position, qk)
                qk = mm.q_matrix.shape[-1]
                q, k = mm.q_matrix[h, :L].double(), mm.k_matrix[h, :L].double()
            else:
                qk = mm.q_matrix.shape[-1]
                q, k = mm.q_matrix[:L, h].double(), mm.k_matrix[:L, h].double()
            for t in range(L):
                for s in range(L):
                    if family == "cauchy":
                        qt = torch.exp(q[t]) + (mm.bias.double() if dd else 0.0)
                        ks = torch.exp(k[s]) + (mm.bias.double() if dd else 0.0)
                        M[t, s] = (1.0 / (qt + ks + 1e-8)).sum() / math.sqrt(Lmax * qk)
                    else:
                        M[t, s] = (q[t] * k[s]).sum()
            if family == "low_rank":
                M = M / math.sqrt(Lmax * qk)
            elif family == "attention":
                M = torch.softmax(M / math.sqrt(qk), dim=-1)
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
    Ms = []
    for h in range(H):
        a_f, a_b = torch.exp(dt_f[:, h] * A[h]), torch.exp(dt_b[:, h] * A[h])
        M = torch.zeros(L, L, dtype=torch.float64)
        for t in range(L):
            for s in range(L):
                if s < t:
                    M[t, s] = (C[t - 1] @ B[s]) * torch.prod(a_f[s + 1:t]) * dt_f[s, h]
                elif s > t:
                    M[t, s] = (C[t + 1] @ B[s]) * torch.prod(a_b[t + 1:s]) * dt_b[s, h]
                else:
                    M[t, s] = diag[t, h]
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
