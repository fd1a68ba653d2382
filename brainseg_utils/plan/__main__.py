"""python -m brainseg_utils.plan [--profile quick] [--cases N] [--device t4] [--gpus 2] [--platform kaggle] [--json]

Predicts seconds and disk per stage and per notebook for the data found (or --cases N), the profile and the
device, compares them with the platform's limits and says whether the run fits (exit 0) or not (exit 1)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from brainseg_utils.plan import auto
from brainseg_utils.plan.planner import context, make_plan
from brainseg_utils.runtime.io import atomic_write_json, atomic_write_text


def table(plan: dict) -> str:
    label = "estimate from published peaks" if plan["estimate"] else "measured on this machine"
    lines = [
        f"plan: profile {plan['profile']}, {plan['cases']} {plan['dataset']} cases, device {plan['device']} "
        f"x{plan['gpus']} ({label}: {plan['measured_on']}), platform {plan['platform']}",
        f"{'notebook':<17} {'stage':<26} {'seconds':>10} {'disk GB':>8}",
    ]
    for s in plan["stages"]:
        lines.append(f"{s['notebook']:<17} {s['name']:<26} {s['seconds']:>10.1f} {s['disk_bytes'] / 1e9:>8.2f}")
    for nb, sec in plan["notebooks"].items():
        lines.append(f"{nb:<17} {'(notebook)':<26} {sec:>10.1f}")
    lines.append(
        f"total {plan['total_seconds'] / 60:.1f} min, disk {plan['disk_bytes'] / 1e9:.2f} GB: "
        + ("fits" if plan["fits"] else "does NOT fit: " + "; ".join(plan["why_not"]))
    )
    if plan["profile"] == "auto":
        lines.append(f"PROFILE=auto: level {plan['level']} of {len(auto.LADDER) - 1}, the full profile with "
                     + (", ".join(f"{k}={v}" for k, v in plan["overrides"].items())))  # fmt: skip
        lines += [f"  cut {c['parameter']} {c['full']} -> {c['chosen']}: {c['cost']}" for c in plan["cuts"]]
    for s in plan["suggestions"]:
        lines.append(
            f"  would {'fit' if s['fits'] else 'still not fit'} with {s['change']} "
            f"({s['total_seconds'] / 3600:.1f} h in all)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m brainseg_utils.plan", description=__doc__.split("\n\n")[1])
    ap.add_argument(
        "--profile",
        default="quick",
        help="a profile name (quick, full), a YAML path, or auto (the largest setting that fits)",
    )
    ap.add_argument("--cases", type=int, default=None, help="plan for N cases (default: the data found)")
    ap.add_argument("--device", default=None, help="cpu, t4, p100, l4, a100, h100, h200 (default: the present one)")
    ap.add_argument("--gpus", type=int, default=1)
    ap.add_argument("--platform", default=None, help="local, colab, kaggle (default: detected)")
    ap.add_argument("--sam-backend", default=None, help="plan for this SAM backend (e.g. vit_b on Kaggle) instead of "
                    "the profile's")  # fmt: skip
    ap.add_argument("--no-cache", action="store_true", help="measure again instead of reusing the calibration")
    ap.add_argument("--json", action="store_true", help="print the plan as JSON")
    ap.add_argument("--record", default=None, metavar="DIR", help="also write DIR/plan.json (and DIR/auto.yaml)")
    args = ap.parse_args(argv)
    if args.cases is not None and args.cases < 3:
        ap.error(f"--cases must be >= 3 (a train/val/test split), got {args.cases}")
    if args.gpus < 1:
        ap.error(f"--gpus must be >= 1, got {args.gpus}")
    backend = {"SAM_BACKEND": args.sam_backend} if args.sam_backend else {}
    try:
        if args.profile == "auto":
            ctx = context(auto.BASE, args.device, args.cases, args.platform, not args.no_cache, backend)
            plan = auto.choose(ctx, args.gpus, base=backend)
        else:
            plan = make_plan(args.profile, args.device, args.cases, args.gpus, args.platform, not args.no_cache,
                             overrides=backend)  # fmt: skip
    except ValueError as exc:
        print(f"plan: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(plan, indent=1) if args.json else table(plan))
    if args.record:
        record(plan, Path(args.record))
    return 0 if plan["fits"] else 1


def record(plan: dict, folder: Path) -> None:
    """``plan.json`` (read back by the notebooks' plan cell and by evaluation, which reports the cuts) and, for
    ``auto``, ``auto.yaml``: the chosen overrides as a profile on top of the full one."""
    atomic_write_json(folder / "plan.json", plan)
    if plan["profile"] == "auto":
        import yaml

        head = [
            f"# PROFILE=auto, written by python -m brainseg_utils.plan: level {plan['level']} of the planner's ladder,",
            f"# the largest setting predicted to fit a {plan['platform']} session on {plan['device']} x{plan['gpus']}"
            + (" (estimate)" if plan["estimate"] else ""),
            *[f"# cut {c['parameter']} {c['full']} -> {c['chosen']}: {c['cost']}" for c in plan["cuts"]],
        ]
        body = yaml.safe_dump(plan["overrides"], sort_keys=False)
        atomic_write_text(folder / "auto.yaml", "\n".join(head) + "\n" + body)


if __name__ == "__main__":
    sys.exit(main())
