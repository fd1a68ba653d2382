"""Validation-slice previews (notebooks 02 and 03): what a trained model predicts on a few validation slices.

* ``preview_rows``: up to ``n`` validation slices with tumour, one per patient before a second from any, at the
  tumour-area quantiles 1/n, 2/n, .., 1 (a small tumour to the largest; deterministic).
* ``predict_rows``: a model's masks (sigmoid > 0.5, at the slice-cache size) and the boxes it was prompted with,
  for those rows of a validation dataset (the items it validates on: the same input and the same prompt).
* ``previews_figure``: one column per slice; the first row the FLAIR with the ground-truth contour, then one row
  per model in notebook 04's colours (``comparison.tp_fp_fn_rgb``: true positive blue, false positive yellow,
  false negative vermillion), the ground-truth contour, the prompt boxes (dashed) and the slice's Dice.

Display as everywhere: the cached slice rotated by ``np.rot90`` (anterior up); boxes XYXY in the slice's pixel
indices (x = column, y = row), as the datasets give them.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from brainseg_utils.evaluation import metrics as M
from brainseg_utils.evaluation.comparison import TRUTH_COLOUR, display_rect, legend_handles, tp_fp_fn_rgb


def preview_rows(cache, rows, n: int = 4) -> list[int]:
    """Up to ``n`` of ``rows`` (slice-cache rows) whose cached mask has tumour: sorted by tumour area, the rows
    nearest the quantiles 1/n, 2/n, .., 1 (not the very smallest: a few pixels say little), one per patient while
    patients last; returned in order of tumour area."""
    rows = [int(r) for r in rows if np.asarray(cache.masks[int(r)]).any()]
    if not rows:
        return []
    area = {r: int(np.asarray(cache.masks[r]).sum()) for r in rows}
    ordered = sorted(rows, key=lambda r: (area[r], r))
    k = min(n, len(ordered))
    targets = (np.arange(1, k + 1) / k * (len(ordered) - 1)).round().astype(int)  # quantiles 1/k .. 1
    picked: list[int] = []
    cases = cache.index["case_id"].to_numpy()
    for t in targets:  # the nearest unused row to each quantile, preferring a patient not yet shown
        by_distance = sorted(range(len(ordered)), key=lambda i: (abs(i - t), i))
        fresh = [i for i in by_distance if ordered[i] not in picked and cases[ordered[i]] not in cases[picked]]
        rest = [i for i in by_distance if ordered[i] not in picked]
        picked.append(ordered[(fresh or rest)[0]])
    return sorted(picked, key=lambda r: (area[r], r))


@torch.no_grad()
def predict_rows(model, dataset, rows, device="cpu", threshold: float = 0.5) -> tuple[dict, dict]:
    """({row: bool (S, S) mask}, {row: float (K, 4) boxes, K = 0 without a prompt}) of ``model`` on the items of
    ``dataset`` (``.rows``; items ``(input, target)``, the input a tensor or a dict of keyword arguments with
    ``boxes`` for a SAM decoder) for ``rows`` it holds; rows it does not hold are left out."""
    where = {int(r): i for i, r in enumerate(dataset.rows)}
    model.eval()
    masks, boxes = {}, {}
    for row in (int(r) for r in rows):
        if row not in where:
            continue
        inputs, _ = dataset[where[row]]
        if isinstance(inputs, dict):
            logits = model(**{k: v[None].to(device) for k, v in inputs.items()})
            b = inputs["boxes"].numpy().reshape(-1, 4)
            boxes[row] = b[~np.isnan(b).any(1)]
        else:
            logits = model(inputs[None].to(device))
            boxes[row] = np.zeros((0, 4), np.float32)
        masks[row] = (torch.sigmoid(logits.float())[0, 0] > threshold).cpu().numpy()
    return masks, boxes


def previews_figure(cache, rows, panels: dict, dataset: str, title: str, boxes: dict | None = None):
    """Columns: ``rows`` (slice-cache rows); first row: FLAIR (first channel) with the ground-truth contour,
    titled with case, slice and tumour area; then one row per entry of ``panels`` (``{label: {row: bool (S, S)}}``,
    its label on the left) with the slice's Dice in each title and the boxes of ``boxes`` (``{label: {row:
    (K, 4)}}``) dashed. One legend below the panels."""
    rows = [int(r) for r in rows]
    if not rows:
        raise ValueError("previews_figure: no slices to show (no validation slice with tumour?)")
    n_rows = 1 + len(panels)
    fig, axes = plt.subplots(
        n_rows, len(rows), figsize=(2.6 * len(rows) + 1.2, 2.7 * n_rows + 0.9), squeeze=False, layout="constrained"
    )
    size = int(cache.images.shape[-1])
    for c, row in enumerate(rows):
        image = np.clip(np.asarray(cache.images[row, 0], np.float32), 0, 1)
        gt = np.asarray(cache.masks[row]) > 0
        r = cache.index.iloc[row]
        ax = axes[0, c]
        ax.imshow(np.rot90(image), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        _contour(ax, gt)
        ax.set_title(f"case {str(r.case_id)[-3:]}, z={r.z}\n{int(gt.sum())} px tumour", fontsize=9)
        for k, (label, masks) in enumerate(panels.items(), start=1):
            ax = axes[k, c]
            if row not in masks:
                ax.set_title("not predicted", fontsize=9)
                continue
            ax.imshow(np.rot90(tp_fp_fn_rgb(image, gt, masks[row])), interpolation="nearest")
            _contour(ax, gt)
            for box in ((boxes or {}).get(label) or {}).get(row, np.zeros((0, 4))):
                ax.add_patch(display_rect(box, (0, size, 0, size)))
            ax.set_title(f"slice Dice {M.dice(masks[row], gt):.3f}", fontsize=9)
    axes[0, 0].set_ylabel("FLAIR + truth", fontsize=10)
    for k, label in enumerate(panels, start=1):
        axes[k, 0].set_ylabel(label, fontsize=10)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    boxed = any(len(b) for per_row in (boxes or {}).values() for b in per_row.values())
    shown = legend_handles() if boxed else legend_handles()[:-1]  # the last entry: SAM's prompt box
    fig.legend(handles=shown, loc="outside lower center", ncol=len(shown), fontsize=8, frameon=False)
    fig.suptitle(f"{title} ({dataset} data)", fontsize=11)
    return fig


def _contour(ax, mask: np.ndarray) -> None:
    if mask.any():
        ax.contour(np.rot90(mask).astype(np.float32), levels=[0.5], colors=TRUTH_COLOUR, linewidths=1.0)
