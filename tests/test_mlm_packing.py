"""Masked-LM on packed rows: the collator of hydra_glue/mlm_packing.py (MLM labels, not causal ones), the loss of a
packed batch against the same masked examples padded, and scripts/run_mlm.py --packing end to end."""

import json
import math

import pytest
import torch
from glue_test_helpers import GLUE_SAMPLE, QUIET, TINY_HYDRA, read_official_tsv, script_function
from transformers import AutoTokenizer

from conftest import TOKENIZER_DIR, tiny_config
from hydra_transformers.glue.mlm_packing import DataCollatorForPackedLanguageModeling
from modeling_hydra import HydraForMaskedLM
from packing_helpers import randomize_weights, relative_error

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


@pytest.fixture(scope="module")
def examples(tokenizer):
    """12 SST-2 sentences tokenized as run_mlm.py --line_by_line does, one of them only [CLS] [SEP]."""
    rows, _ = read_official_tsv(GLUE_SAMPLE / "SST-2" / "train.tsv", ["sentence"], limit=11)
    texts = [""] + [s for (s,) in rows]
    return [dict(tokenizer(t, truncation=True, max_length=24, return_special_tokens_mask=True)) for t in texts]


def split_packed(batch):
    """The sequences of a packed batch, from its restarting position_ids: [{name: 1-D tensor}]."""
    starts = (batch["position_ids"][0] == 0).nonzero().squeeze(-1).tolist() + [batch["input_ids"].shape[1]]
    return [{name: batch[name][0, s:e] for name in ("input_ids", "labels", "token_type_ids")}
            for s, e in zip(starts, starts[1:])]


@pytest.mark.parametrize("options", [{}, {"return_seq_idx": True, "return_flash_attn_kwargs": True}])
def test_packed_collator_makes_mlm_labels(tokenizer, examples, options):
    collator = DataCollatorForPackedLanguageModeling(tokenizer, mlm_probability=0.3, seed=0, **options)
    batch = collator(examples)
    lengths = [len(e["input_ids"]) for e in examples]
    total = sum(lengths)
    for name in ("input_ids", "labels", "position_ids", "token_type_ids"):
        assert batch[name].shape == (1, total), name
    assert "attention_mask" not in batch
    sequences = split_packed(batch)
    assert [len(s["input_ids"]) for s in sequences] == lengths
    masked_total = 0
    for example, seq in zip(examples, sequences):
        original = torch.tensor(example["input_ids"])
        selected = seq["labels"] != -100
        assert torch.equal(seq["labels"][selected], original[selected])  # labels: the original tokens
        assert torch.equal(seq["input_ids"][~selected], original[~selected])  # the rest is untouched
        assert not selected[torch.tensor(example["special_tokens_mask"]).bool()].any()  # [CLS]/[SEP] never masked
        masked_total += int(selected.sum())
        assert (seq["input_ids"][selected] == tokenizer.mask_token_id).sum() <= selected.sum()
    assert masked_total > 0
    if options:
        cu = torch.tensor([0, *lengths]).cumsum(0).to(torch.int32)
        assert torch.equal(batch["cu_seq_lens_q"], cu) and torch.equal(batch["cu_seq_lens_k"], cu)
        assert batch["max_length_q"] == batch["max_length_k"] == max(lengths)
        assert torch.equal(batch["seq_idx"][0], torch.repeat_interleave(torch.arange(len(lengths)),
                                                                         torch.tensor(lengths)).to(torch.int32))


def test_packed_collator_refuses_causal_lm_and_numpy(tokenizer):
    with pytest.raises(ValueError, match="mlm=True.*DataCollatorWithFlattening"):
        DataCollatorForPackedLanguageModeling(tokenizer, mlm=False)
    with pytest.raises(ValueError, match="return_tensors='pt'"):
        DataCollatorForPackedLanguageModeling(tokenizer)([{"input_ids": [101, 102]}], return_tensors="np")


@pytest.mark.parametrize("unpad", [True, False])
def test_packed_mlm_loss_equals_padded_loss(tokenizer, examples, unpad):
    """The same masked examples, packed into one row or padded into a batch: the same loss and logits."""
    batch = DataCollatorForPackedLanguageModeling(tokenizer, seed=1, return_seq_idx=unpad)(examples)
    sequences = split_packed(batch)
    longest = max(len(s["input_ids"]) for s in sequences)
    pad = lambda t, value: torch.nn.functional.pad(t, (0, longest - len(t)), value=value)
    padded = {"input_ids": torch.stack([pad(s["input_ids"], tokenizer.pad_token_id) for s in sequences]),
              "labels": torch.stack([pad(s["labels"], -100) for s in sequences]),
              "token_type_ids": torch.stack([pad(s["token_type_ids"], 0) for s in sequences]),
              "attention_mask": torch.stack([pad(torch.ones_like(s["input_ids"]), 0) for s in sequences])}
    config = tiny_config(vocab_size=len(tokenizer), chunk_size=8, unpad_inputs=unpad)
    model = randomize_weights(HydraForMaskedLM(config)).eval()
    with torch.no_grad():
        packed_out = model(**batch)
        padded_out = model(**padded)
        one_sequence = model(input_ids=batch["input_ids"], labels=batch["labels"])  # boundaries ignored
    real = padded["attention_mask"].bool()
    assert relative_error(packed_out.logits[0], padded_out.logits[real]) <= 1e-5
    assert abs(packed_out.loss.item() - padded_out.loss.item()) <= 1e-5 * max(1.0, padded_out.loss.item())
    assert abs(one_sequence.loss.item() - padded_out.loss.item()) > 1e-3  # the comparison can fail


def mlm_run(tmp_path, name, *extra):
    out = tmp_path / name
    script_function("run_mlm")(["--train_file", str(tmp_path / "train.txt"), "--validation_file",
                                str(tmp_path / "dev.txt"), "--line_by_line", "--max_seq_length", "32", *TINY_HYDRA,
                                "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16",
                                "--learning_rate", "3e-3", "--save_strategy", "no", "--output_dir", str(out), *QUIET,
                                *extra])
    return out


def test_run_mlm_with_packing(tmp_path, monkeypatch):
    """run_mlm.py --packing trains a few steps on packed rows; evaluated before training, packed and padded batches
    of the same masked sentences give the same loss."""
    packed_shapes = []
    collate = DataCollatorForPackedLanguageModeling.torch_call

    def recording_collate(self, examples):
        batch = collate(self, examples)
        packed_shapes.append((len(examples), tuple(batch["input_ids"].shape)))
        return batch

    monkeypatch.setattr(DataCollatorForPackedLanguageModeling, "torch_call", recording_collate)
    train, _ = read_official_tsv(GLUE_SAMPLE / "SST-2" / "train.tsv", ["sentence"], limit=64)
    dev, _ = read_official_tsv(GLUE_SAMPLE / "SST-2" / "dev.tsv", ["sentence"], limit=32)
    (tmp_path / "train.txt").write_text("\n".join(s for (s,) in train) + "\n")
    (tmp_path / "dev.txt").write_text("\n".join(s for (s,) in dev) + "\n")

    eval_losses = {}
    for packing in ([], ["--packing"]):
        out = mlm_run(tmp_path, f"eval{len(packing)}", "--do_eval", *packing)
        eval_losses[bool(packing)] = json.loads((out / "eval_results.json").read_text())["eval_loss"]
        assert bool(packed_shapes) == bool(packing)  # the packed collator made the batches of the --packing run
    assert all(n == 16 and shape[0] == 1 for n, shape in packed_shapes)  # 16 sentences per packed row
    packed_shapes.clear()
    assert math.isfinite(eval_losses[True])
    assert abs(eval_losses[True] - eval_losses[False]) <= 1e-5 * eval_losses[False]

    out = mlm_run(tmp_path, "train", "--do_train", "--do_eval", "--packing", "--max_steps", "6",
                  "--logging_steps", "2")
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert sum(n == 8 for n, _ in packed_shapes) >= 6  # six training steps of 8 sentences (and one prefetched)
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
    assert json.loads((out / "train_results.json").read_text())["train_samples"] == 64
    assert math.isfinite(json.loads((out / "eval_results.json").read_text())["eval_loss"])


def test_run_mlm_packing_refuses_attention_models(tmp_path):
    (tmp_path / "train.txt").write_text("a sentence\nanother one\n")
    (tmp_path / "dev.txt").write_text("a sentence\n")
    with pytest.raises(ValueError, match="--packing needs a model that keeps the sequences .* apart"):
        script_function("run_mlm")(["--train_file", str(tmp_path / "train.txt"), "--validation_file",
                                    str(tmp_path / "dev.txt"), "--line_by_line", "--model_type", "bert",
                                    "--config_overrides", "hidden_size=32,num_hidden_layers=1,num_attention_heads=2,"
                                    "intermediate_size=37", "--tokenizer_name", str(TOKENIZER_DIR), "--do_train",
                                    "--packing", "--output_dir", str(tmp_path / "out"), *QUIET])
