"""``PROFILE=auto``: the largest setting of the full profile that the planner says fits the session.

Cuts are tried in order of what they cost in quality, cheapest first, each added to the previous ones
(``LADDER``); the first level that fits wins. Every level keeps both models on the same slices: the embedding
cache must hold every training and validation slice the U-Net uses (its budget is sized from the free disk),
so when it cannot, the level does not fit and the next one subsamples slices for both models. What was cut is
returned with the plan (``cuts``) and recorded in the run (``plan/auto.json``, then metrics.json and
results.md).
"""

from __future__ import annotations

import math
import os

from brainseg_utils.parameters import profile_configs
from brainseg_utils.plan.devices import PLATFORMS
from brainseg_utils.plan.planner import Context
from brainseg_utils.plan.workload import workload
from brainseg_utils.runtime import env

BASE = "full"
DISK_RESERVE = 5e9  # left free beside the caches and outputs (pip caches, notebooks, the checkpoints' temp files)

# What each cut costs, as far as it was measured (docs/planning.md). None of these was measured on BraTS.
COST = {
    "SAM_EPOCHS": "fewer decoder epochs: the decoder (4 M parameters on frozen embeddings) stops earlier; "
    "checkpoints are still chosen on validation Dice. Quality cost on BraTS not measured",
    "SLICE_STEP": "every k-th tumour slice for BOTH models (and tumour-free slices in proportion): fewer, "
    "less redundant training slices (neighbouring slices are 1 mm apart). Quality cost on BraTS not measured",
    "UNET_EPOCHS": "fewer U-Net epochs (cosine schedule compressed to them). Quality cost on BraTS not measured",
}
LADDER = [  # cumulative
    {},
    {"SAM_EPOCHS": 15},
    {"SAM_EPOCHS": 15, "SLICE_STEP": 2},
    {"SAM_EPOCHS": 8, "SLICE_STEP": 2},
    {"SAM_EPOCHS": 8, "SLICE_STEP": 2, "UNET_EPOCHS": 20},
    {"SAM_EPOCHS": 5, "SLICE_STEP": 2, "UNET_EPOCHS": 20},
    {"SAM_EPOCHS": 5, "SLICE_STEP": 3, "UNET_EPOCHS": 20},
    {"SAM_EPOCHS": 5, "SLICE_STEP": 3, "UNET_EPOCHS": 15},
    {"SAM_EPOCHS": 3, "SLICE_STEP": 4, "UNET_EPOCHS": 15},
    {"SAM_EPOCHS": 3, "SLICE_STEP": 6, "UNET_EPOCHS": 12},
]


def free_disk(ctx: Context) -> float | None:
    """Bytes the caches may use: the free space of the cache folder when planning this machine's platform,
    the platform's published disk when planning another (None: no limit known)."""
    if not ctx.estimate and ctx.platform == env.platform():
        folder = env.cache_root() or os.getcwd()
        os.makedirs(folder, exist_ok=True)
        return float(env.free_bytes(folder))
    return PLATFORMS[ctx.platform].disk_bytes


def cache_budget(ctx: Context, overrides: dict, free: float | None) -> tuple[float, bool]:
    """(SAM_CACHE_BUDGET_GB that holds every train + val slice, whether the disk has room for it)."""
    configs = profile_configs(ctx.profile, **overrides)
    w = workload(configs, ctx.cases, ctx.shape, ctx.cells)
    need = (w.train_slices + w.val_slices) * w.embedding_bytes * 1.02
    other = w.cases * w.slices_per_case * w.image_bytes  # the slice cache beside it
    gb = math.ceil(need / 1e8) / 10
    return gb, free is None or need + other + DISK_RESERVE <= free


def cuts_of(overrides: dict) -> list[dict]:
    full = profile_configs(BASE)
    values = {"SAM_EPOCHS": full.sam_train.epochs, "SLICE_STEP": full.data.slice_step,
              "UNET_EPOCHS": full.unet_train.epochs}  # fmt: skip
    return [
        {"parameter": k, "full": values[k], "chosen": v, "cost": COST[k]}
        for k, v in overrides.items()
        if k in COST and v != values[k]
    ]


def choose(ctx: Context, gpus: int = 1, latency_runs: int | None = None, base: dict | None = None) -> dict:
    """The plan of the first ``LADDER`` level that fits (or of the last one, ``fits`` False), with ``cuts``,
    ``level`` and the ``overrides`` to run it with (a profile on top of the full one; ``base``: overrides kept
    at every level, e.g. the SAM backend)."""
    free = free_disk(ctx)
    plan = None
    for level, step in enumerate(LADDER):
        gb, room = cache_budget(ctx, step, free)
        overrides = {**(base or {}), **step, "SAM_CACHE_BUDGET_GB": gb, "SAM_OVERFLOW": "subsample"}
        plan = ctx.plan(gpus, latency_runs, overrides)
        plan.update(level=level, cuts=cuts_of(step), cache_fits_disk=room, free_disk_bytes=free)
        if not room:
            plan["fits"] = False
            plan["why_not"] = [*plan["why_not"], f"an embedding cache of {gb} GB does not fit the free disk"]
        if plan["fits"]:
            break
    plan["profile"] = "auto"
    return plan
