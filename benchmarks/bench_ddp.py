"""Multi-process (DDP) training throughput: images/s of ``train.fit`` with 1 vs N processes.

    python benchmarks/bench_ddp.py                       # CPU 1 vs 2 processes; plus 1 vs every GPU if any
    python benchmarks/bench_ddp.py --cpu-only --size 64  # the CPU comparison alone
    python benchmarks/bench_ddp.py --out outputs/benchmarks/ddp.json --epochs 3 --images 512

What is timed: the real engine (``train.fit_processes``: DistributedSampler, DDP, AMP policy,
reductions, main-process checkpoint writes) on an in-memory random dataset of ``--images`` slices
of ``--size`` px, a U-Net of ``--base`` channels, ``--batch`` slices PER PROCESS (so the global batch
grows with the processes: weak scaling, how DDP is used). The figure is ``train_images_per_s`` of the
last epoch (epoch 1 warms up: cuDNN autotuning, allocator, thread pools), the global images of that
epoch over its training time; validation and file writes are excluded from it.

Groups written to the JSON (``results``): ``cpu`` (1 and 2 processes, gloo; under DDP the cores are split
between the processes) and, when CUDA is present, ``cuda`` (1 GPU and, with several visible, all of them via
NCCL). ``speedup`` = images/s with N / images/s with 1 in the same group. A CPU shared with other work
gives noisy, usually pessimistic CPU ratios: the JSON records the load average before and after.
On one H100 the default settings finish in well under 2 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from brainseg_utils.models.unet import UNet  # noqa: E402
from brainseg_utils.runtime.env import device_summary  # noqa: E402
from brainseg_utils.runtime.io import atomic_write_json  # noqa: E402
from brainseg_utils.training.engine import TrainConfig, fit_processes  # noqa: E402


def _dataset(n: int, size: int):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, size, size, generator=g)
    return torch.utils.data.TensorDataset(x, (x > 0.9).float())


def run_one(processes: int, device: str, args) -> dict:
    """Train ``args.epochs`` epochs on ``processes`` processes of ``device``; the last epoch's figures."""
    train_ds, val_ds = _dataset(args.images, args.size), _dataset(max(args.batch, 8), args.size)
    torch.manual_seed(0)
    model = UNet(base_channels=args.base, dropout=0.0)
    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch,
        lr=1e-4,
        seed=0,
        num_workers=0,
        progress=False,
        device=device,
        num_gpus=processes,
        resume="never",
    )
    with tempfile.TemporaryDirectory(prefix="bench_ddp_") as out:
        t0 = time.perf_counter()
        hist = fit_processes(model, train_ds, val_ds, out, cfg)
        wall = time.perf_counter() - t0
        meta = json.loads((Path(out) / "history.json").read_text())
    last = hist[-1]
    return {
        "processes": processes,
        "device": device,
        "per_process_batch": args.batch,
        "global_batch": meta["global_batch_size"],
        "amp_dtype": meta["amp_dtype"],
        "train_images_per_s": round(last["train_images_per_s"], 2),
        "epoch_train_seconds": round(args.images / last["train_images_per_s"], 3),
        "wall_seconds_incl_launch": round(wall, 2),
        "final_train_loss": round(last["train_loss"], 5),
    }


def group(device: str, counts: list[int], args) -> dict:
    rows = [run_one(n, device, args) for n in counts]
    base = rows[0]["train_images_per_s"]
    for r in rows:
        r["speedup"] = round(r["train_images_per_s"] / base, 3) if base else None
    return {"runs": rows}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(
        description="images/s of train.fit (U-Net) with 1 vs N DDP processes: CPU 1 vs 2 always, "
        "GPU 1 vs all visible GPUs when CUDA is present. Writes JSON.",
    )
    ap.add_argument("--out", default="outputs/benchmarks/ddp.json", help="JSON result file (default %(default)s)")
    ap.add_argument("--images", type=int, default=None, help="training slices per epoch (default 96 CPU / 2048 GPU)")
    ap.add_argument("--size", type=int, default=None, help="slice size in px (default 64 CPU / 240 GPU)")
    ap.add_argument("--base", type=int, default=None, help="U-Net base channels (default 8 CPU / 64 GPU)")
    ap.add_argument("--batch", type=int, default=None, help="slices per process per step (default 8 CPU / 16 GPU)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per run; the last one is timed (default 2)")
    ap.add_argument("--cpu-processes", type=int, default=2, help="CPU processes compared with one (default 2)")
    ap.add_argument("--cpu-only", action="store_true", help="skip the GPU group even when CUDA is present")
    ap.add_argument("--gpu-only", action="store_true", help="skip the CPU group")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    result = {"what": "train.fit_processes images/s, last of --epochs epochs; batch is per process"}
    result["settings"] = {"epochs": args.epochs}
    results = {}
    has_gpu = torch.cuda.is_available() and not args.cpu_only
    if not args.gpu_only:
        cpu_args = argparse.Namespace(**vars(args))
        for key, default in (("images", 96), ("size", 64), ("base", 8), ("batch", 8)):
            if getattr(cpu_args, key) is None:
                setattr(cpu_args, key, default)
        results["cpu"] = group("cpu", [1, args.cpu_processes], cpu_args)
        results["cpu"]["settings"] = {k: getattr(cpu_args, k) for k in ("images", "size", "base", "batch")}
        results["cpu"]["cpu_count"] = os.cpu_count()
    if has_gpu:
        gpu_args = argparse.Namespace(**vars(args))
        for key, default in (("images", 2048), ("size", 240), ("base", 64), ("batch", 16)):
            if getattr(gpu_args, key) is None:
                setattr(gpu_args, key, default)
        n = torch.cuda.device_count()
        results["cuda"] = group("cuda", [1, n] if n > 1 else [1], gpu_args)
        results["cuda"]["settings"] = {k: getattr(gpu_args, k) for k in ("images", "size", "base", "batch")}
        results["cuda"]["visible_gpus"] = n
        if n == 1:
            results["cuda"]["note"] = "one GPU visible: 1-GPU figure only (multi-GPU scaling not measured)"
    result["results"] = results
    result["environment"] = {
        **device_summary(),
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in os.getloadavg()],
    }
    atomic_write_json(Path(args.out), result)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
