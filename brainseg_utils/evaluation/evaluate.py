"""Evaluation of every model variant on the test split: metrics, statistics, latency, result files, NIfTI.

Protocol (written into ``metrics.json`` and ``results.md``):
  * Every *brain* axial slice (any voxel != 0) of every test volume is predicted (``inference.predict_case``):
    U-Net logits at the slice-cache size, SAM's 256 x 256 low-resolution logits, each mapped once
    (bilinear, pixel-centre aligned) to the native grid and thresholded at 0 (sigmoid 0.5); slices
    without brain are predicted empty. Slices are stacked back into a volume.
  * Per patient (the headline): Dice, IoU, precision, recall and HD95 on the 3-D volume against
    the whole-tumour label, voxel spacing from the NIfTI header; beside them the BraTS 2023 lesion-wise
    Dice and HD95 (with lesion counts), the normalised surface Dice at 2 mm and the false-positive volume in mL
    (``lesionwise``; conventions in ``metrics.CONVENTIONS``). HD95 is summarised as mean and median [IQR].
  * Per slice: the same metrics on each brain slice (2-D, in-plane spacing), averaged over
    tumour slices and over all brain slices; the false-positive rate is the share of tumour-free
    brain slices with any predicted pixel. Oracle-box variants cannot produce one (no box on a
    tumour-free slice), so theirs is n/a, not 0.
  * Statistics that n can carry: bootstrap 95% CIs (2,000 resamples of patients) of each model's means, and
    paired comparisons of each SAM variant with the U-Net on per-patient Dice, HD95 and lesion-wise Dice
    (``statistics.paired_tests``): mean difference U-Net minus SAM with a BCa bootstrap 95% CI, two-sided
    Wilcoxon signed-rank p, rank-biserial r and Cohen's d_z, Holm-adjusted p over the pre-declared
    comparisons (U-Net vs ``sam_<b>_none`` and vs ``sam_<b>_unet_box``; oracle-box and zero-shot ones are
    exploratory, unadjusted). All from ``MIN_PATIENTS_FOR_STATS`` (10) test patients on; below that they are
    null with the reason (with 2 patients a "95% CI" is [min, max] and Wilcoxon can only return 0.5 or 1).
    The smallest p the exact test can reach with n patients (2^(1-n)) and the number of tests are always
    given.
  * Models: ``unet``; ``sam_<backend>_none`` (no prompt); ``sam_<backend>_box`` (ground-truth box:
    an ORACLE prompt, slices without tumour get no box and are predicted empty);
    ``unet_clean`` (the U-Net's mask without 3-D components below a volume chosen on the validation cases);
    ``sam_<backend>_unet_box`` (box-trained decoder prompted with one box per connected component of the
    cleaned U-Net mask on each slice, masks united; slices where it has nothing are predicted empty);
    ``sam_<backend>_box_zeroshot`` (the pretrained decoder, not fine-tuned, with the oracle box:
    how MRI-like the data looks to the model, and what fine-tuning added).
    Each records what it learnt from: ``data.{train_slices, val_slices, train_cases, val_cases}``.
  * Latency: batch 1 on a real test slice, after warm-up runs, ``torch.cuda.synchronize`` around each
    run on GPU; every run times a variant's whole pipeline end to end (slice tensor in -> boolean
    native-grid mask on the host; ``unet_box`` = U-Net, copy to host, box, SAM encoder, decoder),
    and median / p90 are taken over those totals. The SAM encoder / decoder split is timed
    separately as extra columns.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from brainseg_utils.data.brats import discover_cases
from brainseg_utils.data.volumes import save_mask
from brainseg_utils.evaluation import metrics as M
from brainseg_utils.evaluation.cascade import cleanup_for
from brainseg_utils.evaluation.inference import Models, predict_case
from brainseg_utils.evaluation.latency import measure_latency, volume_costs
from brainseg_utils.evaluation.protocol import run_deviations
from brainseg_utils.evaluation.results_table import prompt_of, results_markdown
from brainseg_utils.evaluation.statistics import (
    MIN_PATIENTS_FOR_STATS,
    PAIRED_CONVENTIONS,
    is_oracle,
    paired_tests,
    summarise,
)
from brainseg_utils.evaluation.stopwatch import Stages
from brainseg_utils.models.sam.pretraining import note as pretraining_note
from brainseg_utils.models.sam.pretraining import pretraining
from brainseg_utils.runtime.checkpoints import resolve_device
from brainseg_utils.runtime.env import code_version
from brainseg_utils.runtime.io import atomic_write, atomic_write_json, atomic_write_text


# ----------------------------------------------------------------------------- metrics tables
def case_rows(case_id: str, result: dict) -> list[dict]:
    gt = result["gt"]
    tumour_ml = float(gt.sum() * np.prod(result["spacing"]) / 1000.0)
    return [
        {
            "model": name,
            "case_id": case_id,
            "tumour_ml": round(tumour_ml, 3),
            **M.case_metrics(pred, gt, result["spacing"]),
        }
        for name, pred in result["pred"].items()
    ]


def slice_rows(case_id: str, result: dict) -> list[dict]:
    gt, rows = result["gt"], []
    for name, pred in result["pred"].items():
        for z in result["brain_z"]:
            g, p = gt[:, :, z], pred[:, :, z]
            rows.append(
                {
                    "model": name,
                    "case_id": case_id,
                    "z": int(z),
                    "has_tumour": bool(g.any()),
                    "tumour_px": int(g.sum()),
                    "pred_px": int(p.sum()),
                    **M.all_metrics(p, g, result["spacing"][:2]),
                }
            )
    return rows


# ----------------------------------------------------------------------------- writing
def export_prediction(pred: np.ndarray, source: str | os.PathLike, path: str | os.PathLike) -> Path:
    """uint8 NIfTI (1 = whole tumour) with the source image's affine and header."""
    ref = nib.load(source)
    return save_mask(pred, ref.affine, ref.header, path)


def backend_of(models: Models, name: str) -> str | None:
    """The SAM backend of model ``name`` (``sam_vit_b_box`` -> ``vit_b``); None for the U-Net."""
    hits = [b for b in models.backends if name.startswith(f"sam_{b}_")]
    return max(hits, key=len) if hits else None


def _predict_cases(run, models: Models, cases: list, img_size, modalities, device, export: bool, progress: bool):
    """(per-case rows, per-slice rows, volumes for figures, a latency sample) over the test ``cases``; each
    model's predicted volume is written as NIfTI when ``export``."""
    from brainseg_utils.runtime.progress import tqdm

    pc_rows, ps_rows, volumes, sample = [], [], {}, None
    for case in tqdm(cases, desc="test cases", disable=not progress):
        cid = case.case_id
        stages = Stages()  # the last case's stages give the per-volume costs (the first pays one-off conversions)
        res = predict_case(models, case, img_size, modalities, device, stages=stages)
        pc_rows += case_rows(cid, res)
        ps_rows += slice_rows(cid, res)
        if export:
            for name, pred in res["pred"].items():
                export_prediction(pred, case.images["flair"], run.predictions(name) / f"{cid}_pred.nii.gz")
        volumes[cid] = {"gt": res["gt"], "pred": res["pred"], "flair": res["flair"]}
        sample = sample or (res["sample"], res["sample_box"], res["gt"].shape[:2])
    per_volume = {"record": stages.record, "slices": len(res["brain_z"])} if cases else {"record": {}, "slices": 0}
    return pd.DataFrame(pc_rows), pd.DataFrame(ps_rows), volumes, (*sample, per_volume)


def run_settings(run, info: dict) -> dict:
    """What the run was sized to: the slice subsample both models shared (``SLICE_STEP``) and, when the planner
    chose the settings (``PROFILE=auto``), its level, the cuts (each with its cost in quality) and the
    predicted seconds per notebook (``run.plan``, written by run_all.sh)."""
    params = info.get("params") or {}
    out = {
        "slice_step": params.get("SLICE_STEP"),
        "tumour_free_fraction": params.get("TUMOUR_FREE_FRACTION"),
        "profile": None,
        "cuts": [],
    }
    path = run.plan
    if path.is_file():
        plan = json.loads(path.read_text())
        out.update(
            profile=plan.get("profile"),
            level=plan.get("level"),
            cuts=plan.get("cuts", []),
            planned_for=f"{plan.get('platform')} on {plan.get('device')} x{plan.get('gpus')}"
            + (" (estimate)" if plan.get("estimate") else ""),
            predicted_seconds=plan.get("notebooks"),
            fits=plan.get("fits"),
        )
    return out


def _protocol(latency_runs: int) -> dict:
    """The ``conventions`` and ``latency_protocol`` entries of metrics.json: every policy that changes a number."""
    return {
        "conventions": {
            **M.CONVENTIONS,
            "target": "whole tumour (labels 1, 2, 4)",
            "threshold": "logits resized once (bilinear, pixel-centre aligned) to the native grid, "
            "then > 0 (sigmoid 0.5)",
            "per_case": "3-D volume of every brain slice's prediction, native grid",
            "per_slice": "2-D, every brain slice of the test volumes",
            "false_positive_rate": "share of tumour-free brain slices with any predicted pixel; "
            "n/a for oracle-box variants (no box, no prediction)",
            "ci95": f"percentile bootstrap over patients, 2000 resamples; null below "
            f"{MIN_PATIENTS_FOR_STATS} test patients",
            "test": f"main table: two-sided Wilcoxon signed-rank on per-patient Dice vs unet, unadjusted; null below "
            f"{MIN_PATIENTS_FOR_STATS} test patients; min attainable p = 2^(1-n)",
            **PAIRED_CONVENTIONS,
            "data": "train_slices / val_slices: slices each model was trained / checkpoint-selected on "
            "(box decoders: every slice, tumour-free ones with boxes off the tumour, selected on validation slices "
            "with the U-Net's boxes; older runs: tumour slices only); train_cases: patients",
        },
        "latency_protocol": f"batch 1 on a real test slice, {latency_runs} timed runs after 3 warm-up runs, "
        "torch.cuda.synchronize on GPU; each run = the variant's whole pipeline (slice in -> "
        "native-grid mask on the host; unet_box includes the U-Net, the copy to host and the box); "
        "median and p90 of those totals; SAM encoder / decoder split timed separately; each model's arithmetic in "
        "latency_ms.precision (the U-Net fp32 everywhere, SAM encoders fp32 on a CPU and fp16 autocast on CUDA); "
        "per volume (models.<name>.volume): the stages of the last test volume's own prediction (every brain slice at "
        "batch 8; a SAM variant's share of the shared encoder pass = its slices / slices encoded; unet_box adds the "
        "U-Net and the clean-up) and the largest peak memory those stages added (CUDA: max_memory_allocated; CPU: "
        "resident set, so memory an earlier stage freed and reused shows ~0)",
    }


def _describe(summary: dict, models: Models, latency: dict, per_volume: dict) -> None:
    """Each model's row of metrics.json gets its latency, per-volume cost, prompt, data and backend."""
    for name in summary:
        summary[name]["latency_ms"] = latency.get(name)  # unet_clean: a whole-volume step, no batch-1 latency
        summary[name]["volume"] = per_volume.get(name)  # oracle variants: not timed (they cost what box costs)
        summary[name]["prompt"] = prompt_of(name)
        summary[name]["oracle"] = is_oracle(name)
        summary[name]["data"] = models.data.get(name)
        summary[name]["backend"] = backend_of(models, name)
        summary[name]["pretraining_note"] = pretraining_note(summary[name]["backend"])


def run_evaluation(
    run,
    models: Models,
    split: dict,
    info: dict,
    img_size: int,
    modalities: tuple[str, ...],
    device="cpu",
    latency_runs: int = 20,
    export: bool = True,
    progress: bool = True,
    max_cases: int = 0,
    command: str | None = None,
    cleanup: bool = True,
) -> tuple[dict, dict]:
    """Evaluate on the test split and write every result file.

    Returns ``(metrics, volumes)``: the dict written to ``metrics.json`` and, per test case,
    ``{"gt", "pred": {model: bool (H, W, D)}, "flair"}`` for figures (not written).
    ``command``: how the run was started, recorded with the git commit (default: ``$BRAINSEG_RUN_COMMAND``).
    ``cleanup``: also report ``unet_clean`` and prompt the cascade with the cleaned U-Net mask (``cascade``; the
    threshold is chosen on the validation cases, or read from ``unet/cleanup.json``).
    """
    root = Path(info["root"])
    by_id = {c.case_id: c for c in discover_cases(root)}
    missing = [cid for cid in split["test"] if cid not in by_id]
    if missing:
        raise FileNotFoundError(f"test cases {missing[:5]} from splits.json are not under {root}")
    test_ids = split["test"][:max_cases] if max_cases else split["test"]
    device = resolve_device(str(device)) if isinstance(device, str) else device
    if cleanup and models.cleanup is None:  # the U-Net's 3-D clean-up, its threshold chosen on validation cases
        models.cleanup = cleanup_for(
            run, models.unet, run.unet_best, split, root, img_size, modalities, device, progress
        )
        models.data["unet_clean"] = {**models.data.get("unet", {}), "note": "the U-Net's model; 3-D clean-up added"}
    per_case, per_slice, volumes, sample = _predict_cases(
        run, models, [by_id[c] for c in test_ids], img_size, modalities, device, export, progress
    )
    summary = summarise(per_case, per_slice)
    latency = measure_latency(models, *sample[:3], device, latency_runs)
    memory = "CUDA max_memory_allocated above the start" if device.type == "cuda" else "resident set above the start"
    per_volume = volume_costs(sample[3]["record"], sample[3]["slices"], memory)
    _describe(summary, models, latency, per_volume)
    metrics = {
        "settings": run_settings(run, info),
        "seed_protocol": run_deviations(info.get("params"), models.unet_config, info["name"]),
        "dataset": {
            "name": info["name"],
            "split_sha256": split["sha256"],
            "n_test_cases": len(test_ids),
            "test_cases": list(test_ids),
            "root": str(root),
            "note": "synthetic data: not comparable with BraTS results" if info["name"] == "synthetic" else "",
        },
        "models": summary,
        "cleanup": None if models.cleanup is None else models.cleanup.record(),
        "sam_backends": {
            b: {
                "checkpoint_sha256": getattr(m, "checkpoint_sha256", None),
                "why": getattr(m, "provenance", ""),
                "pretraining": asdict(pretraining(b)),
            }
            for b, m in models.backends.items()
        },
        "statistics": paired_tests(per_case),
        **_protocol(latency_runs),
        "provenance": {
            **code_version(),
            "command": command or os.environ.get("BRAINSEG_RUN_COMMAND") or "notebooks/04_evaluate.ipynb (run by hand)",
        },
    }
    atomic_write_json(run.metrics, json.loads(json.dumps(metrics, default=float)))  # numpy -> float
    atomic_write(run.per_case, lambda tmp: per_case.to_csv(tmp, index=False))
    atomic_write(run.per_slice, lambda tmp: per_slice.to_csv(tmp, index=False))
    atomic_write_text(run.results_md, results_markdown(metrics))
    return metrics, volumes
