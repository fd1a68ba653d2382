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
