"""Evaluation of every model variant on the test split: metrics, statistics, latency, result files, NIfTI.

Protocol (written into ``metrics.json`` and ``results.md``):
  * Every *brain* axial slice (any voxel != 0) of every test volume is predicted (``inference.predict_case``):
    U-Net logits at the slice-cache size, SAM's 256 x 256 low-resolution logits, each mapped once
    (bilinear, pixel-centre aligned) to the native grid and thresholded at 0 (sigmoid 0.5); slices
    without brain are predicted empty. Slices are stacked back into a volume.
  * Per patient (the headline): Dice, IoU, precision, recall and HD95 on the 3-D volume against
    the whole-tumour label, voxel spacing from the NIfTI header.
  * Per slice: the same metrics on each brain slice (2-D, in-plane spacing), averaged over
    tumour slices and over all brain slices; the false-positive rate is the share of tumour-free
    brain slices with any predicted pixel. Oracle-box variants cannot produce one (no box on a
    tumour-free slice), so theirs is n/a, not 0.
  * Statistics that n can carry: bootstrap 95% CIs (2,000 resamples of patients) and a paired
    two-sided Wilcoxon signed-rank test of per-patient Dice between the U-Net and each SAM variant
    are reported from ``MIN_PATIENTS_FOR_STATS`` (10) test patients on; below that they are null with
    the reason (with 2 patients a "95% CI" is [min, max] and Wilcoxon can only return 0.5 or 1). The
    smallest p the exact test can reach with n patients (2^(1-n)) and the number of tests are always
    given.
  * Models: ``unet``; ``sam_<backend>_none`` (no prompt); ``sam_<backend>_box`` (ground-truth box:
    an ORACLE prompt, slices without tumour get no box and are predicted empty);
    ``sam_<backend>_unet_box`` (box-trained decoder prompted with the box of the U-Net's
    prediction; slices where the U-Net predicts nothing are predicted empty);
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
import statistics
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch

from brainseg_utils.data.brats import discover_cases
from brainseg_utils.data.volumes import save_mask
from brainseg_utils.evaluation import metrics as M
from brainseg_utils.evaluation.inference import Models, predict_case, to_native
from brainseg_utils.models.sam.backends import mask_to_box
from brainseg_utils.runtime.checkpoints import resolve_device
from brainseg_utils.runtime.env import code_version
from brainseg_utils.runtime.io import atomic_write, atomic_write_json, atomic_write_text

MIN_PATIENTS_FOR_STATS = 10  # below this, CIs and p-values are reported as n/a


# ----------------------------------------------------------------------------- metrics tables
def case_rows(case_id: str, result: dict) -> list[dict]:
    gt = result["gt"]
    tumour_ml = float(gt.sum() * np.prod(result["spacing"]) / 1000.0)
    return [
        {
            "model": name,
            "case_id": case_id,
            "tumour_ml": round(tumour_ml, 3),
            **M.all_metrics(pred, gt, result["spacing"]),
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


def _na(n: int) -> str:
    return f"n/a (n = {n} < {MIN_PATIENTS_FOR_STATS} test patients)"


def is_oracle(name: str) -> bool:
    """Variants prompted with the ground-truth box (no box, hence no prediction, on tumour-free slices)."""
    return name.endswith("_box") and not name.endswith("_unet_box") or name.endswith("_box_zeroshot")


def summarise(per_case: pd.DataFrame, per_slice: pd.DataFrame, seed: int = 0) -> dict:
    """Per model: per-case means (bootstrap CIs from ``MIN_PATIENTS_FOR_STATS`` patients on, else null
    with ``ci95_note``), per-slice means (tumour / all), FP rate (null with a reason for oracle prompts)."""
    out = {}
    for name, pc in per_case.groupby("model", sort=False):
        ps = per_slice[per_slice.model == name]
        tum, free = ps[ps.has_tumour], ps[~ps.has_tumour]
        n = int(len(pc))
        entry = {"n_cases": n, "per_case": {}, "per_slice": {}, "per_slice_tumour": {}}
        for m in M.METRICS:
            stats = {
                "mean": float(pc[m].mean()),
                "median": float(pc[m].median()),
                "std": float(pc[m].std(ddof=1)) if n > 1 else 0.0,
            }
            if n >= MIN_PATIENTS_FOR_STATS:
                stats["ci95"] = list(M.bootstrap_ci(pc[m], seed=seed))
            else:
                stats["ci95"], stats["ci95_note"] = None, _na(n)
            entry["per_case"][m] = stats
            entry["per_slice"][m] = {"mean": float(ps[m].mean()), "n": int(len(ps))}
            entry["per_slice_tumour"][m] = {
                "mean": float(tum[m].mean()) if len(tum) else float("nan"),
                "n": int(len(tum)),
            }
        fp = {
            "value": float((free.pred_px > 0).mean()) if len(free) else float("nan"),
            "n_tumour_free_slices": int(len(free)),
        }
        if is_oracle(name):
            fp = {
                "value": None,
                "note": "n/a (oracle): the ground-truth box is absent on tumour-free slices, "
                "so no false positive is possible",
                "n_tumour_free_slices": int(len(free)),
            }
        entry["false_positive_rate"] = fp
        out[name] = entry
    return out


def paired_tests(per_case: pd.DataFrame, reference: str = "unet", metric: str = "dice") -> dict:
    """Wilcoxon signed-rank of per-patient ``metric``, ``reference`` vs every other model.

    Each entry: ``n``, ``n_tests`` (comparisons made), ``min_attainable_p`` (2^(1-n): the exact
    two-sided test's smallest p with n pairs), and ``p_value`` / ``statistic`` (null with
    ``p_value_note`` below ``MIN_PATIENTS_FOR_STATS`` patients).
    """
    wide = per_case.pivot(index="case_id", columns="model", values=metric)
    others = [name for name in wide.columns if name != reference]
    out = {}
    for name in others:
        res = M.paired_wilcoxon(wide[reference], wide[name])
        n = res["n"]
        entry = {
            "vs": reference,
            "metric": metric,
            "n": n,
            "n_tests": len(others),
            "min_attainable_p": min(1.0, 2.0 ** (1 - n)) if n else None,
        }
        if n >= MIN_PATIENTS_FOR_STATS:
            entry.update(statistic=res["statistic"], p_value=res["p_value"])
        else:
            entry.update(statistic=None, p_value=None, p_value_note=_na(n))
        out[name] = entry
    return out


# ----------------------------------------------------------------------------- latency
def time_runs(fn, device: torch.device, n_runs: int = 20, warmup: int = 3) -> list[float]:
    """Milliseconds per call of ``fn`` after ``warmup`` calls; synchronised on CUDA."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n_runs):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def _stats(ms: list[float]) -> dict:
    return {"median": float(statistics.median(ms)), "p90": float(np.percentile(ms, 90)), "n_runs": len(ms)}


def pipelines(models: Models, x: torch.Tensor, box: torch.Tensor, native_hw: tuple[int, int]) -> dict:
    """One callable per model variant: the whole batch-1 pipeline, slice tensor ``x`` (1, C, S, S) on the
    device -> boolean native-grid mask (h, w) on the host. ``box``: (1, 4) ground-truth box on the device."""
    h, w = native_hw
    unet, dev = models.unet, x.device

    def unet_mask():
        return to_native(unet(x)[:, 0], h, w)[0]

    out = {"unet": unet_mask}
    for bname, decoders in models.sam.items():
        backend = models.backends[bname]

        def sam(dec, bx, backend=backend):
            return to_native(dec.low_res_logits(backend.encode(x), bx)[:, 0], h, w)[0]

        def cascade(dec, backend=backend):
            small = (unet(x)[0, 0] > 0).cpu().numpy()  # device -> host, then the box
            b = mask_to_box(small)
            if b is None:  # the U-Net found nothing: SAM is not run
                return np.zeros((h, w), bool)
            return sam(dec, torch.from_numpy(b)[None].to(dev), backend)

        if "none" in decoders:
            out[f"sam_{bname}_none"] = lambda d=decoders["none"]: sam(d, None)
        if "box" in decoders:
            out[f"sam_{bname}_box"] = lambda d=decoders["box"]: sam(d, box)
            out[f"sam_{bname}_unet_box"] = lambda d=decoders["box"]: cascade(d)
        if "box_zeroshot" in decoders:
            out[f"sam_{bname}_box_zeroshot"] = lambda d=decoders["box_zeroshot"]: sam(d, box)
    return out


@torch.no_grad()
def measure_latency(
    models: Models,
    sample: np.ndarray,
    sample_box: np.ndarray | None,
    native_hw: tuple[int, int],
    device,
    n_runs: int = 20,
    warmup: int = 3,
) -> dict:
    """Batch-1 latency per model (see module docstring). ``sample``: float32 (C, S, S) slice in [0, 1];
    ``sample_box``: its ground-truth XYXY box (or None: a centred box is used)."""
    device = torch.device(device)
    x = torch.from_numpy(np.ascontiguousarray(sample, np.float32))[None].to(device)
    size = x.shape[-1]
    b = sample_box if sample_box is not None else np.array([0.3, 0.3, 0.6, 0.6], np.float32) * size
    box = torch.as_tensor(np.asarray(b, np.float32))[None].to(device)
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    res = {}
    unet_rt = getattr(models.unet, "runtime", "pytorch")
    for name, fn in pipelines(models, x, box, native_hw).items():
        bname = next((b for b in models.sam if name.startswith(f"sam_{b}_")), None)
        runtime = unet_rt if bname is None else getattr(models.backends[bname], "runtime", "pytorch")
        if name.endswith("_unet_box"):
            runtime = f"{runtime} (U-Net: {unet_rt})"
        res[name] = {
            **_stats(time_runs(fn, device, n_runs, warmup)),
            "device": dev_name,
            "runtime": runtime,
            "note": "whole pipeline per run, end to end",
        }
    for bname, decoders in models.sam.items():  # the encoder / decoder split (extra columns)
        backend = models.backends[bname]
        emb = backend.encode(x)
        enc = _stats(time_runs(lambda b=backend: b.encode(x), device, n_runs, warmup))
        for prompt, dec in decoders.items():
            bx = None if prompt == "none" else box
            dec_ms = _stats(time_runs(lambda d=dec, bx=bx, e=emb: d.low_res_logits(e, bx), device, n_runs, warmup))
            for name in [f"sam_{bname}_{prompt}"] + ([f"sam_{bname}_unet_box"] if prompt == "box" else []):
                res[name].update(encoder_ms=enc, decoder_ms=dec_ms)
    return res


# ----------------------------------------------------------------------------- writing
def export_prediction(pred: np.ndarray, source: str | os.PathLike, path: str | os.PathLike) -> Path:
    """uint8 NIfTI (1 = whole tumour) with the source image's affine and header."""
    ref = nib.load(source)
    return save_mask(pred, ref.affine, ref.header, path)


def fmt_ci(stats: dict, n: int) -> str:
    """ "0.900 [0.850, 0.950]", or "0.900 (CI n/a, n = 2)" when n cannot carry a CI."""
    ci = stats.get("ci95")
    if ci and None not in ci and np.isfinite(ci[0]):
        return f"{stats['mean']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
    return f"{stats['mean']:.3f} (CI n/a, n = {n})"


def fmt_fp(fp: dict) -> str:
    return "n/a (oracle)" if fp.get("value") is None else f"{fp['value']:.3f}"


def fmt_data(data: dict | None) -> str:
    """ "518 / 64 slices, 11 cases" (train / val slices, training cases)."""
    d = data or {}
    if d.get("train_slices") is None:
        return "unknown"
    if d["train_slices"] == 0:
        return "pretrained only"
    return f"{d['train_slices']} / {d['val_slices']} slices, {d['train_cases']} cases"


def fmt_p(test: dict | None) -> str:
    if not test:
        return ""
    if test.get("p_value") is None:
        return f"n/a (n = {test['n']}; min attainable p {test['min_attainable_p']:.3g})"
    return f"{test['p_value']:.3g} (min attainable {test['min_attainable_p']:.3g})"


def results_markdown(metrics: dict) -> str:
    ds = metrics["dataset"]
    label = (
        "SYNTHETIC data (not BraTS): these numbers say nothing about real scans"
        if ds["name"] == "synthetic"
        else "BraTS 2020 training data (held-out test split)"
    )
    n = ds["n_test_cases"]
    n_tests = max((t["n_tests"] for t in metrics["statistics"].values()), default=0)
    stats_line = (
        f"95% CIs (bootstrap over patients) and Wilcoxon p-values need >= {MIN_PATIENTS_FOR_STATS} test "
        f"patients; with {n} they are n/a."
        if n < MIN_PATIENTS_FOR_STATS
        else "Dice: mean [bootstrap 95% CI over patients]."
    )
    lines = [
        f"# Results: {label}",
        "",
        f"Dataset: **{ds['name']}**, {n} test patients, split sha256 `{ds['split_sha256'][:16]}…`.",
        "Per-patient 3-D metrics (headline), per-slice Dice on tumour slices and on all brain slices, "
        "false-positive rate on tumour-free slices, batch-1 end-to-end latency, and what each model learnt from "
        "(train / val slices, training cases).",
        stats_line,
        f"Paired Wilcoxon signed-rank tests vs the U-Net: {n_tests} tests on the same {n} patients "
        "(no multiple-comparison correction applied; the smallest p the exact test can reach is shown).",
        "",
        "| model | prompt | trained on | Dice (patient) | IoU | precision | recall | HD95 mm | "
        "Dice (tumour slices) | Dice (all slices) | FP rate | latency ms median (p90) | p (Wilcoxon vs U-Net) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in metrics["models"].items():
        pc, lat = m["per_case"], m["latency_ms"]
        lines.append(
            f"| {name} | {m['prompt']} | {fmt_data(m.get('data'))} | {fmt_ci(pc['dice'], m['n_cases'])} | "
            f"{pc['iou']['mean']:.3f} | {pc['precision']['mean']:.3f} | {pc['recall']['mean']:.3f} | "
            f"{pc['hd95']['mean']:.1f} | {m['per_slice_tumour']['dice']['mean']:.3f} | "
            f"{m['per_slice']['dice']['mean']:.3f} | {fmt_fp(m['false_positive_rate'])} | "
            f"{lat['median']:.1f} ({lat['p90']:.1f}) {lat['device']}"
            f"{', ' + lat['runtime'] if lat.get('runtime') else ''} | "
            f"{fmt_p(metrics['statistics'].get(name))} |"
        )
    prov = metrics.get("provenance", {})
    backends = metrics.get("sam_backends") or {}
    if backends:
        lines += ["", "SAM backends (which weights ran and why):"]
        lines += [f"- {b}: {v.get('why') or 'sha256 ' + str(v.get('checkpoint_sha256'))}" for b, v in backends.items()]
    lines += ["", "Conventions:"] + [f"- {k}: {v}" for k, v in metrics["conventions"].items()]
    lines += [
        "- box = ground-truth box: an ORACLE prompt, not a fair comparison with the U-Net; "
        "unet_box = box of the U-Net's prediction (fully automatic); none = no prompt.",
        f"- latency: {metrics['latency_protocol']}",
        f"- produced by `{prov.get('command', '?')}` at commit `{prov.get('commit', '?')}`"
        + (" (with uncommitted changes)" if prov.get("dirty") else ""),
        "",
    ]
    return "\n".join(lines)


PROMPT_LABEL = {
    "unet": "-",
    "none": "none",
    "box": "oracle GT box",
    "unet_box": "U-Net box",
    "box_zeroshot": "oracle GT box, zero-shot (not fine-tuned)",
}


def prompt_of(name: str) -> str:
    if name == "unet":
        return PROMPT_LABEL["unet"]
    for suffix in ("unet_box", "box_zeroshot", "none", "box"):
        if name.endswith(f"_{suffix}"):
            return PROMPT_LABEL[suffix]
    raise ValueError(f"unknown model name {name!r}")


def backend_of(models: Models, name: str) -> str | None:
    """The SAM backend of model ``name`` (``sam_vit_b_box`` -> ``vit_b``); None for the U-Net."""
    hits = [b for b in models.backends if name.startswith(f"sam_{b}_")]
    return max(hits, key=len) if hits else None


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
) -> tuple[dict, dict]:
    """Evaluate on the test split and write every result file.

    Returns ``(metrics, volumes)``: the dict written to ``metrics.json`` and, per test case,
    ``{"gt", "pred": {model: bool (H, W, D)}, "flair"}`` for figures (not written).
    ``command``: how the run was started, recorded with the git commit (default: ``$BRAINSEG_RUN_COMMAND``).
    """
    from tqdm.auto import tqdm

    root = Path(info["root"])
    by_id = {c.case_id: c for c in discover_cases(root)}
    missing = [cid for cid in split["test"] if cid not in by_id]
    if missing:
        raise FileNotFoundError(f"test cases {missing[:5]} from splits.json are not under {root}")
    test_ids = split["test"][:max_cases] if max_cases else split["test"]
    device = resolve_device(str(device)) if isinstance(device, str) else device
    pc_rows, ps_rows, volumes, sample = [], [], {}, None
    for cid in tqdm(test_ids, desc="test cases", disable=not progress):
        res = predict_case(models, by_id[cid], img_size, modalities, device)
        pc_rows += case_rows(cid, res)
        ps_rows += slice_rows(cid, res)
        if export:
            for name, pred in res["pred"].items():
                export_prediction(pred, by_id[cid].images["flair"], run.predictions(name) / f"{cid}_pred.nii.gz")
        volumes[cid] = {"gt": res["gt"], "pred": res["pred"], "flair": res["flair"]}
        sample = sample or (res["sample"], res["sample_box"], res["gt"].shape[:2])
    per_case, per_slice = pd.DataFrame(pc_rows), pd.DataFrame(ps_rows)
    summary = summarise(per_case, per_slice)
    latency = measure_latency(models, *sample, device, latency_runs)
    for name in summary:
        summary[name]["latency_ms"] = latency[name]
        summary[name]["prompt"] = prompt_of(name)
        summary[name]["oracle"] = is_oracle(name)
        summary[name]["data"] = models.data.get(name)
        summary[name]["backend"] = backend_of(models, name)
    metrics = {
        "dataset": {
            "name": info["name"],
            "split_sha256": split["sha256"],
            "n_test_cases": len(test_ids),
            "test_cases": list(test_ids),
            "root": str(root),
            "note": "synthetic data: not comparable with BraTS results" if info["name"] == "synthetic" else "",
        },
        "models": summary,
        "sam_backends": {
            b: {"checkpoint_sha256": getattr(m, "checkpoint_sha256", None), "why": getattr(m, "provenance", "")}
            for b, m in models.backends.items()
        },
        "statistics": paired_tests(per_case),
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
            "test": f"two-sided Wilcoxon signed-rank on per-patient Dice vs unet; null below "
            f"{MIN_PATIENTS_FOR_STATS} test patients; min attainable p = 2^(1-n)",
            "data": "train_slices / val_slices: slices each model was trained / checkpoint-selected on "
            "(box decoders: tumour slices only, a box needs a tumour); train_cases: patients",
        },
        "latency_protocol": f"batch 1 on a real test slice, {latency_runs} timed runs after 3 warm-up runs, "
        "torch.cuda.synchronize on GPU; each run = the variant's whole pipeline (slice in -> "
        "native-grid mask on the host; unet_box includes the U-Net, the copy to host and the box); "
        "median and p90 of those totals; SAM encoder / decoder split timed separately",
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
