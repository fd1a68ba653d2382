"""Colab and Kaggle as a tested path, simulated on this machine without network.

Fake Colab: ``COLAB_RELEASE_TAG``, a ``google.colab`` stub package whose ``drive.mount`` creates ``MyDrive``,
and a temporary /content-like root (``BRAINSEG_COLAB_ROOT``). Fake Kaggle: ``KAGGLE_KERNEL_RUN_TYPE``, a
temporary /kaggle-like root (``BRAINSEG_KAGGLE_ROOT``) whose ``input/`` holds BraTS in the real dataset's
layout and must never be written to. The project is cloned by the notebooks' own bootstrap cell from a
snapshot of this checkout (``BRAINSEG_REPO=file://...``); installing goes through ``scripts/install_hosted.py``
with a fake pip that only records what it was asked. Notebooks 02 and 04 then run alone, each from a fresh
folder, through papermill.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from brainseg_utils.app import demo
from brainseg_utils.app.predictor import predictor_from_run
from brainseg_utils.config import DataConfig
from brainseg_utils.runtime import env
from brainseg_utils.runtime.bootstrap import CELL, REPO_URL
from brainseg_utils.runtime.paths import RunDir
from brainseg_utils.workflow import locate as data
from brainseg_utils.workflow import prepare

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import install_hosted  # noqa: E402
from conftest import HOSTED_VARS  # noqa: E402  (the variables the `plain` fixture clears)

TRAINING = "BraTS2020_TrainingData/MICCAI_BraTS2020_TrainingData"  # inside the Kaggle dataset


@pytest.fixture
def clean(plain):  # conftest's plain machine; the name these tests read best with
    return plain


@pytest.fixture
def colab(clean, tmp_path):
    clean.setenv("COLAB_RELEASE_TAG", "release-colab_20261101-060000_RC00")
    clean.setenv("BRAINSEG_COLAB_ROOT", str(tmp_path / "content"))
    (tmp_path / "content").mkdir()
    return tmp_path / "content"


@pytest.fixture
def kaggle(clean, tmp_path):
    clean.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    clean.setenv("BRAINSEG_KAGGLE_ROOT", str(tmp_path / "kaggle"))
    for sub in ("input", "working", "temp"):
        (tmp_path / "kaggle" / sub).mkdir(parents=True)
    return tmp_path / "kaggle"


def real_layout(synth: Path, dst: Path) -> Path:
    """Copy of a synthetic dataset without our generator's marker: to the code it is BraTS."""
    shutil.copytree(synth, dst, ignore=shutil.ignore_patterns("SYNTHETIC.json"))
    return dst


def snapshot(tree: Path) -> dict:
    """path -> (size, mtime_ns, mode) of everything under ``tree`` (to prove nothing was written there)."""
    out = {}
    for p in tree.rglob("*"):
        st = p.stat()
        out[str(p.relative_to(tree))] = (st.st_size, st.st_mtime_ns, st.st_mode)
    return out


def read_only(tree: Path) -> None:
    for p in [tree, *tree.rglob("*")]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


# ----------------------------------------------------------------------------- data discovery (blocker 6)
def test_colab_without_data_stops_naming_every_place(colab):
    with pytest.raises(data.DataNotFoundError) as err:
        data.locate_dataset(DataConfig())
    msg = str(err.value)
    assert str(colab / "drive" / "MyDrive") in msg and f"{colab}/ (and 3 levels below)" in msg
    assert "%env DATA_ROOT=synthetic" in msg and 'DATA_ROOT="synthetic"' in msg


def test_synthetic_needs_the_opt_in_on_hosted_but_stays_the_local_default(clean, colab):
    clean.setenv("DATA_ROOT", "synthetic")
    assert data.locate_dataset(DataConfig()) is None  # None: the synthetic dataset
    clean.delenv("DATA_ROOT")
    assert data.locate_dataset(DataConfig(data_root="synthetic")) is None  # notebook 01's parameter
    clean.delenv("COLAB_RELEASE_TAG")
    assert data.locate_dataset(DataConfig()) is None  # locally: synthetic without asking, as before


def test_brats_found_on_drive_and_in_kaggle_input(clean, colab, kaggle, synth_root):
    drive_copy = real_layout(synth_root, colab / "drive" / "MyDrive" / "BraTS2020" / "MICCAI_BraTS2020_TrainingData")
    clean.delenv("KAGGLE_KERNEL_RUN_TYPE")
    assert data.locate_dataset(DataConfig()) == drive_copy
    clean.delenv("COLAB_RELEASE_TAG")
    clean.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    with pytest.raises(data.DataNotFoundError, match="awsaf49/brats20-dataset-training-validation"):
        data.locate_dataset(DataConfig())
    ours = real_layout(synth_root, kaggle / "input" / "brats20-dataset-training-validation" / TRAINING)
    shutil.copytree(synth_root, kaggle / "input" / "a-synthetic-copy" / "ds")  # generator-made: never taken for BraTS
    assert data.locate_dataset(DataConfig()) == ours


def test_profile_from_data_and_device(clean):
    assert data.choose_profile("brats2020", cuda=True) == "full"
    assert data.choose_profile("synthetic", cuda=True) == "quick"  # never hours of training on synthetic data
    assert data.choose_profile("brats2020", cuda=False) == "quick"
    clean.setenv("PROFILE", "full")
    assert data.choose_profile("synthetic", cuda=False) == "full"
    assert set(prepare.profile_params("quick")) <= set(DataConfig.PARAMS)
    with pytest.raises(FileNotFoundError, match=r"profile 'nope'.*options: \['full', 'quick'\]"):
        prepare.profile_params("nope")


def test_a_notebook_alone_without_data_stops_with_the_documented_message(colab):
    """What notebooks 02-04 do first (``open_run_data(run, build_missing=True)``) on a fresh Colab VM without
    BraTS and without the opt-in: stop, naming the places searched and the line that opts in."""
    from brainseg_utils.workflow.prepare import open_run_data

    # Drive not mounted: outputs go to the clone's outputs/, i.e. a fresh folder on a new VM (an absolute path
    # here, so a local checkout's own outputs/ from an earlier run cannot leak into the test)
    run = RunDir.for_platform(colab / "brainseg" / "outputs")
    with pytest.raises(data.DataNotFoundError, match="%env DATA_ROOT=synthetic"):
        open_run_data(run, build_missing=True)
    assert not run.dataset.exists()


def test_missing_unet_names_what_to_run_or_attach(kaggle, tiny_cache):
    from brainseg_utils.evaluation.inference import load_models

    run = RunDir.for_platform()
    with pytest.raises(
        FileNotFoundError,
        match="02_train_unet.ipynb first; run the notebook that trains it, or "
        r"attach a previous run's output that holds unet/best.pt \(Add data",
    ):
        load_models(run, tiny_cache[1]["sha256"])


# ----------------------------------------------------------------------------- where outputs go (1, 4, 5)
def test_run_folder_per_platform(clean, colab, kaggle):
    clean.delenv("KAGGLE_KERNEL_RUN_TYPE")
    run = RunDir.for_platform("outputs")
    assert run.root == ROOT / "outputs" and run.cache is None  # Colab without Drive: the clone's outputs/
    (colab / "drive" / "MyDrive").mkdir(parents=True)
    run = RunDir.for_platform("outputs")
    assert run.root == colab / "drive" / "MyDrive" / "brainseg" / "outputs"
    assert run.slices.is_relative_to(colab / "brainseg-cache")  # the cache stays on the VM's disk
    clean.delenv("COLAB_RELEASE_TAG")
    clean.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    run = RunDir.for_platform("outputs")
    assert run.root == kaggle / "working" / "brainseg" / "outputs"
    assert run.slices.is_relative_to(kaggle / "temp") and run.sam_embeddings.is_relative_to(kaggle / "temp")
    assert run.unet_best.is_relative_to(kaggle / "working") and run.splits.is_relative_to(kaggle / "working")
    assert RunDir.for_platform("other").root == kaggle / "working" / "brainseg" / "other"
    assert RunDir.for_platform(str(kaggle / "x")).root == kaggle / "x"  # absolute: as given (run_all.sh)


def test_restore_previous_run_reads_the_input_tree_only(kaggle, tiny_cache):
    _, split = tiny_cache
    prev = kaggle / "input" / "my-brainseg-run" / "brainseg" / "outputs"
    (prev / "data").mkdir(parents=True)
    (prev / "unet").mkdir()
    (prev / "data" / "splits.json").write_text(json.dumps(split))
    (prev / "unet" / "best.pt").write_bytes(b"weights")
    (prev / "data" / "slices").mkdir()
    (prev / "data" / "slices" / "images.f16").write_bytes(b"cache")  # caches are never copied
    read_only(kaggle / "input")
    before = snapshot(kaggle / "input")
    run = RunDir.for_platform()
    copied = prepare.restore_previous(run)
    assert sorted(p.relative_to(run.root).as_posix() for p in copied) == ["data/splits.json", "unet/best.pt"]
    assert (run.unet_best.stat().st_mode & stat.S_IWUSR) and not (run.root / "data" / "slices").exists()
    assert snapshot(kaggle / "input") == before
    other = RunDir(kaggle / "working" / "other")  # a run with another split takes nothing from it
    from brainseg_utils.data.slices import split_sha256

    swapped = {**split, "train": split["val"], "val": split["train"]}
    other.splits.write_text(json.dumps({**swapped, "sha256": split_sha256(swapped)}))
    assert prepare.restore_previous(other) == []


def test_free_space_check_is_aware_of_the_kaggle_cap(kaggle, monkeypatch):
    monkeypatch.setattr(env, "KAGGLE_OUTPUT_CAP_BYTES", 10_000)
    (kaggle / "working" / "brainseg").mkdir()
    (kaggle / "working" / "brainseg" / "ckpt").write_bytes(b"x" * 4_000)
    assert env.free_bytes(kaggle / "working" / "brainseg" / "outputs") == 6_000
    assert env.free_bytes(kaggle / "temp") > 10_000


# ----------------------------------------------------------------------------- installing (blockers 3, 10)
def test_install_plan_never_touches_the_platform_stack(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text(
        "torch>=2.1\nipykernel>=6.25  # comment\nipywidgets>=99\ntornado>=1\npyyaml>=6.0\npyyaml-x>=1; "
        "python_version>'3'\npytest>=999\nbrainseg-surely-missing>=1,<2\n"
    )
    todo, kept = install_hosted.plan(install_hosted.requirements(req))
    assert todo == ["pyyaml-x>=1; python_version>'3'", "pytest>=999", "brainseg-surely-missing>=1,<2"]
    assert any(k.startswith("ipywidgets: the platform's") for k in kept), "protected even when the range asks more"
    assert "pyyaml: " + metadata.version("pyyaml") + " already installed" in kept


FAKE_PIP = """\
#!{python}
import json, os, sys
args = sys.argv[1:]
cons = args[args.index("-c") + 1] if "-c" in args else None
with open(os.environ["FAKE_PIP_LOG"], "a") as f:
    f.write(json.dumps({{"args": args, "constraints": open(cons).read() if cons else None}}) + "\\n")
"""


def fake_pip(tmp_path: Path) -> tuple[Path, Path]:
    pip, log = tmp_path / "fakepip", tmp_path / "pip.log"
    pip.write_text(FAKE_PIP.format(python=sys.executable))
    pip.chmod(0o755)
    log.write_text("")
    return pip, log


def test_installer_with_a_wheelhouse_and_a_fake_pip(tmp_path):
    clone = tmp_path / "clone"
    (clone / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "install_hosted.py", clone / "scripts")
    (clone / "requirements.txt").write_text("torch>=2.1\nipykernel>=6.25\nbrainseg-surely-missing>=1\npyyaml>=6\n")
    pip, log = fake_pip(tmp_path)
    wheels = tmp_path / "input" / "wheels"
    run_env = {**os.environ, "BRAINSEG_PIP": str(pip), "FAKE_PIP_LOG": str(log), "BRAINSEG_WHEELS": str(wheels)}
    script = [sys.executable, str(clone / "scripts" / "install_hosted.py"), "--once"]
    res = subprocess.run(script, env=run_env, capture_output=True, text=True)
    assert res.returncode != 0 and f"BRAINSEG_WHEELS={wheels} is not a folder" in res.stderr
    wheels.mkdir(parents=True)
    before = {n: metadata.version(n) for n in ("torch", "ipykernel", "ipywidgets", "tornado", "pyzmq")}
    res = subprocess.run(script, env=run_env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    offline = ["install", "-q", "--no-index", "--find-links", str(wheels)]
    assert [c["args"] for c in calls] == [
        [*offline, "-c", calls[0]["args"][6], "brainseg-surely-missing>=1"],
        [*offline, "--no-deps", "--no-build-isolation", "-e", str(clone)],
    ]
    pins = calls[0]["constraints"].split()
    assert f"torch=={before['torch']}" in pins and f"ipykernel=={before['ipykernel']}" in pins
    assert f"tornado=={before['tornado']}" in pins and f"pyzmq=={before['pyzmq']}" in pins
    assert {n: metadata.version(n) for n in before} == before, "kernel packages untouched"
    res = subprocess.run(script, env=run_env, capture_output=True, text=True)  # --once: a restarted kernel
    assert "already installed" in res.stdout and len(log.read_text().splitlines()) == 2


def test_requirements_leave_the_kernel_stack_to_the_platform():
    req = (ROOT / "requirements.txt").read_text()
    assert "ipykernel" not in req.split("# ipykernel")[0].replace("ipykernel is", "")  # only in the comment
    assert "ipykernel" in (ROOT / "requirements-cpu.txt").read_text()  # local kernel for run_all.sh
    assert re.search(r"^ipywidgets>=7\.6,<9$", req, re.M), "Colab's ipywidgets 7.x must satisfy the range"
    assert "install_hosted.py" in (ROOT / "scripts" / "setup_env.sh").read_text()


# ----------------------------------------------------------------------------- the repository URL (blocker 2)
def test_one_repository_url():
    assert f'or "{REPO_URL}"' in CELL and CELL.count("github.com/brainseg-project") == 1
    owner_repo = REPO_URL.removeprefix("https://github.com/").removesuffix(".git")
    readme = (ROOT / "README.md").read_text()
    assert f"`{REPO_URL}`" in readme, "README names the URL the bootstrap cell clones"
    badges = set(re.findall(r"github(?:\.com)?/([\w.-]+/[\w.-]+)/blob/main/notebooks", readme))
    assert badges == {owner_repo}


def run_cell(env_vars: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CELL], env=env_vars, cwd=cwd, capture_output=True, text=True)


def test_bootstrap_clone_failure_shows_git_and_the_line_to_set(tmp_path):
    base = {k: v for k, v in os.environ.items() if k not in HOSTED_VARS}
    vm = {**base, "COLAB_RELEASE_TAG": "x", "BRAINSEG_COLAB_ROOT": str(tmp_path), "BRAINSEG_MOUNT_DRIVE": "0"}
    res = run_cell({**vm, "BRAINSEG_REPO": f"file://{tmp_path}/no-such-repo"}, tmp_path)
    assert res.returncode != 0
    assert f"git clone file://{tmp_path}/no-such-repo failed" in res.stderr and "fatal:" in res.stderr
    assert "%env BRAINSEG_REPO=https://github.com/<owner>/brainseg.git" in res.stderr
    assert run_cell(base, tmp_path).returncode == 0 and not list(tmp_path.iterdir()), "locally: a no-op"


# ----------------------------------------------------------------------------- Gradio on hosted notebooks (7)
def test_gradio_launch_options(clean, capsys):
    assert demo.launch_options(False, None) == {"share": None, "auth": None}  # locally: Gradio's default, no link
    assert demo.launch_options(True, ("u", "p")) == {"share": True, "auth": ("u", "p")}
    clean.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    opts = demo.launch_options(False, None)  # Kaggle: Gradio's hosted-notebook share link, never without auth
    assert opts["share"] is None and opts["auth"][0] == "brainseg" and len(opts["auth"][1]) >= 12
    assert f"password {opts['auth'][1]!r}" in capsys.readouterr().out


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
        real_layout(synth_root, k / "input" / "brats20-dataset-training-validation" / TRAINING)
        if attach_previous is not None:
            shutil.copytree(attach_previous, k / "input" / "brainseg-run-1" / "brainseg" / "outputs")
        (k / "working").mkdir()
        (k / "temp").mkdir()
        read_only(k / "input")
        return k

    k1 = vm("vm1")
    kaggle = {"KAGGLE_KERNEL_RUN_TYPE": "Interactive", "BRAINSEG_KAGGLE_ROOT": str(k1)}
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


# ----------------------------------------------------------------------------- Hugging Face Space (blocker 12)
def full_unet_checkpoint(path: Path) -> dict:
    """What train.fit writes for a tiny U-Net: model, optimizer (after a step: Adam moments), config, meta."""
    import torch

    from brainseg_utils.models.unet import UNet
    from brainseg_utils.runtime.checkpoints import save_checkpoint

    torch.manual_seed(0)
    model = UNet(1, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.rand(2, 1, 32, 32)).mean().backward()
    opt.step()
    payload = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "epoch": 1,
        "config": {"model": model.config},
        "meta": {"img_size": 32, "dataset": "synthetic", "split_sha256": "ab" * 32},
    }
    save_checkpoint(path, payload)
    return payload


def test_slim_weights_load_like_the_checkpoint(tmp_path):
    import torch

    from brainseg_utils.runtime.checkpoints import export_slim, load_checkpoint

    full = full_unet_checkpoint(tmp_path / "best.pt")
    slim = export_slim(tmp_path / "best.pt", tmp_path / "best.safetensors")
    got = load_checkpoint(slim, expect_arch="unet")
    assert got["config"] == full["config"] and got["meta"] == full["meta"] and "optimizer" not in got
    assert got["model"].keys() == full["model"].keys()
    assert all(torch.equal(got["model"][k], v) for k, v in full["model"].items())
    ratio = (tmp_path / "best.pt").stat().st_size / slim.stat().st_size
    assert ratio > 2.5, f"best.pt is only {ratio:.2f}x the slim weights"  # Adam's two moments per weight
    with pytest.raises(ValueError, match="expected a 'sam_decoder' checkpoint"):
        load_checkpoint(slim, expect_arch="sam_decoder")
    run = RunDir(tmp_path / "run")
    (run.unet / "best.safetensors").write_bytes(slim.read_bytes())
    assert run.unet_best == run.unet / "best.safetensors"  # a Space ships only the slim file


@pytest.mark.notebook
def test_space_folder_builds_and_serves(tmp_path):
    import socket
    import time
    import urllib.request

    run = tmp_path / "outputs"
    full_unet_checkpoint(run / "unet" / "best.pt")
    space = tmp_path / "space"
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_space.py"), "--run", str(run), "--out", str(space)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert (space / "outputs" / "unet" / "best.safetensors").is_file() and not list(space.rglob("*.pt"))
    reqs = (space / "requirements.txt").read_text()
    for tool in ("papermill", "ipykernel", "ipywidgets", "albumentations", "pytest", "ruff", "seaborn"):
        assert tool not in reqs
    assert "sdk: gradio" in (space / "README.md").read_text()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # app.py as the Space runs it; on SIGTERM the probe records what the serving process had imported
    probe = textwrap.dedent(
        """\
        import json, runpy, signal, sys
        def dump(*_):
            pkg = sys.modules.get("brainseg_utils")
            out = {"modules": sorted(sys.modules), "package": getattr(pkg, "__file__", None)}
            json.dump(out, open("probe.json", "w"))
            sys.exit(0)
        signal.signal(signal.SIGTERM, dump)
        runpy.run_path("app.py", run_name="__main__")
        """
    )
    app_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BRAINSEG_OUTPUT_DIR")}
    app_env.update(GRADIO_SERVER_PORT=str(port), BRAINSEG_DEVICE="cpu", GRADIO_ANALYTICS_ENABLED="False")
    proc = subprocess.Popen(
        [sys.executable, "-c", probe], cwd=space, env=app_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline, page = time.monotonic() + 120, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
                break
            except OSError:
                time.sleep(1)
        log = proc.stdout.read().decode() if proc.poll() is not None else "(still running)"
        assert page is not None and "gradio" in page.lower(), log
        proc.terminate()
        proc.wait(timeout=30)
        probe_out = json.loads((space / "probe.json").read_text())
        assert probe_out["package"] == str(space / "brainseg_utils" / "__init__.py"), "the Space's own copy serves"
        loaded = set(probe_out["modules"])  # none of the notebook / training tools is needed to serve
        assert "gradio" in loaded and "safetensors" in loaded
        assert not loaded & {"papermill", "ipykernel", "ipywidgets", "albumentations", "seaborn", "pytest"}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


# ----------------------------------------------------------------------------- explorer on Colab's ipywidgets 7
IPYWIDGETS_7_6 = {"VBox", "HBox", "Dropdown", "IntSlider", "FloatSlider", "Checkbox", "Output"}


def test_explorer_widget_uses_what_ipywidgets_7_6_has(synth_root):
    """The explorer builds from widgets and traits that ipywidgets 7.6 (Colab's 7.x line) already had, and
    changing the case moves the slice slider to that case's largest tumour slice."""
    import matplotlib

    matplotlib.use("agg")
    from brainseg_utils.data import brats, volumes
    from brainseg_utils.evaluation import figures as viz

    cases = brats.discover_cases(synth_root)[:2]
    box = viz.SliceExplorer(cases, "synthetic").widget()
    found, stack = set(), [box]
    while stack:
        w = stack.pop()
        found.add(type(w).__name__)
        stack.extend(getattr(w, "children", ()))
    assert found == IPYWIDGETS_7_6
    (case, _), (z, _, _) = box.children[0].children, box.children[1].children
    case.value = cases[1].case_id
    seg = volumes.load_case(cases[1], ("flair",))["wt"]
    assert z.max == seg.shape[2] - 1 and z.value == volumes.best_slice(seg)


def test_demo_on_a_new_kaggle_session_uses_the_attached_previous_run(kaggle, tiny_cache):
    """Notebook 05 alone: the U-Net of a previous version's output (attached as input) is restored and loaded."""
    _, split = tiny_cache
    prev = kaggle / "input" / "run-v1" / "brainseg" / "outputs"
    (prev / "data").mkdir(parents=True)
    (prev / "data" / "splits.json").write_text(json.dumps(split))
    full_unet_checkpoint(prev / "unet" / "best.pt")
    read_only(kaggle / "input")
    before = snapshot(kaggle / "input")
    run = RunDir.for_platform()
    from brainseg_utils.data.slices import split_sha256

    other = RunDir(kaggle / "working" / "other-split")
    swapped = {**split, "train": split["val"], "val": split["train"]}
    other.splits.write_text(json.dumps({**swapped, "sha256": split_sha256(swapped)}))
    with pytest.raises(FileNotFoundError, match="attach a previous run's output"):
        predictor_from_run(other.root, "cpu")  # a run on another split takes nothing from it
    predictor = predictor_from_run(run.root, "cpu")
    assert predictor.dataset == "synthetic" and run.unet_best.is_file()
    assert snapshot(kaggle / "input") == before
