"""One training engine for both models (U-Net and the SAM mask decoder).

``fit(model, train_ds, val_ds, out_dir, cfg)`` trains with AdamW + CosineAnnealingLR (or a constant LR: ``lr_schedule``;
stepped per epoch), gradient clipping, optional channels_last, and mixed precision on CUDA:
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

Resume (``resume="auto"`` continues from ``last.pt``; or a checkpoint path): see ``training/resume.py`` for what
may differ between the runs. Randomness is re-seeded from (seed, epoch) at the start of every epoch, so a resumed
run repeats the uninterrupted one (same seed: bitwise-identical weights on the same CPU type and thread count).

Weight averaging (``ema_decay > 0``): ``training/ema.py``; validation, ``best.pt`` and ``last.pt``'s ``"model"`` use
the averaged weights. Validation: ``training/validation.py`` (per-slice Dice, BraTS empty-mask convention).

Checkpoints are plain dicts of tensors / numbers / strings / lists and load with
``torch.load(weights_only=True)`` (see ``checkpoints.py``, which owns the file format and device policy).

Several devices (PyTorch DDP): ``fit`` notices the process group (``distributed.current()``); what changes then is
described in ``training/distributed.py``.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from brainseg_utils.config import TrainConfig
from brainseg_utils.models.losses import FocalDiceLoss
from brainseg_utils.runtime.checkpoints import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    load_model_state,
    resolve_device,
    save_checkpoint,
    train_amp_dtype,
)
from brainseg_utils.runtime.io import atomic_write_json, remove_stale_temps
from brainseg_utils.training import distributed, memory
from brainseg_utils.training.ema import averaged
from brainseg_utils.training.resume import restore, resume_path, rng_state
from brainseg_utils.training.validation import call_model, dice_per_sample, evaluate_dataset, to_device, validate

__all__ = ["CHECKPOINT_FILES", "dice_per_sample", "evaluate_dataset", "fit", "fit_processes", "validate"]

CHECKPOINT_FILES = ("best.pt", "last.pt", "history.json")  # what fit writes in its output folder


def _seed_epoch(seed: int, epoch: int) -> None:
    s = (seed * 1_000_003 + epoch) % (2**31)
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)


@dataclass
class _Run:
    """Everything one ``fit`` call sets up once and its epochs share."""

    cfg: TrainConfig
    out: Path
    meta: dict
    dist: object  # distributed.Processes
    log: object  # print, or _quiet off the main process
    device: torch.device
    dtype: torch.dtype | None
    loss_fn: nn.Module
    params: list
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    run_config: dict
    ema: nn.Module | None
    history: list
    halving: memory.Halving
    presized: bool = False  # the batch was checked against the free GPU memory (memory.Halving.presize)
    best: float = -math.inf
    best_epoch: int = -1


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
    run = _setup(model, Path(out_dir), cfg or TrainConfig(), loss_fn, dict(meta or {}), params)
    start_epoch = _resume(model, run)
    if start_epoch >= run.cfg.epochs:
        run.log(f"training already complete ({start_epoch}/{run.cfg.epochs} epochs in {run.out}); nothing to do")
        return run.history
    net = _wrap(model, run)
    val_sampler = range(run.dist.rank, len(val_ds), run.dist.world_size) if run.dist.enabled else None  # disjoint
    val_loader = DataLoader(
        val_ds,
        batch_size=run.cfg.batch_size,
        sampler=val_sampler,
        num_workers=run.cfg.num_workers,
        pin_memory=run.device.type == "cuda",
    )
    for epoch in range(start_epoch, run.cfg.epochs):
        _epoch(model, net, train_ds, val_loader, epoch, run)
        if (stop := run.cfg.stop_after_epoch) is not None and stop <= epoch + 1 < run.cfg.epochs:
            run.log(f"stopping after epoch {epoch + 1} as asked; resume='auto' continues from {run.out / 'last.pt'}")
            break
    distributed.barrier()  # the files are complete before any process returns
    return run.history


def _setup(model: nn.Module, out: Path, cfg: TrainConfig, loss_fn, meta: dict, params) -> _Run:
    """Device, precision, optimizer, schedule, scaler, the stored run config and the weight average."""
    out.mkdir(parents=True, exist_ok=True)
    dist = distributed.current()
    device = distributed.device_for(dist, resolve_device(cfg.device))
    dtype = train_amp_dtype(device, cfg.amp, getattr(model, "config", {}).get("arch"))  # CPU bf16: checkpoints
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    at_default = tuple(k for k, v in {"ema_decay": 0.0, "lr_schedule": "cosine"}.items() if getattr(cfg, k) == v)
    not_stored = ("resume", "progress", "stop_after_epoch", "num_gpus", *at_default)  # older checkpoints still resume
    run_config = {
        "train": {k: v for k, v in asdict(cfg).items() if k not in not_stored},
        "model": dict(getattr(model, "config", {"arch": type(model).__name__})),
    }
    return _Run(
        cfg=cfg,
        out=out,
        meta=meta,
        dist=dist,
        log=print if dist.is_main else _quiet,
        device=device,
        dtype=dtype,
        loss_fn=loss_fn or FocalDiceLoss(),
        params=params,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
        if cfg.lr_schedule == "constant"
        else torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs),
        scaler=torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),
        run_config=run_config,
        ema=averaged(model, cfg.ema_decay) if cfg.ema_decay else None,
        history=[],
        halving=memory.Halving(f"training ({out.name})", distributed=dist.enabled),
    )


def _resume(model: nn.Module, run: _Run) -> int:
    """Remove a killed run's temporary files, then restore the checkpoint ``RESUME`` names (``resume.restore``);
    returns the epoch to start from (0 for a fresh run)."""
    removed = remove_stale_temps(run.out, CHECKPOINT_FILES) if run.dist.is_main else []
    if removed:
        print(f"removed {len(removed)} temporary file(s) left by an interrupted run in {run.out}")
    path = resume_path(run.cfg.resume, run.out)
    return 0 if path is None else restore(model, run, path)


def _wrap(model: nn.Module, run: _Run) -> nn.Module:
    """``model`` itself, or under DDP the ``DistributedDataParallel`` around it."""
    if not run.dist.enabled:
        return model
    # SAM's mask decoder has heads the loss never uses (IoU prediction, extra mask tokens): DDP must
    # look for parameters without gradients there; the U-Net uses every parameter
    return nn.parallel.DistributedDataParallel(
        model,
        device_ids=[run.device.index] if run.device.type == "cuda" else None,
        find_unused_parameters=run.run_config["model"].get("arch") == "sam_decoder",
    )


def _train_loader(train_ds, epoch: int, run: _Run) -> DataLoader:
    """This epoch's shuffled loader: the same order for a seed and epoch, whatever the process count."""
    cfg, dist = run.cfg, run.dist
    if dist.enabled:
        sampler = DistributedSampler(
            train_ds, dist.world_size, dist.rank, shuffle=True, seed=cfg.seed * 7919, drop_last=False
        )
        sampler.set_epoch(epoch)  # the permutation of RandomSampler(seed * 7919 + epoch), dealt round-robin
    else:
        sampler = RandomSampler(train_ds, generator=torch.Generator().manual_seed(cfg.seed * 7919 + epoch))
    return DataLoader(
        train_ds,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.num_workers,
        pin_memory=run.device.type == "cuda",
        drop_last=len(sampler) > cfg.batch_size,
    )


def _backward(net: nn.Module, inputs, target, epoch: int, run: _Run, parts: int) -> float:
    """Forward and backward of one batch in ``parts`` pieces whose gradients accumulate (1 but after a CUDA
    out-of-memory error: ``memory.Halving``); returns the batch loss. A non-finite loss stops every process."""
    total = 0.0
    for x, y in zip(memory.split(inputs, parts), memory.split(target, parts), strict=True):
        share = len(y) / len(target)
        with torch.autocast(run.device.type, dtype=run.dtype, enabled=run.dtype is not None):
            logits = call_model(net, x)
        loss = run.loss_fn(logits, y)  # computed in float32 inside the loss
        finite = bool(torch.isfinite(loss))
        if run.dist.enabled:
            finite = distributed.all_true(finite, run.device)  # all processes stop together
        if not finite:
            raise FloatingPointError(
                f"epoch {epoch + 1}: loss is {float(loss)}; lower the learning rate or disable AMP"
            )
        run.scaler.scale(loss if parts == 1 else loss * share).backward()
        total += float(loss.detach()) * share
    return total


def _step(model: nn.Module, net: nn.Module, inputs, target, epoch: int, run: _Run) -> float:
    """One optimisation step on a batch; returns its loss."""
    cfg = run.cfg
    inputs, target = to_device(inputs, run.device, cfg.channels_last), target.to(run.device, non_blocking=True)
    run.optimizer.zero_grad(set_to_none=True)
    reset = lambda: run.optimizer.zero_grad(set_to_none=True)  # noqa: E731  (a failed attempt's gradients)
    if (
        not run.presized and run.device.type in memory.PRESIZE_DEVICES
    ):  # before the first pass: does the batch fit the GPU?
        run.presized = True

        def probe(k: int) -> None:  # leaves no trace: gradients, BatchNorm statistics and random state restored
            saved = [b.detach().clone() for b in net.buffers()]
            with torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else []):
                _backward(net, memory.head(inputs, k), target[:k], epoch, run, 1)
            for b, v in zip(net.buffers(), saved, strict=True):
                b.copy_(v)
            reset()

        run.halving.presize(probe, len(target))
    loss = run.halving.run(lambda parts: _backward(net, inputs, target, epoch, run, parts), len(target), reset)
    if cfg.grad_clip > 0:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.params, cfg.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    if run.ema is not None:
        run.ema.update_parameters(model)
    return loss


def _epoch(model: nn.Module, net: nn.Module, train_ds, val_loader, epoch: int, run: _Run) -> bool:
    """Train one epoch, validate, append to the history and write the checkpoints; True when Dice improved."""
    from brainseg_utils.runtime.progress import tqdm

    cfg, dist = run.cfg, run.dist
    progress = cfg.progress and dist.is_main
    _seed_epoch(cfg.seed + 7919 * dist.rank, epoch)  # rank 0: as one process; others: their own dropout
    if hasattr(train_ds, "set_epoch"):
        train_ds.set_epoch(epoch)
    loader = _train_loader(train_ds, epoch, run)
    net.train()
    t0, seen, loss_sum = time.perf_counter(), 0, 0.0
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not progress)
    for inputs, target in bar:
        loss_sum += _step(model, net, inputs, target, epoch, run) * len(target)
        seen += len(target)
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
    train_seconds = time.perf_counter() - t0
    if dist.enabled:
        loss_sum, seen = distributed.all_reduce_sum([loss_sum, seen], run.device)
    lr = run.optimizer.param_groups[0]["lr"]
    run.scheduler.step()
    evaluated = run.ema.module if run.ema is not None else model  # what validation sees is what is saved
    val = validate(
        evaluated, val_loader, run.loss_fn, run.device, run.dtype, cfg.threshold, cfg.channels_last, progress,
        dist.enabled,
    )  # fmt: skip
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
    run.history.append(row)
    improved = val["dice"] > run.best
    if improved:
        run.best, run.best_epoch = val["dice"], epoch + 1
    _write_checkpoints(model, evaluated, epoch, improved, run)
    run.log(
        f"epoch {epoch + 1}/{cfg.epochs}  train loss {row['train_loss']:.4f}  val loss {val['loss']:.4f}  "
        f"val Dice {val['dice']:.4f} (tumour slices {val['dice_tumour']:.4f})  "
        f"{row['train_images_per_s']:.1f} img/s  {row['epoch_seconds']:.1f} s" + ("  *best" if improved else "")
    )
    return improved


def _write_checkpoints(model: nn.Module, evaluated: nn.Module, epoch: int, improved: bool, run: _Run) -> None:
    """best.pt (when improved), history.json, then last.pt (the resume point), each atomically.

    Order matters for a kill between writes: a run killed before last.pt is written repeats this epoch and
    rewrites the other two, so best.pt, history.json's best_epoch and last.pt's best_epoch always agree after
    a resume. Under DDP only the main process writes (every process holds the same weights after a step)."""
    cfg, dist = run.cfg, run.dist
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model": evaluated.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "epoch": epoch + 1,
        "best_metric": run.best,
        "best_epoch": run.best_epoch,
        "history": run.history,
        "rng": rng_state(),
        "config": run.run_config,
        "meta": run.meta,
        "device": str(run.device),
        "amp_dtype": str(run.dtype).replace("torch.", "") if run.dtype else "none",
        "processes": dist.world_size,
        "global_batch_size": dist.world_size * cfg.batch_size,
    }
    if run.ema is not None:
        payload["train_model"] = model.state_dict()
        payload["ema_updates"] = int(run.ema.n_averaged)
    if not dist.is_main:
        return
    if improved:
        save_checkpoint(run.out / "best.pt", payload)
    summary = {"history": run.history, "best_epoch": run.best_epoch, "best_val_dice": run.best}
    keep = ("config", "meta", "amp_dtype", "device", "processes", "global_batch_size")
    atomic_write_json(run.out / "history.json", {**summary, **{k: payload[k] for k in keep}})
    save_checkpoint(run.out / "last.pt", payload)


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
