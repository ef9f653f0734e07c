"""Packed rows (sequence boundaries): several sequences back to back in one row, each getting exactly its stand-alone
result, in the mixer, in the whole model (position embeddings included) and with batches made by transformers'
`DataCollatorWithFlattening` (against the same sequences padded by `DataCollatorWithPadding`)."""

import pytest
import torch
from transformers import AutoTokenizer, DataCollatorWithFlattening, DataCollatorWithPadding

from conftest import TOKENIZER_DIR, tiny_config, run_mixer
from glue_test_helpers import GLUE_SAMPLE, read_official_tsv
from modeling_hydra import HydraForMaskedLM, HydraForTokenClassification, HydraModel
from modeling_hydra.hydra_mixer import HydraMixer
from packing_helpers import ids_from_lengths, randomize_weights, relative_error, spans
from ssd_oracle import module_oracle

pytestmark = pytest.mark.usefixtures("single_thread")

TOL = {torch.float64: 1e-12, torch.float32: 1e-5}
LENGTHS = [1, 2, 3, 12, 1, 9, 2]  # 1-3 are shorter than the conv's half-width (3); 12 crosses chunks of 4 and 8


def mixer_grads(mixer, u, pieces):
    """Gradients of sum(out * w) w.r.t. u and every parameter, where `pieces(u)` gives [(out, w)]."""
    u = u.clone().requires_grad_(True)
    params = list(mixer.parameters())
    loss = sum((out * w).sum() for out, w in pieces(u))
    return torch.autograd.grad(loss, [u, *params])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("chunk_size", [4, 8, 256])
@pytest.mark.parametrize("recompute", ["never", "always"])
def test_mixer_packed_row_equals_each_sequence_alone(chunk_size, dtype, recompute):
    mixer = randomize_weights(HydraMixer(tiny_config(chunk_size=chunk_size, mixer_recompute=recompute))).to(dtype)
    seqlen = sum(LENGTHS)
    u = torch.randn(1, seqlen, mixer.hidden_size, dtype=dtype)
    w = torch.randn(1, seqlen, mixer.hidden_size, dtype=dtype)
    seq_idx = ids_from_lengths(LENGTHS, dtype=torch.int32)[None]

    with torch.no_grad():
        packed = run_mixer(mixer, u, seq_idx=seq_idx)
        alone = torch.cat([run_mixer(mixer, u[:, s:e]) for s, e in spans(LENGTHS)], dim=1)
    assert alone.abs().max() > 0.1
    err = relative_error(packed, alone)
    assert err <= TOL[dtype], f"packed mixer output differs from the sequences alone by {err:.2e}"

    packed_grads = mixer_grads(mixer, u, lambda u: [(run_mixer(mixer, u, seq_idx=seq_idx), w)])
    alone_grads = mixer_grads(mixer, u, lambda u: [(run_mixer(mixer, u[:, s:e]), w[:, s:e]) for s, e in spans(LENGTHS)])
    names = ["input"] + [n for n, _ in mixer.named_parameters()]
    for name, got, want in zip(names, packed_grads, alone_grads):
        err = relative_error(got, want)
        assert err <= TOL[dtype] * 10, f"grad of {name} differs by {err:.2e}"


def test_mixer_packed_row_equals_independent_reference():
    """The float64 packed mixer against the float64 oracle (materialized matrix) of each sequence alone."""
    config = tiny_config(hidden_size=8, headdim=4, d_state=3, d_conv=5, chunk_size=4)
    mixer = randomize_weights(HydraMixer(config)).double()
    u = torch.randn(1, sum(LENGTHS), 8, dtype=torch.float64)
    with torch.no_grad():
        packed = run_mixer(mixer, u, seq_idx=ids_from_lengths(LENGTHS)[None])
    expected = torch.cat([module_oracle(mixer, u[:, s:e]) for s, e in spans(LENGTHS)], dim=1)
    assert relative_error(packed, expected) <= TOL[torch.float64]


MODEL_CONFIGS = {
    "post-norm": {},
    "pre-norm, position embeddings": dict(is_prenorm=True, use_position_embeddings=True),
}
BOUNDARY_KINDS = ["position_ids", "seq_idx", "cu_seq_lens"]


def boundary_kwargs(kind, lengths):
    """The kwargs that mark the sequences of one packed row of `lengths`."""
    if kind == "position_ids":
        return {"position_ids": torch.cat([torch.arange(n) for n in lengths])[None]}
    if kind == "seq_idx":
        return {"seq_idx": ids_from_lengths(lengths, dtype=torch.int32)[None]}
    cu = torch.tensor([0] + lengths).cumsum(0).to(torch.int32)
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": max(lengths), "max_length_k": max(lengths)}


def per_token(model, out):
    """The per-token outputs of a forward with output_hidden_states=True: (1, seqlen, hidden + num_outputs)."""
    last = out.last_hidden_state if isinstance(model, HydraModel) else out.hidden_states[-1]
    return last if isinstance(model, HydraModel) else torch.cat([last, out.logits], dim=-1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", BOUNDARY_KINDS)
@pytest.mark.parametrize("config_name", list(MODEL_CONFIGS))
@pytest.mark.parametrize("model_class", [HydraModel, HydraForMaskedLM, HydraForTokenClassification])
def test_model_packed_row_equals_each_sequence_alone(model_class, config_name, kind, dtype):
    config = tiny_config(chunk_size=4, num_labels=3, output_hidden_states=True, **MODEL_CONFIGS[config_name])
    model = randomize_weights(model_class(config)).to(dtype).eval()
    ids = torch.randint(1, config.vocab_size, (1, sum(LENGTHS)))
    with torch.no_grad():
        packed = per_token(model, model(ids, **boundary_kwargs(kind, LENGTHS)))
        alone = torch.cat([per_token(model, model(ids[:, s:e])) for s, e in spans(LENGTHS)], dim=1)
        mixed = per_token(model, model(ids))  # the same row read as one sequence
    err = relative_error(packed, alone)
    assert err <= TOL[dtype], f"packed row differs from the sequences alone by {err:.2e}"
    assert relative_error(mixed, alone) > 1e-2  # the comparison can fail


def test_packed_pooler_gives_one_vector_per_sequence():
    """HydraModel's pooler on a packed row: (num_sequences, hidden), each the pooled output of the sequence alone."""
    for pooling in ("cls", "mean"):
        model = randomize_weights(HydraModel(tiny_config(chunk_size=4, classifier_pooling=pooling))).eval()
        ids = torch.randint(1, model.config.vocab_size, (1, sum(LENGTHS)))
        with torch.no_grad():
            pooled = model(ids, **boundary_kwargs("seq_idx", LENGTHS)).pooler_output
            alone = torch.cat([model(ids[:, s:e]).pooler_output for s, e in spans(LENGTHS)])
        assert pooled.shape == alone.shape
        assert relative_error(pooled, alone) <= TOL[torch.float32], pooling


def test_packed_gradients_equal_each_sequence_alone():
    """float64 gradients of every parameter of HydraForMaskedLM: one packed row vs the sequences run one by one."""
    config = tiny_config(chunk_size=4, use_position_embeddings=True)
    model = randomize_weights(HydraForMaskedLM(config)).double().train()
    ids = torch.randint(1, config.vocab_size, (1, sum(LENGTHS)))
    w = torch.randn(1, sum(LENGTHS), config.vocab_size, dtype=torch.float64)

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    packed = grads((model(ids, **boundary_kwargs("position_ids", LENGTHS)).logits * w).sum())
    alone = grads(sum((model(ids[:, s:e]).logits * w[:, s:e]).sum() for s, e in spans(LENGTHS)))
    assert packed.keys() == alone.keys() and len(packed) > 10
    for name in packed:
        err = relative_error(packed[name], alone[name])
        assert err <= 1e-11, f"grad of {name} differs by {err:.2e}"


# ----------------------------------------------------------------------------------------------------------
# transformers' DataCollatorWithFlattening against DataCollatorWithPadding


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


@pytest.fixture(scope="module")
def sentences():
    """Real SST-2 sentences of varied lengths, the first one cut to 3 tokens ([CLS] x [SEP])."""
    rows, _ = read_official_tsv(GLUE_SAMPLE / "SST-2" / "train.tsv", ["sentence"], limit=7)
    return ["ok"] + [s for (s,) in rows]


FLATTENING_OPTIONS = {
    "position_ids only": dict(),
    "flash-attention kwargs": dict(return_flash_attn_kwargs=True),
    "seq_idx": dict(return_seq_idx=True),
    "all of them": dict(return_flash_attn_kwargs=True, return_seq_idx=True),
    "cu_seq_lens without position_ids": dict(return_flash_attn_kwargs=True, return_position_ids=False),
}


@pytest.mark.parametrize("options", list(FLATTENING_OPTIONS))
@pytest.mark.parametrize("model_class", [HydraForMaskedLM, HydraForTokenClassification])
def test_flattening_collator_equals_padded_batch(model_class, options, tokenizer, sentences):
    features = [tokenizer(s, truncation=True, max_length=40) for s in sentences]
    for f in features:
        f["labels"] = [i % 3 for i in range(len(f["input_ids"]))]  # token labels (ignored by MaskedLM's logits)
    flat = DataCollatorWithFlattening(**FLATTENING_OPTIONS[options])(
        [{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features])
    padded = DataCollatorWithPadding(tokenizer)([{k: v for k, v in f.items() if k != "labels"} for f in features])
    lengths = [len(f["input_ids"]) for f in features]
    assert min(lengths) == 3 and flat["input_ids"].shape == (1, sum(lengths))

    # the masked (padded) path as the independent reference; chunks of 8 so that sequences cross chunks
    config = tiny_config(vocab_size=len(tokenizer), chunk_size=8, num_labels=3, unpad_inputs=False,
                         use_position_embeddings=True)
    model = randomize_weights(model_class(config)).eval()
    flat.pop("labels")  # the collator's labels are causal-LM labels; only the logits are compared
    with torch.no_grad():
        packed_logits = model(**flat).logits[0]  # (total, num_outputs)
        padded_logits = model(**padded).logits
        one_sequence_logits = model(flat["input_ids"]).logits[0]  # the row read as one sequence
    expected = torch.cat([padded_logits[i, :n] for i, n in enumerate(lengths)])
    err = relative_error(packed_logits, expected)
    assert err <= TOL[torch.float32], f"{options}: packed logits differ from the padded batch by {err:.2e}"
    assert relative_error(one_sequence_logits, expected) > 1e-2  # the comparison can fail


@pytest.mark.parametrize("kind", ["seq_idx", "cu_seq_lens"])
def test_several_packed_rows(kind):
    """A batch of two packed rows (every row end a boundary): each sequence gets its stand-alone result."""
    rows = [[5, 1, 10], [2, 12, 2]]
    model = randomize_weights(HydraForMaskedLM(tiny_config(chunk_size=4, use_position_embeddings=True))).eval()
    ids = torch.randint(1, model.config.vocab_size, (2, 16))
    if kind == "seq_idx":
        kwargs = {"seq_idx": torch.stack([ids_from_lengths(rows[0]), ids_from_lengths(rows[1], first_id=3)])}
    else:
        cu = torch.tensor([0, *rows[0], *rows[1]]).cumsum(0).to(torch.int32)
        kwargs = {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu}
    with torch.no_grad():
        packed = model(ids, **kwargs).logits
        for b, lengths in enumerate(rows):
            alone = torch.cat([model(ids[b:b + 1, s:e]).logits for s, e in spans(lengths)], dim=1)
            assert relative_error(packed[b:b + 1], alone) <= TOL[torch.float32], f"row {b}"


def test_packed_rows_with_gradient_checkpointing():
    """Whole-layer recomputation (`activation_checkpointing_enable()`, `gradient_checkpointing_enable()` before
    transformers 5.24): the same gradients, boundaries kept."""
    model = randomize_weights(HydraForMaskedLM(tiny_config(chunk_size=4))).double().train()
    ids = torch.randint(1, model.config.vocab_size, (1, sum(LENGTHS)))
    labels = torch.randint(0, model.config.vocab_size, ids.shape)
    grads = []
    for checkpointing in (False, True):
        if checkpointing:
            enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
            enable()
        model.zero_grad()
        model(ids, labels=labels, **boundary_kwargs("seq_idx", LENGTHS)).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert relative_error(grads[1][name], grads[0][name]) <= 1e-12, name
