#!/usr/bin/env bash
# Runs the test suite. Sets up everything it needs first (see scripts/setup_env.sh); safe to re-run.
# Extra arguments go to pytest, e.g. `bash run_tests.sh -k slices -x`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
source scripts/setup_env.sh --dev
"$PY" -m ruff check brainseg_utils tests benchmarks
exec "$PY" -m pytest "$@"
