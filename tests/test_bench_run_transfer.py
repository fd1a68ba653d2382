"""benchmarks/bench_run_transfer.py: argument parsing, the goal checks and clear errors (no models needed)."""

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_run_transfer as T  # noqa: E402


def test_set_arguments_are_name_equals_path():
    assert T.parse_set("mni_flair=/data/x") == ("mni_flair", Path("/data/x"))
    for bad in ("mni_flair", "=/data/x", "name="):
        with pytest.raises(argparse.ArgumentTypeError, match="NAME=PATH"):
            T.parse_set(bad)


def _r(**means):
    return {m: {"mean": v} for m, v in means.items()}


def test_checks_judge_the_worst_set_and_compare_boxes_per_set():
    results = {
        "a": _r(unet=0.72, sam_lite_box=0.70, sam_lite_box_zeroshot=0.61, sam_lite_unet_box=0.4),
        "b": _r(unet=0.58, sam_lite_box=0.55, sam_lite_box_zeroshot=0.57, sam_lite_unet_box=0.5),
    }
    out = T.checks(results)
    assert out["worst_set"]["unet"] == {"set": "b", "mean": 0.58}
    assert out["worst_set"]["sam_lite_unet_box"] == {"set": "a", "mean": 0.4}
    assert out["unet_meets_goal_on_every_set"] is False  # 0.58 < 0.60 on b, although the mean of sets is 0.65
    assert out["fine_tuned_minus_zero_shot_box"] == {"a": 0.09, "b": -0.02}
    assert out["fine_tuned_box_not_worse_on_every_set"] is False
    results["b"]["unet"]["mean"] = 0.6
    results["b"]["sam_lite_box"]["mean"] = 0.57
    out = T.checks(results)
    assert out["unet_meets_goal_on_every_set"] is True and out["fine_tuned_box_not_worse_on_every_set"] is True


def test_a_folder_that_is_not_a_finished_run_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"splits\.json.*run_all\.sh"):
        T.load_run(tmp_path)


def test_a_set_without_cases_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no labelled BraTS cases"):
        T.evaluate_set(None, tmp_path, 128, ("flair",), 12, 3)
