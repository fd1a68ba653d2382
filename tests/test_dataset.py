import numpy as np
import pytest
import torch
from scipy import ndimage

from brainseg_utils.data.brats import discover_cases
from brainseg_utils.data.dataset import SliceDataset
from brainseg_utils.data.slices import SliceConfig, build_cache
from brainseg_utils.data.transforms import train_augmentation


@pytest.fixture(scope="module")
def cache(synth_root, tmp_path_factory):
    return build_cache(
        discover_cases(synth_root), tmp_path_factory.mktemp("c") / "slices", SliceConfig(img_size=64), progress=False
    )


def test_items_without_augmentation(cache):
    ds = SliceDataset(cache, [0, 5])
    x, y = ds[1]
    assert x.shape == (1, 64, 64) and x.dtype == torch.float32 and y.shape == (1, 64, 64)
    np.testing.assert_array_equal(x.numpy(), cache.images[5].astype(np.float32))
    np.testing.assert_array_equal(y[0].numpy(), cache.masks[5])
    with pytest.raises(IndexError):
        SliceDataset(cache, [len(cache)])


def test_augmentation_reproducible_per_seed_and_epoch(cache):
    rows = np.flatnonzero(cache.index.has_tumour.to_numpy())[:6]
    a = SliceDataset(cache, rows, train_augmentation(), seed=7)
    b = SliceDataset(cache, rows, train_augmentation(), seed=7)
    for i in range(len(rows)):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1])
    b.set_epoch(1)
    assert any(not torch.equal(a[i][0], b[i][0]) for i in range(len(rows))), "a new epoch draws new augmentations"
    out = torch.stack([a[i][0] for i in range(len(rows))])
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_augmentation_keeps_image_and_mask_aligned(cache):
    """Image = its own mask: after any geometric augmentation they must still coincide."""
    import albumentations as A

    geo = train_augmentation()
    geo = A.Compose([t for t in geo.transforms if isinstance(t, A.DualTransform)], strict=True, seed=0)
    rows = np.flatnonzero(cache.index.has_tumour.to_numpy())
    moved = 0
    for k, row in enumerate(rows[:40]):
        mask = np.asarray(cache.masks[row])
        geo.set_random_seed(k)
        out = geo(image=mask[..., None].astype(np.float32), mask=mask)
        img_mask = out["image"][..., 0] > 0.5
        aug = out["mask"].astype(bool)
        moved += not np.array_equal(aug, mask.astype(bool))
        # Bilinear image vs nearest mask may disagree only on the mask's 1-px boundary band.
        band = ndimage.binary_dilation(aug) & ~ndimage.binary_erosion(aug)
        off = (img_mask ^ aug) & ~band
        assert not off.any(), f"row {row}: {off.sum()} pixels misaligned beyond the boundary"
    assert moved > 10, "augmentation actually changed most masks"


def test_augmentation_strength_validated():
    with pytest.raises(ValueError, match="strength"):
        train_augmentation(1.5)
    assert train_augmentation(0.0).transforms[0].p == 0.0
