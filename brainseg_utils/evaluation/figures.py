"""Figures: overlays, EDA distributions, and the ipywidgets slice explorer (with a static fallback).

Notebook 04's same-slice comparison of every model and its per-patient lines are in ``comparison``.

Every figure title carries the dataset name ("synthetic" or "brats2020") so a synthetic
number is never mistaken for a BraTS one. Display convention: axial slice ``vol[:, :, z]``
rotated 90 degrees (``np.rot90``) so anterior is up, as in common BraTS viewers.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pandas as pd

from brainseg_utils.data.brats import MODALITIES, Case
from brainseg_utils.data.volumes import best_slice, normalise_volume
from brainseg_utils.runtime.io import atomic_write

# BraTS label colours (RGBA): NCR/NET red, ED green, ET yellow.
LABEL_COLOURS = {1: (0.9, 0.1, 0.1), 2: (0.1, 0.8, 0.2), 4: (1.0, 0.85, 0.0)}
LABEL_NAMES = {1: "NCR/NET (1)", 2: "ED (2)", 4: "ET (4)"}


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save atomically as PNG."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png"), suffix=".png")


def _display(sl: np.ndarray) -> np.ndarray:
    return np.rot90(sl)


def label_overlay(seg_slice: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGBA (H, W, 4) image colouring BraTS labels of a 2-D slice; transparent elsewhere."""
    rgba = np.zeros((*seg_slice.shape, 4), np.float32)
    for lab, col in LABEL_COLOURS.items():
        m = seg_slice == lab
        rgba[m, :3] = col
        rgba[m, 3] = alpha
    return rgba


def mask_overlay(mask: np.ndarray, colour=(0.1, 0.8, 1.0), alpha: float = 0.45) -> np.ndarray:
    """RGBA (H, W, 4) for a binary mask."""
    rgba = np.zeros((*mask.shape, 4), np.float32)
    rgba[mask > 0, :3] = colour
    rgba[mask > 0, 3] = alpha
    return rgba


def _legend(fig) -> None:
    """The BraTS label colours as one legend below the panels (never over an image; needs a constrained layout)."""
    from matplotlib.patches import Patch

    fig.legend(
        handles=[Patch(color=LABEL_COLOURS[k], label=LABEL_NAMES[k]) for k in LABEL_COLOURS],
        loc="outside lower center",
        ncol=len(LABEL_COLOURS),
        fontsize=9,
        frameon=False,
    )


def read_volume(path: str | os.PathLike) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def show_slice(
    ax, image: np.ndarray, seg: np.ndarray | None = None, overlay: bool = True, alpha: float = 0.45, title: str = ""
) -> None:
    """Draw one axial slice (H, W) with an optional label overlay onto ``ax``."""
    ax.imshow(_display(image), cmap="gray", interpolation="nearest")
    if overlay and seg is not None and seg.any():
        ax.imshow(_display(label_overlay(seg, alpha)), interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def example_overlays(cases: list[Case], dataset: str, n: int = 4, modality: str = "flair"):
    """Grid: one row per case, columns = the four modalities + labels, at the largest-tumour slice."""
    cases = [c for c in cases if c.labelled][:n]
    if not cases:
        raise ValueError("example_overlays needs at least one labelled case")
    fig, axes = plt.subplots(len(cases), 5, figsize=(15, 3.1 * len(cases) + 0.8), squeeze=False, layout="constrained")
    for r, case in enumerate(cases):
        seg = read_volume(case.seg)
        z = best_slice(seg)
        for c, m in enumerate(MODALITIES):
            show_slice(axes[r, c], read_volume(case.images[m])[:, :, z], None, title=f"{case.case_id[-3:]} {m} z={z}")
        flair = read_volume(case.images[modality])[:, :, z]
        show_slice(axes[r, 4], flair, seg[:, :, z], title=f"{modality} + labels")
    _legend(fig)
    fig.suptitle(f"Example cases ({dataset} data): modalities and BraTS labels", fontsize=12)
    return fig


def distributions(audit: pd.DataFrame, index: pd.DataFrame, dataset: str):
    """Tumour volume per case (mL) and selected slices per case (tumour / tumour-free)."""
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    sns.histplot(audit["tumour_ml"], bins=min(20, max(5, len(audit))), ax=axes[0], color="tab:red")
    axes[0].set_xlabel("whole-tumour volume per case (mL)")
    axes[0].set_title("Tumour volume per case")
    per_case = index.groupby(["case_id", "has_tumour"]).size().unstack(fill_value=0)
    per_case = per_case.reindex(columns=[True, False], fill_value=0)
    per_case.columns = ["tumour slices", "tumour-free slices"]
    per_case.plot.bar(stacked=True, ax=axes[1], color=["tab:red", "tab:gray"], width=0.85)
    axes[1].set_xticklabels([c[-3:] for c in per_case.index], rotation=90, fontsize=7)
    axes[1].set_xlabel("case")
    axes[1].set_ylabel("slices in cache")
    axes[1].set_title("Slices per case in the slice cache")
    fig.suptitle(f"Dataset distributions ({dataset} data)")
    fig.tight_layout()
    return fig


def intensity_histograms(
    cases: list[Case], dataset: str, n: int = 6, modality: str = "flair", max_voxels: int = 20000, seed: int = 0
):
    """Raw and normalised brain-voxel intensity histograms (seaborn KDE lines), one line per case."""
    import seaborn as sns

    rng = np.random.default_rng(seed)
    raw, norm = [], []
    for case in cases[:n]:
        vol = read_volume(case.images[modality]).astype(np.float32)
        brain = vol != 0
        vals = vol[brain]
        nvals = normalise_volume(vol)[brain]
        pick = rng.choice(len(vals), size=min(max_voxels, len(vals)), replace=False)
        raw.append(pd.DataFrame({"intensity": vals[pick], "case": case.case_id[-3:]}))
        norm.append(pd.DataFrame({"intensity": nvals[pick], "case": case.case_id[-3:]}))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    titles = ("raw", "after per-volume 0.5-99.5 percentile scaling to [0, 1]")
    for ax, frames, title in zip(axes, (raw, norm), titles, strict=True):
        sns.histplot(
            pd.concat(frames),
            x="intensity",
            hue="case",
            element="step",
            fill=False,
            bins=60,
            stat="density",
            common_norm=False,
            ax=ax,
        )
        ax.set_title(f"{modality.upper()} brain voxels, {title}" if title == "raw" else f"{modality.upper()} {title}")
    fig.suptitle(f"Intensity distributions ({dataset} data)")
    fig.tight_layout()
    return fig


def sample_rows(index: pd.DataFrame, n: int, seed: int = 0) -> np.ndarray:
    """Sorted rows of ``index`` (``has_tumour`` column): up to ``n``, half with tumour and half without where the
    cache has both (seeded)."""
    rng = np.random.default_rng(seed)
    tumour = np.flatnonzero(index["has_tumour"].to_numpy(bool))
    free = np.flatnonzero(~index["has_tumour"].to_numpy(bool))
    k_free = min(len(free), n // 2)
    k_tumour = min(len(tumour), n - k_free)
    k_free = min(len(free), n - k_tumour)
    picks = [rng.choice(tumour, k_tumour, replace=False), rng.choice(free, k_free, replace=False)]
    return np.sort(np.concatenate(picks).astype(int))


def cache_samples(cache, dataset: str, n: int = 6, seed: int = 0, ncols: int = 3):
    """What the models will see: ``n`` slices of the cache (half with tumour where possible, ``sample_rows``) in
    rows of ``ncols``, each titled with its case, slice and tumour area, the whole-tumour mask outlined."""
    rows = sample_rows(cache.index, n, seed)
    nrows = int(np.ceil(len(rows) / ncols))
    size = (3.4 * ncols, 3.5 * nrows + 0.6)
    fig, axes = plt.subplots(nrows, ncols, figsize=size, squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, rows, strict=False):
        img = np.asarray(cache.images[row, 0], np.float32)
        mask = np.asarray(cache.masks[row])
        ax.imshow(_display(img), cmap="gray", vmin=0, vmax=1)
        if mask.any():
            ax.contour(_display(mask), levels=[0.5], colors="cyan", linewidths=1.0)
        r = cache.index.iloc[row]
        what = f"tumour, {int(mask.sum())} px" if mask.any() else "no tumour"
        ax.set_title(f"case {r.case_id[-3:]}, z={r.z}\n{what}", fontsize=10)
    size = cache.manifest["config"]["img_size"]
    fig.suptitle(f"What the models see: slice-cache samples, {size} px ({dataset} data; cyan = whole-tumour mask)")
    return fig


class SliceExplorer:
    """Browse cases slice by slice: case, slice, modality, overlay on/off, opacity.

    ``widget()`` returns an ipywidgets box for a live kernel; ``static_figure()`` draws the
    same view for fixed settings (what headless runs and GitHub show). Volumes are read lazily
    and only the current case is kept in memory.
    """

    def __init__(self, cases: list[Case], dataset: str):
        self.cases = {c.case_id: c for c in cases}
        if not self.cases:
            raise ValueError("SliceExplorer needs at least one case")
        self.dataset = dataset
        self._cached: tuple[str, str, np.ndarray] | None = None
        self._seg: tuple[str, np.ndarray | None] | None = None

    def volume(self, case_id: str, modality: str) -> np.ndarray:
        if self._cached is None or self._cached[:2] != (case_id, modality):
            self._cached = (case_id, modality, read_volume(self.cases[case_id].images[modality]))
        return self._cached[2]

    def seg(self, case_id: str) -> np.ndarray | None:
        if self._seg is None or self._seg[0] != case_id:
            case = self.cases[case_id]
            self._seg = (case_id, read_volume(case.seg) if case.seg else None)
        return self._seg[1]

    def draw(
        self, ax, case_id: str, z: int, modality: str = "flair", overlay: bool = True, alpha: float = 0.45, title=None
    ):
        """One slice; ``title`` defaults to the case, modality, slice and dataset (the widget's one panel)."""
        vol = self.volume(case_id, modality)
        z = int(np.clip(z, 0, vol.shape[2] - 1))
        seg = self.seg(case_id)
        title = f"{case_id} {modality} z={z} ({self.dataset})" if title is None else title.format(z=z)
        show_slice(ax, vol[:, :, z], None if seg is None else seg[:, :, z], overlay, alpha, title=title)

    def static_figure(self, case_ids: list[str] | None = None, modality: str = "flair", alpha: float = 0.45):
        """2 x 4 grid: for up to two cases, four slices spread through the tumour, with overlay."""
        case_ids = case_ids or list(self.cases)[:2]
        fig, axes = plt.subplots(
            len(case_ids), 4, figsize=(13, 3.4 * len(case_ids) + 0.9), squeeze=False, layout="constrained"
        )
        for r, cid in enumerate(case_ids):
            seg = self.seg(cid)
            if seg is not None and seg.any():
                zs = np.flatnonzero(seg.any((0, 1)))
                picks = np.linspace(zs.min(), zs.max(), 4).round().astype(int)
            else:
                picks = np.linspace(0.3, 0.7, 4) * self.volume(cid, modality).shape[2]
            for c, z in enumerate(picks):
                self.draw(axes[r, c], cid, int(z), modality, True, alpha, title=f"case {cid[-3:]}, {modality}, z={{z}}")
        _legend(fig)
        fig.suptitle(f"Slice explorer, static view ({self.dataset} data): four slices through each tumour")
        return fig

    def widget(self):
        import ipywidgets as w
        from IPython.display import clear_output

        first = next(iter(self.cases))
        seg = self.seg(first)
        depth = self.volume(first, "flair").shape[2]
        case = w.Dropdown(options=list(self.cases), value=first, description="case")
        z = w.IntSlider(
            value=best_slice(seg) if seg is not None else depth // 2,
            min=0,
            max=depth - 1,
            description="slice",
            continuous_update=False,
        )
        modality = w.Dropdown(options=list(MODALITIES), value="flair", description="modality")
        overlay = w.Checkbox(value=True, description="labels")
        alpha = w.FloatSlider(value=0.45, min=0.0, max=1.0, step=0.05, description="opacity")
        out = w.Output()

        def redraw(*_):
            with out:
                clear_output(wait=True)
                fig, ax = plt.subplots(figsize=(5.5, 5.5))
                self.draw(ax, case.value, z.value, modality.value, overlay.value, alpha.value)
                plt.show()

        def on_case(change):
            s = self.seg(change["new"])
            z.max = self.volume(change["new"], modality.value).shape[2] - 1
            z.value = best_slice(s) if s is not None else z.max // 2
            redraw()

        case.observe(on_case, names="value")
        for ctl in (z, modality, overlay, alpha):
            ctl.observe(redraw, names="value")
        redraw()
        return w.VBox([w.HBox([case, modality]), w.HBox([z, overlay, alpha]), out])


def grid_order(rows: list[list], ncol: int) -> list:
    """Legend handles laid out row by row (``rows``: lists of at most ``ncol``), padded with blank entries, in the
    column-major order ``fig.legend(ncol=ncol)`` fills."""
    from matplotlib.lines import Line2D

    blank = Line2D([], [], alpha=0, label=" ")
    padded = [row + [blank] * (ncol - len(row)) for row in rows]
    return [padded[r][c] for c in range(ncol) for r in range(len(padded))]


def training_curves(histories: dict[str, list[dict]], dataset: str, title: str = "Training curves"):
    """Loss, validation Dice and learning rate per epoch: one colour per model, a marker on every epoch, integer
    epoch ticks; line styles: loss train solid / validation dashed, Dice all validation slices solid / tumour
    slices dotted. One legend below the panels (models, then styles), never over a line."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), layout="constrained")
    models = [(name, hist) for name, hist in histories.items() if hist]
    for i, (_, hist) in enumerate(models):
        style = {"color": f"C{i % 10}", "marker": "o", "ms": 4}
        ep = [h["epoch"] for h in hist]
        axes[0].plot(ep, [h["train_loss"] for h in hist], **style)
        axes[0].plot(ep, [h["val_loss"] for h in hist], ls="--", mfc="white", **style)
        axes[1].plot(ep, [h["val_dice"] for h in hist], **style)
        axes[1].plot(ep, [h["val_dice_tumour"] for h in hist], ls=":", mfc="white", **style)
        axes[2].plot(ep, [h["lr"] for h in hist], **style)
    axes[0].set_ylabel("focal + Dice loss")
    axes[1].set_ylabel("validation Dice (per slice, mean)")
    axes[1].set_ylim(0, 1)
    axes[2].set_ylabel("learning rate")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    styles = [
        Line2D([], [], color="0.3", label="loss: train / Dice: all validation slices"),
        Line2D([], [], color="0.3", ls="--", label="loss: validation"),
        Line2D([], [], color="0.3", ls=":", label="Dice: tumour slices only"),
    ]
    names = [Line2D([], [], color=f"C{i % 10}", marker="o", ms=4, label=name) for i, (name, _) in enumerate(models)]
    ncol = min(max(len(names), len(styles)), 5)
    handles = grid_order([names[i : i + ncol] for i in range(0, len(names), ncol)] + [styles], ncol)
    fig.legend(handles=handles, loc="outside lower center", ncol=ncol, fontsize=9, frameon=False)
    fig.suptitle(f"{title} ({dataset} data)")
    return fig


def dice_vs_size(per_slice: pd.DataFrame, dataset: str):
    """Per-slice Dice against true tumour area (tumour slices), one trend line per model."""
    tum = per_slice[per_slice.has_tumour].copy()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    bins = np.unique(np.quantile(tum.tumour_px, np.linspace(0, 1, 9)))
    tum["size_bin"] = pd.cut(tum.tumour_px, bins, include_lowest=True)
    for i, (name, g) in enumerate(tum.groupby("model", sort=False)):
        ax.scatter(g.tumour_px, g.dice, s=5, alpha=0.25, color=f"C{i}")
        trend = g.groupby("size_bin", observed=True).agg(px=("tumour_px", "median"), dice=("dice", "mean"))
        ax.plot(trend.px, trend.dice, "-o", color=f"C{i}", label=name, ms=4)
    ax.set_xscale("log")
    ax.set_xlabel("true tumour area in the slice (pixels, log scale)")
    ax.set_ylabel("per-slice Dice")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    ax.set_title(f"Dice against tumour size ({dataset} data; lines: mean per size octile)")
    fig.tight_layout()
    return fig


def demo_figure(results: list[dict], names: list[str], dataset: str):
    """One row per example: U-Net overlay | SAM overlay, with areas, latencies and (ground truth given) Dice in
    the titles; the ground truth's contour is in the overlays."""
    fig, axes = plt.subplots(len(results), 2, figsize=(8, 4 * len(results)), squeeze=False)
    for r, (res, name) in enumerate(zip(results, names, strict=True)):
        info, lat = res["info"], res["res"]
        axes[r, 0].imshow(res["unet_overlay"])
        dice = res.get("dice") or {}  # a test-split example's Dice on its slice (demo: examples.Truths)
        score = {k: f", Dice {v:.2f}" for k, v in dice.items()}
        axes[r, 0].set_title(
            f"{Path(name).name}\nU-Net: {info['unet']} px, {lat['unet_ms']:.0f} ms{score.get('unet', '')}", fontsize=8
        )
        axes[r, 1].imshow(res["sam_overlay"])
        sam_txt = (
            f"SAM (U-Net box): {info['sam']} px, {lat['sam_ms']:.0f} ms{score.get('sam', '')}"
            if lat["sam"] is not None
            else f"SAM: {lat['sam_note']}"
        )
        axes[r, 1].set_title(sam_txt, fontsize=8)
        for ax in axes[r]:
            ax.axis("off")
    fig.suptitle(f"Demo on test-split examples ({dataset} data)")
    fig.tight_layout()
    return fig
