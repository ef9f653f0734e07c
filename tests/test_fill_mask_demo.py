"""scripts/fill_mask_demo.py runs end to end, reloads the checkpoint as remote code, and says what it does."""

import runpy
import subprocess
import sys

import pytest
from conftest import REPO_ROOT


def test_fill_mask_demo_runs(tmp_path):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "fill_mask_demo.py"), "--output-dir",
                             str(tmp_path / "checkpoint")], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "reloaded as transformers_modules." in result.stdout
    assert len([line for line in result.stdout.splitlines() if line.startswith("  0.")]) == 5  # top-5 scores
    assert (tmp_path / "checkpoint" / "modeling_hydra.py").exists()


def test_help_describes_the_demo(capsys):
    main = runpy.run_path(str(REPO_ROOT / "scripts" / "fill_mask_demo.py"))["main"]
    with pytest.raises(SystemExit) as exit_status:
        main(["--help"])
    assert exit_status.value.code == 0
    help_text = capsys.readouterr().out
    assert "placeholder" not in help_text.lower()
    assert "Fill-mask demo of the remote-code path" in help_text and "--output-dir" in help_text
