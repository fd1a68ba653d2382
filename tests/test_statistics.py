"""Paired comparisons with the U-Net (evaluation/statistics.py): hand-computed differences, CIs, Holm, effect sizes."""

import numpy as np
import pandas as pd
import pytest

from brainseg_utils.evaluation import results_table, statistics

# Ten paired differences around a true mean of 0.1, no ties, all positive.
DIFF = 0.1 + np.array([-0.045, -0.035, -0.025, -0.015, -0.005, 0.005, 0.015, 0.025, 0.035, 0.045])


def test_paired_difference_of_a_known_dataset():
    sam = np.linspace(0.5, 0.8, 10)
    res = statistics.paired_difference(sam + DIFF, sam)
    assert res["n"] == 10 and res["mean_difference"] == pytest.approx(0.1)
    assert res["median_difference"] == pytest.approx(0.1)
    lo, hi = res["ci95"]
    assert 0 < lo < 0.1 < hi < 0.2, "the BCa CI holds the true mean and excludes 0"
    # All 10 differences positive, no ties: the exact two-sided p is 2 / 2^10.
    assert res["p_value"] == pytest.approx(2 / 1024) and res["p_method"] == "exact"
    assert res["rank_biserial"] == pytest.approx(1.0)
    assert res["cohen_dz"] == pytest.approx(0.1 / np.std(DIFF, ddof=1))
    assert res["note"] is None and res["p_holm"] is None  # Holm is set by paired_tests, over a family
    assert statistics.paired_difference(sam + DIFF, sam, seed=0)["ci95"] == res["ci95"], "seeded"


def test_paired_difference_matches_scipy_and_swaps_sign():
    from scipy.stats import wilcoxon

    rng = np.random.default_rng(3)
    a, b = rng.uniform(0.4, 0.9, 14), rng.uniform(0.4, 0.9, 14)
    ab, ba = statistics.paired_difference(a, b), statistics.paired_difference(b, a)
    assert ab["p_value"] == pytest.approx(wilcoxon(a, b).pvalue) and ab["p_value"] == pytest.approx(ba["p_value"])
    assert ab["mean_difference"] == pytest.approx(-ba["mean_difference"])
    assert ab["rank_biserial"] == pytest.approx(-ba["rank_biserial"])
    assert ab["ci95"][0] <= ab["mean_difference"] <= ab["ci95"][1]


def test_holm_by_hand():
    # sorted 0.02, 0.03: 2 x 0.02 = 0.04, then max(0.04, 1 x 0.03) = 0.04
    assert statistics.holm([0.03, 0.02]) == pytest.approx([0.04, 0.04])
    assert statistics.holm([0.01, 0.04]) == pytest.approx([0.02, 0.04])
    assert statistics.holm([0.6, 0.7]) == pytest.approx([1.0, 1.0]), "capped at 1"
    # a comparison without p counts as p = 1 in a family of 3: 3 x 0.01, then max(0.03, 2 x 0.04)
    assert statistics.holm([0.04, 0.01, None]) == [pytest.approx(0.08), pytest.approx(0.03), None]
    assert statistics.holm([]) == []


def test_rank_biserial_by_hand():
    # non-zero differences 1, -2, 3, 3: ranks of |d| 1, 2, 3.5, 3.5; R+ = 8, R- = 2; r = (8 - 2) / 10
    assert statistics.rank_biserial([1, -2, 3, 0, 3]) == pytest.approx(0.6)
    assert statistics.rank_biserial([-1, -2]) == pytest.approx(-1.0)
    assert np.isnan(statistics.rank_biserial([0, 0]))
    assert statistics.cohen_dz([1.0, 1.0, 1.0]) is None, "no spread: d_z undefined"


def test_null_below_ten_patients():
    res = statistics.paired_difference(np.ones(9), np.zeros(9))
    assert res["n"] == 9 and res["mean_difference"] == pytest.approx(1.0)
    for key in ("ci95", "p_value", "rank_biserial", "cohen_dz", "median_difference"):
        assert res[key] is None, key
    assert res["note"] == "n/a (n = 9 < 10 test patients)"


def test_degenerate_differences():
    same = statistics.paired_difference(np.full(10, 0.7), np.full(10, 0.7))
    assert same["ci95"] == [0.0, 0.0] and same["p_value"] is None and "no non-zero difference" in same["note"]
    shifted = statistics.paired_difference(np.full(10, 0.7), np.full(10, 0.5))
    assert shifted["ci95"] == pytest.approx([0.2, 0.2]) and shifted["p_value"] == pytest.approx(2 / 1024)
    nan = statistics.paired_difference(np.r_[np.nan, np.ones(10)], np.r_[0.0, np.zeros(10)])
    assert nan["n"] == 10, "pairs with a missing value are dropped"


def _per_case(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(n)
    unet = rng.uniform(0.6, 0.9, n)
    shift = {"sam_x_none": 0.2, "sam_x_unet_box": 0.05, "sam_x_box": -0.1, "sam_x_box_zeroshot": 0.0}
    rows = []
    for model, d in {"unet": 0.0, **shift}.items():
        dice = unet - d + (rng.normal(0, 0.03, n) if d else 0)
        for i in range(n):
            rows.append({"model": model, "case_id": f"c{i}", "dice": dice[i], "hd95": 10 * (1 - dice[i]),
                         "lesion_dice": dice[i] - 0.1})  # fmt: skip
    return pd.DataFrame(rows)


def test_paired_tests_family_and_holm():
    tests = statistics.paired_tests(_per_case(12))
    assert set(tests) == {"sam_x_none", "sam_x_unet_box", "sam_x_box", "sam_x_box_zeroshot"}
    kinds = {name: t["comparison"] for name, t in tests.items()}
    assert kinds == {"sam_x_none": "pre-declared", "sam_x_unet_box": "pre-declared", "sam_x_box": "exploratory",
                     "sam_x_box_zeroshot": "exploratory"}  # fmt: skip
    for metric in ("dice", "hd95", "lesion_dice"):
        family = [tests[n]["paired"][metric]["p_value"] for n in ("sam_x_none", "sam_x_unet_box")]
        want = statistics.holm(family)
        assert [tests[n]["paired"][metric]["p_holm"] for n in ("sam_x_none", "sam_x_unet_box")] == want
        assert tests["sam_x_box"]["paired"][metric]["p_holm"] is None, "exploratory: not adjusted"
    none = tests["sam_x_none"]
    assert none["paired"]["dice"]["mean_difference"] > 0 > none["paired"]["hd95"]["mean_difference"]
    assert tests["sam_x_box"]["paired"]["dice"]["mean_difference"] < 0
    assert "Holm-adjusted over the 2 pre-declared" in none["family"] and "oracle" in tests["sam_x_box"]["family"]
    assert "zero-shot" in tests["sam_x_box_zeroshot"]["family"]
    # the Dice test keeps its earlier fields
    assert none["p_value"] == none["paired"]["dice"]["p_value"] and none["n_tests"] == 4
    assert none["min_attainable_p"] == pytest.approx(2.0**-11) and "p_value_note" not in none
    assert (
        "lesion_dice" not in statistics.paired_tests(_per_case(12).drop(columns="lesion_dice"))["sam_x_none"]["paired"]
    )


def test_paired_tests_null_below_ten_patients():
    tests = statistics.paired_tests(_per_case(4))
    t = tests["sam_x_none"]
    assert t["p_value"] is None and t["p_value_note"] == "n/a (n = 4 < 10 test patients)"
    assert all(r["ci95"] is None and r["p_holm"] is None for r in t["paired"].values())


def test_paired_table_in_results_md():
    lines = results_table.paired_lines(statistics.paired_tests(_per_case(12)))
    text = "\n".join(lines)
    assert "## Paired comparisons with the U-Net" in text and "U-Net minus SAM variant" in text
    row = next(line for line in lines if line.startswith("| sam_x_none | pre-declared | Dice |"))
    res = statistics.paired_tests(_per_case(12))["sam_x_none"]["paired"]["dice"]
    assert f"{res['mean_difference']:+.3f} [{res['ci95'][0]:+.3f}, {res['ci95'][1]:+.3f}]" in row
    assert f"| {res['p_holm']:.3g} |" in row
    assert "| sam_x_box | exploratory | HD95 mm | 12 |" in text and "— (exploratory)" in text
    small = "\n".join(results_table.paired_lines(statistics.paired_tests(_per_case(3))))
    assert "CI n/a" not in small and "| n/a | n/a | n/a | n/a |" in small  # "need >= 10 patients", said once
    assert results_table.paired_lines({"sam_x_none": {"n_tests": 1, "p_value": None}}) == [], "old metrics.json"
