"""The planner against reality: predict the default run (a fresh calibration), then run it and compare.

    python benchmarks/plan_vs_run.py [--profile quick] [--out outputs/benchmarks/plan_vs_run.json]

Runs `bash run_all.sh` into a fresh temporary OUTPUT_DIR (nothing of an existing run is reused; the
synthetic volumes and the converted encoder are, as on any second run of a machine) and reads each
notebook's wall time from its "=== <notebook> done in N s" line. Writes the prediction, the measurement,
their ratios and whether each notebook is within +-30 % and the total within +-20 % (the goals).
Run it on an otherwise idle machine: the calibration and the run must see the same CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from brainseg_utils.plan.planner import make_plan  # noqa: E402
from brainseg_utils.runtime.io import atomic_write_json  # noqa: E402

DONE = re.compile(r"^=== (\S+) done in (\d+) s", re.M)


def measure(profile: str, output_dir: str | None) -> tuple[dict, float]:
    with tempfile.TemporaryDirectory(prefix="plan-vs-run-") as tmp:
        env = {**os.environ, "OUTPUT_DIR": output_dir or tmp, "PROFILE": profile}
        t = time.monotonic()
        res = subprocess.run(["bash", str(ROOT / "run_all.sh")], cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.monotonic() - t
    if res.returncode != 0:
        raise SystemExit(f"run_all.sh failed (exit {res.returncode}):\n{res.stderr[-3000:]}")
    return {nb: float(s) for nb, s in DONE.findall(res.stdout)}, wall


def compare(predicted: dict, measured: dict) -> dict:
    rows = {}
    for nb, m in measured.items():
        p = predicted[nb]
        rows[nb] = {"predicted_s": p, "measured_s": m, "ratio": round(p / m, 3), "within_30pct": abs(p / m - 1) <= 0.3}
    p_tot, m_tot = sum(predicted[nb] for nb in measured), sum(measured.values())
    rows["total"] = {"predicted_s": round(p_tot, 1), "measured_s": m_tot, "ratio": round(p_tot / m_tot, 3),
                     "within_20pct": abs(p_tot / m_tot - 1) <= 0.2}  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--out", default=str(ROOT / "outputs" / "benchmarks" / "plan_vs_run.json"))
    ap.add_argument("--output-dir", default=None, help="the run's OUTPUT_DIR (default: temporary); new")
    args = ap.parse_args(argv)
    t = time.monotonic()
    plan = make_plan(args.profile, use_cache=False, platform="local")
    plan_seconds = time.monotonic() - t
    if args.output_dir and Path(args.output_dir).exists():
        ap.error(f"--output-dir {args.output_dir} exists: the run must start from nothing")
    measured, wall = measure(args.profile, args.output_dir)
    out = {
        "command": f"python benchmarks/plan_vs_run.py --profile {args.profile}",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "date": time.strftime("%Y-%m-%d"),
        "what": "predicted (planner, fresh calibration) vs measured (fresh bash run_all.sh) seconds per notebook",
        "planner_seconds": round(plan_seconds, 1),
        "run_all_wall_s": round(wall, 1),
        "comparison": compare(plan["notebooks"], measured),
        "plan": plan,
    }
    atomic_write_json(Path(args.out), out)
    for nb, row in out["comparison"].items():
        print(f"{nb:<16} predicted {row['predicted_s']:>8.1f} s  measured {row['measured_s']:>7.1f} s  x{row['ratio']}")
    return out


if __name__ == "__main__":
    main()
