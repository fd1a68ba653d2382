"""Latency of every model variant: batch 1, warm-up runs, ``torch.cuda.synchronize`` around each run on a GPU; a
run times a variant's whole pipeline (slice in, native-grid mask on the host); median and p90 over the runs, and
the SAM encoder / decoder split as extra columns."""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from brainseg_utils.evaluation.cascade import component_boxes
from brainseg_utils.evaluation.inference import Models, to_native


def time_runs(fn, device: torch.device, n_runs: int = 20, warmup: int = 3) -> list[float]:
    """Milliseconds per call of ``fn`` after ``warmup`` calls; synchronised on CUDA."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n_runs):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def _stats(ms: list[float]) -> dict:
    return {"median": float(statistics.median(ms)), "p90": float(np.percentile(ms, 90)), "n_runs": len(ms)}


def pipelines(models: Models, x: torch.Tensor, box: torch.Tensor, native_hw: tuple[int, int]) -> dict:
    """One callable per model variant: the whole batch-1 pipeline, slice tensor ``x`` (1, C, S, S) on the
    device -> boolean native-grid mask (h, w) on the host. ``box``: (1, 4) ground-truth box on the device."""
    h, w = native_hw
    unet, dev = models.unet, x.device

    def unet_mask():
        return to_native(unet(x)[:, 0], h, w)[0]

    out = {"unet": unet_mask}
    for bname, decoders in models.sam.items():
        backend = models.backends[bname]

        def sam(dec, bx, backend=backend):
            return to_native(dec.low_res_logits(backend.encode(x), bx)[:, 0], h, w)[0]

        def cascade(dec, backend=backend):
            small = (unet(x)[0, 0] > 0).cpu().numpy()  # device -> host, then a box per component
            b = component_boxes(small)
            if np.isnan(b).all():  # the U-Net found nothing: SAM is not run
                return np.zeros((h, w), bool)
            return sam(dec, torch.from_numpy(b)[None].to(dev), backend)

        if "none" in decoders:
            out[f"sam_{bname}_none"] = lambda d=decoders["none"]: sam(d, None)
        if "box" in decoders:
            out[f"sam_{bname}_box"] = lambda d=decoders["box"]: sam(d, box)
            out[f"sam_{bname}_unet_box"] = lambda d=decoders["box"]: cascade(d)
        if "box_zeroshot" in decoders:
            out[f"sam_{bname}_box_zeroshot"] = lambda d=decoders["box_zeroshot"]: sam(d, box)
    return out


@torch.no_grad()
def measure_latency(
    models: Models,
    sample: np.ndarray,
    sample_box: np.ndarray | None,
    native_hw: tuple[int, int],
    device,
    n_runs: int = 20,
    warmup: int = 3,
) -> dict:
    """Batch-1 latency per model (see module docstring). ``sample``: float32 (C, S, S) slice in [0, 1];
    ``sample_box``: its ground-truth XYXY box (or None: a centred box is used)."""
    device = torch.device(device)
    x = torch.from_numpy(np.ascontiguousarray(sample, np.float32))[None].to(device)
    size = x.shape[-1]
    b = sample_box if sample_box is not None else np.array([0.3, 0.3, 0.6, 0.6], np.float32) * size
    box = torch.as_tensor(np.asarray(b, np.float32))[None].to(device)
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    res = {}
    unet_rt = getattr(models.unet, "runtime", "pytorch")
    for name, fn in pipelines(models, x, box, native_hw).items():
        bname = next((b for b in models.sam if name.startswith(f"sam_{b}_")), None)
        runtime = unet_rt if bname is None else getattr(models.backends[bname], "runtime", "pytorch")
        if name.endswith("_unet_box"):
            runtime = f"{runtime} (U-Net: {unet_rt})"
        res[name] = {
            **_stats(time_runs(fn, device, n_runs, warmup)),
            "device": dev_name,
            "runtime": runtime,
            "note": "whole pipeline per run, end to end",
        }
    for bname, decoders in models.sam.items():  # the encoder / decoder split (extra columns)
        backend = models.backends[bname]
        emb = backend.encode(x)
        enc = _stats(time_runs(lambda b=backend: b.encode(x), device, n_runs, warmup))
        for prompt, dec in decoders.items():
            bx = None if prompt == "none" else box
            dec_ms = _stats(time_runs(lambda d=dec, bx=bx, e=emb: d.low_res_logits(e, bx), device, n_runs, warmup))
            for name in [f"sam_{bname}_{prompt}"] + ([f"sam_{bname}_unet_box"] if prompt == "box" else []):
                res[name].update(encoder_ms=enc, decoder_ms=dec_ms)
    return res
