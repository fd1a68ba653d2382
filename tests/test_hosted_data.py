"""Colab and Kaggle, simulated from their published facts: where BraTS is found, which profile, where outputs
go, restoring an attached earlier run (no network)."""

from __future__ import annotations

import json
import os
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
from brainseg_utils.workflow import prepare, restore

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from hosted import TRAINING, full_unet_checkpoint, on_colab, on_kaggle, read_only, real_layout, snapshot  # noqa: E402


# ----------------------------------------------------------------------------- data discovery (blocker 6)
def test_colab_without_data_stops_naming_every_place(colab):
    with pytest.raises(data.DataNotFoundError) as err:
        data.locate_dataset(DataConfig())
    msg = str(err.value)
    assert str(colab / "drive" / "MyDrive") in msg and f"{colab}/ (and the folders below it)" in msg
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
    on_colab(clean)
    assert data.locate_dataset(DataConfig()) == drive_copy
    on_kaggle(clean, kaggle)
    with pytest.raises(data.DataNotFoundError, match="awsaf49/brats20-dataset-training-validation"):
        data.locate_dataset(DataConfig())
    ours = real_layout(synth_root, kaggle / "input" / "brats20-dataset-training-validation" / TRAINING)
    shutil.copytree(synth_root, kaggle / "input" / "a-synthetic-copy" / "ds")  # generator-made: never taken for BraTS
    assert data.locate_dataset(DataConfig()) == ours


# Kaggle's input layouts (third-party reports, 2026; see docs/hosting.md): the older /kaggle/input/<slug>/ and the
# current /kaggle/input/datasets/<owner>/<slug>/, notebooks/<user>/<slug>/, models/<owner>/<model>/<fw>/<var>/<ver>/.
NEW_DATASET = "datasets/awsaf49/brats20-dataset-training-validation"
OLD_DATASET = "brats20-dataset-training-validation"


@pytest.mark.parametrize("layout", [NEW_DATASET, OLD_DATASET])
def test_brats_in_either_kaggle_input_layout(kaggle, synth_root, layout):
    ours = real_layout(synth_root, kaggle / "input" / layout / TRAINING)  # 5 levels down in the new layout
    (kaggle / "input" / "notebooks" / "someone" / "other-notebook" / "a" / "b" / "c").mkdir(parents=True)
    read_only(kaggle / "input")
    assert data.locate_dataset(DataConfig()) == ours


def test_brats_found_however_deep_the_next_layout_puts_it(kaggle, synth_root):
    deep = real_layout(synth_root, kaggle / "input" / "a" / "b" / "c" / "d" / "e" / "f" / "cases")
    assert data.locate_dataset(DataConfig()) == deep


def test_kaggle_model_checkpoint_six_levels_down(kaggle):
    from brainseg_utils.models.sam.search import default_roots, walk

    version = kaggle / "input" / "models" / "someone" / "segment-anything" / "pytorch" / "vit-b" / "1"
    version.mkdir(parents=True)
    (version / "sam_vit_b_01ec64.pth").write_bytes(b"not really weights")
    found = walk(default_roots(home=kaggle / "home"), {"sam_vit_b_01ec64.pth"})
    assert [p for p, _ in found.candidates] == [version / "sam_vit_b_01ec64.pth"]
    assert found.looked_in[0].startswith(f"{kaggle / 'input'} (Kaggle inputs, depth <= ")


def test_profile_from_data_and_device(clean):
    assert data.choose_profile("brats2020", cuda=True) == "full"
    assert data.choose_profile("synthetic", cuda=True) == "quick"  # never hours of training on synthetic data
    assert data.choose_profile("brats2020", cuda=False) == "quick"
    clean.setenv("PROFILE", "full")
    assert data.choose_profile("synthetic", cuda=False) == "full"
    assert set(prepare.profile_params("quick")) <= set(DataConfig.PARAMS)
    with pytest.raises(FileNotFoundError, match=r"profile 'nope'.*options: \['full', 'longer', 'quick', 'seed'\]"):
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
        r"attach a previous run's output that holds unet/best.pt \(Add Input",
    ):
        load_models(run, tiny_cache[1]["sha256"])


# ----------------------------------------------------------------------------- where outputs go (1, 4, 5)
def test_run_folder_per_platform(clean, colab, kaggle):
    on_colab(clean)
    run = RunDir.for_platform("outputs")
    assert run.root == ROOT / "outputs" and run.cache is None  # Colab without Drive: the clone's outputs/
    (colab / "drive" / "MyDrive").mkdir(parents=True)
    run = RunDir.for_platform("outputs")
    assert run.root == colab / "drive" / "MyDrive" / "brainseg" / "outputs"
    assert run.slices.is_relative_to(colab / "brainseg-cache")  # the cache stays on the VM's disk
    on_kaggle(clean, kaggle)
    run = RunDir.for_platform("outputs")
    assert run.root == kaggle / "working" / "brainseg" / "outputs"
    assert run.slices.is_relative_to(kaggle / "temp") and run.sam_embeddings.is_relative_to(kaggle / "temp")
    assert run.unet_best.is_relative_to(kaggle / "working") and run.splits.is_relative_to(kaggle / "working")
    assert RunDir.for_platform("other").root == kaggle / "working" / "brainseg" / "other"
    assert RunDir.for_platform(str(kaggle / "x")).root == kaggle / "x"  # absolute: as given (run_all.sh)


def attach_run(where: Path, split: dict, files: dict[str, bytes], mtime: float) -> Path:
    """An earlier notebook version's output attached as input: ``where`` is its run folder."""
    for rel, content in {"data/splits.json": json.dumps(split).encode(), **files}.items():
        (where / rel).parent.mkdir(parents=True, exist_ok=True)
        (where / rel).write_bytes(content)
        os.utime(where / rel, (mtime, mtime))
    return where


def test_restore_previous_run_reads_the_input_tree_only(kaggle, tiny_cache):
    _, split = tiny_cache
    prev = attach_run(
        kaggle / "input" / "my-brainseg-run" / "brainseg" / "outputs",
        split,
        {"unet/best.pt": b"weights", "data/slices/images.f16": b"cache"},  # caches are never copied
        1e9,
    )
    read_only(kaggle / "input")
    before = snapshot(kaggle / "input")
    run = RunDir.for_platform()
    copied = restore.restore_previous(run)
    assert sorted(c.path.relative_to(run.root).as_posix() for c in copied) == ["data/splits.json", "unet/best.pt"]
    assert {c.source for c in copied} == {prev}
    assert (run.unet_best.stat().st_mode & stat.S_IWUSR) and not (run.root / "data" / "slices").exists()
    assert snapshot(kaggle / "input") == before
    other = RunDir(kaggle / "working" / "other")  # a run with another split takes nothing from it
    from brainseg_utils.data.slices import split_sha256

    swapped = {**split, "train": split["val"], "val": split["train"]}
    other.splits.write_text(json.dumps({**swapped, "sha256": split_sha256(swapped)}))
    assert restore.restore_previous(other) == []


def test_every_attached_run_is_restored_newest_file_wins(kaggle, tiny_cache, capsys):
    """Three notebook outputs attached in the current layout (01's data, 02's U-Net, 03's decoders) plus one
    in the older layout with an older U-Net and one on another split: 04 gets everything, newest first."""
    from brainseg_utils.data.slices import split_sha256

    _, split = tiny_cache
    nb = kaggle / "input" / "notebooks" / "me"
    data_run = attach_run(nb / "brainseg-01-eda" / "brainseg" / "outputs", split, {"data/dataset.json": b"{}"}, 1e9)
    unet_run = attach_run(nb / "brainseg-02-unet" / "brainseg" / "outputs", split, {"unet/best.pt": b"new"}, 3e9)
    sam_run = attach_run(nb / "brainseg-03-sam" / "outputs", split, {"sam/sam_box/best.pt": b"decoder"}, 2e9)
    attach_run(kaggle / "input" / "old-version" / "brainseg" / "outputs", split, {"unet/best.pt": b"old"}, 2e9)
    swapped = {**split, "train": split["val"], "val": split["train"]}
    swapped["sha256"] = split_sha256(swapped)
    attach_run(nb / "other-split" / "brainseg" / "outputs", swapped, {"unet/best.pt": b"wrong split"}, 4e9)
    read_only(kaggle / "input")
    assert len(restore.previous_outputs()) == 5
    run = RunDir.for_platform()
    copied = {c.path.relative_to(run.root).as_posix(): c.source for c in restore.restore_previous(run)}
    assert copied["data/dataset.json"] == data_run and copied["sam/sam_box/best.pt"] == sam_run
    assert copied["unet/best.pt"] == unet_run and run.unet_best.read_bytes() == b"new"
    assert copied["data/splits.json"] in {data_run, unet_run, sam_run}
    out = capsys.readouterr().out
    assert "from 4 attached earlier run(s)" in out and "unet/best.pt" in out and str(unet_run) in out


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
