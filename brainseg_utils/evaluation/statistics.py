"""Statistics of the results table: per-model summaries (means, bootstrap 95% CIs over patients, false-positive
rates) and paired comparisons of every SAM variant with the U-Net.

Paired comparisons (``paired_tests``), on per-patient Dice, HD95 and lesion-wise Dice:
  * difference = U-Net minus SAM variant, per patient (positive Dice difference: the U-Net is better; positive
    HD95 difference: the U-Net is worse); its mean with a BCa bootstrap 95% CI (``N_BOOT_DIFF`` resamples of
    patients, pairs kept together, seed 0) and its median;
  * two-sided Wilcoxon signed-rank test (zero differences dropped; exact p where scipy computes one);
  * effect sizes: matched-pairs rank-biserial correlation (the Wilcoxon test's) and Cohen's d_z;
  * Holm correction per metric over the PRE-DECLARED family: U-Net vs ``sam_<b>_none`` and vs
    ``sam_<b>_unet_box`` for every SAM backend b in the run. The oracle-box and zero-shot comparisons are
    exploratory: their p is not adjusted and they are labelled so.
CIs and p-values need ``MIN_PATIENTS_FOR_STATS`` test patients; below that they are null with the reason (with
2 patients a "95% CI" is [min, max])."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from brainseg_utils.evaluation import metrics as M

MIN_PATIENTS_FOR_STATS = 10  # below this, CIs and p-values are reported as n/a


def _na(n: int) -> str:
    return f"n/a (n = {n} < {MIN_PATIENTS_FOR_STATS} test patients)"


def is_oracle(name: str) -> bool:
    """Variants prompted with the ground-truth box (no box, hence no prediction, on tumour-free slices)."""
    return name.endswith("_box") and not name.endswith("_unet_box") or name.endswith("_box_zeroshot")


def _case_stats(values: pd.Series, n: int, seed: int) -> dict:
    """Mean, median, IQR ``[25th, 75th percentile]``, std and the bootstrap CI (null below MIN_PATIENTS_FOR_STATS)."""
    stats = {
        "mean": float(values.mean()),
        "median": float(values.median()),
        "iqr": [float(values.quantile(0.25)), float(values.quantile(0.75))],
        "std": float(values.std(ddof=1)) if n > 1 else 0.0,
    }
    if n >= MIN_PATIENTS_FOR_STATS:
        stats["ci95"] = list(M.bootstrap_ci(values, seed=seed))
    else:
        stats["ci95"], stats["ci95_note"] = None, _na(n)
    return stats


def summarise(per_case: pd.DataFrame, per_slice: pd.DataFrame, seed: int = 0) -> dict:
    """Per model: per-case mean, median and IQR of ``metrics.METRICS`` and ``metrics.CASE_METRICS`` (bootstrap CIs
    from ``MIN_PATIENTS_FOR_STATS`` patients on, else null with ``ci95_note``), per-slice means of
    ``metrics.METRICS`` (tumour / all), FP rate (null with a reason for oracle prompts)."""
    out = {}
    for name, pc in per_case.groupby("model", sort=False):
        ps = per_slice[per_slice.model == name]
        tum, free = ps[ps.has_tumour], ps[~ps.has_tumour]
        n = int(len(pc))
        entry = {"n_cases": n, "per_case": {}, "per_slice": {}, "per_slice_tumour": {}}
        for m in M.METRICS + M.CASE_METRICS:
            entry["per_case"][m] = _case_stats(pc[m], n, seed)
        for m in M.METRICS:
            entry["per_slice"][m] = {"mean": float(ps[m].mean()), "n": int(len(ps))}
            entry["per_slice_tumour"][m] = {
                "mean": float(tum[m].mean()) if len(tum) else float("nan"),
                "n": int(len(tum)),
            }
        fp = {
            "value": float((free.pred_px > 0).mean()) if len(free) else float("nan"),
            "n_tumour_free_slices": int(len(free)),
        }
        if is_oracle(name):
            fp = {
                "value": None,
                "note": "n/a (oracle): the ground-truth box is absent on tumour-free slices, "
                "so no false positive is possible",
                "n_tumour_free_slices": int(len(free)),
            }
        entry["false_positive_rate"] = fp
        out[name] = entry
    return out


# ----------------------------------------------------------------------------- paired comparisons with the U-Net
PRE_DECLARED_PROMPTS = ("none", "unet_box")  # the fully automatic SAM variants: the confirmatory comparisons
PAIRED_METRICS = ("dice", "hd95", "lesion_dice")  # per-patient metrics compared (lesion_dice when per_case has it)
N_BOOT_DIFF = 10_000  # BCa resamples of the mean paired difference
ALPHA = 0.05
PAIRED_CONVENTIONS = {  # written into metrics.json's conventions
    "paired_difference": "per patient, U-Net minus SAM variant (Dice > 0: the U-Net better; HD95 > 0: the U-Net "
    "worse), on per-patient Dice, HD95 and lesion-wise Dice; mean and median over patients",
    "paired_ci95": f"BCa bootstrap 95% CI of the mean paired difference (scipy.stats.bootstrap, method='BCa', "
    f"{N_BOOT_DIFF} resamples of patients with their pairs, seed 0); null below {MIN_PATIENTS_FOR_STATS} patients",
    "paired_test": "two-sided Wilcoxon signed-rank on the paired differences (zero differences dropped; exact p "
    "for n <= 50 without ties, an exact permutation p for n <= 13 with ties, else the normal approximation)",
    "multiple_comparisons": "Holm step-down, separately for each metric, over the pre-declared family: U-Net vs "
    "sam_<b>_none and U-Net vs sam_<b>_unet_box for every SAM backend b in the run (a comparison without any "
    "non-zero difference counts as p = 1); oracle-box (sam_<b>_box) and zero-shot (sam_<b>_box_zeroshot) "
    "comparisons are exploratory: p unadjusted, labelled so",
    "effect_size": "matched-pairs rank-biserial correlation (R+ - R-) / (R+ + R-) over the non-zero differences "
    "(+1: the U-Net higher on every patient that differs), and Cohen's d_z = mean / SD (ddof 1) of the differences",
}


def comparison_kind(name: str) -> str:
    """``"pre-declared"`` for ``sam_<b>_none`` and ``sam_<b>_unet_box`` (Holm-adjusted); ``"exploratory"`` for
    the oracle-box and zero-shot variants (unadjusted p, labelled so)."""
    if is_oracle(name) or not any(name.endswith(f"_{p}") for p in PRE_DECLARED_PROMPTS):
        return "exploratory"
    return "pre-declared"


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm step-down adjusted p-values, in input order. A None or NaN p (no non-zero difference) counts as 1
    in the family, so the family size stays the number of pre-declared comparisons; it stays None in the output.

    Sorted p_(1) <= ... <= p_(m): adjusted p_(i) = max over j <= i of min(1, (m - j + 1) p_(j)).
    """
    m = len(p_values)
    filled = [1.0 if p is None or not np.isfinite(p) else float(p) for p in p_values]
    order = np.argsort(filled, kind="stable")
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * filled[i]))
        out[i] = running
    return [None if p is None or not np.isfinite(p) else adj for p, adj in zip(p_values, out, strict=True)]


def rank_biserial(diff) -> float:
    """Matched-pairs rank-biserial correlation (Kerby 2014) of paired differences ``diff`` (reference - other):
    (R+ - R-) / (R+ + R-), ranks of |diff| (ties averaged) over the non-zero differences (zeros dropped, as the
    Wilcoxon test here); in [-1, 1], +1 when every non-zero difference is positive; NaN with none."""
    d = np.asarray(diff, float)
    d = d[d != 0]
    if len(d) == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(np.abs(d))
    r_plus, r_minus = ranks[d > 0].sum(), ranks[d < 0].sum()
    return float((r_plus - r_minus) / (r_plus + r_minus))


def cohen_dz(diff) -> float | None:
    """Paired Cohen's d_z: mean(diff) / SD(diff, ddof=1); None when the SD is 0 or n < 2."""
    d = np.asarray(diff, float)
    sd = float(d.std(ddof=1)) if len(d) > 1 else 0.0
    return float(d.mean() / sd) if sd > 0 else None


def wilcoxon_method(diff) -> str:
    """How ``scipy.stats.wilcoxon(method="auto")`` computes p for these differences (scipy >= 1.15 rules)."""
    d = np.asarray(diff, float)
    nz = np.abs(d[d != 0])
    ties_or_zeros = len(nz) < len(d) or len(np.unique(nz)) < len(nz)
    if len(d) > 50:
        return "normal approximation (n > 50)"
    if not ties_or_zeros:
        return "exact"
    return "exact permutation (ties or zeros, n <= 13)" if len(d) <= 13 else "normal approximation (ties or zeros)"


def bca_ci(diff, seed: int = 0, n_resamples: int = N_BOOT_DIFF) -> tuple[list[float] | None, str | None]:
    """(BCa bootstrap 95% CI of mean(diff), note): patients resampled with replacement, each keeping its pair
    (bootstrapping the differences is the paired bootstrap). Identical differences: the CI is that value."""
    from scipy.stats import bootstrap

    d = np.asarray(diff, float)
    if np.ptp(d) == 0:
        return [float(d[0])] * 2, "every paired difference is equal: the CI is that value"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BCa warns on degenerate resamples; a NaN bound is reported as null
        res = bootstrap((d,), np.mean, n_resamples=n_resamples, confidence_level=1 - ALPHA, method="BCa",
                        rng=np.random.default_rng(seed))  # fmt: skip
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return None, "BCa interval undefined for these differences"
    return [lo, hi], None


def paired_difference(ref, other, seed: int = 0) -> dict:
    """Paired comparison of per-patient values ``ref`` and ``other`` (equal length, patients in the same order;
    pairs with a NaN dropped). Difference = ref - other. Below ``MIN_PATIENTS_FOR_STATS`` pairs every inferential
    field is None and ``note`` says why."""
    a, b = np.asarray(ref, float), np.asarray(other, float)
    assert a.shape == b.shape, f"paired samples need equal lengths, got {a.shape} and {b.shape}"
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    n = int(len(d))
    out = {"n": n, "mean_difference": float(d.mean()) if n else None, "median_difference": None, "ci95": None,
           "statistic": None, "p_value": None, "p_method": None, "n_nonzero": int(np.count_nonzero(d)),
           "rank_biserial": None, "cohen_dz": None, "p_holm": None, "note": None}  # fmt: skip
    if n < MIN_PATIENTS_FOR_STATS:
        out["note"] = _na(n)
        return out
    out.update(median_difference=float(np.median(d)), rank_biserial=rank_biserial(d), cohen_dz=cohen_dz(d))
    out["ci95"], out["note"] = bca_ci(d, seed)
    if out["n_nonzero"] == 0:
        out["rank_biserial"] = None
        out["note"] = "no non-zero difference: Wilcoxon undefined (counted as p = 1 in the Holm family)"
        return out
    from scipy.stats import wilcoxon

    res = wilcoxon(d, zero_method="wilcox", alternative="two-sided", method="auto")
    out.update(statistic=float(res.statistic), p_value=float(res.pvalue), p_method=wilcoxon_method(d))
    return out


def _family_note(name: str, family: list[str]) -> str:
    if name in family:
        return (f"pre-declared; Holm-adjusted over the {len(family)} pre-declared comparisons of this metric "
                f"(unet vs {', '.join(family)})")  # fmt: skip
    why = "zero-shot, oracle ground-truth box" if name.endswith("_box_zeroshot") else "oracle ground-truth box"
    return f"exploratory ({why}): p not adjusted"


def paired_tests(per_case: pd.DataFrame, reference: str = "unet", metrics=PAIRED_METRICS, seed: int = 0) -> dict:
    """Paired comparisons of ``reference`` with every other model on per-patient ``metrics`` (those in
    ``per_case``), one entry per model:

    * ``paired.<metric>``: ``paired_difference`` (difference = reference - model: positive Dice = the U-Net
      better, positive HD95 = the U-Net worse), BCa CI, Wilcoxon p, effect sizes, and ``p_holm`` (pre-declared
      comparisons only);
    * ``comparison``: "pre-declared" (``sam_<b>_none``, ``sam_<b>_unet_box``) or "exploratory" (oracle box,
      zero-shot), ``family``: how p was adjusted;
    * the Dice test as before (``metric``, ``n``, ``n_tests``, ``min_attainable_p`` = 2^(1-n), the exact test's
      smallest two-sided p, ``statistic``, ``p_value`` unadjusted; null with ``p_value_note`` below
      ``MIN_PATIENTS_FOR_STATS`` patients).
    """
    metrics = [m for m in metrics if m in per_case.columns]
    wide = {m: per_case.pivot(index="case_id", columns="model", values=m) for m in metrics}
    others = [name for name in per_case["model"].unique() if name != reference and name.startswith("sam_")]
    family = [name for name in others if comparison_kind(name) == "pre-declared"]
    out = {}
    for name in others:
        paired = {m: paired_difference(wide[m][reference], wide[m][name], seed) for m in metrics}
        dice = paired["dice"]
        n = dice["n"]
        entry = {"vs": reference, "comparison": comparison_kind(name), "family": _family_note(name, family),
                 "metric": "dice", "n": n, "n_tests": len(others),
                 "min_attainable_p": min(1.0, 2.0 ** (1 - n)) if n else None,
                 "statistic": dice["statistic"], "p_value": dice["p_value"], "paired": paired}  # fmt: skip
        if n < MIN_PATIENTS_FOR_STATS:
            entry["p_value_note"] = _na(n)
        out[name] = entry
    for m in metrics:
        for name, p in zip(family, holm([out[f]["paired"][m]["p_value"] for f in family]), strict=True):
            out[name]["paired"][m]["p_holm"] = p
    return out
