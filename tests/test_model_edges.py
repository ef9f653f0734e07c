"""Edges of the model's contract: config changes after construction, malformed inputs refused before any work, and
whole-layer recomputation not stacked on the mixer's own."""

import numpy as np
import pytest
import torch

from conftest import tiny_config
from modeling_hydra import HydraForMaskedLM, HydraModel
from modeling_hydra.hydra_mixer import HydraMixer


@pytest.mark.parametrize("field, value", [
    ("d_state", -1), ("chunk_size", 0), ("unpad_inputs", "no"), ("mixer_recompute", "sometimes"),
    ("use_position_embeddings", "yes"), ("matrix_mixer_type", "mamba"), ("headdim", 2.5),
])
def test_a_bad_value_is_refused_when_assigned(field, value):
    config = tiny_config()
    before = getattr(config, field)
    with pytest.raises(ValueError, match=rf"HydraConfig\.{field}\b"):
        setattr(config, field, value)
    assert getattr(config, field) == before


def test_a_structural_field_changed_after_the_model_was_built_is_refused_and_never_saved(tmp_path):
    model = HydraModel(tiny_config()).eval()
    ids = torch.randint(0, 100, (2, 5))
    model.config.use_position_embeddings = True  # a valid value, but the model has no position table
    with pytest.raises(ValueError, match="use_position_embeddings was changed .* after the model was built"):
        model(ids)
    with pytest.raises(ValueError, match="use_position_embeddings was changed"):
        model.save_pretrained(tmp_path / "saved")
    assert not (tmp_path / "saved" / "config.json").exists()
    model.config.use_position_embeddings = False
    model.config.chunk_size, model.config.unpad_inputs, model.config.mixer_recompute = 4, False, "always"
    model(ids)  # runtime fields may change
    model.save_pretrained(tmp_path / "saved")
    assert HydraModel.from_pretrained(tmp_path / "saved").config.chunk_size == 4


def test_relations_are_checked_before_a_config_is_written(tmp_path):
    config = tiny_config()
    config.headdim = 12  # a valid integer that does not divide d_inner = 64
    with pytest.raises(ValueError, match="headdim=12 must divide d_inner"):
        config.save_pretrained(tmp_path)
    assert not (tmp_path / "config.json").exists()


@pytest.mark.parametrize("make_ids, message", [
    (lambda: [[1, 2, 3]], "input_ids must be a torch.Tensor, got list"),
    (lambda: np.ones((1, 3), dtype=np.int64), "input_ids must be a torch.Tensor, got ndarray"),
    (lambda: torch.ones(0, 4, dtype=torch.long), "batch is empty"),
    (lambda: torch.ones(2, 0, dtype=torch.long), "sequence length is 0"),
])
def test_malformed_input_ids_are_refused_before_any_work(make_ids, message):
    model = HydraModel(tiny_config()).eval()
    calls = []
    model.embeddings.register_forward_hook(lambda *args: calls.append(1))
    with pytest.raises(ValueError, match=message):
        model(make_ids())
    assert not calls


@pytest.mark.parametrize("name", ["position_ids", "token_type_ids"])
def test_float_position_and_type_ids_are_refused(name):
    model = HydraModel(tiny_config()).eval()
    ids = torch.randint(0, 100, (2, 5))
    with pytest.raises(ValueError, match=f"{name} must hold integers, got dtype torch.float32"):
        model(ids, **{name: torch.zeros(2, 5)})


def test_layer_recomputation_does_not_stack_on_the_mixer_recompute(monkeypatch):
    """With whole layers recomputed (activation checkpointing) and mixer_recompute="always", each mixer's interior
    runs twice per step (forward and one recomputation), not three times; the gradients are unchanged."""
    calls = []
    mix = HydraMixer._mix
    monkeypatch.setattr(HydraMixer, "_mix", lambda self, *a: calls.append(1) or mix(self, *a))
    config = tiny_config(num_hidden_layers=2, mixer_recompute="always")
    model = HydraForMaskedLM(config).train()
    ids = torch.randint(0, 100, (2, 6))

    def step():
        calls.clear()
        model.zero_grad()
        model(ids, labels=ids).loss.backward()
        return len(calls), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain_calls, plain_grads = step()
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable(gradient_checkpointing_kwargs={"use_reentrant": False}) if enable.__name__.startswith("gradient") else \
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    checkpointed_calls, checkpointed_grads = step()
    assert plain_calls == 2 * config.num_hidden_layers  # the mixer's own recompute
    assert checkpointed_calls == 2 * config.num_hidden_layers  # the layer's recompute only
    for name, grad in plain_grads.items():
        torch.testing.assert_close(checkpointed_grads[name], grad, rtol=1e-5, atol=1e-7)
