"""The benchmark scripts run end to end on CPU and write the JSON they promise."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from brainseg_utils.models.sam import backends as sam
from brainseg_utils.models.sam.backends import SamBackend

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_check_cpu_small_end_to_end(tmp_path):
    """One command; a PASS line per check; the JSON holds every figure. (GPU figures need a GPU.)"""
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        [
            sys.executable,
            "benchmarks/gpu_check.py",
            "--cpu-small",
            "--out",
            str(out),
            "--workdir",
            str(tmp_path / "work"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = re.findall(r"^(PASS|FAIL) (\w+): ", proc.stdout, flags=re.M)
    names = [n for _, n in lines]
    assert all(status == "PASS" for status, _ in lines), proc.stdout
    assert names == [
        "amp_dtype",
        "unet_finite_losses",
        "unet_loss_falls",
        "unet_checkpoint_reloads",
        "unet_inference",
        "sam_finite_losses",
        "sam_loss_falls",
        "sam_checkpoint_reloads",
        "sam_wise_ft",
        "vit_b_encoder",
        "peak_memory",
    ]
    res = json.loads(out.read_text())
    assert res["profile"] == "cpu_small" and res["all_pass"] is True and res["amp_dtype"] is None
    assert [c["check"] for c in res["checks"]] == names
    assert res["unet_train"]["train_loss"][-1] < res["unet_train"]["train_loss"][0]
    assert res["unet_inference"]["images_per_s"] > 0 and res["unet_inference"]["channels_last"] is True
    assert res["vit_b_encoder"]["images_per_s"] > 0 and res["vit_b_encoder"]["target_images_per_s"] is None
    assert res["sam_train"]["encoder_runtime"] in ("openvino", "pytorch")
    assert set(res["peak_memory_gb"]) == {"unet_train", "unet_inference", "sam_train", "vit_b_encoder"}
    assert "ALL PASS" in proc.stdout


class _Tiny(SamBackend):
    """A 16-px stand-in backend: preprocessing resizes to 16, the encoder is two convolutions."""

    def __init__(self):
        torch.manual_seed(0)
        model = nn.Module()
        model.image_encoder = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GELU(), nn.Conv2d(8, 8, 3, padding=1))
        model.prompt_encoder, model.mask_decoder = nn.Identity(), nn.Identity()
        super().__init__("tiny", model, 16, "tiny: 3ch, resize 16", "e" * 64)

    def preprocess(self, images):
        return sam._resize(self.three_channels(images.float()), 16)


def test_bench_encoder_json(tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    monkeypatch.setenv("BRAINSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(sam.BACKENDS, "tiny", lambda checkpoint=None, random_init=False: _Tiny())
    bench = _load("bench_encoder")
    out = tmp_path / "encoder.json"
    res = bench.main(["--backend", "tiny", "--slices", "4", "--reps", "2", "--unet", "none", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    runs = {(r["runtime"], r["batch"]): r for r in res["encoder"]["runs"]}
    assert set(runs) == {
        (r, b) for r in ("pytorch_fp32", "pytorch_inference_channels_last", "openvino_fp32") for b in (1, 4)
    }
    assert runs["pytorch_fp32", 1]["speedup"] == 1.0 and runs["pytorch_fp32", 1]["max_abs_diff"] == 0.0
    for r in runs.values():
        assert r["ms_per_slice"] > 0 and len(r["ms_per_slice_runs"]) == 2 and r["max_abs_diff"] < 1e-4
    assert len(list((tmp_path / "cache" / "openvino").iterdir())) == 2, "one IR per static batch (1 and 4)"


def test_synthetic_slices_look_like_the_slice_cache():
    x = _load("bench_encoder").synthetic_slices(3, size=32)
    assert x.shape == (3, 1, 32, 32) and x.dtype == torch.float32
    assert float(x.min()) >= 0 and float(x.max()) <= 1 and float(x.max()) > 0.5


def test_bench_cpu_amp_json(tmp_path):
    bench = _load("bench_cpu_amp")
    out = tmp_path / "cpu_amp.json"
    res = bench.main(["--steps", "1", "--size", "32", "--unet-batch", "2", "--sam-batch", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    from brainseg_utils.runtime.checkpoints import cpu_has_native_bf16

    assert res["native_bf16"] is cpu_has_native_bf16()
    assert res["engine_dtype"] == {"unet": "None", "sam_decoder": "bfloat16" if res["native_bf16"] else "None"}
    for model in ("unet", "sam_decoder"):
        r = res[model]
        assert r["fp32_s_per_step"] > 0 and r["bf16_s_per_step"] > 0 and r["steps"] == 1
        ratio = r["fp32_s_per_step"] / r["bf16_s_per_step"]
        assert r["speedup"] == pytest.approx(ratio, rel=0.01, abs=5e-4)  # rounded to 3 decimals
    with pytest.raises(SystemExit):
        bench.main(["--steps", "0", "--out", str(out)])
