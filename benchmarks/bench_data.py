"""Data-layer timings: synthetic generation per case, slice-cache build, slice read throughput.

    python benchmarks/bench_data.py [--cases 6] [--out outputs/benchmarks/data.json]

Writes JSON. Reads compared (random slices, same machine, warm page cache):
  * cache:         one row from the memmapped slice cache (normalised, resized, with mask);
  * nifti_slice:   FLAIR + seg axial slice read through nibabel's proxy (raw intensities:
                   a lower bound, since per-volume normalisation needs the whole volume);
  * nifti_volume:  what a cache-less Dataset does per item: load + validate + normalise the
                   volume (volumes.load_case) and cut the slice.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from brainseg_utils.data.brats import discover_cases
from brainseg_utils.data.slices import SliceConfig, build_cache
from brainseg_utils.data.synthetic import SyntheticConfig, generate_case, generate_dataset
from brainseg_utils.data.volumes import load_case
from brainseg_utils.runtime.io import atomic_write_json


def _rate(fn, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=6)
    ap.add_argument("--img-size", type=int, default=128)
    ap.add_argument("--out", default="outputs/benchmarks/data.json")
    args = ap.parse_args()
    res: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "dataset": "synthetic",
        "depth": 155,
        "img_size": args.img_size,
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = SyntheticConfig(cases=args.cases, seed=0)
        t0 = time.perf_counter()
        generate_case(cfg, 0)
        res["generate_case_arrays_s"] = round(time.perf_counter() - t0, 2)
        for workers in (1, os.cpu_count() or 1):
            t0 = time.perf_counter()
            generate_dataset(tmp / f"ds{workers}", cfg, workers=workers, progress=False)
            dt = time.perf_counter() - t0
            res[f"generate_dataset_workers{workers}"] = {
                "seconds": round(dt, 2),
                "seconds_per_case": round(dt / args.cases, 2),
            }
        root = tmp / "ds1"
        cases = discover_cases(root)
        t0 = time.perf_counter()
        cache = build_cache(cases, tmp / "slices", SliceConfig(img_size=args.img_size), progress=False)
        res["cache_build"] = {
            "seconds": round(time.perf_counter() - t0, 2),
            "slices": len(cache),
            "cases": len(cases),
            "seconds_per_case": round((time.perf_counter() - t0) / len(cases), 2),
        }
        t0 = time.perf_counter()
        build_cache(cases, tmp / "slices", SliceConfig(img_size=args.img_size), progress=False)
        res["cache_reuse_seconds"] = round(time.perf_counter() - t0, 4)

        rng = np.random.default_rng(0)
        rows = rng.integers(0, len(cache), 5000)
        idx = cache.index
        pick = [(cases[[c.case_id for c in cases].index(idx.case_id[r])], int(idx.z[r])) for r in rows[:200]]

        def from_cache(i):
            r = rows[i]
            return np.asarray(cache.images[r], np.float32), np.asarray(cache.masks[r])

        def from_nifti_slice(i):
            case, z = pick[i]
            img = np.asarray(nib.load(case.images["flair"]).dataobj[:, :, z], np.float32)
            return img, np.asarray(nib.load(case.seg).dataobj[:, :, z]) > 0

        def from_nifti_volume(i):
            case, z = pick[i]
            vol = load_case(case)
            return vol["image"][..., z], vol["wt"][..., z]

        res["read_slices_per_s"] = {
            "cache": round(_rate(from_cache, 5000), 1),
            "nifti_slice": round(_rate(from_nifti_slice, 200), 1),
            "nifti_volume": round(_rate(from_nifti_volume, 20), 2),
        }
        r = res["read_slices_per_s"]
        res["cache_speedup"] = {
            "vs_nifti_slice": round(r["cache"] / r["nifti_slice"], 1),
            "vs_nifti_volume": round(r["cache"] / r["nifti_volume"], 1),
        }
    atomic_write_json(args.out, res)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
