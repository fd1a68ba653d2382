"""Repeats (evaluation/repeats.py): mean ± SD across runs, computed by hand."""

import json

import pytest

from brainseg_utils.evaluation import repeats


def _run(dice_unet, dice_sam, diff, p_holm, split="a", dataset="synthetic"):
    """A metrics.json reduced to what repeats reads."""
    paired = {"dice": {"mean_difference": diff, "p_holm": p_holm, "p_value": p_holm}}
    return {
        "dataset": {"name": dataset, "split_sha256": split, "n_test_cases": 12},
        "models": {
            "unet": {"per_case": {"dice": {"mean": dice_unet}, "hd95": {"mean": 5.0}}},
            "sam_x_none": {"per_case": {"dice": {"mean": dice_sam}, "hd95": {"mean": 7.0}}},
        },
        "statistics": {"sam_x_none": {"comparison": "pre-declared", "paired": paired}},
    }


def test_mean_and_sd_across_runs_by_hand():
    runs = [_run(0.8, 0.7, 0.1, 0.01, "a"), _run(0.7, 0.5, 0.2, 0.2, "b"), _run(0.9, 0.6, 0.3, None, "c")]
    agg = repeats.aggregate(runs)
    assert agg["n_repeats"] == 3 and agg["splits"] == "3 different splits"
    assert agg["models"]["unet"]["dice"]["mean"] == pytest.approx(0.8)
    assert agg["models"]["unet"]["dice"]["sd"] == pytest.approx(0.1)  # deviations -0.1, 0, 0.1: sqrt(0.02 / 2)
    assert agg["models"]["unet"]["hd95"] == {"mean": 5.0, "sd": 0.0, "values": [5.0, 5.0, 5.0]}
    d = agg["paired"]["sam_x_none"]["dice"]
    assert d["mean_difference"]["mean"] == pytest.approx(0.2) and d["mean_difference"]["sd"] == pytest.approx(0.1)
    assert (d["runs_significant"], d["runs_tested"], d["p"]) == (1, 2, "p_holm")
    md = repeats.repeats_markdown(agg)
    assert "3 runs on synthetic data (3 different splits)" in md
    assert "| unet | 0.800 ± 0.100 | 5.000 ± 0.000 |" in md
    assert "| sam_x_none | pre-declared | dice | +0.200 ± 0.100 | 1 of 2 (Holm p) |" in md
    assert repeats.aggregate(runs[:2])["n_test_cases"] == [12, 12]
    assert "one split" in repeats.aggregate([_run(0.8, 0.7, 0.1, 0.01), _run(0.7, 0.5, 0.2, 0.2)])["splits"]


def test_runs_that_cannot_be_pooled_are_refused(tmp_path):
    with pytest.raises(AssertionError, match=">= 2 runs"):
        repeats.aggregate([_run(0.8, 0.7, 0.1, 0.01)])
    with pytest.raises(ValueError, match="share a dataset"):
        repeats.aggregate([_run(0.8, 0.7, 0.1, 0.01), _run(0.8, 0.7, 0.1, 0.01, dataset="brats2020")])
    other = _run(0.8, 0.7, 0.1, 0.01)
    del other["models"]["sam_x_none"]
    with pytest.raises(ValueError, match="b.json: models \\['unet'\\], expected"):
        repeats.aggregate([_run(0.8, 0.7, 0.1, 0.01), other], ["a.json", "b.json"])
    paths = []
    for i, run in enumerate([_run(0.8, 0.7, 0.1, 0.01), _run(0.7, 0.5, 0.2, 0.2)]):
        paths.append(tmp_path / f"m{i}.json")
        paths[-1].write_text(json.dumps(run))
    assert repeats.main([*map(str, paths), "--out", str(tmp_path / "r.md")]) == 0
    assert "| unet | 0.750 ± 0.071 |" in (tmp_path / "r.md").read_text()
