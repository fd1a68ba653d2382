"""BraTS 2023 lesion-wise Dice / HD95, NSD at 2 mm and false-positive volume (evaluation/lesionwise.py)."""

import numpy as np
import pytest
from scipy import ndimage

from brainseg_utils.evaluation import metrics as M
from brainseg_utils.evaluation.metrics import lesion_wise_dice_hd95, normalized_surface_dice

SHAPE = (60, 40, 30)


def _vol(*boxes):
    v = np.zeros(SHAPE, bool)
    for box in boxes:
        v[box] = True
    return v


CUBE_A = np.s_[10:20, 10:20, 10:20]  # 1000 voxels
CUBE_B = np.s_[40:50, 10:20, 10:20]  # 1000 voxels, 20 voxels away from A


def test_one_of_two_lesions_found():
    res = lesion_wise_dice_hd95(_vol(CUBE_A), _vol(CUBE_A, CUBE_B), (1.0, 1.0, 1.0))
    assert res["lesion_dice"] == pytest.approx((1 + 0) / 2)
    assert res["lesion_hd95"] == pytest.approx((0 + 374) / 2)
    assert (res["n_gt_lesions"], res["n_tp"], res["n_fn"], res["n_fp"], res["n_gt_ignored"]) == (2, 1, 1, 0, 0)


def test_spurious_component_is_a_false_positive():
    pred = _vol(CUBE_A, np.s_[40:42, 30:32, 20:22])  # + a 2x2x2 component far from the truth
    res = lesion_wise_dice_hd95(pred, _vol(CUBE_A))
    assert res["lesion_dice"] == pytest.approx(0.5) and res["lesion_hd95"] == pytest.approx(187.0)
    assert (res["n_gt_lesions"], res["n_tp"], res["n_fn"], res["n_fp"]) == (1, 1, 0, 1)
    assert M.false_positive_volume_ml(pred, _vol(CUBE_A), (1.0, 1.0, 2.0)) == pytest.approx(8 * 2.0 / 1000)


def test_small_truth_lesions_are_ignored_by_volume_in_mm3():
    small = np.s_[40:45, 30:35, 20:22]  # 5 x 5 x 2 = 50 voxels: <= 50 mm^3 at 1 mm, ignored
    res = lesion_wise_dice_hd95(_vol(CUBE_A), _vol(CUBE_A, small))
    assert (res["lesion_dice"], res["lesion_hd95"]) == (1.0, 0.0)
    assert (res["n_gt_lesions"], res["n_fn"], res["n_gt_ignored"]) == (1, 0, 1)
    # the same 50 voxels at 1.1 mm along z are 55 mm^3: kept, and missed
    res = lesion_wise_dice_hd95(_vol(CUBE_A), _vol(CUBE_A, small), (1.0, 1.0, 1.1))
    assert res["lesion_dice"] == pytest.approx(0.5) and res["lesion_hd95"] == pytest.approx(187.0)
    assert (res["n_gt_lesions"], res["n_fn"], res["n_gt_ignored"]) == (2, 1, 0)
    # a prediction of an ignored lesion is not a false positive either
    res = lesion_wise_dice_hd95(_vol(CUBE_A, small), _vol(CUBE_A, small))
    assert (res["lesion_dice"], res["n_fp"], res["n_tp"]) == (1.0, 0, 1)


def test_matching_reaches_three_dilations_of_the_18_neighbourhood():
    near = _vol(CUBE_A, np.s_[22:23, 15:16, 15:16])  # 3 voxels beyond the face at x = 19: matched
    res = lesion_wise_dice_hd95(near, _vol(CUBE_A))
    assert res["n_fp"] == 0 and res["lesion_dice"] == pytest.approx(2000 / 2001)
    assert lesion_wise_dice_hd95(_vol(CUBE_A, np.s_[23:24, 15:16, 15:16]), _vol(CUBE_A))["n_fp"] == 1
    # 3 dilations of the 18-neighbourhood reach the corner offset (2, 2, 2), not (3, 3, 3)
    assert lesion_wise_dice_hd95(_vol(CUBE_A, np.s_[21:22, 21:22, 21:22]), _vol(CUBE_A))["n_fp"] == 0
    assert lesion_wise_dice_hd95(_vol(CUBE_A, np.s_[22:23, 22:23, 22:23]), _vol(CUBE_A))["n_fp"] == 1


def test_wider_dilation_and_the_image_around_the_masks():
    far = _vol(CUBE_A, np.s_[24:25, 15:16, 15:16])  # 5 voxels beyond the face at x = 19
    assert lesion_wise_dice_hd95(far, _vol(CUBE_A))["n_fp"] == 1
    assert lesion_wise_dice_hd95(far, _vol(CUBE_A), dilation_iterations=5)["n_fp"] == 0
    # the masks are cropped to their content (+ the dilation): a larger image around them changes nothing
    pred = _vol(np.s_[11:21, 10:20, 10:20], np.s_[40:42, 30:32, 20:22], np.s_[22:23, 15:16, 15:16])
    gt = _vol(CUBE_A, CUBE_B, np.s_[40:45, 2:7, 2:4])
    big_p, big_g = np.zeros((90, 70, 50), bool), np.zeros((90, 70, 50), bool)
    big_p[7:67, 11:51, 13:43], big_g[7:67, 11:51, 13:43] = pred, gt
    sp = (1.0, 1.2, 2.0)
    assert M.volume_metrics(big_p, big_g, sp) == pytest.approx(M.volume_metrics(pred, gt, sp))
    assert lesion_wise_dice_hd95(big_p, big_g, sp, dilation_iterations=5) == pytest.approx(
        lesion_wise_dice_hd95(pred, gt, sp, dilation_iterations=5)
    )


def test_truth_lesions_closer_than_the_dilation_are_one_lesion():
    a, b6, b7 = np.s_[10:15, 10:20, 10:20], np.s_[21:26, 10:20, 10:20], np.s_[22:27, 10:20, 10:20]
    gt = _vol(a, b6)  # a 6-voxel gap: the dilated cubes touch, one lesion
    res = lesion_wise_dice_hd95(_vol(a), gt)
    assert (res["n_gt_lesions"], res["n_tp"], res["n_fn"]) == (1, 1, 0)
    assert res["lesion_dice"] == pytest.approx(2 * 500 / (500 + 1000))
    assert res["lesion_hd95"] == pytest.approx(M.hd95(_vol(a), gt))
    res = lesion_wise_dice_hd95(_vol(a), _vol(a, b7))  # a 7-voxel gap: two lesions, one missed
    assert (res["n_gt_lesions"], res["n_tp"], res["n_fn"]) == (2, 1, 1) and res["lesion_dice"] == pytest.approx(0.5)


def test_empty_masks():
    z = np.zeros(SHAPE, bool)
    res = lesion_wise_dice_hd95(z, z)
    assert (res["lesion_dice"], res["lesion_hd95"], res["n_gt_lesions"], res["n_fp"]) == (1.0, 0.0, 0, 0)
    assert lesion_wise_dice_hd95(_vol(CUBE_A), z)["lesion_hd95"] == M.LESION_HD95_PENALTY == 374.0
    assert lesion_wise_dice_hd95(z, _vol(CUBE_A))["lesion_dice"] == 0.0
    assert normalized_surface_dice(z, z) == 1.0
    assert normalized_surface_dice(z, _vol(CUBE_A)) == normalized_surface_dice(_vol(CUBE_A), z) == 0.0
    assert M.false_positive_volume_ml(z, _vol(CUBE_A)) == 0.0


def test_shifted_cube_with_anisotropic_spacing():
    gt, pred = _vol(CUBE_A), _vol(np.s_[10:20, 10:20, 11:21])  # shifted one slice (2.5 mm) along z
    res = lesion_wise_dice_hd95(pred, gt, (1.0, 1.0, 2.5))
    assert res["lesion_dice"] == pytest.approx(2 * 900 / 2000)
    assert res["lesion_hd95"] == pytest.approx(2.5)  # 100 of the 488 surface voxels are one slice away
    # NSD at 2 mm, each surface (488 voxels): 324 side voxels on the other's side (0 mm), 100 end-face voxels
    # 2.5 mm away, and of the 64 inner voxels of the other end face the 48 within 1-2 mm (in plane) of the
    # side; the central 4 x 4 are 2.5 mm from the nearest surface. (324 + 48) * 2 / (488 * 2)
    voxel = dict(convention="voxel")
    assert normalized_surface_dice(pred, gt, (1.0, 1.0, 2.5), **voxel) == pytest.approx(372 / 488)
    assert normalized_surface_dice(pred, gt, (1.0, 1.0, 2.5), tolerance_mm=2.5, **voxel) == 1.0
    assert normalized_surface_dice(pred, gt, (1.0, 1.0, 1.0), **voxel) == 1.0  # one 1 mm slice: all within 2 mm
    # surfels (MedSAM's convention; exact values against the reference in the test below): a 2.5 mm shift puts the
    # end faces' centres beyond 2 mm of the other surface, a 2.5 mm tolerance or a 1 mm shift covers everything
    assert normalized_surface_dice(pred, gt, (1.0, 1.0, 2.5), tolerance_mm=2.5) == 1.0
    assert normalized_surface_dice(pred, gt, (1.0, 1.0, 1.0)) == 1.0
    assert normalized_surface_dice(pred, gt, (1.0, 1.0, 2.5)) < 1.0


def test_bad_input():
    with pytest.raises(ValueError, match=r"prediction shape \(4, 4, 4\) differs from ground truth shape \(4, 4, 5\)"):
        lesion_wise_dice_hd95(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))
    with pytest.raises(ValueError, match=r"\(4, 4, 4\) differs .* \(4, 5, 4\)"):
        normalized_surface_dice(np.zeros((4, 4, 4)), np.zeros((4, 5, 4)))
    with pytest.raises(ValueError, match=r"3-D volumes, got masks of shape \(4, 4\)"):
        lesion_wise_dice_hd95(np.zeros((4, 4)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="spacing"):
        lesion_wise_dice_hd95(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), (1.0, 1.0))
    with pytest.raises(ValueError, match="tolerance_mm"):
        normalized_surface_dice(np.ones((4, 4)), np.ones((4, 4)), tolerance_mm=-1)
    with pytest.raises(ValueError, match="convention must be 'surfel'"):
        normalized_surface_dice(np.ones((4, 4)), np.ones((4, 4)), convention="area")
    with pytest.raises(ValueError, match=r"2-D or 3-D masks, got shape \(2, 2, 2, 2\)"):
        normalized_surface_dice(np.ones((2, 2, 2, 2)), np.ones((2, 2, 2, 2)))


def test_surfel_areas_by_hand():
    """The surface through one 2 x 2 x 2 block: one voxel in cuts a corner (triangle through three edge
    midpoints: area sqrt((sy sz)^2 + (sx sz)^2 + (sx sy)^2) / 8); half the block in is a plane (sy sz for the
    plane across the first axis); 2-D: straight edges are the spacing, a cut corner half the pixel diagonal."""
    from brainseg_utils.evaluation.surfels import code_measure

    t = code_measure((1.0, 1.0, 2.0))
    assert t[0] == t[255] == 0.0
    assert t[0b00000001] == pytest.approx(3 / 8) and t[0b10000000] == pytest.approx(3 / 8)
    assert t[0b00001111] == pytest.approx(2.0) and t[0b11110000] == pytest.approx(2.0)  # across axis 0: 1 * 2
    assert t[0b00110011] == pytest.approx(2.0)  # across axis 1: 1 * 2
    assert t[0b01010101] == pytest.approx(1.0)  # across axis 2: 1 * 1
    t2 = code_measure((3.0, 4.0))
    assert t2[0b0001] == pytest.approx(2.5) and t2[0b0011] == 4.0 and t2[0b0101] == 3.0 and t2[0b0110] == 5.0


def test_surfel_nsd_of_a_square_by_hand():
    """2-D, spacing 1: an n x n square's contour on the corner grid is 4 (n - 1) straight + 4 cut corners."""
    from brainseg_utils.evaluation.surfels import surfel_distances

    sq = np.zeros((12, 12), bool)
    sq[2:8, 3:9] = True
    s = surfel_distances(sq, sq, (1.0, 1.0))
    assert s["area_p"].sum() == pytest.approx(4 * 5 + 4 * 0.5 * 2**0.5) and not s["d_pg"].any()
    far = np.zeros((12, 40), bool)
    far[2:8, 30:36] = True
    near = np.zeros((12, 40), bool)
    near[2:8, 3:9] = True
    assert normalized_surface_dice(near, far) == 0.0 and normalized_surface_dice(near, near) == 1.0


def _blobs(rng, shape, pct, sigma):
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return noise > np.percentile(noise, 100 - pct)


def _official_case(seed):
    """The cases cross-checked against the official BraTS 2023 code (docs/evaluation.md)."""
    rng = np.random.default_rng(seed)
    shape = (64, 60, 40)
    spacing = (1.0, 1.0, 1.0) if seed % 3 else (1.0, 1.2, 2.0)
    gt = _blobs(rng, shape, rng.uniform(0.5, 3), rng.uniform(1.0, 2.5))
    pred = _blobs(rng, shape, rng.uniform(0.5, 3), rng.uniform(1.0, 2.5)) if seed % 4 else gt.copy()
    if seed % 4 == 0:  # the truth, minus one lesion, plus stray voxels
        lab, _ = ndimage.label(gt, ndimage.generate_binary_structure(3, 3))
        pred[lab == 1] = False
        pred[rng.integers(0, 64, 6), rng.integers(0, 60, 6), rng.integers(0, 40, 6)] = True
    return pred, gt, spacing


# seed: (LesionWise_Score_Dice, LesionWise_Score_HD95, Num_TP, Num_FN, Num_FP) from the official metrics.py
OFFICIAL = {
    0: (0.33255439580412316, 249.33333333333334, 1, 0, 2),
    3: (0.013010725548640939, 282.7932393514732, 16, 2, 45),
    4: (0.3993564533428674, 224.4, 2, 0, 3),
    8: (0.4543284877413756, 204.0, 5, 1, 5),
}


@pytest.mark.parametrize("seed", sorted(OFFICIAL))
def test_agrees_with_the_official_brats_2023_code(seed):
    dice, hd, tp, fn, fp = OFFICIAL[seed]
    res = lesion_wise_dice_hd95(*_official_case(seed))
    assert res["lesion_dice"] == pytest.approx(dice, abs=1e-12)
    assert (res["n_tp"], res["n_fn"], res["n_fp"]) == (tp, fn, fp)
    # HD95 of a matched lesion: MONAI's surface-voxel convention here, DeepMind's surfels there
    assert res["lesion_hd95"] == pytest.approx(hd, abs=0.1)


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("convention", ["voxel", "surfel"])
def test_nsd_agrees_with_monai_surface_dice(seed, convention):
    """MONAI's compute_surface_dice: use_subvoxels=False is the boundary-voxel convention, True the surfel one
    (DeepMind's surface-distance, which MedSAM uses; MONAI and DeepMind agreed to 3e-8 on 12 blob pairs)."""
    torch = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")  # dev requirement
    rng = np.random.default_rng(seed)
    shape = (40, 36, 12) if seed % 2 else (64, 48)
    spacing = (1.0, 1.2, 2.5)[: len(shape)] if seed % 3 else (1.0,) * len(shape)
    pred, gt = _blobs(rng, shape, 10, 2), _blobs(rng, shape, 12, 2)
    ref = monai_metrics.compute_surface_dice(
        torch.from_numpy(pred[None, None].astype(np.float32)),
        torch.from_numpy(gt[None, None].astype(np.float32)),
        class_thresholds=[2.0],
        include_background=True,
        spacing=spacing,
        use_subvoxels=convention == "surfel",
    ).item()
    assert normalized_surface_dice(pred, gt, spacing, convention=convention) == pytest.approx(ref, abs=1e-6)


def test_case_metrics_is_all_metrics_plus_volume_metrics():
    rng = np.random.default_rng(3)
    pred, gt = _blobs(rng, (40, 36, 20), 8, 2), _blobs(rng, (40, 36, 20), 10, 2)
    sp = (1.0, 1.2, 2.0)
    row = M.case_metrics(pred, gt, sp)
    assert row == pytest.approx({**M.all_metrics(pred, gt, sp), **M.volume_metrics(pred, gt, sp)})
    assert set(M.CASE_METRICS) <= set(row) and row["nsd_2mm"] == pytest.approx(normalized_surface_dice(pred, gt, sp))
    lab, _ = ndimage.label(pred, np.ones((3, 3, 3)))  # 26-connected components
    fp_voxels = (pred & ~np.isin(lab, np.unique(lab[gt]))).sum()  # in components with no voxel in the truth
    assert row["fp_ml"] == pytest.approx(fp_voxels * 2.4 / 1000)
