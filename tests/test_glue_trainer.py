"""scripts/run_glue.py through the Trainer, in-process: the README's main command on a slice, resuming, bad input,
and the model side of the contract with transformers' unmodified run_glue.py."""

import functools
import json

import numpy as np
import pytest
import torch
from conftest import TOKENIZER_DIR, tiny_config
from glue_test_helpers import (
    GLUE_SAMPLE,
    QUIET,
    TINY_HYDRA,
    predict_with_saved_model,
    read_official_tsv,
    script_function,
)
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from glue_tasks import GlueFormatError
from modeling_hydra import HydraForSequenceClassification

pytestmark = pytest.mark.usefixtures("single_thread")

SST2 = GLUE_SAMPLE / "SST-2"


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


def test_resumed_run_matches_an_uninterrupted_one(tmp_path, monkeypatch):
    """Stop after 3 of 6 steps (max_steps 3, checkpoint), resume from the checkpoint to 6 steps: only 3 more steps
    run, and the weights equal those of a 6-step run (constant learning rate, so the schedule does not depend on
    max_steps)."""
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
    assert (tmp_path / "resumed" / "checkpoint-3").is_dir()
    forward_calls = []
    forward = HydraForSequenceClassification.forward

    @functools.wraps(forward)
    def counted_forward(*args, **kwargs):
        forward_calls.append(1)
        return forward(*args, **kwargs)

    monkeypatch.setattr(HydraForSequenceClassification, "forward", counted_forward)
    run_glue([*common, "--max_steps", "6", "--output_dir", str(tmp_path / "resumed"), "--resume_from_checkpoint",
              str(tmp_path / "resumed" / "checkpoint-3")])
    assert len(forward_calls) == 3  # steps 4 to 6 only

    state = json.loads((tmp_path / "resumed" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    straight = load_file(tmp_path / "straight" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "model.safetensors")
    halfway = load_file(tmp_path / "resumed" / "checkpoint-3" / "model.safetensors")
    assert straight.keys() == resumed.keys()
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(halfway["classifier.weight"], straight["classifier.weight"])


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
    folder = tmp_path / "hydra"
    HydraForSequenceClassification(tiny_config(vocab_size=30528, num_labels=num_labels)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(TOKENIZER_DIR).save_pretrained(folder)
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
