"""Unit costs measured on the present device, cached per device, code version and settings.

Each cost is the median over a few timed repetitions after one warm-up, in seconds. Training is timed through
the product's own ``engine.fit`` (two epochs on a few in-memory slices, ``overheads.training_costs``):
``unet_epoch_train`` / ``unet_epoch_val`` per image (augmentation, loader, AMP, EMA, clipping included) and
``unet_epoch_fixed`` per epoch (checkpoints, history); the same three for the SAM decoder (``sam_epoch_*``).
Inference at the evaluation's batch: ``unet_infer`` (through the runtime evaluation uses, OpenVINO on a CPU;
``unet_first``: its conversion and first call), ``encoder`` per image at the cache's batch, ``encoder_b1`` at
batch 1 (latency, the demo), ``encoder_first`` (first-call compile), ``decoder_infer`` per image, ``sam_build``
(weights and runtime). Data: ``read_case`` (load + normalise one case), ``audit_case`` (validate it),
``metrics_slice`` (Dice, IoU, HD95 of one native slice), ``figure`` (one figure saved), ``eda_figures``
(notebook 01's case-reading figures), ``disk_write`` (s per byte, flushed). Fixed: ``notebook_start`` /
``notebook_cell`` (papermill executing a generated notebook), ``gradio_build`` (importing Gradio, building an app).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from brainseg_utils.plan import overheads as ov
from brainseg_utils.runtime.encoder_runtime import default_cache_dir
from brainseg_utils.runtime.env import code_version, device_summary
from brainseg_utils.runtime.io import atomic_write_json, canonical_sha256
from brainseg_utils.workflow.pipeline import KERNEL

REPEATS = 3
ASSUMED_BUILD_S = 10.0
EVAL_BATCH = 8  # evaluation.inference.predict_case's batch


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


def unet_costs(configs, channels: int, device: torch.device, measure_training: bool = True) -> dict:
    """Inference per image at the evaluation's batch (8) through the runtime evaluation uses (OpenVINO on a CPU)
    and its one-time conversion; augmentation per image; training through ``engine.fit`` (``overheads``)."""
    from brainseg_utils.runtime.encoder_runtime import RuntimeModule

    size = configs.data.img_size
    model = configs.unet.build(channels).to(device).eval()
    params = sum(p.numel() for p in model.parameters())
    augment = configs.unet.augmentation()
    image = np.random.rand(size, size, channels).astype(np.float32)
    mask = (np.random.rand(size, size) > 0.9).astype(np.uint8)
    aug = timed(lambda: [augment(image=image, mask=mask) for _ in range(8)]) / 8
    if not measure_training:  # a GPU that is not here: the reference replaces the rest
        return {"augment": aug, "unet_params": params, "unet_first": 0.0}
    x = torch.rand(EVAL_BATCH, channels, size, size, device=device)
    with tempfile.TemporaryDirectory(prefix="plan-unet-") as tmp, torch.no_grad():
        wrapped = RuntimeModule(model, None, {"checkpoint_sha256": f"plan-{time.time()}"}, tmp, label="unet").eval()
        t = time.perf_counter()
        wrapped(x)
        first = time.perf_counter() - t
        infer = timed(lambda: wrapped(x))
    out = {"unet_infer": infer / EVAL_BATCH, "unet_first": max(0.0, first - infer), "augment": aug}
    out["unet_params"] = params
    if measure_training:
        out.update(ov.unet_training(configs, channels, device))
    return out


def sam_costs(configs, channels: int, device: torch.device, measure_training: bool = True) -> dict:
    """The SAM backend the run would use: building it (weights, runtime), the encoder per image at the cache's
    batch and at batch 1 (latency, the demo), its first call, the decoder at the evaluation's batch, and
    decoder training through ``engine.fit``."""
    from brainseg_utils.models.sam.decoder import SamDecoderModel

    try:
        sam_cfg, choice = configs.sam.resolve()
    except FileNotFoundError:
        if measure_training:
            raise
        # planning for weights that are not on this machine (e.g. ViT-B on Kaggle): loading ~375 MB assumed
        why = f"sam_build {ASSUMED_BUILD_S} s assumed: no {configs.sam.backend} weights on this machine"
        return {"sam_build": ASSUMED_BUILD_S, "sam_backend": configs.sam.backend, "sam_runtime": "pytorch",
                "encoder_first": 0.0, "assumed": why}  # fmt: skip
    t = time.perf_counter()
    backend = choice.build().to(device)
    build = time.perf_counter() - t
    size, batch = configs.data.img_size, sam_cfg.encode_batch
    out = {"sam_build": build, "sam_backend": sam_cfg.backend, "sam_runtime": backend.runtime}
    if not measure_training:
        return {**out, "encoder_first": 0.0}
    images = torch.rand(max(batch, EVAL_BATCH), channels, size, size, device=device)
    t = time.perf_counter()
    backend.encode(images[:1])
    first = time.perf_counter() - t
    one = timed(lambda: backend.encode(images[:1]))
    encoder = timed(lambda: backend.encode(images[:batch])) / batch
    emb = backend.encode(images[:EVAL_BATCH])
    model = SamDecoderModel(backend, "box", size).to(device).eval()
    boxes = torch.tensor([[size * 0.3, size * 0.3, size * 0.6, size * 0.6]], device=device).expand(len(emb), 4)
    with torch.no_grad():
        decoder_infer = timed(lambda: model.low_res_logits(emb, boxes)) / len(emb)
    out.update(encoder=encoder, encoder_b1=one, encoder_first=max(0.0, first - one), decoder_infer=decoder_infer)
    out.update(ov.decoder_training(configs, backend, emb.detach(), device))
    return out


def data_costs(case, modalities: tuple[str, ...]) -> dict:
    from brainseg_utils.data import validate
    from brainseg_utils.data.volumes import load_case

    read = timed(lambda: load_case(case, modalities), repeats=1)
    audit = timed(lambda: validate.validate_case(case), repeats=1)
    return {"read_case": read, "audit_case": audit}


def disk_write(n_bytes: int = 64 * 1024**2) -> float:
    """Seconds per byte written and flushed to the cache folder's disk."""
    folder = default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    data = np.random.bytes(n_bytes)
    with tempfile.NamedTemporaryFile(dir=folder, prefix="plan-disk-") as f:
        t = time.perf_counter()
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
        return (time.perf_counter() - t) / n_bytes


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


def calibration_key(configs, device: torch.device, measure_training: bool = True) -> dict:
    """What a cost depends on: the device, torch, the code's commit and every setting but the epoch counts."""
    from dataclasses import asdict

    summary = device_summary()
    settings = {
        "data": [configs.data.img_size, list(configs.data.modalities)],
        "unet": asdict(configs.unet),
        "unet_train": {k: v for k, v in asdict(configs.unet_train).items() if k != "epochs"},
        "sam": [configs.sam.backend, configs.sam.checkpoint, configs.sam.encode_batch],
        "sam_train": {k: v for k, v in asdict(configs.sam_train).items() if k != "epochs"},
        "device": str(device),
        "training": measure_training,
    }
    return {
        "device": summary.get("gpu") or f"cpu x{torch.get_num_threads()}",
        "torch": torch.__version__,
        "code": code_version().get("commit"),
        "settings": canonical_sha256(json.loads(json.dumps(settings, default=str)))[:16],
    }


def eda_figures(cases: list) -> float:
    """Notebook 01's two case-reading figures as it draws them (intensity histograms of 6 cases, overlays of 3),
    on up to that many cases of the data found, scaled to 6 and 3 cases."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from brainseg_utils.evaluation import figures as viz

    hist, over = cases[:6], cases[:3]
    t = time.perf_counter()
    plt.close(viz.intensity_histograms(hist, "plan", n=len(hist)))
    per_hist = (time.perf_counter() - t) / len(hist)
    t = time.perf_counter()
    plt.close(viz.example_overlays(over, "plan", n=len(over)))
    per_over = (time.perf_counter() - t) / len(over)
    return 6 * per_hist + 3 * per_over


def calibrate(configs, case, device: torch.device, use_cache: bool = True, measure_training: bool = True) -> dict:
    """Unit costs for ``configs`` (``parameters.profile_configs``) on ``device``, reading ``case`` of the data.
    Cached in ``<cache dir>/plan/`` by device, torch, code commit and the settings that change a cost.
    ``case``: a labelled case, or a list of them (the first is read and audited; up to 6 draw notebook 01's
    figures).

    ``measure_training=False`` (a plan for a GPU that is not here) skips what the reference GPU's figures
    replace: U-Net and decoder training, the encoder and the decoder."""
    key = calibration_key(configs, device, measure_training)
    path = default_cache_dir() / "plan" / f"calibration-{canonical_sha256(key)[:16]}.json"
    if use_cache and path.is_file():
        return json.loads(path.read_text())
    cases = list(case) if isinstance(case, (list, tuple)) else [case]
    case = cases[0]
    channels = len(configs.data.modalities)
    t0 = time.perf_counter()
    costs = {
        **unet_costs(configs, channels, device, measure_training),
        **sam_costs(configs, channels, device, measure_training),
        **data_costs(case, tuple(configs.data.modalities)),
        "eda_figures": eda_figures(cases),
        **metric_and_figure_costs(),
        **ov.papermill_overhead(KERNEL),
        "gradio_build": ov.gradio_build(),
        "disk_write": disk_write(),
    }
    out = {"key": key, "costs": costs, "seconds": round(time.perf_counter() - t0, 1), "measured_on": key["device"]}
    atomic_write_json(path, out)
    return out
