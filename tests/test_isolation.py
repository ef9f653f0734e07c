"""A sequence's output depends on nothing but that sequence, on every layout of the default path.

Padding-free rows (`unpad_inputs=True`, the default) and packed rows put several sequences in one row and one SSD
chunk. These tests put non-finite or huge values, and huge decays, in one sequence and check that every other
sequence still gets its stand-alone result, and that the poisoned sequence does not come out silently finite.
"""

import pytest
import torch

from conftest import perturb_ssm_parameters, tiny_config
from modeling_hydra import HydraModel
from modeling_hydra.ssd_torch import ssd_bidirectional_torch
from packing_helpers import ids_from_lengths, relative_error, spans
from ssd_oracle import ssd_oracle

LENGTHS = [5, 3, 7, 2]  # real tokens of the four rows of a right-padded batch
POISONS = [float("nan"), float("inf"), -float("inf"), 1e30]


def padded_batch(config, lengths=LENGTHS, seed=0):
    g = torch.Generator().manual_seed(seed)
    seqlen = max(lengths)
    embeds = torch.randn(len(lengths), seqlen, config.hidden_size, generator=g)
    mask = (torch.arange(seqlen)[None] < torch.tensor(lengths)[:, None]).long()
    return embeds, mask


@pytest.fixture
def model():
    return perturb_ssm_parameters(HydraModel(tiny_config(chunk_size=256))).eval()


@pytest.mark.parametrize("poison", POISONS)
def test_a_poisoned_row_never_reaches_the_other_rows_of_a_padding_free_batch(model, poison):
    embeds, mask = padded_batch(model.config)
    poisoned = embeds.clone()
    poisoned[1, 1] = poison  # one token of row 1
    with torch.no_grad():
        clean = model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        out = model(inputs_embeds=poisoned, attention_mask=mask).last_hidden_state
        model.config.unpad_inputs = False
        padded = model(inputs_embeds=poisoned, attention_mask=mask).last_hidden_state
    real = mask.bool()
    for row in (0, 2, 3):
        assert torch.isfinite(out[row][real[row]]).all(), f"row {row} was poisoned by row 1"
        assert relative_error(out[row][real[row]], clean[row][real[row]]) <= 1e-6
        assert relative_error(out[row][real[row]], padded[row][real[row]]) <= 1e-5
    if poison != 1e30:  # a non-finite input stays visible in its own row, as on the padded path
        assert torch.isfinite(out[1][real[1]]).all() == torch.isfinite(padded[1][real[1]]).all() == False  # noqa


@pytest.mark.parametrize("boundaries", ["seq_idx", "cu_seq_lens", "position_ids"])
def test_a_poisoned_sequence_never_reaches_its_packed_neighbours(model, boundaries):
    lengths = [4, 3, 6]
    total = sum(lengths)
    g = torch.Generator().manual_seed(1)
    embeds = torch.randn(1, total, model.config.hidden_size, generator=g)
    ids = ids_from_lengths(lengths)[None]
    cu = torch.tensor([0, 4, 7, 13], dtype=torch.int32)
    kwargs = {"seq_idx": {"seq_idx": ids}, "cu_seq_lens": {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu},
              "position_ids": {"position_ids": torch.cat([torch.arange(n) for n in lengths])[None]}}[boundaries]
    poisoned = embeds.clone()
    poisoned[0, 5] = float("nan")  # inside the second sequence
    with torch.no_grad():
        out = model(inputs_embeds=poisoned, **kwargs).last_hidden_state
        for k, (start, end) in enumerate(spans(lengths)):
            alone = model(inputs_embeds=poisoned[:, start:end]).last_hidden_state
            if k == 1:
                assert not torch.isfinite(out[:, start:end]).all() and not torch.isfinite(alone).all()
            else:
                assert relative_error(out[:, start:end], alone) <= 1e-5, f"sequence {k}"


def test_the_filler_slots_of_padding_free_rows_cannot_poison_a_row():
    """The unused slots at a padding-free row's end read token id 0; an embedding of id 0 that overflows there must
    not reach the real tokens (the padded path masks it)."""
    model = perturb_ssm_parameters(HydraModel(tiny_config(chunk_size=256), add_pooling_layer=False)).eval()
    with torch.no_grad():
        model.embeddings.word_embeddings.weight[0] = float("inf")
    ids = torch.randint(1, model.config.vocab_size, (4, 7))
    _, mask = padded_batch(model.config)
    with torch.no_grad():
        free = model(ids, attention_mask=mask).last_hidden_state
        model.config.unpad_inputs = False
        padded = model(ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    assert torch.isfinite(free[real]).all() and torch.isfinite(padded[real]).all()
    assert relative_error(free[real], padded[real]) <= 1e-5


def test_float16_overflow_in_one_row_stays_in_that_row():
    """One token of row 2 overflows float16 in the first in_proj (a large embedding coordinate meets a large weight
    column); the other rows keep their results."""
    model = perturb_ssm_parameters(HydraModel(tiny_config(chunk_size=256))).eval()
    with torch.no_grad():
        gate_rows = slice(0, model.config.d_inner)  # z: the gate, per token (its overflow then enters layer 1's scans)
        model.encoder.layer[0].mixer.in_proj.weight[gate_rows, 0] = 3e4  # 3e4 * (a coordinate of ~5.5) > 65504
    model = model.half()
    embeds, mask = padded_batch(model.config)
    embeds[..., 0] = 0.0  # normalized coordinate 0 stays small: no overflow
    poisoned = embeds.clone()
    poisoned[2, 1, 0] = 100.0  # after the LayerNorm about sqrt(hidden_size) = 5.7
    with torch.no_grad():
        clean = model(inputs_embeds=embeds.half(), attention_mask=mask).last_hidden_state
        out = model(inputs_embeds=poisoned.half(), attention_mask=mask).last_hidden_state
    real = mask.bool()
    assert torch.isfinite(clean[real]).all() and not torch.isfinite(out[2][real[2]]).all()
    for row in (0, 1, 3):
        assert torch.isfinite(out[row][real[row]]).all(), f"row {row} was poisoned by row 2"
        assert relative_error(out[row][real[row]].float(), clean[row][real[row]].float()) <= 1e-2


def test_huge_decays_of_a_packed_neighbour_leave_a_sequence_as_accurate_as_alone():
    """|A|·Δ of 100-1000 per step in the middle sequence: the others keep their stand-alone float32 accuracy."""
    lengths = [40, 30, 50]
    total = sum(lengths)
    g = torch.Generator().manual_seed(2)
    nheads, headdim, d_state = 3, 4, 5
    x = torch.randn(1, total, nheads, headdim, generator=g)
    dt = torch.rand(1, total, nheads, generator=g) * 0.5 + 0.05
    start, end = spans(lengths)[1]
    dt[:, start:end] = torch.rand(1, end - start, nheads, generator=g) * 900 + 100
    A = -torch.rand(nheads, generator=g) - 0.5
    B, C = (torch.randn(1, total, 1, d_state, generator=g) for _ in range(2))
    diag = torch.randn(1, total, nheads, generator=g)
    inputs = (x, dt, dt.flip(-1), A, B, C, C.flip(-1), B.flip(-1), diag)
    seq_idx = ids_from_lengths(lengths)[None]
    y64 = ssd_oracle(*(t.double() for t in inputs), seq_idx=seq_idx)
    for chunk in (16, 64, 128):
        packed = ssd_bidirectional_torch(*inputs, chunk, seq_idx=seq_idx)
        for k in (0, 2):
            s, e = spans(lengths)[k]
            alone = ssd_bidirectional_torch(*(t if t.dim() == 1 else t[:, s:e] for t in inputs), chunk)
            err_alone = relative_error(alone, y64[:, s:e])
            err_packed = relative_error(packed[:, s:e], y64[:, s:e])
            # float32 rounding of sums over at most `chunk` terms of size O(1): a few units of 2^-24 * chunk
            assert err_packed <= max(4 * err_alone, 64 * chunk * 2.0**-24), (chunk, k, err_packed, err_alone)


def test_sequence_ids_that_differ_above_32_bits_are_different_sequences(model):
    g = torch.Generator().manual_seed(3)
    embeds = torch.randn(1, 7, model.config.hidden_size, generator=g)
    seq_idx = torch.tensor([[5, 5, 5, 5 + 2**32, 5 + 2**32, 5 + 2**32, 5 + 2**32]])
    with torch.no_grad():
        out = model(inputs_embeds=embeds, seq_idx=seq_idx).last_hidden_state
        for s, e in ((0, 3), (3, 7)):
            assert relative_error(out[:, s:e], model(inputs_embeds=embeds[:, s:e]).last_hidden_state) <= 1e-5
