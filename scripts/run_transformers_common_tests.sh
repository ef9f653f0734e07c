#!/usr/bin/env bash
# Run transformers' own common model tests (ModelTesterMixin, ConfigTester) on Hydra, all of them: the tests come
# from the PyPI sdist of the installed transformers (cached in ~/.cache/hydra-transformers-tests), and RUN_SLOW=1
# adds transformers' @slow tests, which all need an accelerator (on CPU they skip, saying so).
# Usage: scripts/run_transformers_common_tests.sh [pytest arguments]   (PYTHON defaults to .venv/bin/python)
# Prints every skip with its reason (-rs).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
RUN_SLOW=1 exec "$PYTHON" -m pytest -q -rs tests/test_transformers_common.py "$@"
