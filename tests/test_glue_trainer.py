"""scripts/run_glue.py through the Trainer, in-process: the README's main command on a slice, resuming, bad input,
and the model side of the contract with transformers' unmodified run_glue.py."""

import functools
import json
import logging
import shutil
import subprocess
import sys
from types import SimpleNamespace

import huggingface_hub
import numpy as np
import pytest
import torch
from conftest import TOKENIZER_DIR, tiny_config
from glue_test_helpers import (
    GLUE_SAMPLE,
    QUIET,
    SCRIPTS,
    TINY_HYDRA,
    predict_with_saved_model,
    read_official_tsv,
    script_function,
    subprocess_env,
)
from safetensors.torch import load_file, save_file
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from hydra_transformers.glue import GlueFormatError, script_setup
from modeling_hydra import HydraForSequenceClassification

pytestmark = pytest.mark.usefixtures("single_thread")

SST2 = GLUE_SAMPLE / "SST-2"
AUTO_TOKENIZER_TEXT = "a [MASK] film, unflinchingly bleak"
AUTO_TOKENIZER_CHILD = f"""
import json, sys
from transformers import AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
print(json.dumps([type(tokenizer).__name__, tokenizer({AUTO_TOKENIZER_TEXT!r})["input_ids"],
                  any(name.startswith("transformers_modules") for name in sys.modules)]))
"""


def test_main_command_on_the_embedded_sample(tmp_path):
    """Train, evaluate and predict on a slice of the embedded SST-2; check every output against an independent
    evaluation of the saved model (loaded with the Auto classes and remote code)."""
    out = tmp_path / "sst2"
    script_function("run_glue")(["--task_name", "sst2", "--glue_dir", str(GLUE_SAMPLE), *TINY_HYDRA, "--do_train",
                             "--do_eval", "--do_predict", "--max_train_samples", "64", "--max_eval_samples", "48",
                             "--max_predict_samples", "16", "--per_device_train_batch_size", "16",
                             "--learning_rate", "1e-3", "--num_train_epochs", "1", "--output_dir", str(out),
                             *QUIET])
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4  # 64 examples, batch 16

    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["label2id"] == {"negative": 0, "positive": 1}
    assert config["problem_type"] == "single_label_classification"

    texts, labels = read_official_tsv(SST2 / "dev.tsv", ["sentence"], "label", limit=48)
    predictions, model = predict_with_saved_model(out, texts)
    assert type(model).__name__ == "HydraForSequenceClassification"
    results = json.loads((out / "eval_results.json").read_text())
    assert results["eval_samples"] == 48
    assert results["eval_accuracy"] == pytest.approx(np.mean(predictions == np.array(labels, dtype=int)))

    # The saved tokenizer loads without trust_remote_code and without running the model's code (stdin closed, as
    # in a script: transformers reads config.json first and may ask about its code; the answer is then "no").
    assert json.loads((out / "tokenizer_config.json").read_text())["tokenizer_class"] == "BertTokenizer"
    child = subprocess.run([sys.executable, "-c", AUTO_TOKENIZER_CHILD, str(out)], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=300, env=subprocess_env())
    assert child.returncode == 0, child.stderr[-3000:]
    name, ids, ran_custom_code = json.loads(child.stdout.splitlines()[-1].rpartition("[y/N] ")[2])
    assert name.startswith("BertTokenizer") and not ran_custom_code
    assert ids == AutoTokenizer.from_pretrained(TOKENIZER_DIR)(AUTO_TOKENIZER_TEXT)["input_ids"]

    test_texts, _ = read_official_tsv(SST2 / "test.tsv", ["sentence"], limit=16)
    test_predictions, _ = predict_with_saved_model(out, test_texts)
    test_indices, _ = read_official_tsv(SST2 / "test.tsv", ["index"], limit=16)
    expected = "index\tprediction\n" + "".join(f"{i[0]}\t{p}\n" for i, p in zip(test_indices, test_predictions))
    assert (out / "SST-2.tsv").read_text() == expected

    # The same classifier with its two classes stored the other way round (positive = 0): run_glue maps the task's
    # labels to the checkpoint's ids, so evaluation and submission are unchanged.
    swapped = HydraForSequenceClassification.from_pretrained(out)
    with torch.no_grad():
        swapped.classifier.weight.copy_(swapped.classifier.weight.flip(0))
        swapped.classifier.bias.copy_(swapped.classifier.bias.flip(0))
    swapped.config.id2label, swapped.config.label2id = {0: "positive", 1: "negative"}, {"positive": 0, "negative": 1}
    swapped.save_pretrained(tmp_path / "swapped")
    again = tmp_path / "again"
    script_function("run_glue")(["--task_name", "sst2", "--glue_dir", str(GLUE_SAMPLE), "--model_name_or_path",
                                 str(tmp_path / "swapped"), "--tokenizer_name", str(TOKENIZER_DIR), "--do_eval",
                                 "--do_predict", "--max_eval_samples", "48", "--max_predict_samples", "16",
                                 "--output_dir", str(again), *QUIET])
    assert json.loads((again / "eval_results.json").read_text())["eval_accuracy"] == results["eval_accuracy"]
    assert (again / "SST-2.tsv").read_text() == expected  # every line would flip without the mapping


def test_a_default_run_prints_progress_and_metrics_only(tmp_path):
    """The main command's output at the default log level: progress bars, the losses and the metrics; no pinned
    memory warning on CPU, no TrainingArguments or config dumps. With --log_level info transformers says what it
    does and still shows no empty config."""
    command = [sys.executable, str(SCRIPTS / "run_glue.py"), "--task_name", "sst2", "--glue_dir", str(GLUE_SAMPLE),
               *TINY_HYDRA, "--do_train", "--do_eval", "--max_train_samples", "16", "--max_eval_samples", "16",
               "--per_device_train_batch_size", "8", "--logging_steps", "1", "--use_cpu", "--report_to", "none"]
    outputs = {}
    for level in ("default", "info"):
        flags = ["--log_level", "info"] if level == "info" else []
        completed = subprocess.run([*command, *flags, "--output_dir", str(tmp_path / level)], env=subprocess_env(),
                                   capture_output=True, text=True, timeout=300)
        assert completed.returncode == 0, completed.stderr[-3000:]
        outputs[level] = completed.stdout + completed.stderr
    default = outputs["default"]
    assert "***** train metrics *****" in default and "***** eval metrics *****" in default and "'loss'" in default
    for noise in ("'pin_memory' argument", "TrainingArguments(", "Model config", "loading configuration file", " - INFO - ",
                  "Running tokenizer on dataset", "Writing model shards"):
        assert noise not in default, noise
    lines = [line for line in default.replace("\r", "\n").splitlines() if line.strip() and "it/s]" not in line]
    assert len(lines) <= 25, "\n".join(lines)
    info = outputs["info"]
    assert "TrainingArguments(" in info and "***** Running training *****" in info
    assert "'pin_memory' argument" not in info
    assert "loading configuration file" in info and "Model config PreTrainedConfig" not in info


def test_resumed_run_matches_an_uninterrupted_one(tmp_path, monkeypatch, caplog):
    """Stop after 3 of 6 steps (max_steps 3, checkpoint), leave an incomplete checkpoint-6 behind (a run killed while
    saving it: everything but trainer_state.json, which the Trainer writes last), and rerun to 6 steps: the rerun
    skips checkpoint-6 with a warning, resumes from checkpoint-3, runs only 3 more steps, and ends with the weights
    of a 6-step run (constant learning rate, so the schedule does not depend on max_steps)."""
    run_glue = script_function("run_glue")
    common = ["--task_name", "rte", "--glue_dir", str(tmp_path / "glue"), *TINY_HYDRA, "--do_train",
              "--per_device_train_batch_size", "4", "--learning_rate", "2e-3", "--lr_scheduler_type", "constant",
              "--save_strategy", "steps", "--save_steps", "3", *QUIET]
    rte = tmp_path / "glue" / "RTE"
    rte.mkdir(parents=True)
    rows = [f"{i}\tA man is number {i}.\tSomeone is {i}.\t{('entailment', 'not_entailment')[i % 2]}"
            for i in range(40)]
    (rte / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n" + "\n".join(rows) + "\n")

    run_glue([*common, "--max_steps", "6", "--output_dir", str(tmp_path / "straight")])
    run_glue([*common, "--max_steps", "3", "--output_dir", str(tmp_path / "resumed")])
    complete = tmp_path / "resumed" / "checkpoint-3"
    killed = shutil.copytree(complete, tmp_path / "resumed" / "checkpoint-6")
    (killed / "trainer_state.json").unlink()
    forward_calls = []
    forward = HydraForSequenceClassification.forward

    @functools.wraps(forward)
    def counted_forward(*args, **kwargs):
        forward_calls.append(1)
        return forward(*args, **kwargs)

    monkeypatch.setattr(HydraForSequenceClassification, "forward", counted_forward)
    caplog.clear()
    run_glue([*common, "--max_steps", "6", "--output_dir", str(tmp_path / "resumed")])
    assert len(forward_calls) == 3  # steps 4 to 6 only
    output = caplog.text
    assert f"Skipping the incomplete checkpoint {killed} (no trainer_state.json" in output
    assert f"Resuming training from {complete} (step 3). To train from scratch, pass --overwrite_output_dir" in output

    state = json.loads((tmp_path / "resumed" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    straight = load_file(tmp_path / "straight" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "model.safetensors")
    halfway = load_file(complete / "model.safetensors")
    assert straight.keys() == resumed.keys()
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(halfway["classifier.weight"], straight["classifier.weight"])


def _fake_checkpoint(folder, state="{}", weights=True, truncate=False):
    folder.mkdir(parents=True)
    if state is not None:
        (folder / "trainer_state.json").write_text(state)
    if weights:
        save_file({"w": torch.zeros(64)}, folder / "model.safetensors")
        if truncate:  # a run killed while writing the weights
            data = (folder / "model.safetensors").read_bytes()
            (folder / "model.safetensors").write_bytes(data[:-10])
    return str(folder)


def test_an_incomplete_checkpoint_is_skipped_for_the_last_complete_one(tmp_path, caplog):
    """Each way a kill during a save leaves a checkpoint: without trainer_state.json, with a truncated one, without
    weights. --resume_from_checkpoint naming one of them, and the resume from --output_dir, both take the last
    complete checkpoint; with none complete, an explicit request is an error and the resume from --output_dir
    trains from scratch."""
    checkpoint_to_resume = script_setup.checkpoint_to_resume
    out = tmp_path / "out"
    complete = _fake_checkpoint(out / "checkpoint-3")
    _fake_checkpoint(out / "checkpoint-10", state='{"global_st')
    no_state = _fake_checkpoint(out / "checkpoint-6", state=None)
    _fake_checkpoint(out / "checkpoint-12", weights=False)
    truncated = _fake_checkpoint(out / "checkpoint-15", truncate=True)
    size = (out / "checkpoint-15" / "model.safetensors").stat().st_size
    model_args = SimpleNamespace(overwrite_output_dir=False)
    logger = logging.getLogger("test_glue_trainer")

    def resume(folder, requested=None):
        return checkpoint_to_resume(model_args, SimpleNamespace(output_dir=str(folder),
                                                                resume_from_checkpoint=requested), logger)

    assert resume(out) == complete
    for problem in (f"checkpoint-15 (model.safetensors is truncated ({size} bytes, its header describes {size + 10})",
                    "checkpoint-12 (no model weights", "checkpoint-10 (trainer_state.json is truncated or corrupt",
                    "checkpoint-6 (no trainer_state.json"):
        assert f"Skipping the incomplete checkpoint {out / problem}" in caplog.text
    assert resume(tmp_path / "elsewhere", requested=no_state) == complete
    assert f"Resuming from {complete}, the last complete checkpoint beside {no_state}" in caplog.text
    model_args.overwrite_output_dir = True
    assert resume(out) is None

    lone = _fake_checkpoint(tmp_path / "lone" / "checkpoint-5", state=None)
    with pytest.raises(ValueError, match=r"checkpoint-5 is incomplete \(no trainer_state.json\) and .*lone holds no "
                                         "complete checkpoint"):
        resume(tmp_path / "lone", requested=lone)
    model_args.overwrite_output_dir = False
    assert resume(tmp_path / "lone") is None
    # --model_name_or_path naming a checkpoint with truncated weights: an error naming the file, before loading
    with pytest.raises(ValueError, match=rf"--model_name_or_path {truncated}: model.safetensors is truncated"):
        script_setup.check_model_folder(truncated)


def _saved_tiny_classifier(folder, num_labels=2):
    HydraForSequenceClassification(tiny_config(vocab_size=30528, num_labels=num_labels)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(TOKENIZER_DIR).save_pretrained(folder)
    return folder


def test_a_saved_folder_with_trust_remote_code_loads_through_the_auto_classes(tmp_path, monkeypatch):
    """--model_name_or_path FOLDER --trust_remote_code: the model is built by the Auto classes from the code saved in
    the folder (this package's class is never instantiated), trained, evaluated and saved again with its code."""
    folder = _saved_tiny_classifier(tmp_path / "hydra")

    def refuse(*args, **kwargs):
        raise AssertionError("run_glue built the package's HydraForSequenceClassification, not the Auto class")

    monkeypatch.setattr(HydraForSequenceClassification, "__init__", refuse)
    out = tmp_path / "out"
    script_function("run_glue")(["--task_name", "sst2", "--glue_dir", str(GLUE_SAMPLE), "--model_name_or_path",
                                 str(folder), "--trust_remote_code", "--do_train", "--do_eval", "--max_steps", "2",
                                 "--max_train_samples", "16", "--max_eval_samples", "24",
                                 "--per_device_train_batch_size", "8", "--output_dir", str(out), *QUIET])
    monkeypatch.undo()
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2
    texts, labels = read_official_tsv(SST2 / "dev.tsv", ["sentence"], "label", limit=24)
    predictions, model = predict_with_saved_model(out, texts)
    assert type(model).__module__.startswith("transformers_modules.")
    results = json.loads((out / "eval_results.json").read_text())
    assert results["eval_accuracy"] == pytest.approx(np.mean(predictions == np.array(labels, dtype=int)))


def test_bf16_mixed_precision_trains_and_evaluates_on_cpu(tmp_path, monkeypatch):
    """--bf16 on CPU: every forward pass, in training and evaluation, runs under bfloat16 autocast; the losses are
    finite and the saved weights stay float32 (mixed precision, not a bfloat16 model)."""
    autocast_states = []
    forward = HydraForSequenceClassification.forward

    @functools.wraps(forward)
    def recorded_forward(*args, **kwargs):
        autocast_states.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return forward(*args, **kwargs)

    monkeypatch.setattr(HydraForSequenceClassification, "forward", recorded_forward)
    out = tmp_path / "out"
    script_function("run_glue")(["--task_name", "sst2", "--glue_dir", str(GLUE_SAMPLE), *TINY_HYDRA, "--bf16",
                                 "--use_cpu", "--do_train", "--do_eval", "--max_steps", "3", "--max_train_samples",
                                 "24", "--max_eval_samples", "16", "--per_device_train_batch_size", "8",
                                 "--per_device_eval_batch_size", "8", "--logging_steps", "1", "--output_dir", str(out),
                                 *QUIET])
    assert len(autocast_states) == 3 + 2 and set(autocast_states) == {(True, torch.bfloat16)}
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert len(losses) == 3 and np.isfinite(losses).all()
    results = json.loads((out / "eval_results.json").read_text())
    assert np.isfinite(results["eval_loss"]) and 0 <= results["eval_accuracy"] <= 1
    assert {tensor.dtype for tensor in load_file(out / "model.safetensors").values()} == {torch.float32}


@pytest.mark.parametrize("hub, message", [
    ("offline", r"--push_to_hub needs the Hugging Face Hub, but offline mode is on \(HF_HUB_OFFLINE=1\)"),
    ("not logged in", r"--push_to_hub needs a Hugging Face login: run `hf auth login`"),
    ("unreachable", r"--push_to_hub: cannot reach the Hub at http://127.0.0.1:9 \(ConnectError"),
])
def test_push_to_hub_without_the_hub_fails_at_once_with_what_to_do(tmp_path, monkeypatch, hub, message):
    """Checked before a model is built or a step trained; the unreachable Hub is a closed port on this machine."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", hub == "offline")
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_not_a_token" if hub == "unreachable" else None)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    out = tmp_path / "out"
    with pytest.raises(script_setup.HubUnavailableError, match=message):
        script_function("run_glue")(["--task_name", "sst2", "--glue_dir", str(GLUE_SAMPLE), *TINY_HYDRA, "--do_train",
                                     "--push_to_hub", "--output_dir", str(out), *QUIET])
    assert not out.exists()


def test_push_to_hub_without_the_hub_prints_one_line(tmp_path):
    """The command line: exit status 1 and one line on stderr, no traceback."""
    env = dict(subprocess_env(), HF_ENDPOINT="http://127.0.0.1:9", HF_TOKEN="hf_not_a_token", HF_HUB_OFFLINE="0")
    completed = subprocess.run([sys.executable, str(SCRIPTS / "run_glue.py"), "--task_name", "sst2", "--glue_dir",
                                str(GLUE_SAMPLE), *TINY_HYDRA, "--do_train", "--push_to_hub", "--output_dir",
                                str(tmp_path / "out"), *QUIET], env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 1, completed.stderr[-3000:]
    (line,) = completed.stderr.strip().splitlines()
    assert line.startswith("run_glue.py: --push_to_hub: cannot reach the Hub at http://127.0.0.1:9 (ConnectError")
    assert line.endswith("Leave out --push_to_hub and upload --output_dir later with `hf upload`.")


def test_mnli_evaluates_and_predicts_matched_and_mismatched(tmp_path):
    mnli = tmp_path / "glue" / "MNLI"
    mnli.mkdir(parents=True)
    parses = "\t".join(["( A )", "( B )", "(ROOT)", "(ROOT)"])
    columns = "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t" \
              "sentence2_parse\tsentence1\tsentence2"
    labels = ("entailment", "neutral", "contradiction")

    def write(name, rows, annotations):
        header = columns + "".join(f"\t{a}" for a in annotations)
        lines = [f"{i}\t{i}\t{i}n\tfiction\t{parses}\tA man number {i} walks.\tSomeone walks.\t" +
                 "\t".join([labels[i % 3]] * len(annotations)) for i in range(rows)]
        (mnli / name).write_text(header + "\n" + "\n".join(line.rstrip("\t") for line in lines) + "\n")

    write("train.tsv", 12, ["label1", "gold_label"])
    write("dev_matched.tsv", 6, ["label1", "label2", "label3", "label4", "label5", "gold_label"])
    write("dev_mismatched.tsv", 5, ["label1", "label2", "label3", "label4", "label5", "gold_label"])
    write("test_matched.tsv", 3, [])
    write("test_mismatched.tsv", 2, [])
    out = tmp_path / "out"
    script_function("run_glue")(["--task_name", "mnli", "--glue_dir", str(tmp_path / "glue"), *TINY_HYDRA,
                                 "--do_train", "--do_eval", "--do_predict", "--max_steps", "2",
                                 "--output_dir", str(out), *QUIET])
    results = json.loads((out / "eval_results.json").read_text())
    assert results["eval_samples"] == 6 and results["eval_samples_mm"] == 5
    assert {"eval_accuracy", "eval_accuracy_mm"} <= set(results)
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "entailment", "1": "neutral",
                                                                        "2": "contradiction"}
    for name, rows in (("MNLI-m.tsv", 3), ("MNLI-mm.tsv", 2)):
        lines = (out / name).read_text().splitlines()
        assert lines[0] == "index\tprediction" and len(lines) == rows + 1
        assert all(line.split("\t")[1] in labels for line in lines[1:])


def test_csv_files_with_string_labels(tmp_path):
    """--train_file/--validation_file/--test_file as upstream: labels are sorted strings, mapped to ids and saved
    as id2label; predictions are written with the label names."""
    header = "sentence,label\n"
    rows = ["a good film,pos", "a bad film,neg", "great fun,pos", "dull and slow,neg"] * 4
    (tmp_path / "train.csv").write_text(header + "\n".join(rows) + "\n")
    (tmp_path / "dev.csv").write_text(header + "\n".join(rows[:6]) + "\n")
    (tmp_path / "test.csv").write_text(header + "\n".join(rows[:3]) + "\n")
    out = tmp_path / "out"
    script_function("run_glue")(["--train_file", str(tmp_path / "train.csv"), "--validation_file",
                             str(tmp_path / "dev.csv"), "--test_file", str(tmp_path / "test.csv"), *TINY_HYDRA,
                             "--do_train", "--do_eval", "--do_predict", "--per_device_train_batch_size", "8",
                             "--max_steps", "2", "--output_dir", str(out), *QUIET])
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"}
    texts, labels = [(r.split(",")[0],) for r in rows[:6]], [r.split(",")[1] for r in rows[:6]]
    predictions, _ = predict_with_saved_model(out, texts)
    results = json.loads((out / "eval_results.json").read_text())
    assert results["eval_accuracy"] == pytest.approx(np.mean([("neg", "pos")[p] == y
                                                              for p, y in zip(predictions, labels)]))
    lines = (out / "predict_results_test.txt").read_text().splitlines()
    assert lines[0] == "index\tprediction"
    assert lines[1:] == [f"{i}\t{('neg', 'pos')[p]}" for i, p in enumerate(predictions[:3])]


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("case, error, message", [
    ("unknown task", ValueError, "Unknown GLUE task 'sst3'; known tasks: cola, sst2, mrpc, qqp, stsb, mnli, qnli"),
    ("max_seq_length 0", ValueError, "--max_seq_length must be a positive number of tokens, got 0"),
    ("missing file", FileNotFoundError, r"missing file\(s\) \[.*SST-2/dev.tsv'\]"),
    ("malformed file", GlueFormatError, r"SST-2/train.tsv, line 3: expected 2 tab-separated fields"),
    ("label not in set", GlueFormatError, r"SST-2/train.tsv, line 2: label 'positive' is not one of the labels of "
                                          r"task sst2: 0, 1"),
    ("no classification head", ValueError, "Model type 'vit' has no sequence-classification head"),
    ("latin-1 file", GlueFormatError, r"SST-2/train.tsv, line 3: the file is not UTF-8 text \(byte 0xe9 at "
                                      r"offset 32\)"),
    ("header-only train file", ValueError, r"the train split \(.*SST-2/train.tsv\) has no examples$"),
    ("max_train_samples 0", ValueError, "--max_train_samples must be a positive number of examples, got 0"),
])
def test_bad_input_fails_before_training(tmp_path, case, error, message):
    glue = tmp_path / "glue"
    _write(glue / "SST-2" / "train.tsv", "sentence\tlabel\na fine film\t1\n")
    _write(glue / "SST-2" / "dev.tsv", "sentence\tlabel\na bad film\t0\n")
    args = {"--task_name": "sst2", "--max_seq_length": "128"}
    model = TINY_HYDRA
    if case == "unknown task":
        args["--task_name"] = "sst3"
    elif case == "max_seq_length 0":
        args["--max_seq_length"] = "0"
    elif case == "missing file":
        (glue / "SST-2" / "dev.tsv").unlink()
    elif case == "malformed file":
        _write(glue / "SST-2" / "train.tsv", "sentence\tlabel\na fine film\t1\nbroken\n")
    elif case == "label not in set":
        _write(glue / "SST-2" / "train.tsv", "sentence\tlabel\na fine film\tpositive\n")
    elif case == "latin-1 file":
        (glue / "SST-2" / "train.tsv").write_bytes("sentence\tlabel\na fine film\t1\ncaf\u00e9 society\t1\n"
                                                   .encode("latin-1"))
    elif case == "header-only train file":
        _write(glue / "SST-2" / "train.tsv", "sentence\tlabel\n")
    elif case == "max_train_samples 0":
        args["--max_train_samples"] = "0"
    elif case == "no classification head":
        vit = _write(tmp_path / "vit.json", json.dumps({"model_type": "vit", "hidden_size": 32,
                                                         "num_hidden_layers": 1, "num_attention_heads": 2,
                                                         "intermediate_size": 32}))
        model = ["--config_name", str(vit), "--tokenizer_name", str(TOKENIZER_DIR)]
    out = tmp_path / "out"
    argv = [item for pair in args.items() for item in pair] + ["--glue_dir", str(glue), *model, "--do_train",
                                                               "--do_eval", "--output_dir", str(out), *QUIET]
    with pytest.raises(error, match=message):
        script_function("run_glue")(argv)
    assert not (out / "trainer_state.json").exists() and not list(out.glob("checkpoint-*"))


def _contract_model(tmp_path, num_labels):
    """A tiny Hydra classifier saved as a remote-code folder and loaded back as transformers' run_glue.py does."""
    folder = _saved_tiny_classifier(tmp_path / "hydra", num_labels)
    config = AutoConfig.from_pretrained(folder, num_labels=num_labels, finetuning_task="stsb",
                                        trust_remote_code=True)
    model = AutoModelForSequenceClassification.from_pretrained(folder, config=config, trust_remote_code=True)
    return model, AutoTokenizer.from_pretrained(folder)


def test_upstream_contract_dynamic_padding_matches_unpadded(tmp_path):
    model, tokenizer = _contract_model(tmp_path, num_labels=2)
    model.eval()
    texts = [("a fine film .", "it is good"), ("bad",), ("an exceptionally long and winding sentence about "
                                                       "nothing at all , really",)]
    features = [tokenizer(*text) for text in texts]
    batch = DataCollatorWithPadding(tokenizer)(features)
    assert batch["attention_mask"].min() == 0  # the rows really are padded
    with torch.no_grad():
        padded = model(**batch).logits
        alone = torch.cat([model(**tokenizer(*text, return_tensors="pt")).logits for text in texts])
    torch.testing.assert_close(padded, alone, rtol=1e-5, atol=1e-5)


def test_upstream_contract_stsb_regression_and_saved_labels(tmp_path):
    model, tokenizer = _contract_model(tmp_path, num_labels=1)
    pairs = [("A plane is taking off.", "An air plane is taking off.", 5.0),
             ("A man is playing a flute.", "A man is eating.", 0.8), ("A cat sleeps.", "A cat is asleep.", 4.2),
             ("Two dogs run.", "Nobody is here.", 0.0)]
    features = [dict(tokenizer(a, b), label=score) for a, b, score in pairs]
    batch = DataCollatorWithPadding(tokenizer)(features)
    model.eval()
    output = model(**batch)
    assert model.config.problem_type == "regression" and output.logits.shape == (4, 1)
    expected = ((output.logits.squeeze(-1) - torch.tensor([p[2] for p in pairs])) ** 2).mean()
    torch.testing.assert_close(output.loss, expected)

    args = TrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=2, max_steps=2,
                             report_to="none", disable_tqdm=True, save_strategy="no", use_cpu=True)
    trainer = Trainer(model=model, args=args, train_dataset=features, processing_class=tokenizer)
    assert isinstance(trainer.data_collator, DataCollatorWithPadding)  # the default, as run_glue relies on
    trainer.train()
    model.config.label2id, model.config.id2label = {"score": 0}, {0: "score"}
    trainer.save_model()
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["id2label"] == {"0": "score"} and saved["problem_type"] == "regression"
    assert "AutoModelForSequenceClassification" in saved["auto_map"]
