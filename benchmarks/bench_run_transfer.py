"""Every model of a finished run, on real-anatomy sets: does what the default run trained transfer?

    python benchmarks/bench_run_transfer.py --run OUTPUT_DIR --set NAME=PATH [--set NAME=PATH ...]
                                            [--cases 12] [--sam-cases 3] [--out JSON]

Loads the run's models exactly as notebook 04 does (``evaluation.inference.load_models``: the U-Net, the
fine-tuned SAM decoders, the pretrained "zero-shot" box decoder) with the U-Net clean-up threshold the run chose
on its validation cases (``unet/cleanup.json``; never re-chosen on benchmark data), and predicts every brain slice
of each case with ``predict_case`` (notebook 04's protocol: the run's image size and modalities, back to the native
grid, per-patient 3-D whole-tumour Dice). SAM's frozen encoder costs ~0.65 s per slice on a 2-core CPU, so SAM
models run on the first ``--sam-cases`` cases of each set and the U-Net models on the first ``--cases``.

Sets are folders in the BraTS 2020 layout, e.g. ``benchmarks/realanatomy.py`` / ``realanatomy_flair.py`` outputs
(real anatomy with synthetic tumours, not BraTS). Writes JSON: per set and model the per-case Dice, mean, min,
max, n; per model the worst set (the goal is judged there); and the issue's checks (U-Net >= 0.60 on every set;
fine-tuned box >= zero-shot box on every set).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from brainseg_utils.data.brats import discover_cases
from brainseg_utils.evaluation import metrics as M
from brainseg_utils.evaluation.cascade import Cleanup
from brainseg_utils.evaluation.inference import load_models, predict_case
from brainseg_utils.runtime.io import atomic_write_json
from brainseg_utils.runtime.paths import RunDir
from brainseg_utils.runtime.progress import tqdm

UNET_GOAL = 0.60


def parse_set(spec: str) -> tuple[str, Path]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--set expects NAME=PATH, got {spec!r}")
    return name, Path(path)


def load_run(out_dir: Path, device="cpu"):
    """(models with the stored clean-up, img_size, modalities) of a finished run."""
    run = RunDir(out_dir)
    needed = {"data/splits.json": run.splits, "data/slices/manifest.json": run.slices / "manifest.json"}
    needed["unet/cleanup.json"] = run.unet / "cleanup.json"
    for rel, path in needed.items():
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: {out_dir} is not a finished run ({rel}); `bash run_all.sh` makes one"
            )
    split = json.loads(run.splits.read_text())
    models = load_models(run, split["sha256"], device)
    models.cleanup = Cleanup(**json.loads((run.unet / "cleanup.json").read_text()))
    cfg = json.loads((run.slices / "manifest.json").read_text())["config"]
    return models, int(cfg["img_size"]), tuple(cfg["modalities"])


def _summary(per_case: dict) -> dict:
    v = list(per_case.values())
    stats = {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v))}
    return {
        "per_case": {k: round(x, 4) for k, x in per_case.items()},
        **{k: round(x, 4) for k, x in stats.items()},
        "n": len(v),
    }


def evaluate_set(models, root: Path, img_size: int, modalities, cases: int, sam_cases: int, device="cpu") -> dict:
    """{model: summary} on one set; SAM models on the first ``sam_cases`` cases only."""
    found = [c for c in discover_cases(root) if c.seg is not None]
    if not found:
        raise FileNotFoundError(f"{root}: no labelled BraTS cases (BraTS20_Training_*/..._seg.nii)")
    unet_only = dataclasses.replace(models, sam={}, backends={})
    per_model: dict[str, dict] = {}
    for i, case in enumerate(tqdm(found[:cases], desc=f"cases of {root.name}")):
        res = predict_case(models if i < sam_cases else unet_only, case, img_size, modalities, device)
        for name, pred in res["pred"].items():
            per_model.setdefault(name, {})[case.case_id] = float(M.dice(pred, res["gt"]))
    return {name: _summary(pc) for name, pc in per_model.items()}


def checks(results: dict) -> dict:
    """The issue's goals, judged on the worst set: U-Net >= 0.60; fine-tuned box >= zero-shot box (same cases)."""
    worst = {}
    for m in {m for r in results.values() for m in r}:
        means = {s: r[m]["mean"] for s, r in results.items() if m in r}
        s = min(means, key=means.get)
        worst[m] = {"set": s, "mean": means[s]}
    out = {"worst_set": worst, "unet_goal": UNET_GOAL}
    out["unet_meets_goal_on_every_set"] = all(r["unet"]["mean"] >= UNET_GOAL for r in results.values())
    box = {}
    for s, r in results.items():
        tuned = next((m for m in r if m.endswith("_box") and not m.endswith("unet_box")), None)
        if tuned and tuned + "_zeroshot" in r:
            box[s] = r[tuned]["mean"] - r[tuned + "_zeroshot"]["mean"]
    out["fine_tuned_minus_zero_shot_box"] = {s: round(d, 4) for s, d in box.items()}
    out["fine_tuned_box_not_worse_on_every_set"] = bool(box) and all(d >= 0 for d in box.values())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, type=Path, help="a finished run's OUTPUT_DIR")
    p.add_argument("--set", dest="sets", action="append", type=parse_set, required=True, help="NAME=PATH")
    p.add_argument("--cases", type=int, default=12)
    p.add_argument("--sam-cases", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("outputs/benchmarks/run-transfer.json"))
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    models, img_size, modalities = load_run(a.run)
    results = {n: evaluate_set(models, root, img_size, modalities, a.cases, a.sam_cases) for n, root in a.sets}
    out = {
        "what": "every model of a finished run on real-anatomy sets (real anatomy, SYNTHETIC tumours; not BraTS)",
        "protocol": "evaluation.inference.predict_case as notebook 04; per-patient 3-D whole-tumour Dice; the run's "
        "clean-up threshold (chosen on its validation cases)",
        "run": str(a.run),
        "run_settings": json.loads(RunDir(a.run).metrics.read_text()).get("settings")
        if RunDir(a.run).metrics.exists()
        else None,
        "sets": {n: str(root) for n, root in a.sets},
        "cases": a.cases,
        "sam_cases": a.sam_cases,
        "results": results,
        **checks(results),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    atomic_write_json(a.out, out)
    names = sorted({m for r in results.values() for m in r})
    print(f"{'model':34s}" + "".join(f"{n:>16s}" for n in results))
    for m in names:
        print(
            f"{m:34s}"
            + "".join(
                f"{results[n][m]['mean']:>10.3f} (n={results[n][m]['n']:>2d})" if m in results[n] else f"{'-':>16s}"
                for n in results
            )
        )
    print(
        f"U-Net >= {UNET_GOAL} on every set: {out['unet_meets_goal_on_every_set']}; fine-tuned box >= zero-shot "
        f"on every set: {out['fine_tuned_box_not_worse_on_every_set']} {out['fine_tuned_minus_zero_shot_box']}; "
        f"wrote {a.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
