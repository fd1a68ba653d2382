"""Render the README results table from ``outputs/results/metrics.json``.

    python -m brainseg_utils.report [--metrics outputs/results/metrics.json] [--readme README.md]

Replaces the text between ``<!-- results:start -->`` and ``<!-- results:end -->`` in the README
with a table labelled with the dataset it was measured on, and the command that reproduces it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .io import atomic_write_text

START, END = "<!-- results:start -->", "<!-- results:end -->"


def results_table(metrics: dict, command: str = "bash run_all.sh") -> str:
    ds = metrics["dataset"]
    synthetic = ds["name"] == "synthetic"
    head = ("**Synthetic data, not BraTS.** Measured on the generated stand-in dataset; these numbers say "
            "nothing about performance on real scans." if synthetic else
            "**BraTS 2020** training data, held-out patient-level test split.")
    lines = [head, "",
             f"{ds['n_test_cases']} test patients, split sha256 `{ds['split_sha256'][:16]}…`. Reproduce with "
             f"`{command}`; full tables in `outputs/results/results.md`.", "",
             "| model | prompt | Dice per patient (95% CI) | HD95 mm | Dice, tumour slices | FP rate, tumour-free slices | latency ms |",
             "|---|---|---|---|---|---|---|"]
    for name in sorted(metrics["models"], key=lambda n: (n != "unet", n)):  # the U-Net first
        m = metrics["models"][name]
        d = m["per_case"]["dice"]
        ci = d.get("ci95") or [None, None]
        ci_txt = f" ({ci[0]:.3f}–{ci[1]:.3f})" if None not in ci else ""
        fp = m["false_positive_rate"]["value"]
        lines.append(f"| `{name}` | {m['prompt']} | {d['mean']:.3f}{ci_txt} | {m['per_case']['hd95']['mean']:.1f} | "
                     f"{m['per_slice_tumour']['dice']['mean']:.3f} | {'n/a' if fp is None else f'{fp:.3f}'} | "
                     f"{m['latency_ms']['median']:.0f} ({m['latency_ms']['device']}) |")
    lines += ["", "`box` gives SAM the ground-truth box: an oracle upper bound, not a fair comparison. "
              "`unet_box` takes the box from the U-Net's prediction; `none` has no prompt. Dice is 1 when "
              "prediction and truth are both empty and 0 when exactly one is; HD95 is 373.13 mm when exactly one "
              "is empty (all conventions in `metrics.json`)."]
    return "\n".join(lines)


def update_readme(readme: str | Path, metrics: dict, command: str = "bash run_all.sh") -> None:
    readme = Path(readme)
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{readme} has no {START} ... {END} markers to replace")
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    atomic_write_text(readme, f"{before}{START}\n{results_table(metrics, command)}\n{END}{after}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m brainseg_utils.report")
    p.add_argument("--metrics", default="outputs/results/metrics.json")
    p.add_argument("--readme", default="README.md")
    p.add_argument("--command", default="bash run_all.sh", help="the command that reproduces the numbers")
    args = p.parse_args(argv)
    metrics = json.loads(Path(args.metrics).read_text())
    update_readme(args.readme, metrics, args.command)
    print(f"updated the results table in {args.readme} from {args.metrics} ({metrics['dataset']['name']} data)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
