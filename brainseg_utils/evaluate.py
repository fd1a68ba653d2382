"""Evaluation of every model variant on the test split: metrics, statistics, latency, result files, NIfTI.

Protocol (written into ``metrics.json`` and ``results.md``):
  * Every *brain* axial slice (any voxel != 0) of every test volume is predicted at the slice-cache
    size, the probability map is resized back to the native grid (bilinear) and thresholded at
    0.5; slices without brain are predicted empty. Slices are stacked back into a volume.
  * Per patient (the headline): Dice, IoU, precision, recall and HD95 on the 3-D volume against
    the whole-tumour label, voxel spacing from the NIfTI header.
  * Per slice: the same metrics on each brain slice (2-D, in-plane spacing), averaged over
    tumour slices and over all brain slices; the false-positive rate is the share of tumour-free
    brain slices with any predicted pixel.
  * Bootstrap 95% CIs (2,000 resamples of patients) and a paired two-sided Wilcoxon signed-rank
    test of per-patient Dice between the U-Net and each SAM variant.
  * Models: ``unet``; ``sam_<backend>_none`` (no prompt); ``sam_<backend>_box`` (ground-truth box:
    an ORACLE prompt, slices without tumour get no box and are predicted empty);
    ``sam_<backend>_unet_box`` (box-trained decoder prompted with the box of the U-Net's
    prediction; slices where the U-Net predicts nothing are predicted empty);
    ``sam_<backend>_box_zeroshot`` (the pretrained decoder, not fine-tuned, with the oracle box:
    how MRI-like the data looks to the model, and what fine-tuning added).
  * Latency: batch 1, after warm-up runs, ``torch.cuda.synchronize`` around each run on GPU,
    median and p90 over N runs, device recorded; SAM split into encoder and decoder time
    (``unet_box`` also includes the U-Net).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import metrics as M
from .brats import Case, discover_cases, load_case
from .checkpoints import load_checkpoint, load_model_state, resolve_device
from .io import atomic_write, atomic_write_json, atomic_write_text
from .sam import SamDecoderModel, build_backend, mask_to_box
from .slices import resize_slice
from .unet import UNet


# ----------------------------------------------------------------------------- loading models
def check_split(ckpt: dict, path: Path, split_sha256: str) -> None:
    """Refuse a checkpoint trained on another split than the one being evaluated."""
    have = ckpt.get("meta", {}).get("split_sha256")
    if have != split_sha256:
        raise ValueError(f"{path} was trained on split {str(have)[:12]}…, but splits.json has "
                         f"{split_sha256[:12]}…; evaluating it on this test split would leak or mismatch cases. "
                         "Re-run notebooks 02/03 on this split or point OUTPUT_DIR at the matching run.")


def load_unet(path: str | os.PathLike, split_sha256: str | None = None, device="cpu") -> tuple[UNet, dict]:
    path = Path(path)
    ckpt = load_checkpoint(path, expect_arch="unet")
    if split_sha256 is not None:
        check_split(ckpt, path, split_sha256)
    cfg = {k: v for k, v in ckpt["config"]["model"].items() if k != "arch"}
    model = UNet(**cfg)
    load_model_state(model, ckpt["model"], str(path))
    return model.to(device).eval(), ckpt


def load_sam_decoder(path: str | os.PathLike, backend, split_sha256: str | None = None, device="cpu"
                     ) -> tuple[SamDecoderModel, dict]:
    path = Path(path)
    ckpt = load_checkpoint(path, expect_arch="sam_decoder")
    if split_sha256 is not None:
        check_split(ckpt, path, split_sha256)
    cfg = ckpt["config"]["model"]
    if cfg.get("backend") != backend.name:
        raise ValueError(f"{path} was trained with backend {cfg.get('backend')!r}, not {backend.name!r}")
    model = SamDecoderModel(backend, cfg["prompt"], cfg["img_size"])
    load_model_state(model, ckpt["model"], str(path))
    return model.to(device).eval(), ckpt


@dataclass
class Models:
    """What evaluation runs: the U-Net and, per SAM backend, the trained decoders by prompt."""

    unet: UNet
    sam: dict[str, dict[str, SamDecoderModel]] = field(default_factory=dict)  # backend -> prompt -> decoder
    backends: dict = field(default_factory=dict)

    def names(self) -> list[str]:
        out = ["unet"]
        for b, decs in self.sam.items():
            if "none" in decs:
                out.append(f"sam_{b}_none")
            if "box" in decs:
                out += [f"sam_{b}_box", f"sam_{b}_unet_box"]
            if "box_zeroshot" in decs:
                out.append(f"sam_{b}_box_zeroshot")
        return out


def load_models(run, split_sha256: str, device="cpu", sam_checkpoints: dict | None = None) -> Models:
    """The U-Net from ``unet/best.pt`` and every ``sam/sam_<backend>_<prompt>/best.pt``.

    ``sam_checkpoints`` maps a backend name to its weights path (vit_* / medsam; LiteMedSAM needs none).
    """
    unet_path = run.root / "unet" / "best.pt"
    if not unet_path.exists():
        raise FileNotFoundError(f"{unet_path} not found: run notebooks/02_train_unet.ipynb first")
    unet, _ = load_unet(unet_path, split_sha256, device)
    models = Models(unet)
    sam_root = run.root / "sam"
    for best in sorted(sam_root.glob("sam_*/best.pt")) if sam_root.exists() else []:
        cfg = load_checkpoint(best, expect_arch="sam_decoder")["config"]["model"]
        name = cfg["backend"]
        if name not in models.backends:
            ckpt_path = (sam_checkpoints or {}).get(name)
            models.backends[name] = build_backend(name, ckpt_path).to(device)
        dec, _ = load_sam_decoder(best, models.backends[name], split_sha256, device)
        models.sam.setdefault(name, {})[cfg["prompt"]] = dec
        if cfg["prompt"] == "box":  # the pretrained decoder as shipped: how much did fine-tuning add?
            zero = SamDecoderModel(models.backends[name], "box", cfg["img_size"])
            models.sam[name]["box_zeroshot"] = zero.to(device).eval()
    return models


# ----------------------------------------------------------------------------- prediction
def to_native(prob: torch.Tensor, h: int, w: int) -> np.ndarray:
    """(n, S, S) probabilities -> bool (n, h, w): bilinear back to the padded square, crop the padding, > 0.5."""
    side = max(h, w)
    up = F.interpolate(prob[:, None].float(), size=(side, side), mode="bilinear", align_corners=False)[:, 0]
    ph, pw = (side - h) // 2, (side - w) // 2
    return (up[:, ph:ph + h, pw:pw + w] > 0.5).cpu().numpy()


@torch.no_grad()
def _batched(fn, n: int, batch: int) -> torch.Tensor:
    return torch.cat([fn(i, min(i + batch, n)) for i in range(0, n, batch)]) if n else torch.zeros(0)


@torch.no_grad()
def predict_case(models: Models, case: Case, img_size: int, modalities: tuple[str, ...], device="cpu",
                 batch: int = 8) -> dict:
    """Predicted whole-tumour volumes of every model for one case, plus the truth and geometry.

    Returns {"gt": bool (H, W, D), "pred": {model: bool (H, W, D)}, "brain_z": int array,
    "affine", "spacing", "flair": float32 (H, W, D) in [0, 1]}.
    """
    vol = load_case(case, modalities)
    image, wt, brain = vol["image"], vol["wt"].astype(bool), vol["brain"]
    h, w, d = wt.shape
    zs = np.flatnonzero(brain.reshape(-1, d).any(0))
    small = [resize_slice(image[..., z], wt[..., z].astype(np.uint8), img_size) for z in zs]
    x = torch.from_numpy(np.stack([s[0] for s in small]).astype(np.float32)) if len(zs) else torch.zeros(0)
    gt_small = np.stack([s[1] for s in small]) if len(zs) else np.zeros((0, img_size, img_size), np.uint8)

    preds: dict[str, np.ndarray] = {}

    def place(p_native: np.ndarray) -> np.ndarray:
        out = np.zeros((h, w, d), bool)
        out[:, :, zs] = np.moveaxis(p_native, 0, -1)
        return out

    unet_prob = _batched(lambda a, b: torch.sigmoid(models.unet(x[a:b].to(device)))[:, 0].cpu(), len(zs), batch)
    preds["unet"] = place(to_native(unet_prob, h, w))
    unet_small = (unet_prob > 0.5).numpy()

    for bname, decoders in models.sam.items():
        preds.update(_sam_predictions(bname, models.backends[bname], decoders, x, gt_small, unet_small, device,
                                      batch, lambda p: place(to_native(p, h, w))))
    spacing = tuple(float(s) for s in nib.load(case.images["flair"]).header.get_zooms()[:3])
    return {"gt": wt, "pred": preds, "brain_z": zs, "affine": vol["affine"], "spacing": spacing,
            "flair": image[0]}


@torch.no_grad()
def _sam_predictions(bname, backend, decoders, x, gt_small, unet_small, device, batch, finish) -> dict:
    """SAM variants of one backend on a case's brain slices ``x`` (n, C, S, S); ``finish`` maps
    (n, S, S) probabilities to a native-grid volume. Each slice is encoded at most once."""
    n, size = len(x), x.shape[-1]
    need = np.zeros(n, bool)
    if "none" in decoders:
        need[:] = True
    if "box" in decoders:
        need |= gt_small.reshape(n, -1).any(1) | unet_small.reshape(n, -1).any(1)
    idx = np.flatnonzero(need)
    emb = _batched(lambda a, b: backend.encode(x[idx[a:b]].to(device)).cpu(), len(idx), batch)
    pos = {int(i): k for k, i in enumerate(idx)}

    def run(dec, rows, boxes):
        prob = torch.zeros(n, size, size)
        if len(rows):
            e = emb[[pos[int(r)] for r in rows]]
            bx = None if boxes is None else torch.from_numpy(np.stack(boxes))
            prob[rows] = _batched(lambda a, b: torch.sigmoid(
                dec(e[a:b].to(device), None if bx is None else bx[a:b].to(device)))[:, 0].cpu(), len(rows), batch)
        return finish(prob)

    out = {}
    if "none" in decoders:
        out[f"sam_{bname}_none"] = run(decoders["none"], np.arange(n), None)
    jobs = [("box", f"sam_{bname}_box", gt_small), ("box", f"sam_{bname}_unet_box", unet_small),
            ("box_zeroshot", f"sam_{bname}_box_zeroshot", gt_small)]
    for key, name, source in jobs:
        if key in decoders:
            rows = np.flatnonzero(source.reshape(n, -1).any(1))
            out[name] = run(decoders[key], rows, [mask_to_box(source[r]) for r in rows])
    return out


# ----------------------------------------------------------------------------- metrics tables
def case_rows(case_id: str, result: dict) -> list[dict]:
    gt = result["gt"]
    tumour_ml = float(gt.sum() * np.prod(result["spacing"]) / 1000.0)
    return [{"model": name, "case_id": case_id, "tumour_ml": round(tumour_ml, 3),
             **M.all_metrics(pred, gt, result["spacing"])} for name, pred in result["pred"].items()]


def slice_rows(case_id: str, result: dict) -> list[dict]:
    gt, rows = result["gt"], []
    for name, pred in result["pred"].items():
        for z in result["brain_z"]:
            g, p = gt[:, :, z], pred[:, :, z]
            rows.append({"model": name, "case_id": case_id, "z": int(z), "has_tumour": bool(g.any()),
                         "tumour_px": int(g.sum()), "pred_px": int(p.sum()),
                         **M.all_metrics(p, g, result["spacing"][:2])})
    return rows


def summarise(per_case: pd.DataFrame, per_slice: pd.DataFrame, seed: int = 0) -> dict:
    """Per model: per-case means with bootstrap CIs, per-slice means (tumour / all), FP rate."""
    out = {}
    for name, pc in per_case.groupby("model", sort=False):
        ps = per_slice[per_slice.model == name]
        tum, free = ps[ps.has_tumour], ps[~ps.has_tumour]
        entry = {"n_cases": int(len(pc)), "per_case": {}, "per_slice": {}, "per_slice_tumour": {}}
        for m in M.METRICS:
            lo, hi = M.bootstrap_ci(pc[m], seed=seed)
            entry["per_case"][m] = {"mean": float(pc[m].mean()), "median": float(pc[m].median()),
                                    "std": float(pc[m].std(ddof=1)) if len(pc) > 1 else 0.0,
                                    "ci95": [lo, hi]}
            entry["per_slice"][m] = {"mean": float(ps[m].mean()), "n": int(len(ps))}
            entry["per_slice_tumour"][m] = {"mean": float(tum[m].mean()) if len(tum) else float("nan"),
                                            "n": int(len(tum))}
        entry["false_positive_rate"] = {"value": float((free.pred_px > 0).mean()) if len(free) else float("nan"),
                                        "n_tumour_free_slices": int(len(free))}
        out[name] = entry
    return out


def paired_tests(per_case: pd.DataFrame, reference: str = "unet", metric: str = "dice") -> dict:
    wide = per_case.pivot(index="case_id", columns="model", values=metric)
    return {name: {"vs": reference, "metric": metric, **M.paired_wilcoxon(wide[reference], wide[name])}
            for name in wide.columns if name != reference}


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


@torch.no_grad()
def measure_latency(models: Models, img_size: int, in_channels: int, device, n_runs: int = 20, warmup: int = 3
                    ) -> dict:
    """Batch-1 latency per model (see module docstring)."""
    device = torch.device(device)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, in_channels, img_size, img_size, generator=g).to(device)
    box = torch.tensor([[img_size * 0.3, img_size * 0.3, img_size * 0.6, img_size * 0.6]], device=device)
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    res = {"unet": {**_stats(time_runs(lambda: models.unet(x), device, n_runs, warmup)), "device": dev_name}}
    for bname, decoders in models.sam.items():
        backend = models.backends[bname]
        emb = backend.encode(x)
        enc = _stats(time_runs(lambda b=backend: b.encode(x), device, n_runs, warmup))
        for prompt, dec in decoders.items():
            bx = None if prompt == "none" else box
            dec_ms = _stats(time_runs(lambda d=dec, bx=bx, e=emb: d(e, bx), device, n_runs, warmup))
            names = [f"sam_{bname}_{prompt}"] + ([f"sam_{bname}_unet_box"] if prompt == "box" else [])
            for name in names:
                total = enc["median"] + dec_ms["median"] + (res["unet"]["median"] if name.endswith("unet_box") else 0)
                res[name] = {"median": total, "p90": enc["p90"] + dec_ms["p90"] + (
                    res["unet"]["p90"] if name.endswith("unet_box") else 0), "n_runs": n_runs,
                    "encoder_ms": enc, "decoder_ms": dec_ms, "device": dev_name,
                    "note": "median = sum of the medians of the parts"}
    return res


# ----------------------------------------------------------------------------- writing
def export_prediction(pred: np.ndarray, source: str | os.PathLike, path: str | os.PathLike) -> Path:
    """uint8 NIfTI (1 = whole tumour) with the source image's affine and header."""
    ref = nib.load(source)
    img = nib.Nifti1Image(pred.astype(np.uint8), ref.affine, ref.header)
    img.set_data_dtype(np.uint8)  # with a header given, nibabel keeps the header's dtype otherwise
    img.header["scl_slope"], img.header["scl_inter"] = 1.0, 0.0
    return atomic_write(path, lambda tmp: nib.save(img, tmp), suffix=".nii.gz")


def results_markdown(metrics: dict) -> str:
    ds = metrics["dataset"]
    label = "SYNTHETIC data (not BraTS): these numbers say nothing about real scans" if ds["name"] == "synthetic" \
        else "BraTS 2020 training data (held-out test split)"
    lines = [f"# Results: {label}", "",
             f"Dataset: **{ds['name']}**, {ds['n_test_cases']} test patients, split sha256 `{ds['split_sha256'][:16]}…`.",
             "Per-patient 3-D metrics (headline; mean [bootstrap 95% CI]), per-slice Dice on tumour slices and on "
             "all brain slices, false-positive rate on tumour-free slices, batch-1 latency.", "",
             "| model | prompt | Dice (patient) | IoU | precision | recall | HD95 mm | Dice (tumour slices) | "
             "Dice (all slices) | FP rate | latency ms (median) | p (Wilcoxon vs U-Net) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in metrics["models"].items():
        pc = m["per_case"]

        def ci(k, pc=pc):
            lo, hi = pc[k]["ci95"]
            return f"{pc[k]['mean']:.3f} [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else f"{pc[k]['mean']:.3f}"

        p = metrics["statistics"].get(name, {}).get("p_value")
        lines.append(f"| {name} | {m['prompt']} | {ci('dice')} | {pc['iou']['mean']:.3f} | {pc['precision']['mean']:.3f} | "
                     f"{pc['recall']['mean']:.3f} | {pc['hd95']['mean']:.1f} | {m['per_slice_tumour']['dice']['mean']:.3f} | "
                     f"{m['per_slice']['dice']['mean']:.3f} | {m['false_positive_rate']['value']:.3f} | "
                     f"{m['latency_ms']['median']:.1f} ({m['latency_ms']['device']}) | "
                     f"{'' if p is None else ('n/a' if not np.isfinite(p) else f'{p:.3g}')} |")
    lines += ["", "Conventions:"] + [f"- {k}: {v}" for k, v in metrics["conventions"].items()]
    lines += ["- box = ground-truth box: an ORACLE prompt, not a fair comparison with the U-Net; "
              "unet_box = box of the U-Net's prediction (fully automatic); none = no prompt.",
              f"- latency: {metrics['latency_protocol']}", ""]
    return "\n".join(lines)


PROMPT_LABEL = {"unet": "-", "none": "none", "box": "oracle GT box", "unet_box": "U-Net box",
                "box_zeroshot": "oracle GT box, zero-shot (not fine-tuned)"}


def prompt_of(name: str) -> str:
    if name == "unet":
        return PROMPT_LABEL["unet"]
    for suffix in ("unet_box", "box_zeroshot", "none", "box"):
        if name.endswith(f"_{suffix}"):
            return PROMPT_LABEL[suffix]
    raise ValueError(f"unknown model name {name!r}")


def run_evaluation(run, models: Models, split: dict, info: dict, img_size: int, modalities: tuple[str, ...],
                   device="cpu", latency_runs: int = 20, export: bool = True, progress: bool = True,
                   max_cases: int = 0) -> dict:
    """Evaluate on the test split and write every result file. Returns the metrics dict."""
    from tqdm.auto import tqdm

    root = Path(info["root"])
    by_id = {c.case_id: c for c in discover_cases(root)}
    missing = [cid for cid in split["test"] if cid not in by_id]
    if missing:
        raise FileNotFoundError(f"test cases {missing[:5]} from splits.json are not under {root}")
    test_ids = split["test"][:max_cases] if max_cases else split["test"]
    device = resolve_device(str(device)) if isinstance(device, str) else device
    pc_rows, ps_rows, volumes = [], [], {}
    for cid in tqdm(test_ids, desc="test cases", disable=not progress):
        res = predict_case(models, by_id[cid], img_size, modalities, device)
        pc_rows += case_rows(cid, res)
        ps_rows += slice_rows(cid, res)
        if export:
            for name, pred in res["pred"].items():
                export_prediction(pred, by_id[cid].images["flair"], run.predictions(name) / f"{cid}_pred.nii.gz")
        volumes[cid] = {"gt": res["gt"], "pred": res["pred"], "flair": res["flair"]}
    per_case, per_slice = pd.DataFrame(pc_rows), pd.DataFrame(ps_rows)
    summary = summarise(per_case, per_slice)
    latency = measure_latency(models, img_size, len(modalities), device, latency_runs)
    for name in summary:
        summary[name]["latency_ms"] = latency[name]
        summary[name]["prompt"] = prompt_of(name)
        summary[name]["oracle"] = prompt_of(name).startswith("oracle")
    metrics = {
        "dataset": {"name": info["name"], "split_sha256": split["sha256"], "n_test_cases": len(test_ids),
                    "test_cases": list(test_ids), "root": str(root),
                    "note": "synthetic data: not comparable with BraTS results" if info["name"] == "synthetic" else ""},
        "models": summary,
        "statistics": paired_tests(per_case),
        "conventions": {**M.CONVENTIONS, "target": "whole tumour (labels 1, 2, 4)",
                        "per_case": "3-D volume of every brain slice's prediction, native grid",
                        "per_slice": "2-D, every brain slice of the test volumes",
                        "false_positive_rate": "share of tumour-free brain slices with any predicted pixel",
                        "ci95": "percentile bootstrap over patients, 2000 resamples",
                        "test": "two-sided Wilcoxon signed-rank on per-patient Dice vs unet"},
        "latency_protocol": f"batch 1, {latency_runs} timed runs after 3 warm-up runs, torch.cuda.synchronize on GPU; "
                            "SAM = image encoder + decoder (unet_box adds the U-Net)",
    }
    res_dir = run.results
    atomic_write_json(res_dir / "metrics.json", json.loads(json.dumps(metrics, default=float)))  # numpy -> float
    atomic_write(res_dir / "per_case.csv", lambda tmp: per_case.to_csv(tmp, index=False))
    atomic_write(res_dir / "per_slice.csv", lambda tmp: per_slice.to_csv(tmp, index=False))
    atomic_write_text(res_dir / "results.md", results_markdown(metrics))
    metrics["_volumes"] = volumes  # for figures in the notebook; not written
    return metrics


def parse_checkpoints(text: str) -> dict[str, str]:
    """"vit_b=/a.pth,medsam=/b.pth" -> {"vit_b": "/a.pth", "medsam": "/b.pth"} (empty text -> {})."""
    out = {}
    for item in filter(None, (s.strip() for s in str(text).split(","))):
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ValueError(f"SAM_CHECKPOINTS items look like backend=/path/to/file.pth, got {item!r}")
        out[name.strip()] = path.strip()
    return out
