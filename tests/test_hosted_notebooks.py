"""Notebooks 02 and 04 run alone on a simulated fresh Colab / Kaggle VM (slow: papermill in subprocesses).

Fake Colab: ``COLAB_RELEASE_TAG``, a ``google.colab`` stub package whose ``drive.mount`` creates ``MyDrive``,
and a temporary /content-like root (``BRAINSEG_COLAB_ROOT``). Fake Kaggle: conftest.KAGGLE_ENV (Colab's
variable included, as on Kaggle) and a temporary /kaggle-like root (``BRAINSEG_KAGGLE_ROOT``) whose ``input/``
holds BraTS in Kaggle's current layout (``datasets/<owner>/<slug>/``) and must never be written to. The
project is cloned by the notebooks' own bootstrap cell from a snapshot of this checkout
(``BRAINSEG_REPO=file://...``); installing goes through ``scripts/install_hosted.py`` with a fake pip that
only records what it was asked. Notebooks 02 and 04 then run alone, each from a fresh folder, through papermill.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from conftest import HOSTED_VARS, KAGGLE_ENV  # noqa: E402  (HOSTED_VARS: what the `plain` fixture clears)
from hosted import TRAINING, fake_pip, read_only, real_layout, snapshot  # noqa: E402

# ----------------------------------------------------------------------------- notebooks 02 and 04 alone
COLAB_STUB = {
    "google/__init__.py": "",
    "google/colab/__init__.py": "from . import drive  # noqa: F401\n",
    "google/colab/drive.py": textwrap.dedent(
        """\
        import os
        MOUNTED = []
        def mount(mountpoint, force_remount=False):
            os.makedirs(os.path.join(mountpoint, "MyDrive"), exist_ok=True)
            MOUNTED.append(mountpoint)
            print("Mounted at", mountpoint)
        """
    ),
}
TINY_PROFILE = {
    "SYNTHETIC_CASES": 5,
    "SYNTHETIC_DEPTH": 24,
    "SEED": 0,
    "IMG_SIZE": 32,
    "TUMOUR_FREE_FRACTION": 0.3,
    "SLICE_STEP": 3,
    "SPLIT_FRACTIONS": [0.6, 0.2, 0.2],
}
UNET = ["-p", "UNET_EPOCHS", "1", "-p", "UNET_BASE_CHANNELS", "4", "-p", "UNET_BATCH_SIZE", "8"]
UNET += ["-p", "NUM_WORKERS", "0"]
EVAL = ["-p", "LATENCY_RUNS", "1", "-p", "MAX_TEST_CASES", "1", "-p", "EXPORT_NIFTI", "False"]


@pytest.fixture(scope="module")
def hosted_sim(tmp_path_factory):
    """A git snapshot of this checkout (what BRAINSEG_REPO points at), the google.colab stub, a fake pip, a tiny
    profile and the environment every simulated kernel gets (no hosted variables yet)."""
    base = tmp_path_factory.mktemp("hosted")
    src = base / "src"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for rel in files:
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q"], cwd=src, check=True)
    subprocess.run([*git, "add", "-A"], cwd=src, check=True)
    subprocess.run([*git, "commit", "-qm", "snapshot"], cwd=src, check=True)
    stub = base / "stub"
    for rel, text in COLAB_STUB.items():
        (stub / rel).parent.mkdir(parents=True, exist_ok=True)
        (stub / rel).write_text(text)
    pip, log = fake_pip(base)
    profile = base / "tiny.yaml"
    profile.write_text(yaml.safe_dump(TINY_PROFILE))
    run_env = {k: v for k, v in os.environ.items() if k not in (*HOSTED_VARS, "PYTHONPATH")}
    run_env.update(
        BRAINSEG_REPO=f"file://{src}",
        BRAINSEG_PIP=str(pip),
        FAKE_PIP_LOG=str(log),
        PROFILE=str(profile),
        NO_ALBUMENTATIONS_UPDATE="1",
        MPLBACKEND="agg",
    )
    return {"base": base, "src": src, "stub": stub, "env": run_env, "pip_log": log}


def papermill(sim: dict, notebook: str, cwd: Path, extra_env: dict, params: list[str]) -> subprocess.CompletedProcess:
    """Run ``notebook`` (as opened from its badge: a copy outside any checkout) in a fresh folder ``cwd``."""
    cwd.mkdir(parents=True, exist_ok=True)
    src = sim["base"] / "badge" / f"{notebook}.ipynb"
    src.parent.mkdir(exist_ok=True)
    shutil.copy(sim["src"] / "notebooks" / f"{notebook}.ipynb", src)
    out = sim["base"] / f"{cwd.name}-{notebook}.out.ipynb"
    cmd = [sys.executable, "-m", "papermill", str(src), str(out), "-k", "brainseg", "--cwd", str(cwd)]
    res = subprocess.run(
        [*cmd, "--no-progress-bar", *params], env={**sim["env"], **extra_env}, capture_output=True, text=True
    )
    res.out = out
    return res


@pytest.mark.notebook
def test_colab_notebooks_02_and_04_alone(hosted_sim, tmp_path, kernel_spec):
    sim, vm = hosted_sim, tmp_path / "vm1" / "content"
    colab = {"COLAB_RELEASE_TAG": "release-colab-test", "BRAINSEG_COLAB_ROOT": str(vm), "PYTHONPATH": str(sim["stub"])}
    # Opted in: 02 builds the data steps of 01 itself and trains; outputs persist on Drive, caches on the VM.
    res = papermill(sim, "02_train_unet", vm, {**colab, "DATA_ROOT": "synthetic"}, UNET)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (vm / "brainseg" / "pyproject.toml").is_file(), "the bootstrap cloned the repository"
    assert (vm / "drive" / "MyDrive").is_dir(), "the bootstrap mounted Drive (stub)"
    drive_out = vm / "drive" / "MyDrive" / "brainseg" / "outputs"
    assert (drive_out / "unet" / "best.pt").is_file() and (drive_out / "data" / "splits.json").is_file()
    info = json.loads((drive_out / "data" / "dataset.json").read_text())
    assert info["name"] == "synthetic" and info["params"]["IMG_SIZE"] == 32  # the tiny profile, recorded
    assert not (drive_out / "data" / "slices").exists() and list((vm / "brainseg-cache").rglob("manifest.json"))
    assert not (vm / "outputs").exists() and not (vm / "brainseg" / "outputs").exists()
    # A fresh VM (only Drive survives): 04 alone finds the U-Net on Drive and rebuilds the cache it needs.
    vm2 = tmp_path / "vm2" / "content"
    shutil.copytree(vm / "drive", vm2 / "drive")
    res = papermill(sim, "04_evaluate", vm2, {**colab, "BRAINSEG_COLAB_ROOT": str(vm2)}, EVAL)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((vm2 / "drive" / "MyDrive" / "brainseg" / "outputs" / "results" / "metrics.json").read_text())
    assert metrics["dataset"]["split_sha256"] == info["split_sha256"] and "unet" in metrics["models"]
    for call in map(json.loads, sim["pip_log"].read_text().splitlines()):
        named = {a.split("=")[0].split(">")[0] for a in call["args"]}
        assert not named & {"torch", "torchvision", "ipykernel", "ipywidgets", "jupyter-client", "tornado", "pyzmq"}


@pytest.mark.notebook
def test_kaggle_notebooks_02_and_04_alone(hosted_sim, tmp_path, synth_root, kernel_spec):
    sim = hosted_sim

    def vm(name: str, attach_previous: Path | None = None) -> Path:
        k = tmp_path / name / "kaggle"
        # Kaggle's current input layout: datasets/<owner>/<slug>/, notebooks/<user>/<slug>/ (docs/hosting.md)
        real_layout(synth_root, k / "input" / "datasets" / "awsaf49" / "brats20-dataset-training-validation" / TRAINING)
        if attach_previous is not None:
            shutil.copytree(attach_previous, k / "input" / "notebooks" / "me" / "brainseg-02" / "brainseg" / "outputs")
        (k / "working").mkdir()
        (k / "temp").mkdir()
        read_only(k / "input")
        return k

    k1 = vm("vm1")
    kaggle = {**KAGGLE_ENV, "BRAINSEG_KAGGLE_ROOT": str(k1)}  # COLAB_RELEASE_TAG is set on Kaggle too
    before = snapshot(k1 / "input")
    res = papermill(sim, "02_train_unet", k1 / "working", kaggle, UNET)
    assert res.returncode == 0, res.stderr[-3000:]
    out = k1 / "working" / "brainseg" / "outputs"
    info = json.loads((out / "data" / "dataset.json").read_text())
    assert info["name"] == "brats2020" and info["root"].startswith(str(k1 / "input")), "BraTS found in the input"
    assert (out / "unet" / "best.pt").is_file() and not (out / "data" / "slices").exists()
    assert list((k1 / "temp").rglob("images.f16")), "the slice cache lives in /kaggle/temp"
    assert snapshot(k1 / "input") == before, "nothing is written under /kaggle/input"
    # A new session: the previous version's output attached as input; 04 alone evaluates its U-Net.
    k2 = vm("vm2", attach_previous=out)
    before = snapshot(k2 / "input")
    res = papermill(sim, "04_evaluate", k2 / "working", {**kaggle, "BRAINSEG_KAGGLE_ROOT": str(k2)}, EVAL)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((k2 / "working" / "brainseg" / "outputs" / "results" / "metrics.json").read_text())
    assert metrics["dataset"]["name"] == "brats2020" and metrics["dataset"]["split_sha256"] == info["split_sha256"]
    assert snapshot(k2 / "input") == before, "nothing is written under /kaggle/input"


@pytest.fixture(scope="module")
def kernel_spec():
    from jupyter_client.kernelspec import KernelSpecManager

    if "brainseg" not in KernelSpecManager().find_kernel_specs():
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", "brainseg"], check=True)
    return "brainseg"
