"""Where are we running: Colab, Kaggle or a plain machine; what accelerator is there; which code ran.

Owns platform detection (``platform``; the hosted folders: ``default_output_root``, ``cache_root``,
``clone_dir``, ``free_bytes`` aware of Kaggle's output cap, ``missing_hint``), the accelerator summary
written into logs and results (``device_summary``), the git commit of the package (``code_version``,
recorded in ``metrics.json``) and ``enter_project_root`` (the checkout the package was imported from).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Hosted platforms' folders. Each can be moved with an environment variable so that tests simulate a
# platform in a temporary folder and never write to the real /content or /kaggle.
KAGGLE_OUTPUT_CAP_BYTES = 20 * 1024**3  # Kaggle keeps at most 20 GB of /kaggle/working per notebook version


KAGGLE_MARKERS = ("KAGGLE_KERNEL_RUN_TYPE", "KAGGLE_URL_BASE")  # set in Kaggle notebooks and scripts


def platform() -> str:
    """ "kaggle", "colab" or "local". Kaggle is tested first: its image is built from Colab's runtime image,
    so ``COLAB_RELEASE_TAG`` is set on Kaggle too (Kaggle's kagglehub stopped reading it for that reason).
    Kaggle: one of ``KAGGLE_MARKERS`` set, or an /kaggle/input folder. Colab: ``google.colab`` imported (a
    Colab kernel) or ``COLAB_RELEASE_TAG`` (also seen by the kernels papermill starts there) without Kaggle."""
    if any(os.environ.get(v) for v in KAGGLE_MARKERS) or (kaggle_root() / "input").is_dir():
        return "kaggle"
    if "google.colab" in sys.modules or os.environ.get("COLAB_RELEASE_TAG"):
        return "colab"
    return "local"


def hosted() -> bool:
    """True on Colab or Kaggle (fresh VMs, platform-owned Python stack)."""
    return platform() != "local"


def colab_root() -> Path:
    """Colab's working folder: /content ($BRAINSEG_COLAB_ROOT overrides it)."""
    return Path(os.environ.get("BRAINSEG_COLAB_ROOT") or "/content")


def drive_root() -> Path:
    """Google Drive's "My Drive" once mounted: <colab root>/drive/MyDrive ($BRAINSEG_DRIVE overrides it)."""
    return Path(os.environ.get("BRAINSEG_DRIVE") or colab_root() / "drive" / "MyDrive")


def kaggle_root() -> Path:
    """/kaggle ($BRAINSEG_KAGGLE_ROOT overrides it): input/ (read-only), working/ (kept), temp/ (not kept)."""
    return Path(os.environ.get("BRAINSEG_KAGGLE_ROOT") or "/kaggle")


def clone_dir() -> Path | None:
    """Where the bootstrap cell clones the project on a hosted platform ($BRAINSEG_HOME overrides it):
    <colab root>/brainseg on Colab, /kaggle/working/brainseg on Kaggle; None locally."""
    if os.environ.get("BRAINSEG_HOME"):
        return Path(os.environ["BRAINSEG_HOME"])
    where = platform()
    if where == "colab":
        return colab_root() / "brainseg"
    if where == "kaggle":
        return kaggle_root() / "working" / "brainseg"
    return None


def project_root() -> Path:
    """The brainseg checkout this package was imported from (an editable install or PYTHONPATH: the
    clone on Colab/Kaggle), else the checkout holding the working directory, else the working directory.

    Resolved from the package first, so a kernel restart (which forgets ``os.chdir``) still finds the clone."""
    pkg = Path(__file__).resolve().parents[2]
    for cand in (pkg, Path.cwd(), *Path.cwd().parents):
        pp = cand / "pyproject.toml"
        if pp.is_file() and 'name = "brainseg"' in pp.read_text(errors="ignore"):
            return cand
    return Path.cwd()


def default_output_root() -> str:
    """Where a run's outputs persist, for the default ``OUTPUT_DIR="outputs"``:

    * Colab with Drive mounted: <Drive>/brainseg/outputs (survives the VM);
    * Kaggle: /kaggle/working/brainseg/outputs (the clone's outputs/; kept with the notebook version);
    * elsewhere (and Colab without Drive): <project root>/outputs.
    """
    where = platform()
    if where == "colab" and drive_root().is_dir():
        return str(drive_root() / "brainseg" / "outputs")
    if where == "kaggle":
        return str(kaggle_root() / "working" / "brainseg" / "outputs")
    return str(project_root() / "outputs")


def cache_root() -> Path | None:
    """Folder for rebuildable caches (slice cache, SAM embeddings, synthetic volumes) kept out of the
    persisted outputs: /kaggle/temp/brainseg on Kaggle (20 GB output cap), <colab root>/brainseg-cache on
    Colab when outputs go to Drive (fast local disk); None elsewhere (caches stay under the run folder)."""
    where = platform()
    if where == "kaggle":
        return kaggle_root() / "temp" / "brainseg"
    if where == "colab" and drive_root().is_dir():
        return colab_root() / "brainseg-cache"
    return None


def free_bytes(folder: str | os.PathLike) -> int:
    """Free bytes for new files in ``folder``: the disk's free space, and under /kaggle/working also what
    is left of Kaggle's 20 GB output cap (the disk itself is much larger than what Kaggle keeps)."""
    import shutil

    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    working = kaggle_root() / "working"
    inside = folder.resolve() == working.resolve() or working.resolve() in folder.resolve().parents
    if platform() == "kaggle" and inside:
        used = sum(p.stat().st_size for p in working.rglob("*") if p.is_file() and not p.is_symlink())
        free = min(free, max(0, KAGGLE_OUTPUT_CAP_BYTES - used))
    return free


def missing_hint(what: str) -> str:
    """Where to get an expensive prerequisite ``what`` (e.g. "unet/best.pt") on this platform, for errors."""
    where = platform()
    if where == "kaggle":
        return (
            f"run the notebook that trains it, or attach a previous run's output that holds {what} "
            f"(Add Input > your notebook's output; every run folder holding data/splits.json under "
            f"{kaggle_root() / 'input'} is used, one per notebook is fine)"
        )
    if where == "colab":
        return (
            f"run the notebook that trains it; to reuse one from an earlier session, mount Google Drive so the "
            f"run folder is {drive_root() / 'brainseg' / 'outputs'} (the bootstrap cell offers the mount)"
        )
    return "run the notebook that trains it with the same OUTPUT_DIR"


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


def arch_runs(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """True when a torch build compiled for ``arch_list`` (``torch.cuda.get_arch_list()``, e.g. ["sm_75",
    "sm_80", "compute_90"]) has kernels for a GPU of ``capability``: a cubin ``sm_XY`` runs on the same major
    version with an equal or newer minor; PTX ``compute_XY`` is compiled at load time for any newer GPU."""
    major, minor = capability
    for arch in arch_list:
        kind, _, digits = arch.partition("_")
        digits = digits.rstrip("af")  # sm_90a, sm_100f: architecture-specific variants
        if not digits.isdigit() or len(digits) < 2:
            continue
        a_major, a_minor = int(digits[:-1]), int(digits[-1])
        if kind == "sm" and a_major == major and a_minor <= minor:
            return True
        if kind == "compute" and (a_major, a_minor) <= (major, minor):
            return True
    return False


def check_gpu_supported() -> None:
    """Stop early, with what to do, when a CUDA GPU is present that this torch build has no kernels for
    (Kaggle's P100, compute capability 6.0, with the CUDA 12.8 wheels Kaggle ships: ``is_available()`` is
    True and the first CUDA operation fails with "no kernel image"). No-op without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return
    arch_list = list(torch.cuda.get_arch_list())
    if not arch_list:  # a build that does not report its architectures: nothing to compare
        return
    for index in range(torch.cuda.device_count()):
        cap = tuple(torch.cuda.get_device_capability(index))
        if arch_runs(cap, arch_list):
            continue
        name = torch.cuda.get_device_name(index)
        pick = {
            "kaggle": "Kaggle: Settings > Accelerator > GPU T4 x2 (or GPU T4), then restart the session",
            "colab": "Colab: Runtime > Change runtime type > T4 GPU (or L4 / A100)",
        }.get(platform(), "use a GPU of compute capability 7.0 or newer, or a torch build for this one")
        raise RuntimeError(
            f"GPU {index} ({name}, compute capability {cap[0]}.{cap[1]}) is not supported by this torch "
            f"{torch.__version__} (built for {', '.join(arch_list)}): its first CUDA operation would fail with "
            f"'no kernel image is available'. {pick}. To run on the CPU instead: DEVICE='cpu'."
        )


def code_version() -> dict:
    """{"commit": git HEAD of the package's checkout (or None), "dirty": uncommitted changes to tracked files}."""
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
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
    """chdir to the brainseg checkout (``project_root``: from the package first, then the cwd's parents), so
    a notebook opened in notebooks/, or a kernel restarted on Colab/Kaggle, writes to <repo>/outputs like
    run_all.sh does. Returns the new cwd; no-op when no checkout is found."""
    root = project_root()
    os.chdir(root)
    return str(root)


def allow_over_session(environ=None) -> bool:
    """``ALLOW_OVER_SESSION`` is set (1, true, yes, on): run although the planner says the session ends first."""
    value = (os.environ if environ is None else environ).get("ALLOW_OVER_SESSION", "")
    return str(value).strip().lower() in ("1", "true", "yes", "on")
