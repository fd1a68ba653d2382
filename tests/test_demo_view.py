"""The demo's enlarged view and box drawing (app/display.py, callbacks' click handling) and the brain-MRI notice
(app/plausibility.py). Values computed by hand in the comments."""

import io

import numpy as np
import pytest
from PIL import Image
from uploads import nifti, slice_png

from brainseg_utils.app import callbacks as C
from brainseg_utils.app import display as V
from brainseg_utils.app import plausibility as P
from brainseg_utils.app.request import view_image
from brainseg_utils.app.upload import UploadError, load_upload
from brainseg_utils.models.sam.prompts import mask_to_box


# ----------------------------------------------------------------------------- geometry
@pytest.mark.parametrize(
    "h, w, k",
    [(240, 240, 2), (80, 96, 5), (155, 240, 2), (240, 155, 2), (600, 100, 1), (16, 16, 30), (481, 10, 1)],
)
def test_display_factor(h, w, k):
    assert V.display_factor(h, w) == k  # smallest whole k with max(h, w) * k >= 480
    assert max(h, w) * k >= V.DISPLAY_MIN_PX and (k == 1 or max(h, w) * (k - 1) < V.DISPLAY_MIN_PX)


def test_display_factor_refuses_empty_slices():
    with pytest.raises(ValueError, match="at least 1 x 1"):
        V.display_factor(0, 5)


@pytest.mark.parametrize("h, w", [(80, 96), (155, 240), (240, 155), (17, 33)])
def test_every_display_pixel_maps_back_to_the_pixel_it_shows(h, w):
    """Exact, for square and non-square slices: display pixel (X, Y) shows slice pixel (X // k, Y // k), and the
    mapping returns that pixel for every X and Y of the display."""
    k = V.display_factor(h, w)
    ids = np.arange(h * w).reshape(h, w)
    shown = V.upscale(ids, k)
    assert shown.shape == (h * k, w * k)
    xs = [V.to_slice_pixel(x, 0, k, h, w)[0] for x in range(w * k)]
    ys = [V.to_slice_pixel(0, y, k, h, w)[1] for y in range(h * k)]
    np.testing.assert_array_equal(ids[np.ix_(ys, xs)], shown)


def test_click_mapping_by_hand():
    # an 80 x 96 slice at k = 5: display 480 x 400
    assert V.to_slice_pixel(0, 0, 5, 80, 96) == (0, 0)
    assert V.to_slice_pixel(4.9, 4, 5, 80, 96) == (0, 0)
    assert V.to_slice_pixel(5, 9, 5, 80, 96) == (1, 1)
    assert V.to_slice_pixel(480, 400, 5, 80, 96) == (95, 79), "Gradio rounds to the far edge: still the last pixel"
    with pytest.raises(ValueError, match="outside the 480 x 400 display"):
        V.to_slice_pixel(481, 0, 5, 80, 96)
    with pytest.raises(ValueError, match="outside"):
        V.to_slice_pixel(-1, 0, 5, 80, 96)
    with pytest.raises(ValueError, match="finite"):
        V.to_slice_pixel(float("nan"), 0, 5, 80, 96)


def test_box_outline_covers_the_corner_pixels_blocks():
    assert V.box_on_display((1, 2, 3, 4), 5) == (5, 10, 19, 24)  # x1 = (3 + 1) * 5 - 1
    disp = np.zeros((12, 18, 3), np.uint8)  # a 4 x 6 slice at k = 3
    V.draw_box(disp, (1, 1, 2, 2), 3)  # display rectangle 3..8 x 3..8, lines 2 px wide
    got = disp.any(-1)
    want = np.zeros((12, 18), bool)
    want[3:9, 3:9] = True
    want[5:7, 5:7] = False  # the inside stays free
    np.testing.assert_array_equal(got, want)
    assert tuple(disp[3, 3]) == V.BOX_COLOUR


def test_contour_is_the_masks_edge_on_the_display():
    disp = np.zeros((8, 8, 3), np.uint8)
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True  # a 2 x 2 block -> 4 x 4 display pixels, 2 x 2 of them inside
    V.draw_contour(disp, mask, 2)
    assert disp.any(-1).sum() == 12 and not disp[3:5, 3:5].any()
    with pytest.raises(ValueError, match="does not match"):
        V.draw_contour(disp, np.zeros((3, 4), bool), 2)


def test_boxes_follow_the_slice_into_the_models_orientation():
    m = np.zeros((50, 70), bool)
    m[10:20, 30:45] = True
    shown_box = mask_to_box(m)  # [30, 10, 44, 19]
    np.testing.assert_array_equal(V.box_to_model(shown_box, 50), mask_to_box(V.to_model_plane(m)))
    np.testing.assert_array_equal(V.box_from_model(V.box_to_model(shown_box, 50), 50), shown_box)
    np.testing.assert_array_equal(np.rot90(V.to_model_plane(m)), m)


# ----------------------------------------------------------------------------- clicks on the page
def _click(on_click, box, path, z, x, y):
    import gradio as gr

    return on_click(box, path, z, gr.SelectData(None, {"index": [x, y], "value": None, "selected": True}))


def test_two_clicks_draw_the_box_on_the_enlarged_view(tmp_path):
    png = str(slice_png(tmp_path / "s.png"))  # 80 x 96: shown at k = 5
    on_click = C.click_callback(tmp_path)
    text, view = _click(on_click, "", png, None, 12, 7)
    assert text == "2,1;"  # 12 // 5, 7 // 5
    first = np.asarray(Image.open(view).convert("RGB"))
    assert first.shape == (400, 480, 3) and tuple(first[5, 10]) == V.BOX_COLOUR  # the first corner's block
    text, view = _click(on_click, text, png, None, 250, 300)
    assert text == "2,1,50,60"
    shown = np.asarray(Image.open(view).convert("RGB"))
    assert tuple(shown[5, 10]) == tuple(shown[304, 254]) == V.BOX_COLOUR  # (2, 1) and (50 * 5 + 4, 60 * 5 + 4)
    assert tuple(shown[100, 100]) != V.BOX_COLOUR and tuple(shown[4, 9]) != V.BOX_COLOUR
    assert _click(on_click, text, png, None, 480, 400)[0] == "95,79;", "a third click starts a new box"
    assert C.next_box_text("95,79;", 10, 90, 100, 100) == "10,79,95,90", "corners sorted"


def test_a_typed_box_is_drawn_and_a_bad_one_is_a_warning(tmp_path):
    png = str(slice_png(tmp_path / "s.png"))
    _, _, on_box = C.view_callbacks(tmp_path)
    shown = np.asarray(Image.open(on_box(png, 0, "2,1,50,60")).convert("RGB"))
    assert tuple(shown[5, 10]) == V.BOX_COLOUR
    with pytest.warns(UserWarning, match="four numbers"):
        assert on_box(png, 0, "2,1,50")["__type__"] == "update"
    with pytest.raises(UploadError, match="outside the 96 x 80 slice"):
        view_image(np.zeros((80, 96), np.float32), "200,1;")


def test_click_on_a_volume_slice_maps_through_its_display(tmp_path):
    vol = np.zeros((64, 48, 6), np.int16)  # shown rot90: 48 x 64 (h x w), k = 8
    vol[8:56, 8:40] = 100
    path = str(nifti(tmp_path / "v.nii.gz", vol))
    text, _ = _click(C.click_callback(tmp_path), "", path, 3, 511, 383)
    assert text == "63,47;"


# ----------------------------------------------------------------------------- does it look like a brain MRI?
@pytest.fixture(scope="module")
def brain_slice():
    from brainseg_utils.data.phantom import draw_case
    from brainseg_utils.data.volumes import normalise_volume

    flair = normalise_volume(draw_case(np.random.default_rng([0, 1]), 32)["flair"])
    return np.rot90(flair[:, :, P.judged_slice(flair)])


def _chart_png(path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1, 2, 3], [1, 3, 2, 4], label="a")
    ax.bar([0, 1, 2, 3], [2, 1, 3, 1], alpha=0.5, label="b")
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    path.write_bytes(buf.getvalue())
    return path


def test_a_synthetic_brain_slice_passes(brain_slice):
    assert P.brain_likeness(brain_slice) == []


def test_a_chart_and_noise_get_a_notice(tmp_path, brain_slice):
    chart = _chart_png(tmp_path / "chart.png")
    reasons = P.brain_likeness(load_upload(chart).volume[:, :, 0], P.colour_fraction(chart))
    assert any("colour" in r for r in reasons) and any("background is bright" in r for r in reasons), reasons
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 240), dtype=np.uint8)).save(noise)
    reasons = P.brain_likeness(load_upload(noise).volume[:, :, 0], P.colour_fraction(noise))
    assert any("texture is not MRI-like" in r for r in reasons) and not any("colour" in r for r in reasons)
    note = P.upload_notice(load_upload(chart), chart)
    assert note.startswith("this does not look like a brain MRI slice: it is in colour")
    grey = tmp_path / "brain.png"
    Image.fromarray((brain_slice * 255).astype(np.uint8)).save(grey)
    assert P.upload_notice(load_upload(grey), grey) == "" and P.colour_fraction(grey) == 0.0


def test_a_notice_is_not_a_refusal(tmp_path):
    chart = str(_chart_png(tmp_path / "chart.png"))
    show, _, _ = C.view_callbacks(tmp_path)
    file, slider, view, box, unet, sam, info, masks = show(chart)
    assert view and "**Note:** this does not look like a brain MRI slice" in info and "press Segment" in info


def test_heuristic_parts_by_hand():
    yy, xx = np.mgrid[:100, :100]
    disc = np.hypot(yy - 50, xx - 50) < 30
    assert P.ellipse_iou(disc) > 0.95
    ring = disc & ~(np.hypot(yy - 50, xx - 50) < 26)
    corner = np.zeros((100, 100), bool)
    corner[10:90, 10:25] = corner[75:90, 10:90] = True  # an L
    rectangle = np.zeros((100, 100), bool)
    rectangle[20:80, 10:90] = True
    assert P.ellipse_iou(ring) < 0.2 and P.ellipse_iou(corner) < 0.4 and 0.8 < P.ellipse_iou(rectangle) < 0.85
    assert P.neighbour_correlation(np.full((10, 10), 0.5), np.ones((10, 10), bool)) == 1.0
    ramp = np.tile(np.arange(10, dtype=np.float32), (10, 1))
    assert P.neighbour_correlation(ramp, np.ones((10, 10), bool)) == pytest.approx(1.0)
    assert P.judged_slice(np.stack([np.zeros((8, 8)), np.ones((8, 8)), np.zeros((8, 8))], -1)) == 1
