"""The paper's matrix mixers as sequence mixers of the Hydra model (Hwang et al. 2024, §5; the authors' code:
github.com/goombalab/hydra, `hydra/modules/matrix_mixer.py`), with the authors' parameter names.

For u (batch, L, d), d_in = expand * d, H = d_in / headdim heads, N = H * qk_dim:
1. [z | stream | dt] = in_proj(u); the stream's channels depend on the family (`stream_layout`).
2. stream = depthwise non-causal conv (kernel d_conv, bias); SiLU on all of it, except on q and k of the
   vandermonde, cauchy and attention dd mixers (raw conv outputs there).
3. y = std * M v + v per head with the family's M (`matrix_mixer_families.py`); quasiseparable: the bidirectional
   SSD y = M x with M[t, t] = fc_D(x)[t] + D and no identity term.
4. out = out_proj(RMSNormGated(y, z)), normalize then gate.

Padding and packing: the conv input is zeroed at pads and the conv stops at sequence boundaries (`plan.conv`); the
family runs on one sequence per row (`sequence_rows.py`) with v zero at pads, so every sequence gets its stand-alone
output whatever the padding (amount, side, non-finite values) and packing of the batch. The authors' code has no
mask: it lets pads reach real tokens in every family.
"""


import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .hydra_mixer import HydraRMSNormGated, init_ssm_parameters
from .matrix_mixer_families import FAMILIES, check_length
from .sequence_rows import SequenceRows

# The families whose q and k skip the SiLU after the convolution (the authors' wrapper applies it to v only).
RAW_QK = ("vandermonde", "cauchy", "attention")


def stream_layout(family: str, data_dependent: bool, d_inner: int, nheads: int, qk_dim: int) -> dict:
    """The convolved channels of a family, in order: name -> width (the in_proj rows after z)."""
    if not data_dependent or family == "dense":
        return {"v": d_inner}
    if family == "toeplitz":
        return {"v": d_inner, "f": nheads, "r": nheads}
    return {"v": d_inner, "q": nheads * qk_dim, "k": nheads * qk_dim}


class QuasiseparableMatrix(nn.Module):
    """The quasiseparable matrix mixer: Hydra's bidirectional SSD (§5.3) with one B and one C shared by both
    directions and all heads (N = nheads * qk_dim).

    dd: B, C from the convolved input, dt_f, dt_b from in_proj. di: B[s] = BC[s, :N], C[t] = BC[t, N:] learned per
    position (max_len rows) and a constant step softplus(dt_bias). The diagonal is fc_D(x) + D.
    """

    def __init__(self, config, nheads: int, d_inner: int, max_len: int, data_dependent: bool):
        super().__init__()
        self.config = config
        self.nheads = nheads
        self.max_len = max_len
        self.data_dependent = data_dependent
        self.d_state = nheads * config.qk_dim
        self.dt_bias = nn.Parameter(torch.empty(nheads))
        self.A_log = nn.Parameter(torch.empty(nheads))
        self.D = nn.Parameter(torch.empty(nheads))
        self.fc_D = nn.Linear(d_inner, nheads, bias=False)
        if not data_dependent:
            self.BC = nn.Parameter(torch.empty(max_len, 2 * self.d_state))  # (max_len, 2N): [B | C]

    def reset_parameters(self):
        """Hydra's init of A_log (A = -1), D (1) and dt_bias (softplus^-1 of a log-uniform dt); BC xavier-normal."""
        if not self.data_dependent:
            nn.init.xavier_normal_(self.BC)
        init_ssm_parameters(self.A_log, self.D, self.dt_bias, self.config)

    def forward(self, x, B, C, dt, rows: SequenceRows | None, plan):
        """x: (batch, L, d_inner) zero at pads; dd: B, C (batch, L, N), dt (batch, L, 2 nheads), rows None; di: B,
        C, dt None and `rows` for the positions inside each sequence -> y (batch, L, nheads, headdim)."""
        batch, seqlen, _ = x.shape
        H = self.nheads
        if not self.data_dependent:
            check_length("quasiseparable", rows.width, self.max_len)
            BC = self.BC.to(x.dtype)[rows.position.clamp(max=self.max_len - 1)]  # (batch, L, 2N), per-sequence
            B, C = BC.split(self.d_state, dim=-1)
            dt = F.softplus(self.dt_bias.to(x.dtype)).repeat(2).expand(batch, seqlen, 2 * H)
        else:
            dt = F.softplus(dt + self.dt_bias.repeat(2))
        dt = plan.mask_padding(dt)  # a step of 0 at pads: decay 1 and no input
        dt_f, dt_b = dt.chunk(2, dim=-1)  # (batch, L, nheads) each
        A = -torch.exp(self.A_log.to(plan.compute_dtype))  # (nheads,)
        diag = self.fc_D(x) + self.D  # (batch, L, nheads)
        B = B.reshape(batch, seqlen, 1, self.d_state)
        C = C.reshape(batch, seqlen, 1, self.d_state)
        return plan.ssd(x.reshape(batch, seqlen, H, -1), dt_f, dt_b, A, B, C, B, C, diag)


# The modules holding a family's own parameters (initialized by their `reset_parameters`).
MATRIX_MODULES = (*FAMILIES.values(), QuasiseparableMatrix)


class MatrixMixer(nn.Module):
    """A sequence mixer y = M(u) v from the paper's framework: `config.matrix_mixer_type` picks the family
    ("dense", "toeplitz", "vandermonde", "cauchy", "low_rank", "attention", "quasiseparable"),
    `config.is_data_dependent` whether M is computed from the input, `config.qk_dim` the q/k width per head and
    `config.max_position_embeddings` the length of data-independent matrices. Keys as the authors':
    in_proj, conv1d, matrix_mixer.*, norm, out_proj.
    """

    honours_boundaries = True  # every family runs on one sequence per row

    def __init__(self, config, layer_idx: int = 0):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.family = config.matrix_mixer_type
        self.data_dependent = config.is_data_dependent
        self.hidden_size = config.hidden_size
        self.d_inner = config.expand * config.hidden_size
        self.headdim = config.headdim
        self.nheads = self.d_inner // config.headdim
        max_len = config.max_position_embeddings
        qk_dim = config.qk_dim
        if self.family == "quasiseparable":
            self.matrix_mixer = QuasiseparableMatrix(config, self.nheads, self.d_inner, max_len, self.data_dependent)
            n = self.nheads * qk_dim
            self.stream = {"v": self.d_inner, "B": n, "C": n} if self.data_dependent else {"v": self.d_inner}
            extra = 2 * self.nheads if self.data_dependent else 0  # [dt_f | dt_b], not convolved
        else:
            self.matrix_mixer = FAMILIES[self.family](self.nheads, max_len, qk_dim, self.data_dependent)
            self.stream = stream_layout(self.family, self.data_dependent, self.d_inner, self.nheads, qk_dim)
            extra = 0
        self.conv_dim = sum(self.stream.values())
        self.extra = extra
        self.silu_all = not (self.data_dependent and self.family in RAW_QK)
        self.in_proj = nn.Linear(self.hidden_size, self.d_inner + self.conv_dim + extra, bias=config.proj_bias)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, kernel_size=config.d_conv, groups=self.conv_dim,
                                padding=config.d_conv // 2, bias=config.conv_bias)
        self.norm = HydraRMSNormGated(self.d_inner, eps=1e-5)
        self.out_proj = nn.Linear(self.d_inner, self.hidden_size, bias=config.proj_bias)

    def forward(self, hidden_states: torch.Tensor, plan) -> torch.Tensor:
        """hidden_states: (batch, seqlen, hidden_size) -> (batch, seqlen, hidden_size)."""
        projected = self.in_proj(hidden_states)  # (batch, seqlen, d_inner + conv_dim + extra)
        if plan.recompute_mixer and torch.is_grad_enabled() and projected.requires_grad:
            y = checkpoint(self._mix, projected, plan, use_reentrant=False)
        else:
            y = self._mix(projected, plan)
        return self.out_proj(y)

    def _mix(self, projected: torch.Tensor, plan) -> torch.Tensor:
        """Conv, matrix mixing and gated norm: (batch, seqlen, in_proj width) -> (batch, seqlen, d_inner)."""
        batch, seqlen, _ = projected.shape
        dtype = projected.dtype
        z, stream, dt = torch.split(projected, [self.d_inner, self.conv_dim, self.extra], dim=-1)
        stream = plan.conv(plan.mask_padding(stream), self.conv1d.weight[:, 0], self.conv1d.bias)
        parts = dict(zip(self.stream, torch.split(stream, list(self.stream.values()), dim=-1)))
        parts = {name: F.silu(t) if self.silu_all or name == "v" else t for name, t in parts.items()}
        compute = plan.compute_dtype
        if self.family == "quasiseparable" and self.data_dependent:  # plan.ssd keeps the sequences apart
            y = self.matrix_mixer(plan.mask_padding(parts["v"]), parts["B"], parts["C"], dt, None, plan)
            return self.norm(y.reshape(batch, seqlen, self.d_inner), z, compute)
        rows = plan.sequence_rows(batch, seqlen, projected.device)
        if self.family == "quasiseparable":  # di: B, C by the position inside each sequence
            y = self.matrix_mixer(plan.mask_padding(parts["v"]), None, None, None, rows, plan)
            return self.norm(y.reshape(batch, seqlen, self.d_inner), z, compute)

        H = self.nheads
        keep = rows.keep
        grouped = {}
        for name, t in parts.items():
            t = rows.gather(t.to(compute))  # zero at pads
            grouped[name] = t.reshape(t.shape[0], t.shape[1], H, -1)  # (rows, width, nheads, channels per head)
        v = grouped["v"]
        if self.family == "toeplitz":
            f = grouped["f"][..., 0] if self.data_dependent else None
            r = grouped["r"][..., 0] if self.data_dependent else None
            mixed = self.matrix_mixer(v, f, r, keep)
        else:
            mixed = self.matrix_mixer(v, grouped.get("q"), grouped.get("k"), keep)
        y = rows.scatter((mixed + v).reshape(v.shape[0], v.shape[1], self.d_inner))  # (batch, seqlen, d_inner)
        return self.norm(y.to(dtype), z, compute)
