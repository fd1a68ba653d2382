"""Statistics of the results table: per-model summaries (means, bootstrap 95% CIs over patients, false-positive
rates) and paired Wilcoxon signed-rank tests against the U-Net. CIs and p-values need ``MIN_PATIENTS_FOR_STATS``
test patients; below that they are null with the reason (with 2 patients a "95% CI" is [min, max])."""

from __future__ import annotations

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


def paired_tests(per_case: pd.DataFrame, reference: str = "unet", metric: str = "dice") -> dict:
    """Wilcoxon signed-rank of per-patient ``metric``, ``reference`` vs every other model.

    Each entry: ``n``, ``n_tests`` (comparisons made), ``min_attainable_p`` (2^(1-n): the exact
    two-sided test's smallest p with n pairs), and ``p_value`` / ``statistic`` (null with
    ``p_value_note`` below ``MIN_PATIENTS_FOR_STATS`` patients).
    """
    wide = per_case.pivot(index="case_id", columns="model", values=metric)
    others = [name for name in wide.columns if name != reference]
    out = {}
    for name in others:
        res = M.paired_wilcoxon(wide[reference], wide[name])
        n = res["n"]
        entry = {
            "vs": reference,
            "metric": metric,
            "n": n,
            "n_tests": len(others),
            "min_attainable_p": min(1.0, 2.0 ** (1 - n)) if n else None,
        }
        if n >= MIN_PATIENTS_FOR_STATS:
            entry.update(statistic=res["statistic"], p_value=res["p_value"])
        else:
            entry.update(statistic=None, p_value=None, p_value_note=_na(n))
        out[name] = entry
    return out
