"""Builds a plan: the profile's configs, the data's workload, unit costs (measured here, or scaled from a
measured reference GPU for a device that is not present) and the estimate."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from brainseg_utils.parameters import profile_configs
from brainseg_utils.plan import calibrate as cal
from brainseg_utils.plan.devices import DEVICES, PLATFORMS, key_for_gpu, speed_ratio
from brainseg_utils.plan.estimate import all_stages, judge, notebook_seconds, suggestions
from brainseg_utils.plan.workload import measure_cases, notebook_cells, typical_brats, workload
from brainseg_utils.runtime import env

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "benchmarks" / "results" / "gpu-h200"  # gpu_check.py and bench_sam_gpu.py on an H200


def present_device() -> str:
    if torch.cuda.is_available():
        return key_for_gpu(torch.cuda.get_device_name(0)) or "cuda"
    return "cpu"


def reference_costs(configs, backend: str) -> dict:
    """Per-image GPU costs measured on the H200 (full profile: 240 px, width 64, bf16), scaled to the profile's
    image size and width (U-Net FLOPs grow with pixels x width^2)."""
    check = json.loads((REFERENCE / "gpu-check.json").read_text())
    sam = json.loads((REFERENCE / "sam-gpu.json").read_text())
    size_w = (configs.data.img_size / 240) ** 2 * (configs.unet.base_channels / 64) ** 2
    train_ips = sorted(check["unet_train"]["train_images_per_s"])[-2]  # median of three epochs
    pipeline = {p["backend"]: p for p in sam["pipeline"]}
    pipe = pipeline.get(backend, pipeline["litemedsam"])
    return {
        "unet_train": size_w / train_ips,
        "unet_infer": size_w / check["unet_inference"]["images_per_s"],
        "encoder": pipe["caching_seconds_per_1000_slices"] / 1000,
        "decoder_train": pipe["decoder_epoch_seconds_per_1000_slices"] / 1000,
        "decoder_infer": pipe["decoder_epoch_seconds_per_1000_slices"] / 3000,  # forward only: ~1/3 of a step
    }


def scaled_costs(configs, costs: dict, device: str) -> dict:
    """GPU-bound costs for ``device`` from the H200 reference, scaled by the published peaks; what the GPU does
    not do (augmentation, checkpoint writes) stays as measured here."""
    ratio = speed_ratio(device, "h200")
    ref = {k: v * ratio for k, v in reference_costs(configs, costs.get("sam_backend", "litemedsam")).items()}
    unet_ckpt = 2 * 3 * 4 * costs["unet_params"] * costs["disk_write"]
    return {
        "unet_infer": ref["unet_infer"],
        "unet_epoch_train": ref["unet_train"] + costs["augment"],
        "unet_epoch_val": ref["unet_infer"],
        "unet_epoch_fixed": unet_ckpt,
        "encoder": ref["encoder"],
        "encoder_b1": ref["encoder"],
        "decoder_infer": ref["decoder_infer"],
        "sam_epoch_train": ref["decoder_train"],
        "sam_epoch_val": ref["decoder_infer"],
        "sam_epoch_fixed": 2 * 3 * 4 * 4.1e6 * costs["disk_write"],  # the mask decoder's ~4.1 M parameters
    }


def first_case(configs):
    from brainseg_utils.data.brats import discover_cases, labelled_cases
    from brainseg_utils.workflow.locate import resolve_dataset

    root, name = resolve_dataset(configs.data, progress=False)
    return root, name, labelled_cases(discover_cases(root))


@dataclass
class Context:
    """What every setting of a plan shares: the data's shape, the device's unit costs, the platform."""

    profile: str
    device: str
    estimate: bool
    measured_on: str
    platform: str
    dataset: str
    cases: int
    shape: object
    costs: dict
    cells: dict

    def plan(self, gpus: int = 1, latency_runs: int | None = None, overrides: dict | None = None) -> dict:
        """The plan for the profile with ``overrides`` (NAME -> value) on top."""
        configs = profile_configs(self.profile, **(overrides or {}))
        w = workload(configs, self.cases, self.shape, self.cells)
        runs = configs.evaluation.latency_runs if latency_runs is None else latency_runs
        stages = all_stages(w, self.costs, gpus, runs)
        verdict = judge(stages, PLATFORMS[self.platform], self.platform)
        per_nb = notebook_seconds(stages)
        return {
            "device": self.device,
            "estimate": self.estimate,
            "measured_on": self.measured_on,
            "platform": self.platform,
            "profile": self.profile,
            "overrides": dict(overrides or {}),
            "dataset": self.dataset,
            "cases": self.cases,
            "gpus": gpus,
            "workload": w.to_json(),
            "costs": {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.costs.items()},
            "stages": [s.to_json() for s in stages],
            "notebooks": per_nb,
            "total_seconds": round(sum(per_nb.values()), 1),
            "disk_bytes": int(sum(s.disk_bytes for s in stages)),
            "limits": vars(PLATFORMS[self.platform]),
            "fits": verdict.fits,
            "why_not": verdict.reasons,
            "suggestions": [] if verdict.fits else suggestions(w, self.costs, gpus, self.platform, runs),
        }


def context(
    profile: str,
    device: str | None = None,
    cases: int | None = None,
    platform: str | None = None,
    use_cache: bool = True,
    overrides: dict | None = None,
) -> Context:
    """Finds the data, measures its shape and calibrates the device (or scales the reference for one that is
    not here) for ``profile`` (+ ``overrides``)."""
    configs = profile_configs(profile, **(overrides or {}))
    platform = platform or env.platform()
    here = present_device()
    device = device or here
    if device not in (*DEVICES, "cpu", "cuda"):
        raise ValueError(f"--device {device!r}: options cpu, {', '.join(DEVICES)} (or omit it: the present one)")
    if platform not in PLATFORMS:
        raise ValueError(f"--platform {platform!r}: options {', '.join(PLATFORMS)}")
    root, dataset, labelled = first_case(configs)
    shape = measure_cases(labelled) if labelled else typical_brats()
    n = cases or len(labelled)
    if cases and dataset == "synthetic" and cases != len(labelled):
        shape = typical_brats() if cases > len(labelled) else shape
    torch_device = torch.device("cuda" if here != "cpu" else "cpu")
    estimate = device != here
    if estimate and device == "cpu":
        raise ValueError("a CPU plan needs that CPU: run the planner there (--device cpu measures this machine)")
    calibration = cal.calibrate(configs, labelled[:6], torch_device, use_cache, measure_training=not estimate)
    costs = dict(calibration["costs"])
    if estimate:
        costs.update(scaled_costs(configs, costs, device))
    cells = notebook_cells(ROOT / "notebooks")
    return Context(profile, device, estimate, calibration["measured_on"], platform, dataset, n, shape, costs, cells)


def make_plan(
    profile: str,
    device: str | None = None,
    cases: int | None = None,
    gpus: int = 1,
    platform: str | None = None,
    use_cache: bool = True,
    latency_runs: int | None = None,
    overrides: dict | None = None,
) -> dict:
    """The plan of ``profile`` (+ ``overrides``) for the data found (or ``cases``) on ``device`` x ``gpus`` and
    ``platform`` (defaults: the present device, the detected platform)."""
    ctx = context(profile, device, cases, platform, use_cache, overrides)
    return ctx.plan(gpus, latency_runs, overrides)
