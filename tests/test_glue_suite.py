"""scripts/glue_suite.py end to end on a tiny STS-B: one run per model, then the table, JSON and plot."""

import argparse
import json
import subprocess
import sys

import pytest
from conftest import TOKENIZER_DIR, tiny_config
from glue_test_helpers import GLUE_SAMPLE, SCRIPTS, script_function, subprocess_env
from transformers import BertConfig

from hydra_transformers.glue import build_model, get_glue_task


def test_suite_writes_one_table_json_and_plot(tmp_path):
    sts = tmp_path / "glue" / "STS-B"
    sts.mkdir(parents=True)
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    sentences = ["A man plays a flute.", "A dog runs.", "A plane takes off.", "A child rides a horse.",
                 "Two women cook.", "A cat sleeps on a bed."]
    rows = [f"{i}\tmain\tf\t2012\t{i}\tnone\tnone\t{a}\t{b}\t{(i * 7 % 11) / 2.2:.3f}\n"
            for i, (a, b) in enumerate(zip(sentences, sentences[1:] + sentences[:1]))]
    (sts / "train.tsv").write_text(header + "".join(rows))
    (sts / "dev.tsv").write_text(header + "".join(rows))
    hydra = tmp_path / "hydra.json"
    tiny_config(vocab_size=30528).to_json_file(hydra)
    bert = tmp_path / "bert.json"
    BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=64).to_json_file(bert)
    out = tmp_path / "suite"
    command = [sys.executable, str(SCRIPTS / "glue_suite.py"), "--glue_dir", str(tmp_path / "glue"), "--models",
               f"hydra={hydra}", f"bert={bert}", "--tasks", "stsb", "--learning_rates", "1e-3", "--max_steps", "2",
               "--batch_size", "4", "--tokenizer_name", str(TOKENIZER_DIR), "--output_dir", str(out)]
    completed = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    results = json.loads((out / "results.json").read_text())
    for name, config in (("hydra", hydra), ("bert", bert)):
        run = json.loads((out / name / "stsb" / "lr0.001" / "eval_results.json").read_text())
        expected = (run["eval_pearson"] + run["eval_spearmanr"]) / 2
        best = results["best"][name]["stsb"]
        assert best["score"] == pytest.approx(expected) and best["metric"] == "mean of Pearson & Spearman"
        assert f"{100 * expected:.1f} (lr 0.001)" in (out / "results.md").read_text()
        model = build_model("sequence_classification", type(tiny_config()).from_json_file(config)
                            if name == "hydra" else BertConfig.from_json_file(config))
        assert results["parameters"][name] == sum(p.numel() for p in model.parameters())
    assert "| STS-B | mean of Pearson & Spearman |" in (out / "results.md").read_text()
    assert results["majority_class"] == {"stsb": None}
    import matplotlib.image  # 0.7-1 s to import: only this test reads the plot

    image = matplotlib.image.imread(out / "results.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_majority_class_baseline(tmp_path):
    rte = tmp_path / "RTE"
    rte.mkdir()
    header = "index\tsentence1\tsentence2\tlabel\n"
    train = ["not_entailment", "not_entailment", "entailment", "not_entailment"]
    dev = ["entailment", "not_entailment", "not_entailment"]
    (rte / "train.tsv").write_text(header + "".join(f"{i}\ta\tb\t{y}\n" for i, y in enumerate(train)))
    (rte / "dev.tsv").write_text(header + "".join(f"{i}\ta\tb\t{y}\n" for i, y in enumerate(dev)))
    majority_class_score = script_function("glue_suite", "majority_class_score")
    args = argparse.Namespace(glue_dir=str(tmp_path), max_train_samples=None, max_eval_samples=None)
    assert majority_class_score(args, get_glue_task("rte")) == pytest.approx(2 / 3)
    args.max_train_samples = 3  # the first three: not_entailment twice, so still the majority
    assert majority_class_score(args, get_glue_task("rte")) == pytest.approx(2 / 3)
    args.max_eval_samples = 1
    assert majority_class_score(args, get_glue_task("rte")) == 0.0
    assert majority_class_score(args, get_glue_task("stsb")) is None


def test_default_tasks_are_those_present_and_the_missing_are_named(tmp_path, capsys):
    """The embedded sample holds SST-2 only: by default the suite runs it and names the tasks it cannot run; an
    explicit task whose files are missing is an error that names them."""
    parse_arguments = script_function("glue_suite", "parse_arguments")
    common = ["--glue_dir", str(GLUE_SAMPLE), "--models", f"hydra={tmp_path}", "--output_dir", str(tmp_path / "out")]
    assert parse_arguments(common).tasks == ["sst2"]
    printed = capsys.readouterr().out
    assert "Running sst2; the files of cola, mrpc, stsb, rte, wnli are not in" in printed
    assert "gluebenchmark.com/tasks" in printed and str(GLUE_SAMPLE / "CoLA") in printed
    with pytest.raises(SystemExit):
        parse_arguments([*common, "--tasks", "sst2", "rte"])
    error = capsys.readouterr().err
    assert f"task rte: missing {GLUE_SAMPLE / 'RTE' / 'train.tsv'}, {GLUE_SAMPLE / 'RTE' / 'dev.tsv'}" in error
    with pytest.raises(SystemExit):
        parse_arguments([*common[:1], str(tmp_path), *common[2:]])
    assert "holds none of the tasks cola, sst2, mrpc, stsb, rte, wnli" in capsys.readouterr().err
