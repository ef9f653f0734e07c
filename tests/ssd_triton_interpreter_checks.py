"""Checks of the Triton bidirectional SSD in Triton's CPU interpreter, run by test_ssd_triton.py in a child process:
every stage kernel against its torch `_ref`, the whole autograd Function (forward and all nine input gradients)
against the torch path in float64, and a model with ssd_backend="triton" against ssd_backend="torch".

TRITON_INTERPRET=1 must be set before `triton` is first imported (triton.language's own jit functions, tl.sum and
tl.cumsum among them, are built then, and transformers imports triton through torch._dynamo), hence the child
process. By hand: `TRITON_INTERPRET=1 python -m pytest -q tests/ssd_triton_interpreter_checks.py`.
"""

import importlib
from types import SimpleNamespace

import pytest
import torch

from conftest import tiny_config
from modeling_hydra import HydraForMaskedLM
from modeling_hydra.ssd_torch import ssd_bidirectional_torch

STAGES = ("ssd_triton_chunk_cumsum", "ssd_triton_chunk_state", "ssd_triton_state_passing", "ssd_triton_chunk_scan",
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
    enter_f, enter_b = kernels.ssd_triton._entering_states(x, dt_f, dt_b, A, B_f, B_b, cum_f, cum_b)
    dy = torch.randn_like(x)
    dstate_f, dstate_b = torch.randn_like(enter_f), torch.randn_like(enter_b)
    return SimpleNamespace(x=x, dt_f=dt_f, dt_b=dt_b, A=A, B_f=B_f, C_f=C_f, B_b=B_b, C_b=C_b, diag=diag, dy=dy,
                           cum_f=cum_f, cum_b=cum_b, enter_f=enter_f, enter_b=enter_b, dstate_f=dstate_f,
                           dstate_b=dstate_b)


@pytest.mark.parametrize("reverse", [False, True])
def test_chunk_cumsum_matches_ref(kernels, reverse):
    _, dt, _, A, *_ = ssd_inputs(seqlen=13)
    stage = kernels.chunk_cumsum
    out = stage.chunk_cumsum(dt, A, 6, reverse)
    assert out.shape == (2, 4, 3, 6)
    assert rel_rms(out, stage.chunk_cumsum_ref(dt, A, 6, reverse)) < 1e-6


@pytest.mark.parametrize("reverse", [False, True])
def test_chunk_cumsum_bwd_matches_ref(kernels, reverse):
    _, dt, _, A, *_ = ssd_inputs(seqlen=13)
    rowgrad, ddt_exp = torch.randn(2, 4, 3, 6), torch.randn(2, 4, 3, 6)
    rowgrad[..., 2, 1:], ddt_exp[..., 2, 1:] = 0, 0  # past seqlen = 13: zero, as the scan kernels write them
    stage = kernels.chunk_cumsum
    ddt, dA = stage.chunk_cumsum_bwd(dt, A, rowgrad, ddt_exp, reverse)
    ddt_ref, dA_ref = stage.chunk_cumsum_bwd_ref(dt, A, rowgrad, ddt_exp, reverse)
    assert rel_rms(ddt, ddt_ref) < 1e-6 and rel_rms(dA, dA_ref) < 1e-6


@pytest.mark.parametrize("reverse, adjoint, row_shift", [(False, False, 0), (True, False, 0), (False, True, -1),
                                                        (True, True, 1)])
def test_chunk_state_matches_ref(kernels, reverse, adjoint, row_shift):
    s = stage_tensors(kernels)
    dt, cum = (s.dt_b, s.cum_b) if reverse else (s.dt_f, s.cum_f)
    stage = kernels.chunk_state
    args = (s.C_f if adjoint else s.B_f, s.dy if adjoint else s.x, dt, s.A, cum, reverse, adjoint, row_shift)
    assert rel_rms(stage.chunk_state(*args), stage.chunk_state_ref(*args)) < 1e-6


@pytest.mark.parametrize("reverse", [False, True])
def test_state_passing_matches_ref(kernels, reverse):
    s = stage_tensors(kernels)
    states, tot = torch.randn_like(s.enter_f), s.cum_f[..., -1]
    stage = kernels.state_passing
    assert rel_rms(stage.state_passing(states, tot, reverse), stage.state_passing_ref(states, tot, reverse)) < 1e-6


def test_chunk_scan_matches_ref(kernels):
    s = stage_tensors(kernels)
    args = (s.x, s.dt_f, s.dt_b, s.A, s.B_f, s.C_f, s.B_b, s.C_b, s.diag, s.cum_f, s.cum_b, s.enter_f, s.enter_b)
    stage = kernels.chunk_scan
    assert rel_rms(stage.chunk_scan(*args), stage.chunk_scan_ref(*args)) < 1e-6


def test_chunk_scan_bwd_dx_matches_ref(kernels):
    s = stage_tensors(kernels)
    args = (s.x, s.dy, s.dt_f, s.dt_b, s.A, s.B_f, s.C_f, s.B_b, s.C_b, s.diag, s.cum_f, s.cum_b, s.dstate_f,
            s.dstate_b)
    stage = kernels.chunk_scan_bwd_dx
    for out, ref in zip(stage.chunk_scan_bwd_dx(*args), stage.chunk_scan_bwd_dx_ref(*args)):
        assert rel_rms(out, ref) < 1e-6


def test_chunk_scan_bwd_dbc_matches_ref(kernels):
    s = stage_tensors(kernels)
    common = (s.x, s.dy, s.dt_f, s.dt_b, s.A, s.B_f, s.C_f, s.B_b, s.C_b, s.cum_f, s.cum_b)
    stage = kernels.chunk_scan_bwd_dbc
    dB_f, dB_b = stage.chunk_scan_bwd_db(*common, s.dstate_f, s.dstate_b)
    dC_f, dC_b, rowgrad_f, rowgrad_b = stage.chunk_scan_bwd_dc(*common, s.enter_f, s.enter_b)
    refs = stage.chunk_scan_bwd_dbc_ref(*common, s.enter_f, s.enter_b, s.dstate_f, s.dstate_b)
    for out, ref in zip((dB_f, dB_b, dC_f, dC_b, rowgrad_f, rowgrad_b), refs):
        assert out.shape == ref.shape
        assert rel_rms(out, ref) < 1e-6


# ---------------------------------------------------------------- the whole Function against the torch path

NAMES = ("x", "dt_f", "dt_b", "A", "B_f", "C_f", "B_b", "C_b", "diag")
SHAPES = {
    "off-grid, 2 groups, padded": dict(seqlen=19, ngroups=2, chunk_size=8, pad_from=14),
    "1 group, shorter than a chunk": dict(seqlen=7, ngroups=1, chunk_size=8, pad_from=5),
    "chunk not a power of two, on the grid": dict(seqlen=18, ngroups=4, chunk_size=6, pad_from=None),
}


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_forward_and_gradients_match_torch_path(kernels, shape):
    shape = dict(shape)
    chunk_size = shape.pop("chunk_size")
    inputs = [t.requires_grad_() for t in ssd_inputs(**shape)]
    y = kernels.ssd_triton.ssd_bidirectional_triton(*inputs, chunk_size)
    dy = torch.randn_like(y)
    grads = torch.autograd.grad(y, inputs, dy)

    inputs64 = [t.detach().double().requires_grad_() for t in inputs]
    y_ref = ssd_bidirectional_torch(*inputs64, chunk_size)
    grads_ref = torch.autograd.grad(y_ref, inputs64, dy.double())
    assert y.dtype == torch.float32 and rel_rms(y, y_ref) < 1e-5
    for name, grad, grad_ref in zip(NAMES, grads, grads_ref):
        assert grad.shape == grad_ref.shape, name
        assert rel_rms(grad, grad_ref) < 1e-5, name
    if shape["pad_from"] is not None:  # the padded row's real outputs equal those of the row cut at its pads
        real = [t if t.dim() == 1 else t[1:, : shape["pad_from"]] for t in inputs]
        y_alone = kernels.ssd_triton.ssd_bidirectional_triton(*real, chunk_size)
        assert rel_rms(y[1:, : shape["pad_from"]], y_alone) < 1e-6


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs(kernels, dtype):
    inputs = [t.requires_grad_() for t in ssd_inputs(dtype=dtype)]
    y = kernels.ssd_triton.ssd_bidirectional_triton(*inputs, 8)
    grads = torch.autograd.grad(y, inputs, torch.ones_like(y))
    y_ref = ssd_bidirectional_torch(*[t.detach().double() for t in inputs], 8)
    assert y.dtype == dtype and rel_rms(y, y_ref) < 2e-2
    assert [g.dtype for g in grads] == [t.dtype for t in inputs]


# ---------------------------------------------------------------- a whole model, and backend selection


def test_model_with_triton_backend_matches_torch_backend(kernels):
    config = tiny_config(num_hidden_layers=1, ssd_backend="torch")
    model_torch = HydraForMaskedLM(config).eval()
    model_triton = HydraForMaskedLM(tiny_config(num_hidden_layers=1, ssd_backend="triton")).eval()
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
    assert rel_rms(out["triton"][0], out["torch"][0]) < 1e-5
    assert out["triton"][1].keys() == out["torch"][1].keys()
    for name, grad in out["torch"][1].items():
        assert rel_rms(out["triton"][1][name], grad) < 1e-4, name
