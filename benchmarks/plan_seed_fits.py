"""Does the seed experiment fit a session? PROFILE=auto on all 369 BraTS training cases, by the planner's estimate,
for Kaggle T4, Kaggle T4 x2 and Colab T4, with LiteMedSAM and with ViT-B.

    python benchmarks/plan_seed_fits.py [--out benchmarks/results/plan-seed-369-t4.json]

Each row: the ladder level PROFILE=auto chooses, its cuts, the predicted seconds per notebook, the longest notebook
and the total, the limit (90 % of a 12-h session: per notebook on Kaggle, all notebooks on one Colab VM) and the
margin left. Estimates (H200 measurements scaled to a T4 by published peaks; CPU-side costs measured here).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from brainseg_utils.plan import auto  # noqa: E402
from brainseg_utils.plan.planner import context  # noqa: E402
from brainseg_utils.runtime.io import atomic_write_json  # noqa: E402

SETUPS = [("kaggle", 1), ("kaggle", 2), ("colab", 1)]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "plan-seed-369-t4.json"))
    args = ap.parse_args(argv)
    rows = []
    for backend in ("litemedsam", "vit_b"):
        ctx = context(auto.BASE, "t4", 369, None, True, {"SAM_BACKEND": backend})
        for where, gpus in SETUPS:
            ctx.platform = where
            plan = auto.choose(ctx, gpus, base={"SAM_BACKEND": backend})
            limit = 0.9 * plan["limits"]["session_s"]
            longest = max(plan["notebooks"], key=plan["notebooks"].get)
            used = plan["total_seconds"] if where == "colab" else plan["notebooks"][longest]
            cuts = [f"{c['parameter']} {c['full']}->{c['chosen']}" for c in plan["cuts"]]
            margin = round(1 - used / plan["limits"]["session_s"], 3)
            rows.append({
                "platform": where, "gpus": gpus, "sam_backend": backend, "fits": plan["fits"], "level": plan["level"],
                "overrides": plan["overrides"], "cuts": cuts, "notebooks_s": plan["notebooks"],
                "longest": [longest, plan["notebooks"][longest]], "total_s": plan["total_seconds"], "limit_s": limit,
                "margin_of_session": margin, "disk_bytes": plan["disk_bytes"],
            })  # fmt: skip
    out = {
        "command": "python benchmarks/plan_seed_fits.py",
        "date": time.strftime("%Y-%m-%d"),
        "what": "PROFILE=auto for the seed experiment (369 cases) on T4 sessions: planner ESTIMATES (H200 scaled)",
        "rows": rows,
    }
    atomic_write_json(Path(args.out), out)
    for r in rows:
        cuts = ", ".join(r["cuts"])
        print(f"{r['platform']:<7} T4 x{r['gpus']} {r['sam_backend']:<10} level {r['level']} {cuts:<40} "
              f"longest {r['longest'][0]} {r['longest'][1] / 3600:.1f} h, all {r['total_s'] / 3600:.1f} h, "
              f"margin {r['margin_of_session']:.0%}")  # fmt: skip
    return out


if __name__ == "__main__":
    main()
