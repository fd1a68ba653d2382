"""Every model of a finished run on independently built real-anatomy sets ("SAM the same way on real anatomy").

    python benchmarks/bench_run_transfer.py --run OUTPUT_DIR --set NAME=PATH [--set NAME=PATH ...]
                                            [--cases N] [--sam-cases N] [--out JSON] [--device auto]

A *run* is what ``bash run_all.sh`` wrote into OUTPUT_DIR. Its models are loaded as notebook 04 loads them
(``inference.load_models``: the U-Net, every fine-tuned SAM decoder and, beside the box decoder, the pretrained
one as shipped), at the run's image size and modalities (``dataset.json``'s recorded parameters), and the U-Net's
3-D clean-up uses the threshold stored in ``unet/cleanup.json`` (chosen on the run's validation cases; never
re-chosen here, least of all on benchmark data). Model names are metrics.json's: ``unet``, ``unet_clean``,
``sam_<b>_none``, ``sam_<b>_box`` (oracle box), ``sam_<b>_unet_box`` (the cascade), ``sam_<b>_box_zeroshot``.

Each set is a folder of BraTS 2020-layout cases (e.g. ``benchmarks/realanatomy.py --out DIR``): real brain
anatomy with implanted, synthetic tumours, NOT BraTS. Per set, notebook 04's per-patient protocol
(``inference.predict_case``: every brain slice, logits mapped once to the native grid, 3-D whole-tumour Dice and
HD95 with the package's ``metrics``) on the first ``--cases`` cases (sorted by id; 0: all) for the U-Net models
and on the first ``--sam-cases`` of those for the SAM models too (the frozen encoder costs ~0.65 s per slice on
a 2-core CPU): the other cases go through a copy of the run's ``Models`` without SAM decoders.

Writes JSON (``--out``, atomically, after every set): the command, the run (folder, settings, code version,
clean-up), per set per model the per-case Dice / HD95 with mean, min, max and n, seconds per case, and per model
its WORST set mean (judge by the worst construction). Prints a models x sets table and the issue's goals each
model / set misses: U-Net Dice >= 0.60 on every set; fine-tuned box >= zero-shot box on every set.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from brainseg_utils.data.brats import discover_cases
from brainseg_utils.evaluation import metrics as M
from brainseg_utils.evaluation.cascade import Cleanup, stored_cleanup
from brainseg_utils.evaluation.inference import Models, load_models, predict_case
from brainseg_utils.evaluation.stopwatch import Stages
from brainseg_utils.runtime.checkpoints import resolve_device
from brainseg_utils.runtime.env import code_version
from brainseg_utils.runtime.io import atomic_write_json
from brainseg_utils.runtime.paths import RunDir
from brainseg_utils.runtime.progress import tqdm
from brainseg_utils.workflow.prepare import cache_geometry, run_split

SET_LABEL = "real anatomy with synthetic tumours, not BraTS"
UNET_GOAL = 0.60  # issue 27: the U-Net's mean Dice on every real-anatomy set
UNET_MODELS = ("unet", "unet_clean")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
MADE_BY = {  # run file -> the notebook that writes it (all of them: `bash run_all.sh`)
    "data/dataset.json": "notebook 01",
    "data/splits.json": "notebook 01",
    "unet/best.pt": "notebook 02",
    "unet/cleanup.json": "notebooks 03 / 04 (chosen on the validation cases)",
    "results/metrics.json": "notebook 04",
}


# ----------------------------------------------------------------------------- arguments
def parse_set(text: str) -> tuple[str, Path]:
    """``NAME=PATH`` -> (name, path); a clear ``ArgumentTypeError`` for any other form."""
    name, sep, path = text.partition("=")
    name, path = name.strip(), path.strip()
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--set wants NAME=PATH (e.g. mni=/tmp/realanatomy), got {text!r}")
    if not NAME_RE.match(name):
        raise argparse.ArgumentTypeError(
            f"--set name {name!r}: letters, digits, '_', '.', '-' only, starting with a letter or digit"
        )
    return name, Path(path).expanduser()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run", required=True, help="a finished run's OUTPUT_DIR (what `bash run_all.sh` wrote)")
    p.add_argument("--set", dest="sets", action="append", type=parse_set, required=True, metavar="NAME=PATH",
                   help="a folder of BraTS-layout cases; repeat for several sets")  # fmt: skip
    p.add_argument("--cases", type=int, default=0, help="first N cases per set for the U-Net models (0: all)")
    p.add_argument("--sam-cases", type=int, default=4, help="first N of those also for the SAM models (default 4)")
    p.add_argument("--out", default="outputs/benchmarks/run_transfer.json")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--sam-checkpoint", default="", help="SAM_CHECKPOINT as in notebook 04 (empty: searched)")
    p.add_argument("--no-hd95", action="store_true", help="Dice only")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    names = [n for n, _ in args.sets]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        p.error(f"--set names must differ; repeated: {', '.join(dup)}")
    if args.cases < 0 or args.sam_cases < 0:
        p.error("--cases and --sam-cases must be >= 0")
    return args


# ----------------------------------------------------------------------------- the run
def checkpoint_of(model: str) -> str:
    """The run file model ``model`` (a metrics.json name) is loaded from."""
    if model in UNET_MODELS:
        return "unet/best.pt"
    variant = re.sub(r"_(unet_box|box_zeroshot)$", "_box", model)
    return f"sam/{variant}/best.pt"


def _present(root: Path, rel: str) -> bool:
    path = root / rel
    return path.is_file() or (path.suffix == ".pt" and path.with_suffix(".safetensors").is_file())  # slim runs


def check_run(root: Path) -> dict:
    """The run's metrics.json, after checking every file this benchmark reads; a missing one is named with the
    notebook that writes it (nothing is created in ``root``)."""
    if not root.is_dir():
        raise FileNotFoundError(f"run folder {root} does not exist: `OUTPUT_DIR={root} bash run_all.sh` makes one")
    for rel, who in MADE_BY.items():
        if not _present(root, rel):
            raise FileNotFoundError(
                f"{root / rel} is missing ({who} writes it): not a finished run; "
                f"`OUTPUT_DIR={root} bash run_all.sh` makes every file of a run"
            )
    metrics = json.loads((root / "results/metrics.json").read_text())
    for model in metrics.get("models", {}):
        rel = checkpoint_of(model)
        if not _present(root, rel):
            raise FileNotFoundError(
                f"{root / rel} is missing: metrics.json reports {model}, whose checkpoint notebook "
                f"{'02' if model in UNET_MODELS else '03'} writes; `OUTPUT_DIR={root} bash run_all.sh` makes it"
            )
    return metrics


def run_cleanup(run: RunDir, split_sha256: str) -> Cleanup:
    """The clean-up threshold the run chose on its validation cases (``unet/cleanup.json``), checked to belong to
    the run's U-Net checkpoint and split; never chosen again here."""
    found = stored_cleanup(run, run.unet_best, split_sha256)
    if found is None:
        raise ValueError(
            f"{run.root / 'unet' / 'cleanup.json'} was chosen for another U-Net checkpoint or split (or is missing): "
            "re-run notebook 04 (`bash run_all.sh`) so the run's threshold is stored"
        )
    return found


def load_run(root: Path, device, sam_checkpoint: str = "") -> tuple[Models, dict]:
    """(models as notebook 04 loads them, with the run's stored clean-up; a record of the run)."""
    metrics = check_run(root)
    run = RunDir(root)
    split, info = run_split(run)
    img_size, modalities = cache_geometry(info)
    models = load_models(run, split["sha256"], device, sam_checkpoint)
    models.cleanup = run_cleanup(run, split["sha256"])
    models.data["unet_clean"] = {**models.data.get("unet", {}), "note": "the U-Net's model; 3-D clean-up added"}
    lacking = sorted(set(metrics.get("models", {})) - set(models.names()))
    if lacking:
        raise FileNotFoundError(f"{root}: metrics.json reports {lacking}, but their checkpoints did not load")
    reported = metrics.get("cleanup") or {}
    record = {
        "dir": str(root.resolve()),
        "dataset": info.get("name"),
        "split_sha256": split["sha256"],
        "img_size": img_size,
        "modalities": list(modalities),
        "settings": metrics.get("settings"),
        "provenance": metrics.get("provenance"),  # the run's code version and command
        "cleanup": models.cleanup.record(),
        "cleanup_matches_metrics_json": reported.get("min_volume_mm3") == models.cleanup.min_volume_mm3,
        "models": models.names(),
        "sam_backends": {b: getattr(m, "provenance", "") for b, m in models.backends.items()},
        "test_dice_mean": {m: s.get("per_case", {}).get("dice", {}).get("mean") for m, s in metrics["models"].items()},
    }
    return models, record


# ----------------------------------------------------------------------------- one set
def set_cases(path: Path, n: int) -> list:
    """The first ``n`` (0: all) labelled cases of a set, sorted by id; an error when it holds none."""
    if not path.is_dir():
        raise FileNotFoundError(f"set folder {path} does not exist")
    cases = [c for c in discover_cases(path) if c.seg is not None]
    if not cases:
        raise FileNotFoundError(
            f"{path} holds no labelled BraTS cases (BraTS20_Training_NNN/ folders with *_seg.nii[.gz]); "
            "build a set with e.g. `python benchmarks/realanatomy.py --out DIR`"
        )
    return cases[:n] if n else cases


def case_scores(result: dict, hd95: bool) -> dict[str, dict]:
    """{model: {"dice", "hd95"?}} of one ``predict_case`` result (3-D, whole tumour, native spacing)."""
    gt, out = result["gt"], {}
    for name, pred in result["pred"].items():
        out[name] = {"dice": M.dice(pred, gt)}
        if hd95:
            out[name]["hd95"] = M.hd95(pred, gt, result["spacing"])
    return out


def evaluate_set(models: Models, cases: list, sam_cases: int, img_size, modalities, device, hd95=True, progress=True):
    """{"per_case": {case_id: {model: scores}}, "timing": [per case {"case_id", "sam", "seconds", "stages"}]}:
    every model on the first ``sam_cases`` cases, the U-Net models (a ``Models`` copy without SAM) on the rest."""
    unet_only = dataclasses.replace(models, sam={})
    per_case, timing = {}, []
    for i, case in enumerate(tqdm(cases, desc="cases", disable=not progress)):
        with_sam = i < sam_cases
        stages, t0 = Stages(), time.perf_counter()
        res = predict_case(models if with_sam else unet_only, case, img_size, modalities, device, stages=stages)
        seconds, t1 = time.perf_counter() - t0, time.perf_counter()
        per_case[case.case_id] = case_scores(res, hd95)
        stage_s = {k: round(v["seconds"], 3) for k, v in stages.record.items()}
        score_s = round(time.perf_counter() - t1, 3)
        timing.append({"case_id": case.case_id, "sam": with_sam, "slices": len(res["brain_z"]),
                       "seconds": round(seconds, 3), "stages": stage_s, "scoring": score_s})  # fmt: skip
    return {"per_case": per_case, "timing": timing}


def _stats(values: dict[str, float]) -> dict:
    v = np.asarray(list(values.values()), float)
    if not len(v):
        return {"mean": None, "min": None, "max": None, "n": 0}
    return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max()), "n": int(len(v))}


def summarise_set(per_case: dict[str, dict], names: list[str]) -> dict:
    """{model: {"dice": {case: v}, "mean", "min", "max", "n", "hd95": {case: v}, "hd95_mean"}} in ``names``' order."""
    out = {}
    for name in names:
        dice = {cid: s[name]["dice"] for cid, s in per_case.items() if name in s}
        row = {"dice": dice, **_stats(dice)}
        hd = {cid: s[name]["hd95"] for cid, s in per_case.items() if "hd95" in s.get(name, {})}
        if hd:
            row.update(hd95=hd, hd95_mean=float(np.mean(list(hd.values()))))
        out[name] = row
    return out


def timing_summary(timing: list[dict]) -> dict:
    """Mean seconds per case with and without the SAM models, and per stage (s per case where it ran)."""

    def mean(xs):
        return round(float(np.mean(xs)), 3) if xs else None

    stages = sorted({k for t in timing for k in t["stages"]})
    return {
        "per_case_unet_models_only": mean([t["seconds"] for t in timing if not t["sam"]]),
        "per_case_all_models": mean([t["seconds"] for t in timing if t["sam"]]),
        "stages_per_case": {k: mean([t["stages"][k] for t in timing if k in t["stages"]]) for k in stages},
        "scoring_per_case": mean([t["scoring"] for t in timing]),
        "brain_slices_per_case": mean([t["slices"] for t in timing]),
        "note": "wall seconds of predict_case (reading the case included; scoring apart); U-Net models = the stages "
        "unet + clean; SAM models = encode + their own stages",
    }


# ----------------------------------------------------------------------------- across sets
def worst_sets(sets: dict[str, dict]) -> dict[str, dict]:
    """{model: {"set", "mean", "n"}}: each model's lowest set mean (sets where it was not run are skipped)."""
    out = {}
    for name, s in sets.items():
        for model, row in s["models"].items():
            if row["mean"] is not None and (model not in out or row["mean"] < out[model]["mean"]):
                out[model] = {"set": name, "mean": row["mean"], "n": row["n"]}
    return out


def goal_misses(sets: dict[str, dict], unet_goal: float = UNET_GOAL) -> list[str]:
    """The issue's goals each model / set misses: ``unet`` mean Dice >= ``unet_goal``; every fine-tuned oracle box
    decoder's mean >= its zero-shot (pretrained) one's, both on the same cases."""
    misses = []
    for name, s in sets.items():
        rows = s["models"]
        unet = rows.get("unet", {}).get("mean")
        if unet is not None and unet < unet_goal:
            misses.append(f"unet on {name}: mean Dice {unet:.3f} < {unet_goal:.2f}")
        for zs, row in rows.items():
            fine = rows.get(zs.removesuffix("_zeroshot")) if zs.endswith("_box_zeroshot") else None
            if fine and fine["mean"] is not None and row["mean"] is not None and fine["mean"] < row["mean"]:
                misses.append(
                    f"{zs.removesuffix('_zeroshot')} on {name}: fine-tuned box {fine['mean']:.3f} < "
                    f"zero-shot box {row['mean']:.3f} (n = {row['n']})"
                )
    return misses


def unjudged(sets: dict[str, dict]) -> list[str]:
    """The goals no number here can judge: a set where ``unet`` or a box pair (fine-tuned, zero-shot) did not run."""
    out = []
    for name, s in sets.items():
        rows = s["models"]
        if rows.get("unet", {}).get("mean") is None:
            out.append(f"unet on {name}: not evaluated")
        for zs, row in rows.items():
            fine = rows.get(zs.removesuffix("_zeroshot")) if zs.endswith("_box_zeroshot") else None
            if fine is not None and (fine["mean"] is None or row["mean"] is None):
                out.append(f"{zs.removesuffix('_zeroshot')} vs zero-shot on {name}: not evaluated (--sam-cases 0?)")
    return out


def table(sets: dict[str, dict], worst: dict[str, dict]) -> str:
    """Models x sets: mean Dice (n), and each model's worst set mean."""
    models = list(dict.fromkeys(m for s in sets.values() for m in s["models"]))
    width = max([len(m) for m in models] + [5])
    cols = [*sets, "worst"]
    head = f"{'model':<{width}}  " + "  ".join(f"{c:>14}" for c in cols)
    lines = [head, "-" * len(head)]
    for m in models:
        cells = []
        for s in sets.values():
            row = s["models"].get(m)
            cells.append("n/a" if not row or row["mean"] is None else f"{row['mean']:.3f} (n={row['n']})")
        w = worst.get(m)
        cells.append("n/a" if w is None else f"{w['mean']:.3f} {w['set']}"[:14])
        lines.append(f"{m:<{width}}  " + "  ".join(f"{c:>14}" for c in cells))
    return "\n".join(lines)


def _set_record(path: Path, cases: list, sam_n: int, done: dict, names: list[str]) -> dict:
    models, sam_ids = summarise_set(done["per_case"], names), [c.case_id for c in cases[:sam_n]]
    paired = {m: _stats({c: models[m]["dice"][c] for c in sam_ids})["mean"] for m in UNET_MODELS if m in models}
    return {
        "path": str(path.resolve()),
        "label": SET_LABEL,
        "cases": [c.case_id for c in cases],
        "sam_cases": sam_ids,
        "models": models,
        "unet_mean_on_sam_cases": paired,  # the U-Net models on the SAM models' cases: a paired comparison
        "seconds": timing_summary(done["timing"]),
    }


def report(args, run_record: dict, sets: dict, complete: bool) -> dict:
    """The JSON this benchmark writes (``complete`` False while sets are still running)."""
    worst = worst_sets(sets)
    misses, open_goals = goal_misses(sets), unjudged(sets)
    return {
        "benchmark": "every model of a finished run on real-anatomy sets (issue 27, item 4)",
        "command": args.command,
        "code_version": code_version(),
        "complete": complete,
        "label": SET_LABEL,
        "run": run_record,
        "protocol": {
            "per_case": "notebook 04's: inference.predict_case (every brain slice, logits mapped once to the native "
            "grid, > 0), 3-D whole-tumour Dice (metrics.dice; 1 if both empty) and HD95 (metrics.hd95, mm)",
            "cases": args.cases or "all",
            "sam_cases": args.sam_cases,
            "cases_note": "first cases of each set by id; SAM models on the first sam_cases of them",
            "cleanup": "unet/cleanup.json's threshold, chosen on the run's validation cases (not re-chosen here)",
        },
        "goals": {"unet_min_dice": UNET_GOAL, "box": "fine-tuned oracle box >= zero-shot oracle box on every set"},
        "sets": sets,
        "worst": worst,
        "misses": misses,
        "unjudged": open_goals,
        "goals_met": complete and not misses and not open_goals,
    }


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    args.command = shlex.join(["python", "benchmarks/bench_run_transfer.py", *argv])
    device = resolve_device(args.device)
    models, run_record = load_run(Path(args.run).expanduser(), device, args.sam_checkpoint)
    img_size, modalities = run_record["img_size"], tuple(run_record["modalities"])
    chosen = {name: set_cases(path, args.cases) for name, path in args.sets}  # every set checked before any work
    print(f"run {run_record['dir']}: {', '.join(models.names())}; {img_size} px, {', '.join(modalities)}")
    sets, out = {}, Path(args.out)
    for name, path in args.sets:
        cases = chosen[name]
        sam_n = min(args.sam_cases, len(cases))
        print(f"set {name} ({SET_LABEL}): {len(cases)} cases, SAM models on {sam_n}")
        done = evaluate_set(models, cases, sam_n, img_size, modalities, device, not args.no_hd95, not args.no_progress)
        sets[name] = _set_record(path, cases, sam_n, done, models.names())
        atomic_write_json(out, report(args, run_record, sets, complete=False))  # a partial result survives
    result = report(args, run_record, sets, complete=True)
    atomic_write_json(out, result)
    print(table(sets, result["worst"]))
    print("\nmisses of the issue's goals:" if result["misses"] else "\nno goal missed")
    for line in result["misses"]:
        print(f"  - {line}")
    for line in result["unjudged"]:
        print(f"  ? {line}")
    if result["goals_met"]:
        print("every goal met on every set")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
