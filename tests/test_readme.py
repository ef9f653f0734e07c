"""README.md stays true: its test command is the one CI runs, and its usage example runs."""

import re

import torch

from conftest import REPO_ROOT


def readme_blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", (REPO_ROOT / "README.md").read_text(encoding="utf-8"), re.S)


def test_test_command_is_the_ci_command():
    ci_commands = [line for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()
                   if line.startswith("python3 -m venv")]
    assert len(ci_commands) == 1
    fresh_machine = [block.strip() for block in readme_blocks("bash") if block.startswith("python3 -m venv")]
    assert len(fresh_machine) == 2, "README must give exactly two commands for a fresh machine"
    assert fresh_machine[1] == ci_commands[0]
    assert "scripts/run_glue.py --task_name sst2 --glue_dir assets/glue_sample" in fresh_machine[0]


def test_usage_example_runs(tmp_path, monkeypatch):
    (example,) = readme_blocks("python")
    monkeypatch.chdir(REPO_ROOT)
    example = example.replace('"my-hydra"', repr(str(tmp_path / "my-hydra")))
    namespace = {}
    exec(compile(example, "README.md", "exec"), namespace)
    logits = namespace["logits"]
    assert logits.shape[:2] == namespace["batch"]["input_ids"].shape and torch.isfinite(logits).all()
