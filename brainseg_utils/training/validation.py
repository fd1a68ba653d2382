"""Validation of a model during training: mean loss, per-slice Dice (BraTS empty-mask convention), images/s.

Validation Dice convention: per slice, threshold 0.5 on sigmoid, Dice = 1 when prediction and target are both
empty and 0 when exactly one is; ``dice`` averages over all validation slices (tumour-free ones included),
``dice_tumour`` over slices with tumour only. Under DDP each process validates a disjoint shard and the sums are
reduced over all processes.
"""

from __future__ import annotations

import time

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from brainseg_utils.models.losses import FocalDiceLoss
from brainseg_utils.runtime.checkpoints import amp_dtype, resolve_device
from brainseg_utils.training import distributed


def to_device(x, device, channels_last=False):
    if isinstance(x, torch.Tensor):
        x = x.to(device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x
    if isinstance(x, (tuple, list)):
        return type(x)(to_device(v, device, channels_last) for v in x)
    if isinstance(x, dict):
        return {k: to_device(v, device, channels_last) for k, v in x.items()}
    return x


def call_model(model, inputs):
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


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
    from brainseg_utils.runtime.progress import tqdm

    model.eval()
    loss_sum, n, dices, has_tumour = 0.0, 0, [], []
    t0 = time.perf_counter()
    for inputs, target in tqdm(loader, desc="validate", leave=False, disable=not progress):
        inputs, target = to_device(inputs, device, channels_last), target.to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = call_model(model, inputs)
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
