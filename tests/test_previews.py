"""evaluation/previews.py: which validation slices are previewed, a model's masks and boxes on them, the figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from test_viz import assert_legend_outside_axes, assert_titles_readable  # noqa: E402

from brainseg_utils.data.dataset import SliceDataset  # noqa: E402
from brainseg_utils.evaluation import previews  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


class Bright(torch.nn.Module):
    """Logits +10 where the first channel is above 0.6, else -10: a U-Net stand-in with a known answer."""

    def forward(self, x):
        return (x[:, :1] > 0.6).float() * 20 - 10


class BoxModel(torch.nn.Module):
    """A SAM-decoder stand-in: the filled box (B, 4) as the mask."""

    def forward(self, embeddings, boxes):
        out = torch.full((len(boxes), 1, 64, 64), -10.0)
        for i, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
            out[i, 0, y0 : y1 + 1, x0 : x1 + 1] = 10.0
        return out


class BoxItems:
    def __init__(self, rows):
        self.rows = np.asarray(rows)

    def __getitem__(self, i):
        return {"embeddings": torch.zeros(2), "boxes": torch.tensor([4.0, 8.0, 20.0, 30.0])}, torch.zeros(1, 64, 64)


def test_preview_rows_spread_over_tumour_size_and_patients(tiny_cache):
    cache, split = tiny_cache
    val = cache.rows_for(split["val"] + split["test"])
    rows = previews.preview_rows(cache, val, n=4)
    areas = [int(np.asarray(cache.masks[r]).sum()) for r in rows]
    assert len(rows) == 4 and all(a > 0 for a in areas) and areas == sorted(areas)
    every = [int(np.asarray(cache.masks[r]).sum()) for r in val if np.asarray(cache.masks[r]).any()]
    assert areas[-1] == max(every) and areas[0] > min(every)  # quantiles 1/4 .. 1: up to the largest tumour
    cases = cache.index.case_id.to_numpy()[rows]
    assert len(set(cases)) == min(4, len(set(cache.index.case_id.to_numpy()[val])))  # one per patient first
    assert previews.preview_rows(cache, [], n=4) == []


def test_predict_rows_and_figure(tiny_cache):
    cache, split = tiny_cache
    ds = SliceDataset(cache, cache.rows_for(split["val"]))
    rows = previews.preview_rows(cache, ds.rows, n=3)
    masks, boxes = previews.predict_rows(Bright(), ds, [*rows, -1])  # -1: not in the dataset, left out
    assert sorted(masks) == sorted(rows) and all(b.shape == (0, 4) for b in boxes.values())
    for r in rows:
        np.testing.assert_array_equal(masks[r], np.asarray(cache.images[r, 0], np.float32) > 0.6)
    box_masks, box_boxes = previews.predict_rows(BoxModel(), BoxItems(rows), rows[:1])
    assert box_masks[rows[0]][8:31, 4:21].all() and box_masks[rows[0]].sum() == 23 * 17
    np.testing.assert_array_equal(box_boxes[rows[0]], [[4, 8, 20, 30]])
    fig = previews.previews_figure(
        cache, rows, {"U-Net": masks, "box model": box_masks}, "synthetic", "Predictions", {"box model": box_boxes}
    )
    assert np.shape(fig.axes) == (9,) and "Predictions (synthetic data)" in fig._suptitle.get_text()
    assert [ax.get_ylabel() for ax in fig.axes[::3]] == ["FLAIR + truth", "U-Net", "box model"]
    assert all(ax.get_title().startswith("slice Dice ") for ax in fig.axes[3:6])
    assert len(fig.axes[6].patches) == 1 and not fig.axes[3].patches  # the box model's box, dashed
    assert_titles_readable(fig)
    assert_legend_outside_axes(fig)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "box given to SAM" in labels and "false positive" in labels
    with pytest.raises(ValueError, match="no slices"):
        previews.previews_figure(cache, [], {"U-Net": masks}, "synthetic", "x")
