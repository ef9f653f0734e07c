#!/usr/bin/env bash
# Run transformers' own common model tests (ModelTesterMixin, ConfigTester) on Hydra and list every skip with its
# reason. The tests come from the PyPI sdist of the installed transformers (cached in
# ~/.cache/hydra-transformers-tests). CI runs the same file; this script adds RUN_SLOW=1, transformers' switch for
# its @slow tests, which all need an accelerator (on a CPU-only machine they skip, saying so).
# Usage: scripts/run_transformers_common_tests.sh [pytest arguments]     (PYTHON defaults to .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
RUN_SLOW=1 exec "$PYTHON" -m pytest -q -rs tests/test_transformers_common.py "$@"
