"""HydraModel and its heads: outputs, save/load, tying, losses by hand, checkpointing, initialization."""

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import MODEL_CLASSES, perturb_ssm_parameters, tiny_config
from modeling_hydra import (HydraForMaskedLM, HydraForMultipleChoice, HydraForQuestionAnswering,
                            HydraForSequenceClassification, HydraForTokenClassification, HydraModel)

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: threads only contend


def example_inputs(model_class, config, batch=2, seqlen=11):
    ids = torch.randint(1, config.vocab_size, (batch, 3, seqlen) if model_class is HydraForMultipleChoice
                        else (batch, seqlen))
    mask = torch.ones_like(ids)
    mask[0, ..., -4:] = 0
    return dict(input_ids=ids, attention_mask=mask)


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_save_load_round_trip(model_class, tmp_path):
    config = tiny_config(num_labels=3)
    model = model_class(config).eval()
    perturb_ssm_parameters(model)
    inputs = example_inputs(model_class, config)
    model.save_pretrained(tmp_path)
    loaded = model_class.from_pretrained(tmp_path).eval()
    expected, state = model.state_dict(), loaded.state_dict()
    assert expected.keys() == state.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, state[name]), f"{name} changed in the round trip"
    with torch.no_grad():
        out, out_loaded = model(**inputs), loaded(**inputs)
    for a, b in zip(out.to_tuple(), out_loaded.to_tuple()):  # equal weights; rounding may differ with alignment
        assert torch.allclose(a, b, rtol=0, atol=1e-6)


def labels_for(model_class, config, inputs):
    ids = inputs["input_ids"]
    if model_class is HydraForMaskedLM:
        return dict(labels=torch.randint(0, config.vocab_size, ids.shape))
    if model_class is HydraForSequenceClassification:
        return dict(labels=torch.randint(0, config.num_labels, ids.shape[:1]))
    if model_class is HydraForTokenClassification:
        return dict(labels=torch.randint(0, config.num_labels, ids.shape))
    if model_class is HydraForQuestionAnswering:
        return dict(start_positions=torch.tensor([1, 3]), end_positions=torch.tensor([2, 5]))
    if model_class is HydraForMultipleChoice:
        return dict(labels=torch.tensor([0, 2]))
    return {}


# BERT's tuple order: (loss?, <head fields>, hidden_states?)
TUPLE_FIELDS = {
    HydraModel: ["last_hidden_state", "pooler_output"],
    HydraForMaskedLM: ["loss", "logits"],
    HydraForSequenceClassification: ["loss", "logits"],
    HydraForTokenClassification: ["loss", "logits"],
    HydraForQuestionAnswering: ["loss", "start_logits", "end_logits"],
    HydraForMultipleChoice: ["loss", "logits"],
}


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_tuple_and_dict_outputs_agree(model_class):
    config = tiny_config(num_labels=3)
    model = model_class(config).eval()
    inputs = example_inputs(model_class, config)
    inputs.update(labels_for(model_class, config, inputs))
    with torch.no_grad():
        as_dict = model(**inputs, output_hidden_states=True)
        as_tuple = model(**inputs, output_hidden_states=True, return_dict=False)
    assert isinstance(as_tuple, tuple)
    expected = [getattr(as_dict, name) for name in TUPLE_FIELDS[model_class]] + [as_dict.hidden_states]
    assert len(as_tuple) == len(expected)
    for got, want in zip(as_tuple, expected):
        if isinstance(want, tuple):
            assert len(got) == len(want) and all(torch.equal(a, b) for a, b in zip(got, want))
        else:
            assert torch.equal(got, want)


@pytest.mark.parametrize("is_prenorm", [False, True])
def test_hidden_states_has_one_per_layer_plus_embeddings(is_prenorm):
    config = tiny_config(num_hidden_layers=3, is_prenorm=is_prenorm)
    model = HydraModel(config).eval()
    ids = torch.randint(1, config.vocab_size, (2, 7))
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        embeddings = model.embeddings(ids, torch.zeros_like(ids), None, None)
    assert len(out.hidden_states) == config.num_hidden_layers + 1
    assert torch.equal(out.hidden_states[0], embeddings)
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)
    assert model(ids).hidden_states is None


def test_output_attentions_raises():
    config = tiny_config()
    model = HydraForMaskedLM(config)
    with pytest.raises(ValueError, match="no attention maps"):
        model(torch.randint(1, config.vocab_size, (1, 5)), output_attentions=True)


def assert_decoder_tied(model):
    decoder, embedding = model.get_output_embeddings(), model.get_input_embeddings()
    assert decoder.weight is embedding.weight
    assert decoder.bias.shape == (embedding.weight.shape[0],)
    with torch.no_grad():  # a write through one is seen by the other
        embedding.weight[5, 0] += 1.0
        assert decoder.weight[5, 0] == embedding.weight[5, 0]
        embedding.weight[5, 0] -= 1.0


def test_tied_decoder_after_save_load_and_resize(tmp_path):
    config = tiny_config()
    model = HydraForMaskedLM(config)
    assert_decoder_tied(model)
    model.save_pretrained(tmp_path)
    loaded = HydraForMaskedLM.from_pretrained(tmp_path)
    assert_decoder_tied(loaded)
    assert torch.equal(loaded.get_input_embeddings().weight, model.get_input_embeddings().weight)

    loaded.resize_token_embeddings(config.vocab_size + 13)
    assert_decoder_tied(loaded)
    assert loaded.config.vocab_size == config.vocab_size + 13
    assert torch.equal(loaded.get_input_embeddings().weight[:config.vocab_size],
                       model.get_input_embeddings().weight)
    logits = loaded(torch.tensor([[1, config.vocab_size + 12]])).logits
    assert logits.shape == (1, 2, config.vocab_size + 13)


# ---------------------------------------------------------------------------- losses computed by hand


def cross_entropy_by_hand(logits, labels, ignore_index=-100):
    """Mean over the non-ignored rows of -log softmax(logits)[label]."""
    logits, labels = logits.reshape(-1, logits.shape[-1]).double(), labels.reshape(-1)
    keep = labels != ignore_index
    log_probs = logits[keep] - torch.logsumexp(logits[keep], dim=-1, keepdim=True)
    return -log_probs[torch.arange(int(keep.sum())), labels[keep]].mean()


def test_sequence_classification_losses():
    ids = torch.randint(1, 120, (4, 6))
    model = HydraForSequenceClassification(tiny_config(num_labels=1)).eval()
    target = torch.randn(4)
    out = model(ids, labels=target)
    assert model.config.problem_type == "regression"
    assert torch.allclose(out.loss.double(), ((out.logits[:, 0].double() - target) ** 2).mean(), atol=1e-6)

    model = HydraForSequenceClassification(tiny_config(num_labels=3)).eval()
    target = torch.tensor([0, 2, 1, 2])
    out = model(ids, labels=target)
    assert model.config.problem_type == "single_label_classification"
    assert torch.allclose(out.loss.double(), cross_entropy_by_hand(out.logits, target), atol=1e-6)

    model = HydraForSequenceClassification(tiny_config(num_labels=3)).eval()
    target = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]], dtype=torch.float)
    out = model(ids, labels=target)
    assert model.config.problem_type == "multi_label_classification"
    p = torch.sigmoid(out.logits.double())
    bce = -(target * torch.log(p) + (1 - target) * torch.log(1 - p)).mean()
    assert torch.allclose(out.loss.double(), bce, atol=1e-6)

    model = HydraForSequenceClassification(tiny_config(num_labels=2, problem_type="regression")).eval()
    target = torch.randn(4, 2)
    out = model(ids, labels=target)
    assert torch.allclose(out.loss.double(), ((out.logits.double() - target) ** 2).mean(), atol=1e-6)


def test_token_classification_loss_ignores_minus_100():
    model = HydraForTokenClassification(tiny_config(num_labels=5)).eval()
    ids = torch.randint(1, 120, (2, 7))
    labels = torch.randint(0, 5, (2, 7))
    labels[0, :3] = -100
    labels[1, -1] = -100
    out = model(ids, labels=labels)
    assert torch.allclose(out.loss.double(), cross_entropy_by_hand(out.logits, labels), atol=1e-6)


def test_masked_lm_loss_ignores_minus_100():
    config = tiny_config()
    model = HydraForMaskedLM(config).eval()
    ids = torch.randint(1, config.vocab_size, (2, 9))
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 5], labels[1, 7] = 11, 42, 3
    out = model(ids, labels=labels)
    assert out.logits.shape == (2, 9, config.vocab_size)
    assert torch.allclose(out.loss.double(), cross_entropy_by_hand(out.logits, labels), atol=1e-6)


def test_question_answering_loss_with_clamped_positions():
    model = HydraForQuestionAnswering(tiny_config()).eval()
    seqlen = 8
    ids = torch.randint(1, 120, (3, seqlen))
    start, end = torch.tensor([2, 50, 0]), torch.tensor([4, 6, 99])  # 50 and 99 lie outside: ignored
    out = model(ids, start_positions=start, end_positions=end)

    def by_hand(logits, positions):
        kept = [(i, int(p)) for i, p in enumerate(positions) if 0 <= p < seqlen]
        return torch.stack([-torch.log_softmax(logits[i].double(), -1)[p] for i, p in kept]).mean()

    expected = (by_hand(out.start_logits, start) + by_hand(out.end_logits, end)) / 2
    assert out.start_logits.shape == out.end_logits.shape == (3, seqlen)
    assert torch.allclose(out.loss.double(), expected, atol=1e-6)


def test_multiple_choice_loss():
    config = tiny_config()
    model = HydraForMultipleChoice(config).eval()
    ids = torch.randint(1, config.vocab_size, (2, 4, 6))
    labels = torch.tensor([3, 1])
    out = model(ids, labels=labels)
    assert out.logits.shape == (2, 4)
    assert torch.allclose(out.loss.double(), cross_entropy_by_hand(out.logits, labels), atol=1e-6)
    with torch.no_grad():  # each choice is scored on its own
        single = model(ids[1:, 2:3]).logits
    assert torch.allclose(single[0, 0], out.logits[1, 2], atol=1e-6)


# ----------------------------------------------------------------------------------------- training paths


def test_gradient_checkpointing_gives_the_same_gradients():
    config = tiny_config(num_hidden_layers=3)
    inputs = example_inputs(HydraForMaskedLM, config)
    labels = labels_for(HydraForMaskedLM, config, inputs)
    model = HydraForMaskedLM(config).train()
    perturb_ssm_parameters(model)

    def gradients():
        model.zero_grad()
        model(**inputs, **labels).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    calls = []
    hook = model.hydra.encoder.layer[1].mixer.register_forward_hook(lambda *args: calls.append(1))
    plain = gradients()
    plain_calls = len(calls)
    model.activation_checkpointing_enable()
    checkpointed = gradients()
    hook.remove()
    assert plain_calls == 1 and len(calls) - plain_calls == 2, "checkpointing did not recompute the layer"
    assert plain.keys() == checkpointed.keys() == {n for n, _ in model.named_parameters()}
    for name, grad in plain.items():
        assert torch.allclose(grad, checkpointed[name], atol=1e-7, rtol=1e-5), name


def test_each_layer_has_its_own_parameters():
    model = HydraModel(tiny_config(num_hidden_layers=3))
    mixers = [layer.mixer for layer in model.encoder.layer]
    for name, _ in mixers[0].named_parameters():
        pointers = {getattr_path(m, name).data_ptr() for m in mixers}
        assert len(pointers) == len(mixers), f"{name} is shared between layers"
    dt_biases = [m.dt_bias.detach() for m in mixers]  # drawn independently, so the values differ
    assert all(not torch.equal(dt_biases[0], other) for other in dt_biases[1:])


def getattr_path(module, dotted):
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


def test_initialization_follows_the_original():
    config = tiny_config(vocab_size=2000, hidden_size=64, headdim=2, ngroups=1, num_hidden_layers=3,
                         num_labels=3)  # 64 heads per layer

    model = HydraForSequenceClassification(config)
    std = config.initializer_range
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            if module.weight.numel() >= 4000:
                assert abs(module.weight.std().item() - std) < 0.1 * std, name
                assert abs(module.weight.mean().item()) < 0.1 * std, name
            if module.bias is not None:
                assert torch.all(module.bias == 0), name
        elif isinstance(module, torch.nn.LayerNorm):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0), name
        elif isinstance(module, torch.nn.Conv1d):  # PyTorch's default: U(-1/sqrt(K), 1/sqrt(K)) for depthwise
            bound = 1 / math.sqrt(config.d_conv)
            assert module.weight.abs().max() <= bound and module.bias.abs().max() <= bound, name
            assert abs(module.weight.std().item() - bound / math.sqrt(3)) < 0.1 * bound, name
    words = model.hydra.embeddings.word_embeddings.weight
    assert torch.all(words[config.pad_token_id] == 0)
    assert abs(words.std().item() - std) < 0.05 * std
    assert abs(model.hydra.embeddings.token_type_embeddings.weight.std().item() - std) < 0.3 * std
    dts = []
    for layer in model.hydra.encoder.layer:
        mixer = layer.mixer
        assert torch.all(mixer.A_log == 0) and torch.all(mixer.D == 1) and torch.all(mixer.norm.weight == 1)
        dts.append(F.softplus(mixer.dt_bias.detach().double()))
    dt = torch.cat(dts)  # 192 step sizes
    assert dt.min() >= config.dt_min * (1 - 1e-6) and dt.max() <= config.dt_max * (1 + 1e-6)
    log_dt = (dt.log() - math.log(config.dt_min)) / (math.log(config.dt_max) - math.log(config.dt_min))
    assert abs(log_dt.mean().item() - 0.5) < 0.1 and abs(log_dt.std().item() - 1 / math.sqrt(12)) < 0.05


# ------------------------------------------------------------------------------------------ configuration


def test_from_pretrained_backend_override(tmp_path):
    config = tiny_config()
    HydraModel(config).save_pretrained(tmp_path)
    assert HydraModel.from_pretrained(tmp_path).config.ssd_backend == "auto"
    assert HydraModel.from_pretrained(tmp_path, ssd_backend="torch").config.ssd_backend == "torch"
    with pytest.raises(ValueError, match="ssd_backend"):
        HydraModel.from_pretrained(tmp_path, ssd_backend="cuda-magic")
