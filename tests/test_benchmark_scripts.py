"""benchmarks/benchmark.py (encoder and GLUE modes) and benchmarks/profile_step.py run end to end at tiny settings and
report what they measured: table rows, JSON fields, and padding statistics recomputed here from the TSV file.
No timing is checked, only the structure and the arithmetic of the reports."""

import csv
import json
import statistics
import subprocess
import sys

import pytest
from transformers import AutoTokenizer

from conftest import REPO_ROOT, TOKENIZER_DIR

SST2_DEV = REPO_ROOT / "assets" / "glue_sample" / "SST-2" / "dev.tsv"
SST2_TRAIN = REPO_ROOT / "assets" / "glue_sample" / "SST-2" / "train.tsv"
ONE_LAYER = '{"num_hidden_layers": 1}'


def run_script(name: str, *args: str) -> str:
    result = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / name), "--threads", "1", *args],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def table_rows(stdout: str) -> dict:
    """First cell -> the other cells of every markdown table row that is not a header or separator."""
    rows = {}
    for line in stdout.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows.setdefault(cells[0], cells[1:])
    return rows


def sentence_lengths(path, count: int) -> list:
    """Token counts (with [CLS] and [SEP]) of the first `count` sentences of an SST-2 TSV file."""
    with open(path, newline="") as f:
        sentences = [row["sentence"] for _, row in zip(range(count), csv.DictReader(f, delimiter="\t",
                                                                                   quoting=csv.QUOTE_NONE))]
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    return [len(ids) for ids in tokenizer(sentences, truncation=True, max_length=128)["input_ids"]]


def test_glue_mode_reports_every_variant_against_bert(tmp_path):
    report = tmp_path / "glue.json"
    stdout = run_script("benchmark.py", "--glue", "--train_samples", "40", "--eval_samples", "70", "--repeats", "2",
                        "--warmup_batches", "1", "--hydra_overrides", ONE_LAYER, "--bert_overrides", ONE_LAYER,
                        "--variants", "plain={}", 'chunked={"chunk_size": 16, "unknown_field": 3}',
                        "--json", str(report))
    result = json.loads(report.read_text())
    names = ["hydra-small[plain]", "hydra-small[chunked]", "bert-small"]
    assert list(result["models"]) == names
    configs = result["setup"]["configs"]
    assert configs["hydra-small[chunked]"]["chunk_size"] == 16
    assert configs["hydra-small[chunked]"]["unknown_field"] == 3  # passed through for fields of future configs
    assert "unknown_field" not in configs["hydra-small[plain]"]
    assert all(configs[name]["num_hidden_layers"] == 1 for name in names)
    rows = table_rows(stdout)
    bert = result["models"]["bert-small"]
    for name in names:
        model = result["models"][name]
        for split in ("train", "eval"):
            runs = model[split]["runs"]
            assert len(runs) == 2 and all(run > 0 for run in runs)
            assert model[split]["median"] == pytest.approx(statistics.median(runs))
            assert (model[split]["min"], model[split]["max"]) == (min(runs), max(runs))
            assert model[f"{split}_ratio"] == pytest.approx(model[split]["median"] / bert[split]["median"])
        assert rows[name][1] == f"{model['train']['median']:.1f}"
        assert rows[name][3] == f"{model['eval']['median']:.1f}"
        if name != "bert-small":
            assert rows[name][5] == f"**{model['train_ratio']:.2f}**"

    # Dev batches come in order (64 + 6 sentences), each padded to its longest sentence.
    dev = sentence_lengths(SST2_DEV, 70)
    padded = 64 * max(dev[:64]) + 6 * max(dev[64:])
    assert result["padding"]["eval"]["real_token_share"] == pytest.approx(sum(dev) / padded)
    assert result["padding"]["eval"]["batches"] == 2
    train = sentence_lengths(SST2_TRAIN, 40)  # shuffled batches: only the per-sentence mean is order-free
    assert result["padding"]["train"]["mean_real_tokens"] == pytest.approx(sum(train) / 40)
    assert f"real tokens {result['padding']['eval']['real_token_share']:.1%}" in stdout


def test_encoder_mode_runs(tmp_path):
    report = tmp_path / "encoder.json"
    stdout = run_script("benchmark.py", "--pairs", "small", "--lengths", "32", "--tokens", "64", "--repeats", "1",
                        "--modes", "forward", "--no_memory", "--json", str(report))
    (row,) = json.loads(report.read_text())
    assert (row["pair"], row["seqlen"], row["batch"], row["mode"]) == ("small", 32, 2, "forward")
    assert row["ratio"] == pytest.approx(row["hydra_tok_s"] / row["bert_tok_s"])
    assert table_rows(stdout)["small"][:2] == ["32 x   2", "forward"]
    # the printed columns are BENCHMARKS.md's (less its "run" column and, with --no_memory, the memory columns)
    header = next(line for line in stdout.splitlines() if line.startswith("| pair |")).strip("| ").split(" | ")
    documented = next(line for line in (REPO_ROOT / "BENCHMARKS.md").read_text().splitlines()
                      if line.startswith("| pair | L x batch |")).replace("**", "").strip("| ").split(" | ")
    documented.remove("run")
    assert header == documented[:len(header)] and len(header) == 8 and len(documented) == 14


def test_profile_step_tables_for_hydra_and_bert(tmp_path):
    report = tmp_path / "profile.json"
    configs = ["configs/hydra-small.json", "configs/bert-small.json"]
    stdout = run_script("profile_step.py", "--config", *configs, "--overrides", ONE_LAYER, "--random_lengths", "4",
                        "12", "--batch_size", "4", "--eval", "--eval_batch_size", "3", "--warmup", "1", "--steps", "1",
                        "--json", str(report))
    models = json.loads(report.read_text())["models"]
    assert list(models) == configs
    rows = table_rows(stdout)
    assert "outside ops (Python, dispatch, profiler)" in rows
    for config, phases in models.items():
        assert (phases["train"]["batch_size"], phases["eval"]["batch_size"]) == (4, 3)
        for phase in phases.values():
            assert 4 <= phase["padded_length"] <= 12
            in_groups = sum(group["self_ms"] for group in phase["groups"].values())
            assert in_groups == pytest.approx(sum(op["self_ms"] for op in phase["ops"].values()))
            assert sorted(op for group in phase["groups"].values() for op in group["ops"]) == sorted(phase["ops"])
            assert in_groups <= phase["profiled_step_ms"] * 1.01  # self times of one thread fit in the wall time
        train_ops, eval_ops = phases["train"]["ops"], phases["eval"]["ops"]
        assert any("backward" in op.lower() for op in train_ops)
        assert not any("backward" in op.lower() for op in eval_ops)
        assert ("softmax / attention (sdpa)" in phases["train"]["groups"]) == ("bert" in config)
        largest = max(train_ops, key=lambda op: train_ops[op]["self_ms"])
        assert f"`{largest}`" in rows
