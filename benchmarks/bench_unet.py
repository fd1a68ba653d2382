"""U-Net throughput: parameter count and images/s for training steps and inference.

    python benchmarks/bench_unet.py [--out outputs/benchmarks/unet.json] [--steps 5]

Sizes: "quick" (base 16 channels, 128 px, as configs/quick.yaml) and "full" (base 64, 240 px,
the original project). Training = forward + focal/Dice loss + backward + AdamW step at batch 8;
inference = forward under no_grad at batch 8. After one warm-up step, the median of ``--steps``
timed steps; on CUDA with ``torch.cuda.synchronize`` and for AMP off and on (fp16 or bf16 by the
device's capability, as training uses).
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from brainseg_utils.evaluation.latency import time_runs
from brainseg_utils.models.losses import FocalDiceLoss
from brainseg_utils.models.unet import UNet, count_parameters
from brainseg_utils.parameters import profile_configs
from brainseg_utils.runtime.checkpoints import amp_dtype
from brainseg_utils.runtime.env import device_summary
from brainseg_utils.runtime.io import atomic_write_json

# (U-Net base channels, image size) of each profile, read from the profiles themselves
SIZES = {
    name: (profile_configs(name).unet.base_channels, profile_configs(name).data.img_size) for name in ("quick", "full")
}


def bench(base: int, size: int, device: torch.device, amp: bool, steps: int, batch: int = 8) -> dict:
    torch.manual_seed(0)
    model = UNet(base_channels=base).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = FocalDiceLoss()
    dtype = amp_dtype(device, amp)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    x = torch.rand(batch, 1, size, size, device=device)
    y = (torch.rand(batch, 1, size, size, device=device) > 0.9).float()

    def train_step():
        model.train()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(x)
        loss = loss_fn(logits, y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    @torch.no_grad()
    def infer_step():
        model.eval()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            model(x)

    # seconds per step: median of evaluate.time_runs (ms, one warm-up, synchronised on CUDA)
    t_train, t_infer = (
        statistics.median(time_runs(fn, device, steps, warmup=1)) / 1000.0 for fn in (train_step, infer_step)
    )
    return {
        "base_channels": base,
        "img_size": size,
        "batch": batch,
        "parameters": count_parameters(model)["total"],
        "amp_dtype": str(dtype).replace("torch.", "") if dtype else "none",
        "train_images_per_s": round(batch / t_train, 2),
        "infer_images_per_s": round(batch / t_infer, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="outputs/benchmarks/unet.json")
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = {"device": device_summary(), "runs": []}
    for name, (base, size) in SIZES.items():
        for amp in [False, True] if device.type == "cuda" else [False]:
            r = {"profile": name, **bench(base, size, device, amp, args.steps)}
            results["runs"].append(r)
            print(json.dumps(r))
    atomic_write_json(args.out, results)


if __name__ == "__main__":
    main()
