"""Render the README results table from ``outputs/results/metrics.json``.

    python -m brainseg_utils.evaluation.report [--metrics outputs/results/metrics.json] [--readme README.md]

Replaces the text between ``<!-- results:start -->`` and ``<!-- results:end -->`` in the README
with a table labelled with the dataset it was measured on, and the command that reproduces it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from brainseg_utils.evaluation.results_table import CLEAN, LATENCY_NA, cleanup_convention, fmt_ci, fmt_data, fmt_fp
from brainseg_utils.evaluation.statistics import MIN_PATIENTS_FOR_STATS, is_oracle
from brainseg_utils.models.sam.pretraining import MARK, PRIMARY_BACKEND, pretraining
from brainseg_utils.runtime.io import atomic_write_text

START, END = "<!-- results:start -->", "<!-- results:end -->"


def results_table(metrics: dict, command: str | None = None) -> str:
    """The README block: dataset label, n and what it allows, one row per fully automatic model, the oracle-box rows
    in a second table (upper bounds, not comparisons), conventions, provenance.

    ``command`` overrides the command recorded in ``metrics["provenance"]``.
    """
    ds = metrics["dataset"]
    n = ds["n_test_cases"]
    prov = metrics.get("provenance", {})
    command = command or prov.get("command") or "bash run_all.sh"
    commit = prov.get("commit")
    made = f"`{command}` at commit `{commit[:12]}`" if commit else f"`{command}`"
    if commit and prov.get("dirty"):
        made += " (with uncommitted changes)"
    synthetic = ds["name"] == "synthetic"
    head = (
        "**Synthetic data, not BraTS.** Measured on the generated stand-in dataset; these numbers say "
        "nothing about performance on real scans."
        if synthetic
        else "**BraTS 2020** training data, held-out patient-level test split."
    )
    stats = (
        f"With {n} test patients, confidence intervals and p-values are not reported (they need at least "
        f"{MIN_PATIENTS_FOR_STATS}); the smallest p a paired Wilcoxon test could reach is {2.0 ** (1 - n):.3g}."
        if n < MIN_PATIENTS_FOR_STATS
        else "Dice per patient: mean (bootstrap 95% CI over patients)."
    )
    lines = [
        head,
        "",
        f"{n} test patients, split sha256 `{ds['split_sha256'][:16]}…`. Produced by {made}; "
        f"full tables in `outputs/results/results.md`. {stats}",
        "",
        *README_HEAD,
    ]
    backend = {n: m.get("backend") for n, m in metrics["models"].items()}
    seen = {n for n, b in backend.items() if b is not None and pretraining(b).may_have_seen_test}
    # the U-Net first, then unet_clean, then ViT-B (the primary SAM comparison), then the others
    order = sorted(
        metrics["models"], key=lambda n: (n != "unet", backend[n] is not None, backend[n] != PRIMARY_BACKEND, n)
    )
    lines += [_row(name, metrics, n, name in seen) for name in order if not is_oracle(name)]
    oracle = [name for name in order if is_oracle(name)]
    if oracle:
        lines += ["", "**Upper bounds (oracle ground-truth box; not a comparison)**", "", *README_HEAD]
        lines += [_row(name, metrics, n, name in seen) for name in oracle]
    lines += [
        "",
        "`box` gives SAM the ground-truth box: an oracle upper bound (second table; no false positive is "
        "possible with it: n/a). `unet_box` is the automatic cascade (one box per component of the cleaned U-Net "
        "mask); `none` has no prompt. Conventions (empty masks, HD95, latency, the cascade): `metrics.json` and "
        "[evaluation](docs/evaluation.md).",
    ]
    if CLEAN in metrics["models"]:
        lines += ["", f"`{CLEAN}` is {cleanup_convention(metrics.get('cleanup'))}."]
    if seen:
        lines += [
            "",
            f"{MARK} Pretrained on BraTS 2021/2023 (which hold every BraTS 2020 case): on BraTS, may have seen the "
            "test patients ([pretraining](docs/models-and-training.md#pretraining-and-contamination)). ViT-B rows "
            "(natural images only) are the primary SAM comparison.",
        ]
    return "\n".join(lines)


README_HEAD = (
    "| model | prompt | trained on (train / val slices, cases) | Dice per patient | HD95 mm | "
    "Dice, tumour slices | FP rate, tumour-free slices | latency ms, median (p90) |",
    "|---|---|---|---|---|---|---|---|",
)


def _row(name: str, metrics: dict, n: int, marked: bool) -> str:
    """One README row; ``marked``: the backend was pretrained on BraTS (the † footnote)."""
    m = metrics["models"][name]
    lat = m.get("latency_ms")
    if not lat or lat.get("median") is None:
        latency = LATENCY_NA.get(name, "n/a")
    else:
        p90 = f" ({lat['p90']:.0f})" if lat.get("p90") is not None else ""
        latency = f"{lat['median']:.0f}{p90} ({lat['device']}{', ' + lat['runtime'] if lat.get('runtime') else ''})"
    return (
        f"| `{name}`{' ' + MARK if marked else ''} | {m['prompt']} | {fmt_data(m.get('data'))} | "
        f"{fmt_ci(m['per_case']['dice'], m.get('n_cases', n))} | {m['per_case']['hd95']['mean']:.1f} | "
        f"{m['per_slice_tumour']['dice']['mean']:.3f} | {fmt_fp(m['false_positive_rate'])} | {latency} |"
    )


def update_readme(readme: str | Path, metrics: dict, command: str | None = None) -> None:
    readme = Path(readme)
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{readme} has no {START} ... {END} markers to replace")
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    atomic_write_text(readme, f"{before}{START}\n{results_table(metrics, command)}\n{END}{after}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m brainseg_utils.evaluation.report")
    p.add_argument("--metrics", default="outputs/results/metrics.json")
    p.add_argument("--readme", default="README.md")
    p.add_argument(
        "--command",
        default=None,
        help="the command that produced the numbers (default: the one recorded in metrics.json)",
    )
    args = p.parse_args(argv)
    metrics = json.loads(Path(args.metrics).read_text())
    update_readme(args.readme, metrics, args.command)
    print(f"updated the results table in {args.readme} from {args.metrics} ({metrics['dataset']['name']} data)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
