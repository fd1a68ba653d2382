"""Encoder runtimes: OpenVINO fp32 equals PyTorch fp32, the converted model is cached and keyed, and
PyTorch takes over when openvino is missing."""

import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

from brainseg_utils.models.sam.backends import SamBackend, build_backend
from brainseg_utils.models.sam.decoder import SamDecoderModel
from brainseg_utils.models.sam.prompts import mask_to_box
from brainseg_utils.runtime import encoder_runtime as R


class _TinyEncoder(nn.Module):
    """(B, 3, 16, 16) -> (B, 8, 8, 8): a conv, a nonlinearity, a strided conv."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, stride=2, padding=1)

    def forward(self, x):
        return self.b(torch.nn.functional.gelu(self.a(x)))


class _TinyBackend(SamBackend):
    def __init__(self, runtime="auto"):
        model = nn.Module()
        model.image_encoder, model.prompt_encoder, model.mask_decoder = _TinyEncoder(), nn.Identity(), nn.Identity()
        super().__init__("tiny", model, 16, "tiny: 3ch at 16", "b" * 64, runtime=runtime)

    def preprocess(self, images):
        return self.three_channels(images.float())


def _ov_key(sha):
    return {"backend": "tiny", "checkpoint_sha256": sha, "input_size": 16, "preprocessing": "tiny"}


def test_resolve_runtime_rules():
    pytest.importorskip("openvino")
    assert R.resolve_runtime("auto", "cpu") == "openvino"
    assert R.resolve_runtime("auto", torch.device("cuda")) == "pytorch", "always PyTorch on CUDA"
    assert R.resolve_runtime("pytorch", "cpu") == "pytorch"
    with pytest.raises(ValueError, match="runs on CPU only, the model is on cuda"):
        R.resolve_runtime("openvino", "cuda")
    with pytest.raises(KeyError, match=r"unknown encoder runtime 'onnx'; options: \['auto', 'pytorch', 'openvino'\]"):
        R.resolve_runtime("onnx", "cpu")
    with pytest.raises(KeyError, match="unknown encoder runtime 'ov'"):
        _TinyBackend().use_runtime("ov")


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("BRAINSEG_CACHE", str(tmp_path / "c"))
    assert R.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("BRAINSEG_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert R.default_cache_dir() == tmp_path / "x" / "brainseg"


def test_pytorch_fallback_without_openvino(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    monkeypatch.setattr(R, "_warned_missing", False)
    assert R.openvino_version() is None
    backend = _TinyBackend()
    assert backend.runtime == "pytorch"
    x = torch.rand(2, 1, 16, 16)
    out = backend.encode(x)
    torch.testing.assert_close(out, backend.image_encoder(backend.preprocess(x)), rtol=0, atol=0)
    assert isinstance(backend.runner(), R.TorchRuntime)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert len(lines) == 1 and "openvino not installed, using PyTorch" in lines[0], lines
    with pytest.raises(ImportError, match="requirements-cpu.txt"):
        R.resolve_runtime("openvino", "cpu")


def test_converted_model_cache_is_reused_and_keyed(tmp_path, monkeypatch):
    ov = pytest.importorskip("openvino")
    net = _TinyEncoder().eval()
    x = torch.rand(3, 3, 16, 16)
    first = R.OpenVinoRuntime(net, (3, 16, 16), _ov_key("a" * 64), tmp_path, label="tiny")
    assert first.converted and (first.path / "model.xml").is_file()
    assert first.path.parent == tmp_path / "openvino" and first.path.name.startswith("tiny-")
    meta = R.runtime_meta(first.path)
    assert meta["checkpoint_sha256"] == "a" * 64 and meta["openvino"] == ov.get_version()
    assert meta["precision"] == "f32" and meta["input_shape"] == [1, 3, 16, 16]
    n_params = sum(p.numel() for p in net.parameters())
    assert (first.path / "model.bin").stat().st_size >= 4 * n_params, "weights stored as fp32, not fp16"
    with torch.no_grad():
        ref = net(x)
    torch.testing.assert_close(first(x), ref, rtol=0, atol=1e-5)

    def no_convert(*a, **k):
        raise AssertionError("converted again although the IR is cached")

    monkeypatch.setattr(ov, "convert_model", no_convert)
    second = R.OpenVinoRuntime(net, (3, 16, 16), _ov_key("a" * 64), tmp_path, label="tiny")
    assert not second.converted and second.path == first.path
    torch.testing.assert_close(second(x), ref, rtol=0, atol=1e-5)
    monkeypatch.undo()
    other = R.OpenVinoRuntime(net, (3, 16, 16), _ov_key("c" * 64), tmp_path, label="tiny")
    assert other.converted and other.path != first.path
    bigger = R.OpenVinoRuntime(nn.Sequential(net), (3, 32, 32), _ov_key("a" * 64), tmp_path, label="tiny")
    assert bigger.converted and bigger.path not in (first.path, other.path), "input size is part of the key"
    assert sorted(p.name for p in (tmp_path / "openvino").iterdir()) == sorted(
        p.name for p in (first.path, other.path, bigger.path)
    ), "no temporary folders left behind"
    unhashed = R.OpenVinoRuntime(net, (3, 16, 16), _ov_key("random-init"), tmp_path, label="tiny")
    assert unhashed.path is None and unhashed.converted, "random weights are converted in memory, never cached"
    with pytest.raises(ValueError, match=r"expected input \(B, 3, 16, 16\), got \(1, 3, 8, 8\)"):
        first(torch.zeros(1, 3, 8, 8))


def test_backend_dispatches_to_the_runtime(tmp_path):
    pytest.importorskip("openvino")
    backend = _TinyBackend().use_runtime("auto", cache_dir=tmp_path)
    assert backend.runtime == "openvino"
    x = torch.rand(5, 1, 16, 16)
    out = backend.encode(x)
    assert isinstance(backend.runner(), R.OpenVinoRuntime) and out.shape == (5, 8, 8, 8)
    torch.testing.assert_close(out, backend.image_encoder(backend.preprocess(x)), rtol=0, atol=1e-5)
    assert backend.use_runtime("pytorch").runtime == "pytorch"
    assert isinstance(backend.runner(), R.TorchRuntime)


@pytest.fixture(scope="module")
def lite_pair():
    pytest.importorskip("openvino")
    pt = build_backend("litemedsam", runtime="pytorch")
    ov = build_backend("litemedsam", runtime="openvino")  # the default cache dir: converted once per machine
    return pt, ov


def test_litemedsam_openvino_matches_pytorch_on_synthetic_slices(lite_pair, tiny_cache):
    """Real LiteMedSAM weights on synthetic BraTS-like slices: embeddings within 1e-4 and the
    box-prompt decoder's thresholded masks identical."""
    pt, ov = lite_pair
    cache, _ = tiny_cache
    tumour = np.flatnonzero(cache.index["has_tumour"].to_numpy())
    rows = np.concatenate([tumour[[0, len(tumour) // 2]], np.flatnonzero(~cache.index["has_tumour"])[:1]])
    x = torch.from_numpy(np.asarray(cache.images[rows], np.float32))
    e_pt, e_ov = pt.encode(x), ov.encode(x)
    assert ov.runtime == "openvino" and pt.runtime == "pytorch"
    assert e_ov.shape == e_pt.shape == (len(rows), 256, 64, 64) and e_ov.dtype == torch.float32
    assert float((e_ov - e_pt).abs().max()) < 1e-4
    size = cache.images.shape[-1]
    boxes = []
    for r in rows:
        b = mask_to_box(np.asarray(cache.masks[r]))
        boxes.append(b if b is not None else np.array([size // 4, size // 4, size // 2, size // 2], np.float32))
    dec = SamDecoderModel(pt, "box", size).eval()
    with torch.no_grad():
        m_pt = dec(e_pt, torch.from_numpy(np.stack(boxes))) > 0
        m_ov = dec(e_ov, torch.from_numpy(np.stack(boxes))) > 0
    assert m_pt.any(), "the test needs non-empty masks to compare"
    assert torch.equal(m_pt, m_ov)


def test_static_batch_ir_runs_any_batch(tmp_path):
    pytest.importorskip("openvino")
    net = _TinyEncoder(seed=1).eval()
    rt = R.OpenVinoRuntime(net, (3, 16, 16), _ov_key("d" * 64), tmp_path, label="tiny", batch=2)
    assert rt.input_shape == (2, 3, 16, 16) and R.runtime_meta(rt.path)["input_shape"] == [2, 3, 16, 16]
    x = torch.rand(5, 3, 16, 16)  # chunks of 2, the last padded
    with torch.no_grad():
        torch.testing.assert_close(rt(x), net(x), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="batch must be >= 1"):
        R.OpenVinoRuntime(net, (3, 16, 16), _ov_key("d" * 64), tmp_path, batch=0)


def test_runtime_module_wraps_unet_inference_only(tmp_path):
    pytest.importorskip("openvino")
    from brainseg_utils.models.unet import UNet

    unet = UNet(1, 4).eval()
    wrapped = R.RuntimeModule(unet, (1, 32, 32), {"checkpoint_sha256": "f" * 64}, tmp_path, label="unet").eval()
    assert wrapped.runtime == "openvino" and wrapped.config == unet.config
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        ref, got = unet(x), wrapped(x)
        assert isinstance(wrapped._runner, R.OpenVinoRuntime) and wrapped._runner.converted
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
        other = wrapped(torch.rand(1, 1, 48, 48))  # another shape: the module itself
        assert other.shape == (1, 1, 48, 48)
    assert (tmp_path / "openvino").is_dir() and len(list((tmp_path / "openvino").iterdir())) == 1
    y = wrapped(x)  # gradients on: PyTorch, so training code is unaffected
    assert y.requires_grad
    lazy = R.RuntimeModule(unet, None, {"checkpoint_sha256": "f" * 64}, tmp_path, label="unet").eval()
    with torch.no_grad():
        torch.testing.assert_close(lazy(x), ref, rtol=0, atol=1e-5)
    assert lazy.input_shape == (1, 32, 32) and not lazy._runner.converted, "same key and shape: the cached IR"


def test_unreadable_cached_model_names_the_folder(tmp_path):
    pytest.importorskip("openvino")
    rt = R.OpenVinoRuntime(_TinyEncoder(), (3, 16, 16), _ov_key("9" * 64), tmp_path, label="tiny")
    (rt.path / "model.xml").write_text("<not a model")
    with pytest.raises(RuntimeError, match=f"cached OpenVINO model {rt.path} is unreadable.*delete that folder"):
        R.OpenVinoRuntime(_TinyEncoder(), (3, 16, 16), _ov_key("9" * 64), tmp_path, label="tiny")


@pytest.mark.parametrize("img_size,window", [(128, 4), (160, 14)])
def test_fused_attention_matches_segment_anything(img_size, window):
    """The SDPA path with positions folded into q/k gives segment-anything's logits: same encoder output in
    fp32 (windowed blocks with padding and a global block, decomposed relative positions on)."""
    from functools import partial

    from segment_anything.modeling import ImageEncoderViT

    torch.manual_seed(0)
    enc = ImageEncoderViT(
        img_size=img_size,
        patch_size=16,
        embed_dim=96,
        depth=2,
        num_heads=3,
        mlp_ratio=2.0,
        out_chans=32,
        qkv_bias=True,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        window_size=window,
        global_attn_indexes=(1,),
    ).eval()
    for blk in enc.blocks:  # the zero-initialised positions would hide a wrong relative-position term
        torch.nn.init.normal_(blk.attn.rel_pos_h, std=0.5)
        torch.nn.init.normal_(blk.attn.rel_pos_w, std=0.5)
    x = torch.randn(2, 3, img_size, img_size)
    with torch.no_grad():
        ref = enc(x)
        assert R.use_fused_attention(enc) == 2
        assert R.use_fused_attention(enc) == 0  # idempotent
        got = enc(x)
    assert got.shape == ref.shape == (2, 32, img_size // 16, img_size // 16)
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-4), float((got - ref).abs().max())


def test_torch_runtime_precision_and_description():
    lin = torch.nn.Linear(4, 3)
    rt = R.TorchRuntime(lin, "bf16")
    out = rt(torch.randn(2, 4))
    assert out.dtype == torch.float32 and out.shape == (2, 3)
    assert rt.describe()["precision"] == "bf16-autocast" and rt.describe()["fused_attention_blocks"] == 0
    assert R.TorchRuntime(lin).describe()["precision"] == "f32"
    with pytest.raises(ValueError, match="precision must be one of"):
        R.TorchRuntime(lin, "int8")
