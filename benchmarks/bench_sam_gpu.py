"""SAM on a GPU: encoder precision (speed and agreement) and seconds per 1,000 slices for caching + decoder training.

    python benchmarks/bench_sam_gpu.py [--out outputs/benchmarks/sam_gpu.json] [--slices 128] [--cpu-small]

Part 1, ``encoder``: for each backend (LiteMedSAM with its bundled weights; SAM ViT-B with random weights
when no checkpoint is given, timing only) and each encoder precision:
  * ``fp32``: TF32 off for matmuls and convolutions (the reference);
  * ``tf32``: TF32 on (capability >= 8);
  * ``fp16`` / ``bf16``: ``torch.autocast`` around the image encoder;
  * ``runtime``: ``SamBackend.encode``, what the package runs (on CUDA: fp16 autocast + fused attention);
ms per slice at the given batch (after warm-up, ``torch.cuda.synchronize`` around the timed loop),
seconds per 1,000 slices, embedding ``max_abs_diff`` and ``rel_rms_diff`` vs fp32, and, for weights that
mean something (LiteMedSAM; ViT-B with ``--vit-b-checkpoint``), box-prompted masks decoded from each
precision's embeddings compared with the fp32 masks (``mask_dice_vs_fp32``: mean Dice of the thresholded
masks) and with the ground truth (``dice_vs_truth``).
Part 2, ``pipeline``: the package's own path at the full profile's slice size (240 px): ``build_embedding_cache``
on tumour slices of synthetic cases, then ``fit`` of a box-prompted ``SamDecoderModel`` for 2 epochs
(AMP as the training engine chooses); seconds per 1,000 slices for caching and for one decoder epoch.
Slices are synthetic (generator of this package): timing and agreement only, no accuracy claim.
``--cpu-small`` (automatic without CUDA) runs tiny sizes so the test suite can exercise the code.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from brainseg_utils.data.brats import discover_cases
from brainseg_utils.data.slices import SliceConfig, build_cache
from brainseg_utils.data.synthetic import SyntheticConfig, generate_dataset
from brainseg_utils.evaluation.metrics import dice as dice_score
from brainseg_utils.models.sam.backends import build_backend
from brainseg_utils.models.sam.decoder import SamDecoderModel
from brainseg_utils.models.sam.prompts import mask_to_box
from brainseg_utils.runtime.checkpoints import amp_dtype
from brainseg_utils.runtime.env import device_summary
from brainseg_utils.runtime.io import atomic_write_json
from brainseg_utils.training.embeddings import EmbeddingDataset, build_embedding_cache
from brainseg_utils.training.engine import TrainConfig, fit


@contextlib.contextmanager
def precision(name: str, device: torch.device):
    """fp32 (TF32 off), tf32 (TF32 on), fp16/bf16 (autocast) around the encoder call."""
    mm, cd = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = name == "tf32"
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(name)
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = mm, cd


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tumour_slices(root: Path, img_size: int, n: int) -> tuple[torch.Tensor, np.ndarray]:
    """float32 (n, 1, S, S) slices with tumour and their masks (n, S, S) from the slice cache of ``root``."""
    cache = build_cache(discover_cases(root), root.parent / "slices", SliceConfig(img_size=img_size), progress=False)
    rows = np.flatnonzero(cache.index["has_tumour"].to_numpy())
    rows = rows[np.linspace(0, len(rows) - 1, min(n, len(rows))).round().astype(int)]
    return torch.from_numpy(np.asarray(cache.images[rows], np.float32)), np.asarray(cache.masks[rows]) > 0


def _mean_dice(a: np.ndarray, b: np.ndarray) -> float:
    return round(float(np.mean([dice_score(x, y) for x, y in zip(a, b, strict=True)])), 4)


def encoder_part(backend, name: str, x: torch.Tensor, masks: np.ndarray, batch: int, precisions, device, meaningful):
    backend.to(device)
    enc = backend.image_encoder.eval()
    size = x.shape[-1]
    boxes = torch.tensor(np.stack([mask_to_box(m) for m in masks]), dtype=torch.float32)
    dec = SamDecoderModel(backend, "box", size).to(device).eval()
    rows, ref_emb, ref_masks = [], None, None
    for prec in precisions:
        embs = []
        if prec == "runtime":  # the package's path: SamBackend.encode through its runner (fp16 + fused on CUDA)
            ctx, fn = contextlib.nullcontext(), backend.encode
        else:
            ctx, fn = precision(prec, device), lambda im: enc(backend.preprocess(im))
        with ctx:
            fn(x[:batch].to(device))  # warm-up (autotune, allocator)
            _sync(device)
            t0 = time.perf_counter()
            for s in range(0, len(x), batch):
                embs.append(fn(x[s : s + batch].to(device)).float())
            _sync(device)
            dt = time.perf_counter() - t0
        emb = torch.cat(embs)
        with torch.no_grad():
            pred = (dec(emb, boxes.to(device)) > 0).squeeze(1).cpu().numpy()
        if ref_emb is None:
            ref_emb, ref_masks = emb, pred
        row = {
            "backend": name,
            "precision": prec,
            "batch": batch,
            "slices": len(x),
            "ms_per_slice": round(1000 * dt / len(x), 3),
            "seconds_per_1000_slices": round(1000 * dt / len(x), 2),
            "images_per_s": round(len(x) / dt, 1),
            "max_abs_diff": float((emb - ref_emb).abs().max()),
            "rel_rms_diff": float(((emb - ref_emb).pow(2).mean() / ref_emb.pow(2).mean()).sqrt()),
        }
        if meaningful:
            row["mask_dice_vs_fp32"] = _mean_dice(pred, ref_masks)
            row["dice_vs_truth"] = _mean_dice(pred, masks)
        print(row, flush=True)
        rows.append(row)
    return rows


def pipeline_part(backend, name: str, root: Path, work: Path, img_size: int, n: int, device, epochs: int) -> dict:
    cases = discover_cases(root)
    cache = build_cache(cases, work / "slices", SliceConfig(img_size=img_size), progress=False)
    rows = np.flatnonzero(cache.index["has_tumour"].to_numpy()).tolist()  # timing only: any disjoint rows
    tr, va = rows[:n], rows[n : n + max(2, n // 4)]
    t0 = time.perf_counter()
    emb = build_embedding_cache(
        backend, cache, tr + va, work / f"emb-{name}", batch_size=16, device=str(device), progress=False
    )
    _sync(device)
    t_cache = time.perf_counter() - t0
    model = SamDecoderModel(backend, "box", img_size)
    cfg = TrainConfig(epochs=epochs, batch_size=16, lr=1e-4, device=str(device), resume="never", progress=False)
    t0 = time.perf_counter()
    hist = fit(
        model,
        EmbeddingDataset(emb, cache, tr, "box"),
        EmbeddingDataset(emb, cache, va, "box", 0),
        work / f"sam-{name}",
        cfg,
        params=model.trainable_parameters(),
    )
    t_fit = time.perf_counter() - t0
    ips = hist[-1]["train_images_per_s"]
    out = {
        "backend": name,
        "img_size": img_size,
        "cached_slices": len(tr) + len(va),
        "caching_seconds": round(t_cache, 2),
        "caching_seconds_per_1000_slices": round(1000 * t_cache / (len(tr) + len(va)), 1),
        "train_slices": len(tr),
        "epochs": epochs,
        "fit_seconds": round(t_fit, 2),
        "train_images_per_s_last_epoch": ips,
        "decoder_epoch_seconds_per_1000_slices": round(1000 / ips, 1) if ips else None,
        "amp_dtype": str(amp_dtype(device)),
        "train_loss": [h["train_loss"] for h in hist],
    }
    print(out, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs/benchmarks/sam_gpu.json")
    ap.add_argument("--slices", type=int, default=128, help="slices per encoder timing")
    ap.add_argument("--vit-b-checkpoint", default=None, help="official sam_vit_b_01ec64.pth (else random weights)")
    ap.add_argument("--cpu-small", action="store_true")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.cpu_small
    device = torch.device("cuda" if cuda else "cpu")
    small = not cuda
    img = 64 if small else 240
    n = 2 if small else args.slices
    precisions = ["fp32", "tf32", "fp16", "bf16", "runtime"] if cuda else ["fp32"]
    res = {"device": device_summary(), "img_size": img, "synthetic": True, "encoder": [], "pipeline": []}
    with tempfile.TemporaryDirectory(prefix="bench_sam_gpu-") as tmp:
        work = Path(tmp)
        root = generate_dataset(
            work / "synthetic",
            SyntheticConfig(cases=2 if small else 8, seed=0, depth=16 if small else 96),
            workers=1 if small else 4,
            progress=False,
        )
        x, masks = tumour_slices(root, img, n)
        lite = build_backend("litemedsam")
        res["encoder"] += encoder_part(lite, "litemedsam", x, masks, 1 if small else 32, precisions, device, True)
        vit = build_backend("vit_b", args.vit_b_checkpoint, random_init=args.vit_b_checkpoint is None)
        if small:  # a 1024-px ViT-B forward is minutes on a CPU: time two slices only
            x, masks = x[:1], masks[:1]
        res["encoder"] += encoder_part(
            vit, "vit_b", x, masks, 1 if small else 16, precisions, device, args.vit_b_checkpoint is not None
        )
        res["vit_b_weights"] = args.vit_b_checkpoint or "random (timing only)"
        if not small:
            for name, backend in (("litemedsam", lite), ("vit_b", vit)):
                res["pipeline"].append(pipeline_part(backend, name, root, work / name, img, 256, device, 2))
    atomic_write_json(Path(args.out), res)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
