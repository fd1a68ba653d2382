"""env.py: platform detection (monkeypatched environment), output root, device summary, code version."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import KAGGLE_ENV  # tests/ is on the path (pytest's rootdir conftest)

from brainseg_utils.runtime import env

REPO = env.Path(env.__file__).resolve().parents[2]  # this checkout


def test_local(plain):
    assert env.platform() == "local" and not env.hosted()
    assert env.default_output_root() == str(REPO / "outputs") and env.cache_root() is None and env.clone_dir() is None


def test_kaggle(plain):
    plain.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    plain.setenv("COLAB_RELEASE_TAG", KAGGLE_ENV["COLAB_RELEASE_TAG"])  # Kaggle's image is built from Colab's
    assert env.platform() == "kaggle" and env.hosted()
    # the clone lives in the working dir, its outputs/ beside it; /kaggle/input is read-only
    assert env.default_output_root() == "/kaggle/working/brainseg/outputs"
    assert env.cache_root() == env.Path("/kaggle/temp/brainseg")  # not persisted, outside the 20 GB cap
    assert env.clone_dir() == env.Path("/kaggle/working/brainseg")
    plain.setenv("BRAINSEG_KAGGLE_ROOT", "/tmp/fake-kaggle")  # tests move the whole tree
    assert env.default_output_root() == "/tmp/fake-kaggle/working/brainseg/outputs"


def test_colab_outputs_go_to_drive_when_mounted(plain, tmp_path):
    plain.setenv("COLAB_RELEASE_TAG", "release-colab_20260101-060000_RC00")
    plain.setenv("BRAINSEG_COLAB_ROOT", str(tmp_path))
    assert env.clone_dir() == tmp_path / "brainseg" and env.drive_root() == tmp_path / "drive" / "MyDrive"
    assert env.default_output_root() == str(REPO / "outputs") and env.cache_root() is None  # no Drive yet
    (tmp_path / "drive" / "MyDrive").mkdir(parents=True)
    assert env.default_output_root() == str(tmp_path / "drive" / "MyDrive" / "brainseg" / "outputs")
    assert env.cache_root() == tmp_path / "brainseg-cache"


def test_free_bytes_counts_the_kaggle_output_cap(plain, tmp_path, monkeypatch):
    (tmp_path / "working").mkdir()
    (tmp_path / "temp").mkdir()
    plain.setenv("BRAINSEG_KAGGLE_ROOT", str(tmp_path))
    plain.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    (tmp_path / "working" / "blob").write_bytes(b"x" * 1000)
    monkeypatch.setattr(env, "KAGGLE_OUTPUT_CAP_BYTES", 1500)
    assert env.free_bytes(tmp_path / "working" / "sub") == 500  # 1500 - 1000, far below the disk's free space
    assert env.free_bytes(tmp_path / "temp") > 1500  # temp is not capped
    plain.delenv("KAGGLE_KERNEL_RUN_TYPE")
    assert env.free_bytes(tmp_path / "working") > 1500  # locally there is no cap


def test_colab_by_variable_or_module(plain):
    plain.setenv("COLAB_RELEASE_TAG", "release-colab_20260101-060000_RC00")
    assert env.platform() == "colab"
    plain.delenv("COLAB_RELEASE_TAG")
    plain.setitem(sys.modules, "google.colab", object())
    assert env.platform() == "colab"


def test_kaggle_is_not_colab_although_it_carries_colabs_variable(plain, tmp_path):
    """Kaggle's image is built FROM Colab's runtime image, so COLAB_RELEASE_TAG is set on Kaggle (kagglehub
    PR #230 stopped using it for that reason): any Kaggle marker wins over it."""
    for var, value in KAGGLE_ENV.items():
        plain.setenv(var, value)
    assert env.platform() == "kaggle"
    for marker in env.KAGGLE_MARKERS:  # each marker alone is enough
        for other in env.KAGGLE_MARKERS:
            plain.delenv(other, raising=False)
        plain.setenv(marker, KAGGLE_ENV[marker])
        assert env.platform() == "kaggle", marker
    for other in env.KAGGLE_MARKERS:
        plain.delenv(other, raising=False)
    assert env.platform() == "colab"
    (tmp_path / "input").mkdir()  # no variable at all, but Kaggle's input tree (a script, a custom image)
    plain.setenv("BRAINSEG_KAGGLE_ROOT", str(tmp_path))
    assert env.platform() == "kaggle"


def test_arch_list_decides_whether_a_gpu_runs():
    cu128 = ["sm_70", "sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]  # no sm_60
    assert not env.arch_runs((6, 0), cu128)  # P100
    assert env.arch_runs((7, 5), cu128) and env.arch_runs((8, 9), cu128)  # T4; L4 runs sm_86 cubins
    assert env.arch_runs((6, 1), ["sm_60"]) and not env.arch_runs((7, 0), ["sm_60"])  # cubins stay in a major
    assert env.arch_runs((7, 0), ["compute_60"]) and not env.arch_runs((5, 2), ["compute_60"])  # PTX: newer only
    assert env.arch_runs((9, 0), ["sm_90a"])


def test_an_unsupported_gpu_stops_with_what_to_pick(plain, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: (6, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Tesla P100-PCIE-16GB")
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_70", "sm_75", "sm_80", "sm_90", "compute_90"])
    for var, value in KAGGLE_ENV.items():
        plain.setenv(var, value)
    with pytest.raises(RuntimeError, match=r"Tesla P100.*capability 6\.0.*GPU T4 x2 \(or GPU T4\).*DEVICE='cpu'"):
        env.check_gpu_supported()
    from brainseg_utils.parameters import notebook_configs, parameter_defaults
    from brainseg_utils.runtime.checkpoints import resolve_device

    with pytest.raises(RuntimeError, match="P100"):
        resolve_device("auto")
    defaults = parameter_defaults()
    with pytest.raises(RuntimeError, match="P100"):  # at the top of notebook 02, before any data work
        notebook_configs("02_train_unet", dict(defaults))
    assert notebook_configs("02_train_unet", {**defaults, "DEVICE": "cpu"}).train.device == "cpu"
    assert notebook_configs("01_eda", dict(defaults)).data is not None  # 01 never uses CUDA
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: (7, 5))
    env.check_gpu_supported()  # a T4 passes


def test_device_summary_cpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    info = env.device_summary()
    assert info["device"] == "cpu" and info["torch"] == torch.__version__ and info["cpu_threads"] >= 1


def test_device_summary_cuda(monkeypatch):
    # patch our own probe, not torch.cuda: a fake is_available() seen by any other thread of the test
    # process would send it into a real CUDA call
    monkeypatch.setattr(env, "cuda_device", lambda: ("Tesla T4", (7, 5)))
    info = env.device_summary()
    assert (info["device"], info["gpu"], info["capability"]) == ("cuda", "Tesla T4", "7.5")


def test_code_version_of_this_checkout():
    repo = env.__file__.rsplit("/brainseg_utils/", 1)[0]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True)
    got = env.code_version()
    if head.returncode != 0:  # not a git checkout (e.g. an sdist)
        assert got == {"commit": None, "dirty": None}
    else:
        assert got["commit"] == head.stdout.strip() and len(got["commit"]) == 40 and isinstance(got["dirty"], bool)


def test_code_version_without_git(monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    assert env.code_version() == {"commit": None, "dirty": None}


def test_enter_project_root(tmp_path, monkeypatch):
    ours, other = tmp_path / "ours", tmp_path / "other"
    (ours / "notebooks").mkdir(parents=True)
    (ours / "pyproject.toml").write_text('[project]\nname = "brainseg"\n')
    monkeypatch.setattr(
        env, "__file__", str(tmp_path / "site-packages" / "brainseg_utils" / "runtime" / "env.py")
    )  # installed
    monkeypatch.chdir(ours / "notebooks")  # a notebook opened in notebooks/ writes to <repo>/outputs
    assert env.enter_project_root() == str(ours) and env.os.getcwd() == str(ours)
    (other / "sub").mkdir(parents=True)
    (other / "pyproject.toml").write_text('[project]\nname = "other"\n')
    monkeypatch.chdir(other / "sub")  # another project's checkout: stay where we are
    assert env.enter_project_root() == str(other / "sub") and env.os.getcwd() == str(other / "sub")


def test_project_root_comes_from_the_package_after_a_restart(tmp_path, monkeypatch):
    """A restarted kernel starts in /content (the bootstrap's chdir is forgotten); the package was imported
    from the clone, so the project root, and with it outputs/, is still the clone."""
    clone = tmp_path / "content" / "brainseg"
    (clone / "brainseg_utils").mkdir(parents=True)
    (clone / "pyproject.toml").write_text('[project]\nname = "brainseg"\n')
    monkeypatch.setattr(env, "__file__", str(clone / "brainseg_utils" / "runtime" / "env.py"))
    monkeypatch.chdir(tmp_path / "content")
    assert env.project_root() == clone and env.enter_project_root() == str(clone) and env.os.getcwd() == str(clone)
