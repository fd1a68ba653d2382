"""comparison.py: the picked slices, the TP / FP / FN colours, the crop, SAM's boxes and the per-patient lines."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from brainseg_utils.evaluation import comparison as C  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _per_case(dice: dict[str, dict[str, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"case_id": c, "model": m, "dice": d} for m, per in dice.items() for c, d in per.items()])


def _case(largest_z: int, shape=(16, 16, 6)) -> dict:
    gt = np.zeros(shape, bool)
    gt[4:7, 4:7, :] = True  # 9 px on every slice
    gt[3:9, 3:9, largest_z] = True  # 36 px: the largest true tumour area
    return {
        "gt": gt,
        "flair": np.full(shape, 0.5, np.float32),
        "pred": {"unet": gt.copy(), "sam_x_none": gt.copy(), "sam_x_unet_box": gt.copy()},
    }


def _picked_volumes():
    volumes = {"a": _case(1), "b": _case(2), "c": _case(0), "d": _case(3)}
    volumes["a"]["pred"]["sam_x_unet_box"][0:2, 0:2, 0] ^= True  # 4 px disagreement
    volumes["c"]["pred"]["sam_x_unet_box"][10:13, 10:13, 4] ^= True  # 9 px: the most, U-Net vs the cascade
    volumes["d"]["pred"]["sam_x_none"][:, 12:, 5] ^= True  # 64 px, but with the prompt-free SAM
    dice = {"a": 0.9, "b": 0.5, "c": 0.7, "d": 0.1}  # by U-Net Dice: a, c, b, d
    per_case = _per_case({"unet": dice, "sam_x_none": dice, "sam_x_unet_box": {**dice, "zz": 1.0}})
    return volumes, per_case


def test_pick_slices_best_median_worst_and_disagreement():
    volumes, per_case = _picked_volumes()
    picks = C.pick_slices(volumes, per_case)
    assert picks == [("best", "a", 1), ("median", "b", 2), ("worst", "d", 3), ("disagreement", "c", 4)]
    assert C.pick_slices(volumes, per_case, other="sam_x_none")[-1] == ("disagreement", "d", 5)
    # ranked by another model's Dice; the cases of per_case without a volume ("zz") are ignored
    by_sam = C.pick_slices(volumes, per_case, reference="sam_x_unet_box")
    assert [p[:2] for p in by_sam] == [("best", "a"), ("median", "b"), ("worst", "d"), ("disagreement", "c")]


def test_pick_slices_default_other_prefers_the_cascade():
    assert C.default_other(["unet", "sam_x_none", "sam_x_box", "sam_x_unet_box"]) == "sam_x_unet_box"
    assert C.default_other(["unet", "sam_x_box", "sam_x_none"]) == "sam_x_none"
    assert C.default_other(["unet", "unet_clean"]) is None


def test_pick_slices_removes_duplicates():
    volumes, per_case = _picked_volumes()
    one = {"a": volumes["a"]}
    volumes["a"]["pred"]["sam_x_unet_box"][0:5, 0:5, 1] ^= True  # now a's largest slice disagrees most too
    assert C.pick_slices(one, per_case) == [("best / median / worst / disagreement", "a", 1)]
    two = {"a": volumes["a"], "d": volumes["d"]}
    assert C.pick_slices(two, per_case) == [("best / disagreement", "a", 1), ("median / worst", "d", 3)]
    agree = {"b": volumes["b"]}  # no pixel predicted by exactly one of the two: no disagreement row
    assert C.pick_slices(agree, per_case) == [("best / median / worst", "b", 2)]
    assert C.pick_slices({}, per_case) == []


def test_tp_fp_fn_colours():
    flair = np.full((3, 3), 0.4, np.float32)
    gt = np.zeros((3, 3), bool)
    pred = np.zeros((3, 3), bool)
    gt[0, 0] = pred[0, 0] = True  # true positive
    pred[1, 1] = True  # false positive
    gt[2, 2] = True  # false negative
    rgb = C.tp_fp_fn_rgb(flair, gt, pred, alpha=0.7)
    blend = [0.3 * 0.4 + 0.7 * np.asarray(c) for c in (C.TP_COLOUR, C.FP_COLOUR, C.FN_COLOUR)]
    np.testing.assert_allclose(rgb[0, 0], blend[0], atol=1e-6)
    np.testing.assert_allclose(rgb[1, 1], blend[1], atol=1e-6)
    np.testing.assert_allclose(rgb[2, 2], blend[2], atol=1e-6)
    np.testing.assert_allclose(rgb[0, 1], [0.4, 0.4, 0.4])  # neither: grey FLAIR
    colours = np.array([C.TP_COLOUR, C.FP_COLOUR, C.FN_COLOUR])
    assert min(np.abs(colours[i] - colours[j]).sum() for i in range(3) for j in range(i + 1, 3)) > 0.5


def _figure_volumes():
    """One case, 48 x 48 (smaller than the crop's minimum: the panel is the whole slice)."""
    shape = (48, 48, 3)
    gt = np.zeros(shape, bool)
    gt[10:20, 20:30, 1] = True
    unet = gt.copy()
    unet[10:12, 20:30, 1] = False  # 20 false negatives
    unet[30:33, 5:8, 1] = True  # one spurious component (9 false positives)
    clean = unet.copy()
    clean[30:33, 5:8, 1] = False
    clean[40:44, 40:44, 1] = clean[2:4, 2:4, 1] = True  # three components in the cleaned mask
    pred = {"sam_x_box": gt.copy(), "unet": unet, "unet_clean": clean, "sam_x_unet_box": gt.copy(), "sam_x_none": gt}
    flair = np.random.default_rng(0).random(shape).astype(np.float32)
    volumes = {"case_1": {"gt": gt, "flair": flair, "pred": pred}}
    per_case = _per_case({m: {"case_1": 0.5 + 0.1 * i} for i, m in enumerate(pred)})
    return volumes, per_case


def _panel(fig, title_start: str, row: int = 0):
    return [ax for ax in fig.axes if ax.get_title().startswith(title_start)][row]


def test_comparison_figure_colours_boxes_and_title():
    volumes, per_case = _figure_volumes()
    fig = C.comparison_figure(volumes, per_case, "synthetic")
    v = volumes["case_1"]
    assert "synthetic data" in fig._suptitle.get_text() and "sam_x_box" in fig._suptitle.get_text()
    # columns: FLAIR, then the results-table order
    titles = [ax.get_title().split("\n")[0] for ax in fig.axes[:6]]
    assert titles[1:] == ["unet", "unet_clean", "sam_x_unet_box", "sam_x_none", "sam_x_box [oracle]"]
    unet = _panel(fig, "unet\n")
    assert "patient Dice 0.600" in unet.get_title() and "slice Dice 0.847" in unet.get_title()  # 2*80/(100+89)
    # the displayed image is np.rot90 of the slice: slice pixel (r, c) at panel (W - 1 - c, r)
    img = np.asarray(unet.images[0].get_array())
    assert img.shape == (48, 48, 3)
    expected = C.tp_fp_fn_rgb(v["flair"][:, :, 1], v["gt"][:, :, 1], v["pred"]["unet"][:, :, 1])
    np.testing.assert_allclose(img, np.rot90(expected))
    for (r, c), colour in (((15, 25), C.TP_COLOUR), ((31, 6), C.FP_COLOUR), ((10, 25), C.FN_COLOUR)):
        grey = v["flair"][r, c, 1]
        np.testing.assert_allclose(img[47 - c, r], (1 - C.ALPHA) * grey + C.ALPHA * np.asarray(colour), atol=1e-6)
    # boxes: one per component of unet_clean on the cascade's panel, the ground-truth box on the oracle's
    cascade, oracle = _panel(fig, "sam_x_unet_box"), _panel(fig, "sam_x_box [oracle]")
    assert len(cascade.patches) == 3
    assert len(oracle.patches) == 1
    assert all(len(_panel(fig, m).patches) == 0 for m in ("unet\n", "unet_clean", "sam_x_none"))
    rect = oracle.patches[0]  # the truth (rows 10-19, columns 20-29) on screen: columns 10-19, rows 18-27
    assert (rect.get_x(), rect.get_y(), rect.get_width(), rect.get_height()) == (9.5, 17.5, 10, 10)


def test_comparison_figure_boxes_fall_back_to_unet_and_can_be_replaced():
    volumes, per_case = _figure_volumes()
    del volumes["case_1"]["pred"]["unet_clean"]
    per_case = per_case[per_case.model != "unet_clean"]
    fig = C.comparison_figure(volumes, per_case, "brats2020")
    assert len(_panel(fig, "sam_x_unet_box").patches) == 2  # the U-Net's two components
    assert "brats2020 data" in fig._suptitle.get_text()
    fig = C.comparison_figure(volumes, per_case, "brats2020", boxes=False)
    assert sum(len(ax.patches) for ax in fig.axes) == 0
    box = np.array([[0, 0, 3, 3], [np.nan] * 4])
    fig = C.comparison_figure(volumes, per_case, "brats2020", boxes={("case_1", 1, "sam_x_unet_box"): box})
    assert len(_panel(fig, "sam_x_unet_box").patches) == 1


def test_crop_contains_the_whole_tumour():
    mask = np.zeros((240, 240), bool)
    mask[100:110, 5:25] = True  # near the left edge
    r0, r1, c0, c1 = C.crop_window(mask)
    assert r1 - r0 == c1 - c0 == 64 and c0 == 0  # at least 64 px, shifted inside the image
    assert mask[r0:r1, c0:c1].sum() == mask.sum()
    mask[:] = False
    mask[150:230, 100:239] = True  # large: 139 + 2 * 15 px, clipped to the image
    r0, r1, c0, c1 = C.crop_window(mask)
    assert mask[r0:r1, c0:c1].sum() == mask.sum() and r1 - r0 == c1 - c0 == 169 and 0 <= c0 and c1 <= 240
    assert C.crop_window(np.zeros((20, 30), bool)) == (0, 20, 0, 30)  # nothing to show: the whole slice
    assert C.crop_window(mask[:50, :50] | True) == (0, 50, 0, 50)  # larger than the image: the image

    # in the figure: a 240 x 240 slice is cropped, and every truth and predicted pixel stays on the panel
    volumes, per_case = _figure_volumes()
    v = volumes["case_1"]
    for key in ("gt", "flair"):
        v[key] = np.pad(v[key], ((100, 92), (100, 92), (0, 0)))
    v["pred"] = {m: np.pad(p, ((100, 92), (100, 92), (0, 0))) for m, p in v["pred"].items()}
    fig = C.comparison_figure(volumes, per_case, "synthetic", models=["unet", "sam_x_box"])
    img = np.asarray(_panel(fig, "unet\n").images[0].get_array())
    assert 64 <= img.shape[0] == img.shape[1] < 240
    coloured = (np.abs(img - img[..., :1]) > 1e-6).any(2)  # not grey: TP, FP or FN
    assert coloured.sum() == (v["gt"][:, :, 1] | v["pred"]["unet"][:, :, 1]).sum()


def test_patient_lines_one_line_per_patient_and_the_mean():
    models = ["sam_x_box", "sam_x_unet_box", "unet_clean", "unet", "sam_x_none"]
    rng = np.random.default_rng(0)
    per_case = pd.DataFrame([{"case_id": f"p{i}", "model": m, "dice": rng.random()} for i in range(3) for m in models])
    fig = C.patient_lines(per_case, "synthetic")
    ax = fig.axes[0]
    assert len(ax.lines) == 3 + 1
    order = ["unet", "unet_clean", "sam_x_unet_box", "sam_x_none", "sam_x_box"]
    assert [t.get_text().split("\n")[0] for t in ax.get_xticklabels()] == order
    wide = per_case.pivot(index="case_id", columns="model", values="dice")[order]
    np.testing.assert_allclose(ax.lines[-1].get_ydata(), wide.mean().to_numpy())  # the mean, drawn last
    assert ax.lines[-1].get_color() == "black" and ax.lines[-1].get_linewidth() > ax.lines[0].get_linewidth()
    np.testing.assert_allclose(ax.lines[0].get_ydata(), wide.loc["p0"].to_numpy())
    assert ax.get_ylim() == (0, 1.02) and "(synthetic data" in ax.get_title()

    many = pd.DataFrame([{"case_id": f"p{i}", "model": m, "dice": rng.random()} for i in range(200) for m in models])
    ax = C.patient_lines(many, "brats2020").axes[0]
    assert len(ax.lines) == 200 + 1 and ax.lines[0].get_alpha() < 0.2 and ax.lines[0].get_linewidth() < 1


def test_two_patients_say_that_the_median_is_the_worst():
    volumes, per_case = _figure_volumes()  # one patient, case_1
    assert "Only 1 test patient: best, median and worst are the same row" in C.few_patients_note(per_case, volumes)
    volumes["case_2"] = volumes["case_1"]
    two = pd.concat([per_case, per_case.assign(case_id="case_2", dice=per_case.dice - 0.2)])
    fig = C.comparison_figure(volumes, two, "synthetic")
    assert "Only 2 test patients: the median patient is also the worst" in fig._suptitle.get_text()
    labels = [ax.get_title().split("\n")[0] for ax in fig.axes[:: len(fig.axes) // 2]]
    assert labels[0].startswith("best") and labels[1] == "median / worst"  # two rows, said in the title
    three = pd.concat([two, per_case.assign(case_id="case_3")])
    assert C.few_patients_note(three, {**volumes, "case_3": volumes["case_1"]}) == ""
