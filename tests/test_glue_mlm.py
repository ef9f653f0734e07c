"""Masked-LM pre-training of a Hydra through the Trainer (scripts/run_mlm.py), then fine-tuning from it."""

import json
import math

import pytest
import torch
from glue_test_helpers import GLUE_SAMPLE, QUIET, TINY_HYDRA, read_official_tsv, script_function
from safetensors.torch import load_file

from hydra_transformers.glue import build_model, load_config

pytestmark = pytest.mark.usefixtures("single_thread")


def test_mlm_loss_falls_on_a_small_corpus(tmp_path):
    """The corpus: 1,200 sentences of the embedded SST-2 train file as text, cut into blocks of 32 tokens; evaluated
    on 200 dev sentences."""
    sentences, _ = read_official_tsv(GLUE_SAMPLE / "SST-2" / "train.tsv", ["sentence"], limit=1200)
    dev, _ = read_official_tsv(GLUE_SAMPLE / "SST-2" / "dev.tsv", ["sentence"], limit=200)
    (tmp_path / "train.txt").write_text("\n".join(s for (s,) in sentences) + "\n")
    (tmp_path / "dev.txt").write_text("\n".join(s for (s,) in dev) + "\n")
    out = tmp_path / "mlm"
    script_function("run_mlm")(["--train_file", str(tmp_path / "train.txt"), "--validation_file",
                            str(tmp_path / "dev.txt"), "--max_seq_length", "32", *TINY_HYDRA, "--do_train",
                            "--do_eval", "--per_device_train_batch_size", "16", "--learning_rate", "3e-3",
                            "--max_steps", "40", "--eval_on_start", "--eval_strategy", "steps", "--eval_steps", "40",
                            "--save_strategy", "no", "--output_dir", str(out), *QUIET])
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    eval_losses = [entry["eval_loss"] for entry in history if "eval_loss" in entry]
    initial, final = eval_losses[0], eval_losses[-1]
    # Near initialization the logits are small, so the loss is close to that of a uniform guess, ln(vocab).
    assert abs(initial - math.log(30528)) < 0.3
    assert final < initial - 1.0
    results = json.loads((out / "eval_results.json").read_text())
    assert math.isclose(results["perplexity"], math.exp(results["eval_loss"]), rel_tol=1e-9)

    # run_glue.py --model_name_or_path <this folder> starts from the pre-trained encoder with a new head.
    classifier = build_model("sequence_classification", load_config(str(out), num_labels=2), str(out))
    pretrained = load_file(out / "model.safetensors")
    encoder = {name: t for name, t in classifier.hydra.state_dict().items() if not name.startswith("pooler.")}
    assert len(encoder) > 10
    for name, tensor in encoder.items():
        torch.testing.assert_close(tensor, pretrained[f"hydra.{name}"], rtol=0, atol=0, msg=name)


def test_glue_corpus_holds_every_input_text():
    corpus = script_function("run_mlm", "glue_corpus")(str(GLUE_SAMPLE), ["sst2"], do_eval=True)
    train, _ = read_official_tsv(GLUE_SAMPLE / "SST-2" / "train.tsv", ["sentence"])
    dev, _ = read_official_tsv(GLUE_SAMPLE / "SST-2" / "dev.tsv", ["sentence"])
    assert corpus["train"]["text"] == [s for (s,) in train]
    assert corpus["validation"]["text"] == [s for (s,) in dev]
