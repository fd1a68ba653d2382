"""The automatic U-Net -> SAM cascade: 3-D clean-up, component boxes, multi-box decoding, negative boxes."""

import json

import numpy as np
import pytest
import torch

from brainseg_utils.evaluation import cascade, grid
from brainseg_utils.models.sam.prompts import mask_to_box
from brainseg_utils.training.embeddings import EmbeddingDataset, build_embedding_cache, negative_box


def _blob(shape, corner, size):
    m = np.zeros(shape, bool)
    m[tuple(slice(c, c + s) for c, s in zip(corner, size, strict=True))] = True
    return m


def test_clean_volume_removes_components_below_the_volume():
    big = _blob((20, 20, 10), (2, 2, 2), (3, 3, 3))  # 27 voxels
    small = _blob((20, 20, 10), (15, 15, 7), (1, 2, 1))  # 2 voxels
    diag = np.zeros((20, 20, 10), bool)
    diag[10, 10, 0], diag[11, 11, 1] = True, True  # touch at a corner: one 26-connected component of 2 voxels
    mask = big | small | diag
    np.testing.assert_array_equal(cascade.clean_volume(mask, (1, 1, 1), 3), big)
    np.testing.assert_array_equal(cascade.clean_volume(mask, (1, 1, 1), 2), mask)  # 2 voxels = 2 mm³: kept
    np.testing.assert_array_equal(cascade.clean_volume(mask, (1, 1, 1), 0), mask)
    # 2 x 2 x 2 mm voxels: the 2-voxel parts hold 16 mm³, the big one 216 mm³
    np.testing.assert_array_equal(cascade.clean_volume(mask, (2, 2, 2), 16), mask)
    np.testing.assert_array_equal(cascade.clean_volume(mask, (2, 2, 2), 17), big)
    assert not cascade.clean_volume(mask, (1, 1, 1), 28).any()
    with pytest.raises(ValueError, match="3-D mask"):
        cascade.clean_volume(mask[..., 0], (1, 1, 1), 3)
    with pytest.raises(ValueError, match=">= 0"):
        cascade.clean_volume(mask, (1, 1, 1), -1)


def test_component_boxes_one_per_component_largest_first():
    m = np.zeros((32, 32), np.uint8)
    m[2:5, 3:6] = 1  # 9 px: x 3..5, y 2..4
    m[10:20, 20:30] = 1  # 100 px: x 20..29, y 10..19
    m[25, 0] = m[26, 1] = 1  # diagonal neighbours: one 8-connected component, x 0..1, y 25..26
    b = cascade.component_boxes(m, max_boxes=4)
    np.testing.assert_array_equal(b[:3], [[20, 10, 29, 19], [3, 2, 5, 4], [0, 25, 1, 26]])
    assert np.isnan(b[3]).all()
    np.testing.assert_array_equal(cascade.component_boxes(m, max_boxes=1), [[20, 10, 29, 19]])
    assert np.isnan(cascade.component_boxes(np.zeros((8, 8)))).all()
    assert cascade.boxes_for_masks(np.stack([m, m])).shape == (2, cascade.MAX_BOXES, 4)


def test_threshold_is_the_best_on_validation_and_the_smallest_on_ties():
    gt = _blob((20, 20, 10), (2, 2, 2), (4, 4, 4))
    island = _blob((20, 20, 10), (15, 15, 6), (2, 2, 2))  # an 8-voxel false positive
    pred = gt | island
    t, scores = cascade.choose_min_volume([(pred, gt, (1, 1, 1))], candidates=(0, 5, 8, 9, 100))
    # by hand: Dice with the island 2*64/(72+64) = 0.941; without it 1; 100 mm³ removes everything: 0
    assert scores[0.0] == pytest.approx(128 / 136) and scores[100.0] == 0.0
    assert t == 9.0 and scores[9.0] == 1.0  # 8 keeps the island (>= 8 mm³), 9 is the smallest that drops it
    t2, _ = cascade.choose_min_volume([(gt, gt, (1, 1, 1))], candidates=(50, 0, 10))
    assert t2 == 0.0  # nothing to gain: no clean-up
    with pytest.raises(ValueError, match="at least one"):
        cascade.choose_min_volume([])


def test_to_cache_size_matches_the_slice_cache():
    from brainseg_utils.data.slices import resize_slice

    m = np.zeros((240, 200), np.uint8)
    m[100:140, 50:90] = 1
    want = resize_slice(np.random.rand(1, 240, 200).astype(np.float32), m, 64)[1]
    np.testing.assert_array_equal(grid.to_cache_size(m, 64), want)


def test_decoder_unites_one_run_per_box():
    from brainseg_utils.models.sam.backends import build_backend
    from brainseg_utils.models.sam.decoder import SamDecoderModel

    model = SamDecoderModel(build_backend("litemedsam"), "box", 64).eval()
    emb = torch.randn(3, 256, 64, 64)
    b1, b2 = torch.tensor([4.0, 4.0, 20.0, 20.0]), torch.tensor([30.0, 30.0, 60.0, 50.0])
    nan = torch.full((4,), float("nan"))
    boxes = torch.stack([torch.stack([b1, b2]), torch.stack([b2, nan]), torch.stack([nan, nan])])  # (3, 2, 4)
    with torch.no_grad():
        multi = model.low_res_logits(emb, boxes)
        one = model.low_res_logits(emb[[0, 0, 1]], torch.stack([b1, b2, b2]))
    torch.testing.assert_close(multi[0], torch.maximum(one[0], one[1]))
    torch.testing.assert_close(multi[1], one[2])
    assert (multi[2] == model.EMPTY_LOGIT).all()
    assert model(emb, boxes).shape == (3, 1, 64, 64)


def test_negative_box_avoids_the_tumour_and_stays_on_brain():
    rng = np.random.default_rng(0)
    mask = np.zeros((64, 64), np.uint8)
    mask[20:40, 20:40] = 1
    brain = np.zeros((64, 64), bool)
    brain[8:56, 8:56] = True
    for _ in range(50):
        b = negative_box(mask, brain, rng).astype(int)
        x0, y0, x1, y1 = b
        assert 0 <= x0 <= x1 <= 63 and 0 <= y0 <= y1 <= 63
        assert not mask[y0 : y1 + 1, x0 : x1 + 1].any()
        assert brain[(y0 + y1) // 2, (x0 + x1) // 2] or brain[y0 : y1 + 1, x0 : x1 + 1].any()
    assert negative_box(mask, np.zeros_like(brain), rng) is None
    assert negative_box(np.ones_like(mask), brain, rng) is None  # no tumour-free tissue


def test_dataset_negative_and_cascade_boxes(tiny_cache, tmp_path):
    from tests.test_embeddings import _Fake

    slices, _ = tiny_cache
    rows = np.arange(len(slices))
    emb = build_embedding_cache(_Fake(), slices, rows, tmp_path, progress=False)
    has = slices.index.has_tumour.to_numpy()
    neg = EmbeddingDataset(emb, slices, rows, "box", jitter_px=0, negatives=0.5, seed=3)
    assert len(neg) == len(rows), "tumour-free slices are kept for negative boxes"
    n_neg_tumour = 0
    for i, r in enumerate(neg.rows):
        x, y = neg[i]
        box, target = x["boxes"].numpy().astype(int), y[0].numpy()
        mask = np.asarray(slices.masks[r])
        if not target.any():  # a negative: its box lies off the tumour
            assert not mask[box[1] : box[3] + 1, box[0] : box[2] + 1].any()
            n_neg_tumour += int(has[r])
        else:
            np.testing.assert_array_equal(target, mask)
            np.testing.assert_array_equal(box, mask_to_box(mask).astype(int))  # jitter 0: the exact box
    assert 0 < n_neg_tumour < has.sum(), "some, not all, tumour slices get a negative box"
    plain = EmbeddingDataset(emb, slices, rows, "box", jitter_px=0)
    assert len(plain) == has.sum()
    given = {int(r): cascade.component_boxes(np.asarray(slices.masks[r])) for r in rows[:5]}
    casc = EmbeddingDataset(emb, slices, rows, "box", jitter_px=0, boxes=given)
    assert len(casc) == 5 and casc[0][0]["boxes"].shape == (cascade.MAX_BOXES, 4)
    np.testing.assert_array_equal(casc[0][1][0].numpy(), np.asarray(slices.masks[rows[0]]))
    with pytest.raises(ValueError, match="negatives"):
        EmbeddingDataset(emb, slices, rows, "box", negatives=1.0)
    with pytest.raises(ValueError, match="only with prompt 'box'"):
        EmbeddingDataset(emb, slices, rows, "none", boxes=given)


class _IslandUNet(torch.nn.Module):
    """Logits +5 in a 20 x 20 square and in a 1-px island of every 64-px slice, -5 elsewhere."""

    def forward(self, x):
        out = torch.full((len(x), 1, 64, 64), -5.0)
        out[:, :, 20:40, 24:44] = 5.0
        out[:, :, 2, 60] = 5.0
        return out


class _BoxLog(torch.nn.Module):
    low_res_size = 256

    def __init__(self):
        super().__init__()
        self.boxes = []

    def low_res_logits(self, emb, boxes=None):
        self.boxes.append(None if boxes is None else boxes.clone())
        return torch.full((len(emb), 1, 256, 256), -5.0)


class _Enc:
    def encode(self, x):
        return torch.zeros(len(x), 1)


def test_predict_case_cleans_the_unet_and_prompts_one_box_per_component(synth_root):
    from brainseg_utils.data.brats import discover_cases
    from brainseg_utils.evaluation import inference as inf

    case = discover_cases(synth_root)[0]
    dec = _BoxLog()
    models = inf.Models(_IslandUNet(), sam={"f": {"box": dec}}, backends={"f": _Enc()})
    models.cleanup = cascade.Cleanup(1000.0, {}, 1, "u", "s")
    assert models.names()[:2] == ["unet", "unet_clean"]
    res = inf.predict_case(models, case, 64, ("flair",))
    raw, clean = res["pred"]["unet"], res["pred"]["unet_clean"]
    z = int(res["brain_z"][0])
    # the 1-px island at 64 px: a ~3 x 4 px blob per slice at 240 px, a rod of a few hundred mm³ through the 27
    # brain slices; the square: 75 x 75 px x 27 slices = ~150,000 mm³
    assert 0 < (raw & ~clean).sum() < 1000 and not (raw & ~clean)[12:, :200].any(), "the island goes"
    np.testing.assert_array_equal(clean[60:150, 90:165, z], raw[60:150, 90:165, z])  # the square stays
    cascade_calls = [b for b in dec.boxes if b.dim() == 3]  # the oracle (GT) calls pass (B, 4), the cascade (B, K, 4)
    assert cascade_calls, "the cascade prompts with one box per component"
    boxes = torch.cat(cascade_calls)
    assert boxes.dim() == 3 and boxes.shape[1:] == (cascade.MAX_BOXES, 4)
    assert torch.isnan(boxes[:, 1:]).all(), "one component left after the clean-up: one box per slice"
    np.testing.assert_array_equal(boxes[0, 0].numpy(), [24, 20, 43, 39])


def test_cleanup_is_chosen_on_validation_stored_and_reused(synth_root, tiny_cache, tmp_path, monkeypatch):
    from brainseg_utils.models.unet import UNet
    from brainseg_utils.runtime.checkpoints import save_checkpoint
    from brainseg_utils.runtime.paths import RunDir
    from brainseg_utils.training.finetune import unet_validation_boxes

    cache, split = tiny_cache
    run = RunDir(tmp_path / "run")
    info = {"root": str(synth_root), "name": "synthetic"}
    assert unet_validation_boxes(run, cache, split, info, cache.rows_for(split["val"])) is None  # no U-Net yet
    net = UNet(base_channels=4)
    meta = {"split_sha256": split["sha256"]}
    save_checkpoint(run.unet / "best.pt", {"model": net.state_dict(), "config": {"model": net.config}, "meta": meta})
    val_rows = cache.rows_for(split["val"])
    boxes = unet_validation_boxes(run, cache, split, info, val_rows)
    assert set(boxes) == {int(r) for r in val_rows}
    assert all(b.shape == (cascade.MAX_BOXES, 4) for b in boxes.values())
    rec = json.loads((run.unet / "cleanup.json").read_text())
    assert rec["chosen_on"] == "validation cases" and rec["n_val_cases"] == len(split["val"])
    assert rec["split_sha256"] == split["sha256"] and set(rec["candidates"]) >= {"0", "100"}
    assert rec["candidates"][f"{rec['min_volume_mm3']:g}"] == max(rec["candidates"].values())

    def no_choice(*a, **k):
        raise AssertionError("the stored threshold is reused for the same checkpoint and split")

    monkeypatch.setattr(cascade, "choose_min_volume", no_choice)
    again = cascade.cleanup_for(run, None, run.unet / "best.pt", split, synth_root, 64, ("flair",))
    assert again.min_volume_mm3 == rec["min_volume_mm3"] and not again.val_predictions
    save_checkpoint(run.unet / "best.pt", {"model": UNet(base_channels=4).state_dict(), "config": {"model": net.config},
                                           "meta": meta})  # fmt: skip
    with pytest.raises(AssertionError, match="reused"):  # another checkpoint: chosen again
        cascade.cleanup_for(run, net.eval(), run.unet / "best.pt", split, synth_root, 64, ("flair",))
