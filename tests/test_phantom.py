"""The synthetic phantom's anatomy and tumours (brainseg_utils/data/phantom*.py): what a real FLAIR has."""

import numpy as np
import pytest
from scipy import ndimage

from brainseg_utils.data import phantom_anatomy as A
from brainseg_utils.data import phantom_tumours as T
from brainseg_utils.data.phantom import draw_case


@pytest.fixture(scope="module")
def anat():
    return A.anatomy(np.random.default_rng([3, 0]), 120)


def _islands(mask2d: np.ndarray, min_px: int = 150) -> int:
    """Connected pieces of at least ``min_px`` pixels (sulci cut off small bits of gyri, as on real slices)."""
    lab, n = ndimage.label(mask2d)
    return int((np.bincount(lab.ravel())[1:] >= min_px).sum())


def _slice_at(anat, u: float) -> int:
    z0, z1 = anat.height
    return int(round(z0 + u * (z1 - z0)))


def test_inferior_slices_hold_separate_islands_and_superior_two_hemispheres(anat):
    brain = (anat.tissue > A.BG) & (anat.tissue != A.CSF)  # parenchyma: fissures are CSF, dark on FLAIR
    names = list(A.PARTS)
    z = _slice_at(anat, 0.27)  # temporal lobes, orbitofrontal base, brainstem, cerebellum
    owners = {names[p] for p in np.unique(anat.part[:, :, z]) if p != 255}
    assert {"temporal_l", "temporal_r", "cerebellum_l", "cerebellum_r", "brainstem"} <= owners
    assert _islands(brain[:, :, z]) >= 4, "skull-base slices show separate islands of brain"
    mid = _slice_at(anat, 0.6)
    assert _islands(brain[:, :, mid]) <= 2, "mid-brain slices are one cerebrum (a fissure may reach the base)"
    top = _slice_at(anat, 0.93)
    hemis = ndimage.label(brain[:, :, top])
    sizes = np.sort(np.bincount(hemis[0].ravel())[1:])[::-1]
    assert hemis[1] >= 2 and sizes[1] > 0.5 * sizes[0], "the vertex slices are two hemispheres"
    rows = np.flatnonzero(brain.any((0, 1)))
    assert brain[:, :, rows[-1]].sum() < 0.2 * brain[:, :, mid].sum(), "the brain narrows to the vertex"


def test_cortex_ribbon_sulci_and_normal_hyperintensities(anat):
    t, d = anat.tissue, anat.depth_mm
    cerebrum = anat.part == 0
    shallow = cerebrum & (d < 3.0) & (t != A.CSF)  # below the CSF over the surface
    deep = cerebrum & (d > 25)
    assert (t[shallow] == A.GM).mean() > 0.8, "the outer 3 mm of the cerebrum's tissue is cortex"
    assert (t[deep] == A.WM).mean() > 0.5 and (t[deep] == A.GM).mean() < 0.35
    assert 0.005 < (t[cerebrum & (d < 15)] == A.CSF).mean() < 0.25, "CSF in the sulci"
    assert (t == A.PVH).sum() > 500, "periventricular hyperintensities present"
    near_csf = ndimage.binary_dilation(t == A.CSF, iterations=3)
    assert near_csf[t == A.PVH].mean() > 0.5, "the hyperintensities border the ventricles"


def test_cerebellum_is_grey_matter_folia_around_a_white_core(anat):
    names = list(A.PARTS)
    cb = anat.part == names.index("cerebellum_l")
    t = anat.tissue[cb]
    assert (t == A.GM).mean() > 0.45 and (t == A.WM).mean() > 0.05 and (t == A.CSF).mean() > 0.03


def _tumour_case(seed):
    anat = A.anatomy(np.random.default_rng([seed, 9]), 96)
    planted, high_grade, strength = T.plant_tumours(np.random.default_rng([seed, 10]), anat)
    return anat, planted, high_grade, strength


def test_edema_is_infiltrative_and_spares_the_cortex():
    anat, planted, high_grade, strength = _tumour_case(1)
    t = anat.tissue
    ed = t == T.ED
    assert ed.any() and strength[~ed].max() == 0.0 and 0.0 <= strength.min() and strength.max() <= 1.0
    outside = (t != T.ED) & (t != T.NCR) & (t != T.ET) & (t > A.BG)
    # its margin in white matter (where it fades out; at the spared cortex it stops while still strong)
    margin = ed & ndimage.binary_dilation(outside & np.isin(t, [A.WM, A.PVH]), iterations=1)
    inner = ed & ~ndimage.binary_dilation(outside, iterations=4)
    assert strength[margin].mean() < 0.35 < 0.6 < strength[inner].mean(), "strength rises from margin to inside"
    assert (anat.depth_mm[ed] < 1.0).mean() < 0.05, "edema does not sit on the brain surface"


@pytest.mark.parametrize("seed", [0, 2])
def test_tumour_labels_inside_brain_and_by_grade(seed):
    anat, planted, high_grade, _ = _tumour_case(seed)
    t = anat.tissue
    assert planted and (anat.part[(t == T.ED) | (t == T.NCR) | (t == T.ET)] != 255).all()
    assert (t == T.ET).any() == high_grade, "enhancing tumour exactly in high-grade cases"
    for p in planted:
        assert 2.5 <= p["radius_mm"] <= 28 and p["edema_radius_mm"] >= p["radius_mm"]


def test_tumours_cover_the_brats_range():
    """Over many cases: cortical and deep, multifocal, small, low and high grade, necrotic cores, and foci in
    the lower (temporal) and upper thirds of the brain."""
    kinds = {"cortical": 0, "deep": 0, "multifocal": 0, "small": 0, "low": 0, "high": 0, "necrotic": 0}
    heights = []
    for seed in range(24):
        rng = np.random.default_rng([seed, 0])
        anat = A.anatomy(rng, 48)
        planted, high_grade, _ = T.plant_tumours(rng, anat)
        kinds["multifocal"] += len(planted) > 1
        kinds["high" if high_grade else "low"] += 1
        for p in planted:
            kinds["cortical" if p["cortical"] else "deep"] += 1
            kinds["small"] += p["radius_mm"] < 6
            kinds["necrotic"] += p["necrotic"]
            heights.append((p["centre"][2] - anat.height[0]) / (anat.height[1] - anat.height[0]))
    assert all(v >= 2 for v in kinds.values()), kinds
    assert min(heights) < 0.4 and max(heights) > 0.7, heights


def test_case_contrast_fades_edema_and_keeps_normal_hyperintensities_unlabelled():
    rng = np.random.default_rng([5, 1])
    case = draw_case(rng, 64, np.random.default_rng(7))
    f, seg = case["flair"], case["seg"]
    brain = f > 0
    assert set(np.unique(seg)) <= {0, 1, 2, 4} and (f[seg > 0] > 0).all()
    normal = brain & (seg == 0)
    ed = seg == 2
    outside = ndimage.binary_dilation(~(seg > 0) & brain, iterations=1)
    margin, inner = ed & outside, ed & ~ndimage.binary_dilation(~(seg > 0) & brain, iterations=4)
    assert np.median(f[inner]) > np.median(f[margin]) > 0.9 * np.median(f[normal])
    assert np.median(f[inner]) > 1.2 * np.median(f[normal])
    assert case["meta"]["flair_contrast"]["edema"] >= 1.3


def test_edema_stays_visible_over_the_tissue_it_replaced():
    """Edema intensities, computed by hand. FLAIR: ``margin`` x the replaced tissue at the labelled margin
    (strength 0), rising to the case's edema level, never below the margin's brightness (edema in bright
    cortex stays brighter than cortex). Other modalities: a share of the difference to the edema level."""
    from brainseg_utils.data.phantom import _edema

    lut = np.array([0.0, 0.2, 1.4, 1.0, 1.5, 0.5, 1.2, 1.3], np.float32)  # BG CSF GM WM ED NCR ET PVH
    base = lut[[A.WM, A.WM, A.WM, A.GM, A.GM]]
    strength = np.array([0.0, 0.5, 1.0, 0.0, 1.0], np.float32)
    np.testing.assert_allclose(_edema(lut, base, strength, "flair", 1.2), [1.2, 1.35, 1.5, 1.68, 1.68], rtol=1e-6)
    np.testing.assert_allclose(
        _edema(lut, base, strength, "t1", 0.4), [1.2, 1.35, 1.5, 1.44, 1.5], rtol=1e-6
    )  # 1 + 0.5 * (0.4 + 0.6 * s); 1.4 + 0.1 * (0.4 + 0.6 * s)
    flair = _edema(lut, base, strength, "flair", 1.12)
    assert (flair >= 1.12 * base - 1e-6).all(), "the labelled margin stays >= 1.12x the tissue it replaced"
