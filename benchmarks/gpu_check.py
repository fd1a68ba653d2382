"""GPU acceptance check: short full-profile training of both models on synthetic data, plus throughput.

    python benchmarks/gpu_check.py [--out outputs/benchmarks/gpu_check.json] [--cpu-small] [--workdir DIR]

One command, one GPU, <= 8 minutes (about 2-3 on an H100). Prints one ``PASS``/``FAIL`` line per
check and writes every figure to JSON; exits 1 when any check fails.

  1. ``amp_dtype``: the training engine's choice, bf16 on compute capability >= 8, fp16 + an enabled
     GradScaler below (read back from the checkpoint's scaler state); no AMP on CPU.
  2. U-Net (full profile: base 64 channels, 240 px, batch 16, lr 1e-4) trained a few epochs on
     synthetic BraTS-layout data: ``unet_finite_losses``, ``unet_loss_falls`` (last epoch's train
     loss below the first's), ``unet_checkpoint_reloads`` (``last.pt`` loaded with
     ``weights_only=True`` into a fresh model gives the same logits).
  3. SAM mask decoder on LiteMedSAM embeddings (bundled weights, embedding cache, jittered GT boxes):
     ``sam_finite_losses``, ``sam_loss_falls``, ``sam_checkpoint_reloads``; ``sam_wise_ft``: the WiSE-FT blend
     (``SAM_WISE_FT`` 0.5) scored on the device as notebook 03 does and loaded as notebook 04 does.
  4. ``unet_inference``: images/s at 240 x 240, batch 64, autocast (bf16/fp16) + channels_last,
     after warm-up, ``torch.cuda.synchronize`` around the timed loop. Target on an H100: >= 2,000.
  5. ``vit_b_encoder``: SAM ViT-B image encoder (random weights, timing only) images/s at
     1024 x 1024, batch 16, through the runtime the package encodes with on CUDA (fp16 autocast + fused
     attention, ``encoder_runtime.TorchRuntime``); the eager figure (segment-anything's attention under
     the engine's AMP dtype) is kept beside it. Target on an H100: >= 80.
  6. ``peak_memory``: ``torch.cuda.max_memory_allocated`` per phase, below 90 % of the card.

Throughput targets are judged only on an H100 (the card they were set for); on another GPU the
check passes when a finite rate is measured, and the JSON says no target applied.

``--cpu-small`` (automatic without CUDA) runs the same code path at toy sizes (U-Net base 8 at 64 px,
a 1-block ViT-B-width encoder at 128 px, 3 SAM slices with exact boxes: one full batch per epoch,
so "loss falls" tests plain gradient descent) so the test suite exercises it in well under a minute
of CPU; its throughputs mean nothing.
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from brainseg_utils.data.brats import discover_cases
from brainseg_utils.data.dataset import SliceDataset
from brainseg_utils.data.slices import SliceConfig, build_cache, write_split_once
from brainseg_utils.data.synthetic import SyntheticConfig, generate_dataset
from brainseg_utils.evaluation.inference import load_sam_decoder
from brainseg_utils.models.sam.backends import build_backend
from brainseg_utils.models.sam.decoder import SamDecoderModel
from brainseg_utils.models.unet import UNet
from brainseg_utils.runtime.checkpoints import amp_dtype, load_checkpoint, load_model_state
from brainseg_utils.runtime.encoder_runtime import build_runtime
from brainseg_utils.runtime.env import device_summary
from brainseg_utils.runtime.io import atomic_write_json
from brainseg_utils.training.embeddings import EmbeddingDataset, build_embedding_cache
from brainseg_utils.training.engine import TrainConfig, fit
from brainseg_utils.training.finetune import record_wise_ft

# name -> sizes; "gpu" is the full profile (configs/full.yaml), "cpu_small" a smoke-test stand-in.
PROFILES = {
    "gpu": {
        "cases": 8,
        "depth": 96,
        "img_size": 240,
        "unet_base": 64,
        "unet_batch": 16,
        "unet_epochs": 3,
        "lr": 1e-4,
        "sam_lr": 1e-4,
        "sam_batch": 16,
        "sam_epochs": 3,
        "sam_slices": 256,
        "sam_exact_boxes": False,
        "infer_size": 240,
        "infer_batch": 64,
        "infer_iters": 30,
        "vit_size": 1024,
        "vit_depth": 12,
        "vit_batch": 16,
        "vit_iters": 6,
    },
    "cpu_small": {
        "cases": 3,
        "depth": 16,
        "img_size": 64,
        "unet_base": 8,
        "unet_batch": 8,
        "unet_epochs": 3,
        "lr": 1e-3,
        "sam_lr": 1e-4,
        "sam_batch": 2,
        "sam_epochs": 2,
        "sam_slices": 2,
        "sam_exact_boxes": True,
        "infer_size": 64,
        "infer_batch": 4,
        "infer_iters": 2,
        "vit_size": 128,
        "vit_depth": 1,
        "vit_batch": 1,
        "vit_iters": 1,
    },
}
TARGETS_H100 = {"unet_inference_images_per_s": 2000.0, "vit_b_encoder_images_per_s": 80.0}


class Checks:
    def __init__(self):
        self.rows: list[dict] = []

    def add(self, name: str, ok: bool, detail: str) -> bool:
        self.rows.append({"check": name, "pass": bool(ok), "detail": detail})
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
        return ok


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux: KiB -> GB (process peak RSS)


def _rate(fn, n_images: int, iters: int, device) -> float:
    fn()  # warm-up (cuDNN autotune, allocator)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(device)
    return n_images * iters / (time.perf_counter() - t0)


def _loss_checks(checks: Checks, prefix: str, hist: list[dict]) -> dict:
    losses = [h["train_loss"] for h in hist] + [h["val_loss"] for h in hist]
    checks.add(
        f"{prefix}_finite_losses",
        all(math.isfinite(v) for v in losses),
        f"{len(losses)} train/val epoch losses, all finite"
        if all(map(math.isfinite, losses))
        else f"non-finite losses: {losses}",
    )
    first, last = hist[0]["train_loss"], hist[-1]["train_loss"]
    checks.add(
        f"{prefix}_loss_falls", last < first, f"train loss {first:.4f} (epoch 1) -> {last:.4f} (epoch {len(hist)})"
    )
    return {
        "train_loss": [h["train_loss"] for h in hist],
        "val_loss": [h["val_loss"] for h in hist],
        "val_dice": [h["val_dice"] for h in hist],
        "train_images_per_s": [h["train_images_per_s"] for h in hist],
    }


def _reload_check(
    checks: Checks, name: str, path: Path, fresh: torch.nn.Module, trained: torch.nn.Module, inputs, device
) -> None:
    ckpt = load_checkpoint(path)  # weights_only=True inside
    load_model_state(fresh, ckpt["model"], str(path))
    fresh.to(device).eval()
    trained.eval().to(memory_format=torch.contiguous_format)  # fit may have left it channels_last
    # Same kernels for both: TF32 off (cuDNN picks TF32 convolutions by default, which alone moves the
    # logits of a 64-channel U-Net by ~1e-2 between two algorithm choices; measured on an H200).
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            a, b = fresh(*inputs).float(), trained(*inputs).float()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    diff = float((a - b).abs().max())
    checks.add(
        f"{name}_checkpoint_reloads",
        diff <= 1e-5 and ckpt["epoch"] >= 1,
        f"{path.name} (epoch {ckpt['epoch']}, amp {ckpt['amp_dtype']}) reloaded with weights_only=True; "
        f"max |logit difference| {diff:.2e}",
    )


def _wise_ft_check(checks: Checks, best: Path, backend, emb, cache, rows, scfg) -> dict:
    """``SAM_WISE_FT`` on the device: notebook 03's ``record_wise_ft`` (the blend scored under the engine's AMP)
    then notebook 04's loader; the loaded weights must be 0.5 x pretrained + 0.5 x trained."""
    ckpt = load_checkpoint(best)
    rec = record_wise_ft(best, backend, EmbeddingDataset(emb, cache, rows, "box", 0), scfg, 0.5)
    blended, _ = load_sam_decoder(best, backend, device=scfg.device)
    pre = SamDecoderModel(backend, "box", ckpt["config"]["model"]["img_size"]).state_dict()
    got = blended.state_dict()
    diff = max(
        float((got[k].cpu().float() - 0.5 * (pre[k].cpu().float() + v.cpu().float())).abs().max())
        for k, v in ckpt["model"].items()
        if v.is_floating_point()
    )
    on = {t.device.type for t in got.values()}
    ok = math.isfinite(rec["val_dice"]) and diff <= 1e-6 and on == {torch.device(scfg.device).type}
    checks.add(
        "sam_wise_ft",
        ok,
        f"alpha 0.5: val Dice {rec['val_dice']:.4f} (as trained {rec['val_dice_finetuned']:.4f}); loaded weights "
        f"within {diff:.1e} of the blend, on {', '.join(sorted(on))}",
    )
    return {**rec, "max_abs_weight_diff": diff}


def vit_b_encoder(size: int, depth: int) -> torch.nn.Module:
    """SAM ViT-B's image encoder (random weights): segment-anything's ``build_sam_vit_b`` settings at
    ``size`` px (1024 = the real one) and ``depth`` blocks (12 = the real one)."""
    from segment_anything.modeling import ImageEncoderViT

    glob = [i for i in (2, 5, 8, 11) if i < depth] or [depth - 1]
    return ImageEncoderViT(
        depth=depth,
        embed_dim=768,
        img_size=size,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=12,
        patch_size=16,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=glob,
        window_size=14,
        out_chans=256,
    )


def run(profile: str, workdir: Path, out: Path) -> dict:
    p = PROFILES[profile]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    checks = Checks()
    res: dict = {"profile": profile, "sizes": p, "device": device_summary()}
    t_start = time.perf_counter()

    # ---- AMP policy
    dtype = amp_dtype(device)
    if device.type == "cuda":
        major = torch.cuda.get_device_capability(device)[0]
        want = torch.bfloat16 if major >= 8 else torch.float16
        checks.add(
            "amp_dtype",
            dtype == want,
            f"capability {major}.x -> {dtype} (expected {want}"
            f"{' + GradScaler' if want == torch.float16 else ', no GradScaler'})",
        )
    else:
        checks.add("amp_dtype", dtype is None, f"CPU -> {dtype} (AMP off on CPU)")
    res["amp_dtype"] = str(dtype).replace("torch.", "") if dtype else None

    # ---- data
    t0 = time.perf_counter()
    root = generate_dataset(
        workdir / "synthetic",
        SyntheticConfig(cases=p["cases"], seed=0, depth=p["depth"]),
        workers=4 if device.type == "cuda" else 1,
        progress=False,
    )
    cases = discover_cases(root)
    cache = build_cache(
        cases, workdir / "slices", SliceConfig(img_size=p["img_size"], tumour_free_fraction=0.3), progress=False
    )
    split = write_split_once(workdir / "splits.json", [c.case_id for c in cases], (0.6, 0.2, 0.2), seed=0)
    tr_rows, va_rows = cache.rows_for(split["train"]), cache.rows_for(split["val"])
    if profile == "cpu_small":
        tr_rows, va_rows = tr_rows[::2], va_rows[::2]
    res["data"] = {
        "cases": p["cases"],
        "depth": p["depth"],
        "train_slices": len(tr_rows),
        "val_slices": len(va_rows),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    # ---- U-Net
    _peak_reset(device)
    t0 = time.perf_counter()
    unet = UNet(1, p["unet_base"])
    cfg = TrainConfig(
        epochs=p["unet_epochs"],
        batch_size=p["unet_batch"],
        lr=p["lr"],
        channels_last=True,
        device=str(device),
        resume="never",
        progress=False,
    )
    hist = fit(unet, SliceDataset(cache, tr_rows), SliceDataset(cache, va_rows), workdir / "unet", cfg)
    res["unet_train"] = {
        **_loss_checks(checks, "unet", hist),
        "seconds": round(time.perf_counter() - t0, 1),
        "peak_memory_gb": round(_peak_gb(device), 2),
    }
    if device.type == "cuda":
        scaler = load_checkpoint(workdir / "unet" / "last.pt")["scaler"]
        want_scaler = dtype == torch.float16
        checks.add(
            "grad_scaler",
            bool(scaler) == want_scaler,
            f"GradScaler {'enabled' if scaler else 'disabled'} with {dtype} "
            f"(expected {'enabled' if want_scaler else 'disabled'})",
        )
    x_val = torch.from_numpy(np.asarray(cache.images[va_rows[:4]], np.float32)).to(device)
    _reload_check(checks, "unet", workdir / "unet" / "last.pt", UNet(1, p["unet_base"]), unet, (x_val,), device)

    # ---- U-Net inference throughput
    _peak_reset(device)
    unet.eval().to(memory_format=torch.channels_last)
    side = p["infer_size"]
    xb = torch.rand(p["infer_batch"], 1, side, side, device=device).contiguous(memory_format=torch.channels_last)

    def unet_step():
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            unet(xb)

    ips = _rate(unet_step, p["infer_batch"], p["infer_iters"], device)
    res["unet_inference"] = {
        "images_per_s": round(ips, 1),
        "img_size": side,
        "batch": p["infer_batch"],
        "dtype": res["amp_dtype"] or "float32",
        "channels_last": True,
        "base_channels": p["unet_base"],
        "peak_memory_gb": round(_peak_gb(device), 2),
    }
    _throughput_check(
        checks,
        "unet_inference",
        ips,
        "unet_inference_images_per_s",
        res,
        f"{side}x{side}, batch {p['infer_batch']}, {res['unet_inference']['dtype']}, channels_last",
    )

    # ---- SAM decoder on LiteMedSAM embeddings
    _peak_reset(device)
    t0 = time.perf_counter()
    has = cache.index["has_tumour"].to_numpy()
    s_tr = [r for r in tr_rows if has[r]][: p["sam_slices"]]
    s_va = [r for r in va_rows if has[r]][: max(1, p["sam_slices"] // 4)]
    backend = build_backend("litemedsam").to(device)
    emb = build_embedding_cache(
        backend, cache, s_tr + s_va, workdir / "emb", batch_size=16, device=str(device), progress=False
    )
    t_emb = time.perf_counter() - t0
    sam = SamDecoderModel(backend, "box", p["img_size"])
    scfg = TrainConfig(
        epochs=p["sam_epochs"],
        batch_size=p["sam_batch"],
        lr=p["sam_lr"],
        device=str(device),
        resume="never",
        progress=False,
    )
    # box jitter: the dataset's default in training (5th argument 0 = exact boxes, as validation uses)
    train_ds = (
        EmbeddingDataset(emb, cache, s_tr, "box", 0)
        if p["sam_exact_boxes"]
        else EmbeddingDataset(emb, cache, s_tr, "box")
    )
    hist = fit(
        sam,
        train_ds,
        EmbeddingDataset(emb, cache, s_va, "box", 0),
        workdir / "sam",
        scfg,
        params=sam.trainable_parameters(),
    )
    res["sam_train"] = {
        **_loss_checks(checks, "sam", hist),
        "embedding_seconds": round(t_emb, 1),
        "encoder_runtime": backend.runtime,
        "train_slices": len(s_tr),
        "val_slices": len(s_va),
        "seconds": round(time.perf_counter() - t0, 1),
        "peak_memory_gb": round(_peak_gb(device), 2),
    }
    e_val = torch.from_numpy(np.asarray(emb.emb[:2], np.float32)).to(device)
    b_val = torch.tensor([[8.0, 8.0, p["img_size"] / 2, p["img_size"] / 2]] * 2, device=device)
    _reload_check(
        checks,
        "sam",
        workdir / "sam" / "last.pt",
        SamDecoderModel(backend, "box", p["img_size"]),
        sam,
        (e_val, b_val),
        device,
    )
    res["sam_wise_ft"] = _wise_ft_check(checks, workdir / "sam" / "best.pt", backend, emb, cache, s_va, scfg)
    del backend, sam, emb

    # ---- SAM ViT-B encoder throughput (random weights)
    _peak_reset(device)
    vit = vit_b_encoder(p["vit_size"], p["vit_depth"]).to(device).eval()
    xv = torch.randn(p["vit_batch"], 3, p["vit_size"], p["vit_size"], device=device)

    def eager_step():  # segment-anything's own attention under the training engine's AMP dtype
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            vit(xv)

    eager = _rate(eager_step, p["vit_batch"], p["vit_iters"], device)
    # What the package runs when it builds an embedding cache (SamBackend.encode -> build_runtime).
    runner = build_runtime(vit, "pytorch", device, (3, p["vit_size"], p["vit_size"]), {}, label="vit_b")
    vps = _rate(lambda: runner(xv), p["vit_batch"], p["vit_iters"], device)
    res["vit_b_encoder"] = {
        "images_per_s": round(vps, 2),
        "img_size": p["vit_size"],
        "depth": p["vit_depth"],
        "batch": p["vit_batch"],
        "runtime": runner.describe(),
        "eager_autocast_images_per_s": round(eager, 2),
        "eager_dtype": str(dtype).replace("torch.", "") if dtype else "float32",
        "weights": "random (timing only)",
        "peak_memory_gb": round(_peak_gb(device), 2),
    }
    _throughput_check(
        checks,
        "vit_b_encoder",
        vps,
        "vit_b_encoder_images_per_s",
        res,
        f"{p['vit_size']}x{p['vit_size']}, depth {p['vit_depth']}, batch {p['vit_batch']}, "
        f"{res['vit_b_encoder']['runtime']['precision']}, fused attention; eager {eager:,.1f} images/s",
    )

    # ---- peak memory
    peaks = {k: res[k]["peak_memory_gb"] for k in ("unet_train", "unet_inference", "sam_train", "vit_b_encoder")}
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory / 1e9
        checks.add(
            "peak_memory",
            max(peaks.values()) < 0.9 * total,
            f"peak GB per phase {peaks} on a {total:.0f} GB card (limit 90 %)",
        )
    else:
        checks.add("peak_memory", max(peaks.values()) > 0, f"process peak RSS GB after each phase {peaks}")
    res["peak_memory_gb"] = peaks
    res["seconds"] = round(time.perf_counter() - t_start, 1)
    res["checks"] = checks.rows
    res["all_pass"] = all(r["pass"] for r in checks.rows)
    atomic_write_json(out, res)
    print(f"{'ALL PASS' if res['all_pass'] else 'SOME CHECKS FAILED'} in {res['seconds']} s; wrote {out}", flush=True)
    return res


def _throughput_check(checks: Checks, name: str, rate: float, target_key: str, res: dict, what: str) -> None:
    gpu = res["device"].get("gpu", "")
    target = TARGETS_H100[target_key] if "H100" in gpu else None
    res[name]["target_images_per_s"] = target
    ok = math.isfinite(rate) and rate > 0 and (target is None or rate >= target)
    note = f"target on H100 >= {target:,.0f}" if target else "no target for this device (targets are for an H100)"
    checks.add(name, ok, f"{rate:,.1f} images/s ({what}); {note}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs/benchmarks/gpu_check.json")
    ap.add_argument("--cpu-small", action="store_true", help="toy sizes (automatic when CUDA is unavailable)")
    ap.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one, removed after)")
    args = ap.parse_args(argv)
    profile = "cpu_small" if args.cpu_small or not torch.cuda.is_available() else "gpu"
    if profile == "cpu_small" and not args.cpu_small:
        print("no CUDA device: running the --cpu-small sizes (a smoke test; the figures are not GPU figures)")
    if args.workdir:
        res = run(profile, Path(args.workdir), Path(args.out))
    else:
        with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
            res = run(profile, Path(tmp), Path(args.out))
    return 0 if res["all_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
