"""Decoder-training epoch with the embedding cache vs recomputing the frozen encoder.

    python benchmarks/bench_sam.py [--backends litemedsam vit_b] [--slices 8] [--batch 4]
                                   [--runtime auto] [--out outputs/benchmarks/sam.json]

Same slices, same process, same decoder: one epoch where each batch reads cached embeddings
(float16 memmap, as training does) and one where each batch first runs the frozen image encoder
under no_grad. Both then run the decoder forward, focal+Dice loss, backward and an AdamW step.
``vit_b`` uses random weights (timing only: no checkpoint can be downloaded here). The cache
build time (one encoder pass per slice) is reported too: it is paid once, not per epoch.
The encoder runs through the backend's runtime (``--runtime``: "auto" = OpenVINO fp32 on CPU when
installed, PyTorch on CUDA; recorded as ``encoder_runtime``); one encode before any timing pays the
OpenVINO conversion/compilation, which is not part of an epoch.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from brainseg_utils.models.losses import FocalDiceLoss
from brainseg_utils.models.sam.backends import build_backend
from brainseg_utils.models.sam.decoder import SamDecoderModel
from brainseg_utils.runtime.env import device_summary
from brainseg_utils.runtime.io import atomic_write_json
from brainseg_utils.training.embeddings import EMBED_SHAPE


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(name: str, n: int, batch: int, size: int, device: torch.device, runtime: str = "auto") -> dict:
    backend = build_backend(name, random_init=(name != "litemedsam"), runtime=runtime).to(device)
    model = SamDecoderModel(backend, "box", size).to(device)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4)
    loss_fn = FocalDiceLoss()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, size, size, generator=g)
    masks = torch.zeros(n, 1, size, size)
    masks[:, :, size // 4 : size // 2, size // 4 : size // 2] = 1
    boxes = torch.tensor([[size // 4, size // 4, size // 2 - 1, size // 2 - 1]], dtype=torch.float32).expand(n, 4)

    def step(emb, i):
        logits = model(emb, boxes[i : i + batch].to(device))
        loss = loss_fn(logits, masks[i : i + batch].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    backend.encode(images[:1].to(device))  # warm-up: OpenVINO converts or loads its IR here
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "emb.f16"
        _sync(device)
        t0 = time.perf_counter()
        store = np.memmap(path, np.float16, "w+", shape=(n, *EMBED_SHAPE))
        for i in range(0, n, batch):
            store[i : i + batch] = backend.encode(images[i : i + batch].to(device)).float().cpu().numpy()
        store.flush()
        _sync(device)
        build = time.perf_counter() - t0
        cached = np.memmap(path, np.float16, "r", shape=(n, *EMBED_SHAPE))
        model.train()
        step(torch.from_numpy(np.asarray(cached[:batch], np.float32)).to(device), 0)  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            step(torch.from_numpy(np.asarray(cached[i : i + batch], np.float32)).to(device), i)
        _sync(device)
        t_cached = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            emb = backend.encode(images[i : i + batch].to(device))
            step(emb, i)
        _sync(device)
        t_recompute = time.perf_counter() - t0
    return {
        "backend": name,
        "weights": "bundled" if name == "litemedsam" else "random (timing only)",
        "slices": n,
        "batch": batch,
        "img_size": size,
        "input_size": backend.input_size,
        "encoder_runtime": backend.runtime,
        "cache_build_s_per_slice": round(build / n, 3),
        "epoch_cached_s_per_slice": round(t_cached / n, 3),
        "epoch_recompute_s_per_slice": round(t_recompute / n, 3),
        "speedup_cached_vs_recompute": round(t_recompute / t_cached, 2),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backends", nargs="+", default=["litemedsam", "vit_b"])
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--runtime", default="auto", choices=["auto", "pytorch", "openvino"])
    ap.add_argument("--out", default="outputs/benchmarks/sam.json")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = {"device": device_summary(), "runs": []}
    for name in args.backends:
        r = bench(name, args.slices, args.batch, args.size, device, args.runtime)
        results["runs"].append(r)
        print(json.dumps(r))
    atomic_write_json(args.out, results)
    return results


if __name__ == "__main__":
    main()
