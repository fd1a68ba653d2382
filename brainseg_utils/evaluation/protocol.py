"""Deviations from the seed: how each profile and each run differs from the seed project's protocol, and which
results column is comparable with the seed's reported number.

The seed (the project description this repository grew from) trained a 2-D U-Net on BraTS 2020 FLAIR slices at
256 x 256, tumour slices only (~28k), with bilinear upsampling (28.9 M parameters), Adam at a constant learning
rate, no clipping and geometric + noise augmentation, and reported Dice 0.87 — most likely the mean Dice per slice
over tumour slices. ``SEED`` is that protocol as notebook parameters (``configs/seed.yaml`` sets it); ``ITEMS``
names every parameter where a profile may differ from it. One source renders:

  * ``profile_table()``: every profile (seed, full, quick, longer, auto) x every difference, for docs/evaluation.md
    (``python -m brainseg_utils.evaluation.protocol`` prints it; a test checks the docs hold the same table);
  * ``run_deviations(...)``: the differences of one run, from what the run recorded, not from a profile name:
    the data parameters of ``dataset.json`` (``params``) and the U-Net checkpoint's stored training and model
    config (and its ``meta.augmentation``). A run started with any profile, overrides included, is described by
    what it did; ``matching_profiles`` names the profiles it equals. ``section_lines`` renders it in results.md.

The metric: every profile's headline is the per-patient 3-D Dice over every brain slice; the column comparable
with the seed's 0.87 is ``Dice (tumour slices)`` (per-slice Dice averaged over the test patients' tumour slices,
each slice scored on the native 240 x 240 grid). It is comparable only where the run has no other deviation.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from brainseg_utils.config import TrainConfig, UNetConfig

COMPARABLE_COLUMN = "Dice (tumour slices)"  # the results.md column comparable with the seed's reported Dice
SEED_METRIC = "per-slice Dice on tumour slices (most likely; reported 0.87)"
HEADLINE = "per-patient 3-D Dice over every brain slice (headline), per-slice Dice beside it"
PROFILES = ("seed", "full", "quick", "longer", "auto")


@dataclass(frozen=True)
class Item:
    """One way a run can differ from the seed: ``param`` (a notebook parameter), the seed's value, a label."""

    label: str
    param: str
    seed: object
    what: str = ""  # how the seed's value reads, when the bare value is unclear


ITEMS: tuple[Item, ...] = (
    Item("image size", "IMG_SIZE", 256, "256 px"),
    Item("tumour-free slices per tumour slice", "TUMOUR_FREE_FRACTION", 0.0, "0 (tumour slices only, ~28k)"),
    Item("tumour slices kept", "SLICE_STEP", 1, "every one"),
    Item("input", "MODALITIES", "flair", "FLAIR"),
    Item("U-Net width", "UNET_BASE_CHANNELS", 64),
    Item("upsampling", "UNET_BILINEAR", True, "bilinear (28.9 M parameters)"),
    Item("U-Net epochs", "UNET_EPOCHS", 30),
    Item("batch size", "UNET_BATCH_SIZE", 16),
    Item("learning rate", "UNET_LR", 1e-4),
    Item("LR schedule", "UNET_LR_SCHEDULE", "constant"),
    Item("weight decay", "UNET_WEIGHT_DECAY", 0.0, "none (Adam)"),
    Item("gradient clipping", "GRAD_CLIP", 0.0, "none"),
    Item("weight averaging (EMA decay)", "UNET_EMA_DECAY", 0.0, "none"),
    Item("MR-intensity augmentation", "UNET_MR_AUGMENT", False, "none (geometric + noise)"),
    Item("augmentation strength", "UNET_AUG_STRENGTH", 1.0),
)
SEED = {i.param: i.seed for i in ITEMS}


def _fmt(item: Item, value) -> str:
    if value is None:
        return "not recorded"
    if item.param == "UNET_BILINEAR":
        return "bilinear" if value else "transposed convolutions"
    if isinstance(value, bool):
        return "on" if value else "off"
    if item.param == "TUMOUR_FREE_FRACTION" and not value:
        return "0 (tumour slices only)"
    return str(value)


def deviations(params: dict) -> list[tuple[Item, object]]:
    """(item, value) for every item where ``params`` (notebook names) differs from the seed; a missing value is
    listed as not recorded."""
    out = []
    for item in ITEMS:
        value = params.get(item.param)
        if value is None or value != item.seed:
            out.append((item, value))
    return out


def profile_params(profile: str) -> dict:
    """A profile's notebook parameters over the defaults (``auto`` = full before the planner's cuts)."""
    from brainseg_utils.parameters import load_profile, notebook_value, parameter_defaults

    base = {k: notebook_value(v) for k, v in parameter_defaults().items()}
    return base if profile == "auto" else {**base, **load_profile(profile)}


PROFILE_DATA = {
    "seed": "BraTS 2020 training (369 cases)",
    "full": "BraTS 2020 training (369 cases)",
    "auto": "BraTS 2020 training (369 cases); the planner may cut SLICE_STEP, epochs (listed under each results.md)",
    "quick": "synthetic, 16 cases (BraTS when DATA_ROOT points at it)",
    "longer": "synthetic, 32 cases (BraTS when DATA_ROOT points at it)",
}


def profile_table() -> str:
    """Markdown: one row per item the profiles set differently from the seed, one column per profile."""
    params = {p: profile_params(p) for p in PROFILES}
    head = ["| | the seed | " + " | ".join(f"`{p}`" for p in PROFILES) + " |", "|---" * (len(PROFILES) + 2) + "|"]
    rows = ["| data | BraTS 2020 training (369 cases) | " + " | ".join(PROFILE_DATA[p] for p in PROFILES) + " |"]
    for item in ITEMS:
        values = [params[p].get(item.param) for p in PROFILES]
        if all(v == item.seed for v in values):
            continue
        cells = [_fmt(item, v) if v != item.seed else "same" for v in values]
        rows.append(f"| {item.label} (`{item.param}`) | {item.what or _fmt(item, item.seed)} | {' | '.join(cells)} |")
    rows.append(f"| metric | {SEED_METRIC} | " + " | ".join(HEADLINE for _ in PROFILES) + " |")
    rows.append(
        "| comparable with the seed's number | - | " + " | ".join(f"`{COMPARABLE_COLUMN}`" for _ in PROFILES) + " |"
    )
    return "\n".join(head + rows)


def recorded_params(data_params: dict | None, unet_config: dict | None) -> dict:
    """What a run did, as notebook parameters: ``data_params`` = dataset.json ``params``; ``unet_config`` = the
    U-Net checkpoint's ``config`` ({"train": ..., "model": ...}) plus ``"augmentation"`` from its meta (absent in
    checkpoints written before it was recorded: those items read "not recorded"). Training fields a checkpoint
    leaves out at their defaults (``ema_decay`` 0, ``lr_schedule`` cosine) are filled in."""
    out = dict(data_params or {})
    cfg = unet_config or {}
    train, model = cfg.get("train"), cfg.get("model") or {}
    if train is not None:
        train = {"ema_decay": 0.0, "lr_schedule": "cosine", **train}
        out.update({name: train[f] for name, f in TrainConfig.UNET_PARAMS.items() if f in train})
    out.update({name: model[f] for name, f in UNetConfig.PARAMS.items() if f in model})
    aug = cfg.get("augmentation")
    if aug:
        out.update(UNET_AUG_STRENGTH=aug.get("strength"), UNET_MR_AUGMENT=aug.get("mr_augment"))
    return {k: v for k, v in out.items() if k in SEED}


def matching_profiles(params: dict) -> list[str]:
    """The profiles (every one but auto) whose values of ``ITEMS`` the run's ``params`` equal."""
    named = [p for p in PROFILES if p != "auto"]
    return [p for p in named if all(params.get(i.param) == profile_params(p).get(i.param) for i in ITEMS)]


def run_deviations(data_params: dict | None, unet_config: dict | None, dataset: str) -> dict:
    """The ``seed_protocol`` entry of metrics.json: recorded values, deviations, the comparable column."""
    params = recorded_params(data_params, unet_config)
    devs = deviations(params)
    return {
        "recorded": params,
        "matches_profiles": matching_profiles(params),
        "deviations": [{"item": i.label, "parameter": i.param, "seed": i.seed, "run": v} for i, v in devs],
        "data_differs": dataset != "brats2020",
        "comparable_column": COMPARABLE_COLUMN,
        "seed_metric": SEED_METRIC,
    }


def section_lines(protocol: dict | None) -> list[str]:
    """The "Deviations from the seed" section of results.md (markdown lines)."""
    if not protocol:
        return []
    devs = protocol["deviations"]
    matches = protocol.get("matches_profiles") or []
    lines = [
        "",
        "Deviations from the seed (from what this run recorded: dataset.json and the U-Net checkpoint"
        + (f"; its values equal the `{'`, `'.join(matches)}` profile" if matches else "")
        + "):",
        "",
        "| | the seed | this run |",
        "|---|---|---|",
    ]
    if protocol.get("data_differs"):
        lines.append("| data | BraTS 2020 training | SYNTHETIC (no number here is comparable with the seed's) |")
    for d in devs:
        item = next(i for i in ITEMS if i.param == d["parameter"])
        lines.append(
            f"| {d['item']} (`{d['parameter']}`) | {item.what or _fmt(item, d['seed'])} | {_fmt(item, d['run'])} |"
        )
    lines.append(f"| metric | {protocol['seed_metric']} | {HEADLINE} |")
    verdict = (
        "comparable with the seed's 0.87"
        if not devs and not protocol.get("data_differs")
        else "the closest to the seed's 0.87, but not comparable while the deviations above remain"
    )
    lines += ["", f"Column `{protocol['comparable_column']}` is {verdict} (the U-Net row)."]
    return lines


if __name__ == "__main__":
    sys.stdout.write(profile_table() + "\n")
