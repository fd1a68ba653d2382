"""Where are we running: Colab, Kaggle or a plain machine; what accelerator is there; which code ran.

Owns platform detection (``platform``, ``default_output_root``), the accelerator summary written into
logs and results (``device_summary``), the git commit of the package (``code_version``, recorded in
``metrics.json``) and ``enter_project_root`` (a notebook opened in ``notebooks/`` writes to ``<repo>/outputs``).
"""

from __future__ import annotations

import os
import sys


def platform() -> str:
    """ "colab", "kaggle" or "local"."""
    if "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ:
        return "colab"
    if "KAGGLE_KERNEL_RUN_TYPE" in os.environ:
        return "kaggle"
    return "local"


def default_output_root() -> str:
    """Writable output folder: /kaggle/working on Kaggle (input is read-only), else ./outputs."""
    return "/kaggle/working/outputs" if platform() == "kaggle" else "outputs"


def device_summary() -> dict:
    """Accelerator facts for logs and result files (imports torch lazily)."""
    try:
        import torch
    except ImportError:
        return {"torch": None, "device": "cpu"}
    info = {"torch": torch.__version__, "device": "cpu", "cpu_threads": torch.get_num_threads()}
    gpu = cuda_device()
    if gpu is not None:
        name, cap = gpu
        info.update(device="cuda", gpu=name, capability=f"{cap[0]}.{cap[1]}")
    return info


def cuda_device() -> tuple[str, tuple[int, int]] | None:
    """(name, compute capability) of the first CUDA device, or None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(0), tuple(torch.cuda.get_device_capability(0))


def code_version() -> dict:
    """{"commit": git HEAD of the package's checkout (or None), "dirty": uncommitted changes to tracked files}."""
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if commit.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def enter_project_root() -> str:
    """chdir to the brainseg checkout that holds the cwd (a notebook opened in notebooks/
    then writes to <repo>/outputs like run_all.sh does). Returns the cwd; no-op when not found."""
    from pathlib import Path

    here = Path.cwd()
    for cand in (here, *here.parents):
        pp = cand / "pyproject.toml"
        if pp.is_file() and 'name = "brainseg"' in pp.read_text(errors="ignore"):
            os.chdir(cand)
            return str(cand)
    return str(here)
