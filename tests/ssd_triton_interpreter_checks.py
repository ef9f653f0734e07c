"""Checks of the Triton bidirectional SSD in Triton's CPU interpreter, run by test_ssd_triton.py in a child process:
every stage kernel against its torch `_ref` (ssd_triton_references.py), the whole autograd Function (forward and all
nine input gradients) against the torch path in float64, sequence boundaries (seq_idx) against every sequence run
alone through the float64 torch path and against the block-diagonal float64 oracle (ssd_oracle.py), the block sizes
of the sm_80 and sm_90 launch tables, and a model with ssd_backend="triton" against ssd_backend="torch".

TRITON_INTERPRET=1 must be set before `triton` is first imported (triton.language's own jit functions, tl.sum and
tl.cumsum among them, are built then, and transformers imports triton through torch._dynamo), hence the child
process. By hand: `TRITON_INTERPRET=1 python -m pytest -q tests/ssd_triton_interpreter_checks.py`.
"""

import importlib
from types import SimpleNamespace

import pytest
import torch

import ssd_triton_references as refs
from conftest import tiny_config
from modeling_hydra import HydraForMaskedLM
from modeling_hydra.ssd_torch import ssd_bidirectional_torch
from ssd_oracle import ssd_oracle

STAGES = ("ssd_triton_chunk_cumsum", "ssd_triton_chunk_state", "ssd_triton_state_passing", "ssd_triton_chunk_cb",
          "ssd_triton_chunk_scan", "ssd_triton_chunk_state_grad",
          "ssd_triton_chunk_scan_bwd_dx", "ssd_triton_chunk_scan_bwd_dbc", "ssd_triton")


@pytest.fixture(scope="module")
def kernels():
    modules = {name: importlib.import_module(f"modeling_hydra.{name}") for name in STAGES}
    if not modules["ssd_triton"].triton_kernels_interpreted():
        pytest.fail("these checks need TRITON_INTERPRET=1 in the environment before Python starts")
    return SimpleNamespace(**{name.removeprefix("ssd_triton_"): module for name, module in modules.items()})


def rel_rms(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Relative RMS error of `actual` against `expected`, in float64."""
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).pow(2).mean().sqrt() / expected.pow(2).mean().sqrt().clamp_min(1e-30)).item()


EPS32 = torch.finfo(torch.float32).eps  # 2^-23, twice the unit roundoff u of float32


def largest_chunk_decay(dt_f, dt_b, A, chunk_size) -> float:
    """S: the largest in-chunk sum of |A|·dt over batch, chunks, heads and both directions."""
    batch, seqlen, nheads = dt_f.shape
    pad = -seqlen % chunk_size
    sums = [torch.nn.functional.pad(dt.double().abs(), (0, 0, 0, pad)).view(batch, -1, chunk_size, nheads).sum(2)
            for dt in (dt_f, dt_b)]
    return (torch.stack(sums) * A.double().abs()).max().item()


def float32_bound(dt_f, dt_b, A, chunk_size) -> float:
    """Bound on the relative error of a float32 evaluation of the chunked SSD (output and input gradients) against
    exact arithmetic, for which float64 stands (its own error is 2^29 times smaller): EPS32 * (Q + S), Q the chunk
    length and S the largest in-chunk decay (largest_chunk_decay). Two sources, added:
    - every value is a sum over at most Q pair terms per direction (plus the entering state's term), and a float32
      sum of n terms errs by at most n·u times the sum of their magnitudes (Higham, Accuracy and Stability of
      Numerical Algorithms, 2002, §3.1); the two directions together: 2·Q·u = EPS32·Q;
    - every decay factor exp(cum[t] - cum[s]) comes from in-chunk prefix sums of A·dt, each with an absolute
      rounding error of at most u·S, which exp turns into a relative error of the factor: 2·u·S = EPS32·S.
    This is a worst case relative to the sum of magnitudes; on random inputs rounding errors add like a random walk
    (~sqrt(n)·u), which covers the cancellation in the sums (their RMS is ~n^-1/2 of the sum of magnitudes): the
    errors measured here (triton 3.9.0) are 4 to 70 times below the bound."""
    return EPS32 * (chunk_size + largest_chunk_decay(dt_f, dt_b, A, chunk_size))


def ssd_inputs(batch=2, seqlen=19, nheads=4, headdim=4, ngroups=2, d_state=3, pad_from=14, dtype=torch.float32):
    """Random SSD inputs; row 1 is right-padded from `pad_from` the way the mixer pads (dt = 0 and x = 0 there)."""
    x = torch.randn(batch, seqlen, nheads, headdim)
    dt_f, dt_b = torch.rand(batch, seqlen, nheads) + 0.05, torch.rand(batch, seqlen, nheads) + 0.05
    A = -(torch.rand(nheads) + 0.3)
    B_f, C_f, B_b, C_b = (torch.randn(batch, seqlen, ngroups, d_state) for _ in range(4))
    diag = torch.randn(batch, seqlen, nheads)
    if pad_from is not None:
        for t in (x, dt_f, dt_b):
            t[1, pad_from:] = 0
    return [t if t is A else t.to(dtype) for t in (x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag)]


# ---------------------------------------------------------------- stage kernels against their torch references


def stage_tensors(kernels, chunk_size=8, **shape):
    """SSD inputs plus the forward intermediates of both directions, from the Triton stages."""
    x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag = ssd_inputs(**shape)
    cum_f = kernels.chunk_cumsum.chunk_cumsum(dt_f, A, chunk_size, reverse=False)
    cum_b = kernels.chunk_cumsum.chunk_cumsum(dt_b, A, chunk_size, reverse=True)
    enter_f, enter_b = kernels.ssd_triton.entering_states(x, dt_f, dt_b, A, B_f, B_b, cum_f, cum_b, None)
    dy = torch.randn_like(x)
    dstate_f, dstate_b = torch.randn_like(enter_f), torch.randn_like(enter_b)
    return SimpleNamespace(x=x, dt_f=dt_f, dt_b=dt_b, A=A, B_f=B_f, C_f=C_f, B_b=B_b, C_b=C_b, diag=diag, dy=dy,
                           cum_f=cum_f, cum_b=cum_b, enter_f=enter_f, enter_b=enter_b, dstate_f=dstate_f,
                           dstate_b=dstate_b)


def stage_bound(s, chunk_size=8) -> float:
    """Largest relative RMS difference of a stage kernel and its float32 torch `_ref`: each within the float32
    bound of exact arithmetic."""
    return 2 * float32_bound(s.dt_f, s.dt_b, s.A, chunk_size)


@pytest.mark.parametrize("reverse", [False, True])
def test_chunk_cumsum_matches_ref(kernels, reverse):
    _, dt, _, A, *_ = ssd_inputs(seqlen=13)
    stage = kernels.chunk_cumsum
    out = stage.chunk_cumsum(dt, A, 6, reverse)
    assert out.shape == (2, 4, 3, 6)
    assert rel_rms(out, refs.chunk_cumsum_ref(dt, A, 6, reverse)) < 2 * float32_bound(dt, dt, A, 6)


@pytest.mark.parametrize("reverse", [False, True])
def test_chunk_cumsum_bwd_matches_ref(kernels, reverse):
    _, dt, _, A, *_ = ssd_inputs(seqlen=13)
    rowgrad, ddt_exp = torch.randn(2, 4, 3, 6), torch.randn(2, 4, 3, 6)
    rowgrad[..., 2, 1:], ddt_exp[..., 2, 1:] = 0, 0  # past seqlen = 13: zero, as the scan kernels write them
    stage = kernels.chunk_cumsum
    ddt, dA = stage.chunk_cumsum_bwd(dt, A, rowgrad, ddt_exp, reverse)
    ddt_ref, dA_ref = refs.chunk_cumsum_bwd_ref(dt, A, rowgrad, ddt_exp, reverse)
    bound = 2 * float32_bound(dt, dt, A, 6)  # two float32 evaluations, each within the bound of exact
    # dA sums the rows of 26 positions: its terms' errors add up to at most the bound times their magnitudes
    assert rel_rms(ddt, ddt_ref) < bound and rel_rms(dA, dA_ref) < bound


@pytest.mark.parametrize("reverse, adjoint, row_shift", [(False, False, 0), (True, False, 0), (False, True, -1),
                                                        (True, True, 1)])
def test_chunk_state_matches_ref(kernels, reverse, adjoint, row_shift):
    s = stage_tensors(kernels)
    dt, cum = (s.dt_b, s.cum_b) if reverse else (s.dt_f, s.cum_f)
    stage = kernels.chunk_state
    args = (s.C_f if adjoint else s.B_f, s.dy if adjoint else s.x, dt, s.A, cum, reverse, adjoint, row_shift)
    assert rel_rms(stage.chunk_state(*args), refs.chunk_state_ref(*args)) < stage_bound(s)


@pytest.mark.parametrize("backward_direction", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_state_passing_matches_ref(kernels, backward_direction, reverse):
    s = stage_tensors(kernels)
    states, cum = torch.randn_like(s.enter_f), s.cum_b if backward_direction else s.cum_f
    stage = kernels.state_passing
    out = stage.state_passing(states, cum, backward_direction, reverse)
    assert rel_rms(out, refs.state_passing_ref(states, cum, backward_direction, reverse)) < stage_bound(s)


def test_chunk_cb_matches_ref(kernels):
    s = stage_tensors(kernels)
    stage = kernels.chunk_cb
    out = stage.chunk_cb(s.B_f, s.C_f, s.B_b, s.C_b, 8)
    assert out.shape == (2, 3, 2, 8, 8)
    assert rel_rms(out, refs.chunk_cb_ref(s.B_f, s.C_f, s.B_b, s.C_b, 8)) < stage_bound(s)


def test_chunk_scan_matches_ref(kernels):
    s = stage_tensors(kernels)
    cb = kernels.chunk_cb.chunk_cb(s.B_f, s.C_f, s.B_b, s.C_b, 8)
    out = kernels.chunk_scan.chunk_scan(s.x, s.dt_f, s.dt_b, s.A, s.C_f, s.C_b, s.diag, cb, s.cum_f, s.cum_b,
                                        s.enter_f, s.enter_b)
    ref = refs.chunk_scan_ref(s.x, s.dt_f, s.dt_b, s.A, s.B_f, s.C_f, s.B_b, s.C_b, s.diag, s.cum_f,
                                            s.cum_b, s.enter_f, s.enter_b)
    assert rel_rms(out, ref) < stage_bound(s)


def test_chunk_scan_bwd_dx_matches_ref(kernels):
    s = stage_tensors(kernels)
    cb = kernels.chunk_cb.chunk_cb(s.B_f, s.C_f, s.B_b, s.C_b, 8)
    stage = kernels.chunk_scan_bwd_dx
    outs = stage.chunk_scan_bwd_dx(s.x, s.dy, s.dt_f, s.dt_b, s.A, s.B_f, s.B_b, s.diag, cb, s.cum_f, s.cum_b,
                                   s.dstate_f, s.dstate_b)
    expected = refs.chunk_scan_bwd_dx_ref(s.x, s.dy, s.dt_f, s.dt_b, s.A, s.B_f, s.C_f, s.B_b, s.C_b, s.diag, s.cum_f,
                                       s.cum_b, s.dstate_f, s.dstate_b)
    for out, ref in zip(outs, expected):
        assert rel_rms(out, ref) < stage_bound(s)


def test_chunk_scan_bwd_dbc_matches_ref(kernels):
    s = stage_tensors(kernels)
    common = (s.x, s.dy, s.dt_f, s.dt_b, s.A, s.B_f, s.C_f, s.B_b, s.C_b, s.cum_f, s.cum_b)
    stage = kernels.chunk_scan_bwd_dbc
    dB_f, dB_b = stage.chunk_scan_bwd_db(*common, s.dstate_f, s.dstate_b)
    cb = kernels.chunk_cb.chunk_cb(s.B_f, s.C_f, s.B_b, s.C_b, 8)
    dC_f, dC_b, rowgrad_f, rowgrad_b = stage.chunk_scan_bwd_dc(*common[:9], cb, *common[9:], s.enter_f, s.enter_b)
    expected = refs.chunk_scan_bwd_dbc_ref(*common, s.enter_f, s.enter_b, s.dstate_f, s.dstate_b)
    for out, ref in zip((dB_f, dB_b, dC_f, dC_b, rowgrad_f, rowgrad_b), expected):
        assert out.shape == ref.shape
        assert rel_rms(out, ref) < stage_bound(s)


# ---------------------------------------------------------------- the whole Function against the torch path

NAMES = ("x", "dt_f", "dt_b", "A", "B_f", "C_f", "B_b", "C_b", "diag")
SHAPES = {
    "off-grid, 2 groups, padded": dict(seqlen=40, ngroups=2, chunk_size=16, pad_from=29),
    "1 group, shorter than a chunk": dict(seqlen=11, ngroups=1, chunk_size=16, pad_from=5),
}


def forward_and_gradients(ssd, inputs, dy, *args, **kwargs):
    """The output and the gradients of all nine inputs of `ssd` for the output gradient dy."""
    y = ssd(*inputs, *args, **kwargs)
    return (y, *torch.autograd.grad(y, inputs, dy.to(y.dtype)))


def assert_close(results, references, tolerance, what="", dA_terms=None):
    """Output and gradients (y, then NAMES) within `tolerance` relative RMS error. With `dA_terms` (the
    (batch, seqlen, nheads) terms whose sum over positions is dA, see dA_position_terms), A's gradient is held to
    what a sum of those terms allows instead: |error of dA[h]| <= (tolerance + n·u) * sum of |terms[:, :, h]|,
    each term within `tolerance` and the n-term float32 sum itself within n·u (Higham §3.1). Its relative error
    is that much larger where the terms cancel (few positions per sequence: dA is then a small difference)."""
    for name, out, ref in zip(("y", *NAMES), results, references):
        assert out.shape == ref.shape, f"{what} {name}"
        if name == "A" and dA_terms is not None:
            positions = dA_terms.shape[0] * dA_terms.shape[1]
            bound = (tolerance + positions * EPS32 / 2) * dA_terms.abs().sum((0, 1))
            error = (out.double() - ref.double()).abs()
            assert (error <= bound).all(), f"{what} A: errors {error.tolist()} above {bound.tolist()}"
            continue
        error = rel_rms(out, ref)
        assert error < tolerance, f"{what} {name}: relative RMS error {error:.2e} above {tolerance:.2e}"


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_forward_and_gradients_match_torch_path(kernels, shape):
    shape = dict(shape)
    chunk_size = shape.pop("chunk_size")
    inputs = [t.requires_grad_() for t in ssd_inputs(**shape)]
    dy = torch.randn(inputs[0].shape)
    results = forward_and_gradients(kernels.ssd_triton.ssd_bidirectional_triton, inputs, dy, chunk_size)
    inputs64 = [t.detach().double().requires_grad_() for t in inputs]
    references = forward_and_gradients(ssd_bidirectional_torch, inputs64, dy.double(), chunk_size)
    assert results[0].dtype == torch.float32
    tolerance = float32_bound(inputs[1], inputs[2], inputs[3], chunk_size)
    seq_idx = torch.zeros(inputs[0].shape[:2], dtype=torch.int32)  # padding is dt = 0, x = 0 in one sequence
    assert_close(results, references, tolerance, dA_terms=dA_position_terms(inputs64, seq_idx, dy.double()))
    if shape["pad_from"] is not None:  # the padded row's real outputs equal those of the row cut at its pads
        real = [t if t.dim() == 1 else t[1:, : shape["pad_from"]] for t in inputs]
        y_alone = kernels.ssd_triton.ssd_bidirectional_triton(*real, chunk_size)
        assert rel_rms(results[0][1:, : shape["pad_from"]], y_alone) < 2 * tolerance


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs(kernels, dtype):
    inputs = [t.requires_grad_() for t in ssd_inputs(seqlen=40, dtype=dtype)]
    y = kernels.ssd_triton.ssd_bidirectional_triton(*inputs, 16)
    grads = torch.autograd.grad(y, inputs, torch.ones_like(y))
    y_ref = ssd_bidirectional_torch(*[t.detach().double() for t in inputs], 16)
    assert y.dtype == dtype and rel_rms(y, y_ref) < 2e-2
    assert [g.dtype for g in grads] == [t.dtype for t in inputs]


# ---------------------------------------------------------------- sequence boundaries (seq_idx)

# Lengths of the sequences packed into each batch row (rows of one case have the same total length).
PACKINGS = {
    "boundary inside a chunk": ([5, 20, 15], [40]),
    "30 sequences of length 1-3 in one chunk of 64": ([1, 2, 3, 1, 3, 2, 2, 1, 3, 3, 2, 1, 1, 2, 3, 2, 1, 3, 2, 2,
                                                       1, 3, 1, 2, 3, 2, 2, 1, 3, 2, 10], [40, 30]),
    "lengths 1, 2, 3 at both ends, crossing chunks": ([1, 2, 3, 27, 3, 2, 1, 1], [3, 2, 1, 24, 3, 1, 3, 3]),
    "sequences of exactly one chunk": ([16, 16, 8], [8, 16, 16]),
}
PACKING_CHUNK = {"30 sequences of length 1-3 in one chunk of 64": 64}


def seq_idx_of(lengths_per_row) -> torch.Tensor:
    """int32 (batch, seqlen) ids: 0 for the first sequence of each row, 1 for the next, ..."""
    return torch.stack([torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
                        for lengths in lengths_per_row]).to(torch.int32)


def per_sequence_reference(inputs64, lengths_per_row, chunk_size):
    """y of the float64 torch path run on every sequence alone, put back in place (autograd reaches all inputs)."""
    x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag = inputs64
    rows = []
    for b, lengths in enumerate(lengths_per_row):
        pieces, start = [], 0
        for length in lengths:
            part = [t[b:b + 1, start:start + length] for t in (x, dt_f, dt_b)] + [A] + \
                   [t[b:b + 1, start:start + length] for t in (B_f, C_f, B_b, C_b, diag)]
            pieces.append(ssd_bidirectional_torch(*part, chunk_size))
            start += length
        rows.append(torch.cat(pieces, dim=1))
    return torch.cat(rows)


def dA_position_terms(inputs64, seq_idx, dy64) -> torch.Tensor:
    """(batch, seqlen, nheads) float64 terms whose sum over batch and positions is the gradient of A for the output
    gradient dy64: the gradient of a decay rate A[b, t, h] of each position's own (the oracle takes such an A)."""
    x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag = (t.detach() for t in inputs64)
    A = A.expand(dt_f.shape).clone().requires_grad_()
    (terms,) = torch.autograd.grad(ssd_oracle(x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, seq_idx=seq_idx), A, dy64)
    return terms


@pytest.mark.parametrize("packing", PACKINGS.keys())
def test_sequence_boundaries_match_each_sequence_alone(kernels, packing):
    lengths_per_row = PACKINGS[packing]
    chunk_size = PACKING_CHUNK.get(packing, 16)
    seqlen = sum(lengths_per_row[0])
    inputs = [t.requires_grad_() for t in ssd_inputs(seqlen=seqlen, nheads=2, ngroups=2, pad_from=None)]
    seq_idx = seq_idx_of(lengths_per_row)
    dy = torch.randn(inputs[0].shape)
    results = forward_and_gradients(kernels.ssd_triton.ssd_bidirectional_triton, inputs, dy, chunk_size,
                                    seq_idx=seq_idx)
    inputs64 = [t.detach().double().requires_grad_() for t in inputs]
    y_ref = per_sequence_reference(inputs64, lengths_per_row, chunk_size)
    references = (y_ref, *torch.autograd.grad(y_ref, inputs64, dy.double()))
    tolerance = float32_bound(inputs[1], inputs[2], inputs[3], chunk_size)
    assert_close(results, references, tolerance, packing, dA_position_terms(inputs64, seq_idx, dy.double()))
    assert rel_rms(results[0], ssd_oracle(*inputs64, seq_idx=seq_idx)) < tolerance
    # int64 ids give the same result
    y64 = kernels.ssd_triton.ssd_bidirectional_triton(*inputs, chunk_size, seq_idx=seq_idx.long())
    assert torch.equal(y64, results[0])


@pytest.mark.parametrize("arch", [80, 90])
def test_block_choices_of_each_target_with_several_steps_over_headdim_and_d_state(kernels, arch, monkeypatch):
    """headdim 72 and d_state 70 take several steps of the loops over headdim and d_state (with partial last
    steps), chunk 64 with the block sizes the launch table picks for float32 on sm_80 (rows per loop step smaller
    than rows per program) and on sm_90; forward and gradients against each sequence alone."""
    monkeypatch.setattr("modeling_hydra.ssd_triton_launch.target_arch", lambda kernel: arch)
    lengths_per_row = [[30, 45, 25]]
    seq_idx = seq_idx_of(lengths_per_row)
    inputs = [t.requires_grad_() for t in ssd_inputs(batch=1, seqlen=100, nheads=2, headdim=72, ngroups=1,
                                                      d_state=70, pad_from=None)]
    dy = torch.randn(inputs[0].shape)
    results = forward_and_gradients(kernels.ssd_triton.ssd_bidirectional_triton, inputs, dy, 64, seq_idx=seq_idx)
    inputs64 = [t.detach().double().requires_grad_() for t in inputs]
    y_ref = per_sequence_reference(inputs64, lengths_per_row, 64)
    references = (y_ref, *torch.autograd.grad(y_ref, inputs64, dy.double()))
    # dA sums dt * (difference of the row and column sums of all pair weights) over the whole row: float32
    # cancellation leaves ~2e-5 relative at these sizes, within what its terms allow (assert_close).
    assert_close(results, references, float32_bound(inputs[1], inputs[2], inputs[3], 64), f"sm_{arch}",
                 dA_position_terms(inputs64, seq_idx, dy.double()))


def test_one_sequence_per_row_equals_no_seq_idx(kernels):
    inputs = [t.requires_grad_() for t in ssd_inputs(seqlen=24, nheads=2, ngroups=1, pad_from=19)]
    dy = torch.randn(inputs[0].shape)
    ssd = kernels.ssd_triton.ssd_bidirectional_triton
    without = forward_and_gradients(ssd, inputs, dy, 16)
    with_zeros = forward_and_gradients(ssd, inputs, dy, 16, seq_idx=torch.zeros(2, 24, dtype=torch.int32))
    assert_close(with_zeros, without, 2 * float32_bound(inputs[1], inputs[2], inputs[3], 16))


# ---------------------------------------------------------------- a whole model, and backend selection


def test_model_with_triton_backend_matches_torch_backend(kernels):
    config = tiny_config(num_hidden_layers=1, chunk_size=16, ssd_backend="torch")
    model_torch = HydraForMaskedLM(config).eval()
    model_triton = HydraForMaskedLM(tiny_config(num_hidden_layers=1, chunk_size=16, ssd_backend="triton")).eval()
    model_triton.load_state_dict(model_torch.state_dict())
    input_ids = torch.randint(1, config.vocab_size, (2, 11))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 7:] = 0
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    out = {}
    for name, model in (("torch", model_torch), ("triton", model_triton)):
        result = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        result.loss.backward()
        out[name] = (result.logits, {n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    real = attention_mask.bool()  # the padding-free path leaves zeros at padded positions, the padded path does not
    assert rel_rms(out["triton"][0][real], out["torch"][0][real]) < 1e-5
    assert out["triton"][1].keys() == out["torch"][1].keys()
    for name, grad in out["torch"][1].items():
        assert rel_rms(out["triton"][1][name], grad) < 1e-4, name
