"""Hydra for vision: the block against an independent composition at any resolution, bad inputs, the heads' losses,
remote code in a clean interpreter, AutoImageProcessor and the image-classification pipeline, gradient
checkpointing, bfloat16, torch.export, and learning on scikit-learn's digits through the Trainer."""

import importlib.util
import json
import os
import runpy
import site
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoImageProcessor, ViTImageProcessor, pipeline

from conftest import REPO_ROOT, perturb_ssm_parameters, run_mixer, tiny_vision_config
from configuration_hydra import HydraVisionConfig
from configuration_hydra.mixer_config import MIXER_FIELDS
from hydra_transformers.glue.digits import SCRAMBLED, digits_examples, train_and_evaluate
from modeling_hydra import HydraForImageClassification, HydraVisionModel
from modeling_hydra.modeling_hydra_vision import AUTO_MAP

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: threads only contend

CHILD = Path(__file__).resolve().parent / "remote_code_child.py"


def reference_encoder(model: HydraVisionModel, pixel_values):
    """The encoder written out from its definition, sharing only the parameters and the mixer module: patches cut
    by reshaping (row-major) and projected by a matmul, each block `h + mixer(LN(h))`, `h + fc2(gelu(fc1(LN(h))))`,
    a final LayerNorm and the mean over patches."""
    config = model.config
    p, d = config.patch_size, config.hidden_size
    batch, channels, height, width = pixel_values.shape
    patches = pixel_values.reshape(batch, channels, height // p, p, width // p, p)
    patches = patches.permute(0, 2, 4, 1, 3, 5).reshape(batch, (height // p) * (width // p), channels * p * p)
    projection = model.embeddings.projection
    h = patches @ projection.weight.reshape(d, -1).T + projection.bias  # (batch, num_patches, hidden)
    for layer in model.encoder.layer:
        before, after, mlp = layer.layernorm_before, layer.layernorm_after, layer.mlp
        h = h + run_mixer(layer.mixer, F.layer_norm(h, (d,), before.weight, before.bias, config.layer_norm_eps))
        u = F.layer_norm(h, (d,), after.weight, after.bias, config.layer_norm_eps)
        h = h + F.gelu(u @ mlp.fc1.weight.T + mlp.fc1.bias) @ mlp.fc2.weight.T + mlp.fc2.bias
    last = F.layer_norm(h, (d,), model.layernorm.weight, model.layernorm.bias, config.layer_norm_eps)
    return last, last.mean(dim=1)


@pytest.mark.parametrize("size", [(4, 4), (8, 12), (32, 48), (48, 32), (64, 64)])
def test_encoder_matches_its_definition_at_any_resolution(size):
    """One patch, non-square images either way, and 256 patches (32 chunks of 8): no position table, so any
    multiple of the patch size runs; float64, where the two compositions agree to rounding."""
    model = perturb_ssm_parameters(HydraVisionModel(tiny_vision_config())).double().eval()
    pixel_values = torch.randn(2, 3, *size, dtype=torch.float64)
    with torch.no_grad():
        outputs = model(pixel_values, output_hidden_states=True)
        last, pooled = reference_encoder(model, pixel_values)
    assert outputs.last_hidden_state.shape == (2, size[0] * size[1] // 16, 32)
    assert torch.allclose(outputs.last_hidden_state, last, rtol=0, atol=1e-10)
    assert torch.allclose(outputs.pooler_output, pooled, rtol=0, atol=1e-10)
    assert len(outputs.hidden_states) == 3


def test_patches_are_read_row_major():
    """The sequence is the patches row by row: patch k of an H x W image is the one at (k // (W/p), k % (W/p))."""
    model = HydraVisionModel(tiny_vision_config(num_channels=1)).double().eval()
    pixel_values = torch.zeros(1, 1, 8, 12, dtype=torch.float64)
    pixel_values[0, 0, 4:8, 8:12] = 1.0  # only the patch at row 1, column 2 (of 2 x 3) is non-zero
    with torch.no_grad():
        embedded = model(pixel_values, output_hidden_states=True).hidden_states[0][0]  # (6, hidden)
    bias = model.embeddings.projection.bias
    moved = [k for k in range(6) if not torch.allclose(embedded[k], bias)]
    assert moved == [1 * 3 + 2]


def test_interpolate_pos_encoding_is_accepted_and_changes_nothing():
    model = HydraForImageClassification(tiny_vision_config(num_labels=3)).eval()
    pixel_values = torch.randn(2, 3, 16, 24)
    with torch.no_grad():
        plain = model(pixel_values).logits
        assert torch.equal(model(pixel_values, interpolate_pos_encoding=True).logits, plain)
        assert torch.equal(model(pixel_values=pixel_values, interpolate_pos_encoding=False).logits, plain)


@pytest.mark.parametrize("shape, dtype, message", [
    ((2, 1, 32, 32), torch.float32, "1 channels but the model takes config.num_channels=3"),
    ((2, 4, 32, 32), torch.float32, "4 channels"),
    ((2, 3, 30, 32), torch.float32, "30x32 pixels"),
    ((2, 3, 32, 2), torch.float32, "multiples of patch_size=4"),
    ((2, 3, 0, 32), torch.float32, "positive multiples"),
    ((3, 32, 32), torch.float32, "4-D tensor"),
    ((2, 3, 32, 32), torch.uint8, "float tensor"),
])
def test_bad_inputs_raise_a_value_error(shape, dtype, message):
    model = HydraForImageClassification(tiny_vision_config(num_labels=3)).eval()
    with pytest.raises(ValueError, match=message):
        model(torch.zeros(shape, dtype=dtype))
    with pytest.raises(ValueError, match="pixel_values is required"):
        model()
    with pytest.raises(ValueError, match="no attention maps"):
        model(torch.zeros(1, 3, 8, 8), output_attentions=True)


def test_config_checks_and_shares_the_mixer_fields(tmp_path):
    assert {f: r for f, r in HydraVisionConfig.FIELD_RULES.items() if f in MIXER_FIELDS} == \
           {f: r for f, (_, r) in MIXER_FIELDS.items()}
    config = HydraVisionConfig()
    assert all(getattr(config, f) == default for f, (default, _) in MIXER_FIELDS.items() if f != "dt_limit")
    with pytest.raises(ValueError, match="patch_size=6 must divide image_size=224"):
        HydraVisionConfig(patch_size=6)
    with pytest.raises(ValueError, match="HydraVisionConfig.num_channels must be an integer >= 1"):
        config.num_channels = 0
    with pytest.raises(ValueError, match="HydraVisionConfig.d_state"):
        config.d_state = -1
    with pytest.raises(ValueError, match="drop_path_rate"):
        HydraVisionConfig(drop_path_rate=1.0)
    HydraVisionModel(tiny_vision_config(num_labels=4, ssd_backend="torch")).save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(loaded).__name__ == "HydraVisionConfig" and loaded.model_type == "hydra_vision"
    direct = HydraVisionConfig.from_pretrained(tmp_path).to_dict()
    assert {k: v for k, v in loaded.to_dict().items() if k != "_name_or_path"} == \
           {k: v for k, v in direct.items() if k != "_name_or_path"}
    assert (loaded.num_labels, loaded.patch_size, loaded.ssd_backend) == (4, 4, "torch")


@pytest.mark.parametrize("problem_type, num_labels, labels", [
    ("single_label_classification", 3, torch.tensor([0, 2, 1])),
    ("regression", 1, torch.tensor([0.5, -1.0, 2.0])),
    ("multi_label_classification", 3, torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])),
])
def test_classifier_and_loss_by_problem_type(problem_type, num_labels, labels):
    """logits = classifier(mean of the normalized patches); the loss as ViT's for each problem type, inferred from
    num_labels and the labels' dtype when the config does not set it."""
    model = HydraForImageClassification(tiny_vision_config(num_labels=num_labels)).eval()
    pixel_values = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        outputs = model(pixel_values, labels=labels)
        pooled = model.hydra(pixel_values).pooler_output
    logits = pooled @ model.classifier.weight.T + model.classifier.bias
    assert torch.allclose(outputs.logits, logits, atol=1e-6)
    assert model.config.problem_type == problem_type
    expected = {"single_label_classification": lambda: F.cross_entropy(logits, labels),
                "regression": lambda: F.mse_loss(logits.squeeze(-1), labels),
                "multi_label_classification": lambda: F.binary_cross_entropy_with_logits(logits, labels)}
    assert torch.allclose(outputs.loss, expected[problem_type](), atol=1e-6)
    loss, tuple_logits = model(pixel_values, labels=labels, return_dict=False)
    assert torch.equal(tuple_logits, outputs.logits) and torch.equal(loss, outputs.loss)
    # the Trainer's count of scored entries over a whole accumulated step: this batch's sum divided by it
    entries = labels.numel()
    with torch.no_grad():
        accumulated = model(pixel_values, labels=labels, num_items_in_batch=torch.tensor(4 * entries)).loss
    assert torch.allclose(accumulated, expected[problem_type]() / 4, atol=1e-6)


def save_classifier(folder: Path, num_labels=3):
    """A perturbed tiny classifier with named labels and a ViTImageProcessor (32x32, ImageNet mean/std) beside it."""
    labels = ["cat", "dog", "fish", "bird"][:num_labels]
    config = tiny_vision_config(num_labels=num_labels, id2label=dict(enumerate(labels)),
                                label2id={name: i for i, name in enumerate(labels)})
    model = perturb_ssm_parameters(HydraForImageClassification(config)).eval()
    with torch.no_grad():  # spread the logits so that the classes are far apart
        model.classifier.weight.mul_(50.0)
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return model


def test_remote_code_loads_in_a_clean_interpreter(tmp_path):
    """The saved folder loads through AutoModelForImageClassification and AutoModel with trust_remote_code=True in
    a Python where this project is not importable, and gives the in-process outputs."""
    model = save_classifier(tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert config["auto_map"] == AUTO_MAP
    pixel_values = torch.randn(2, 3, 32, 48)
    torch.save({"pixel_values": pixel_values}, tmp_path / "inputs.pt")
    loads = [dict(name="head", auto_class="AutoModelForImageClassification", source=str(tmp_path / "saved"),
                  save_to=str(tmp_path / "resaved")),
             dict(name="base", auto_class="AutoModel", source=str(tmp_path / "resaved"))]
    for load in loads:
        load["output"] = str(tmp_path / f"{load['name']}.pt")
    request = dict(site_packages=site.getsitepackages(), inputs=str(tmp_path / "inputs.pt"), loads=loads,
                   report=str(tmp_path / "report.json"))
    (tmp_path / "request.json").write_text(json.dumps(request))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HF_", "TRANSFORMERS_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), HF_MODULES_CACHE=str(tmp_path / "modules"))
    (tmp_path / "cwd").mkdir()
    result = subprocess.run([sys.executable, "-I", "-S", str(CHILD), str(tmp_path / "request.json")],
                            cwd=tmp_path / "cwd", env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"child failed:\n{result.stdout}\n{result.stderr[-6000:]}"

    report = json.loads((tmp_path / "report.json").read_text())
    assert report["project_modules_imported"] == []
    assert [load["model_class"] for load in report["loads"]] == ["HydraForImageClassification", "HydraVisionModel"]
    for load in report["loads"]:
        assert load["model_module"].startswith("transformers_modules"), load
        assert load["config_module"].startswith("transformers_modules"), load
    with torch.no_grad():
        expected = {"head": model(pixel_values).logits, "base": model.hydra(pixel_values).last_hidden_state}
    for name, reference in expected.items():
        assert torch.allclose(torch.load(tmp_path / f"{name}.pt"), reference, atol=1e-5, rtol=0), name


def test_auto_image_processor_and_pipeline(tmp_path):
    """AutoImageProcessor loads the stock ViTImageProcessor saved beside the weights; the image-classification
    pipeline returns the id2label names with the softmax of the model's logits on the processed images."""
    from PIL import Image

    model = save_classifier(tmp_path)
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(processor).__name__.startswith("ViTImageProcessor")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((40, 56), (32, 32))]
    with torch.no_grad():
        probs = model(**processor(images, return_tensors="pt")).logits.softmax(-1)  # (2, 3)
    classifier = pipeline("image-classification", model=str(tmp_path), trust_remote_code=True)
    results = classifier(images, top_k=3)
    for result, row in zip(results, probs):
        assert [r["label"] for r in result] == [model.config.id2label[int(i)] for i in row.argsort(descending=True)]
        assert np.allclose([r["score"] for r in result], row.sort(descending=True).values.numpy(), atol=1e-5)


def test_gradient_checkpointing_recomputes_layers_and_keeps_gradients():
    torch.manual_seed(0)
    model = perturb_ssm_parameters(HydraForImageClassification(tiny_vision_config(num_labels=3))).train()
    pixel_values, labels = torch.randn(2, 3, 16, 16), torch.tensor([0, 2])
    calls = []
    for layer in model.hydra.encoder.layer:
        layer.mixer.register_forward_hook(lambda *args: calls.append(1))

    def gradients():
        model.zero_grad()
        calls.clear()
        model(pixel_values, labels=labels).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}, len(calls)

    plain, plain_calls = gradients()
    model.activation_checkpointing_enable()  # transformers 5 name of gradient_checkpointing_enable
    checkpointed, checkpointed_calls = gradients()
    assert (plain_calls, checkpointed_calls) == (2, 4)  # every layer ran again in the backward pass
    for name, grad in plain.items():
        assert torch.allclose(checkpointed[name], grad, atol=1e-6, rtol=1e-5), name


def test_bfloat16_forward_follows_float32():
    """A bfloat16 model (float32 pixels from a processor are cast) against the same weights in float32: the
    pooled output is LayerNorm-scaled (entries O(1)); about 16 roundings of unit 2^-8 lie between input and output."""
    model = perturb_ssm_parameters(HydraVisionModel(tiny_vision_config())).eval()
    pixel_values = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = model(pixel_values).pooler_output
        half = model.to(torch.bfloat16)(pixel_values).pooler_output
    assert half.dtype == torch.bfloat16
    assert (half.float() - reference).abs().max() <= 16 * 2**-8


def test_torch_export_with_dynamic_batch_and_resolution():
    """One exported graph serves every batch size and every height and width that are multiples of the patch (at
    least two patches each way: torch.export specializes a dimension of size 1)."""
    model = perturb_ssm_parameters(HydraForImageClassification(tiny_vision_config(num_labels=3))).eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    rows, cols = (torch.export.Dim(n, min=2, max=64) for n in ("rows", "cols"))
    dynamic = {"pixel_values": {0: batch, 2: 4 * rows, 3: 4 * cols}}
    exported = torch.export.export(model, (), {"pixel_values": torch.randn(2, 3, 32, 32)}, dynamic_shapes=dynamic)
    for shape in [(1, 3, 8, 8), (3, 3, 32, 48), (2, 3, 64, 8)]:
        pixel_values = torch.randn(shape)
        with torch.no_grad():
            reference = model(pixel_values).logits
        assert torch.allclose(exported.module()(pixel_values=pixel_values).logits, reference, atol=1e-5, rtol=0)


# --- learning on scikit-learn's digits, through the stock Trainer -------------------------------------------------

def train_on_digits(output_dir, bypass_mixer=False):
    """A tiny Hydra (8x8 grayscale, 2x2 patches) trained on the scrambled digits; returns the test accuracy."""
    train, test = digits_examples(scramble=True)
    torch.manual_seed(0)
    model = HydraForImageClassification(
        tiny_vision_config(image_size=8, patch_size=2, num_channels=1, num_labels=SCRAMBLED + 1))
    if bypass_mixer:  # the control: every block's mixer outputs zeros, so patches never meet before the mean
        for layer in model.hydra.encoder.layer:
            layer.mixer.forward = lambda hidden_states, *args, **kwargs: torch.zeros_like(hidden_states)
    return train_and_evaluate(model, train, test, output_dir)


def test_trainer_learns_digits_and_needs_the_mixer(tmp_path):
    """The Trainer teaches a tiny Hydra to read digits and to tell them from patch-shuffled copies (chance: 1/11;
    measured 0.95); the same run with the mixer's output zeroed cannot pass half of the test set (see
    hydra_glue/digits.py)."""
    assert train_on_digits(tmp_path / "hydra") >= 0.85
    assert train_on_digits(tmp_path / "bypassed", bypass_mixer=True) <= 0.5 + 1e-9


@pytest.mark.skipif(any(importlib.util.find_spec(name) is None for name in ("onnx", "onnxscript", "onnxruntime")),
                    reason="onnx, onnxscript and onnxruntime are not installed")
def test_export_onnx_script_on_a_vision_checkpoint(tmp_path, capsys):
    """scripts/export_onnx.py recognizes a vision folder, exports a graph dynamic in batch, height and width, and
    onnxruntime matches eager PyTorch on images of other sizes than the export example."""
    import onnxruntime

    model = save_classifier(tmp_path / "saved")
    main = runpy.run_path(str(REPO_ROOT / "scripts" / "export_onnx.py"))["main"]
    onnx_file = tmp_path / "model.onnx"
    assert main([str(tmp_path / "saved"), "--output", str(onnx_file), "--no-optimize", "--threads", "1"]) == 0
    assert "max |onnxruntime - eager| logits" in capsys.readouterr().out
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["pixel_values"]
    pixel_values = torch.randn(4, 3, 12, 44)
    with torch.no_grad():
        reference = model(pixel_values).logits.numpy()
    (logits,) = session.run(["logits"], {"pixel_values": pixel_values.numpy()})
    assert np.abs(logits - reference).max() <= 1e-5


def test_bench_vision_matches_parameters_and_reports_every_row(tmp_path):
    """benchmarks/bench_vision.py at tiny settings: ViT's MLP width brings its parameters within one MLP step (64
    columns) of Hydra's, and one row per resolution and mode is reported. No timing is checked."""
    report = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "bench_vision.py"), "--hidden-size", "64",
                             "--layers", "1", "--intermediate-size", "128", "--resolutions", "32", "48", "--batch",
                             "1", "--repeats", "1", "--warmups", "0", "--threads", "1", "--json", str(report)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    data = json.loads(report.read_text())
    mlp_step = 64 * (2 * 64 + 1)  # 64 more MLP columns: fc1 weights and bias, fc2 weights, per block
    assert abs(data["vit_parameters"] - data["hydra_parameters"]) <= mlp_step / 2
    assert [(row["image"], row["mode"]) for row in data["rows"]] == [
        (32, "forward"), (32, "fwd+bwd"), (48, "forward"), (48, "fwd+bwd")]
    assert all(row["hydra_ms"] > 0 and row["vit_ms"] > 0 for row in data["rows"])
    # ViT's forward FLOPs written out: patch convolution, per block 4 d x d projections, the MLP and attention's two
    # (L x L x d) products (the CPU flash-attention op, which torch's counter has no formula for)
    d, mlp, patch = 64, data["vit_intermediate_size"], 16
    for row in data["rows"]:
        patches = row["patches"]
        tokens = patches + 1  # the class token
        expected = 2 * patches * d * 3 * patch * patch + 2 * tokens * (4 * d * d + 2 * d * mlp) + 4 * tokens ** 2 * d
        assert row["vit_forward_gflops_per_image"] * 1e9 == pytest.approx(expected, rel=1e-9)


def test_hydra_vit_base_preset_has_the_papers_parameter_count():
    """configs/hydra-vit-base.json (= HydraVisionConfig()'s sizes) against the count written out by hand: 91.0M with
    ImageNet's 1000-class head (the paper: 91M), 90.2M without."""
    config = HydraVisionConfig.from_json_file(str(REPO_ROOT / "configs" / "hydra-vit-base.json"))
    assert {k: getattr(config, k) for k in ("hidden_size", "num_hidden_layers", "patch_size", "image_size")} == \
           {k: getattr(HydraVisionConfig(), k) for k in ("hidden_size", "num_hidden_layers", "patch_size", "image_size")}
    d, m, layers, p = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.patch_size
    d_in, heads, state = config.expand * d, config.expand * d // config.headdim, config.ngroups * config.d_state
    conv_dim = d_in + 4 * state
    mixer = (d * (d_in + conv_dim + 2 * heads) + conv_dim * (config.d_conv + 1) + 3 * heads + d_in * heads + d_in
             + d_in * d)
    block = mixer + 2 * 2 * d + (d * m + m) + (m * d + d)
    encoder = config.num_channels * p * p * d + d + layers * block + 2 * d
    config.num_labels = 1000
    with torch.device("meta"):
        base, classifier = HydraVisionModel(config), HydraForImageClassification(config)
    assert sum(t.numel() for t in base.parameters()) == encoder
    assert sum(t.numel() for t in classifier.parameters()) == encoder + d * 1000 + 1000
    assert round(encoder / 1e6, 1) == 90.2 and round((encoder + d * 1000 + 1000) / 1e6, 1) == 91.0


def test_fields_that_shape_the_modules_are_frozen_once_built(tmp_path):
    """A field that shapes the modules, changed after the model was built, raises at forward and at save (the saved
    folder would not load back into these weights); runtime fields and the recorded resolution may change."""
    model = HydraForImageClassification(tiny_vision_config(num_labels=3)).eval()
    pixel_values = torch.randn(1, 3, 16, 16)
    model.config.patch_size = 8  # a valid value, but the patch convolution has 4x4 kernels
    with pytest.raises(ValueError, match="patch_size was changed to 8 after the model was built with 4"):
        model(pixel_values)
    with pytest.raises(ValueError, match="patch_size was changed"):
        model.save_pretrained(tmp_path / "saved")
    assert not (tmp_path / "saved" / "config.json").exists()
    model.config.patch_size = 4
    model.config.chunk_size, model.config.mixer_recompute, model.config.image_size = 4, "always", 64
    model(pixel_values)
    model.save_pretrained(tmp_path / "saved")
    assert HydraForImageClassification.from_pretrained(tmp_path / "saved").config.image_size == 64
