"""Intensity augmentation of brainseg_utils.data.transforms: the MR-like bias field."""

import albumentations as A
import numpy as np
import pytest

from brainseg_utils.data.transforms import RandomBiasField, train_augmentation


def _apply(t, image, mask=None, seed=0):
    c = A.Compose([t], strict=True, seed=seed)
    return c(image=image, mask=mask) if mask is not None else c(image=image)


def test_bias_field_is_smooth_multiplicative_and_keeps_background():
    img = np.zeros((128, 128, 1), np.float32)
    img[16:112, 16:112] = 0.5
    out = _apply(RandomBiasField(strength=(0.3, 0.3), grid=4, p=1.0), img)["image"]
    assert out.dtype == np.float32 and out.shape == img.shape
    assert (out[img == 0] == 0).all(), "background must stay exactly 0"
    log_ratio = np.log(out[16:112, 16:112, 0] / 0.5)
    # exp(s * f), f ~ N(0, 1) on a 4 x 4 lattice: visibly non-uniform, yet smooth between pixels
    assert log_ratio.std() > 0.05
    assert np.abs(np.diff(log_ratio, axis=0)).max() < 0.1 and np.abs(np.diff(log_ratio, axis=1)).max() < 0.1


def test_bias_field_zero_strength_is_identity_and_mask_untouched():
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 1, (64, 48, 1)).astype(np.float32)
    mask = (img[..., 0] > 0.5).astype(np.uint8)
    out = _apply(RandomBiasField(strength=(0.0, 0.0), p=1.0), img, mask)
    np.testing.assert_allclose(out["image"], img, rtol=1e-6)
    out = _apply(RandomBiasField(strength=(0.4, 0.4), p=1.0), img, mask)
    np.testing.assert_array_equal(out["mask"], mask)
    assert not np.allclose(out["image"], img)


def test_bias_field_reproducible_for_a_seed():
    img = np.full((32, 32, 1), 0.5, np.float32)
    a = _apply(RandomBiasField(p=1.0), img, seed=3)["image"]
    b = _apply(RandomBiasField(p=1.0), img, seed=3)["image"]
    c = _apply(RandomBiasField(p=1.0), img, seed=4)["image"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("kwargs", [{"strength": (0.5, 0.1)}, {"strength": (-0.1, 0.2)}, {"grid": 1}])
def test_bias_field_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        RandomBiasField(**kwargs)


def test_mr_intensity_adds_the_appearance_transforms_before_the_noise():
    plain = [type(t).__name__ for t in train_augmentation(mr_intensity=False).transforms]
    assert "RandomBiasField" not in plain and plain[-1] == "GaussNoise"
    names = [type(t).__name__ for t in train_augmentation().transforms]  # on by default
    assert names == [*plain[:-1], "RandomBiasField", "RandomGamma", "GaussianBlur", "GaussNoise"]
    assert all(t.p == 0.0 for t in train_augmentation(0.0).transforms)
