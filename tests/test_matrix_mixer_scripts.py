"""benchmarks/bench_matrix_mixers.py and benchmarks/matrix_mixer_ablation.py run end to end in their --quick modes
and write what they measured. No timing or score is checked, only the structure of the reports and, for the
benchmark, that both paths compute the same mixer."""

import json
import shutil
import statistics
import subprocess
import sys

from conftest import REPO_ROOT


def run_script(name, *args):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / name), *args], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def test_benchmark_quick_compares_both_paths(tmp_path):
    run_script("bench_matrix_mixers.py", "--quick", "--threads", "1", "--out-dir", str(tmp_path))
    report = json.loads((tmp_path / "bench_matrix_mixers.json").read_text())
    rows = report["rows"]
    variants = {row["variant"] for row in rows}
    assert variants == {"toeplitz dd", "low_rank di", "attention dd", "quasiseparable di"}
    for row in rows:
        assert row["ours"]["ms"] > 0 and row["materialized"]["ms"] > 0
        assert row["rel_diff"] < 1e-5  # float32: the fast path and the materialized matrix agree
        assert abs(row["speedup"] - row["materialized"]["ms"] / row["ours"]["ms"]) < 1e-9
    table = (tmp_path / "bench_matrix_mixers.md").read_text()
    assert table.count("| toeplitz dd | 16 |") == 2  # forward and fwd+bwd


def test_ablation_quick_writes_mean_and_std_over_seeds(tmp_path):
    glue = tmp_path / "glue"
    shutil.copytree(REPO_ROOT / "assets" / "glue_sample" / "SST-2", glue / "SST-2")
    run_script("matrix_mixer_ablation.py", "--quick", "--threads", "1", "--tasks", "sst2", "--glue_dir", str(glue),
               "--out-dir", str(tmp_path / "out"))
    report = json.loads((tmp_path / "out" / "matrix_mixer_ablation.json").read_text())
    runs = report["runs"]
    assert {(r["variant"], r["seed"]) for r in runs} == {(v, s) for v in ("low_rank dd", "toeplitz di")
                                                           for s in (0, 1)}
    table = (tmp_path / "out" / "matrix_mixer_ablation.md").read_text()
    for variant, paper in (("low_rank dd", "78.4"), ("toeplitz di", "75.8")):
        scores = [r["glue"] for r in runs if r["variant"] == variant]
        expected = f"{statistics.mean(scores):.1f} ± {statistics.stdev(scores):.1f} | {paper} |"
        line = next(line for line in table.splitlines() if line.startswith(f"| {variant} |"))
        assert line.endswith(expected), (line, expected)


def test_ablation_resume_keeps_finished_runs_and_refuses_other_settings(tmp_path):
    glue = tmp_path / "glue"
    shutil.copytree(REPO_ROOT / "assets" / "glue_sample" / "SST-2", glue / "SST-2")
    common = ["--quick", "--threads", "1", "--tasks", "sst2", "--glue_dir", str(glue), "--variants", "low_rank dd",
              "--out-dir", str(tmp_path / "out")]
    record = tmp_path / "out" / "matrix_mixer_ablation.json"
    run_script("matrix_mixer_ablation.py", *common, "--seeds", "0")
    (first,) = json.loads(record.read_text())["runs"]
    run_script("matrix_mixer_ablation.py", *common, "--seeds", "0", "1", "--resume")
    runs = json.loads(record.read_text())["runs"]
    assert [(r["seed"], r["seconds"]) for r in runs][0] == (0, first["seconds"])  # kept, not run again
    assert [r["seed"] for r in runs] == [0, 1]
    result = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "matrix_mixer_ablation.py"), *common,
                             "--finetune_lr", "0.5", "--resume"], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode != 0 and "other settings (['finetune_lr'])" in result.stderr
    assert json.loads(record.read_text())["runs"] == runs  # nothing written
