"""Latency of every model variant: batch 1, warm-up runs, ``torch.cuda.synchronize`` around each run on a GPU; a
run times a variant's whole pipeline (slice in, native-grid mask on the host); median and p90 over the runs, and
the SAM encoder / decoder split as extra columns."""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from brainseg_utils.evaluation.cascade import component_boxes
from brainseg_utils.evaluation.grid import to_native
from brainseg_utils.evaluation.inference import Models


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


def precision_of(models: Models, name: str) -> str:
    """The arithmetic a variant runs in: the U-Net fp32 everywhere; SAM's decoder fp32, its encoder fp32 on a CPU
    and the backend's autocast dtype on CUDA (``SamBackend.precision``)."""
    bname = next((b for b in sorted(models.sam, key=len, reverse=True) if name.startswith(f"sam_{b}_")), None)
    if bname is None:
        return "fp32"
    sam = f"encoder {models.backends[bname].precision}, decoder fp32"
    return f"U-Net fp32, {sam}" if name.endswith("_unet_box") else sam


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
            "precision": precision_of(models, name),
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


def volume_costs(record: dict, n_slices: int, memory: str = "") -> dict:
    """Per model, one whole volume's cost from the stages of its real prediction (``stopwatch.Stages.record`` of
    ``inference.predict_case``): ``{name: {"seconds", "slices", "peak_mb", "memory"}}``. A SAM variant's share of its
    backend's encoder pass is the encoder's time x (slices it decodes / slices encoded); ``unet_box`` adds the U-Net
    and the clean-up; peak memory is the largest of its stages' added peaks (None when none was measured)."""

    def total(*names, encoder=None, rows=0):
        parts = [record[k] for k in names if k in record]
        seconds = sum(p["seconds"] for p in parts)
        if encoder in record and record[encoder].get("slices"):
            enc = record[encoder]
            seconds += enc["seconds"] * rows / enc["slices"]
            parts.append(enc)
        peaks = [p["peak_mb"] for p in parts if p.get("peak_mb") is not None]
        peak = max(peaks) if peaks else None
        return {"seconds": round(seconds, 3), "slices": n_slices, "peak_mb": peak, "memory": memory}

    out = {}
    if "unet" in record:
        out["unet"] = total("unet")
    if "clean" in record:
        out["unet_clean"] = total("unet", "clean")
    for name, rec in record.items():
        if not name.startswith("sam_"):
            continue
        bname = name.removeprefix("sam_").rsplit("_", 2 if name.endswith(("_unet_box", "_box_zeroshot")) else 1)[0]
        cascade = ("unet", "clean") if name.endswith("_unet_box") else ()
        out[name] = total(*cascade, name, encoder=f"encode {bname}", rows=rec.get("slices", 0))
    return out


def speed_table(metrics: dict):
    """Per model (metrics.json's ``models``): batch-1 median / p90 ms, the SAM encoder / decoder split, precision,
    one whole volume's seconds and slices and the peak memory it added; None where a model has no such record
    (``unet_clean``: no batch-1 latency; oracle variants: no per-volume run)."""
    import pandas as pd

    rows = {}
    for name, m in metrics["models"].items():
        lat, vol = m.get("latency_ms") or {}, m.get("volume") or {}
        rows[name] = {
            "median ms": lat.get("median"),
            "p90 ms": lat.get("p90"),
            "encoder ms": (lat.get("encoder_ms") or {}).get("median"),
            "decoder ms": (lat.get("decoder_ms") or {}).get("median"),
            "precision": lat.get("precision"),
            "per volume s": vol.get("seconds"),
            "volume slices": vol.get("slices"),
            "peak MB added": vol.get("peak_mb"),
            "device": lat.get("device"),
        }
    return pd.DataFrame(rows).T


SPEED_DIGITS = {"median ms": 1, "p90 ms": 1, "encoder ms": 1, "decoder ms": 1, "per volume s": 2,
                "volume slices": 0, "peak MB added": 0}  # fmt: skip


def speed_table_text(metrics: dict):
    """``speed_table`` as notebook 04 shows it: numbers rounded (``SPEED_DIGITS``), "n/a" where a model has no such
    record (strings; ``speed_table`` keeps the numbers)."""
    table = speed_table(metrics)

    def fmt(value, digits):
        if value is None or (isinstance(value, float) and value != value):
            return "n/a"
        return f"{float(value):.{digits}f}" if digits is not None else str(value)

    return table.apply(lambda col: col.map(lambda v: fmt(v, SPEED_DIGITS.get(col.name))))
