"""Training-step time in fp32 vs bf16 autocast on the CPU: the quick profile's U-Net and SAM decoder.

    python benchmarks/bench_cpu_amp.py [--steps 3] [--out outputs/benchmarks/cpu_amp.json]

What ``checkpoints.train_amp_dtype`` decides: on a CPU with native bf16 (AVX-512 BF16 / AMX) the architectures in
``CPU_BF16_ARCHS`` (the SAM decoder) train under ``torch.autocast("cpu", bfloat16)``; the rest, and every model on
other CPUs, in fp32 (``engine_dtype`` records the choice per model). Each model is timed in both precisions in the
same process, interleaved step by step (fp32, bf16, fp32, ...), after one untimed step each, so a busy
machine slows both alike; ``speedup`` = median fp32 step / median bf16 step. A step is forward, focal+Dice
loss (float32), backward and an AdamW update, at the quick profile's sizes (U-Net width 16 at 128 px, batch 8;
LiteMedSAM decoder with box prompts on random embeddings, batch 4). On a CPU without native bf16 the bf16
column is still measured (oneDNN emulates it) and ``native_bf16`` says false: that is why the engine stays
fp32 there. Whether Dice holds is not timed here: see docs/benchmarks.md (bf16 training on a CPU).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from brainseg_utils.models.losses import FocalDiceLoss
from brainseg_utils.models.sam.backends import build_backend
from brainseg_utils.models.sam.decoder import SamDecoderModel
from brainseg_utils.models.unet import UNet
from brainseg_utils.runtime.checkpoints import cpu_has_native_bf16, train_amp_dtype
from brainseg_utils.runtime.env import device_summary
from brainseg_utils.runtime.io import atomic_write_json


def _unet(batch: int, size: int, width: int):
    model = UNet(1, width)
    x = torch.rand(batch, 1, size, size)
    y = torch.zeros(batch, 1, size, size)
    y[:, :, size // 4 : size // 2, size // 4 : size // 2] = 1
    return model, list(model.parameters()), (x,), y


def _sam_decoder(batch: int, size: int):
    model = SamDecoderModel(build_backend("litemedsam"), "box", size)
    e = torch.randn(batch, 256, 64, 64)
    boxes = torch.tensor([[size / 4, size / 4, size / 2, size / 2]]).repeat(batch, 1)
    y = torch.zeros(batch, 1, size, size)
    y[:, :, size // 4 : size // 2, size // 4 : size // 2] = 1
    return model, list(model.trainable_parameters()), (e, boxes), y


def bench(name: str, build, steps: int) -> dict:
    """Median seconds per training step in fp32 and bf16 (interleaved), and the ratio."""
    loss_fn = FocalDiceLoss()
    runs = {}
    for label, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        torch.manual_seed(0)
        model, params, inputs, target = build()
        runs[label] = (model.train(), torch.optim.AdamW(params, 1e-4), inputs, target, dtype)

    def step(model, opt, inputs, target, dtype) -> float:
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            logits = model(*inputs)
        loss = loss_fn(logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{name}: non-finite loss {float(loss)}")
        return time.perf_counter() - t0

    for run in runs.values():  # warm-up (oneDNN primitive creation)
        step(*run)
    times = {label: [] for label in runs}
    for _ in range(steps):
        for label, run in runs.items():
            times[label].append(step(*run))
    med = {label: statistics.median(t) for label, t in times.items()}
    return {
        "fp32_s_per_step": round(med["fp32"], 6),
        "bf16_s_per_step": round(med["bf16"], 6),
        "speedup": round(med["fp32"] / med["bf16"], 3),
        "steps": steps,
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3, help="timed steps per precision (default 3)")
    ap.add_argument("--unet-batch", type=int, default=8)
    ap.add_argument("--sam-batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=128, help="slice size in px (default 128, the quick profile)")
    ap.add_argument("--out", default="outputs/benchmarks/cpu_amp.json")
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error(f"--steps must be >= 1, got {args.steps}")
    res = {
        "env": device_summary(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": cpu_has_native_bf16(),
        "engine_dtype": {
            arch: str(train_amp_dtype(torch.device("cpu"), arch=arch)).replace("torch.", "")
            for arch in ("unet", "sam_decoder")
        },
        "unet": bench("unet", lambda: _unet(args.unet_batch, args.size, 16), args.steps),
        "sam_decoder": bench("sam_decoder", lambda: _sam_decoder(args.sam_batch, args.size), args.steps),
        "note": "interleaved in one process; on a shared machine compare the ratios, not the seconds",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, res)
    print(
        f"U-Net bf16 speedup {res['unet']['speedup']}x, SAM decoder {res['sam_decoder']['speedup']}x "
        f"(native bf16: {res['native_bf16']}) -> {args.out}"
    )
    return res


if __name__ == "__main__":
    main()
