"""Padding invariance: outputs at real tokens do not depend on the amount or side of padding (the original code lets
padded positions leak into the backward scan; this implementation keeps them out)."""

import pytest
import torch

from conftest import tiny_config
from modeling_hydra import (HydraForMaskedLM, HydraForMultipleChoice, HydraForQuestionAnswering,
                            HydraForSequenceClassification, HydraForTokenClassification, HydraModel)

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: threads only contend

TOL = 1e-5
ROW_LEN = 9
PADS = (3, 12)  # the longer one crosses several chunks of 8


def per_token_outputs(model, out):
    """The outputs of one forward that are indexed by token: name -> (batch, seqlen, ...)."""
    if isinstance(model, HydraModel):
        return {"last_hidden_state": out.last_hidden_state}
    if isinstance(model, HydraForQuestionAnswering):
        return {"start_logits": out.start_logits, "end_logits": out.end_logits}
    if isinstance(model, (HydraForMaskedLM, HydraForTokenClassification)):
        return {"logits": out.logits}
    return {}


def per_row_outputs(model, out):
    """The outputs of one forward that are indexed by row only: name -> (batch, ...)."""
    if isinstance(model, HydraModel):
        return {"pooler_output": out.pooler_output}
    if isinstance(model, HydraForSequenceClassification):
        return {"logits": out.logits}
    return {}


def padded_batch(row, n_pad, left, vocab_size):
    """(input_ids, attention_mask, real) with `row` padded by `n_pad` random ids (not only pad ids)."""
    pad = torch.randint(1, vocab_size, (n_pad,))
    ids = torch.cat([pad, row]) if left else torch.cat([row, pad])
    mask = torch.cat([torch.zeros(n_pad), torch.ones(len(row))]) if left else \
        torch.cat([torch.ones(len(row)), torch.zeros(n_pad)])
    real = slice(n_pad, None) if left else slice(0, len(row))
    return ids[None], mask.long()[None], real


def max_difference(model, row, n_pad, left, vocab_size):
    alone = model(row[None])
    ids, mask, real = padded_batch(row, n_pad, left, vocab_size)
    padded = model(ids, attention_mask=mask)
    diffs = {name: (t[:, real] - per_token_outputs(model, alone)[name]).abs().max().item()
             for name, t in per_token_outputs(model, padded).items()}
    diffs.update({name: (t - per_row_outputs(model, alone)[name]).abs().max().item()
                  for name, t in per_row_outputs(model, padded).items()})
    return diffs


CONFIGS = {
    "post-norm, cls pooling": {},
    "pre-norm, mean pooling, position embeddings": dict(is_prenorm=True, classifier_pooling="mean",
                                                         use_position_embeddings=True),
}


@pytest.mark.parametrize("config_name", list(CONFIGS))
@pytest.mark.parametrize("model_class", [HydraModel, HydraForMaskedLM, HydraForSequenceClassification,
                                         HydraForTokenClassification, HydraForQuestionAnswering])

def test_padded_row_equals_row_alone(model_class, config_name):
    config = tiny_config(num_labels=3, **CONFIGS[config_name])
    model = model_class(config).eval()
    row = torch.randint(1, config.vocab_size, (ROW_LEN,))
    with torch.no_grad():
        for n_pad in PADS:
            for left in (False, True):
                diffs = max_difference(model, row, n_pad, left, config.vocab_size)
                assert diffs, "no output was compared"
                for name, diff in diffs.items():
                    assert diff <= TOL, f"{'left' if left else 'right'} padding by {n_pad}: {name} differs by {diff}"


def test_multiple_choice_padding():
    config = tiny_config()
    model = HydraForMultipleChoice(config).eval()
    choices = torch.randint(1, config.vocab_size, (1, 2, ROW_LEN))
    ids = torch.randint(1, config.vocab_size, (1, 2, ROW_LEN + 5))
    mask = torch.zeros(1, 2, ROW_LEN + 5, dtype=torch.long)
    ids[0, 0, :ROW_LEN], mask[0, 0, :ROW_LEN] = choices[0, 0], 1  # right-padded
    ids[0, 1, 5:], mask[0, 1, 5:] = choices[0, 1], 1  # left-padded
    with torch.no_grad():
        alone = model(choices).logits
        padded = model(ids, attention_mask=mask).logits
    assert (padded - alone).abs().max() <= TOL


def test_rows_of_different_lengths_in_one_batch():
    """A batch of rows of several lengths, padded on the right, equals each row run alone."""
    config = tiny_config()
    model = HydraForMaskedLM(config).eval()
    lengths = [3, 17, 9, 1]
    ids = torch.randint(1, config.vocab_size, (len(lengths), max(lengths)))
    mask = (torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]).long()
    with torch.no_grad():
        batched = model(ids, attention_mask=mask).logits
        for i, n in enumerate(lengths):
            alone = model(ids[i:i + 1, :n]).logits
            assert (batched[i, :n] - alone[0]).abs().max() <= TOL
