#!/usr/bin/env bash
# Shared set-up for run_all.sh and run_tests.sh. Source it: `source scripts/setup_env.sh [--dev]`.
# Exports PY (the interpreter to use). Safe to re-run: installs only what is missing or changed.
#
#  * Colab / Kaggle: installs only what the running Python lacks (scripts/install_hosted.py: never its torch
#    or Jupyter stack). BRAINSEG_NO_VENV=1: installs into the running Python with pip.
#  * Elsewhere: a project virtual environment at ${BRAINSEG_VENV:-.venv}, so nothing touches
#    the system Python. torch comes from requirements.txt's range unless already installed.
set -euo pipefail

_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_dev=0
[[ "${1:-}" == "--dev" ]] && _dev=1

_base_python="${PYTHON:-python3}"
if ! command -v "$_base_python" >/dev/null 2>&1; then
    echo "error: $_base_python not found; install Python >= 3.10 or set PYTHON=/path/to/python" >&2
    return 1 2>/dev/null || exit 1
fi
if ! "$_base_python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "error: Python >= 3.10 needed, found $("$_base_python" --version 2>&1)" >&2
    return 1 2>/dev/null || exit 1
fi

_hosted=0  # Colab / Kaggle: GPU platforms that bring their own stack; the CPU extras are not forced there
[[ -n "${COLAB_RELEASE_TAG:-}" || -n "${KAGGLE_KERNEL_RUN_TYPE:-}" || -n "${KAGGLE_URL_BASE:-}" ]] && _hosted=1
if (( _hosted )) || [[ "${BRAINSEG_NO_VENV:-0}" == "1" ]]; then
    PY="$_base_python"
    _editable=()
else
    _venv="${BRAINSEG_VENV:-$_root/.venv}"
    if [[ ! -x "$_venv/bin/python" ]]; then
        echo "setup: creating virtual environment $_venv"
        "$_base_python" -m venv "$_venv"
    fi
    PY="$_venv/bin/python"
    _editable=(-e)
fi
export PY

# Stamp = hash of everything that decides what gets installed; skip pip when unchanged.
_files=("$_root/requirements.txt" "$_root/pyproject.toml")
(( _dev )) && _files+=("$_root/requirements-dev.txt" "$_root/tests/colab-build-tools.txt")
(( _hosted )) || _files+=("$_root/requirements-cpu.txt")  # OpenVINO encoder runtime (local CPU runs)
_stamp_file="$("$PY" -c 'import sys; print(sys.prefix)')/.brainseg-setup-$(( _dev ))"
_stamp="$(cat "${_files[@]}" | sha256sum | cut -c1-16)-$("$PY" -c 'import sys; print(sys.version.split()[0])')"
if [[ -f "$_stamp_file" && "$(cat "$_stamp_file")" == "$_stamp" ]] \
        && "$PY" -c 'import brainseg_utils, torch, papermill' >/dev/null 2>&1; then
    echo "setup: environment up to date ($PY)"
else
    echo "setup: installing requirements into $("$PY" -c 'import sys; print(sys.prefix)') (first run takes a few minutes)"
    if (( _hosted )); then
        # Only what the platform lacks; never its torch or Jupyter stack (see scripts/install_hosted.py).
        _hreqs=(--requirements "$_root/requirements.txt")
        (( _dev )) && _hreqs+=(--requirements "$_root/requirements-dev.txt")
        "$PY" "$_root/scripts/install_hosted.py" "${_hreqs[@]}" || { return 1 2>/dev/null || exit 1; }
    else
        _reqs=(-r "$_root/requirements.txt" -r "$_root/requirements-cpu.txt")
        (( _dev )) && _reqs+=(-r "$_root/requirements-dev.txt")
        "$PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
        "$PY" -m pip install -q "${_reqs[@]}" "${_editable[@]}" "$_root" 2>&1 | grep -vE "is ignored: it is neither" || true
    fi
    "$PY" -c 'import brainseg_utils, torch, papermill' || {
        echo "error: installation failed (see pip output above)" >&2; return 1 2>/dev/null || exit 1; }
    if (( _dev )); then  # wheels of Colab's pip and setuptools, for the offline hosted-build test
        "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$("$PY" -c 'import sys; print(sys.prefix)')/colab-build-tools" \
            -r "$_root/tests/colab-build-tools.txt" 2>&1 | grep -vE "is ignored: it is neither" || true
    fi
    # A kernel for papermill that runs this same interpreter (not whatever "python3" points at).
    "$PY" -m ipykernel install --sys-prefix --name brainseg --display-name "Python (brainseg)" >/dev/null
    echo "$_stamp" > "$_stamp_file"
fi
export NO_ALBUMENTATIONS_UPDATE=1  # no version check over the network
