"""Rehearsal at BraTS scale: the full profile's data steps on N BraTS-sized synthetic cases and a short stretch
of every training and of evaluation at full sizes, next to the planner's prediction for the same N.

    python benchmarks/rehearsal.py --cases N [--profile full] [--workdir DIR] [--keep]
                                   [--out outputs/benchmarks/rehearsal.json]

Stages and how each is measured (all through the product's own code):
  * generate (N cases, 240 x 240 x 155, ``synthetic.generate_dataset``), audit (``validate.validate_case`` on each)
    and the slice cache (``slices.build_cache`` at the profile's settings): whole, seconds and bytes on disk;
  * U-Net epochs: one epoch of ``engine.fit`` on 3 batches of the real slice cache (first epoch dropped: a second
    one is timed), seconds per training and per validation image, times the profile's epochs and slices;
  * embedding cache: the profile's SAM backend encoding real slices in its batch, written to a float16 memmap;
  * decoder epochs: ``engine.fit`` of the box decoder on those real embeddings (``plan.overheads``), per image;
  * evaluation: ``inference.predict_case`` of one whole test case with every variant (untrained weights: the
    time does not depend on them) and its metrics, per case.
Stretch stages are extrapolated with the workload the planner counts (``plan.workload``) and written beside the
planner's own stage prediction (a fresh calibration on this machine), with their ratio. Per case: time and disk
of the data steps, and both extrapolated to 369 cases (BraTS 2020 training). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from brainseg_utils.data import validate  # noqa: E402
from brainseg_utils.data.brats import discover_cases, labelled_cases  # noqa: E402
from brainseg_utils.data.dataset import SliceDataset  # noqa: E402
from brainseg_utils.data.slices import build_cache, make_split  # noqa: E402
from brainseg_utils.data.synthetic import SyntheticConfig, generate_dataset  # noqa: E402
from brainseg_utils.parameters import profile_configs  # noqa: E402
from brainseg_utils.plan import overheads  # noqa: E402
from brainseg_utils.plan.planner import make_plan  # noqa: E402
from brainseg_utils.runtime.env import device_summary  # noqa: E402
from brainseg_utils.runtime.io import atomic_write_json  # noqa: E402

BRATS_CASES = 369


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def data_steps(configs, n: int, work: Path) -> tuple[dict, list, object]:
    syn = SyntheticConfig(cases=n, seed=0, depth=155)
    root, gen_s = timed(lambda: generate_dataset(work / "data", syn, progress=True))
    cases = labelled_cases(discover_cases(root))
    _, audit_s = timed(lambda: [validate.validate_case(c) for c in cases])
    cache, cache_s = timed(lambda: build_cache(cases, work / "slices", configs.data.slice_config(), progress=True))
    stages = {
        "generate": {"seconds": gen_s, "disk_bytes": du(Path(root))},
        "audit": {"seconds": audit_s, "disk_bytes": 0},
        "slice cache": {"seconds": cache_s, "disk_bytes": du(work / "slices")},
    }
    return stages, cases, cache


def unet_stretch(configs, cache, split, device) -> dict:
    b = configs.unet_train.batch_size
    rows = cache.rows_for(split["train"])[: 3 * b]
    val = cache.rows_for(split["val"])[:b]
    train_ds = SliceDataset(cache, rows, configs.unet.augmentation(), seed=0)
    val_ds = SliceDataset(cache, val, None)
    from dataclasses import replace

    cfg = replace(configs.unet_train, device=str(device))
    return overheads.training_costs(configs.unet.build(cache.images.shape[1]), train_ds, val_ds, cfg)


def sam_stretch(configs, cache, split, device, slices: int) -> tuple[dict, torch.Tensor]:
    sam_cfg, choice = configs.sam.resolve()
    backend = choice.build().to(device)
    rows = cache.rows_for(split["train"])[:slices]
    batch = sam_cfg.encode_batch
    with tempfile.TemporaryDirectory() as tmp:
        out = np.memmap(Path(tmp) / "emb.f16", np.float16, "w+", shape=(len(rows), 256, 64, 64))
        t = time.perf_counter()
        with torch.no_grad():
            for i in range(0, len(rows), batch):
                x = torch.from_numpy(np.asarray(cache.images[rows[i : i + batch]], np.float32)).to(device)
                out[i : i + batch] = backend.encode(x).float().cpu().numpy().astype(np.float16)
        out.flush()
        encode = (time.perf_counter() - t) / len(rows)
        emb = torch.from_numpy(np.asarray(out, np.float32))
    dec = overheads.decoder_training(configs, backend, emb, device)
    return {"encoder": encode, **dec, "backend": sam_cfg.backend}, backend


def eval_stretch(configs, cases, split, backend, device) -> float:
    from brainseg_utils.evaluation.evaluate import case_rows
    from brainseg_utils.evaluation.inference import Models, predict_case
    from brainseg_utils.models.sam.decoder import SamDecoderModel

    size = configs.data.img_size
    decoders = {p: SamDecoderModel(backend, p, size).to(device).eval() for p in configs.sam.prompts}
    if "box" in decoders:
        decoders["box_zeroshot"] = SamDecoderModel(backend, "box", size).to(device).eval()
    models = Models(configs.unet.build(1).to(device).eval(), {backend.name: decoders}, {backend.name: backend})
    case = next(c for c in cases if c.case_id == split["test"][0])
    t = time.perf_counter()
    res = predict_case(models, case, size, tuple(configs.data.modalities), device)
    case_rows(case.case_id, res)
    return time.perf_counter() - t


def compare(measured: dict, plan: dict) -> dict:
    predicted = {s["name"]: s for s in plan["stages"]}
    rows = {}
    for name, m in measured.items():
        p = predicted.get(name)
        ratio = p and round(p["seconds"] / max(m["seconds"], 1e-9), 3)
        rows[name] = {**{k: round(v, 2) if isinstance(v, float) else v for k, v in m.items()},
                      "predicted_s": p and p["seconds"], "predicted_disk_bytes": p and p["disk_bytes"],
                      "ratio_predicted_over_measured": ratio}  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, required=True, help="synthetic BraTS-sized cases (3..369)")
    ap.add_argument("--profile", default="full")
    ap.add_argument("--workdir", default=None, help="where the data goes (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the generated data")
    ap.add_argument("--sam-slices", type=int, default=32, help="slices encoded and trained on in the SAM stretch")
    ap.add_argument("--data-only", action="store_true", help="only the data steps (no planner, no stretches)")
    ap.add_argument("--out", default=str(ROOT / "outputs" / "benchmarks" / "rehearsal.json"))
    args = ap.parse_args(argv)
    if not 3 <= args.cases <= BRATS_CASES:
        ap.error(f"--cases must be in [3, {BRATS_CASES}], got {args.cases}")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="rehearsal-"))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    configs = profile_configs(args.profile)
    try:
        measured, cases, cache = data_steps(configs, args.cases, work)
        split = make_split([c.case_id for c in cases], configs.data.split_fractions, configs.data.seed)
        if args.data_only:
            out = {**header(args, argv, device), "data_steps": data_summary(measured, args.cases),
                   "stages": compare(measured, {"stages": []})}  # fmt: skip
            return write(out, args)
        os.environ["DATA_ROOT"] = str(work / "data")  # the planner finds and measures the same cases
        t = time.perf_counter()
        plan = make_plan(args.profile, cases=args.cases, platform="local", use_cache=False)
        plan_s = time.perf_counter() - t
        w = plan["workload"]
        unet = unet_stretch(configs, cache, split, device)
        per_epoch = w["train_slices"] * unet["train"] + w["val_slices"] * unet["val"] + unet["epoch"]
        measured["U-Net epochs"] = {"seconds": w["unet_epochs"] * per_epoch, "how": "per image x slices x epochs",
                                    "per_image_train_s": unet["train"], "per_image_val_s": unet["val"]}  # fmt: skip
        sam, backend = sam_stretch(configs, cache, split, device, args.sam_slices)
        measured["embedding cache"] = {"seconds": w["cached_embeddings"] * sam["encoder"], "how": "per slice x slices",
                                       "per_slice_s": sam["encoder"],
                                       "disk_bytes": w["cached_embeddings"] * w["embedding_bytes"]}  # fmt: skip
        case_s = eval_stretch(configs, cases, split, backend, device)
        measured["prediction"] = {"seconds": w["test_cases"] * case_s, "how": "one whole test case x test cases",
                                  "per_case_s": case_s}  # fmt: skip
        out = {
            **header(args, argv, device),
            "data_steps": data_summary(measured, args.cases),
            "decoder_per_image_s": {k: sam[k] for k in ("sam_epoch_train", "sam_epoch_val", "sam_epoch_fixed")},
            "stages": compare(measured, plan),
            "planner_seconds": round(plan_s, 1),
            "plan_notebooks": plan["notebooks"],
        }
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return write(out, args)


def header(args, argv, device) -> dict:
    return {
        "command": "python benchmarks/rehearsal.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "what": "full-profile data steps on N BraTS-sized SYNTHETIC cases and short stretches of training and "
        "evaluation at full sizes, next to the planner's prediction (fresh calibration, same machine)",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "device": device_summary(),
        "date": time.strftime("%Y-%m-%d"),
        "cases": args.cases,
        "profile": args.profile,
    }


def data_summary(measured: dict, n: int) -> dict:
    """Generation, audit and slice cache together: seconds and bytes, per case and extrapolated to 369 cases."""
    data_s = sum(measured[k]["seconds"] for k in ("generate", "audit", "slice cache"))
    data_b = sum(measured[k]["disk_bytes"] for k in ("generate", "slice cache"))
    return {
        "seconds": round(data_s, 1),
        "disk_bytes": data_b,
        "seconds_per_case": round(data_s / n, 3),
        "disk_bytes_per_case": int(data_b / n),
        "extrapolated_to_369": {
            "seconds": round(data_s / n * BRATS_CASES),
            "disk_bytes": int(data_b / n * BRATS_CASES),
        },
    }


def write(out: dict, args) -> dict:
    atomic_write_json(Path(args.out), out)
    for name, row in out["stages"].items():
        print(f"{name:<16} measured {row['seconds']:>9.1f} s  predicted {row['predicted_s'] or 0:>9.1f} s")
    d = out["data_steps"]
    print(f"data steps: {d['seconds_per_case']} s and {d['disk_bytes_per_case'] / 1e6:.0f} MB per case; "
          f"369 cases: {d['extrapolated_to_369']['seconds'] / 60:.0f} min, "
          f"{d['extrapolated_to_369']['disk_bytes'] / 1e9:.1f} GB")  # fmt: skip
    return out


if __name__ == "__main__":
    main()
