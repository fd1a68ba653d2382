import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from brainseg_utils.models.sam.backends import SamBackend
from brainseg_utils.models.sam.prompts import mask_to_box
from brainseg_utils.training import embeddings as E
from brainseg_utils.training.embeddings import EmbeddingDataset, build_embedding_cache, select_rows


class _Encoder(nn.Module):
    """Cheap deterministic stand-in for an image encoder: (B, 3, 64, 64) -> (B, 256, 64, 64)."""

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.fail_after = None

    def forward(self, x):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated disconnect")
        w = torch.linspace(0.5, 1.5, 256).view(1, 256, 1, 1)
        return x[:, :1] * w


class _Fake(SamBackend):
    def __init__(self):
        model = nn.Module()
        model.image_encoder, model.prompt_encoder, model.mask_decoder = _Encoder(), nn.Identity(), nn.Identity()
        super().__init__("fake", model, 64, "fake: identity at 64", "0" * 64, runtime="pytorch")

    def preprocess(self, images):
        return self.three_channels(images.float())


@pytest.fixture(scope="module")
def slices64(tiny_cache):
    return tiny_cache[0]


def test_select_rows_budget():
    rows = np.arange(100)
    assert len(select_rows(rows, 1.0)) == 100  # 1 GiB holds 512 embeddings
    sub = select_rows(rows, 20 * 2 / 1024)  # 20 embeddings
    assert len(sub) == 20 and (np.diff(sub) > 0).all() and set(sub) <= set(rows)
    np.testing.assert_array_equal(sub, select_rows(rows[::-1], 20 * 2 / 1024))
    with pytest.raises(ValueError, match="holds no embedding"):
        select_rows(rows, 1e-6)


def test_cache_values_reuse_and_rebuild(slices64, tmp_path):
    fake = _Fake()
    rows = np.arange(10)
    cache = build_embedding_cache(fake, slices64, rows, tmp_path, batch_size=4, progress=False)
    assert cache.emb.shape == (10, 256, 64, 64) and cache.emb.dtype == np.float16
    expected = fake.encode(torch.from_numpy(np.asarray(slices64.images[3], np.float32))[None])[0].numpy()
    np.testing.assert_allclose(cache.get(3), expected, atol=1e-3)
    calls = fake.image_encoder.calls
    again = build_embedding_cache(fake, slices64, rows, tmp_path, batch_size=4, progress=False)
    assert again.key == cache.key and fake.image_encoder.calls == calls, "reused, nothing encoded"
    other = build_embedding_cache(fake, slices64, np.arange(5), tmp_path, batch_size=4, progress=False)
    assert other.key != cache.key and len(other.rows) == 5
    assert json.loads((cache.root / "manifest.json").read_text())["n"] == 10


def test_cache_resumes_after_interruption(slices64, tmp_path):
    fake = _Fake()
    fake.image_encoder.fail_after = 2
    with pytest.raises(KeyboardInterrupt):
        build_embedding_cache(fake, slices64, np.arange(12), tmp_path, batch_size=4, progress=False)
    folder = next(tmp_path.iterdir())
    assert json.loads((folder / "progress.json").read_text()) == {"done": 8}
    assert not (folder / "manifest.json").exists()
    fake.image_encoder.fail_after = None
    fake.image_encoder.calls = 0
    cache = build_embedding_cache(fake, slices64, np.arange(12), tmp_path, batch_size=4, progress=False)
    assert fake.image_encoder.calls == 1 and cache.manifest["resumed_from"] == 8
    clean = build_embedding_cache(_Fake(), slices64, np.arange(12), tmp_path / "clean", batch_size=4, progress=False)
    np.testing.assert_array_equal(np.asarray(cache.emb), np.asarray(clean.emb))


def test_budget_subsamples_or_encodes_on_the_fly(slices64, tmp_path):
    fake = _Fake()
    budget = 6 * E.BYTES_PER_SLICE / 1024**3
    rows = np.arange(len(slices64))
    cache = build_embedding_cache(fake, slices64, rows, tmp_path, budget_gb=budget, progress=False)
    assert len(cache.rows) == 6 and cache.manifest["requested"] == len(rows)
    sub = EmbeddingDataset(cache, slices64, rows, "none")
    assert len(sub) == 6
    full = EmbeddingDataset(cache, slices64, rows, "none", backend=fake)
    assert len(full) == len(rows)
    missing = next(i for i, r in enumerate(full.rows) if r not in cache)
    x, _ = full[missing]
    assert x["embeddings"].shape == (256, 64, 64)


def test_dataset_prompts(slices64, tmp_path):
    cache = build_embedding_cache(_Fake(), slices64, np.arange(len(slices64)), tmp_path, progress=False)
    has = slices64.index.has_tumour.to_numpy()
    none = EmbeddingDataset(cache, slices64, np.arange(len(slices64)), "none")
    assert len(none) == len(slices64) and torch.isnan(none[0][0]["boxes"]).all()
    exact = EmbeddingDataset(cache, slices64, np.arange(len(slices64)), "box", jitter_px=0)
    assert len(exact) == has.sum()
    x, y = exact[0]
    np.testing.assert_array_equal(x["boxes"].numpy(), mask_to_box(y[0].numpy()))
    jit = EmbeddingDataset(cache, slices64, np.arange(len(slices64)), "box", jitter_px=5, seed=1)
    b0 = jit[0][0]["boxes"]
    assert torch.equal(b0, jit[0][0]["boxes"]) and not torch.equal(b0, x["boxes"])
    assert (b0[:2] <= x["boxes"][:2]).all() and (b0[2:] >= x["boxes"][2:]).all(), "jitter only enlarges"
    jit.set_epoch(1)
    assert not torch.equal(b0, jit[0][0]["boxes"])


def test_finetuning_beats_zero_shot(tiny_cache, tmp_path):
    """LiteMedSAM with ground-truth boxes: decoder fine-tuning raises validation Dice above zero-shot."""
    from brainseg_utils.models.sam.backends import build_backend
    from brainseg_utils.models.sam.decoder import SamDecoderModel
    from brainseg_utils.training.engine import TrainConfig, evaluate_dataset, fit

    cache, split = tiny_cache
    has = cache.index.has_tumour.to_numpy()
    tr_rows = [r for r in cache.rows_for(split["train"]) if has[r]][:40]
    va_rows = [r for r in cache.rows_for(split["val"]) if has[r]][:10]
    lite = build_backend("litemedsam")
    emb = build_embedding_cache(lite, cache, tr_rows + va_rows, tmp_path / "emb", batch_size=8, progress=False)
    tr = EmbeddingDataset(emb, cache, tr_rows, "box", jitter_px=2)
    va = EmbeddingDataset(emb, cache, va_rows, "box", jitter_px=0)
    model = SamDecoderModel(lite, "box", cache.images.shape[-1])
    zero = evaluate_dataset(model, va)["dice"]
    hist = fit(
        model,
        tr,
        va,
        tmp_path / "run",
        TrainConfig(epochs=6, batch_size=4, lr=2e-4, progress=False),
        params=model.trainable_parameters(),
    )
    best = max(h["val_dice"] for h in hist)
    assert best > zero + 0.02, (zero, [round(h["val_dice"], 3) for h in hist])
    ckpt = torch.load(tmp_path / "run" / "best.pt", map_location="cpu", weights_only=True)
    assert not any(k.startswith("image_encoder") for k in ckpt["model"]), "checkpoint holds the decoder side only"


def test_cache_key_records_the_encoder_runtime(slices64, tmp_path):
    ov = pytest.importorskip("openvino")
    fake = _Fake()
    rows = np.arange(4)
    pt = build_embedding_cache(fake, slices64, rows, tmp_path / "emb", progress=False)
    fake.use_runtime("openvino", cache_dir=tmp_path / "ir")
    vino = build_embedding_cache(fake, slices64, rows, tmp_path / "emb", progress=False)
    assert pt.manifest["runtime"] == "pytorch" and vino.manifest["runtime"] == "openvino"
    assert vino.key != pt.key, "another runtime is another cache"
    assert vino.manifest["runtime_detail"]["version"] == ov.get_version()
    assert pt.manifest["runtime_detail"]["version"] == torch.__version__
    assert pt.manifest["precision"] == vino.manifest["precision"] == "fp32"  # autocast is for CUDA only
    np.testing.assert_allclose(np.asarray(vino.emb, np.float32), np.asarray(pt.emb, np.float32), atol=1e-3)
