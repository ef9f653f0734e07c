"""Every Triton SSD kernel, forward and backward, compiled for real GPU targets on this GPU-less machine (Triton's own
compiler and the ptxas inside the triton wheel, through benchmarks/triton_compile_matrix.py): it compiles, its shared
memory fits the target's per-block limit, and ptxas reports zero bytes of register spills.

A representative subset of the script's full matrix: hydra-base shapes (headdim 64, d_state 64, chunk 256, one
group) for sm_90 in bfloat16 and sm_80 in float32, with and without sequence boundaries. Spills depend on the Triton
version, so the test runs only with the triton that setup.py's [test] extra pins.
"""

import importlib.metadata
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

PINNED_TRITON = "3.9.0"
SCRIPT = REPO_ROOT / "benchmarks" / "triton_compile_matrix.py"
KERNELS = {"_chunk_cumsum_kernel", "_chunk_state_kernel", "_state_passing_kernel", "_chunk_cb_kernel",
           "_chunk_scan_kernel", "_chunk_state_grad_kernel", "_chunk_scan_bwd_dx_kernel", "_chunk_scan_bwd_db_kernel",
           "_chunk_scan_bwd_dc_kernel", "_chunk_cumsum_bwd_kernel"}
SHARED_LIMIT = {80: 166912, 90: 232448}
# (target, dtype) of each child process; both run at once.
SUBSET = ((90, "bfloat16"), (80, "float32"))


def _triton_version():
    try:
        return importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        return None


@pytest.mark.skipif(_triton_version() != PINNED_TRITON,
                    reason=f"needs triton=={PINNED_TRITON} (spills depend on the Triton version); "
                           f"found {_triton_version()}")
def test_kernels_compile_for_sm80_and_sm90_without_spills(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    children = []
    for target, dtype in SUBSET:
        out = tmp_path / f"sm{target}.json"
        command = [sys.executable, str(SCRIPT), "--targets", str(target), "--dtypes", dtype, "--headdim", "64",
                   "--d-state", "64", "--chunk-size", "256", "--ngroups", "1", "--json", str(out)]
        children.append((target, dtype, out, subprocess.Popen(command, cwd=REPO_ROOT, env=env, text=True,
                                                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)))
    for target, dtype, out, child in children:
        log = child.communicate(timeout=600)[0]
        assert out.exists(), f"sm_{target} {dtype}: no result\n{log[-4000:]}"
        rows = json.loads(out.read_text())["rows"]
        for seq_idx in (False, True):
            built = {row["kernel"] for row in rows if row["seq_idx"] == seq_idx}
            assert built == KERNELS, f"sm_{target} {dtype} seq_idx={seq_idx}: built {sorted(built)}"
        for row in rows:
            where = f"{row['kernel']} sm_{target} {dtype} seq_idx={row['seq_idx']}"
            assert row["ptxas_ok"], f"{where}: ptxas failed"
            assert row["spill_stores"] == 0 and row["spill_loads"] == 0, f"{where}: spills {row}"
            assert 0 < row["registers"] <= 255, where
            assert row["shared"] <= SHARED_LIMIT[target], f"{where}: {row['shared']} bytes of shared memory"
        assert child.returncode == 0, log[-4000:]
