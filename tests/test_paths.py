"""paths.py: RunDir creates each folder where the layout says (files never), open_run_data's checks."""

from __future__ import annotations

import json

import pytest

from brainseg_utils.runtime.paths import RunDir
from brainseg_utils.workflow.prepare import open_run_data

FOLDERS = {  # property -> folder relative to the run root (created on access)
    "data": "data",
    "unet": "unet",
    "sam_root": "sam",
    "sam_embeddings": "sam/embeddings",
    "results": "results",
    "figures": "figures",
    "demo": "demo",
    "demo_examples": "demo/examples",
}
FILES = {  # property -> file relative to the run root (parent created, file not)
    "slices": "data/slices",
    "splits": "data/splits.json",
    "audit": "data/audit.csv",
    "dataset": "data/dataset.json",
    "unet_best": "unet/best.pt",
    "sam_summary": "sam/summary.csv",
    "metrics": "results/metrics.json",
    "per_case": "results/per_case.csv",
    "per_slice": "results/per_slice.csv",
    "results_md": "results/results.md",
}


@pytest.mark.parametrize("prop, rel", FOLDERS.items())
def test_folder_properties_create_their_folder(tmp_path, prop, rel):
    run = RunDir(tmp_path / "out")
    assert not (tmp_path / "out").exists()
    p = getattr(run, prop)
    assert p == tmp_path / "out" / rel and p.is_dir()
    assert sorted(q.relative_to(tmp_path / "out").as_posix() for q in (tmp_path / "out").rglob("*")) == sorted(
        "/".join(rel.split("/")[: i + 1]) for i in range(rel.count("/") + 1)
    ), "nothing else is created"


@pytest.mark.parametrize("prop, rel", FILES.items())
def test_file_properties_create_the_parent_only(tmp_path, prop, rel):
    run = RunDir(tmp_path)
    p = getattr(run, prop)
    assert p == tmp_path / rel and p.parent.is_dir() and not p.exists()


def test_per_model_folders_and_listings(tmp_path):
    run = RunDir(str(tmp_path))  # str or PathLike
    assert run.sam_checkpoints() == {} and run.histories() == {} and run.prediction_dirs() == []
    assert not (tmp_path / "sam").exists() and not (tmp_path / "predictions").exists(), "listings create nothing"
    box = run.sam("sam_litemedsam_box")
    assert box == tmp_path / "sam" / "sam_litemedsam_box" and box.is_dir()
    assert run.predictions("unet") == tmp_path / "predictions" / "unet" and run.predictions("unet").is_dir()
    for variant in ("sam_litemedsam_none", "sam_litemedsam_box"):
        (run.sam(variant) / "best.pt").write_bytes(b"x")
        (run.sam(variant) / "history.json").write_text("{}")
    (run.sam_embeddings / "best.pt").write_bytes(b"x")  # not a variant
    (run.unet / "history.json").write_text("{}")
    assert run.sam_checkpoints() == {
        "sam_litemedsam_box": tmp_path / "sam/sam_litemedsam_box/best.pt",
        "sam_litemedsam_none": tmp_path / "sam/sam_litemedsam_none/best.pt",
    }
    assert list(run.histories()) == ["unet", "sam_litemedsam_box", "sam_litemedsam_none"]
    assert run.prediction_dirs() == [tmp_path / "predictions" / "unet"]
    with pytest.raises(ValueError, match="sam_<backend>_<prompt>, got 'embeddings'"):
        run.sam("embeddings")
    assert run.written()[0] == tmp_path / "sam/embeddings/best.pt"


def test_open_run_data(tmp_path, tiny_cache):
    import shutil

    cache, split = tiny_cache
    run = RunDir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"dataset.json not found: run notebooks/01_eda.ipynb first"):
        open_run_data(run)
    shutil.copytree(cache.root, run.slices)
    run.splits.write_text(json.dumps(split))
    run.dataset.write_text("{not json")
    with pytest.raises(ValueError, match=r"dataset.json is not valid JSON"):
        open_run_data(run)
    run.dataset.write_text(json.dumps({"name": "synthetic", "split_sha256": "0" * 64}))
    with pytest.raises(ValueError, match=r"splits.json \(sha256 .{12}…\) differs from the split notebook 01"):
        open_run_data(run)
    run.dataset.write_text(json.dumps({"name": "synthetic", "split_sha256": split["sha256"]}))
    got_cache, got_split, info = open_run_data(run)
    assert got_split == split and info["name"] == "synthetic" and got_cache.images.shape == cache.images.shape
    tampered = {**split, "test": split["test"][:-1]}  # edited by hand: load_split's own hash check refuses it
    run.splits.write_text(json.dumps(tampered))
    with pytest.raises(ValueError, match="does not match its contents"):
        open_run_data(run)
