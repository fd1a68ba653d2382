"""What a notebook running alone on a fresh VM rebuilds: the audit is reused when recorded for the same input
files (this run's, or one restored from an earlier run), and notebook 04 builds no slice cache."""

from __future__ import annotations

import json
import os

import pytest

from brainseg_utils.config import DataConfig
from brainseg_utils.data import validate
from brainseg_utils.data.slices import SliceCache
from brainseg_utils.runtime.paths import RunDir
from brainseg_utils.workflow import prepare


def small_cfg(root) -> DataConfig:
    return DataConfig.from_params(DATA_ROOT=str(root), IMG_SIZE=64, SPLIT_FRACTIONS=[0.6, 0.2, 0.2])


def test_audit_is_reused_for_the_same_files_and_redone_when_one_changes(synth_copy, tmp_path, monkeypatch, capsys):
    cfg = small_cfg(synth_copy)
    run = RunDir(tmp_path / "run")
    found = prepare.find_cases(cfg, progress=False)
    first = prepare.audit(run, found.labelled, cfg, progress=False)
    record = json.loads(run.audit_record.read_text())
    assert record["key"] == prepare.audit_key(found.labelled, cfg) and len(record["good"]) == 5

    calls = []
    real = validate.audit_cases
    monkeypatch.setattr(validate, "audit_cases", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = prepare.audit(run, found.labelled, cfg, progress=False)
    assert calls == [] and [c.case_id for c in again.good] == [c.case_id for c in first.good]
    assert again.table.shape == first.table.shape and "reusing" in capsys.readouterr().out

    flair = found.labelled[2].images["flair"]
    os.utime(flair, ns=(flair.stat().st_atime_ns, flair.stat().st_mtime_ns + 10**9))  # a file rewritten
    prepare.audit(run, found.labelled, cfg, progress=False)
    assert calls == [1]
    skip = DataConfig.from_params(DATA_ROOT=str(synth_copy), SKIP_BAD_CASES=True)
    assert prepare.audit_key(found.labelled, skip) != prepare.audit_key(found.labelled, cfg)


def test_a_corrupt_record_is_audited_again(synth_copy, tmp_path, monkeypatch):
    cfg = small_cfg(synth_copy)
    run = RunDir(tmp_path / "run")
    found = prepare.find_cases(cfg, progress=False)
    prepare.audit(run, found.labelled, cfg, progress=False)
    run.audit_record.write_text("{not json")
    calls = []
    real = validate.audit_cases
    monkeypatch.setattr(validate, "audit_cases", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert len(prepare.audit(run, found.labelled, cfg, progress=False).good) == 5 and calls == [1]
    assert json.loads(run.audit_record.read_text())["key"] == prepare.audit_key(found.labelled, cfg)


def test_evaluation_alone_builds_the_split_but_no_slice_cache(plain, synth_root, tmp_path):
    """Notebook 04 on a fresh VM: split and dataset record, no slice cache; the geometry it evaluates at is the
    one notebook 01 records (and builds the cache with)."""
    plain.setenv("DATA_ROOT", str(synth_root))
    run = RunDir(tmp_path / "run")
    split, info = prepare.open_run_split(run, build_missing=True)
    assert not run.slices.exists() and run.audit_record.is_file()
    assert sorted(split["train"] + split["val"] + split["test"]) == [f"BraTS20_Training_{i:03d}" for i in range(1, 6)]
    # the generator writes a name_mapping.csv, but a synthetic split is not stratified (its "grade" means
    # nothing clinically, and the default run's split must not move); real BraTS's is (below)
    assert split["stratified"] is None
    size, modalities = prepare.cache_geometry(info)
    cache, split2, _ = prepare.open_run_data(run, build_missing=True)  # 02/03 later in the same run folder
    assert split2 == split and cache.images.shape[-1] == size
    assert tuple(SliceCache.open(run.slices).manifest["config"]["modalities"]) == modalities
    with pytest.raises(ValueError, match="re-run notebook 01"):
        prepare.cache_geometry({"params": {}})


def test_a_brats_split_is_stratified_by_grade_and_says_so(plain, synth_root, tmp_path):
    """The same cases in a BraTS-layout root that our generator did not write (no SYNTHETIC.json)."""
    import shutil

    root = tmp_path / "MICCAI_BraTS2020_TrainingData"
    shutil.copytree(synth_root, root, ignore=shutil.ignore_patterns("SYNTHETIC.json"))
    plain.setenv("DATA_ROOT", str(root))
    split, info = prepare.open_run_split(RunDir(tmp_path / "run"), build_missing=True)
    assert info["name"] == "brats2020"
    assert split["stratified"]["source"] == str(root / "name_mapping.csv")
    assert sum(sum(c.values()) for c in split["stratified"]["counts"].values()) == 5
