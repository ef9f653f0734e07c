"""The Triton bidirectional SSD on CPU: the interpreter checks (run in a child process, see
ssd_triton_interpreter_checks.py) and the backend selection of `resolve_ssd_backend`."""

import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO_ROOT
from modeling_hydra.ssd_backends import resolve_ssd_backend
from modeling_hydra.ssd_torch import ssd_bidirectional_torch

CHECKS = REPO_ROOT / "tests" / "ssd_triton_interpreter_checks.py"


def test_triton_kernels_in_interpreter_match_torch_path():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CHECKS)],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"interpreter checks failed:\n{result.stdout[-12000:]}\n{result.stderr[-3000:]}"
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]


def test_backend_selection(monkeypatch):
    from modeling_hydra.ssd_triton import ssd_bidirectional_triton, triton_kernels_interpreted

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_ssd_backend("auto", cpu) is ssd_bidirectional_torch
    assert resolve_ssd_backend("torch", cuda) is ssd_bidirectional_torch
    assert resolve_ssd_backend("auto", cuda) is ssd_bidirectional_triton
    assert resolve_ssd_backend("triton", cuda) is ssd_bidirectional_triton
    if triton_kernels_interpreted():  # TRITON_INTERPRET=1 was set for the whole run: CPU tensors are fine
        assert resolve_ssd_backend("triton", cpu) is ssd_bidirectional_triton
    else:
        with pytest.raises(ValueError, match="runs on CUDA tensors.*TRITON_INTERPRET=1"):
            resolve_ssd_backend("triton", cpu)
    with pytest.raises(ValueError, match="pip install mamba-ssm"):
        resolve_ssd_backend("mamba_ssm", cuda)  # mamba_ssm needs CUDA to import
    with pytest.raises(ValueError, match="Unknown ssd_backend"):
        resolve_ssd_backend("flash", cpu)

    monkeypatch.setattr("modeling_hydra.ssd_backends.triton_is_installed", lambda: False)
    with pytest.raises(ValueError, match="pip install triton"):
        resolve_ssd_backend("triton", cuda)
    assert resolve_ssd_backend("auto", cuda) is ssd_bidirectional_torch
