"""Unit costs measured on the present device (a few seconds), cached per device, code version and settings.

Each cost is the median over a few timed repetitions after one warm-up, in seconds:
``unet_train`` / ``unet_infer`` per image at the profile's size, width and batch; ``encoder`` per image
(the SAM backend the run would use, through its runtime: OpenVINO on CPU, fp16 autocast on CUDA);
``decoder_train`` / ``decoder_infer`` per image; ``read_case`` (load + normalise one case of the data
found) and ``audit_case`` (validate one case); ``metrics_slice`` (Dice, IoU, HD95 of one native slice);
``figure`` (one matplotlib figure saved); ``startup`` (a fresh interpreter importing torch and the
package, as a notebook kernel does).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from brainseg_utils.runtime.encoder_runtime import default_cache_dir
from brainseg_utils.runtime.env import code_version, device_summary
from brainseg_utils.runtime.io import atomic_write_json, canonical_sha256

REPEATS = 3


def timed(fn, repeats: int = REPEATS) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up run."""
    fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def unet_costs(configs, channels: int, device: torch.device) -> dict:
    from brainseg_utils.models.losses import FocalDiceLoss

    size, batch = configs.data.img_size, configs.unet_train.batch_size
    model = configs.unet.build(channels).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = FocalDiceLoss()
    x = torch.rand(batch, channels, size, size, device=device)
    y = (torch.rand(batch, 1, size, size, device=device) > 0.9).float()
    dtype = _amp(device, configs.unet_train.amp)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    train = timed(step) / batch
    params = sum(p.numel() for p in model.parameters())
    augment = configs.unet.augmentation()
    image = np.random.rand(size, size, channels).astype(np.float32)
    mask = (np.random.rand(size, size) > 0.9).astype(np.uint8)
    aug = timed(lambda: [augment(image=image, mask=mask) for _ in range(8)]) / 8
    model.eval()
    with torch.no_grad():
        infer = timed(lambda: model(x)) / batch
    return {"unet_train": train, "unet_infer": infer, "augment": aug, "unet_params": params}


def _amp(device: torch.device, enabled: bool):
    from brainseg_utils.runtime.checkpoints import amp_dtype

    return amp_dtype(device, enabled) if device.type == "cuda" else None


def sam_costs(configs, channels: int, device: torch.device) -> dict:
    from brainseg_utils.models.losses import FocalDiceLoss
    from brainseg_utils.models.sam.decoder import SamDecoderModel

    sam_cfg, choice = configs.sam.resolve()
    backend = choice.build().to(device)
    size, batch = configs.data.img_size, sam_cfg.encode_batch
    images = torch.rand(batch, channels, size, size, device=device)
    encoder = timed(lambda: backend.encode(images), repeats=2) / batch
    emb = backend.encode(images[:1]).expand(configs.sam_train.batch_size, -1, -1, -1).contiguous()
    model = SamDecoderModel(backend, "box", size).to(device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    boxes = torch.tensor([[size * 0.3, size * 0.3, size * 0.6, size * 0.6]], device=device).expand(len(emb), 4)
    target = (torch.rand(len(emb), 1, size, size, device=device) > 0.9).float()
    loss_fn = FocalDiceLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(emb, boxes), target).backward()
        opt.step()

    decoder_train = timed(step) / len(emb)
    with torch.no_grad():
        decoder_infer = timed(lambda: model(emb, boxes)) / len(emb)
    return {
        "encoder": encoder,
        "decoder_train": decoder_train,
        "decoder_infer": decoder_infer,
        "sam_backend": sam_cfg.backend,
        "sam_runtime": backend.runtime,
    }


def data_costs(case, modalities: tuple[str, ...]) -> dict:
    from brainseg_utils.data import validate
    from brainseg_utils.data.volumes import load_case

    read = timed(lambda: load_case(case, modalities), repeats=1)
    audit = timed(lambda: validate.validate_case(case), repeats=1)
    return {"read_case": read, "audit_case": audit}


def metric_and_figure_costs() -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from brainseg_utils.evaluation.metrics import all_metrics

    gt = np.zeros((240, 240), bool)
    gt[90:150, 80:140] = True
    pred = np.roll(gt, 6, axis=0)
    metric = timed(lambda: all_metrics(pred, gt, (1.0, 1.0)))

    def figure():
        fig, axes = plt.subplots(2, 4, figsize=(12, 6))
        for ax in axes.flat:
            ax.imshow(np.random.rand(240, 240), cmap="gray")
        with tempfile.TemporaryDirectory() as tmp:
            fig.savefig(Path(tmp) / "f.png", dpi=110)
        plt.close(fig)

    return {"metrics_slice": metric, "figure": timed(figure, repeats=1)}


def startup_cost() -> float:
    """A fresh interpreter importing what a notebook kernel imports (torch, the package, matplotlib, pandas)."""
    code = "import torch, pandas, matplotlib.pyplot, brainseg_utils.evaluation.evaluate, brainseg_utils.training.engine"
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - t


def calibration_key(configs, device: torch.device) -> dict:
    summary = device_summary()
    return {
        "device": summary.get("gpu") or f"cpu x{torch.get_num_threads()}",
        "torch": torch.__version__,
        "code": code_version().get("commit"),
        "settings": canonical_sha256(
            {
                "size": configs.data.img_size,
                "modalities": list(configs.data.modalities),
                "unet": [configs.unet.base_channels, configs.unet.bilinear, configs.unet_train.batch_size],
                "amp": configs.unet_train.amp,
                "sam": [configs.sam.backend, configs.sam.encode_batch, configs.sam_train.batch_size],
                "device": str(device),
            }
        )[:16],
    }


def calibrate(configs, case, device: torch.device, use_cache: bool = True) -> dict:
    """Unit costs for ``configs`` (``parameters.profile_configs``) on ``device``, reading ``case`` of the data.
    Cached in ``<cache dir>/plan/`` by device, torch, code commit and the settings that change a cost."""
    key = calibration_key(configs, device)
    path = default_cache_dir() / "plan" / f"calibration-{canonical_sha256(key)[:16]}.json"
    if use_cache and path.is_file():
        return json.loads(path.read_text())
    channels = len(configs.data.modalities)
    t0 = time.perf_counter()
    costs = {
        **unet_costs(configs, channels, device),
        **sam_costs(configs, channels, device),
        **data_costs(case, tuple(configs.data.modalities)),
        **metric_and_figure_costs(),
        "startup": startup_cost(),
    }
    out = {"key": key, "costs": costs, "seconds": round(time.perf_counter() - t0, 1), "measured_on": key["device"]}
    atomic_write_json(path, out)
    return out
