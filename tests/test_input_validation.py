"""Bad inputs raise a ValueError that names the problem; edge cases (all padding, bf16 on CPU) stay finite."""

import pytest
import torch

from conftest import tiny_config
from modeling_hydra import HydraForMaskedLM, HydraForSequenceClassification, HydraModel

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: threads only contend


@pytest.fixture(scope="module")
def model():
    return HydraModel(tiny_config()).eval()


def test_token_id_out_of_range_names_the_max_id(model):
    vocab = model.config.vocab_size
    with pytest.raises(ValueError, match=rf"\[0, {vocab - 1}\]"):
        model(torch.tensor([[1, 2, vocab]]))
    with pytest.raises(ValueError, match=rf"\[0, {vocab - 1}\]"):
        model(torch.tensor([[1, -1, 3]]))
    model(torch.tensor([[0, vocab - 1]]))  # both ends of the range are accepted


@pytest.mark.parametrize("shape", [(7,), (2, 3, 7)])
def test_input_ids_must_be_2d(model, shape):
    with pytest.raises(ValueError, match="2-D"):
        model(torch.ones(shape, dtype=torch.long))


def test_exactly_one_of_input_ids_and_inputs_embeds(model):
    ids = torch.ones(1, 4, dtype=torch.long)
    embeds = torch.randn(1, 4, model.config.hidden_size)
    with pytest.raises(ValueError, match="exactly one.*both"):
        model(input_ids=ids, inputs_embeds=embeds)
    with pytest.raises(ValueError, match="exactly one.*neither"):
        model()
    with torch.no_grad():  # inputs_embeds = the word embeddings gives the same result as the ids
        assert torch.allclose(model(inputs_embeds=model.embeddings.word_embeddings(ids)).last_hidden_state,
                              model(ids).last_hidden_state, atol=1e-6)



def test_attention_mask_shape_must_match(model):
    with pytest.raises(ValueError, match="attention_mask must have the shape"):
        model(torch.ones(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 4, dtype=torch.long))


def test_empty_sequence(model):
    with pytest.raises(ValueError, match="sequence length is 0"):
        model(torch.ones(2, 0, dtype=torch.long))


def test_token_type_out_of_range(model):
    n_types = model.config.type_vocab_size
    with pytest.raises(ValueError, match=rf"token_type_ids must lie in \[0, {n_types - 1}\]"):
        model(torch.ones(1, 3, dtype=torch.long), token_type_ids=torch.tensor([[0, 1, n_types]]))


def test_all_padding_row_is_finite():
    config = tiny_config()
    model = HydraForMaskedLM(config).eval()
    ids = torch.randint(1, config.vocab_size, (2, 10))
    mask = torch.ones_like(ids)
    mask[1] = 0
    with torch.no_grad():
        logits = model(ids, attention_mask=mask).logits
        alone = model(ids[:1]).logits
    assert torch.isfinite(logits).all()
    assert torch.allclose(logits[0], alone[0], atol=1e-5)  # the other row is unaffected
    pooled = HydraForSequenceClassification(tiny_config(classifier_pooling="mean")).eval()
    with torch.no_grad():
        assert torch.isfinite(pooled(ids, attention_mask=mask).logits).all()


def test_bf16_weights_run_on_cpu():
    config = tiny_config()
    model = HydraForMaskedLM(config).eval()
    ids = torch.randint(1, config.vocab_size, (2, 19))
    mask = torch.ones_like(ids)
    mask[1, -5:] = 0
    with torch.no_grad():
        reference = model(ids, attention_mask=mask).logits
        model.to(torch.bfloat16)
        logits = model(ids, attention_mask=mask).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    err = (logits.float() - reference).abs().max().item()
    assert err < 0.05 * reference.abs().max().item(), f"bf16 deviates by {err}"


@pytest.mark.parametrize("dtype", [torch.int16, torch.uint8, torch.int32])
def test_narrow_integer_ids_compute_what_int64_ids_compute(model, dtype):
    ids = torch.tensor([[5, 17, 99, 3], [1, 2, 3, 4]])
    expected = model(ids).last_hidden_state
    torch.testing.assert_close(model(ids.to(dtype)).last_hidden_state, expected, rtol=0, atol=0)


def test_inputs_embeds_of_another_dtype_names_both_dtypes(model):
    embeds = torch.randn(2, 5, model.config.hidden_size, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"float64.*float32"):
        model(inputs_embeds=embeds)


def test_zero_choices_is_a_value_error():
    from modeling_hydra import HydraForMultipleChoice

    model = HydraForMultipleChoice(tiny_config()).eval()
    with pytest.raises(ValueError, match="batch is empty"):
        model(torch.ones(2, 0, 5, dtype=torch.long))
