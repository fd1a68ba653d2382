import numpy as np
import pytest
import torch

from brainseg_utils.models.sam import backends as sam
from brainseg_utils.models.sam import weights
from brainseg_utils.models.sam.backends import build_backend
from brainseg_utils.models.sam.decoder import SamDecoderModel, decode_batched
from brainseg_utils.models.sam.prompts import jitter_box, mask_to_box


@pytest.fixture(scope="module")
def lite():
    return build_backend("litemedsam")


@pytest.fixture(scope="module")
def vit_b_random():
    return build_backend("vit_b", random_init=True)


def test_registry_errors():
    with pytest.raises(KeyError, match=r"unknown SAM backend 'vit_x'; options: \['litemedsam', 'medsam', 'vit_b'"):
        build_backend("vit_x")
    with pytest.raises(ValueError, match="needs SAM_CHECKPOINT.*sam_vit_b_01ec64.pth"):
        build_backend("vit_b")


def test_official_checkpoint_checks(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected the official sam_vit_b_01ec64.pth"):
        weights.verify_official_checkpoint(tmp_path / "none.pth", "vit_b")
    short = tmp_path / "short.pth"
    short.write_bytes(b"\0" * 1000)
    with pytest.raises(
        ValueError,
        match=r"expected the official sam_vit_b_01ec64.pth for vit_b \(375,042,383 bytes\), "
        r"found 1,000 bytes \(a truncated download",
    ):
        build_backend("vit_b", short)
    same_size = tmp_path / "same.pth"
    with open(same_size, "wb") as fh:  # right size, wrong bytes (sparse file)
        fh.truncate(375_042_383)
    with pytest.raises(
        ValueError,
        match=r"expected the official sam_vit_b_01ec64.pth for vit_b \(sha256 ec2df62732614e57…\), found sha256",
    ):
        weights.verify_official_checkpoint(same_size, "vit_b")


def test_litemedsam_loads_weights_only(monkeypatch):
    seen = []
    real = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    b = build_backend("litemedsam")
    assert seen == [True]
    c = b.counts()
    assert c["mask_decoder"] == 4_058_340 and c["image_encoder"] > c["mask_decoder"]
    assert not any(p.requires_grad for p in b.model.parameters()), "backend is frozen"


def test_medsam_checkpoint_wrong_architecture(tmp_path):
    bad = tmp_path / "medsam.pth"
    torch.save({"model": {"some.weight": torch.zeros(3)}}, bad)
    with pytest.raises(ValueError, match="does not match this model architecture; .*missing keys"):
        build_backend("medsam", bad)


def test_mask_to_box_and_jitter():
    m = np.zeros((10, 12), np.uint8)
    m[2:5, 3:9] = 1
    np.testing.assert_array_equal(mask_to_box(m), [3, 2, 8, 4])
    assert mask_to_box(np.zeros((4, 4))) is None
    rng = np.random.default_rng(0)
    seen = []
    for _ in range(200):
        j = jitter_box(np.array([3, 2, 8, 4], np.float32), 12, rng, max_px=3)
        # enlarge only, by whole pixels in 0..3 per side, clipped to the 12 x 12 slice
        assert j[0] <= 3 and j[1] <= 2 and j[2] >= 8 and j[3] >= 4
        grow = np.array([3 - j[0], 2 - j[1], j[2] - 8, j[3] - 4])
        assert (grow >= 0).all() and (grow <= 3).all() and np.array_equal(grow, np.round(grow))
        assert (j >= 0).all() and (j <= 11).all()
        seen.append(grow)
    seen = np.array(seen)
    assert set(np.unique(seen[:, 0])) == {0, 1, 2, 3}, "every shift 0..k occurs (x0 has room for 3)"
    np.testing.assert_array_equal(jitter_box(np.array([3, 2, 8, 4], np.float32), 12, rng, max_px=0), [3, 2, 8, 4])
    with pytest.raises(ValueError, match="max_px"):
        jitter_box(np.array([3, 2, 8, 4], np.float32), 12, rng, max_px=-1)


@pytest.mark.parametrize("mask_box", [[5, 5, 5, 5], [6, 6, 7, 6], [0, 0, 2, 1], [61, 60, 63, 63], [0, 30, 0, 31]])
def test_jittered_box_always_covers_tiny_and_border_tumours(mask_box):
    """A 1-3 px tumour, or one on the slice border, stays fully inside every jittered box (64 x 64 slice)."""
    m = np.zeros((64, 64), np.uint8)
    x0, y0, x1, y1 = mask_box
    m[y0 : y1 + 1, x0 : x1 + 1] = 1
    box = mask_to_box(m)
    rng = np.random.default_rng(1)
    for _ in range(300):
        j = jitter_box(box, 64, rng, max_px=5)
        assert j[0] <= x0 and j[1] <= y0 and j[2] >= x1 and j[3] >= y1, (j, mask_box)
        assert j[0] >= 0 and j[1] >= 0 and j[2] <= 63 and j[3] <= 63
        assert j[2] - j[0] >= x1 - x0 and j[3] - j[1] >= y1 - y0


@pytest.mark.parametrize("name", ["litemedsam", "vit_b", "medsam"])
def test_box_transform_lands_on_the_right_pixels(name, lite, vit_b_random):
    backend = {"litemedsam": lite, "vit_b": vit_b_random}.get(name) or build_backend("medsam", random_init=True)
    size = 128
    mask = np.zeros((size, size), np.float32)
    mask[30:60, 50:90] = 1.0  # rows 30..59, cols 50..89
    box = torch.from_numpy(mask_to_box(mask))[None]
    inp = backend.preprocess(torch.from_numpy(mask)[None, None])  # (1, 3, in, in)
    assert inp.shape == (1, 3, backend.input_size, backend.input_size)
    ch = inp[0, 0]
    if name == "vit_b":  # undo SAM's pixel normalisation
        ch = (ch * sam.SAM_PIXEL_STD[0] + sam.SAM_PIXEL_MEAN[0]) / 255.0
    seen = mask_to_box((ch > 0.5).numpy())
    got = backend.boxes_to_input(box, size)[0].numpy()
    scale = backend.input_size / size
    # the rectangle's first pixel maps to x0 * scale; its last pixel spans up to (x1 + 1) * scale - 1
    np.testing.assert_allclose(got, box[0].numpy() * scale)
    np.testing.assert_allclose(seen[:2], got[:2], atol=1.0)
    np.testing.assert_allclose(seen[2:], got[2:] + scale - 1, atol=1.0)


@pytest.mark.parametrize("which", ["lite", "vit_b"])
def test_batched_decoder_equals_per_image_loop(which, lite, vit_b_random):
    backend = lite if which == "lite" else vit_b_random
    model = SamDecoderModel(backend, "box", 128).eval()
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(3, 256, 64, 64, generator=g)
    boxes = torch.tensor([[10, 20, 60, 70], [0, 0, 127, 127], [30, 30, 40, 50]], dtype=torch.float32)
    with torch.no_grad():
        out = model(emb, boxes)
        ref = []
        for i in range(3):  # the package's own decoder, one image and one box at a time
            sp, de = model.prompt_encoder(points=None, boxes=backend.boxes_to_input(boxes[i : i + 1], 128), masks=None)
            low, _ = model.mask_decoder(
                image_embeddings=emb[i : i + 1],
                image_pe=model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sp,
                dense_prompt_embeddings=de,
                multimask_output=False,
            )
            ref.append(torch.nn.functional.interpolate(low, size=(128, 128), mode="bilinear", align_corners=False))
    torch.testing.assert_close(out, torch.cat(ref), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="one prompt per image"):
        decode_batched(
            model.mask_decoder,
            emb,
            model.prompt_encoder.get_dense_pe(),
            torch.zeros(2, 2, 256),
            torch.zeros(3, 256, 64, 64),
        )


def test_decoder_model_trains_decoder_only(lite):
    m = SamDecoderModel(lite, "none", 64)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("mask_decoder.") for n in trainable)
    assert sum(p.numel() for p in m.trainable_parameters()) == 4_058_340
    out = m(torch.randn(2, 256, 64, 64))
    assert out.shape == (2, 1, 64, 64)
    out.mean().backward()
    assert m.mask_decoder.iou_token.weight.grad is not None
    assert all(p.grad is None for p in m.prompt_encoder.parameters())
    assert not any(p.requires_grad for p in lite.mask_decoder.parameters()), "the backend's decoder stays frozen"
    mixed = torch.tensor([[1.0, 1, 5, 5], [float("nan")] * 4])
    with pytest.raises(ValueError, match="mixes boxes and no-box rows"):
        SamDecoderModel(lite, "box", 64)(torch.randn(2, 256, 64, 64), mixed)
    with pytest.raises(ValueError, match="prompt mode"):
        SamDecoderModel(lite, "unet_box", 64)


def test_build_backend_attaches_a_runtime():
    pytest.importorskip("openvino")
    b = build_backend("litemedsam", runtime="pytorch")
    assert b.runtime == "pytorch" and b.runtime_request == "pytorch"
    assert b.use_runtime("auto").runtime == "openvino", "auto picks OpenVINO on CPU"
    assert b.runtime_key()["checkpoint_sha256"] == b.checkpoint_sha256
    with pytest.raises(KeyError, match="unknown encoder runtime 'tensorrt'"):
        build_backend("litemedsam", runtime="tensorrt")
