"""env.py: platform detection (monkeypatched environment), output root, device summary, code version."""

from __future__ import annotations

import subprocess
import sys

from brainseg_utils.runtime import env

REPO = env.Path(env.__file__).resolve().parents[2]  # this checkout


def test_local(plain):
    assert env.platform() == "local" and not env.hosted()
    assert env.default_output_root() == str(REPO / "outputs") and env.cache_root() is None and env.clone_dir() is None


def test_kaggle(plain):
    plain.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
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
    plain.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")  # Colab is checked first
    assert env.platform() == "colab"


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
