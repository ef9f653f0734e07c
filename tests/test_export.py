"""Deployment: torch.export with a dynamic batch and length, ONNX through onnxruntime (scripts/export_onnx.py end to
end), jit tracing, torch.compile, and the ValueError of exporting a kernel backend."""

import dataclasses
import importlib.util
import os
import runpy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from conftest import MODEL_CLASSES, REPO_ROOT, TOKENIZER_DIR, tiny_config
from modeling_hydra import HydraForMultipleChoice, HydraForTokenClassification, HydraModel
from modeling_hydra.ssd_backends import SSD_BACKENDS, clear_backend_cache
from modeling_hydra.ssd_torch import ssd_bidirectional_torch

pytestmark = [pytest.mark.usefixtures("single_thread"),
              pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning",
                                         "ignore::FutureWarning", "ignore::UserWarning")]
needs_onnx = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in ("onnx", "onnxscript", "onnxruntime")),
    reason="onnx, onnxscript and onnxruntime are not installed")

EXAMPLE = (3, 20)  # (batch, seqlen) of the export example
SHAPES = [(1, 1), (2, 7), (2, 64), (3, 65), (2, 200)]  # other sizes: one token, one chunk of 64, more than one
TOLERANCE = 1e-5


def padded_batch(shape, vocab_size, seed=0):
    """Random ids and a right-padded mask of `shape` (batch, [choices,] seqlen): the first row full, the others of
    random lengths in [1, seqlen]."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, shape[-1] + 1, shape[:-1], generator=generator)
    lengths.view(-1)[0] = shape[-1]
    mask = (torch.arange(shape[-1]) < lengths.unsqueeze(-1)).long()
    return torch.randint(1, vocab_size, shape, generator=generator), mask


def dynamic_dims(model):
    names = ("batch", "choices", "seqlen") if isinstance(model, HydraForMultipleChoice) else ("batch", "seqlen")
    return {axis: torch.export.Dim(name, min=1) for axis, name in enumerate(names)}


def max_difference(output, reference, mask) -> float:
    """Largest |output - reference| over every field, at real tokens for per-token fields."""
    worst = 0.0
    for name in reference.keys():
        difference = (output[name] - reference[name]).abs()
        # per token (no tested length equals a hidden size or label count): padded positions are unspecified
        if difference.shape[:mask.dim()] == mask.shape:
            difference = difference[mask.bool()]
        worst = max(worst, difference.max().item())
    return worst


def eager(model, unpad_inputs, **inputs):
    model.config.unpad_inputs = unpad_inputs
    with torch.no_grad():
        return model(**inputs)


def test_exported_program_matches_eager_at_other_batch_sizes_and_lengths():
    model = HydraModel(tiny_config()).eval()
    ids, mask = padded_batch(EXAMPLE, model.config.vocab_size)
    dims = dynamic_dims(model)
    with torch.no_grad():
        program = torch.export.export(model, (), {"input_ids": ids, "attention_mask": mask},
                                      dynamic_shapes={"input_ids": dims, "attention_mask": dims}).module()
    for shape in SHAPES:
        ids, mask = padded_batch(shape, model.config.vocab_size, seed=1)
        with torch.no_grad():
            output = program(input_ids=ids, attention_mask=mask)
        for unpad_inputs in (True, False):  # padding-free and padded eager paths
            reference = eager(model, unpad_inputs, input_ids=ids, attention_mask=mask)
            assert max_difference(output, reference, mask) < TOLERANCE, (shape, unpad_inputs)


@pytest.mark.parametrize("model_class", [c for c in MODEL_CLASSES if c is not HydraModel],
                         ids=lambda c: c.__name__)
def test_every_head_exports_with_dynamic_shapes(model_class):
    model = model_class(tiny_config(num_hidden_layers=1)).eval()
    choices = (2,) if model_class is HydraForMultipleChoice else ()
    ids, mask = padded_batch((EXAMPLE[0], *choices, EXAMPLE[1]), model.config.vocab_size)
    dims = dynamic_dims(model)
    with torch.no_grad():
        program = torch.export.export(model, (), {"input_ids": ids, "attention_mask": mask},
                                      dynamic_shapes={"input_ids": dims, "attention_mask": dims}).module()
    for batch, seqlen in ((1, 1), (2, 65)):
        ids, mask = padded_batch((batch, *choices, seqlen), model.config.vocab_size, seed=1)
        with torch.no_grad():
            output = program(input_ids=ids, attention_mask=mask)
        reference = eager(model, True, input_ids=ids, attention_mask=mask)
        assert max_difference(output, reference, mask) < TOLERANCE, (batch, seqlen)


def test_multiple_choice_checks_input_shapes_before_flattening():
    """The check that ties the sizes of the inputs under export, with its eager error message."""
    model = HydraForMultipleChoice(tiny_config(num_hidden_layers=1)).eval()
    ids = torch.randint(1, model.config.vocab_size, (2, 3, 5))
    with pytest.raises(ValueError, match=r"attention_mask must have the shape \(batch, num_choices, seqlen\) = "
                                         r"\(2, 3, 5\), got \(3, 2, 5\)"):
        model(input_ids=ids, attention_mask=torch.ones(3, 2, 5, dtype=torch.long))  # same size once flattened


def test_exported_program_of_unpadded_input():
    """Exported without a mask, and with an all-ones mask: the second still honours padding."""
    model = HydraModel(tiny_config(num_hidden_layers=1)).eval()
    ids = torch.randint(1, model.config.vocab_size, EXAMPLE)
    dims = dynamic_dims(model)
    with torch.no_grad():
        without_mask = torch.export.export(model, (ids,), dynamic_shapes=(dims,)).module()
        ones_mask = torch.export.export(model, (ids, torch.ones_like(ids)), dynamic_shapes=(dims, dims)).module()
    for shape in ((1, 1), (3, 65)):
        ids, mask = padded_batch(shape, model.config.vocab_size, seed=1)
        with torch.no_grad():
            output, padded_output = without_mask(ids), ones_mask(ids, mask)
        assert max_difference(output, eager(model, True, input_ids=ids), torch.ones_like(ids)) < TOLERANCE
        for unpad_inputs in (True, False):
            reference = eager(model, unpad_inputs, input_ids=ids, attention_mask=mask)
            assert max_difference(padded_output, reference, mask) < TOLERANCE, (shape, unpad_inputs)


def test_jit_trace_with_an_all_ones_mask_honours_padding():
    model = HydraModel(tiny_config(return_dict=False)).eval()
    ids, mask = padded_batch((3, 21), model.config.vocab_size)
    assert not mask.all()
    with torch.no_grad():
        traced = torch.jit.trace(model, (ids, torch.ones_like(ids)))
        hidden = traced(ids, mask)[0]
    reference = eager(model, True, input_ids=ids, attention_mask=mask)[0]
    assert (hidden - reference)[mask.bool()].abs().max() < TOLERANCE


@pytest.fixture
def triton_loads_torch_path(monkeypatch):
    """The "triton" backend resolves to the torch function here, as if its kernels could run: only the export
    check can then refuse it."""
    triton = SSD_BACKENDS["triton"]
    stand_in = dataclasses.replace(triton, load=lambda device: ssd_bidirectional_torch)
    monkeypatch.setitem(SSD_BACKENDS, "triton", stand_in)
    clear_backend_cache()
    yield
    clear_backend_cache()


@pytest.mark.usefixtures("triton_loads_torch_path")
def test_exporting_the_triton_backend_says_to_use_torch():
    model = HydraModel(tiny_config(ssd_backend="triton", unpad_inputs=False)).eval()
    ids, mask = padded_batch(EXAMPLE, model.config.vocab_size)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)  # eager resolves "triton" (to the stand-in) without complaint
        refused = "ssd_backend='triton' cannot be exported.*Use ssd_backend='torch' for export"
        with pytest.raises(ValueError, match=refused):
            torch.export.export(model, (), {"input_ids": ids, "attention_mask": mask})
        with pytest.raises(ValueError, match=refused):
            torch.jit.trace(model, (ids, mask), strict=False)


@pytest.mark.skipif(not os.environ.get("HYDRA_SLOW_TESTS"),
                    reason="torch.compile takes minutes on 2 CPU cores; set HYDRA_SLOW_TESTS=1")
def test_compile_fullgraph_matches_eager():
    model = HydraModel(tiny_config(num_hidden_layers=1)).eval()
    compiled = torch.compile(model, fullgraph=True)
    ids, mask = padded_batch((3, 21), model.config.vocab_size)
    with torch.no_grad():
        output = compiled(input_ids=ids, attention_mask=mask)
    assert max_difference(output, eager(model, True, input_ids=ids, attention_mask=mask), mask) < TOLERANCE


def export_onnx_main():
    return runpy.run_path(str(REPO_ROOT / "scripts" / "export_onnx.py"))["main"]


@needs_onnx
def test_export_onnx_script_and_onnxruntime_match_eager(tmp_path, capfd):
    import onnxruntime

    folder, onnx_file = tmp_path / "checkpoint", tmp_path / "model.onnx"
    model = HydraForTokenClassification(tiny_config(vocab_size=30528, num_labels=3)).eval()
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(TOKENIZER_DIR).save_pretrained(folder)  # the script's sample texts use it
    elsewhere = tmp_path / "elsewhere.onnx"  # an existing --output that is a symlink: replaced, not written through
    elsewhere.write_bytes(b"keep")
    onnx_file.symlink_to(elsewhere)
    capfd.readouterr()
    assert export_onnx_main()([str(folder), "--output", str(onnx_file), "--no-optimize", "--threads", "1"]) == 0
    captured = capfd.readouterr()
    assert "checkpoint's tokenizer" in captured.out and "max |onnxruntime - eager| logits:" in captured.out
    assert captured.err == "" and len(captured.out.splitlines()) == 3, captured  # no warnings, no progress bars
    assert not onnx_file.is_symlink() and elsewhere.read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "elsewhere.onnx", "model.onnx"]

    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert [i.shape for i in session.get_inputs()] == [["batch", "sequence"]] * 3
    for shape in ((4, 66), (1, 3)):
        ids, mask = padded_batch(shape, model.config.vocab_size, seed=2)
        token_types = torch.zeros_like(ids)
        (logits,) = session.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy(),
                                             "token_type_ids": token_types.numpy()})
        reference = eager(model, True, input_ids=ids, attention_mask=mask, token_type_ids=token_types).logits
        assert np.abs(logits - reference.numpy())[mask.bool().numpy()].max() <= 1e-4, shape


def test_export_onnx_script_on_a_folder_without_a_model(tmp_path, capsys):
    assert export_onnx_main()([str(tmp_path), "--output", str(tmp_path / "model.onnx")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert "holds no model (no config.json)" in captured.err
    assert not (tmp_path / "model.onnx").exists()


def test_export_onnx_refuses_an_output_that_would_replace_an_input(tmp_path, capsys):
    folder = tmp_path / "checkpoint"
    HydraForTokenClassification(tiny_config(num_labels=3)).save_pretrained(folder)
    config_file = tmp_path / "hydra.json"
    config_file.write_text((folder / "config.json").read_text())
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    capsys.readouterr()
    cases = [(folder, folder / "model.safetensors", "would replace the file model.safetensors"),
             (folder, folder / "config.json", "would replace the file config.json"),
             (folder, folder / "sub" / ".." / "config.json", "would replace the file config.json"),
             (folder, folder, "is a folder"),
             (config_file, config_file, "is the input")]
    for checkpoint, output, message in cases:
        assert export_onnx_main()([str(checkpoint), "--output", str(output)]) == 2, output
        captured = capsys.readouterr()
        assert captured.out == "" and len(captured.err.strip().splitlines()) == 1 and message in captured.err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert config_file.read_text() == (folder / "config.json").read_text()


@pytest.mark.parametrize("atol", ["nan", "inf", "-1e-4", "abc"])
def test_export_onnx_refuses_an_atol_that_is_not_a_finite_number_at_least_zero(atol, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export_onnx_main()(["checkpoint", f"--atol={atol}"])
    assert exit_info.value.code == 2 and "--atol" in capsys.readouterr().err


def test_export_onnx_parity_never_passes_nan():
    script = runpy.run_path(str(REPO_ROOT / "scripts" / "export_onnx.py"))
    model = HydraModel(tiny_config()).eval()

    class NanSession:  # onnxruntime's InferenceSession as far as max_differences uses it
        def get_outputs(self):
            return [SimpleNamespace(name="last_hidden_state", shape=["batch", "sequence", 32]),
                    SimpleNamespace(name="pooler_output", shape=["batch", 32])]

        def run(self, names, feed):
            batch, seqlen = feed["input_ids"].shape
            return [np.full((batch, seqlen, 32), np.nan, np.float32), np.zeros((batch, 32), np.float32)]

    batches = [script["random_batch"](shape, 120, 0, torch.Generator().manual_seed(0)) for shape in ((2, 5), (1, 3))]
    differences = script["max_differences"](NanSession(), model, batches)
    assert np.isnan(differences["last_hidden_state"])
    assert not script["within_tolerance"](differences, 1e-4)
    assert script["within_tolerance"]({"logits": 1e-5}, 1e-4) and not script["within_tolerance"]({"logits": 2e-4}, 1e-4)
