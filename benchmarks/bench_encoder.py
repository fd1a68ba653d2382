"""Frozen SAM image encoder on CPU: ms per slice and embedding error per runtime and batch.

    python benchmarks/bench_encoder.py [--backend litemedsam] [--reps 3] [--slices 4]
                                       [--unet quick] [--out outputs/benchmarks/encoder.json]

Runtimes (batch 1 and 4 each):
  * ``pytorch_fp32``: the encoder under ``no_grad`` (the reference: speedup 1.0 at batch 1);
  * ``pytorch_inference_channels_last``: ``inference_mode`` + channels_last input and weights;
  * ``openvino_fp32``: ``encoder_runtime.OpenVinoRuntime`` (fp32 forced; an IR with a static batch
    of 1 or 4, converted once and cached in the default cache dir).
Inputs are real-looking slices: FLAIR of a synthetic BraTS case (``synthetic.generate_case``),
normalised and resized like the slice cache (128 px), then the backend's preprocessing.
Timing is interleaved: every repetition times each (runtime, batch) once on the same slices, and the
median over repetitions is reported, so a load change on a shared machine hits all configurations
alike. ``max_abs_diff``: largest |embedding - PyTorch fp32 batch 1 embedding| over the slices.
``--unet quick|full|none`` adds the same PyTorch-vs-OpenVINO comparison for U-Net inference
(random weights, batch 8 as evaluation uses).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from brainseg_utils.data.slices import resize_slice
from brainseg_utils.data.synthetic import SyntheticConfig, generate_case
from brainseg_utils.data.volumes import normalise_volume
from brainseg_utils.models.sam.backends import build_backend
from brainseg_utils.models.unet import UNet
from brainseg_utils.runtime.encoder_runtime import OpenVinoRuntime, openvino_version
from brainseg_utils.runtime.env import device_summary
from brainseg_utils.runtime.io import atomic_write_json

UNET_SIZES = {"quick": (16, 128), "full": (64, 240)}


def synthetic_slices(n: int, size: int = 128, seed: int = 0) -> torch.Tensor:
    """float32 (n, 1, size, size) in [0, 1]: tumour-bearing FLAIR slices of one synthetic case."""
    case = generate_case(SyntheticConfig(cases=1, seed=seed, depth=32), 0)
    flair, seg = normalise_volume(case["flair"]), case["seg"]
    zs = np.flatnonzero((seg > 0).any((0, 1)))
    zs = zs[np.linspace(0, len(zs) - 1, n).round().astype(int)]
    return torch.from_numpy(np.stack([resize_slice(flair[None, :, :, z], seg[:, :, z], size)[0] for z in zs]))


def _runners(backend, batches) -> dict:
    enc = backend.image_encoder.eval()
    size = backend.input_size
    cl = None

    def pytorch_fp32(x):
        with torch.no_grad():
            return enc(x)

    def pytorch_cl(x):
        nonlocal cl
        if cl is None:
            import copy

            cl = copy.deepcopy(enc).to(memory_format=torch.channels_last)
        with torch.inference_mode():
            return cl(x.contiguous(memory_format=torch.channels_last)).clone()

    out = {
        "pytorch_fp32": {b: pytorch_fp32 for b in batches},
        "pytorch_inference_channels_last": {b: pytorch_cl for b in batches},
    }
    if openvino_version() is not None:
        out["openvino_fp32"] = {
            b: OpenVinoRuntime(enc, (3, size, size), backend.runtime_key(), label=f"{backend.name}-encoder", batch=b)
            for b in batches
        }
    return out


def bench_encoder(name: str, n: int, reps: int, batches=(1, 4)) -> dict:
    backend = build_backend(name, random_init=(name != "litemedsam"), runtime="pytorch")
    x = backend.preprocess(synthetic_slices(n))  # (n, 3, S, S)
    runners = _runners(backend, batches)
    ref = torch.cat([runners["pytorch_fp32"][1](x[i : i + 1]) for i in range(n)])
    times = {(r, b): [] for r in runners for b in batches}
    embs = {}
    for r, b in times:  # warm-up (OpenVINO's first inference compiles kernels)
        runners[r][b](x[:b])
    for _ in range(reps):
        for r, b in times:
            t0 = time.perf_counter()
            embs[r, b] = torch.cat([runners[r][b](x[i : i + b]) for i in range(0, n, b)])
            times[r, b].append((time.perf_counter() - t0) / n)
    base = statistics.median(times["pytorch_fp32", 1])
    rows = []
    for (r, b), t in times.items():
        med = statistics.median(t)
        rows.append(
            {
                "runtime": r,
                "batch": b,
                "ms_per_slice": round(med * 1e3, 4),
                "ms_per_slice_runs": [round(v * 1e3, 4) for v in t],
                "speedup": round(base / med, 2),
                "max_abs_diff": float((embs[r, b] - ref).abs().max()),
            }
        )
        print(json.dumps(rows[-1]))
    return {
        "backend": name,
        "weights": "bundled" if name == "litemedsam" else "random (timing only)",
        "input_size": backend.input_size,
        "slices": n,
        "reps": reps,
        "runs": rows,
    }


def bench_unet(profile: str, reps: int, batch: int = 8) -> dict:
    base_ch, size = UNET_SIZES[profile]
    torch.manual_seed(0)
    net = UNet(1, base_ch).eval()
    x = synthetic_slices(batch, size)
    with torch.no_grad():
        ref = net(x)
    runners = {"pytorch_fp32": lambda v: net(v)}
    if openvino_version() is not None:
        runners["openvino_fp32"] = OpenVinoRuntime(
            net, (1, size, size), {"checkpoint_sha256": "random-init"}, label="unet"
        )
    times = {r: [] for r in runners}
    out = {}
    for r in runners:  # warm-up
        with torch.no_grad():
            runners[r](x[:1])
    for _ in range(reps):
        for r in runners:
            t0 = time.perf_counter()
            with torch.no_grad():
                out[r] = runners[r](x)
            times[r].append((time.perf_counter() - t0) / batch)
    base = statistics.median(times["pytorch_fp32"])
    rows = [
        {
            "runtime": r,
            "batch": batch,
            "ms_per_image": round(statistics.median(t) * 1e3, 1),
            "speedup": round(base / statistics.median(t), 2),
            "max_abs_diff": float((out[r] - ref).abs().max()),
        }
        for r, t in times.items()
    ]
    for row in rows:
        print(json.dumps({"unet": profile, **row}))
    return {
        "profile": profile,
        "base_channels": base_ch,
        "img_size": size,
        "weights": "random (timing only)",
        "runs": rows,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="litemedsam")
    ap.add_argument("--slices", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--unet", default="quick", choices=["quick", "full", "none"])
    ap.add_argument("--out", default="outputs/benchmarks/encoder.json")
    args = ap.parse_args(argv)
    results = {
        "device": device_summary(),
        "openvino": openvino_version(),
        "protocol": "interleaved repetitions, median; CPU; ms per slice including the runtime call only "
        "(preprocessing excluded)",
        "encoder": bench_encoder(args.backend, args.slices, args.reps),
    }
    if args.unet != "none":
        results["unet"] = bench_unet(args.unet, args.reps)
    atomic_write_json(args.out, results)
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
