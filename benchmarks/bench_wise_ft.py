"""WiSE-FT sweep for a finished run's SAM decoders: how far back towards the pretrained decoder should the
fine-tuned one be blended (``SAM_WISE_FT``, models/sam/wise.py)?

    python benchmarks/bench_wise_ft.py --run OUTPUT_DIR --set NAME=PATH [--set ...] [--alphas 0.25,0.5,0.75,1]
                                       [--sam-cases 6] [--prompts box] [--out JSON]

For each coefficient alpha the run's fine-tuned decoders (``sam/sam_<b>_<prompt>/best.pt``, whatever alpha they
record) are blended as ``(1 - alpha) x pretrained + alpha x fine-tuned`` and scored

  * on the run's VALIDATION slices, as notebook 03 validates (box: prompted with the cleaned U-Net mask's component
    boxes, the cascade, as 03 selects; and with ground-truth boxes; no prompt: every slice), mean per-slice Dice;
  * on each real-anatomy set (``--set``; built by code that shares nothing with the synthetic generator, e.g.
    ``benchmarks/constructions.py``) with notebook 04's per-patient protocol (``inference.predict_volume``: 3-D
    whole-tumour Dice) on the first ``--sam-cases`` cases: the oracle box, the U-Net-box cascade and the
    prompt-free decoder, beside the pretrained (zero-shot) box decoder.

The test split is never read. Every alpha sees the same cases and the same image embeddings (each slice is
encoded once per case; the U-Net and its clean-up are the run's, threshold from ``unet/cleanup.json``). Judge by
the worst set. Writes JSON (atomically, after every set) and prints an alpha x set table.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import shlex
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_run_transfer as brt  # noqa: E402

from brainseg_utils.config import TrainConfig  # noqa: E402
from brainseg_utils.data.volumes import load_case  # noqa: E402
from brainseg_utils.evaluation import metrics as M  # noqa: E402
from brainseg_utils.evaluation.inference import predict_volume  # noqa: E402
from brainseg_utils.models.sam import wise  # noqa: E402
from brainseg_utils.runtime.checkpoints import load_checkpoint, resolve_device  # noqa: E402
from brainseg_utils.runtime.env import code_version  # noqa: E402
from brainseg_utils.runtime.io import atomic_write_json  # noqa: E402
from brainseg_utils.runtime.paths import RunDir  # noqa: E402
from brainseg_utils.runtime.progress import tqdm  # noqa: E402
from brainseg_utils.training import finetune  # noqa: E402
from brainseg_utils.training.engine import evaluate_dataset  # noqa: E402
from brainseg_utils.workflow.prepare import open_run_data  # noqa: E402


class MemoEncoder:
    """A SAM backend whose ``encode`` remembers its outputs by input content, so several decoders (one per alpha)
    share one encoder pass per slice batch; everything else is the wrapped backend's."""

    def __init__(self, backend):
        self._backend, self.memo, self.calls = backend, {}, 0

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        key = hashlib.sha1(x.detach().cpu().numpy().tobytes()).hexdigest()
        if key not in self.memo:
            self.calls += 1
            self.memo[key] = self._backend.encode(x)
        return self.memo[key]


def parse_alphas(text: str) -> list[float]:
    out = [wise.check_alpha(a.strip(), "--alphas") for a in text.split(",") if a.strip()]
    if not out:
        raise argparse.ArgumentTypeError("--alphas wants comma-separated numbers in (0, 1], e.g. 0.25,0.5,1")
    return sorted(set(out))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run", required=True, help="a finished run's OUTPUT_DIR")
    p.add_argument("--set", dest="sets", action="append", type=brt.parse_set, default=[], metavar="NAME=PATH")
    p.add_argument("--alphas", type=parse_alphas, default=parse_alphas("0.25,0.5,0.75,1"))
    p.add_argument("--sam-cases", type=int, default=6, help="first N cases of each set (default 6)")
    p.add_argument("--prompts", default="box", help="decoders to sweep: box, none or box,none (default box)")
    p.add_argument("--out", default="outputs/benchmarks/wise_ft.json")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    args.prompts = [s.strip() for s in args.prompts.split(",") if s.strip()]
    if not set(args.prompts) <= {"box", "none"} or not args.prompts:
        p.error(f"--prompts: box and/or none, got {args.prompts}")
    if args.sam_cases < 1:
        p.error("--sam-cases must be >= 1")
    return args


def decoders_at(run: RunDir, backend, prompts, alpha: float, device, zeroshot: bool = True) -> dict:
    """{prompt: the run's fine-tuned decoder blended at ``alpha``} (+ the pretrained box decoder as box_zeroshot
    when ``zeroshot``)."""
    from brainseg_utils.models.sam.decoder import SamDecoderModel

    out = {}
    for prompt in prompts:
        path = run.sam(f"sam_{backend.name}_{prompt}") / "best.pt"
        ckpt = load_checkpoint(path, expect_arch="sam_decoder")
        out[prompt] = wise.decoder_from_checkpoint(backend, ckpt, path, alpha).to(device).eval()
        if prompt == "box" and zeroshot:
            size = ckpt["config"]["model"]["img_size"]
            out["box_zeroshot"] = SamDecoderModel(backend, "box", size).to(device).eval()
    return out


def validation_scores(run: RunDir, models, alphas, prompts, device) -> dict:
    """{alpha: {model: mean per-slice validation Dice}} as notebook 03 validates (its embedding cache reused)."""
    cache, split, info = open_run_data(run)
    ((bname, backend),) = models.backends.items()
    emb = finetune.training_embeddings(run, backend, cache, split, budget_gb=1e6, progress=False)
    cfg = TrainConfig(device=str(device), batch_size=8)
    sets = {}
    for prompt in prompts:
        ds, boxes = finetune.validation_dataset(run, backend, emb, cache, split, info, prompt, str(device))
        sets["unet_box" if prompt == "box" and boxes is not None else prompt] = ds
        if prompt == "box":  # and with ground-truth boxes (the oracle)
            sets["box"] = finetune.EmbeddingDataset(emb.cache, cache, cache.rows_for(split["val"]), "box", jitter_px=0)
    out = {}
    for alpha in [0.0, *alphas]:
        row = {}
        for name, ds in sets.items():
            prompt = "none" if name == "none" else "box"
            if alpha == 0 and prompt == "none":
                continue
            dec = decoders_at(run, backend, [prompt], alpha if alpha else 1.0, device)
            model = dec["box_zeroshot"] if alpha == 0 else dec[prompt]
            row[name] = evaluate_dataset(model, ds, cfg.batch_size, cfg.device, amp=False)["dice"]
        out["zero-shot" if alpha == 0 else f"{alpha:g}"] = row
    return out


def sweep_case(models, memo, case, img_size, modalities, device, variants: dict) -> dict:
    """{variant: {model: Dice}} for one case; every variant's decoders share ``memo``'s encoder outputs."""
    vol = load_case(case, modalities)
    spacing = tuple(float(s) for s in nib.load(case.images["flair"]).header.get_zooms()[:3])
    out = {}
    for label, decs in variants.items():
        m = dataclasses.replace(models, sam={memo.name: decs}, backends={memo.name: memo})
        res = predict_volume(m, vol["image"], vol["brain"], spacing, img_size, device, 8, None, vol["wt"])
        gt = res["gt"]
        out[label] = {k: M.dice(v, gt) for k, v in res["pred"].items() if k.startswith("sam_")}
    memo.memo.clear()
    zero = {k: v for row in out.values() for k, v in row.items() if k.endswith("_box_zeroshot")}
    return {label: {**row, **zero} for label, row in out.items()}  # zero-shot: run once, reported beside each


def summarise(per_case: dict) -> dict:
    """{variant: {model: {"mean", "min", "n"}}} over cases."""
    out = {}
    for scores in per_case.values():
        for label, row in scores.items():
            for model, v in row.items():
                out.setdefault(label, {}).setdefault(model, []).append(v)
    return {
        lab: {m: {"mean": float(np.mean(v)), "min": float(np.min(v)), "n": len(v)} for m, v in rows.items()}
        for lab, rows in out.items()
    }


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    command = shlex.join(["python", "benchmarks/bench_wise_ft.py", *argv])
    device = resolve_device(args.device)
    models, run_record = brt.load_run(Path(args.run).expanduser(), device)
    run = RunDir(Path(args.run).expanduser())
    ((bname, backend),) = models.backends.items()
    memo = MemoEncoder(backend)
    variants = {  # the pretrained box decoder rides with the first variant only (its score is copied to the others)
        f"{a:g}": decoders_at(run, memo, args.prompts, a, device, zeroshot=i == 0) for i, a in enumerate(args.alphas)
    }
    img_size, modalities = run_record["img_size"], tuple(run_record["modalities"])
    t0 = time.perf_counter()
    val = validation_scores(run, models, args.alphas, args.prompts, device)
    result = {
        "benchmark": "WiSE-FT coefficient sweep of a run's SAM decoders (SAM_WISE_FT)",
        "command": command,
        "code_version": code_version(),
        "label": brt.SET_LABEL + "; validation: the run's synthetic validation slices",
        "run": run_record,
        "method": wise.REFERENCE,
        "alphas": args.alphas,
        "validation_slice_dice": val,
        "validation_seconds": round(time.perf_counter() - t0, 1),
        "sets": {},
    }
    print("validation (mean per-slice Dice):", {k: {m: round(v, 4) for m, v in r.items()} for k, r in val.items()})
    for name, path in args.sets:
        cases = brt.set_cases(path, args.sam_cases)
        per_case, t1 = {}, time.perf_counter()
        for case in tqdm(cases, desc=name, disable=args.no_progress):
            per_case[case.case_id] = sweep_case(models, memo, case, img_size, modalities, device, variants)
        result["sets"][name] = {
            "path": str(path.resolve()),
            "cases": [c.case_id for c in cases],
            "per_case": per_case,
            "summary": summarise(per_case),
            "seconds": round(time.perf_counter() - t1, 1),
        }
        atomic_write_json(Path(args.out), result)
    result["worst"] = worst(result["sets"])
    atomic_write_json(Path(args.out), result)
    print(table(result))
    print(f"wrote {args.out}")
    return result


def worst(sets: dict) -> dict:
    """{variant: {model: (worst set mean, set)}}."""
    out = {}
    for sname, s in sets.items():
        for label, rows in s["summary"].items():
            for model, r in rows.items():
                cur = out.setdefault(label, {}).get(model)
                if cur is None or r["mean"] < cur["mean"]:
                    out[label][model] = {"mean": r["mean"], "set": sname}
    return out


def table(result: dict) -> str:
    lines = []
    for sname, s in {**result["sets"], "WORST": None}.items():
        rows = result["worst"] if s is None else {k: {m: r for m, r in v.items()} for k, v in s["summary"].items()}
        lines.append(f"\n{sname}")
        for label, r in rows.items():
            lines.append(
                f"  alpha {label:>5}: " + "  ".join(f"{m.split('_', 2)[-1]} {x['mean']:.3f}" for m, x in r.items())
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
