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

Weight averaging (``ema_decay > 0``): after every optimizer step an exponential moving average of the
weights and BatchNorm buffers is updated, ``ema = decay * ema + (1 - decay) * w`` (the first step copies
``w``; ``torch.optim.swa_utils.AveragedModel``). Validation, ``best.pt`` and ``last.pt``'s ``"model"`` use
the averaged weights, so every consumer (evaluation, demo) loads them unchanged; ``last.pt`` also keeps the
raw training weights (``"train_model"``) and the update count, so a resumed run continues both exactly.
With ``ema_decay = 0`` (the default) nothing is averaged and the run config omits the field, so
checkpoints written before it existed still resume.

Validation Dice convention: per slice, threshold 0.5 on sigmoid, Dice = 1 when prediction and
target are both empty and 0 when exactly one is; ``val_dice`` averages over all validation
slices (tumour-free ones included), ``val_dice_tumour`` over slices with tumour only.

Checkpoints are plain dicts of tensors / numbers / strings / lists and load with
``torch.load(weights_only=True)`` (see ``checkpoints.py``, which owns the file format and device policy).

Several devices (PyTorch DDP; launched by ``accelerate launch``, ``torchrun`` or ``fit_processes`` /
``distributed.launch``, which use Accelerate's ``notebook_launcher``): ``fit`` notices the process group
(``distributed.current()``) and then
  * wraps the model in ``DistributedDataParallel`` (each process on ``cuda:<local rank>``; gloo on CPU);
  * shuffles with a ``DistributedSampler`` (seed ``seed * 7919``, ``set_epoch(epoch)``): with one
    process it draws the very order of the single-device ``RandomSampler``, and with N processes every
    global batch holds the same slices as a one-process batch of N x ``batch_size``;
  * ``batch_size`` is per process: the GLOBAL batch is ``batch_size`` x processes (recorded as
    ``global_batch_size`` in the checkpoints and history.json). Keep the LR or scale it yourself;
  * BatchNorm statistics stay per process (plain DDP), dropout masks differ per process;
  * reduces train loss, validation loss and Dice over all processes (each validates a disjoint shard
    of the validation set, no padding), so every process sees the same history;
  * lets only the main process (rank 0) write checkpoints, history.json and log lines; checkpoints
    hold the unwrapped model's state (no ``module.`` prefix);
  * resumes from a checkpoint written with any number of processes (the process count is free to
    change; the global batch then changes with it, and a line says so).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from brainseg_utils.config import TrainConfig  # noqa: F401  (re-exported: train.TrainConfig)
from brainseg_utils.models.losses import FocalDiceLoss
from brainseg_utils.runtime.checkpoints import (
    CHECKPOINT_FORMAT,
    amp_dtype,
    load_checkpoint,
    load_model_state,
    resolve_device,
    save_checkpoint,
    train_amp_dtype,
)
from brainseg_utils.runtime.io import atomic_write_json, remove_stale_temps
from brainseg_utils.training import distributed

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
def validate(
    model, loader, loss_fn, device, dtype, threshold=0.5, channels_last=False, progress=False, reduce=False
) -> dict:
    """Mean loss, mean per-slice Dice (all slices / tumour slices only) and images/s.

    ``reduce``: each process validated a disjoint shard; sum the counts over all processes (DDP)."""
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
    dices = torch.cat(dices) if dices else torch.zeros(0)
    has_tumour = torch.cat(has_tumour) if has_tumour else torch.zeros(0, dtype=torch.bool)
    if reduce:
        loss_sum, n, d_sum, dt_sum, nt = distributed.all_reduce_sum(
            [loss_sum, n, dices.double().sum(), dices[has_tumour].double().sum(), has_tumour.sum()], device
        )
        return {
            "loss": loss_sum / max(n, 1),
            "dice": d_sum / max(n, 1),
            "dice_tumour": dt_sum / nt if nt > 0 else float("nan"),
            "images_per_s": n / seconds if seconds > 0 else float("nan"),
        }
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
    Under DDP (several processes) every process calls ``fit`` with the same arguments.
    """
    from tqdm.auto import tqdm

    cfg = cfg or TrainConfig()
    meta = dict(meta or {})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dist = distributed.current()
    log = print if dist.is_main else _quiet
    device = distributed.device_for(dist, resolve_device(cfg.device))
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
    not_stored = ("resume", "progress", "stop_after_epoch", "num_gpus") + (("ema_decay",) if not cfg.ema_decay else ())
    run_config = {
        "train": {k: v for k, v in asdict(cfg).items() if k not in not_stored},
        "model": model_config,
    }
    ema = _averaged(model, cfg.ema_decay) if cfg.ema_decay else None

    history: list[dict] = []
    start_epoch, best, best_epoch = 0, -math.inf, -1
    removed = remove_stale_temps(out, CHECKPOINT_FILES) if dist.is_main else []
    if removed:
        print(f"removed {len(removed)} temporary file(s) left by an interrupted run in {out}")
    resume_path = _resume_path(cfg.resume, out)
    if resume_path is not None:
        ckpt = load_checkpoint(resume_path)
        _check_resumable(ckpt, resume_path, meta)
        extend = _compare_configs(ckpt.get("config", {}), run_config, resume_path, out)
        if ema is not None:
            if "train_model" not in ckpt:
                raise ValueError(f"{resume_path} has no raw training weights ('train_model') to resume averaging")
            load_model_state(model, ckpt["train_model"], str(resume_path))
            load_model_state(ema.module, ckpt["model"], str(resume_path))
            ema.n_averaged.fill_(int(ckpt["ema_updates"]))
        else:
            load_model_state(model, ckpt["model"], str(resume_path))
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        history = list(ckpt["history"])
        start_epoch, best, best_epoch = ckpt["epoch"], ckpt["best_metric"], ckpt["best_epoch"]
        _set_rng_state(ckpt["rng"])
        if extend:
            _extend_schedule(scheduler, optimizer, cfg.epochs)
            log(
                f"extending training from {ckpt['config']['train']['epochs']} to {cfg.epochs} epochs: the cosine "
                f"schedule now ends at epoch {cfg.epochs} (LR {optimizer.param_groups[0]['lr']:.3g} "
                f"for epoch {start_epoch + 1})"
            )
        best, best_epoch = _reconcile_best(out, start_epoch, best, best_epoch, log)
        stored_processes = int(ckpt.get("processes", 1))
        if stored_processes != dist.world_size:
            log(
                f"{resume_path} was written by {stored_processes} process(es), this run has {dist.world_size}: "
                f"the global batch changes from {stored_processes * cfg.batch_size} to "
                f"{dist.world_size * cfg.batch_size} slices per step"
            )
        log(f"resumed from {resume_path} after epoch {start_epoch} (best val Dice {best:.4f} at epoch {best_epoch})")
    if start_epoch >= cfg.epochs:
        log(f"training already complete ({start_epoch}/{cfg.epochs} epochs in {out}); nothing to do")
        return history

    pin = device.type == "cuda"
    progress = cfg.progress and dist.is_main
    net = model
    if dist.enabled:
        # SAM's mask decoder has heads the loss never uses (IoU prediction, extra mask tokens): DDP must
        # look for parameters without gradients there; the U-Net uses every parameter
        net = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=model_config.get("arch") == "sam_decoder",
        )
    val_sampler = range(dist.rank, len(val_ds), dist.world_size) if dist.enabled else None  # disjoint, no padding
    val_loader = DataLoader(
        val_ds, batch_size=cfg.batch_size, sampler=val_sampler, num_workers=cfg.num_workers, pin_memory=pin
    )
    for epoch in range(start_epoch, cfg.epochs):
        _seed_epoch(cfg.seed + 7919 * dist.rank, epoch)  # rank 0: as one process; others: their own dropout
        if hasattr(train_ds, "set_epoch"):
            train_ds.set_epoch(epoch)
        if dist.enabled:
            sampler = DistributedSampler(
                train_ds, dist.world_size, dist.rank, shuffle=True, seed=cfg.seed * 7919, drop_last=False
            )
            sampler.set_epoch(epoch)  # the permutation of RandomSampler(seed * 7919 + epoch), dealt round-robin
        else:
            sampler = RandomSampler(train_ds, generator=torch.Generator().manual_seed(cfg.seed * 7919 + epoch))
        loader = DataLoader(
            train_ds,
            batch_size=cfg.batch_size,
            sampler=sampler,
            num_workers=cfg.num_workers,
            pin_memory=pin,
            drop_last=len(sampler) > cfg.batch_size,
        )
        net.train()
        t0, seen, loss_sum = time.perf_counter(), 0, 0.0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not progress)
        for inputs, target in bar:
            inputs, target = _to(inputs, device, cfg.channels_last), target.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = _call(net, inputs)
            loss = loss_fn(logits, target)  # computed in float32 inside the loss
            finite = bool(torch.isfinite(loss))
            if dist.enabled:
                finite = distributed.all_true(finite, device)  # all processes stop together
            if not finite:
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
            if ema is not None:
                ema.update_parameters(model)
            loss_sum += float(loss.detach()) * len(target)
            seen += len(target)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
        train_seconds = time.perf_counter() - t0
        if dist.enabled:
            loss_sum, seen = distributed.all_reduce_sum([loss_sum, seen], device)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        evaluated = ema.module if ema is not None else model  # what validation sees is what is saved
        val = validate(
            evaluated, val_loader, loss_fn, device, dtype, cfg.threshold, cfg.channels_last, progress, dist.enabled
        )
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
            "model": evaluated.state_dict(),
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
            "processes": dist.world_size,
            "global_batch_size": dist.world_size * cfg.batch_size,
        }
        if ema is not None:
            payload["train_model"] = model.state_dict()
            payload["ema_updates"] = int(ema.n_averaged)
        # Order matters for a kill between writes: best.pt, then history.json, then last.pt (the resume
        # point). A run killed before last.pt is written repeats this epoch and rewrites the other two, so
        # best.pt, history.json's best_epoch and last.pt's best_epoch always agree after a resume.
        # Under DDP only the main process writes (every process holds the same weights after a step).
        if improved and dist.is_main:
            save_checkpoint(out / "best.pt", payload)
        if dist.is_main:
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
                    "processes": dist.world_size,
                    "global_batch_size": dist.world_size * cfg.batch_size,
                },
            )
            save_checkpoint(out / "last.pt", payload)
        log(
            f"epoch {epoch + 1}/{cfg.epochs}  train loss {row['train_loss']:.4f}  val loss {val['loss']:.4f}  "
            f"val Dice {val['dice']:.4f} (tumour slices {val['dice_tumour']:.4f})  "
            f"{row['train_images_per_s']:.1f} img/s  {row['epoch_seconds']:.1f} s" + ("  *best" if improved else "")
        )
        if cfg.stop_after_epoch is not None and epoch + 1 >= cfg.stop_after_epoch and epoch + 1 < cfg.epochs:
            log(f"stopping after epoch {epoch + 1} as asked; resume='auto' continues from {out / 'last.pt'}")
            break
    distributed.barrier()  # the files are complete before any process returns
    return history


def _averaged(model: nn.Module, decay: float) -> nn.Module:
    """An ``AveragedModel`` holding the exponential moving average of ``model``'s weights and buffers."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _quiet(*args, **kwargs) -> None:
    """``print`` for processes other than the main one under DDP."""


def fit_processes(
    model: nn.Module,
    train_ds,
    val_ds,
    out_dir: str | os.PathLike,
    cfg: TrainConfig | None = None,
    loss_fn: nn.Module | None = None,
    meta: dict | None = None,
    params=None,
) -> list[dict]:
    """``fit`` on ``cfg.num_gpus`` devices (``"auto"``: every visible GPU; notebook ``NUM_GPUS``; with
    ``cfg.device == "cpu"``, that many CPU processes).

    One device: exactly ``fit(...)``. Several: ``fit`` runs in one process per device, started by
    ``distributed.launch`` (Accelerate's ``notebook_launcher``); the history is read back from
    ``history.json`` and ``model`` gets the weights of ``last.pt`` (on the CPU), as after ``fit``.
    The global batch is ``cfg.batch_size`` x devices.
    """
    cfg = cfg or TrainConfig()
    cpu = cfg.device == "cpu"
    n = distributed.resolve_num_processes(cfg.num_gpus, cpu=cpu)
    if n == 1:
        return fit(model, train_ds, val_ds, out_dir, cfg, loss_fn, meta, params)
    params = list(params) if params is not None else None  # a generator cannot travel to the processes
    print(f"training on {n} processes (DDP): global batch {n} x {cfg.batch_size} = {n * cfg.batch_size} slices")
    distributed.launch(fit, (model, train_ds, val_ds, out_dir, cfg, loss_fn, meta, params), n, cpu=cpu)
    out = Path(out_dir)
    load_model_state(model, load_checkpoint(out / "last.pt")["model"], str(out / "last.pt"))
    return json.loads((out / "history.json").read_text())["history"]


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


def _reconcile_best(out: Path, start_epoch: int, best: float, best_epoch: int, log=print) -> tuple[float, int]:
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
        log(
            f"{path} is from epoch {ckpt['epoch']} of an interrupted run (after the resume point, epoch "
            f"{start_epoch}); keeping it as the best so far"
        )
        return ckpt["best_metric"], ckpt["best_epoch"]
    return best, best_epoch
