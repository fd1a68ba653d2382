#!/usr/bin/env bash
# Runs the tests. Sets up everything it needs first (see scripts/setup_env.sh); safe to re-run.
#   bash run_tests.sh                 # lint, format check, then the fast tier (everything not marked slow:
#                                     # tests/conftest.py lists what is slow; ~3 min on 2 cores)
#   bash run_tests.sh --all           # every test, notebooks, multi-process and browser included (CI)
#   bash run_tests.sh -k slices -x    # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
source scripts/setup_env.sh --dev
"$PY" -m ruff check brainseg_utils tests benchmarks scripts app.py notebooks
"$PY" -m ruff format --check brainseg_utils tests benchmarks scripts app.py
tier=(-m "not slow")
if [[ "${1:-}" == "--all" ]]; then
    shift
    tier=()
fi
exec "$PY" -m pytest ${tier[@]+"${tier[@]}"} "$@"
