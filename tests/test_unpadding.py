"""Unpadding (`config.unpad_inputs`, the padding-free path of `sequence_layout.py`): for every head, with left and
right padding, the outputs at real tokens, the pooled outputs and the losses equal those of the padded path
(`unpad_inputs=False`), gradients included; rows with holes in their mask fall back to the padded path; values at
padded positions (NaN, inf, 1e30) never reach a real token on either path."""

import pytest
import torch

from conftest import tiny_config
from modeling_hydra import (HydraForMaskedLM, HydraForMultipleChoice, HydraForQuestionAnswering,
                            HydraForSequenceClassification, HydraForTokenClassification, HydraModel)
from packing_helpers import randomize_weights, relative_error

pytestmark = pytest.mark.usefixtures("single_thread")

TOL = {torch.float64: 1e-12, torch.float32: 1e-5}
LENGTHS = [9, 1, 3, 14, 2]  # 1-3 are shorter than the conv's half-width; 14 crosses chunks of 8
SEQLEN = 16
NUM_LABELS = 3
CONFIGS = {
    "post-norm, cls pooling": {},
    "pre-norm, mean pooling, position embeddings": dict(is_prenorm=True, classifier_pooling="mean",
                                                         use_position_embeddings=True),
}
HEADS = [HydraModel, HydraForMaskedLM, HydraForSequenceClassification, HydraForTokenClassification,
         HydraForQuestionAnswering, HydraForMultipleChoice]


def padding_mask(lengths, seqlen, left):
    """(len(lengths), seqlen) long, 1 at the real tokens, padded on the left or the right."""
    positions = torch.arange(seqlen)[None]
    lengths = torch.tensor(lengths)[:, None]
    return (positions >= seqlen - lengths if left else positions < lengths).long()


def head_inputs(model_class, mask, vocab_size, g):
    """input_ids (random also at the pads), attention_mask and labels of one head; for MultipleChoice the rows are
    the choices of one question: (1, num_choices, seqlen)."""
    ids = torch.randint(1, vocab_size, mask.shape, generator=g)
    kwargs = {"input_ids": ids, "attention_mask": mask, "output_hidden_states": True}
    batch = mask.shape[0]
    if model_class in (HydraForMaskedLM, HydraForTokenClassification):
        high = vocab_size if model_class is HydraForMaskedLM else NUM_LABELS
        kwargs["labels"] = torch.randint(0, high, mask.shape, generator=g).masked_fill(mask == 0, -100)
    elif model_class is HydraForSequenceClassification:
        kwargs["labels"] = torch.randint(0, NUM_LABELS, (batch,), generator=g)
    elif model_class is HydraForMultipleChoice:
        kwargs = {"input_ids": ids[None], "attention_mask": mask[None], "labels": torch.tensor([1]),
                  "output_hidden_states": True}
    return kwargs


def compared_outputs(model, out, mask):
    """name -> tensor of the outputs that must not depend on the path: per-token ones at the real tokens only."""
    real = mask.bool()
    if isinstance(model, HydraForMultipleChoice):
        real = mask.reshape(-1, mask.shape[-1]).bool()
    fields = {"loss": out.get("loss"), "pooler_output": out.get("pooler_output"),
              "sequence logits": out.logits if isinstance(model, (HydraForSequenceClassification,
                                                                  HydraForMultipleChoice)) else None}
    per_token = {"last_hidden_state": out.get("last_hidden_state"), "start_logits": out.get("start_logits"),
                 "end_logits": out.get("end_logits"),
                 "token logits": out.logits if isinstance(model, (HydraForMaskedLM,
                                                                  HydraForTokenClassification)) else None}
    per_token.update({f"hidden_states[{i}]": h for i, h in enumerate(out.hidden_states)})
    fields.update({name: t[real] for name, t in per_token.items() if t is not None})
    return {name: t for name, t in fields.items() if t is not None}


def both_paths(model, kwargs):
    outputs = []
    for unpad in (True, False):
        model.config.unpad_inputs = unpad
        outputs.append(model(**kwargs))
    model.config.unpad_inputs = True
    return outputs


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("left", [False, True], ids=["right", "left"])
@pytest.mark.parametrize("config_name", list(CONFIGS))
@pytest.mark.parametrize("model_class", HEADS)
def test_unpadded_path_equals_padded_path(model_class, config_name, left, dtype):
    config = tiny_config(num_labels=NUM_LABELS, **CONFIGS[config_name])
    model = randomize_weights(model_class(config)).to(dtype).eval()
    mask = padding_mask(LENGTHS, SEQLEN, left)
    kwargs = head_inputs(model_class, mask, config.vocab_size, torch.Generator().manual_seed(1))
    with torch.no_grad():
        unpadded, padded = both_paths(model, kwargs)
    got, want = compared_outputs(model, unpadded, mask), compared_outputs(model, padded, mask)
    assert got.keys() == want.keys() and len(want) >= 3 + config.num_hidden_layers
    for name in want:
        if model_class is HydraForQuestionAnswering and name == "loss":
            continue  # see test_question_answering_loss_ignores_padded_positions
        err = relative_error(got[name], want[name])
        assert err <= TOL[dtype], f"{name} differs by {err:.2e}"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("left", [False, True], ids=["right", "left"])
def test_unpadded_gradients_equal_padded_gradients(left, dtype):
    config = tiny_config(use_position_embeddings=True)
    model = randomize_weights(HydraForMaskedLM(config)).to(dtype).train()
    mask = padding_mask(LENGTHS, SEQLEN, left)
    kwargs = head_inputs(HydraForMaskedLM, mask, config.vocab_size, torch.Generator().manual_seed(2))
    grads = []
    for unpad in (True, False):
        model.config.unpad_inputs = unpad
        model.zero_grad()
        model(**kwargs).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name in grads[1]:
        err = relative_error(grads[0][name], grads[1][name])
        assert err <= TOL[dtype] * 10, f"grad of {name} differs by {err:.2e}"


@pytest.mark.parametrize("left", [False, True], ids=["right", "left"])
def test_question_answering_loss_ignores_padded_positions(left):
    """The span loss is a softmax over positions: padded positions must not take part, so the loss equals the mean
    loss of the rows run alone, and the same on both paths (also with NaN embeddings at the pads)."""
    model = randomize_weights(HydraForQuestionAnswering(tiny_config())).double().eval()
    mask = padding_mask(LENGTHS, SEQLEN, left)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(1, model.config.vocab_size, mask.shape, generator=g)
    start_alone = torch.tensor([int(torch.randint(0, n, (1,), generator=g)) for n in LENGTHS])
    end_alone = torch.tensor([int(torch.randint(0, n, (1,), generator=g)) for n in LENGTHS])
    offset = torch.tensor([SEQLEN - n if left else 0 for n in LENGTHS])
    with torch.no_grad():
        alone = torch.stack([model(ids[i:i + 1, mask[i].bool()], start_positions=start_alone[i:i + 1],
                                   end_positions=end_alone[i:i + 1]).loss for i in range(len(LENGTHS))]).mean()
        embeds = model.hydra.embeddings.word_embeddings(ids).masked_fill(~mask.bool()[..., None], float("nan"))
        losses = {}
        for unpad in (True, False):
            model.config.unpad_inputs = unpad
            for name, inputs in (("input_ids", {"input_ids": ids}), ("NaN at the pads", {"inputs_embeds": embeds})):
                losses[f"unpad_inputs={unpad}, {name}"] = model(
                    **inputs, attention_mask=mask, start_positions=start_alone + offset,
                    end_positions=end_alone + offset).loss.item()
    wrong = {name: loss for name, loss in losses.items() if not abs(loss - alone.item()) <= TOL[torch.float64]}
    assert not wrong, f"rows alone: loss {alone.item():.6f}; padded batch: {losses}"


@pytest.mark.parametrize("unpad", [True, False])
def test_all_padding_row_stays_finite(unpad):
    config = tiny_config(num_labels=NUM_LABELS, unpad_inputs=unpad, classifier_pooling="mean")
    model = randomize_weights(HydraForSequenceClassification(config)).eval()
    lengths = [5, 0, 12]
    mask = padding_mask(lengths, SEQLEN, left=False)
    ids = torch.randint(1, config.vocab_size, mask.shape)
    labels = torch.tensor([0, 1, 2])
    with torch.no_grad():
        out = model(ids, attention_mask=mask, labels=labels, output_hidden_states=True)
        no_padding_row = model(ids[[0, 2]], attention_mask=mask[[0, 2]])
        all_padding = model(ids, attention_mask=torch.zeros_like(mask), output_hidden_states=True)
    for result in (out, all_padding):
        assert all(torch.isfinite(t).all() for t in (result.logits, *result.hidden_states))
    assert torch.isfinite(out.loss)
    assert relative_error(out.logits[[0, 2]], no_padding_row.logits) <= TOL[torch.float32]


def batch_with_a_hole(left):
    mask = padding_mask(LENGTHS, SEQLEN, left)
    mask[3, 5] = 0  # a hole inside the row of 14 tokens
    return torch.randint(1, 120, mask.shape), mask


@pytest.mark.parametrize("left", [False, True], ids=["right", "left"])
def test_rows_with_holes_take_the_padded_path(left):
    """A mask with a zero between real tokens: the batch falls back to the padded path whatever `unpad_inputs` says
    (the same numbers as unpad_inputs=False); rows without holes still equal their real tokens run alone."""
    model = randomize_weights(HydraForMaskedLM(tiny_config(vocab_size=120))).eval()
    ids, mask = batch_with_a_hole(left)
    with torch.no_grad():
        unpadded, padded = both_paths(model, {"input_ids": ids, "attention_mask": mask})
        for i in (0, 1, 2, 4):
            real = mask[i].bool()
            alone = model(ids[i:i + 1, real]).logits[0]
            assert relative_error(unpadded.logits[i, real], alone) <= TOL[torch.float32], f"row {i}"
    assert torch.isfinite(unpadded.logits).all()
    assert relative_error(unpadded.logits, padded.logits) == 0.0


def test_rows_longer_than_a_bin():
    """Rows longer than the widest one-chunk row (execution_plan.TORCH_ONE_CHUNK): all real tokens share one row."""
    model = randomize_weights(HydraModel(tiny_config(chunk_size=64))).eval()
    mask = padding_mask([300, 7, 260], 300, left=False)
    ids = torch.randint(1, model.config.vocab_size, mask.shape)
    with torch.no_grad():
        unpadded, padded = both_paths(model, {"input_ids": ids, "attention_mask": mask})
    real = mask.bool()
    assert relative_error(unpadded.last_hidden_state[real], padded.last_hidden_state[real]) <= TOL[torch.float32]
    assert relative_error(unpadded.pooler_output, padded.pooler_output) <= TOL[torch.float32]


# ----------------------------------------------------------------------------------------------------------
# Non-finite values at padded positions (issue 10 item 3)


@pytest.mark.parametrize("pad_value", [float("nan"), float("inf"), float("-inf"), 1e30])
@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("unpad", [True, False])
@pytest.mark.parametrize("left", [False, True], ids=["right", "left"])
def test_non_finite_padding_does_not_leak(pad_value, pooling, unpad, left):
    config = tiny_config(classifier_pooling=pooling, unpad_inputs=unpad, is_prenorm=pooling == "mean")
    model = randomize_weights(HydraModel(config)).eval()
    mask = padding_mask(LENGTHS, SEQLEN, left)
    pads = ~mask.bool()[..., None]
    embeds = torch.randn(*mask.shape, config.hidden_size)
    with torch.no_grad():
        clean = model(inputs_embeds=embeds.masked_fill(pads, 0.0), attention_mask=mask)
        hostile = model(inputs_embeds=embeds.masked_fill(pads, pad_value), attention_mask=mask)
    real = mask.bool()
    assert torch.isfinite(hostile.last_hidden_state[real]).all() and torch.isfinite(hostile.pooler_output).all()
    assert relative_error(hostile.last_hidden_state[real], clean.last_hidden_state[real]) <= TOL[torch.float32]
    assert relative_error(hostile.pooler_output, clean.pooler_output) <= TOL[torch.float32]


@pytest.mark.parametrize("unpad", [True, False])
def test_non_finite_padding_keeps_the_mlm_loss_finite(unpad):
    config = tiny_config(unpad_inputs=unpad)
    model = randomize_weights(HydraForMaskedLM(config)).eval()
    mask = padding_mask(LENGTHS, SEQLEN, left=True)
    ids = torch.randint(1, config.vocab_size, mask.shape)
    labels = ids.masked_fill(mask == 0, -100)
    embeds = model.hydra.embeddings.word_embeddings(ids).detach()
    with torch.no_grad():
        clean = model(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss
        hostile = model(inputs_embeds=embeds.masked_fill(mask[..., None] == 0, float("nan")), attention_mask=mask,
                        labels=labels).loss
    assert torch.isfinite(hostile) and relative_error(hostile, clean) <= TOL[torch.float32]
