"""What makes two CPU trainings of the same code and config give different weights (issue 25, item 6).

Trains the same small U-Net (base 8, 64 px synthetic slices, augmentation on, 3 epochs, seed 0) once per variant,
each in a fresh process, and compares every variant's final weights and validation Dice with the baseline's:

  * baseline twice (same process settings): is a run reproducible on this machine at all?
  * torch threads 1 instead of the machine's count (reductions split differently);
  * oneDNN capped to an older instruction set (``ONEDNN_MAX_CPU_ISA``: AVX, SSE41): the kernels another CPU model
    would run (this machine has AVX2 without AVX-512; a machine with AVX-512 or AMX picks other kernels again);
  * channels_last memory format (other convolution kernels);
  * DataLoader workers 0 instead of 2 (augmentation random streams).

    python benchmarks/reproducibility.py                 # ~3-4 min on 2 cores
    python benchmarks/reproducibility.py --epochs 15 --variants "baseline;1 torch thread"  # ';'-separated

Writes benchmarks/results/reproducibility-cpu.json: per variant the weights' sha256, the largest absolute weight
difference from the baseline, and the validation Dice after each epoch.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {
    "baseline": {},
    "baseline, again": {},
    "1 torch thread": {"threads": 1},
    "oneDNN capped at AVX (no AVX2/FMA)": {"env": {"ONEDNN_MAX_CPU_ISA": "AVX"}},
    "oneDNN capped at SSE4.1": {"env": {"ONEDNN_MAX_CPU_ISA": "SSE41"}},
    "channels_last": {"channels_last": True},
    "DataLoader workers 0 (baseline: 2)": {"workers": 0},
}


def prepare(base: Path) -> tuple[Path, Path]:
    from brainseg_utils.data.brats import discover_cases
    from brainseg_utils.data.slices import SliceConfig, build_cache, write_split_once
    from brainseg_utils.data.synthetic import SyntheticConfig, generate_dataset

    root = generate_dataset(base / "ds", SyntheticConfig(cases=8, seed=3, depth=40), progress=False)
    cases = discover_cases(root)
    build_cache(cases, base / "slices", SliceConfig(img_size=64, tumour_free_fraction=0.3), progress=False)
    write_split_once(base / "splits.json", [c.case_id for c in cases], (0.6, 0.2, 0.2), seed=0)
    return base / "slices", base / "splits.json"


def worker(args) -> None:
    import numpy as np
    import torch

    from brainseg_utils.data.dataset import SliceDataset
    from brainseg_utils.data.slices import SliceCache, load_split
    from brainseg_utils.data.transforms import train_augmentation
    from brainseg_utils.models.unet import UNet
    from brainseg_utils.training.engine import TrainConfig, fit

    if args.threads:
        torch.set_num_threads(args.threads)
    cache, split = SliceCache.open(args.cache), load_split(args.split)
    tr = SliceDataset(cache, cache.rows_for(split["train"]), train_augmentation(0.5), seed=0)
    va = SliceDataset(cache, cache.rows_for(split["val"]))
    torch.manual_seed(0)
    model = UNet(base_channels=8)
    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=16,
        lr=2e-3,
        seed=0,
        progress=False,
        num_workers=args.workers,
        channels_last=args.channels_last,
        device="cpu",
    )
    hist = fit(model, tr, va, Path(args.out_dir), cfg)
    state = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    np.savez(Path(args.out_dir) / "weights.npz", **{k: v.numpy() for k, v in state.items()})
    digest = hashlib.sha256(b"".join(state[k].numpy().tobytes() for k in sorted(state))).hexdigest()
    print(
        json.dumps(
            {
                "sha256": digest,
                "threads": torch.get_num_threads(),
                "val_dice": [round(h["val_dice"], 6) for h in hist],
                "val_dice_tumour": [round(h["val_dice_tumour"], 6) for h in hist],
                "isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "default"),
            }
        )
    )


def max_diff(a: Path, b: Path) -> float:
    import numpy as np

    x, y = np.load(a), np.load(b)
    return float(max(np.abs(x[k] - y[k]).max() for k in x.files))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--variants", default="", help="';'-separated names of VARIANTS to run (default: all)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "reproducibility-cpu.json"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    ap.add_argument("--split", help=argparse.SUPPRESS)
    ap.add_argument("--out-dir", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=2, help=argparse.SUPPRESS)
    ap.add_argument("--channels-last", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return {}
    from brainseg_utils.runtime.io import atomic_write_json

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cache, split = prepare(Path(tmp))
        results = {}
        chosen = [n.strip() for n in args.variants.split(";") if n.strip()] or list(VARIANTS)
        unknown = [n for n in chosen if n not in VARIANTS]
        if unknown or "baseline" not in chosen:
            raise SystemExit(f"--variants: need 'baseline' and names from {list(VARIANTS)}; got {unknown or chosen}")
        for name in ["baseline", *[n for n in chosen if n != "baseline"]]:
            v = VARIANTS[name]
            out_dir = Path(tmp) / f"run{len(results)}"
            cmd = [sys.executable, __file__, "--worker", "--cache", str(cache), "--split", str(split)]
            cmd += ["--out-dir", str(out_dir), "--epochs", str(args.epochs), "--workers", str(v.get("workers", 2))]
            cmd += ["--threads", str(v.get("threads", 0))] + (["--channels-last"] if v.get("channels_last") else [])
            env = {**os.environ, **v.get("env", {})}
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            base = Path(tmp) / "run0" / "weights.npz"
            res["max_abs_weight_diff_vs_baseline"] = max_diff(base, out_dir / "weights.npz")
            res["identical_to_baseline"] = res["sha256"] == results.get("baseline", res)["sha256"]
            res["final_val_dice_minus_baseline"] = round(
                res["val_dice"][-1] - results.get("baseline", res)["val_dice"][-1], 6
            )
            results[name] = res
            print(f"{name:<40} identical {res['identical_to_baseline']!s:<5} max |dw| "
                  f"{res['max_abs_weight_diff_vs_baseline']:.2e}  val Dice {res['val_dice'][-1]:.4f}")  # fmt: skip
    out = {
        "what": "the same U-Net training (base 8, 64 px synthetic slices, augmentation, seed 0) in fresh processes "
        "under varied CPU settings; weights compared with the baseline's",
        "command": "python benchmarks/reproducibility.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "cpu_flags_simd": sorted(_simd_flags()),
        "date": time.strftime("%Y-%m-%d"),
        "epochs": args.epochs,
        "variants": results,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    atomic_write_json(Path(args.out), out)
    return out


def _simd_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return {f for f in flags if f.startswith(("avx", "amx", "sse4", "fma"))}


if __name__ == "__main__":
    main()
