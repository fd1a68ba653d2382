"""Resuming a training run from its ``last.pt``: what may change between the runs, and the RNG state.

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
the uninterrupted one (same seed: bitwise-identical weights on the same CPU type and thread count).
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import torch

from brainseg_utils.runtime.checkpoints import load_checkpoint, load_model_state


# ----------------------------------------------------------------------------- RNG state (saved in checkpoints)
def rng_state() -> dict:
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


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def resume_path(resume: str, out: Path) -> Path | None:
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


def check_resumable(ckpt: dict, path: Path, meta: dict) -> None:
    missing = [k for k in ("model", "optimizer", "scheduler", "scaler", "epoch", "history", "rng") if k not in ckpt]
    if missing:
        raise ValueError(f"{path} is not a training checkpoint of this engine (missing {missing})")
    old = ckpt.get("meta", {}).get("split_sha256")
    if old and meta.get("split_sha256") and old != meta["split_sha256"]:
        raise ValueError(
            f"{path} was trained on split {old[:12]}…, this run uses {meta['split_sha256'][:12]}…; "
            "use another output folder or resume='never'"
        )


def flatten(cfg: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


# Settings that do not change what is computed: a run may resume on another device (e.g. a CPU after a
# lost Colab GPU) or with another number of DataLoader workers (augmentation is seeded per item).
RESUME_FREE = ("train.device", "train.num_workers")


def compare_configs(stored: dict, requested: dict, path: Path, out: Path) -> bool:
    """True when only ``train.epochs`` grew (extend the schedule), False when identical; raises otherwise."""
    old, new = flatten(stored), flatten(requested)
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


def extend_schedule(scheduler, optimizer, epochs: int) -> None:
    """Point a resumed cosine schedule at ``epochs``: T_max = epochs and each group's LR set to the new
    curve's value at the current epoch, lr(e) = eta_min + (base - eta_min) (1 + cos(pi e / epochs)) / 2;
    the scheduler's recursive update then follows the new curve (same LRs as an uninterrupted run). A constant
    LR has nothing to extend."""
    if not hasattr(scheduler, "T_max"):
        return
    scheduler.T_max = epochs
    e = scheduler.last_epoch
    for group, base in zip(optimizer.param_groups, scheduler.base_lrs, strict=True):
        group["lr"] = scheduler.eta_min + (base - scheduler.eta_min) * (1 + math.cos(math.pi * e / epochs)) / 2
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]


def reconcile_best(out: Path, start_epoch: int, best: float, best_epoch: int, log=print) -> tuple[float, int]:
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


def restore(model, run, path: Path) -> int:
    """Load ``path`` (checked: a training checkpoint of this split whose settings allow resuming) into ``model``
    and the ``engine`` run state ``run`` (optimizer, schedule, scaler, weight average, history, best, RNG);
    returns the epoch it stopped after."""
    ckpt = load_checkpoint(path)
    check_resumable(ckpt, path, run.meta)
    extend = compare_configs(ckpt.get("config", {}), run.run_config, path, run.out)
    if run.ema is not None:
        if "train_model" not in ckpt:
            raise ValueError(f"{path} has no raw training weights ('train_model') to resume averaging")
        load_model_state(model, ckpt["train_model"], str(path))
        load_model_state(run.ema.module, ckpt["model"], str(path))
        run.ema.n_averaged.fill_(int(ckpt["ema_updates"]))
    else:
        load_model_state(model, ckpt["model"], str(path))
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    run.scaler.load_state_dict(ckpt["scaler"])
    run.history = list(ckpt["history"])
    start_epoch, run.best, run.best_epoch = ckpt["epoch"], ckpt["best_metric"], ckpt["best_epoch"]
    set_rng_state(ckpt["rng"])
    cfg, log = run.cfg, run.log
    if extend:
        extend_schedule(run.scheduler, run.optimizer, cfg.epochs)
        log(
            f"extending training from {ckpt['config']['train']['epochs']} to {cfg.epochs} epochs: the cosine "
            f"schedule now ends at epoch {cfg.epochs} (LR {run.optimizer.param_groups[0]['lr']:.3g} "
            f"for epoch {start_epoch + 1})"
        )
    run.best, run.best_epoch = reconcile_best(run.out, start_epoch, run.best, run.best_epoch, log)
    stored_processes = int(ckpt.get("processes", 1))
    if stored_processes != run.dist.world_size:
        log(
            f"{path} was written by {stored_processes} process(es), this run has {run.dist.world_size}: "
            f"the global batch changes from {stored_processes * cfg.batch_size} to "
            f"{run.dist.world_size * cfg.batch_size} slices per step"
        )
    log(f"resumed from {path} after epoch {start_epoch} (best val Dice {run.best:.4f} at epoch {run.best_epoch})")
    return start_epoch
