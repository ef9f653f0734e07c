"""Models built on the paper's matrix mixers: every head with every family, padding invariance end to end, packed
rows, save/reload and remote code, training with recompute and gradient checkpointing."""

import json

import pytest
import torch
from glue_test_helpers import GLUE_SAMPLE, QUIET, TINY_HYDRA, script_function
from transformers import AutoModelForMaskedLM

import modeling_hydra
from configuration_hydra import HydraConfig
from modeling_hydra import HydraForMaskedLM
from modeling_hydra.remote_code import remote_code_sources

pytestmark = pytest.mark.usefixtures("single_thread")

# (family, data-dependent, overrides): one config per variant; attention di needs nheads == max_position_embeddings.
VARIANTS = [
    ("dense", False, {"qk_dim": -1}),
    ("toeplitz", True, {"qk_dim": -1}),
    ("toeplitz", False, {"qk_dim": -1}),
    ("vandermonde", True, {"qk_dim": 2}),
    ("vandermonde", False, {"qk_dim": -1}),
    ("cauchy", True, {"qk_dim": 2}),
    ("cauchy", False, {"qk_dim": 2}),
    ("low_rank", True, {"qk_dim": 2}),
    ("low_rank", False, {"qk_dim": 2}),
    ("attention", True, {"qk_dim": 2}),
    ("attention", False, {"qk_dim": 2, "headdim": 4, "max_position_embeddings": 8}),
    ("quasiseparable", True, {"qk_dim": 2}),
    ("quasiseparable", False, {"qk_dim": 2}),
]
IDS = [f"{family}-{'dd' if dd else 'di'}" for family, dd, _ in VARIANTS]
HEADS = [getattr(modeling_hydra, name) for name in modeling_hydra.modeling_hydra.__all__
         if name != "HydraPreTrainedModel"]  # the text model and its heads
# float64 models: differences are rounding only (a few ulps through two layers).
TOL = 1e-10


def config_for(family, dd, overrides, **more):
    kwargs = dict(vocab_size=64, hidden_size=16, num_hidden_layers=2, headdim=8, d_conv=3, chunk_size=8,
                  max_position_embeddings=12, hidden_dropout_prob=0.0, matrix_mixer_type=family,
                  is_data_dependent=dd)
    kwargs.update(overrides)
    kwargs.update(more)
    return HydraConfig(**kwargs)


def model_for(cls, family, dd, overrides, seed=0, **more):
    torch.manual_seed(seed)
    return cls(config_for(family, dd, overrides, **more)).double().eval()


@pytest.mark.parametrize("family, dd, overrides", VARIANTS, ids=IDS)
def test_every_head_runs_and_trains(family, dd, overrides):
    """Each head's forward with labels gives a finite loss and gradients reach the family's own parameters."""
    for cls in HEADS:
        model = model_for(cls, family, dd, overrides).train()
        L = model.config.max_position_embeddings
        ids = torch.randint(1, 64, (2, L))
        mask = torch.ones(2, L, dtype=torch.long)
        mask[1, L // 2:] = 0
        kwargs = dict(input_ids=ids, attention_mask=mask)
        name = cls.__name__
        if name == "HydraForMultipleChoice":
            kwargs = {k: v.unsqueeze(0) for k, v in kwargs.items()}
            kwargs["labels"] = torch.tensor([1])
        elif name == "HydraForSequenceClassification":
            kwargs["labels"] = torch.tensor([0, 1])
        elif name == "HydraForTokenClassification":
            kwargs["labels"] = torch.randint(0, 2, (2, L))
        elif name == "HydraForMaskedLM":
            kwargs["labels"] = torch.where(mask.bool(), ids, -100)
        elif name == "HydraForQuestionAnswering":
            kwargs.update(start_positions=torch.tensor([1, 2]), end_positions=torch.tensor([3, 4]))
        out = model(**kwargs)
        if name == "HydraModel":
            loss = out.last_hidden_state.sum()
        else:
            loss = out.loss
        assert torch.isfinite(loss), name
        loss.backward()
        mixer = model.base_model.encoder.layer[0].mixer
        grads = [p.grad for p in mixer.matrix_mixer.parameters()] + [mixer.in_proj.weight.grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name


@pytest.mark.parametrize("unpad", [True, False], ids=["padding-free", "padded"])
@pytest.mark.parametrize("family, dd, overrides", VARIANTS, ids=IDS)
def test_model_is_padding_invariant(family, dd, overrides, unpad):
    """MLM logits at real tokens equal each sequence run alone, whatever the padding side and amount."""
    model = model_for(HydraForMaskedLM, family, dd, overrides, unpad_inputs=unpad)
    L = model.config.max_position_embeddings
    lengths, sides = [L, 3, L - 2], ["right", "left", "left"]
    ids = torch.zeros(3, L, dtype=torch.long)
    mask = torch.zeros(3, L, dtype=torch.long)
    alone = []
    with torch.no_grad():
        for b, (n, side) in enumerate(zip(lengths, sides)):
            seq = torch.randint(1, 64, (n,))
            sl = slice(0, n) if side == "right" else slice(L - n, L)
            ids[b, sl], mask[b, sl] = seq, 1
            alone.append(model(input_ids=seq[None]).logits[0])
        logits = model(input_ids=ids, attention_mask=mask).logits
    for b in range(3):
        got = logits[b][mask[b].bool()]
        assert (got - alone[b]).abs().max() / alone[b].abs().max() < TOL, b


@pytest.mark.parametrize("family, dd, overrides", VARIANTS, ids=IDS)
def test_packed_rows_equal_sequences_alone(family, dd, overrides):
    """A row packed from several sequences (restarting position_ids) gives each its stand-alone logits."""
    model = model_for(HydraForMaskedLM, family, dd, overrides)
    L = model.config.max_position_embeddings
    seqs = [torch.randint(1, 64, (n,)) for n in (L, 2, L - 1)]
    position_ids = torch.cat([torch.arange(s.numel()) for s in seqs])[None]
    with torch.no_grad():
        packed = model(input_ids=torch.cat(seqs)[None], position_ids=position_ids).logits[0]
        start = 0
        for s in seqs:
            alone = model(input_ids=s[None]).logits[0]
            assert (packed[start:start + s.numel()] - alone).abs().max() / alone.abs().max() < TOL
            start += s.numel()


@pytest.mark.parametrize("family, dd, overrides", VARIANTS, ids=IDS)
def test_save_reload_and_remote_code(family, dd, overrides, tmp_path):
    """save_pretrained / from_pretrained and trust_remote_code give the same logits; family tensors (the 0-dim
    Cauchy bias, the DFT buffer) are in the checkpoint."""
    model = model_for(HydraForMaskedLM, family, dd, overrides)
    with torch.no_grad():
        for p in model.base_model.encoder.layer[0].mixer.matrix_mixer.parameters():
            p.add_(0.1)  # off the init values: a re-initialization on load would show
    model.save_pretrained(tmp_path)
    ids = torch.randint(1, 64, (2, model.config.max_position_embeddings))
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        for loader in (lambda: HydraForMaskedLM.from_pretrained(tmp_path, dtype=torch.float64),
                       lambda: AutoModelForMaskedLM.from_pretrained(tmp_path, trust_remote_code=True,
                                                                    dtype=torch.float64)):
            reloaded = loader().eval()
            assert torch.equal(reloaded(input_ids=ids).logits, expected)
    keys = model.state_dict().keys()
    if family == "cauchy" and dd:
        assert model.state_dict()["hydra.encoder.layer.0.mixer.matrix_mixer.bias"].dim() == 0
    if family == "vandermonde" and not dd:
        assert "hydra.encoder.layer.0.mixer.matrix_mixer.dft_matrix" in keys


def test_remote_code_files_include_the_matrix_mixers():
    files = remote_code_sources(modeling_hydra.modeling_hydra.__file__)
    assert {"matrix_mixer.py", "matrix_mixer_families.py", "sequence_rows.py", "sequence_mixers.py"} <= set(files)


@pytest.mark.parametrize("family, dd, overrides", [VARIANTS[5], VARIANTS[12]], ids=[IDS[5], IDS[12]])
def test_recompute_and_gradient_checkpointing_keep_gradients(family, dd, overrides):
    """Recomputing the mixer interior, or whole layers, gives the stored path's gradients."""
    grads = {}
    ids = torch.randint(1, 64, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[0, 7:] = 0
    for mode in ("never", "always", "layers"):
        model = model_for(HydraForMaskedLM, family, dd, overrides,
                          mixer_recompute="always" if mode == "always" else "never").train()
        if mode == "layers":
            (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
        model(input_ids=ids, attention_mask=mask, labels=ids).loss.backward()
        grads[mode] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    for mode in ("always", "layers"):
        assert (grads[mode] - grads["never"]).abs().max() < 1e-10 * grads["never"].abs().max()


@pytest.mark.parametrize("family, dd, overrides", VARIANTS, ids=IDS)
def test_bfloat16_model_is_close_to_float32(family, dd, overrides):
    """bfloat16 weights and activations (the families accumulate in float32): logits near the float32 model's."""
    model = model_for(HydraForMaskedLM, family, dd, overrides).float()
    ids = torch.randint(1, 64, (2, model.config.max_position_embeddings))
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
        got = model.to(torch.bfloat16)(input_ids=ids, attention_mask=mask).logits.float()
    # bfloat16 keeps 8 bits: a few 1e-2 relative through two layers and the head
    assert ((got - expected)[mask.bool()].abs().max() / expected.abs().max()).item() < 0.1


# Families whose data-independent (L, L) matrix is sliced to the length: they export at a fixed length.
FIXED_LENGTH_EXPORT = {("dense", False), ("vandermonde", False), ("attention", False)}


@pytest.mark.parametrize("family, dd, overrides", VARIANTS, ids=IDS)
def test_torch_export_matches_eager(family, dd, overrides):
    """torch.export with a dynamic batch (and length, up to max_position_embeddings, where the family allows) on a
    padded batch; the program matches eager at real tokens for another batch."""
    model = model_for(modeling_hydra.HydraModel, family, dd, overrides).float()
    L = model.config.max_position_embeddings
    dynamic_length = (family, dd) not in FIXED_LENGTH_EXPORT
    dims = {0: torch.export.Dim("batch", min=1)}
    if dynamic_length:
        dims[1] = torch.export.Dim("seqlen", min=1, max=L)
    ids = torch.randint(1, 64, (3, L))
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0
    mask[2, :2] = 0
    with torch.no_grad():
        program = torch.export.export(model, (), {"input_ids": ids, "attention_mask": mask},
                                      dynamic_shapes={"input_ids": dims, "attention_mask": dims}).module()
        other = torch.randint(1, 64, (2, L - 2 if dynamic_length else L))
        other_mask = torch.ones_like(other)
        other_mask[0, -2:] = 0
        got = program(input_ids=other, attention_mask=other_mask).last_hidden_state
        expected = model(input_ids=other, attention_mask=other_mask).last_hidden_state
    assert (got - expected)[other_mask.bool()].abs().max() < 1e-5


@pytest.mark.parametrize("overrides", ["matrix_mixer_type=toeplitz,is_data_dependent=false,qk_dim=-1",
                                       "matrix_mixer_type=cauchy,is_data_dependent=true,qk_dim=4"],
                         ids=["toeplitz-di", "cauchy-dd"])
def test_run_glue_trains_and_evaluates_a_matrix_mixer(tmp_path, overrides):
    """scripts/run_glue.py (the Trainer) trains, evaluates and saves a matrix-mixer model; the saved folder reloads
    with its family and gives the evaluated predictions."""
    out = tmp_path / "sst2"
    base = TINY_HYDRA[TINY_HYDRA.index("--config_overrides") + 1]
    args = [a if a != base else f"{base},{overrides},max_position_embeddings=64" for a in TINY_HYDRA]
    script_function("run_glue")(["--task_name", "sst2", "--glue_dir", str(GLUE_SAMPLE), *args, "--do_train",
                                 "--do_eval", "--max_train_samples", "32", "--max_eval_samples", "16",
                                 "--max_seq_length", "64", "--per_device_train_batch_size", "8",
                                 "--learning_rate", "1e-3", "--num_train_epochs", "1", "--output_dir", str(out),
                                 *QUIET])
    config = json.loads((out / "config.json").read_text())
    assert config["matrix_mixer_type"] == overrides.split(",")[0].split("=")[1]
    assert 0.0 <= json.loads((out / "eval_results.json").read_text())["eval_accuracy"] <= 1.0
    model = modeling_hydra.HydraForSequenceClassification.from_pretrained(out)
    assert type(model.hydra.encoder.layer[0].mixer).__name__ == "MatrixMixer"
