import math

import numpy as np
import pytest
import torch

from brainseg_utils.evaluation import metrics as M

monai_metrics = pytest.importorskip("monai.metrics")  # dev requirement; CI installs it


def _monai(pred, gt, spacing):
    """Reference values from MONAI (batch of one, one channel)."""
    p = torch.from_numpy(pred[None, None].astype(np.float32))
    g = torch.from_numpy(gt[None, None].astype(np.float32))
    dice = monai_metrics.compute_dice(p, g, include_background=True, ignore_empty=False).item()
    iou = monai_metrics.compute_iou(p, g, include_background=True, ignore_empty=False).item()
    hd = monai_metrics.compute_hausdorff_distance(p, g, include_background=True, percentile=95, spacing=spacing).item()
    cm = monai_metrics.get_confusion_matrix(p, g, include_background=True)
    prec = monai_metrics.compute_confusion_matrix_metric("precision", cm).item()
    rec = monai_metrics.compute_confusion_matrix_metric("sensitivity", cm).item()
    return {"dice": dice, "iou": iou, "hd95": hd, "precision": prec, "recall": rec}


def _blobs(rng, shape, n):
    from scipy import ndimage

    noise = ndimage.gaussian_filter(rng.standard_normal(shape), 2)
    return noise > np.percentile(noise, 100 - n)


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("seed", range(12))
def test_agree_with_monai_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    shape = (40, 36, 12) if seed % 2 else (64, 48)
    spacing = (1.0, 1.2, 2.5)[: len(shape)] if seed % 3 else (1.0,) * len(shape)
    pred, gt = _blobs(rng, shape, 10), _blobs(rng, shape, 12)
    ours, ref = M.all_metrics(pred, gt, spacing), _monai(pred, gt, spacing)
    for k in M.METRICS:  # MONAI works in float32: distances agree to 1e-6 relative
        assert ours[k] == pytest.approx(ref[k], rel=1e-6, abs=1e-6), k


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
def test_empty_mask_conventions_agree_with_monai_where_it_defines_them():
    z, one = np.zeros((20, 20), bool), np.zeros((20, 20), bool)
    one[5:9, 5:9] = True
    # MONAI with ignore_empty=False: Dice/IoU 1 for empty/empty and 0 for empty vs non-empty.
    for pred, gt in ((z, z), (z, one), (one, z)):
        ref = _monai(pred, gt, (1.0, 1.0))
        assert M.dice(pred, gt) == pytest.approx(ref["dice"]) and M.iou(pred, gt) == pytest.approx(ref["iou"])
    assert M.hd95(z, z) == 0.0
    # exactly one empty: the grid's diagonal in mm (BraTS: 373.13 for a volume, 339.41 for a slice)
    assert M.hd95(z, one) == M.hd95(one, z) == pytest.approx(math.sqrt(20**2 + 20**2), abs=0.005)
    assert M.hd95(z, one, spacing=(2.0, 1.0)) == pytest.approx(math.sqrt(40**2 + 20**2), abs=0.005)
    vol, empty = np.zeros((240, 240, 155), bool), np.zeros((240, 240, 155), bool)
    vol[100:110, 100:110, 50:60] = True
    assert M.hd95(vol, empty) == M.HD95_EMPTY_PENALTY == pytest.approx(math.sqrt(240**2 + 240**2 + 155**2), abs=0.005)
    assert M.hd95(vol[..., 55], empty[..., 55]) == pytest.approx(339.41, abs=0.005)
    assert (M.precision(z, z), M.recall(z, z)) == (1.0, 1.0)
    assert (M.precision(z, one), M.recall(z, one)) == (0.0, 0.0)
    assert (M.precision(one, z), M.recall(one, z)) == (0.0, 1.0)


def test_hand_made_case():
    gt = np.zeros((10, 10), bool)
    gt[2:6, 2:6] = True  # 16 px
    pred = np.zeros((10, 10), bool)
    pred[2:6, 4:8] = True  # 16 px, overlap 8
    assert M.dice(pred, gt) == pytest.approx(0.5)
    assert M.iou(pred, gt) == pytest.approx(8 / 24)
    assert M.precision(pred, gt) == M.recall(pred, gt) == pytest.approx(0.5)
    # Surfaces are the two 4x4 squares' rims; the farthest rim pixels are 2 columns apart.
    assert M.hd95(pred, gt) == pytest.approx(2.0)
    assert M.hd95(pred, gt, spacing=(1.0, 3.0)) == pytest.approx(6.0)  # columns are 3 mm apart


def test_shape_and_spacing_errors():
    with pytest.raises(ValueError, match="differs from ground truth shape"):
        M.dice(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="spacing"):
        M.hd95(np.ones((3, 3)), np.ones((3, 3)), spacing=(1.0, 1.0, 1.0))


def test_bootstrap_and_wilcoxon():
    lo, hi = M.bootstrap_ci([0.8] * 10)
    assert lo == hi == pytest.approx(0.8)
    vals = np.linspace(0, 1, 21)
    lo, hi = M.bootstrap_ci(vals, seed=1)
    assert lo < 0.5 < hi and hi - lo < 0.4
    assert math.isnan(M.bootstrap_ci([0.5])[0])
    from scipy.stats import wilcoxon

    a, b = np.array([0.9, 0.8, 0.85, 0.7, 0.95, 0.6]), np.array([0.5, 0.82, 0.6, 0.4, 0.9, 0.2])
    res = M.paired_wilcoxon(a, b)
    assert res["p_value"] == pytest.approx(wilcoxon(a, b).pvalue) and res["n"] == 6
    assert math.isnan(M.paired_wilcoxon(a, a)["p_value"])


def test_training_dice_agrees_with_the_evaluation_dice():
    """train.dice_per_sample (torch, per batch item) and metrics.dice (numpy) are one definition."""
    import torch

    from brainseg_utils.training.engine import dice_per_sample

    rng = np.random.default_rng(0)
    pred = rng.random((12, 16, 16)) > 0.6
    gt = rng.random((12, 16, 16)) > 0.7
    pred[0] = gt[0] = False  # both empty: 1
    pred[1], gt[1] = False, True  # one empty: 0
    pred[2], gt[2] = True, False
    ours = dice_per_sample(torch.from_numpy(pred), torch.from_numpy(gt)).numpy()
    ref = [M.dice(p, g) for p, g in zip(pred, gt, strict=True)]
    np.testing.assert_allclose(ours, ref, rtol=1e-6)
    assert ours[0] == 1.0 and ours[1] == 0.0 and ours[2] == 0.0
