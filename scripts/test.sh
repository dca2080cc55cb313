#!/usr/bin/env bash
# Set up (if needed) and run the test suite: scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check .
python -m pytest -q -m "not slow and not gpu" "$@"
