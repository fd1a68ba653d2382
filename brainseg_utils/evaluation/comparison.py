"""Same-slice comparison of every model, and per-patient lines joining the models (notebook 04's figures).

* ``pick_slices``: the slices worth looking at: the best, median and worst test patient by the reference model's
  per-patient Dice (each at its largest true tumour area) and the slice where the U-Net and a SAM model disagree
  most (pixels predicted by exactly one of the two).
* ``comparison_figure``: one row per picked slice; FLAIR with the ground-truth contour, then per model the true
  positives, false positives and false negatives in three colour-blind-safe colours (Okabe-Ito blue, yellow,
  vermillion) over the grey FLAIR, the ground-truth contour on every panel, the box SAM was prompted with, and
  the panel cropped to a square around the tumour.
* ``patient_lines``: one line per patient across the models (results-table order), the mean in thick black.

Display convention as in ``figures``: axial slice ``vol[:, :, z]`` rotated 90 degrees (``np.rot90``), anterior
up. Boxes are computed in the slice's own pixel indices (XYXY inclusive, x = column, y = row) and mapped to the
displayed (cropped, rotated) panel.
"""

from __future__ import annotations

import matplotlib.patheffects as pe
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from brainseg_utils.data.volumes import best_slice
from brainseg_utils.evaluation import metrics as M
from brainseg_utils.evaluation.cascade import component_boxes
from brainseg_utils.evaluation.statistics import is_oracle
from brainseg_utils.models.sam.prompts import mask_to_box

# Okabe-Ito colours: distinguishable with every common colour-vision deficiency and in greyscale (dark / light / mid).
TP_COLOUR = (0.0, 0.447, 0.698)  # blue
FP_COLOUR = (0.941, 0.894, 0.259)  # yellow
FN_COLOUR = (0.835, 0.369, 0.0)  # vermillion
TRUTH_COLOUR = "white"  # ground-truth contour (solid)
BOX_COLOUR = "#00e5ff"  # SAM's prompt box (dashed)
ALPHA = 0.7  # weight of the class colour over the grey FLAIR
CROP_PAD = 15  # px around the union of truth and predictions
CROP_MIN = 64  # px: the smallest crop side
METRIC_NAMES = {"dice": "Dice", "lesion_dice": "lesion-wise Dice", "hd95": "HD95 (mm)", "iou": "IoU"}
_OUTLINE = [pe.Stroke(linewidth=2.6, foreground="black"), pe.Normal()]  # a white line visible on white


# ----------------------------------------------------------------------------- models and slices


def model_order(names) -> list[str]:
    """Models in the results table's order: ``unet``, ``unet_clean`` (and any other non-SAM model), the automatic
    SAM rows, then the oracle rows (ground-truth box); first-seen order within each group."""

    def group(name: str) -> int:
        if name == "unet":
            return 0
        if not name.startswith("sam_"):
            return 1
        return 3 if is_oracle(name) else 2

    unique = list(dict.fromkeys(names))
    return sorted(unique, key=group)  # stable


def default_other(models) -> str | None:
    """The SAM model compared with the U-Net for the disagreement row: the first ``sam_*_unet_box`` (the automatic
    cascade), else the first ``sam_*_none``; None if neither is present."""
    models = list(models)
    for suffix in ("_unet_box", "_none"):
        found = [m for m in models if m.startswith("sam_") and m.endswith(suffix)]
        if found:
            return found[0]
    return None


def pick_slices(volumes: dict, per_case: pd.DataFrame, reference: str = "unet", other: str | None = None):
    """``[(label, case_id, z)]``: the best, median and worst test patient by ``reference``'s per-patient Dice, each
    at its slice with the largest true tumour area, then the slice with the most pixels predicted by exactly one of
    ``unet`` and ``other`` (default ``default_other``) over every slice of every patient in ``volumes``.

    A (case, z) picked twice appears once, its labels joined with " / " (e.g. "best / median / worst" with one
    test patient); the disagreement row is left out when the two models agree everywhere or one is missing.
    Ties: the lower case_id among equal Dice (sorted descending), the first case and lowest z among equal counts.
    """
    pc = per_case[(per_case.model == reference) & per_case.case_id.isin(list(volumes))]
    pc = pc.sort_values(["dice", "case_id"], ascending=[False, True], kind="stable").reset_index(drop=True)
    picks: dict[tuple[str, int], list[str]] = {}
    n = len(pc)
    if n:
        for label, i in (("best", 0), ("median", n // 2), ("worst", n - 1)):
            cid = pc.case_id[i]
            picks.setdefault((cid, best_slice(volumes[cid]["gt"])), []).append(label)
    models = list(next(iter(volumes.values()))["pred"]) if volumes else []
    other = other or default_other(models)
    if other is not None and "unet" in models and other in models:
        best = (0, None, None)
        for cid, v in volumes.items():
            diff = np.asarray(v["pred"]["unet"], bool) ^ np.asarray(v["pred"][other], bool)
            counts = diff.reshape(-1, diff.shape[2]).sum(0)
            z = int(counts.argmax())
            if counts[z] > best[0]:
                best = (int(counts[z]), cid, z)
        if best[1] is not None:
            picks.setdefault((best[1], best[2]), []).append("disagreement")
    return [(" / ".join(labels), cid, z) for (cid, z), labels in picks.items()]


# ----------------------------------------------------------------------------- panel pieces


def tp_fp_fn_rgb(flair_slice: np.ndarray, gt: np.ndarray, pred: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """float32 RGB (H, W, 3): the grey FLAIR (clipped to [0, 1]), true positives, false positives and false
    negatives blended with ``TP_COLOUR``, ``FP_COLOUR``, ``FN_COLOUR`` at weight ``alpha``."""
    grey = np.clip(np.asarray(flair_slice, np.float32), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    g, p = np.asarray(gt, bool), np.asarray(pred, bool)
    for m, colour in ((g & p, TP_COLOUR), (p & ~g, FP_COLOUR), (g & ~p, FN_COLOUR)):
        rgb[m] = (1 - alpha) * rgb[m] + alpha * np.asarray(colour, np.float32)
    return rgb


def crop_window(mask: np.ndarray, pad: int = CROP_PAD, min_size: int = CROP_MIN) -> tuple[int, int, int, int]:
    """``(r0, r1, c0, c1)`` (end exclusive): a square around the nonzero pixels of the 2-D ``mask``, padded by
    ``pad`` px, at least ``min_size`` px a side, shifted and clipped to lie inside the image; the whole image when
    the mask is empty."""
    m = np.asarray(mask) > 0
    h, w = m.shape
    if not m.any():
        return 0, h, 0, w
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    side = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) + 2 * pad
    side = max(side, min_size)
    out = []
    for lo, hi, size in ((rows[0], rows[-1], h), (cols[0], cols[-1], w)):
        s = min(side, size)
        start = int(np.floor((lo + hi + 1) / 2 - s / 2))
        start = min(max(start, hi + 1 - s), lo)  # the mask stays inside
        start = min(max(start, 0), size - s)
        out += [start, start + s]
    return tuple(out)


def prompt_boxes(model: str, gt_slice: np.ndarray, pred_slices: dict) -> np.ndarray:
    """float (K, 4) XYXY boxes (slice pixel indices) that ``model`` was prompted with on this slice: the
    ground-truth box for the oracle ``sam_<b>_box`` / ``sam_<b>_box_zeroshot``, one box per 8-connected component of
    ``unet_clean`` (else ``unet``) for the cascade ``sam_<b>_unet_box``; (0, 4) for every other model.

    Recomputed on the native grid (the cascade computes them on the slice-cache-size mask: the same components)."""
    none = np.zeros((0, 4), np.float32)
    if not model.startswith("sam_"):
        return none
    if model.endswith("_unet_box"):
        src = "unet_clean" if "unet_clean" in pred_slices else "unet" if "unet" in pred_slices else None
        if src is None:
            return none
        boxes = component_boxes(pred_slices[src])
        return boxes[~np.isnan(boxes).any(1)]
    if is_oracle(model):
        box = mask_to_box(gt_slice)
        return none if box is None else box[None]
    return none


def _display(a: np.ndarray) -> np.ndarray:
    return np.rot90(a)


def display_rect(box, window: tuple[int, int, int, int]) -> Rectangle:
    """The rectangle of an XYXY slice box on the panel that shows ``window`` of the slice, rotated by ``np.rot90``:
    slice pixel (r, c) is panel pixel (row w - 1 - (c - c0), column r - r0), w the window's width."""
    r0, _, c0, c1 = window
    x0, y0, x1, y1 = (float(b) for b in box)
    w = c1 - c0
    left, right = y0 - r0, y1 - r0
    top, bottom = w - 1 - (x1 - c0), w - 1 - (x0 - c0)
    return Rectangle(
        (left - 0.5, top - 0.5),
        right - left + 1,
        bottom - top + 1,
        fill=False,
        edgecolor=BOX_COLOUR,
        linestyle="--",
        linewidth=1.3,
    )


def _contour(ax, mask: np.ndarray) -> None:
    if mask.any():
        ax.contour(mask.astype(np.float32), levels=[0.5], colors=TRUTH_COLOUR, linewidths=1.0)


def _patient_dice(per_case: pd.DataFrame, model: str, cid: str) -> float:
    d = per_case.loc[(per_case.model == model) & (per_case.case_id == cid), "dice"]
    return float(d.iloc[0]) if len(d) else float("nan")


# ----------------------------------------------------------------------------- figures


def _boxes_of(boxes, key: tuple, gt: np.ndarray, preds: dict) -> np.ndarray:
    """The (K, 4) boxes drawn for ``key`` = (case_id, z, model): none, the given ones, or ``prompt_boxes``."""
    if boxes is False:
        return np.zeros((0, 4))
    if isinstance(boxes, dict) and key in boxes:
        b = np.asarray(boxes[key], np.float32).reshape(-1, 4)
        return b[~np.isnan(b).any(1)]
    return prompt_boxes(key[2], gt, preds)


def _window(gt: np.ndarray, preds: dict, slice_boxes: dict) -> tuple:
    """``crop_window`` around the truth, every shown prediction and every box (boxes stay in view)."""
    union = gt.copy()
    for m, bxs in slice_boxes.items():
        union |= preds[m]
        for x0, y0, x1, y1 in bxs.astype(int):
            union[y0 : y1 + 1, x0 : x1 + 1] = True
    return crop_window(union)


def legend_handles() -> list:
    return [
        Patch(color=TP_COLOUR, label="true positive"),
        Patch(color=FP_COLOUR, label="false positive"),
        Patch(color=FN_COLOUR, label="false negative (missed)"),
        Line2D([], [], color=TRUTH_COLOUR, lw=1.2, label="ground-truth contour", path_effects=_OUTLINE),
        Line2D([], [], color=BOX_COLOUR, lw=1.3, ls="--", label="box given to SAM"),
    ]


def comparison_figure(
    volumes: dict,
    per_case: pd.DataFrame,
    dataset: str,
    models=None,
    boxes=None,
    reference: str = "unet",
):
    """Rows: ``pick_slices``; columns: FLAIR with the ground-truth contour, then every model (``models``, default
    all, in results-table order) as true positive / false positive / false negative colours, titled with the
    model, that patient's Dice (``per_case``) and the slice's Dice. Every panel of a row shows the same square
    crop around the union of truth and predictions (``crop_window``). SAM's prompt boxes (``prompt_boxes``) are
    dashed rectangles; ``boxes=False`` draws none, a dict ``{(case_id, z, model): (K, 4) XYXY}`` replaces them.

    ``volumes``: ``{case_id: {"gt": bool (H, W, D), "pred": {model: bool (H, W, D)}, "flair": (H, W, D) in
    [0, 1]}}`` as notebook 04 has them; ``per_case``: the per-patient table (case_id, model, dice)."""
    all_models = list(next(iter(volumes.values()))["pred"])
    models = model_order(models if models is not None else all_models)
    other = default_other(all_models)
    rows = pick_slices(volumes, per_case, reference, other)
    if not rows:
        raise ValueError(f"comparison_figure: no test patient of {reference!r} in both volumes and per_case")
    ncol = 1 + len(models)
    fig, axes = plt.subplots(
        len(rows), ncol, figsize=(2.3 * ncol, 2.75 * len(rows) + 1.3), squeeze=False, layout="constrained"
    )
    for r, (label, cid, z) in enumerate(rows):
        v = volumes[cid]
        gt = np.asarray(v["gt"][:, :, z], bool)
        preds = {m: np.asarray(p[:, :, z], bool) for m, p in v["pred"].items()}
        slice_boxes = {m: _boxes_of(boxes, (cid, z, m), gt, preds) for m in models}
        window = _window(gt, preds, slice_boxes)
        r0, r1, c0, c1 = window
        flair, gt_c = v["flair"][r0:r1, c0:c1, z], gt[r0:r1, c0:c1]
        ax = axes[r, 0]
        ax.imshow(_display(np.clip(flair, 0, 1)), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        _contour(ax, _display(gt_c))
        what = label.replace("disagreement", f"most disagreement\n(unet vs {other})")
        ax.set_title(
            f"{what}\n{cid} z={z}, {int(gt.sum())} px\n{reference} patient Dice "
            f"{_patient_dice(per_case, reference, cid):.3f}",
            fontsize=8,
        )
        for c, m in enumerate(models, start=1):
            ax = axes[r, c]
            ax.imshow(_display(tp_fp_fn_rgb(flair, gt_c, preds[m][r0:r1, c0:c1])), interpolation="nearest")
            _contour(ax, _display(gt_c))
            for box in slice_boxes[m]:
                ax.add_patch(display_rect(box, window))
            tag = " [oracle]" if is_oracle(m) else ""
            ax.set_title(
                f"{m}{tag}\npatient Dice {_patient_dice(per_case, m, cid):.3f}\nslice Dice {M.dice(preds[m], gt):.3f}",
                fontsize=8,
            )
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    oracles = [m for m in models if is_oracle(m)]
    handles = legend_handles()
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    oracle_txt = (
        f"Oracle (given the ground-truth box; upper bounds, not automatic): {', '.join(oracles)}"
        if oracles
        else "No oracle-prompted model shown"
    )
    fig.suptitle(
        f"The same slices for every model ({dataset} data): best, median and worst test patient by {reference} Dice"
        + (f", and the slice where unet and {other} disagree most" if other else "")
        + few_patients_note(per_case, volumes, reference)
        + f"\n{oracle_txt}. Each row cropped around the tumour and the predictions.",
        fontsize=10,
    )
    return fig


def few_patients_note(per_case: pd.DataFrame, volumes: dict, reference: str = "unet") -> str:
    """A title line when fewer than three test patients make best, median and worst share rows ("" otherwise)."""
    n = per_case[(per_case.model == reference) & per_case.case_id.isin(list(volumes))].case_id.nunique()
    if n >= 3:
        return ""
    if n == 1:
        return "\nOnly 1 test patient: best, median and worst are the same row."
    return f"\nOnly {n} test patients: the median patient is also the worst (one row, labelled 'median / worst')."


def patient_lines(per_case: pd.DataFrame, dataset: str, metric: str = "dice"):
    """One line per test patient joining its ``metric`` across the models (results-table order: ``unet``,
    ``unet_clean``, automatic SAM rows, then the oracle rows, shaded), the mean over patients as a thick black
    line. Thin, transparent grey lines when there are many patients; y from 0 to 1 for Dice."""
    models = model_order(per_case.model)
    wide = per_case.pivot_table(index="case_id", columns="model", values=metric, aggfunc="first")
    wide = wide.reindex(columns=models)
    n = len(wide)
    x = np.arange(len(models))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.25 * len(models) + 3), 4.8), layout="constrained")
    oracle_x = [i for i, m in enumerate(models) if is_oracle(m)]
    if oracle_x:
        ax.axvspan(min(oracle_x) - 0.5, max(oracle_x) + 0.5, color="0.92", zorder=0)
    few = n <= 12
    alpha = 0.85 if few else float(np.clip(8 / n, 0.06, 0.5))
    for i, (cid, row) in enumerate(wide.iterrows()):
        ax.plot(
            x,
            row.to_numpy(float),
            marker="o",
            ms=5 if few else 2,
            lw=1.3 if few else 0.6,
            alpha=alpha,
            color=f"C{i % 10}" if few else "0.35",
            label=str(cid) if few else None,
            zorder=2,
        )
    mean = wide.mean(axis=0).to_numpy(float)
    ax.plot(x, mean, "-o", color="black", lw=3.2, ms=7, label=f"mean over {n} patients", zorder=3)
    ax.set_xticks(x, [f"{m}\n[oracle]" if is_oracle(m) else m for m in models], rotation=20, ha="right", fontsize=8)
    ax.set_xlim(-0.5, len(models) - 0.5)
    if metric in ("dice", "lesion_dice", "iou", "precision", "recall") or metric.startswith("nsd"):
        ax.set_ylim(0, 1.02)
    name = METRIC_NAMES.get(metric, metric)
    ax.set_ylabel(f"per-patient {name}" + (" (3-D, whole tumour)" if metric == "dice" else ""))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.8)
    shade = "; shaded: oracle prompts, upper bounds" if oracle_x else ""
    ax.set_title(
        f"Per-patient {name} on the test split ({dataset} data)\none line per patient, black: the mean{shade}",
        fontsize=10,
    )
    return fig
