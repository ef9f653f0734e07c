"""The Triton bidirectional SSD on CPU: the interpreter checks (run in a child process, see
ssd_triton_interpreter_checks.py), the registry's loader of the "triton" backend, the checks at the entry of
`ssd_bidirectional_triton`, the float32 dot precision, and the dry run of the GPU check script."""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO_ROOT
from modeling_hydra import ssd_backends
from modeling_hydra.ssd_triton import check_ssd_inputs, ssd_bidirectional_triton, triton_kernels_interpreted
from modeling_hydra.ssd_triton_runtime import float32_dot_precision

CHECKS = REPO_ROOT / "tests" / "ssd_triton_interpreter_checks.py"
INTERPRETER = {**os.environ, "TRITON_INTERPRET": "1"}
needs_triton = pytest.mark.skipif(not ssd_backends.triton_is_installed(), reason="needs the triton package")


@needs_triton
def test_triton_kernels_in_interpreter_match_torch_path():
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CHECKS)],
                            cwd=REPO_ROOT, env=INTERPRETER, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"interpreter checks failed:\n{result.stdout[-12000:]}\n{result.stderr[-3000:]}"
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]


@needs_triton
def test_gpu_check_dry_run(tmp_path):
    """benchmarks/bench_kernels.py (what benchmarks/gpu_check.sh runs) end to end on CPU: every section runs and passes
    (correctness in float32 only, to keep the test short)."""
    result = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "bench_kernels.py"), "--dry-run",
                             "--dtypes", "float32", "--out-dir", str(tmp_path)], cwd=REPO_ROOT, env=INTERPRETER,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    report = json.loads((tmp_path / "bench_kernels.json").read_text())
    checks = report["correctness"] + report["precision"] + report["training"]
    assert {row["backend"] for row in report["correctness"]} >= {"torch", "triton"}
    assert all(row["ok"] for row in checks) and report["training"], checks
    assert {row["backend"] for row in report["timing"]} >= {"torch", "triton"}
    assert "| ssd padded | triton | float32 |" in (tmp_path / "bench_kernels.md").read_text()


@needs_triton
def test_triton_backend_loader(monkeypatch):
    backend = ssd_backends.SSD_BACKENDS["triton"]
    assert backend.load(torch.device("cuda")) is ssd_bidirectional_triton
    if triton_kernels_interpreted():  # TRITON_INTERPRET=1 was set for the whole run: CPU tensors are fine
        assert backend.load(torch.device("cpu")) is ssd_bidirectional_triton
    else:
        with pytest.raises(ValueError, match="runs on CUDA tensors.*TRITON_INTERPRET=1"):
            backend.load(torch.device("cpu"))
    monkeypatch.setattr(ssd_backends, "triton_is_installed", lambda: False)
    with pytest.raises(ValueError, match="pip install triton"):
        backend.load(torch.device("cuda"))


def test_float32_dots_use_tensor_cores_at_float32_accuracy_unless_torch_allows_tf32():
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert float32_dot_precision() == "tf32x3"
        for setting in ("high", "medium"):
            torch.set_float32_matmul_precision(setting)
            assert float32_dot_precision() == "tf32"
    finally:
        torch.set_float32_matmul_precision(before)


def ssd_args(batch=2, seqlen=20, nheads=4, headdim=8, ngroups=2, d_state=8, dtype=torch.float32):
    """Well-formed arguments of ssd_bidirectional_triton (as a dict, to break one at a time)."""
    return dict(x=torch.randn(batch, seqlen, nheads, headdim, dtype=dtype),
                dt_f=torch.rand(batch, seqlen, nheads), dt_b=torch.rand(batch, seqlen, nheads),
                A=-torch.rand(nheads), B_f=torch.randn(batch, seqlen, ngroups, d_state, dtype=dtype),
                C_f=torch.randn(batch, seqlen, ngroups, d_state, dtype=dtype),
                B_b=torch.randn(batch, seqlen, ngroups, d_state, dtype=dtype),
                C_b=torch.randn(batch, seqlen, ngroups, d_state, dtype=dtype),
                diag=torch.randn(batch, seqlen, nheads), chunk_size=16, seq_idx=None)


def check(interpreted=True, **changes):
    args = ssd_args()
    args.update(changes)
    check_ssd_inputs(**args, interpreted=interpreted)


def test_well_formed_inputs_pass_the_checks():
    check()
    check(seq_idx=torch.zeros(2, 20, dtype=torch.int64))
    bf16 = ssd_args(dtype=torch.bfloat16)  # autocast: x, B, C in bfloat16 with dt, A, diag in float32
    check_ssd_inputs(**bf16, interpreted=True)


@pytest.mark.parametrize("changes, message", [
    (dict(dt_f=torch.rand(2, 19, 4)), r"dt_f has shape \(2, 19, 4\), expected \(2, 20, 4\)"),
    (dict(diag=torch.rand(2, 20, 3)), r"diag has shape"),
    (dict(A=-torch.rand(5)), r"A has shape \(5,\), expected \(4,\)"),
    (dict(C_b=torch.randn(2, 20, 2, 7)), r"C_b has shape \(2, 20, 2, 7\)"),
    (dict(B_f=torch.randn(2, 20, 3, 8), B_b=torch.randn(2, 20, 3, 8), C_f=torch.randn(2, 20, 3, 8),
          C_b=torch.randn(2, 20, 3, 8)), r"nheads \(4\) must be a multiple of ngroups \(3\)"),
    (dict(x=torch.randn(2, 20, 4)), r"x must be \(batch, seqlen, nheads, headdim\)"),
    (dict(seq_idx=torch.zeros(2, 21, dtype=torch.int32)), r"seq_idx has shape \(2, 21\), expected \(2, 20\)"),
    (dict(seq_idx=torch.zeros(2, 20)), r"seq_idx must be an int32 or int64 tensor"),
    (dict(x=torch.randn(2, 20, 4, 8).to(torch.int32)), r"x has dtype torch.int32"),
    (dict(B_f=torch.randn(2, 20, 2, 8, dtype=torch.float16)), r"B_f has dtype torch.float16, x has torch.float32"),
    (dict(x=torch.randn(2, 20, 4, 256)), r"x has headdim 256; the kernels support at most 128"),
    (dict(B_f=torch.randn(2, 20, 2, 200), C_f=torch.randn(2, 20, 2, 200), B_b=torch.randn(2, 20, 2, 200),
          C_b=torch.randn(2, 20, 2, 200)), r"B_f has d_state 200; the kernels support at most 128"),
    (dict(chunk_size=8), r"chunk_size must be a power of two in \[16, 256\], got 8"),
    (dict(chunk_size=100), r"chunk_size must be a power of two in \[16, 256\], got 100"),
    (dict(chunk_size=512), r"chunk_size must be a power of two"),
    (dict(interpreted=False), r"x is on cpu; the Triton kernels run on CUDA tensors"),
])
def test_bad_inputs_raise_value_error_naming_the_tensor(changes, message):
    with pytest.raises(ValueError, match=message):
        check(**changes)


def test_bad_inputs_are_refused_at_the_entry():
    args = ssd_args()
    args["chunk_size"] = 24
    with pytest.raises(ValueError, match="chunk_size must be a power of two"):
        ssd_bidirectional_triton(**args)
