#!/usr/bin/env bash
# The one command that verifies the SSD kernels on a GPU machine, from the source tree, with nothing to install
# beyond torch, triton and transformers (mamba_ssm optional): correctness of the forward pass and of all nine
# gradients against the float64 torch path (bfloat16/float16/float32, padded and packed rows), the float32
# (tf32x3) accuracy, a few bfloat16-autocast training steps against the torch backend, and fwd / fwd+bwd timings
# with peak memory at L = 512 ... 32768. About 5 minutes on one H100/H200.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR] [extra bench_kernels.py options]
#
# Writes OUT_DIR/bench_kernels.json and OUT_DIR/bench_kernels.md (default OUT_DIR: gpu_check_<date>); exits 1 if a
# correctness check failed. See benchmarks/bench_kernels.py for the details.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-gpu_check_$(date +%Y%m%d_%H%M%S)}"
shift $(( $# > 0 ? 1 : 0 ))
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
"${PYTHON:-python}" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check.sh: no CUDA device visible to torch')"
exec "${PYTHON:-python}" "$repo/benchmarks/bench_kernels.py" --out-dir "$out" "$@"
