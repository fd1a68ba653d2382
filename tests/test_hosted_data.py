"""Colab and Kaggle, simulated from their published facts: where BraTS is found, which profile, where outputs
go, restoring an attached earlier run (no network)."""

from __future__ import annotations

import json
import shutil
import stat
import sys
from pathlib import Path

import pytest

from brainseg_utils.app.predictor import predictor_from_run
from brainseg_utils.config import DataConfig
from brainseg_utils.runtime import env
from brainseg_utils.runtime.paths import RunDir
from brainseg_utils.workflow import locate as data
from brainseg_utils.workflow import prepare

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from hosted import TRAINING, full_unet_checkpoint, read_only, real_layout, snapshot  # noqa: E402


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
