"""Sentences the notebooks show, written from what the run recorded (never typed by hand into a notebook):

* ``flat_start_note(history)``: notebook 02, why validation Dice may sit flat for the first epochs;
* ``takeaway(metrics)``: notebook 04's three-line summary of ``metrics.json`` (best automatic model, the U-Net
  against the automatic SAM cascade, the biggest failure mode).

Markdown strings; numbers as ``results_table`` writes them.
"""

from __future__ import annotations

from brainseg_utils.evaluation.results_table import CLEAN, split_models
from brainseg_utils.evaluation.statistics import MIN_PATIENTS_FOR_STATS

FOUND_TUMOUR = 0.01  # tumour-slice Dice above this: the model has started to find the tumour
ISLANDS_RATIO = 1.5  # the U-Net's HD95 this many times unet_clean's: stray islands are the failure mode
ALPHA = 0.05  # significance level of the paired test (Holm-adjusted where pre-declared)


def flat_start_note(history: list[dict], model: str = "U-Net") -> str:
    """Why validation Dice was flat at the start (a markdown paragraph), from a training ``history`` (one dict per
    epoch with ``epoch``, ``val_dice``, ``val_dice_tumour``).

    Flat start = the first epochs with tumour-slice Dice <= ``FOUND_TUMOUR``: the model predicts (almost)
    nothing, which scores Dice 1 on tumour-free slices and 0 on tumour slices (BraTS convention), so all-slice
    Dice sits at the share of tumour-free validation slices until the model finds the tumour."""
    if not history:
        return f"No epochs recorded for the {model}."
    flat = 0
    for h in history:
        if h["val_dice_tumour"] > FOUND_TUMOUR:
            break
        flat += 1
    plateau = history[0]["val_dice"]
    why = (
        "an empty mask scores Dice 1 on a tumour-free slice and 0 on a tumour slice, so until the model finds the "
        f"tumour the all-slice Dice stays at the share of tumour-free validation slices (here {plateau:.3f})"
    )
    if flat == 0:
        return (
            f"The {model} found tumour from epoch {history[0]['epoch']} (tumour-slice Dice "
            f"{history[0]['val_dice_tumour']:.3f}), so validation Dice did not sit flat at the start; had it predicted "
            f"empty masks, {why}."
        )
    epochs = (
        f"epoch {history[0]['epoch']}" if flat == 1 else f"epochs {history[0]['epoch']}-{history[flat - 1]['epoch']}"
    )
    text = (
        f"**Why the validation Dice is flat at first.** In {epochs} the {model}'s tumour-slice Dice was 0: it "
        f"predicted (almost) empty masks, a safe answer while most pixels are background. {why[0].upper()}{why[1:]}."
    )
    if flat < len(history):
        found = history[flat]
        text += (
            f" At epoch {found['epoch']} it found the tumour: tumour-slice Dice {found['val_dice_tumour']:.3f}, "
            f"all-slice Dice {found['val_dice']:.3f}."
        )
    else:
        text += " It never found the tumour in this run: train longer (more epochs) or check the data."
    return text


def _ci(stats: dict) -> str:
    ci = stats.get("ci95")
    return f" [95% CI {ci[0]:.3f}, {ci[1]:.3f}]" if ci and None not in ci else ""


def _cascade(automatic: list[tuple[str, dict]]) -> str | None:
    """The automatic SAM model compared with the U-Net: the first ``sam_*_unet_box`` (results-table order: the
    primary backend first), else the first ``sam_*_none``."""
    for suffix in ("_unet_box", "_none"):
        for name, _ in automatic:
            if name.startswith("sam_") and name.endswith(suffix):
                return name
    return None


def best_line(metrics: dict) -> str:
    automatic, _ = split_models(metrics)
    n = metrics["dataset"]["n_test_cases"]
    name, m = max(automatic, key=lambda kv: kv[1]["per_case"]["dice"]["mean"])
    dice = m["per_case"]["dice"]
    few = "" if n >= MIN_PATIENTS_FOR_STATS else f" ({n} test patients: too few for a confidence interval)"
    return (
        f"**Best automatic model:** `{name}`, Dice {dice['mean']:.3f} per patient{_ci(dice)} on "
        f"{metrics['dataset']['name']} data{few}."
    )


def cascade_line(metrics: dict) -> str:
    automatic, _ = split_models(metrics)
    models = dict(automatic)
    cascade = _cascade(automatic)
    if "unet" not in models or cascade is None:
        return "**U-Net vs SAM:** no automatic SAM model in this run (notebook 03 not run?)."
    res = ((metrics.get("statistics") or {}).get(cascade, {}).get("paired") or {}).get("dice") or {}
    diff = res.get("mean_difference")
    if diff is None:
        diff = models["unet"]["per_case"]["dice"]["mean"] - models[cascade]["per_case"]["dice"]["mean"]
    ci = res.get("ci95")
    ci_txt = f" [95% CI {ci[0]:+.3f}, {ci[1]:+.3f}]" if ci and None not in ci else ""
    lead = "the U-Net ahead" if diff > 0 else "SAM ahead" if diff < 0 else "no difference"
    p = res.get("p_holm") if res.get("p_holm") is not None else res.get("p_value")
    n = metrics["dataset"]["n_test_cases"]
    if p is None:
        verdict = f"not testable with {n} test patients (a paired test needs {MIN_PATIENTS_FOR_STATS})"
    else:
        kind = "Holm-adjusted p" if res.get("p_holm") is not None else "Wilcoxon p"
        verdict = f"{'significant' if p < ALPHA else 'not significant'} ({kind} {p:.3g})"
    return (
        f"**U-Net vs the SAM cascade (`{cascade}`):** Dice difference {diff:+.3f} per patient{ci_txt}, "
        f"{lead}; {verdict}."
    )


def failure_line(metrics: dict) -> str:
    """Stray false-positive islands when removing small 3-D components shrinks the U-Net's HD95 by
    ``ISLANDS_RATIO``; else what limits the best automatic model (missed tumour or over-segmentation)."""
    automatic, _ = split_models(metrics)
    models = dict(automatic)
    if "unet" in models and CLEAN in models:
        u, c = (models[k]["per_case"]["hd95"]["mean"] for k in ("unet", CLEAN))
        if u > ISLANDS_RATIO * c:
            fp = models["unet"]["per_case"].get("fp_ml", {}).get("mean")
            fp_txt = f", {fp:.2f} mL of them per patient" if fp is not None else ""
            return (
                f"**Biggest failure mode:** stray false-positive islands far from the tumour. The U-Net's HD95 is "
                f"{u:.1f} mm, {c:.1f} mm once small 3-D components are removed (`{CLEAN}`){fp_txt}."
            )
    name, m = max(automatic, key=lambda kv: kv[1]["per_case"]["dice"]["mean"])
    pc = m["per_case"]
    prec, rec = pc["precision"]["mean"], pc["recall"]["mean"]
    what = "missed tumour (recall below precision)" if rec < prec else "over-segmentation (precision below recall)"
    return (
        f"**Biggest failure mode of `{name}`:** {what}: precision {prec:.3f}, recall {rec:.3f}, "
        f"HD95 {pc['hd95']['mean']:.1f} mm."
    )


def takeaway(metrics: dict) -> str:
    """Three markdown lines (one per bullet) summarising ``metrics.json`` for the top of notebook 04."""
    return "\n".join(f"- {line}" for line in (best_line(metrics), cascade_line(metrics), failure_line(metrics)))


def headline(metrics_path) -> str:
    """Notebook 04's opening cell before its evaluation has run: the takeaway of the ``metrics.json`` already in
    the run folder (said so), or where it will appear."""
    import json
    from pathlib import Path

    path = Path(metrics_path)
    if not path.is_file():
        return "*The takeaway appears here once the evaluation below has run (`Run all`).*"
    recorded = takeaway(json.loads(path.read_text()))
    note = f"*From the evaluation already in this run folder ({path}); replaced when the cells below run.*"
    return f"{note}\n\n{recorded}"
