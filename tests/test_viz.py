"""viz.py: overlay colours, best slice, and figures that return a Figure titled with the dataset name."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from brainseg_utils.data import volumes  # noqa: E402
from brainseg_utils.evaluation import figures as viz


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def titles(fig: Figure) -> str:
    return " | ".join([fig._suptitle.get_text() if fig._suptitle else ""] + [ax.get_title() for ax in fig.axes])


def test_label_overlay_colours_each_brats_label():
    seg = np.array([[0, 1], [2, 4]], np.uint8)
    rgba = viz.label_overlay(seg, alpha=0.5)
    assert rgba.shape == (2, 2, 4) and rgba.dtype == np.float32
    assert rgba[0, 0].tolist() == [0, 0, 0, 0]  # background transparent
    np.testing.assert_allclose(rgba[0, 1], [0.9, 0.1, 0.1, 0.5])  # NCR/NET red
    np.testing.assert_allclose(rgba[1, 0], [0.1, 0.8, 0.2, 0.5])  # edema green
    np.testing.assert_allclose(rgba[1, 1], [1.0, 0.85, 0.0, 0.5])  # enhancing yellow


def test_mask_overlay_and_best_slice():
    mask = np.zeros((3, 3), bool)
    mask[1, 2] = True
    rgba = viz.mask_overlay(mask, colour=(1.0, 0.0, 0.0), alpha=0.25)
    assert rgba[1, 2].tolist() == [1.0, 0.0, 0.0, 0.25] and rgba[mask == 0][:, 3].max() == 0
    seg = np.zeros((4, 4, 5), np.uint8)
    seg[0, 0, 1] = 2
    seg[:2, :2, 3] = 1  # 4 voxels: the largest area
    assert volumes.best_slice(seg) == 3
    assert volumes.best_slice(np.zeros((4, 4, 5), np.uint8)) == 2  # no tumour: the middle slice


def _history(n=3):
    return [
        {
            "epoch": e,
            "train_loss": 1 / e,
            "val_loss": 1.1 / e,
            "val_dice": 0.2 * e,
            "val_dice_tumour": 0.25 * e,
            "lr": 1e-4 / e,
        }
        for e in range(1, n + 1)
    ]


def test_training_curves_figure():
    fig = viz.training_curves({"unet": _history(), "sam_litemedsam_box": _history(2)}, "synthetic", "Training")
    assert isinstance(fig, Figure) and "Training (synthetic data)" in titles(fig)
    loss_ax = fig.axes[0]
    assert len(loss_ax.lines) == 4  # train + val per model
    np.testing.assert_allclose(loss_ax.lines[0].get_ydata(), [1, 0.5, 1 / 3])


def test_dice_vs_size_names_the_dataset():
    rng = np.random.default_rng(0)
    per_slice = pd.DataFrame(
        {
            "model": np.repeat(["unet", "sam_x_none"], 20),
            "has_tumour": True,
            "tumour_px": np.tile(rng.integers(10, 1000, 20), 2),
            "dice": rng.random(40),
        }
    )
    fig = viz.dice_vs_size(per_slice, "synthetic")
    assert isinstance(fig, Figure) and "(synthetic data" in titles(fig)


def test_example_overlays_and_explorer_from_cases(synth_root):
    from brainseg_utils.data.brats import discover_cases

    cases = discover_cases(synth_root)[:2]
    fig = viz.example_overlays(cases, "synthetic", n=2)
    assert isinstance(fig, Figure) and "Example cases (synthetic data)" in titles(fig)
    assert len(fig.axes) == 2 * 5
    fig = viz.SliceExplorer(cases, "synthetic").static_figure()
    assert isinstance(fig, Figure) and "(synthetic data)" in titles(fig)
    with pytest.raises(ValueError, match="at least one labelled case"):
        viz.example_overlays([], "synthetic")


# ----------------------------------------------------------------------------- layout: what a reader sees


def _boxes(fig: Figure):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return renderer, fig.bbox


def assert_titles_readable(fig: Figure) -> None:
    """Every non-empty axes title lies inside the figure and overlaps no other title (long titles used to run into
    the next panel's)."""
    renderer, page = _boxes(fig)
    boxes = [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.get_title()]
    for b in boxes:
        assert page.x0 - 1 <= b.x0 and b.x1 <= page.x1 + 1 and b.y1 <= page.y1 + 1, "title clipped"
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b), "two titles overlap"


def assert_legend_outside_axes(fig: Figure) -> None:
    renderer, page = _boxes(fig)
    legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert legends, "no legend"
    for leg in legends:
        box = leg.get_window_extent(renderer)
        assert page.x0 - 1 <= box.x0 and box.x1 <= page.x1 + 1 and page.y0 - 1 <= box.y0, "legend clipped"
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), "the legend covers a panel"


def test_training_curves_two_epochs_integer_ticks_markers_and_legend_below():
    hists = {f"m{i}": _history(2) for i in range(6)}  # notebook 04: every model, six legend entries and more
    fig = viz.training_curves(hists, "synthetic", "Training curves, all models")
    assert_legend_outside_axes(fig)
    assert_titles_readable(fig)
    for ax in fig.axes:
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks  # epochs 1 and 2, not 1.25 ...
        assert all(line.get_marker() == "o" for line in ax.lines)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {f"m{i}" for i in range(6)} | {"loss: validation"} <= set(labels)
    assert labels[:3] == ["m0", "m5", "loss: train / Dice: all validation slices"]  # rows: m0-m4, m5, line styles


def test_static_explorer_and_examples_titles_fit_and_legend_below(synth_root):
    from brainseg_utils.data.brats import discover_cases

    cases = discover_cases(synth_root)[:2]
    for fig in (viz.SliceExplorer(cases, "synthetic").static_figure(), viz.example_overlays(cases, "synthetic", n=2)):
        assert_titles_readable(fig)
        assert_legend_outside_axes(fig)


def test_cache_samples_fewer_larger_titled_half_with_tumour(tiny_cache):
    cache, _ = tiny_cache
    fig = viz.cache_samples(cache, "synthetic", n=6)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 6 and "What the models see" in fig._suptitle.get_text()
    w, h = fig.get_size_inches()
    assert w / 3 >= 3.0, "panels at least 3 inches wide"
    assert all("case " in ax.get_title() and "z=" in ax.get_title() for ax in shown)
    assert_titles_readable(fig)
    rows = viz.sample_rows(cache.index, 6, seed=0)
    n_free = int((~cache.index.has_tumour).sum())  # this cache has only 2 tumour-free slices: both are shown
    assert len(rows) == 6 and (~cache.index.has_tumour.to_numpy()[rows]).sum() == min(3, n_free) > 0
