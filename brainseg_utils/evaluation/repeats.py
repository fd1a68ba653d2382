"""Repeats: mean ± SD across runs of the whole pipeline that differ in their seed (and with it the split).

    python -m brainseg_utils.evaluation.repeats RUN_A/results/metrics.json RUN_B/results/metrics.json ... [--out F]

Each run is one ``bash run_all.sh`` with its own ``SEED`` and ``OUTPUT_DIR``. ``SEED`` seeds the split too, so
runs with different seeds are repeated random patient splits (each model retrained on each); runs that share
a split sha256 differ only in training randomness. The table says which. Per model: the mean over runs of the
per-patient means ± their SD across runs (ddof 1); per comparison with the U-Net: the mean paired difference
(U-Net minus SAM) ± SD across runs, and in how many runs the Holm-adjusted (pre-declared) or unadjusted
(exploratory) Wilcoxon p was below 0.05. The SD across runs is no CI: with k runs it is itself uncertain.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from brainseg_utils.runtime.io import atomic_write_text

REPEAT_METRICS = ("dice", "hd95", "lesion_dice")  # per-patient means summarised across runs
SIGNIFICANCE = 0.05


def _mean_sd(values: list[float]) -> dict:
    v = np.asarray(values, float)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)), "values": [float(x) for x in v]}


def aggregate(runs: list[dict], names: list[str] | None = None) -> dict:
    """Mean ± SD across ``runs`` (metrics.json dicts, >= 2, same dataset and models); ``names`` label the runs
    in error messages (default: run 0, run 1, ...)."""
    names = names or [f"run {i}" for i in range(len(runs))]
    assert len(runs) >= 2, f"repeats need >= 2 runs, got {len(runs)}"
    datasets = {r["dataset"]["name"] for r in runs}
    if len(datasets) != 1:
        raise ValueError(f"repeats must share a dataset; found {sorted(datasets)} in {names}")
    models = list(runs[0]["models"])
    for name, r in zip(names, runs, strict=True):
        if set(r["models"]) != set(models):
            raise ValueError(f"{name}: models {sorted(r['models'])}, expected {sorted(models)} as in {names[0]}")
    splits = {r["dataset"]["split_sha256"] for r in runs}
    out = {
        "n_repeats": len(runs),
        "dataset": datasets.pop(),
        "n_test_cases": [r["dataset"]["n_test_cases"] for r in runs],
        "splits": "one split (training randomness only)" if len(splits) == 1 else f"{len(splits)} different splits",
        "models": {},
        "paired": {},
    }
    for model in models:
        pcs = [r["models"][model]["per_case"] for r in runs]
        out["models"][model] = {m: _mean_sd([pc[m]["mean"] for pc in pcs]) for m in REPEAT_METRICS if m in pcs[0]}
    for model in models:
        tests = [r.get("statistics", {}).get(model, {}) for r in runs]
        if not all(t.get("paired") for t in tests):
            continue
        entry = {"comparison": tests[0]["comparison"]}
        for m in (m for m in REPEAT_METRICS if m in tests[0]["paired"]):
            res = [t["paired"][m] for t in tests]
            if any(x["mean_difference"] is None for x in res):
                continue
            p_key = "p_holm" if entry["comparison"] == "pre-declared" else "p_value"
            entry[m] = {
                "mean_difference": _mean_sd([x["mean_difference"] for x in res]),
                "runs_significant": sum(x.get(p_key) is not None and x[p_key] < SIGNIFICANCE for x in res),
                "runs_tested": sum(x.get(p_key) is not None for x in res),
                "p": p_key,
            }
        out["paired"][model] = entry
    return out


def repeats_markdown(agg: dict) -> str:
    """The repeats table: one row per model (mean ± SD across runs), then one per comparison with the U-Net."""
    k = agg["n_repeats"]
    cols = [m for m in REPEAT_METRICS if any(m in v for v in agg["models"].values())]
    lines = [
        f"# Repeats: {k} runs on {agg['dataset']} data ({agg['splits']})",
        "",
        f"Test patients per run: {', '.join(map(str, agg['n_test_cases']))}. Mean over runs of each run's "
        "per-patient mean ± SD across runs (ddof 1); not a confidence interval.",
        "",
        "| model | " + " | ".join(f"{m} (mean ± SD)" for m in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for model, v in agg["models"].items():
        lines.append(f"| {model} | " + " | ".join(f"{v[m]['mean']:.3f} ± {v[m]['sd']:.3f}" for m in cols) + " |")
    if agg["paired"]:
        lines += [
            "",
            "| SAM variant | comparison | metric | U-Net − SAM: mean ± SD | runs with p < 0.05 |",
            "|---|---|---|---|---|",
        ]
        for model, e in agg["paired"].items():
            for m in (m for m in REPEAT_METRICS if m in e):
                d = e[m]["mean_difference"]
                p = "Holm p" if e[m]["p"] == "p_holm" else "unadjusted p"
                lines.append(
                    f"| {model} | {e['comparison']} | {m} | {d['mean']:+.3f} ± {d['sd']:.3f} | "
                    f"{e[m]['runs_significant']} of {e[m]['runs_tested']} ({p}) |"
                )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m brainseg_utils.evaluation.repeats")
    p.add_argument("metrics", nargs="+", help="metrics.json of each run (>= 2)")
    p.add_argument("--out", default=None, help="write the table here (default: print it)")
    args = p.parse_args(argv)
    runs = [json.loads(Path(f).read_text()) for f in args.metrics]
    text = repeats_markdown(aggregate(runs, args.metrics))
    if args.out:
        atomic_write_text(args.out, text)
        print(f"wrote {args.out} ({len(runs)} runs)")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
