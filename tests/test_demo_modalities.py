"""The demo with a U-Net that takes all four modalities: 4-D NIfTI uploads (X, Y, Z, C; the Medical Segmentation
Decathlon's brain-tumour layout), which channel reaches the model, refusals, examples; SAM sees FLAIR either way."""

import nibabel as nib
import numpy as np
import pytest
import torch
from uploads import nifti

from brainseg_utils.app import demo as D
from brainseg_utils.app import request as R
from brainseg_utils.app import volume as VOL
from brainseg_utils.app.examples import Truths, write_examples
from brainseg_utils.app.predictor import Predictor
from brainseg_utils.app.upload import UploadError, load_upload
from brainseg_utils.data.brats import discover_cases
from brainseg_utils.data.volumes import normalise_volume
from brainseg_utils.models.sam.backends import SamBackend
from brainseg_utils.models.unet import UNet

MODS = ("flair", "t1", "t1ce", "t2")


class ChannelProbe(torch.nn.Module):
    """A 'U-Net' that marks the pixels where input channel ``k`` is above 0.5: shows which modality it was given."""

    def __init__(self, k: int, in_channels: int = 4):
        super().__init__()
        self.k, self.config = k, {"in_channels": in_channels}

    def forward(self, x):
        assert x.shape[1] == self.config["in_channels"]
        return (x[:, self.k : self.k + 1] - 0.5) * 40.0


def _stack(tmp_path, name="case.nii.gz"):
    """A 4-D int16 volume (48, 40, 9, 4): brain everywhere in the box; FLAIR bright in one cube, T2 in another
    (far apart); T1 and T1ce scaled differently, so per-channel normalisation shows."""
    rng = np.random.default_rng(0)
    vol = np.zeros((48, 40, 9, 4), np.int16)
    vol[6:42, 5:35, 1:8, :] = rng.normal(100, 5, (36, 30, 7, 4)).astype(np.int16)
    vol[..., 1] *= 3
    vol[..., 2] *= 7
    vol[8:16, 8:16, 2:7, 0] = 400  # FLAIR cube
    vol[30:40, 22:32, 3:6, 3] = 400  # T2 cube
    return str(nifti(tmp_path / name, vol, np.diag([-1.0, 1.0, 2.0, 1.0]))), vol


def test_a_4d_upload_keeps_every_modality_normalised_on_its_own(tmp_path):
    path, raw = _stack(tmp_path)
    up = load_upload(path)
    assert up.channels.shape == (48, 40, 9, 4) and up.n_channels == 4 and up.volume.shape == (48, 40, 9)
    for c in range(4):
        np.testing.assert_allclose(up.channels[..., c], normalise_volume(raw[..., c].astype(np.float32)), atol=1e-6)
    np.testing.assert_array_equal(up.volume, up.channels[..., 0])  # what is shown and checked: FLAIR
    assert np.shares_memory(up.volume, up.channels) and up.model_input().shape == (4, 48, 40, 9)
    blank = raw.copy()
    blank[..., 2] = 0
    with pytest.raises(UploadError, match=r"b.nii.gz: volume 2 of the 4-D stack is blank"):
        load_upload(nifti(tmp_path / "b.nii.gz", blank))


def test_the_four_channel_unet_gets_every_modality_of_the_slice_and_the_volume(tmp_path):
    path, _ = _stack(tmp_path)
    pred = Predictor(ChannelProbe(3), 64, modalities=MODS)  # marks where T2 is bright
    out = R.segment(pred, path, 4, "", "unet_box", tmp_path)
    t2_cube = np.zeros((48, 40), bool)
    t2_cube[30:40, 22:32] = True
    shown = np.rot90(t2_cube)  # the page shows rot90 of the file's plane
    got = out["res"]["unet"]
    assert 2 * (got & shown).sum() / (got.sum() + shown.sum()) > 0.9, "the T2 cube, not FLAIR's"
    vol = VOL.segment_volume(pred, path, tmp_path)["pred"]["unet"]
    truth = np.zeros((48, 40, 9), bool)
    truth[30:40, 22:32, 3:6] = True
    assert 2 * (vol & truth).sum() / (vol.sum() + truth.sum()) > 0.9 and not vol[8:16, 8:16].any()


def test_a_flair_unet_takes_the_first_volume_of_a_stack(tmp_path):
    path, _ = _stack(tmp_path)
    pred = Predictor(ChannelProbe(0, in_channels=1), 64)
    vol = VOL.segment_volume(pred, path, tmp_path)["pred"]["unet"]
    truth = np.zeros((48, 40, 9), bool)
    truth[8:16, 8:16, 2:7] = True
    assert 2 * (vol & truth).sum() / (vol.sum() + truth.sum()) > 0.9


def test_a_four_channel_unet_refuses_what_lacks_its_modalities(tmp_path):
    pred = Predictor(ChannelProbe(3), 64, modalities=MODS)
    single = nifti(tmp_path / "flair.nii.gz", np.random.default_rng(0).integers(1, 200, (32, 32, 4), np.int16))
    need = r"needs a 4-D NIfTI stacking the 4 modalities flair, t1, t1ce, t2 .*the upload is a single"
    with pytest.raises(UploadError, match=need):
        R.segment(pred, str(single), 1, "", "unet_box", tmp_path)
    with pytest.raises(UploadError, match="flair.nii.gz: this run's U-Net " + need):
        VOL.segment_volume(pred, str(single), tmp_path)
    three = nifti(tmp_path / "three.nii", np.random.default_rng(0).integers(1, 200, (32, 32, 4, 3), np.int16))
    with pytest.raises(UploadError, match="the upload is a stack of 3 volumes"):
        R.segment(pred, str(three), 1, "", "unet_box", tmp_path)
    with pytest.raises(
        ValueError, match=r"takes 4 input channels but its checkpoint names the modalities \('flair',\)"
    ):
        Predictor(ChannelProbe(3), 64, modalities=("flair",))
    assert "4-D NIfTI (X, Y, Z, 4" in D.intro("synthetic", MODS) and "FLAIR slice (PNG" in D.intro("synthetic")


def test_warm_up_of_a_four_channel_unet():
    torch.manual_seed(0)
    pred = Predictor(UNet(in_channels=4, base_channels=4), 64, modalities=MODS)
    w = pred.warm_up(volume_batch=2)
    assert w["unet_ms"] > 0 and w["sam_ms"] is None


def test_sam_sees_flair_whatever_the_unet_takes():
    x = torch.rand(2, 4, 8, 8)
    three = SamBackend.three_channels(x)
    assert three.shape == (2, 3, 8, 8)
    for c in range(3):
        torch.testing.assert_close(three[:, c], x[:, 0])
    torch.testing.assert_close(SamBackend.three_channels(x[:, :1]), three)


def test_examples_of_a_four_modality_run_are_4d_stacks_with_their_truth(synth_root, tmp_path):
    rows = write_examples(discover_cases(synth_root), tmp_path / "ex", n=2, modalities=MODS)
    assert len(rows) == 2 and all(r[1] is not None and r[2] for r in rows)
    case = discover_cases(synth_root)[0]
    stack = nib.load(rows[0][0])
    assert stack.shape == (*nib.load(case.images["flair"]).shape, 4)
    for c, m in enumerate(MODS):
        np.testing.assert_array_equal(np.asarray(stack.dataobj[..., c]), np.asarray(nib.load(case.images[m]).dataobj))
    wt = np.asarray(nib.load(case.seg).dataobj) > 0
    np.testing.assert_array_equal(Truths(rows).get(rows[0][0]), wt)
    assert load_upload(rows[0][0]).n_channels == 4
    again = write_examples(discover_cases(synth_root), tmp_path / "ex", n=2, modalities=MODS)
    assert again == rows  # reused, not rewritten
