#!/usr/bin/env bash
# The project's one test command: installs what is missing, then lints and runs the test suite.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# torch: the CPU build 2.13.0 when none is installed (an unpinned torch would pull a multi-GB CUDA build).
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    "$PY" -m pip install --quiet "torch==2.13.0"
fi
"$PY" -m pip install --quiet -e ".[test]"
"$PY" -m ruff check drn_cli tests benchmarks
"$PY" -m pytest -q "$@"
