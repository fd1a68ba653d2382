"""env.py: platform detection (monkeypatched environment), output root, device summary, code version."""

from __future__ import annotations

import subprocess
import sys

import pytest

from brainseg_utils import env


@pytest.fixture
def plain(monkeypatch):
    """A plain machine: no Colab module, no Colab or Kaggle variables."""
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    for var in ("COLAB_RELEASE_TAG", "KAGGLE_KERNEL_RUN_TYPE"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_local(plain):
    assert env.platform() == "local" and env.default_output_root() == "outputs"


def test_kaggle(plain):
    plain.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    assert env.platform() == "kaggle"
    assert env.default_output_root() == "/kaggle/working/outputs"  # /kaggle/input is read-only


def test_colab_by_variable_or_module(plain):
    plain.setenv("COLAB_RELEASE_TAG", "release-colab_20260101-060000_RC00")
    assert env.platform() == "colab" and env.default_output_root() == "outputs"
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
    monkeypatch.chdir(ours / "notebooks")  # a notebook opened in notebooks/ writes to <repo>/outputs
    assert env.enter_project_root() == str(ours) and env.os.getcwd() == str(ours)
    (other / "sub").mkdir(parents=True)
    (other / "pyproject.toml").write_text('[project]\nname = "other"\n')
    monkeypatch.chdir(other / "sub")  # another project's checkout: stay where we are
    assert env.enter_project_root() == str(other / "sub") and env.os.getcwd() == str(other / "sub")
