import json
import os

import numpy as np
import pytest

from brainseg_utils.data import slices
from brainseg_utils.data.brats import discover_cases
from brainseg_utils.data.slices import (
    SliceCache,
    SliceConfig,
    build_cache,
    make_split,
    select_slices,
    write_split_once,
)
from brainseg_utils.data.volumes import load_case


def test_select_slices_by_hand():
    wt = np.zeros((4, 4, 10), np.uint8)
    brain = np.zeros((4, 4, 10), bool)
    brain[:, :, 1:9] = True  # 16 px of brain on z = 1..8
    wt[0, 0, 3] = wt[0, 0, 4] = 1
    wt[:2, :2, 5] = 1  # area 4
    cfg = SliceConfig(img_size=32, tumour_free_fraction=0.0, min_brain_pixels=10)
    assert select_slices(wt, brain, cfg, "c") == [3, 4, 5]
    assert select_slices(wt, brain, SliceConfig(img_size=32, tumour_free_fraction=0.0, min_tumour_pixels=2), "c") == [5]
    assert select_slices(wt, brain, SliceConfig(img_size=32, tumour_free_fraction=0.0, slice_step=2), "c") == [3, 5]
    # 1.0 x 3 tumour slices = 3 tumour-free brain slices drawn from z in {1, 2, 6, 7, 8}
    cfg = SliceConfig(img_size=32, tumour_free_fraction=1.0, min_brain_pixels=10)
    picked = select_slices(wt, brain, cfg, "c")
    free = sorted(set(picked) - {3, 4, 5})
    assert len(picked) == 6 and set(free) <= {1, 2, 6, 7, 8}
    assert picked == select_slices(wt, brain, cfg, "c"), "seeded"
    assert (
        len(select_slices(wt, brain, SliceConfig(img_size=32, tumour_free_fraction=5.0, min_brain_pixels=10), "c")) == 8
    )


def test_resize_slice():
    img = np.zeros((1, 4, 6), np.float32)
    img[0, :, :3] = 1.0
    mask = np.zeros((4, 6), np.uint8)
    mask[:, :3] = 1
    out_img, out_mask = slices.resize_slice(img, mask, 6)  # pads rows 4 -> 6 (one each side)
    assert out_img.shape == (1, 6, 6) and out_mask.shape == (6, 6)
    assert out_mask[0].sum() == 0 and out_mask[5].sum() == 0 and out_mask[1:5, :3].all()
    img2, mask2 = slices.resize_slice(np.ones((2, 240, 240), np.float32), np.ones((240, 240), np.uint8), 64)
    assert img2.shape == (2, 64, 64) and np.allclose(img2, 1.0) and set(np.unique(mask2)) == {1}


def test_build_cache_contents(synth_root, tmp_path):
    cases = discover_cases(synth_root)
    cfg = SliceConfig(img_size=64, tumour_free_fraction=0.5, seed=1)
    cache = build_cache(cases, tmp_path / "slices", cfg, progress=False)
    idx = cache.index
    assert cache.images.shape == (len(idx), 1, 64, 64) and cache.images.dtype == np.float16
    assert cache.masks.shape == (len(idx), 64, 64) and cache.masks.dtype == np.uint8
    assert cache.manifest["n_slices"] == len(idx) and sorted(idx.case_id.unique()) == [c.case_id for c in cases]
    # Row 0 equals a slice cut and resized by hand from the source volume.
    r = idx.iloc[0]
    vol = load_case(cases[0])
    img, mask = slices.resize_slice(vol["image"][..., r.z], vol["wt"][..., r.z], 64)
    np.testing.assert_allclose(cache.images[0], img.astype(np.float16))
    np.testing.assert_array_equal(cache.masks[0], mask)
    assert r.tumour_px == int(vol["wt"][..., r.z].sum())
    # Tumour flags agree with masks; roughly half as many tumour-free slices as tumour slices.
    has = idx.has_tumour.to_numpy()
    assert (cache.masks[has].reshape(has.sum(), -1).max(1) == 1).all()
    assert cache.masks[~has].max() == 0
    assert 0 < (~has).sum() <= 0.5 * has.sum() + len(cases)


def test_cache_reuse_and_rebuild(synth_copy, tmp_path):
    cases = discover_cases(synth_copy)
    cfg = SliceConfig(img_size=48)
    d = tmp_path / "slices"
    first = build_cache(cases, d, cfg, progress=False)
    mtime = (d / "images.f16").stat().st_mtime_ns
    again = build_cache(cases, d, cfg, progress=False)
    assert again.key == first.key and (d / "images.f16").stat().st_mtime_ns == mtime, "reused"
    other = build_cache(cases, d, SliceConfig(img_size=32), progress=False)
    assert other.key != first.key and other.images.shape[-1] == 32, "parameters changed: rebuilt"
    # An input file changes (size/mtime): rebuilt.
    seg = cases[0].seg
    st = seg.stat()
    os.utime(seg, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    touched = build_cache(cases, d, SliceConfig(img_size=32), progress=False)
    assert touched.key != other.key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy", "slices"], "no temp folders left"


def test_failed_rebuild_keeps_old_cache(synth_root, tmp_path, monkeypatch):
    cases = discover_cases(synth_root)
    d = tmp_path / "slices"
    old = build_cache(cases, d, SliceConfig(img_size=48), progress=False)

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(slices, "load_case", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        build_cache(cases, d, SliceConfig(img_size=32), progress=False)
    kept = SliceCache.open(d)
    assert kept.key == old.key and kept.images.shape[-1] == 48
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slices"]


def test_open_errors(tmp_path, synth_root):
    with pytest.raises(FileNotFoundError, match="missing manifest.json"):
        SliceCache.open(tmp_path)
    cases = discover_cases(synth_root)
    with pytest.raises(ValueError, match="no seg file"):
        build_cache([cases[0].__class__(**{**cases[0].__dict__, "seg": None})], tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="img_size"):
        SliceConfig(img_size=8)


# ----------------------------------------------------------------------------- split
def test_split_patient_disjoint_and_stable():
    ids = [f"BraTS20_Training_{i:03d}" for i in range(1, 21)]
    a = make_split(ids, (0.7, 0.15, 0.15), seed=4)
    assert [len(a[k]) for k in ("train", "val", "test")] == [14, 3, 3]
    assert sorted(a["train"] + a["val"] + a["test"]) == ids
    assert make_split(list(reversed(ids)), (0.7, 0.15, 0.15), seed=4) == a, "order of input does not matter"
    assert make_split(ids, (0.7, 0.15, 0.15), seed=5) != a
    small = make_split(ids[:3], (0.8, 0.1, 0.1))
    assert all(len(small[k]) == 1 for k in ("train", "val", "test"))
    with pytest.raises(ValueError, match="sum"):
        make_split(ids, (0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match=">= 3 cases"):
        make_split(ids[:2])


def test_write_split_once(tmp_path):
    ids = [f"c{i}" for i in range(10)]
    p = tmp_path / "splits.json"
    s1 = write_split_once(p, ids, seed=2)
    raw = p.read_bytes()
    assert s1["sha256"] == slices.split_sha256(s1)
    s2 = write_split_once(p, list(reversed(ids)), seed=99)  # exists: loaded, not rewritten
    assert s2 == s1 and p.read_bytes() == raw
    with pytest.raises(ValueError, match="written for other cases"):
        write_split_once(p, ids + ["c10"])
    tampered = json.loads(raw)
    tampered["train"], tampered["test"] = tampered["test"], tampered["train"]
    p.write_text(json.dumps(tampered))
    with pytest.raises(ValueError, match="does not match its contents"):
        slices.load_split(p)
    with pytest.raises(FileNotFoundError, match="notebook 01"):
        slices.load_split(tmp_path / "none.json")


def test_split_summary(synth_root, tmp_path):
    cases = discover_cases(synth_root)
    cache = build_cache(cases, tmp_path / "s", SliceConfig(img_size=32), progress=False)
    split = make_split([c.case_id for c in cases], seed=0)
    summary = slices.split_summary(split, cache.index)
    assert summary["slices"].sum() == len(cache)
    assert summary.loc["test", "cases"] == len(split["test"])
    assert summary["tumour_slices"].sum() == int(cache.index.has_tumour.sum())


def test_box_to_cache_follows_the_image_geometry():
    """A box drawn on a non-square slice lands on the same pixels of the padded, resized cache slice."""
    img = np.zeros((1, 100, 160), np.float32)  # padded to 160 x 160: 30 rows on top
    img[0, 20:40, 50:90] = 1.0  # rows 20..39, cols 50..89
    small, _ = slices.resize_slice(img, np.zeros((100, 160), np.uint8), 80)  # scale 0.5
    box = slices.box_to_cache([50, 20, 89, 39], 100, 160, 80)
    np.testing.assert_allclose(box, [25, 25, 44.5, 34.5])
    rows, cols = np.flatnonzero(small[0].max(1) > 0.5), np.flatnonzero(small[0].max(0) > 0.5)
    assert (cols[0], rows[0]) == (25, 25) and (cols[-1], rows[-1]) == (44, 34)
    assert slices.square_padding(100, 160) == (160, 30, 0) and slices.square_padding(7, 4) == (7, 0, 1)


# ----------------------------------------------------------------------------- split stratified by grade
def _name_mapping(folder, grades: dict, columns=("Grade", "BraTS_2019_subject_ID", "BraTS_2020_subject_ID")):
    """A hand-made BraTS 2020 name_mapping.csv (the real one has more ID columns)."""
    lines = [",".join(columns)] + [f"{g},NA,{cid}" for cid, g in grades.items()]
    path = folder / "name_mapping.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_unstratified_split_is_unchanged():
    """Without name_mapping.csv the split is today's seeded permutation: the pinned hash must not move."""
    ids = [f"BraTS20_Training_{i:03d}" for i in range(1, 21)]
    split = make_split(ids, (0.7, 0.15, 0.15), seed=4)
    assert split["test"] == ["BraTS20_Training_004", "BraTS20_Training_013", "BraTS20_Training_015"]
    assert slices.split_sha256(split) == "9284872f6729a6a03859a5b87c4265643f0f6af6b6d2d59d3d49f2e5e54cffdc"
    assert make_split(ids, (0.7, 0.15, 0.15), seed=4, strata={}) == split, "an empty mapping does not stratify"


def test_stratified_split_keeps_the_grade_proportions(tmp_path):
    ids = [f"BraTS20_Training_{i:03d}" for i in range(1, 41)]
    grades = {cid: "LGG" if i % 4 == 0 else "HGG" for i, cid in enumerate(ids)}  # 30 HGG : 10 LGG
    path = _name_mapping(tmp_path, grades)
    split = write_split_once(tmp_path / "splits.json", ids, (0.7, 0.15, 0.15), seed=0, grades_from=path)
    plain = make_split(ids, (0.7, 0.15, 0.15), seed=0)
    assert [len(split[k]) for k in ("train", "val", "test")] == [len(plain[k]) for k in ("train", "val", "test")]
    assert [len(split[k]) for k in ("train", "val", "test")] == [28, 6, 6]
    for k in ("train", "val", "test"):  # LGG share 1/4: 7 of 28, 1.5 of 6
        lgg = sum(grades[c] == "LGG" for c in split[k])
        assert abs(lgg - len(split[k]) / 4) <= 1, (k, lgg)
    counts = split["stratified"]["counts"]
    assert counts["train"] == {"HGG": 21, "LGG": 7} and counts["val"]["LGG"] + counts["test"]["LGG"] == 3
    assert split["stratified"]["by"] == "grade (HGG / LGG)" and split["stratified"]["source"] == str(path)
    assert split["sha256"] == slices.split_sha256(split) and slices.load_split(tmp_path / "splits.json") == split
    again = write_split_once(tmp_path / "again.json", list(reversed(ids)), (0.7, 0.15, 0.15), 0, grades_from=path)
    assert again == split, "deterministic"
    assert make_split(ids, (0.7, 0.15, 0.15), seed=1, strata=grades) != {k: split[k] for k in ("train", "val", "test")}
    assert write_split_once(tmp_path / "plain.json", ids, (0.7, 0.15, 0.15), seed=0)["stratified"] is None


def test_stratified_split_of_369_brats_sized_cases():
    ids = [f"BraTS20_Training_{i:03d}" for i in range(1, 370)]
    lgg = set(np.random.default_rng(1).choice(ids, 76, replace=False))  # BraTS 2020: 293 HGG, 76 LGG
    grades = {c: "LGG" if c in lgg else "HGG" for c in ids}
    split = make_split(ids, (0.7, 0.15, 0.15), seed=0, strata=grades)
    for k in ("train", "val", "test"):
        assert abs(sum(c in lgg for c in split[k]) - len(split[k]) * 76 / 369) <= 1, k


def test_name_mapping_errors_and_lookup(tmp_path):
    from brainseg_utils.data.strata import find_name_mapping, read_grades

    assert find_name_mapping(tmp_path) is None
    (tmp_path / "data").mkdir()
    path = _name_mapping(tmp_path / "data", {"BraTS20_Training_001": "HGG", "NA": "LGG"})
    assert find_name_mapping(tmp_path, [tmp_path / "data" / "BraTS20_Training_001"]) == path, "the cases' folder"
    assert read_grades(path) == {"BraTS20_Training_001": "HGG"}, "rows without a 2020 id are skipped"
    bad = _name_mapping(tmp_path, {"BraTS20_Training_001": "GBM"})
    with pytest.raises(ValueError, match=r"line 2 \(BraTS20_Training_001\): expected Grade in \('HGG', 'LGG'\)"):
        read_grades(bad)
    _name_mapping(tmp_path, {"BraTS20_Training_001": "HGG"}, columns=("Grade", "x", "BraTS_2019_subject_ID"))
    with pytest.raises(ValueError, match="expected columns 'Grade' and 'BraTS_2020_subject_ID'"):
        read_grades(bad)
