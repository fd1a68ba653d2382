"""Shared fixtures: tiny synthetic BraTS-layout datasets (240 x 240 x 32) built once per session."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# Converted (OpenVINO) encoders go to a folder of this test session, not the user's ~/.cache/brainseg;
# notebook kernels inherit it.
os.environ.setdefault("BRAINSEG_CACHE", tempfile.mkdtemp(prefix="brainseg-test-cache-"))

from brainseg_utils.data.synthetic import SyntheticConfig, generate_dataset  # noqa: E402

TINY_DEPTH = 32


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """5 clean cases; treat as read-only (copy it before changing anything)."""
    return generate_dataset(
        tmp_path_factory.mktemp("synth") / "ds",
        SyntheticConfig(cases=5, seed=3, depth=TINY_DEPTH),
        workers=1,
        progress=False,
    )


@pytest.fixture(scope="session")
def quirky_root(tmp_path_factory):
    """4 cases with every quirk planted: .nii.gz case 001, float32 case 002, case 355 alias."""
    cfg = SyntheticConfig(cases=4, seed=5, depth=TINY_DEPTH, quirks=("alias355", "gz", "float32"))
    return generate_dataset(tmp_path_factory.mktemp("quirky") / "ds", cfg, workers=1, progress=False)


@pytest.fixture
def synth_copy(synth_root, tmp_path):
    """A writable copy of ``synth_root``."""
    dst = tmp_path / "copy"
    shutil.copytree(synth_root, dst)
    return dst


@pytest.fixture(scope="session")
def tiny_cache(synth_root, tmp_path_factory):
    """(SliceCache at 64 px, split) over ``synth_root``."""
    from brainseg_utils.data.brats import discover_cases
    from brainseg_utils.data.slices import SliceConfig, build_cache, write_split_once

    base = tmp_path_factory.mktemp("tinycache")
    cases = discover_cases(synth_root)
    cache = build_cache(cases, base / "slices", SliceConfig(img_size=64, tumour_free_fraction=0.3), progress=False)
    split = write_split_once(base / "splits.json", [c.case_id for c in cases], (0.6, 0.2, 0.2), seed=0)
    return cache, split


HOSTED_VARS = (
    "COLAB_RELEASE_TAG",
    "KAGGLE_KERNEL_RUN_TYPE",
    "KAGGLE_URL_BASE",
    "KAGGLE_DATA_PROXY_URL",
    "BRAINSEG_COLAB_ROOT",
    "BRAINSEG_DRIVE",
    "BRAINSEG_KAGGLE_ROOT",
    "BRAINSEG_HOME",
    "PROFILE",
    "BRAINSEG_REPO",
    "BRAINSEG_WHEELS",
    "BRAINSEG_PIP",
    "DATA_ROOT",
)


@pytest.fixture
def plain(monkeypatch):
    """A plain machine: no Colab module, no Colab/Kaggle variables, none of our platform overrides."""
    import sys

    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    for var in HOSTED_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


# ----------------------------------------------------------------------------- simulated Colab / Kaggle
@pytest.fixture
def clean(plain):  # conftest's plain machine; the name these tests read best with
    return plain


@pytest.fixture
def colab(clean, tmp_path):
    clean.setenv("COLAB_RELEASE_TAG", "release-colab_20261101-060000_RC00")
    clean.setenv("BRAINSEG_COLAB_ROOT", str(tmp_path / "content"))
    (tmp_path / "content").mkdir()
    return tmp_path / "content"


# A Kaggle notebook's environment as published, not as our code expects it: Kaggle's image is built FROM Colab's
# runtime image (Kaggle/docker-python Dockerfile.tmpl), so COLAB_RELEASE_TAG is set there too (the reason
# Kaggle/kagglehub PR #230, 2025-02-25, stopped using it to detect Colab); KAGGLE_KERNEL_RUN_TYPE and
# KAGGLE_URL_BASE are what kagglehub and Gradio read (kagglehub src/kagglehub/env.py).
KAGGLE_ENV = {
    "KAGGLE_KERNEL_RUN_TYPE": "Interactive",
    "KAGGLE_URL_BASE": "https://www.kaggle.com",
    "KAGGLE_DATA_PROXY_URL": "https://dp.kaggle.net",
    "COLAB_RELEASE_TAG": "release-colab-external_20260512-060046_RC00",
}


@pytest.fixture
def kaggle(clean, tmp_path):
    for var, value in KAGGLE_ENV.items():
        clean.setenv(var, value)
    clean.setenv("BRAINSEG_KAGGLE_ROOT", str(tmp_path / "kaggle"))
    for sub in ("input", "working", "temp"):
        (tmp_path / "kaggle" / sub).mkdir(parents=True)
    return tmp_path / "kaggle"


# The default tier (`bash run_tests.sh`) skips what is marked slow: notebooks executed by papermill, multi-process
# training, the browser. `bash run_tests.sh --all` (CI) runs everything.
SLOW_FILES = {"test_notebooks.py", "test_ddp.py", "test_demo_browser.py", "test_hosted_notebooks.py"}
# Single tests over ~6 s on the 2-core machine (measured with --durations; CI runs them): training that must
# learn, the CPU end-to-end GPU check, kill / resume equivalence, the CPU AMP benchmark, a fresh venv, 20 clients.
SLOW_TESTS = {
    "test_finetuning_beats_zero_shot",
    "test_unet_learns_on_synthetic_data",
    "test_gpu_check_cpu_small_end_to_end",
    "test_kill_between_checkpoint_writes_leaves_a_consistent_run",
    "test_bench_cpu_amp_json",
    "test_checkout_builds_with_colabs_pip_and_setuptools",
    "test_resume_matches_uninterrupted_run",
    "test_ema_resume_matches_uninterrupted_run",
    "test_resume_with_more_epochs_follows_the_longer_cosine_curve",
    "test_twenty_concurrent_clients",
    "test_tumours_cover_the_brats_range",  # 24 phantom anatomies
    "test_edema_is_infiltrative_and_spares_the_cortex",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        slow_test = item.originalname in SLOW_TESTS
        if item.path.name in SLOW_FILES or slow_test or item.get_closest_marker("notebook"):
            item.add_marker(pytest.mark.slow)
