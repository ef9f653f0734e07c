"""The chunked SSD and the Hydra mixer against the float64 oracle of ssd_oracle.py (the materialized quasiseparable
matrix), and the oracle itself against the matrix entries written as explicit loops and products."""

import math

import pytest
import torch

from conftest import tiny_config, run_mixer
from modeling_hydra.execution_plan import build_execution_plan
from modeling_hydra.hydra_mixer import HydraMixer
from modeling_hydra.ssd_torch import ssd_bidirectional_torch
from packing_helpers import ids_from_lengths, spans
from ssd_oracle import apply_matrix, module_oracle, quasiseparable_matrix, random_ssd_inputs, ssd_oracle

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: threads only contend

TOL = 1e-10


def matrix_by_loops(dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, seq_idx):
    """M entry by entry from the paper's products (arXiv 2407.09941, Sec. 3), zero across sequences:

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
                    if seq_idx[b, t] != seq_idx[b, s]:
                        continue
                    if s < t:
                        decay = math.prod(a_f[k] for k in range(s + 1, t))
                        M[b, h, t, s] = float(C_f[b, t - 1, g] @ B_f[b, s, g]) * decay * float(dt_f[b, s, h])
                    elif s > t:
                        decay = math.prod(a_b[k] for k in range(t + 1, s))
                        M[b, h, t, s] = float(C_b[b, t + 1, g] @ B_b[b, s, g]) * decay * float(dt_b[b, s, h])
                    else:
                        M[b, h, t, t] = float(diag[b, t, h])
    return M


@pytest.mark.parametrize("ngroups", [1, 2])
@pytest.mark.parametrize("lengths", [[13], [1, 5, 2, 4, 1]], ids=["one sequence", "packed"])
def test_oracle_matrix_equals_the_products_entry_by_entry(ngroups, lengths):
    inputs = random_ssd_inputs(2, sum(lengths), 4, 3, ngroups, 5, seed=5)
    seq_idx = ids_from_lengths(lengths).expand(2, -1)
    expected = matrix_by_loops(*inputs[1:], seq_idx)
    M = quasiseparable_matrix(*inputs[1:], seq_idx=seq_idx if len(lengths) > 1 else None)
    assert (M - expected).abs().max() <= 1e-13 * expected.abs().max()


@pytest.mark.parametrize("ngroups", [1, 2])
def test_chunked_ssd_matches_materialized_matrix(ngroups):
    x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag = random_ssd_inputs(2, 13, 4, 3, ngroups, 5)
    expected = ssd_oracle(x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag)
    assert expected.abs().max() > 1.0  # the test inputs are not degenerate
    # chunk 1, divisors and non-divisors of L = 13, L itself and chunk > L
    for chunk_size in (1, 2, 4, 5, 13, 16, 64):
        y = ssd_bidirectional_torch(x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, chunk_size)
        assert y.shape == x.shape and y.dtype == torch.float64
        err = (y - expected).abs().max().item()
        assert err < TOL, f"chunk_size={chunk_size}: max abs error {err:.3e}"


def test_oracle_detects_a_missing_shift():
    """The oracle distinguishes C[t] from the shifted C_f[t-1] / C_b[t+1] (so the comparison above can fail)."""
    x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag = random_ssd_inputs(1, 9, 2, 2, 1, 3, seed=1)
    shifted = ssd_oracle(x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag)
    unshifted_C_f = torch.roll(C_f, 1, dims=1)  # the oracle reads C_f[t-1]: this feeds it C_f[t]
    wrong = apply_matrix(quasiseparable_matrix(dt_f, dt_b, A, B_f, unshifted_C_f, B_b, C_b, diag), x)
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
# The whole mixer against its float64 oracle


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
    expected = module_oracle(mixer, u)
    assert expected.abs().max() > 0.1
    outputs = []
    for chunk_size in (1, 3, 4, 11, 32):
        mixer.config.chunk_size = chunk_size  # a runtime field: the next plan reads it
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


def test_mixer_oracle_with_sequence_ids_is_each_sequence_alone():
    """The oracle's packed rows (convolution and scans stop at boundaries) against its sequences run one by one."""
    mixer = perturbed_mixer(hidden_size=8, headdim=4, ngroups=2, d_state=3, d_conv=5)
    lengths = [3, 1, 6, 2]
    u = torch.randn(1, sum(lengths), 8, dtype=torch.float64)
    alone = torch.cat([module_oracle(mixer, u[:, s:e]) for s, e in spans(lengths)], dim=1)
    packed = module_oracle(mixer, u, seq_idx=ids_from_lengths(lengths)[None])
    assert (packed - alone).abs().max() <= 1e-13 * alone.abs().max()
    assert (module_oracle(mixer, u) - alone).abs().max() > 1e-2 * alone.abs().max()  # the boundaries matter
