"""checkpoints.py: atomic save, safe load, architecture check, key diagnostics, device and AMP policy."""

import re
from pathlib import Path

import pytest
import torch

from brainseg_utils.models.unet import UNet
from brainseg_utils.runtime import checkpoints
from brainseg_utils.runtime.checkpoints import load_checkpoint, load_model_state, save_checkpoint


def test_amp_policy(monkeypatch):
    assert checkpoints.amp_dtype(torch.device("cpu")) is None
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (7, 5))  # T4
    assert checkpoints.amp_dtype(cuda) is torch.float16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (8, 0))  # A100
    assert checkpoints.amp_dtype(cuda) is torch.bfloat16
    assert checkpoints.amp_dtype(cuda, enabled=False) is None


def test_train_amp_policy_cpu_bf16_only_where_native(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)  # e.g. Zen 4
    assert checkpoints.train_amp_dtype(cpu, arch="sam_decoder") is torch.bfloat16
    assert checkpoints.train_amp_dtype(cpu, enabled=False, arch="sam_decoder") is None
    assert checkpoints.train_amp_dtype(cpu, arch="unet") is None  # measured: Dice dropped, stays fp32
    assert checkpoints.train_amp_dtype(cpu) is None
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)  # AVX2-only laptop: fp32
    assert checkpoints.train_amp_dtype(cpu, arch="sam_decoder") is None
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)  # Sapphire Rapids
    assert checkpoints.train_amp_dtype(cpu, arch="sam_decoder") is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (7, 5))  # CUDA: the amp_dtype policy
    assert checkpoints.train_amp_dtype(cuda, arch="unet") is torch.float16
    assert checkpoints.amp_dtype(cpu) is None  # inference on CPU stays fp32


def test_other_architecture_lists_mismatched_keys(tmp_path):
    ckpt = tmp_path / "small.pt"
    save_checkpoint(ckpt, {"model": UNet(base_channels=4).state_dict()})
    with pytest.raises(
        ValueError,
        match=r"99 shape mismatches: bottleneck\.0\.0\.weight: checkpoint \(64, 32, 3, 3\) vs model \(128, 64, 3, 3\)",
    ):
        load_model_state(UNet(base_channels=8), load_checkpoint(ckpt)["model"], str(ckpt))
    other = {"layer.weight": torch.zeros(2, 2)}
    with pytest.raises(ValueError, match=r"missing keys: .*unexpected keys: layer\.weight"):
        load_model_state(UNet(base_channels=4), other)


def test_cuda_checkpoint_loads_on_cpu(tmp_path, monkeypatch):
    """A file whose tensors were saved from cuda:0 (location tag forced) loads onto the CPU."""
    import torch.serialization as ser

    path = tmp_path / "cuda.pt"
    monkeypatch.setattr(ser, "location_tag", lambda storage: "cuda:0")
    torch.save({"model": UNet(base_channels=4).state_dict()}, path)
    monkeypatch.undo()
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)  # what a bare load does on a CPU-only machine
    state = load_checkpoint(path)["model"]
    assert all(v.device.type == "cpu" for v in state.values())
    load_model_state(UNet(base_channels=4), state)


class _Evil:
    def __reduce__(self):
        return (print, ("this would run arbitrary code",))


def test_unsafe_and_truncated_checkpoints_refused(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "x": _Evil()}, evil)
    with pytest.raises(ValueError, match="refused to load it"):
        load_checkpoint(evil)
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"model": UNet(base_channels=4).state_dict()})
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(ValueError, match="truncated or not a torch checkpoint"):
        load_checkpoint(cut)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")


def test_every_torch_load_is_weights_only():
    pkg = Path(checkpoints.__file__).parents[1]
    calls = []
    for f in pkg.rglob("*.py"):
        for m in re.finditer(r"torch\.load\((.*?)\)\n", f.read_text(), re.S):
            calls.append((f.name, m.group(1)))
    assert calls, "the package loads checkpoints somewhere"
    for name, args in calls:
        assert "weights_only=True" in args, f"{name}: torch.load({args}) without weights_only=True"


# ----------------------------------------------------------------------------- wrong kind of checkpoint
SPLIT = "a" * 64


def _unet_ckpt(path):
    model = UNet(base_channels=4)
    save_checkpoint(
        path,
        {
            "model": model.state_dict(),
            "config": {"model": model.config, "train": {}},
            "meta": {"split_sha256": SPLIT, "img_size": 64, "dataset": "synthetic"},
        },
    )
    return path


def _sam_ckpt(path):
    cfg = {"arch": "sam_decoder", "backend": "litemedsam", "prompt": "box", "img_size": 64}
    save_checkpoint(
        path, {"model": {"w": torch.zeros(2)}, "config": {"model": cfg, "train": {}}, "meta": {"split_sha256": SPLIT}}
    )
    return path


def test_expect_arch_names_file_holding_and_expected(tmp_path):
    sam = _sam_ckpt(tmp_path / "best.pt")
    assert load_checkpoint(sam, expect_arch="sam_decoder")["config"]["model"]["prompt"] == "box"
    msg = re.escape(
        f"{sam} holds a 'sam_decoder' checkpoint (backend='litemedsam', prompt='box'); expected a 'unet' checkpoint"
    )
    with pytest.raises(ValueError, match=msg):
        load_checkpoint(sam, expect_arch="unet")
    bare = tmp_path / "bare.pt"
    save_checkpoint(bare, {"model": {}})
    with pytest.raises(ValueError, match="holds no recorded architecture .*expected a 'unet' checkpoint"):
        load_checkpoint(bare, expect_arch="unet")
    assert load_checkpoint(bare) == {"model": {}}  # without expect_arch nothing is checked


def test_every_model_loader_refuses_the_wrong_kind(tmp_path):
    """A SAM decoder at unet/best.pt (the issue: TypeError from UNet(backend=...)) and a U-Net among the SAM
    decoders: every loader (evaluate's, the demo's) names the file, what it holds and what it expected."""
    from brainseg_utils.app import predictor
    from brainseg_utils.evaluation import inference
    from brainseg_utils.runtime.paths import RunDir

    run = tmp_path / "run"
    _sam_ckpt((run / "unet").mkdir(parents=True) or run / "unet" / "best.pt")
    wrong_unet = re.escape(str(run / "unet" / "best.pt")) + " holds a 'sam_decoder' .*expected a 'unet'"
    with pytest.raises(ValueError, match=wrong_unet):
        inference.load_unet(run / "unet" / "best.pt")
    with pytest.raises(ValueError, match=wrong_unet):
        inference.load_models(RunDir(run), SPLIT)
    with pytest.raises(ValueError, match=wrong_unet):
        predictor.predictor_from_run(run, device="cpu")

    _unet_ckpt(run / "unet" / "best.pt")
    dec = run / "sam" / "sam_litemedsam_box" / "best.pt"
    dec.parent.mkdir(parents=True)
    _unet_ckpt(dec)
    wrong_sam = re.escape(str(dec)) + r" holds a 'unet' checkpoint; expected a 'sam_decoder'"
    with pytest.raises(ValueError, match=wrong_sam):
        inference.load_sam_decoder(dec, backend=None)
    with pytest.raises(ValueError, match=wrong_sam):
        inference.load_models(RunDir(run), SPLIT)
    with pytest.raises(ValueError, match=wrong_sam):
        predictor.predictor_from_run(run, device="cpu")


def test_resolve_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert checkpoints.resolve_device("auto") == torch.device("cpu")
    assert checkpoints.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="device 'cuda:1' requested but CUDA is not available"):
        checkpoints.resolve_device("cuda:1")
