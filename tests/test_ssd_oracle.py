"""The chunked SSD and the Hydra mixer against the materialized quasiseparable matrix of HYDRA_SPEC §1 (float64).

The oracle below is written from the spec's formulas with explicit loops and products; it shares no code with
the package.
"""

import math

import pytest
import torch

from conftest import tiny_config, run_mixer
from modeling_hydra.execution_plan import build_execution_plan
from modeling_hydra.hydra_mixer import HydraMixer
from modeling_hydra.ssd_torch import ssd_bidirectional_torch

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: threads only contend

TOL = 1e-10


def materialized_matrix(dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag):
    """The quasiseparable M of spec §1, (batch, nheads, seqlen, seqlen), by explicit products.

    M[t, s] = (C_f[t-1] . B_f[s]) prod_{k=s+1..t-1} a^f_k dt_f[s]   for s < t
    M[t, s] = (C_b[t+1] . B_b[s]) prod_{k=t+1..s-1} a^b_k dt_b[s]   for s > t
    M[t, t] = diag[t],   with a_k = exp(dt[k] A) and head h reading group h * G // H of B and C.
    """
    batch, seqlen, nheads = dt_f.shape
    ngroups = B_f.shape[2]
    M = torch.zeros(batch, nheads, seqlen, seqlen, dtype=torch.float64)
    for b in range(batch):
        for h in range(nheads):
            g = h * ngroups // nheads
            a_f = [math.exp(float(dt_f[b, k, h]) * float(A[h])) for k in range(seqlen)]
            a_b = [math.exp(float(dt_b[b, k, h]) * float(A[h])) for k in range(seqlen)]
            for t in range(seqlen):
                for s in range(seqlen):
                    if s < t:
                        decay = math.prod(a_f[k] for k in range(s + 1, t))
                        M[b, h, t, s] = float(C_f[b, t - 1, g] @ B_f[b, s, g]) * decay * float(dt_f[b, s, h])
                    elif s > t:
                        decay = math.prod(a_b[k] for k in range(t + 1, s))
                        M[b, h, t, s] = float(C_b[b, t + 1, g] @ B_b[b, s, g]) * decay * float(dt_b[b, s, h])
                    else:
                        M[b, h, t, t] = float(diag[b, t, h])
    return M


def apply_matrix(M, x):
    """y[b, t, h, :] = sum_s M[b, h, t, s] x[b, s, h, :]."""
    return torch.einsum("bhts,bshp->bthp", M, x)


def random_ssd_inputs(batch, seqlen, nheads, headdim, ngroups, d_state, seed=0):
    """Non-trivial float64 inputs: positive steps of varied size, A in (-3, -0.1), diagonal of both signs."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)
    x = rand(batch, seqlen, nheads, headdim)
    dt_f = torch.nn.functional.softplus(rand(batch, seqlen, nheads))
    dt_b = torch.nn.functional.softplus(rand(batch, seqlen, nheads))
    A = -(0.1 + 2.9 * torch.rand(nheads, generator=g, dtype=torch.float64))
    B_f, C_f, B_b, C_b = (rand(batch, seqlen, ngroups, d_state) for _ in range(4))
    diag = rand(batch, seqlen, nheads)
    return x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag


@pytest.mark.parametrize("ngroups", [1, 2])
def test_chunked_ssd_matches_materialized_matrix(ngroups):
    x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag = random_ssd_inputs(2, 13, 4, 3, ngroups, 5)
    expected = apply_matrix(materialized_matrix(dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag), x)
    assert expected.abs().max() > 1.0  # the test inputs are not degenerate
    # chunk 1, divisors and non-divisors of L = 13, L itself and chunk > L
    for chunk_size in (1, 2, 4, 5, 13, 16, 64):
        y = ssd_bidirectional_torch(x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, chunk_size)
        assert y.shape == x.shape and y.dtype == torch.float64
        err = (y - expected).abs().max().item()
        assert err < TOL, f"chunk_size={chunk_size}: max abs error {err:.3e}"


def test_oracle_detects_a_missing_shift():
    """The oracle distinguishes C[t] from the spec's C_f[t-1] / C_b[t+1] (so the comparison above can fail)."""
    x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag = random_ssd_inputs(1, 9, 2, 2, 1, 3, seed=1)
    shifted = apply_matrix(materialized_matrix(dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag), x)
    unshifted_C_f = torch.roll(C_f, 1, dims=1)  # materialized_matrix reads C_f[t-1]: this feeds it C_f[t]
    wrong = apply_matrix(materialized_matrix(dt_f, dt_b, A, B_f, unshifted_C_f, B_b, C_b, diag), x)
    assert (shifted - wrong).abs().max() > 1e-2
    y = ssd_bidirectional_torch(x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, 4)
    assert (y - shifted).abs().max() < TOL


def test_chunked_ssd_gradcheck():
    inputs = random_ssd_inputs(2, 5, 2, 2, 2, 2, seed=2)
    inputs = tuple(t.clone().requires_grad_(True) for t in inputs)
    for chunk_size in (2, 8):
        assert torch.autograd.gradcheck(
            lambda *args: ssd_bidirectional_torch(*args, chunk_size), inputs, eps=1e-6, atol=1e-8

        )


# ----------------------------------------------------------------------------------------------------------
# The whole mixer (spec §1 steps 1-8) re-implemented independently, in float64.


def silu(v):
    return v / (1.0 + torch.exp(-v))


def softplus(v):
    return torch.log1p(torch.exp(v))


def reference_mixer(mixer, u):
    """Spec §1 for u: (batch, seqlen, d) with the mixer's weights, through the materialized matrix."""
    batch, seqlen, _ = u.shape
    d_in, H, P, G, N = mixer.d_inner, mixer.nheads, mixer.headdim, mixer.ngroups, mixer.d_state
    W_in, W_out = mixer.in_proj.weight.detach(), mixer.out_proj.weight.detach()
    conv_w, conv_b = mixer.conv1d.weight.detach()[:, 0], mixer.conv1d.bias.detach()  # (channels, K), (channels,)
    K = conv_w.shape[1]

    zxbcdt = u @ W_in.T  # step 1
    z, xBC, dt = zxbcdt[..., :d_in], zxbcdt[..., d_in:2 * d_in + 4 * G * N], zxbcdt[..., 2 * d_in + 4 * G * N:]
    conv = conv_b.expand(batch, seqlen, -1).clone()  # step 2: non-causal depthwise conv, zero padding K // 2
    for t in range(seqlen):
        for j in range(K):
            src = t + j - K // 2
            if 0 <= src < seqlen:
                conv[:, t] += conv_w[:, j] * xBC[:, src]
    xBC = silu(conv)
    x = xBC[..., :d_in]
    B_f, C_f, B_b, C_b = (xBC[..., d_in + i * G * N: d_in + (i + 1) * G * N].reshape(batch, seqlen, G, N)
                          for i in range(4))
    dt_bias = mixer.dt_bias.detach()
    dt_f = softplus(dt[..., :H] + dt_bias)  # step 3
    dt_b = softplus(dt[..., H:] + dt_bias)
    A = -torch.exp(mixer.A_log.detach())
    diag = x @ mixer.fc_D.weight.detach().T + mixer.D.detach()  # step 6
    M = materialized_matrix(dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag)  # steps 4-6
    y = apply_matrix(M, x.reshape(batch, seqlen, H, P)).reshape(batch, seqlen, d_in)
    y = y / torch.sqrt((y * y).mean(-1, keepdim=True) + 1e-5) * mixer.norm.weight.detach() * silu(z)  # step 7
    return y @ W_out.T  # step 8


def perturbed_mixer(**overrides):
    mixer = HydraMixer(tiny_config(**overrides)).double()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in mixer.parameters():
            p.normal_(0.0, 0.5, generator=g)
        mixer.A_log.normal_(0.0, 0.7, generator=g)  # A far from -1
        mixer.D.normal_(1.0, 0.5, generator=g)
        mixer.norm.weight.normal_(1.0, 0.3, generator=g)
    return mixer


@pytest.mark.parametrize("ngroups", [1, 2])
def test_mixer_matches_independent_reference(ngroups):
    mixer = perturbed_mixer(hidden_size=8, headdim=4, ngroups=ngroups, d_state=3, d_conv=5)  # 4 heads
    u = torch.randn(2, 11, 8, dtype=torch.float64)
    expected = reference_mixer(mixer, u)
    assert expected.abs().max() > 0.1
    outputs = []
    for chunk_size in (1, 3, 4, 11, 32):
        mixer.chunk_size = chunk_size
        with torch.no_grad():
            out = run_mixer(mixer, u)
        err = (out - expected).abs().max().item()
        assert err < TOL, f"chunk_size={chunk_size}: max abs error {err:.3e}"
        outputs.append(out)
    spread = max((o - outputs[0]).abs().max().item() for o in outputs)
    assert spread < TOL, f"results depend on chunk_size (spread {spread:.3e})"


def test_mixer_gradcheck():
    mixer = perturbed_mixer(hidden_size=4, headdim=4, ngroups=1, d_state=2, d_conv=3, chunk_size=2)  # 2 heads
    names = [n for n, _ in mixer.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in mixer.parameters())
    u = torch.randn(1, 5, 4, dtype=torch.float64, requires_grad=True)
    plan = build_execution_plan(mixer.config, batch=1, seqlen=5, device=u.device, dtype=u.dtype, training=False,
                                gradient_checkpointing=False)

    def run(u, *flat_params):
        return torch.func.functional_call(mixer, dict(zip(names, flat_params)), (u, plan))

    assert torch.autograd.gradcheck(run, (u, *params), eps=1e-6, atol=1e-7)
