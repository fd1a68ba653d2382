"""One training engine for both models (U-Net and the SAM mask decoder).

``fit(model, train_ds, val_ds, out_dir, cfg)`` trains with AdamW + CosineAnnealingLR (stepped per
epoch), gradient clipping, optional channels_last, and mixed precision on CUDA:
  * bf16 (no GradScaler) on GPUs with native bf16 (compute capability >= 8: A100, L4, H100);
  * fp16 + GradScaler below that (T4, V100, P100). A bare ``torch.cuda.is_bf16_supported()``
    answers True on a T4 through emulation, so the decision uses the real capability;
  * on CPU: off, except bf16 for the SAM decoder where the CPU has native bf16 (AVX-512 BF16 / AMX;
    ``checkpoints.train_amp_dtype``).

A dataset item is ``(inputs, target)``: ``inputs`` a tensor (``model(x)``), a tuple
(``model(*x)``) or a dict (``model(**x)``); ``target`` float (1, H, W) in {0, 1}; the model
returns logits shaped like ``target``.

Every epoch: validation loss and Dice (``validate``); then, in this order, ``best.pt`` (when validation
Dice improves), ``history.json`` and ``last.pt``, each written atomically (temp file, fsync, rename).
``last.pt`` is the resume point and is written last, so a run killed between the writes repeats that
epoch and leaves ``best.pt``, ``history.json`` and ``last.pt`` agreeing on the best epoch; temporary
files a killed run left behind are removed when ``fit`` starts.

Resume (``resume="auto"`` continues from ``last.pt``; or a checkpoint path): model, optimizer,
scheduler, scaler, epoch, history and RNG states are restored, after comparing the stored training
and model config with the requested one:
  * identical: resume where it stopped;
  * only ``epochs`` larger: extend the cosine schedule: ``T_max`` becomes the new epoch count and the
    LR continues on the new curve from the current epoch, lr(e) = lr0 (1 + cos(pi e / epochs)) / 2,
    exactly the LRs an uninterrupted run with the larger epoch count uses from that epoch on (the
    epochs already done keep the LRs of the old curve);
  * device and DataLoader workers may differ (they do not change what is computed);
  * anything else (another lr, batch size, model width, fewer epochs, ...): refused with the
    differing keys; start fresh with ``resume="never"`` (notebook ``RESUME="never"``) or another
    output folder.
Randomness is re-seeded from (seed, epoch) at the start of every epoch, so a resumed run repeats
the uninterrupted one; on CPU two runs with the same seed give bitwise-identical weights.

Validation Dice convention: per slice, threshold 0.5 on sigmoid, Dice = 1 when prediction and
target are both empty and 0 when exactly one is; ``val_dice`` averages over all validation
slices (tumour-free ones included), ``val_dice_tumour`` over slices with tumour only.

Checkpoints are plain dicts of tensors / numbers / strings / lists and load with
``torch.load(weights_only=True)`` (see ``checkpoints.py``, which owns the file format and device policy).
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, RandomSampler

from .checkpoints import (
    CHECKPOINT_FORMAT,
    amp_dtype,
    load_checkpoint,
    load_model_state,
    resolve_device,
    save_checkpoint,
    train_amp_dtype,
)
from .config import TrainConfig  # noqa: F401  (re-exported: train.TrainConfig)
from .io import atomic_write_json, remove_stale_temps
from .losses import FocalDiceLoss

CHECKPOINT_FILES = ("best.pt", "last.pt", "history.json")  # what fit writes in its output folder


# ----------------------------------------------------------------------------- RNG state (saved in checkpoints)
def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "python": random.getstate(),
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


# ----------------------------------------------------------------------------- the loop
def _to(x, device, channels_last=False):
    if isinstance(x, torch.Tensor):
        x = x.to(device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x
    if isinstance(x, (tuple, list)):
        return type(x)(_to(v, device, channels_last) for v in x)
    if isinstance(x, dict):
        return {k: _to(v, device, channels_last) for k, v in x.items()}
    return x


def _call(model, inputs):
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def _seed_epoch(seed: int, epoch: int) -> None:
    s = (seed * 1_000_003 + epoch) % (2**31)
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)


def dice_per_sample(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary Dice per sample (B,) with BraTS empty-mask convention: 1 if both empty, 0 if one is."""
    pred, target = pred.flatten(1).float(), target.flatten(1).float()
    inter = (pred * target).sum(1)
    total = pred.sum(1) + target.sum(1)
    return torch.where(total > 0, 2 * inter / total.clamp_min(1e-8), torch.ones_like(total))


@torch.no_grad()
def validate(model, loader, loss_fn, device, dtype, threshold=0.5, channels_last=False, progress=False) -> dict:
    """Mean loss, mean per-slice Dice (all slices / tumour slices only) and images/s."""
    from tqdm.auto import tqdm

    model.eval()
    loss_sum, n, dices, has_tumour = 0.0, 0, [], []
    t0 = time.perf_counter()
    for inputs, target in tqdm(loader, desc="validate", leave=False, disable=not progress):
        inputs, target = _to(inputs, device, channels_last), target.to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = _call(model, inputs)
        loss_sum += float(loss_fn(logits, target)) * len(target)
        n += len(target)
        dices.append(dice_per_sample(torch.sigmoid(logits.float()) > threshold, target > 0.5).cpu())
        has_tumour.append((target.flatten(1) > 0.5).any(1).cpu())
    seconds = time.perf_counter() - t0
    dices, has_tumour = torch.cat(dices), torch.cat(has_tumour)
    return {
        "loss": loss_sum / max(n, 1),
        "dice": float(dices.mean()),
        "dice_tumour": float(dices[has_tumour].mean()) if has_tumour.any() else float("nan"),
        "images_per_s": n / seconds if seconds > 0 else float("nan"),
    }


def evaluate_dataset(
    model: nn.Module,
    dataset,
    batch_size: int = 16,
    device: str = "auto",
    amp: bool = True,
    loss_fn: nn.Module | None = None,
    progress: bool = False,
) -> dict:
    """``validate`` over a Dataset (e.g. a zero-shot score before any training)."""
    dev = resolve_device(device)
    model.to(dev)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    return validate(model, loader, loss_fn or FocalDiceLoss(), dev, amp_dtype(dev, amp), progress=progress)


def fit(
    model: nn.Module,
    train_ds,
    val_ds,
    out_dir: str | os.PathLike,
    cfg: TrainConfig | None = None,
    loss_fn: nn.Module | None = None,
    meta: dict | None = None,
    params=None,
) -> list[dict]:
    """Train ``model`` and return the history (one dict per epoch). See the module docstring.

    ``params``: what the optimizer updates (default: parameters with ``requires_grad``; the SAM
    decoder passes only its trainable part). ``meta`` (split hash, cache key, dataset name, ...)
    is stored in every checkpoint; resuming with a different ``meta["split_sha256"]`` is refused.
    """
    from tqdm.auto import tqdm

    cfg = cfg or TrainConfig()
    meta = dict(meta or {})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    dtype = train_amp_dtype(device, cfg.amp, getattr(model, "config", {}).get("arch"))  # CPU bf16: checkpoints
    loss_fn = loss_fn or FocalDiceLoss()
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    model_config = dict(getattr(model, "config", {"arch": type(model).__name__}))
    run_config = {
        "train": {k: v for k, v in asdict(cfg).items() if k not in ("resume", "progress", "stop_after_epoch")},
        "model": model_config,
    }

    history: list[dict] = []
    start_epoch, best, best_epoch = 0, -math.inf, -1
    removed = remove_stale_temps(out, CHECKPOINT_FILES)
    if removed:
        print(f"removed {len(removed)} temporary file(s) left by an interrupted run in {out}")
    resume_path = _resume_path(cfg.resume, out)
    if resume_path is not None:
        ckpt = load_checkpoint(resume_path)
        _check_resumable(ckpt, resume_path, meta)
        extend = _compare_configs(ckpt.get("config", {}), run_config, resume_path, out)
        load_model_state(model, ckpt["model"], str(resume_path))
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        history = list(ckpt["history"])
        start_epoch, best, best_epoch = ckpt["epoch"], ckpt["best_metric"], ckpt["best_epoch"]
        _set_rng_state(ckpt["rng"])
        if extend:
            _extend_schedule(scheduler, optimizer, cfg.epochs)
            print(
                f"extending training from {ckpt['config']['train']['epochs']} to {cfg.epochs} epochs: the cosine "
                f"schedule now ends at epoch {cfg.epochs} (LR {optimizer.param_groups[0]['lr']:.3g} "
                f"for epoch {start_epoch + 1})"
            )
        best, best_epoch = _reconcile_best(out, start_epoch, best, best_epoch)
        print(f"resumed from {resume_path} after epoch {start_epoch} (best val Dice {best:.4f} at epoch {best_epoch})")
    if start_epoch >= cfg.epochs:
        print(f"training already complete ({start_epoch}/{cfg.epochs} epochs in {out}); nothing to do")
        return history

    pin = device.type == "cuda"
    val_loader = DataLoader(
        val_ds, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers, pin_memory=pin
    )
    for epoch in range(start_epoch, cfg.epochs):
        _seed_epoch(cfg.seed, epoch)
        if hasattr(train_ds, "set_epoch"):
            train_ds.set_epoch(epoch)
        sampler = RandomSampler(train_ds, generator=torch.Generator().manual_seed(cfg.seed * 7919 + epoch))
        loader = DataLoader(
            train_ds,
            batch_size=cfg.batch_size,
            sampler=sampler,
            num_workers=cfg.num_workers,
            pin_memory=pin,
            drop_last=len(train_ds) > cfg.batch_size,
        )
        model.train()
        t0, seen, loss_sum = time.perf_counter(), 0, 0.0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not cfg.progress)
        for inputs, target in bar:
            inputs, target = _to(inputs, device, cfg.channels_last), target.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = _call(model, inputs)
            loss = loss_fn(logits, target)  # computed in float32 inside the loss
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"epoch {epoch + 1}: loss is {float(loss)}; lower the learning rate or disable AMP"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            loss_sum += float(loss.detach()) * len(target)
            seen += len(target)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
        train_seconds = time.perf_counter() - t0
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        val = validate(model, val_loader, loss_fn, device, dtype, cfg.threshold, cfg.channels_last, cfg.progress)
        row = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(seen, 1),
            "val_loss": val["loss"],
            "val_dice": val["dice"],
            "val_dice_tumour": val["dice_tumour"],
            "lr": lr,
            "epoch_seconds": time.perf_counter() - t0,
            "train_images_per_s": seen / train_seconds,
            "val_images_per_s": val["images_per_s"],
        }
        history.append(row)
        improved = val["dice"] > best
        if improved:
            best, best_epoch = val["dice"], epoch + 1
        payload = {
            "format": CHECKPOINT_FORMAT,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": epoch + 1,
            "best_metric": best,
            "best_epoch": best_epoch,
            "history": history,
            "rng": _rng_state(),
            "config": run_config,
            "meta": meta,
            "device": str(device),
            "amp_dtype": str(dtype).replace("torch.", "") if dtype else "none",
        }
        # Order matters for a kill between writes: best.pt, then history.json, then last.pt (the resume
        # point). A run killed before last.pt is written repeats this epoch and rewrites the other two, so
        # best.pt, history.json's best_epoch and last.pt's best_epoch always agree after a resume.
        if improved:
            save_checkpoint(out / "best.pt", payload)
        atomic_write_json(
            out / "history.json",
            {
                "history": history,
                "best_epoch": best_epoch,
                "best_val_dice": best,
                "config": run_config,
                "meta": meta,
                "amp_dtype": payload["amp_dtype"],
                "device": str(device),
            },
        )
        save_checkpoint(out / "last.pt", payload)
        print(
            f"epoch {epoch + 1}/{cfg.epochs}  train loss {row['train_loss']:.4f}  val loss {val['loss']:.4f}  "
            f"val Dice {val['dice']:.4f} (tumour slices {val['dice_tumour']:.4f})  "
            f"{row['train_images_per_s']:.1f} img/s  {row['epoch_seconds']:.1f} s" + ("  *best" if improved else "")
        )
        if cfg.stop_after_epoch is not None and epoch + 1 >= cfg.stop_after_epoch and epoch + 1 < cfg.epochs:
            print(f"stopping after epoch {epoch + 1} as asked; resume='auto' continues from {out / 'last.pt'}")
            break
    return history


def _resume_path(resume: str, out: Path) -> Path | None:
    if resume in ("never", "", None):
        return None
    if resume == "auto":
        return out / "last.pt" if (out / "last.pt").exists() else None
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(
            f"resume checkpoint {path} does not exist; use resume='auto' to start fresh when there is nothing to resume"
        )
    return path


def _check_resumable(ckpt: dict, path: Path, meta: dict) -> None:
    missing = [k for k in ("model", "optimizer", "scheduler", "scaler", "epoch", "history", "rng") if k not in ckpt]
    if missing:
        raise ValueError(f"{path} is not a training checkpoint of this engine (missing {missing})")
    old = ckpt.get("meta", {}).get("split_sha256")
    if old and meta.get("split_sha256") and old != meta["split_sha256"]:
        raise ValueError(
            f"{path} was trained on split {old[:12]}…, this run uses {meta['split_sha256'][:12]}…; "
            "use another output folder or resume='never'"
        )


def _flatten(cfg: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


# Settings that do not change what is computed: a run may resume on another device (e.g. a CPU after a
# lost Colab GPU) or with another number of DataLoader workers (augmentation is seeded per item).
RESUME_FREE = ("train.device", "train.num_workers")


def _compare_configs(stored: dict, requested: dict, path: Path, out: Path) -> bool:
    """True when only ``train.epochs`` grew (extend the schedule), False when identical; raises otherwise."""
    old, new = _flatten(stored), _flatten(requested)
    differ = sorted(
        k for k in set(old) | set(new) if old.get(k, "<absent>") != new.get(k, "<absent>") and k not in RESUME_FREE
    )
    if not differ:
        return False
    if differ == ["train.epochs"] and new["train.epochs"] > old["train.epochs"]:
        return True
    details = "; ".join(f"{k}: stored {old.get(k, '<absent>')!r}, requested {new.get(k, '<absent>')!r}" for k in differ)
    raise ValueError(
        f"{path} was trained with other settings than this run asks for ({details}). Resuming would "
        "mix them; only a larger `epochs` can be resumed (the schedule is extended). To start fresh, "
        f"set RESUME='never' (TrainConfig(resume='never')) to overwrite {out}, or use another output "
        "folder; or rerun with the stored settings to continue."
    )


def _extend_schedule(scheduler, optimizer, epochs: int) -> None:
    """Point a resumed cosine schedule at ``epochs``: T_max = epochs and each group's LR set to the new
    curve's value at the current epoch, lr(e) = eta_min + (base - eta_min) (1 + cos(pi e / epochs)) / 2;
    the scheduler's recursive update then follows the new curve (same LRs as an uninterrupted run)."""
    scheduler.T_max = epochs
    e = scheduler.last_epoch
    for group, base in zip(optimizer.param_groups, scheduler.base_lrs, strict=True):
        group["lr"] = scheduler.eta_min + (base - scheduler.eta_min) * (1 + math.cos(math.pi * e / epochs)) / 2
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]


def _reconcile_best(out: Path, start_epoch: int, best: float, best_epoch: int) -> tuple[float, int]:
    """A run killed after writing best.pt but before last.pt left a best.pt from the epoch being repeated.
    Adopt its metric so the repeated epoch does not count as an improvement over itself; on a
    deterministic device it reproduces the same weights either way."""
    path = out / "best.pt"
    if not path.is_file():
        return best, best_epoch
    try:
        ckpt = load_checkpoint(path)
    except ValueError:
        return best, best_epoch
    if ckpt.get("epoch", 0) > start_epoch and ckpt.get("best_metric", -math.inf) > best:
        print(
            f"{path} is from epoch {ckpt['epoch']} of an interrupted run (after the resume point, epoch "
            f"{start_epoch}); keeping it as the best so far"
        )
        return ckpt["best_metric"], ckpt["best_epoch"]
    return best, best_epoch
