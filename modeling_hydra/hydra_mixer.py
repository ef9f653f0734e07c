"""The Hydra sequence mixer: projections, non-causal convolution, bidirectional SSD and gated RMSNorm."""

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint



def init_ssm_parameters(A_log, D, dt_bias, config) -> None:
    """The original initialization of A_log (A = -1), D (1) and dt_bias (softplus^-1 of a dt drawn log-uniformly in
    [config.dt_min, config.dt_max], floored at config.dt_init_floor); dt_bias is kept when already loaded."""
    nn.init.zeros_(A_log)
    nn.init.ones_(D)
    if getattr(dt_bias, "_is_hf_initialized", False):
        return
    with torch.no_grad():
        dt = torch.exp(torch.rand(dt_bias.shape, device=dt_bias.device, dtype=torch.float32)
                       * (math.log(config.dt_max) - math.log(config.dt_min)) + math.log(config.dt_min))
        dt = dt.clamp(min=config.dt_init_floor)
        dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)


class HydraRMSNormGated(nn.Module):
    """RMSNorm that normalizes first and gates second: `y / rms(y) * weight * silu(z)`, eps 1e-5,
    over all d_inner channels.

    Not transformers' `MambaRMSNormGated`, which gates before normalizing.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor, gate: torch.Tensor, compute: torch.dtype) -> torch.Tensor:
        """hidden_states, gate: (..., hidden_size); accumulates in `compute` (the plan's compute dtype)."""
        dtype = hidden_states.dtype
        y = hidden_states.to(compute)  # (..., hidden_size)
        # 1 / rms from one reduction (F.rms_norm runs as five kernels on CPU); (..., 1)
        inv_rms = (torch.linalg.vector_norm(y, dim=-1, keepdim=True).square() / y.shape[-1] + self.eps).rsqrt()
        gated = F.silu(gate.to(compute))
        if torch.is_grad_enabled() and (y.requires_grad or gate.requires_grad or self.weight.requires_grad):
            return (gated * self.weight.to(compute) * y * inv_rms).to(dtype)
        return gated.mul_(self.weight.to(compute)).mul_(y).mul_(inv_rms).to(dtype)  # in place (inference)


class HydraMixer(nn.Module):
    """Hydra: a bidirectional Mamba-2 mixer whose sequence mixing is a quasiseparable matrix.

    For a sequence u (L, d), with d_in = expand * d, H = d_in / headdim heads and G groups of d_state:
    1. [z | xBC | dt] = in_proj(u), widths d_in | d_in + 4 G d_state | 2 H; xBC = [x | B_f | C_f | B_b | C_b].
    2. xBC = SiLU(depthwise_conv(xBC)): kernel d_conv, non-causal (zero padding d_conv // 2 on both sides), bias.
    3. dt_f, dt_b = softplus(dt + dt_bias) (one dt_bias for both directions), A = -exp(A_log).
    4.-6. y = M x per head with the quasiseparable M of `ssd_torch.py`: a forward scan that reads C_f[t-1], a
       backward scan that reads C_b[t+1], and the diagonal fc_D(x)[t] + D.
    7. Gated RMSNorm, normalize then gate: y / rms(y) * weight * SiLU(z).
    8. out = out_proj(y).

    Padding-invariant: on the padded path the convolution input and the SSD inputs `x` and `dt` are set to zero at
    padded positions (selected, so non-finite values there cannot leak), so real tokens see exactly what they would
    see without padding. On rows of several sequences (padding-free and packed rows), the convolution and both scans
    stop at sequence boundaries, so each sequence gets its stand-alone output.
    """

    honours_boundaries = True

    def __init__(self, config, layer_idx: int = 0):
        super().__init__()
        self.layer_idx = layer_idx
        self.hidden_size = config.hidden_size
        self.d_inner = config.expand * config.hidden_size
        self.headdim = config.headdim
        self.nheads = self.d_inner // config.headdim
        self.ngroups = config.ngroups
        self.d_state = config.d_state
        self.dt_limit = tuple(config.dt_limit)
        self.conv_dim = self.d_inner + 4 * self.ngroups * self.d_state
        self.config = config

        # [z | x B_f C_f B_b C_b | dt_f dt_b]
        self.in_proj = nn.Linear(self.hidden_size, self.d_inner + self.conv_dim + 2 * self.nheads,
                                 bias=config.proj_bias)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, kernel_size=config.d_conv, groups=self.conv_dim,
                                padding=config.d_conv // 2, bias=config.conv_bias)
        self.dt_bias = nn.Parameter(torch.empty(self.nheads))
        self.A_log = nn.Parameter(torch.empty(self.nheads))
        self.D = nn.Parameter(torch.empty(self.nheads))
        self.fc_D = nn.Linear(self.d_inner, self.nheads, bias=False)
        self.norm = HydraRMSNormGated(self.d_inner, eps=1e-5)
        self.out_proj = nn.Linear(self.d_inner, self.hidden_size, bias=config.proj_bias)

    def reset_ssm_parameters(self):
        init_ssm_parameters(self.A_log, self.D, self.dt_bias, self.config)

    def forward(self, hidden_states: torch.Tensor, plan) -> torch.Tensor:
        """hidden_states: (batch, seqlen, hidden_size); plan: the forward's `ExecutionPlan` (layout, SSD, recompute)."""
        zxbcdt = self.in_proj(hidden_states)  # (batch, seqlen, d_inner + conv_dim + 2 * nheads)
        if plan.recompute_mixer and zxbcdt.requires_grad:
            y = checkpoint(self._mix, zxbcdt, plan, use_reentrant=False)
        else:
            y = self._mix(zxbcdt, plan)
        return self.out_proj(y)

    def _mix(self, zxbcdt, plan) -> torch.Tensor:
        """Convolution, bidirectional SSD and gated norm: (batch, seqlen, in_proj width) -> (batch, seqlen, d_inner)."""
        batch, seqlen, _ = zxbcdt.shape
        H, P, G, N = self.nheads, self.headdim, self.ngroups, self.d_state
        z, xBC, dt = torch.split(zxbcdt, [self.d_inner, self.conv_dim, 2 * H], dim=-1)
        xBC = F.silu(plan.conv(plan.mask_padding(xBC), self.conv1d.weight[:, 0], self.conv1d.bias))  # (b, L, conv)
        x, B_f, C_f, B_b, C_b = torch.split(xBC, [self.d_inner, G * N, G * N, G * N, G * N], dim=-1)

        dt = F.softplus(dt + self.dt_bias.repeat(2))  # (batch, seqlen, 2 * nheads): [dt_f | dt_b]
        if self.dt_limit != (0.0, float("inf")):
            dt = dt.clamp(*self.dt_limit)
        x, dt = plan.mask_padding(x), plan.mask_padding(dt)
        dt_f, dt_b = dt.chunk(2, dim=-1)  # (batch, seqlen, nheads) each

        A = -torch.exp(self.A_log.to(plan.compute_dtype))  # (nheads,)
        diag = self.fc_D(x) + self.D  # (batch, seqlen, nheads)
        y = plan.ssd(
            x.reshape(batch, seqlen, H, P), dt_f, dt_b, A,
            B_f.reshape(batch, seqlen, G, N), C_f.reshape(batch, seqlen, G, N),
            B_b.reshape(batch, seqlen, G, N), C_b.reshape(batch, seqlen, G, N), diag,
        )  # (batch, seqlen, nheads, headdim)
        return self.norm(y.reshape(batch, seqlen, self.d_inner), z, plan.compute_dtype)
