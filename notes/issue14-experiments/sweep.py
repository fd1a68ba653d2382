"""Issue 14 sweep: several bench_transfer variants in parallel (a lent GPU, or the CPU), shared datasets.

    python notes/issue14-experiments/sweep.py --real DIR --work DIR --out DIR [--jobs 4] [--threads 3] VARIANT...

VARIANT: ``name:seed:free_sampling:tumour_free_fraction[:extra bench args, comma-separated]``, e.g.
``strat06:0:stratified:0.6`` or ``e24:0:random:0.3:--epochs,24``. Each variant gets its own work folder (its slice
cache and U-Net) with the seed's synthetic train / extra datasets linked in (generated once, many workers).
``free_sampling`` is passed to slices.select_slices through BRAINSEG_EXP_FREE: an experiment switch that exists only
with ``stratified-free-slices.patch`` applied (removed after the 2026-11-27 sweep: no gain); ``random`` is the package.
Writes OUT/NAME.json (bench_transfer's JSON) and OUT/NAME.log, then a summary table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))


def pregenerate(shared: Path, seed: int, cases: int, extra: int, depth: int, workers: int) -> None:
    import bench_transfer as bt

    real_gen = bt.generate_dataset  # bench_transfer generates with 2 workers; here with ``workers``
    bt.generate_dataset = lambda out, cfg, **_: real_gen(out, cfg, workers=workers, progress=False)
    try:
        bt.synthetic_data(shared / f"seed{seed}", cases, seed, depth, "train")
        if extra:
            bt.synthetic_data(shared / f"seed{seed}", extra, seed + 1000, depth, "extra")
    finally:
        bt.generate_dataset = real_gen


def run_variant(spec: str, a) -> dict:
    name, seed, sampling, tf, *rest = spec.split(":")
    extra_args = rest[0].split(",") if rest else []
    work = Path(a.work) / name
    work.mkdir(parents=True, exist_ok=True)
    for tag in ("train", "extra"):
        link = work / f"synthetic-{tag}"
        if not link.is_symlink():
            link.symlink_to(Path(a.work).resolve() / "_shared" / f"seed{seed}" / f"synthetic-{tag}")
    out = Path(a.out) / f"{name}.json"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "bench_transfer.py"),
        "--out",
        str(out),
        "--work",
        str(work),
        "--realanatomy",
        a.real,
        "--seed",
        seed,
        "--tumour-free-fraction",
        tf,
        "--threads",
        str(a.threads),
        "--cases",
        str(a.cases),
        "--depth",
        str(a.depth),
        "--extra-cases",
        str(a.extra),
        "--real-cases",
        str(a.real_cases),
        "--label",
        f"sweep {spec}",
        *a.bench_args,
        *extra_args,
    ]
    env = {**os.environ, "BRAINSEG_EXP_FREE": sampling}
    t0 = time.perf_counter()
    with open(Path(a.out) / f"{name}.log", "w") as log:
        rc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    res = {"name": name, "spec": spec, "rc": rc, "seconds": round(time.perf_counter() - t0, 1)}
    if rc == 0:
        j = json.loads(out.read_text())
        r = j["results"]
        res.update(
            real=r["realanatomy"]["unet"]["mean"],
            test=r["synthetic_test"]["unet"]["mean"],
            extra=r.get("synthetic_extra", {}).get("unet", {}).get("mean"),
            train_slices=j["training"]["train_slices"],
        )
    print(json.dumps(res), flush=True)
    return res


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--real", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--jobs", type=int, default=4)
    p.add_argument("--threads", type=int, default=3)
    p.add_argument("--gen-workers", type=int, default=os.cpu_count() or 2)
    p.add_argument("--cases", type=int, default=16)
    p.add_argument("--extra", type=int, default=6)
    p.add_argument("--depth", type=int, default=80)
    p.add_argument("--real-cases", type=int, default=12)
    p.add_argument("--bench-args", default="", help="comma-separated, passed to every variant")
    p.add_argument("variants", nargs="+")
    a = p.parse_args()
    a.bench_args = [x for x in a.bench_args.split(",") if x]
    Path(a.out).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for seed in sorted({int(v.split(":")[1]) for v in a.variants}):
        pregenerate(Path(a.work) / "_shared", seed, a.cases, a.extra, a.depth, a.gen_workers)
    import realanatomy

    realanatomy.build(a.real, a.real_cases, 0, progress=False, workers=a.gen_workers)
    print(f"datasets ready in {time.perf_counter() - t0:.0f} s", flush=True)
    with ThreadPoolExecutor(a.jobs) as pool:
        results = list(pool.map(lambda s: run_variant(s, a), a.variants))
    (Path(a.out) / "summary.json").write_text(json.dumps(results, indent=1))
    for r in results:
        print(
            f"{r['name']:14s} rc {r['rc']}  real {r.get('real')}  test {r.get('test')}  extra {r.get('extra')}  "
            f"slices {r.get('train_slices')}  {r['seconds']} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
