"""Malformed packed-sequence input gives a ValueError that names the problem; padded batches are never split; a
backend that cannot keep sequences apart refuses packed rows and still serves padded batches."""

import pytest
import torch

from conftest import tiny_config
from modeling_hydra import (HydraForMaskedLM, HydraForMultipleChoice, HydraForQuestionAnswering,
                            HydraForSequenceClassification, HydraModel, ssd_backends)
from modeling_hydra.ssd_backends import SSDBackend, clear_backend_cache
from modeling_hydra.ssd_torch import ssd_bidirectional_torch
from packing_helpers import ids_from_lengths, randomize_weights, relative_error

pytestmark = pytest.mark.usefixtures("single_thread")

LENGTHS = [3, 1, 4]
TOTAL = sum(LENGTHS)


@pytest.fixture(scope="module")
def model():
    return randomize_weights(HydraModel(tiny_config(use_position_embeddings=True))).eval()


def ids(batch=1, seqlen=TOTAL):
    return torch.randint(1, 120, (batch, seqlen))


def cu(values):
    return torch.tensor(values, dtype=torch.int32)


@pytest.mark.parametrize("values, message", [
    ([1, 3, 4, 8], "must start at 0"),
    ([0, 3, 3, 8], "must be strictly increasing"),
    ([0, 4, 3, 8], "must be strictly increasing"),
    ([0, 3, 4, 7], r"must end at the number of tokens in the batch \(8\)"),
    ([0, 3, 4, 9], r"must end at the number of tokens in the batch \(8\)"),
])
@pytest.mark.parametrize("name", ["cu_seq_lens_q", "cu_seq_lens_k"])
def test_malformed_cu_seq_lens(model, name, values, message):
    with pytest.raises(ValueError, match=rf"{name} {message}"):
        model(ids(), **{name: cu(values)})


def test_cu_seq_lens_of_wrong_kind(model):
    with pytest.raises(ValueError, match="cu_seq_lens_q must be a 1-D integer tensor"):
        model(ids(), cu_seq_lens_q=torch.tensor([0.0, 3.0, 8.0]))
    with pytest.raises(ValueError, match="cu_seq_lens_q and cu_seq_lens_k must be equal"):
        model(ids(), cu_seq_lens_q=cu([0, 3, 8]), cu_seq_lens_k=cu([0, 4, 8]))
    with pytest.raises(ValueError, match="boundary at the end of every row"):  # a sequence running into row 2
        model(ids(batch=2, seqlen=4), cu_seq_lens_q=cu([0, 3, 8]))


def test_seq_idx_not_monotone(model):
    with pytest.raises(ValueError, match="seq_idx must be non-decreasing"):
        model(ids(), seq_idx=torch.tensor([[0, 0, 0, 1, 2, 2, 1, 2]], dtype=torch.int32))


def test_seq_idx_of_wrong_shape_or_dtype(model):
    with pytest.raises(ValueError, match=r"seq_idx must be an integer tensor of shape \(batch, seqlen\)"):
        model(ids(), seq_idx=torch.zeros(TOTAL, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"seq_idx must be an integer tensor"):
        model(ids(), seq_idx=torch.zeros(1, TOTAL))


def test_seq_idx_and_cu_seq_lens_that_disagree(model):
    with pytest.raises(ValueError, match="seq_idx and cu_seq_lens_q describe different sequence boundaries"):
        model(ids(), seq_idx=ids_from_lengths(LENGTHS)[None], cu_seq_lens_q=cu([0, 4, 8]))


@pytest.mark.parametrize("boundaries", ["seq_idx", "restarting position_ids"])
def test_position_ids_that_do_not_restart_where_a_sequence_starts(model, boundaries):
    if boundaries == "seq_idx":  # explicit boundaries, position ids that run on across them
        kwargs = {"seq_idx": ids_from_lengths(LENGTHS)[None], "position_ids": torch.arange(TOTAL)[None]}
    else:  # position ids that restart at 5 instead of 0
        kwargs = {"position_ids": torch.tensor([[0, 1, 2, 5, 6, 7, 8, 9]])}
    with pytest.raises(ValueError, match="position_ids of packed rows must restart at 0 where each sequence starts"):
        model(ids(), **kwargs)


@pytest.mark.parametrize("mask_kind", ["hole", "padding at the end"])
@pytest.mark.parametrize("boundaries", ["seq_idx", "cu_seq_lens_q"])
def test_packed_rows_with_a_padding_mask(model, mask_kind, boundaries):
    mask = torch.ones(1, TOTAL, dtype=torch.long)
    mask[0, 2 if mask_kind == "hole" else -1] = 0
    kwargs = {"seq_idx": ids_from_lengths(LENGTHS)[None]} if boundaries == "seq_idx" else \
        {"cu_seq_lens_q": cu([0, 3, 4, 8])}
    with pytest.raises(ValueError, match="Packed rows .* cannot also carry padding in attention_mask"):
        model(ids(), attention_mask=mask, **kwargs)


@pytest.mark.parametrize("model_class", [HydraForSequenceClassification, HydraForQuestionAnswering])
@pytest.mark.parametrize("boundaries", ["seq_idx", "cu_seq_lens", "restarting position_ids"])
def test_sequence_level_heads_refuse_packed_rows(model_class, boundaries):
    head = model_class(tiny_config(num_labels=2)).eval()
    kwargs = {"seq_idx": {"seq_idx": ids_from_lengths(LENGTHS)[None]},
              "cu_seq_lens": {"cu_seq_lens_q": cu([0, 3, 4, 8]), "cu_seq_lens_k": cu([0, 3, 4, 8])},
              "restarting position_ids": {"position_ids": torch.tensor([[0, 1, 2, 0, 0, 1, 2, 3]])}}[boundaries]
    with pytest.raises(ValueError, match=f"{model_class.__name__} scores one sequence per row.*padded batch"):
        head(ids(), **kwargs)
    row = ids(batch=1, seqlen=5)
    with torch.no_grad():  # one sequence per row, marked as such, is accepted and equals the unmarked row
        marked = head(row, seq_idx=torch.zeros(1, 5, dtype=torch.int32))
        unmarked = head(row)
    for name in ("logits", "start_logits", "end_logits"):
        if name in unmarked:
            assert relative_error(marked[name], unmarked[name]) <= 1e-6, name


def test_multiple_choice_refuses_packed_rows():
    head = HydraForMultipleChoice(tiny_config()).eval()
    with pytest.raises(ValueError, match=r"HydraForMultipleChoice scores one sequence per row.*padded batch"):
        head(ids(batch=2)[None], seq_idx=ids_from_lengths(LENGTHS)[None].expand(2, -1)[None])


def test_a_padded_batch_with_ordinary_position_ids_is_never_split(model):
    """Ordinary position ids (0, 1, 2, ... per row, or counting only the real tokens) never make a row packed."""
    batch = ids(batch=2, seqlen=6)
    right = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    left = right.flip(-1)
    with torch.no_grad():
        for mask in (right, left):
            reference = model(batch, attention_mask=mask).last_hidden_state
            counted = (mask.cumsum(-1) - 1).clamp(min=0)  # 0 at left pads, then 0, 1, 2, ...: looks like a restart
            for position_ids in (counted, counted[1:]):
                rows = slice(None) if len(position_ids) == 2 else slice(1, 2)
                out = model(batch[rows], attention_mask=mask[rows], position_ids=position_ids).last_hidden_state
                real = mask[rows].bool()
                assert relative_error(out[real], reference[rows][real]) <= 1e-6
        # one row, no padding, ordinary position ids: one sequence
        one = model(batch[:1], position_ids=torch.arange(6)[None]).last_hidden_state
        assert relative_error(one, model(batch[:1]).last_hidden_state) <= 1e-6
        # several rows without padding whose position ids restart: each row is split at its own restarts
        restart = torch.tensor([[0, 1, 2, 0, 1, 2]] * 2)
        rows = model(batch, position_ids=restart).last_hidden_state
        for b in range(2):
            for piece in (slice(0, 3), slice(3, 6)):
                alone = model(batch[b:b + 1, piece]).last_hidden_state
                assert relative_error(rows[b:b + 1, piece], alone) <= 1e-6
        # restarts inside the real tokens of a padded batch are neither padded nor packed rows: refused
        with pytest.raises(ValueError, match="position_ids restart inside the real tokens of a padded batch"):
            model(batch, attention_mask=right, position_ids=restart)


@pytest.fixture
def backend_without_boundaries(monkeypatch):
    """The torch kernel registered as a backend that declares it cannot keep sequences apart (as "triton" and
    "mamba_ssm" do), so that the refusal is tested on CPU without triton or mamba_ssm."""
    def install(name):
        fake = SSDBackend(name, "test double", lambda device: ssd_bidirectional_torch, honours_boundaries=False)
        monkeypatch.setitem(ssd_backends.SSD_BACKENDS, name, fake)
        clear_backend_cache()
    yield install
    clear_backend_cache()


@pytest.mark.parametrize("backend", ["triton", "mamba_ssm"])
def test_backends_without_boundaries_refuse_packed_rows(backend, backend_without_boundaries):
    assert ssd_backends.SSD_BACKENDS[backend].honours_boundaries == (backend == "triton")
    backend_without_boundaries(backend)
    model = HydraForMaskedLM(tiny_config(ssd_backend=backend)).eval()
    with pytest.raises(ValueError, match=f"ssd_backend='{backend}' cannot keep packed sequences apart"):
        model(ids(), seq_idx=ids_from_lengths(LENGTHS)[None])
    with pytest.raises(ValueError, match=f"ssd_backend='{backend}' cannot keep packed sequences apart"):
        model(ids(), position_ids=torch.tensor([[0, 1, 2, 0, 0, 1, 2, 3]]))


@pytest.mark.parametrize("backend", ["triton", "mamba_ssm"])
def test_backends_without_boundaries_still_take_padded_batches(backend, backend_without_boundaries):
    """A padded batch is the user's ordinary input: on a backend that cannot keep sequences apart it must take the
    padded path (not the padding-free one, which needs boundaries), whatever `unpad_inputs` says."""
    reference = HydraForMaskedLM(tiny_config(unpad_inputs=False)).eval()
    backend_without_boundaries(backend)
    model = HydraForMaskedLM(tiny_config(ssd_backend=backend)).eval()
    model.load_state_dict(reference.state_dict())
    batch, mask = ids(batch=2, seqlen=6), torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    with torch.no_grad():
        out = model(batch, attention_mask=mask).logits
        expected = reference(batch, attention_mask=mask).logits
    real = mask.bool()
    assert relative_error(out[real], expected[real]) <= 1e-6
