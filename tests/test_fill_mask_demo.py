"""The main job, scripts/fill_mask_demo.py, runs end to end and reloads the checkpoint as remote code."""

import subprocess
import sys

from conftest import REPO_ROOT


def test_fill_mask_demo_runs(tmp_path):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "fill_mask_demo.py"), "--output-dir",
                             str(tmp_path / "checkpoint")], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "reloaded as transformers_modules." in result.stdout
    assert len([line for line in result.stdout.splitlines() if line.startswith("  0.")]) == 5  # top-5 scores
    assert (tmp_path / "checkpoint" / "modeling_hydra.py").exists()
