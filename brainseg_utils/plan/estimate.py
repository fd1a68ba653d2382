"""Stages x unit costs -> seconds and disk per stage and per notebook, the platform's limits, the verdict and
the cheapest changes that make a run fit.

What each stage counts (``workload.Workload``, ``calibrate`` costs, all in seconds):
  01  start-up; audit (cases x audit_case); slice cache (cases x read_case); figures (6, reading 10 cases)
  02  start-up; U-Net epochs (epochs x (train slices x (unet_train + augment) + val slices x unet_infer)); 2 figures
  03  start-up; embedding cache (cached slices x encoder); per prompt mode: zero-shot on validation, then
      epochs x (train slices x decoder_train [+ encoder for slices re-encoded on the fly] + val x decoder_infer)
  04  start-up; prediction (test cases x (read_case + brain slices x (unet_infer + encoder + decoders)));
      metrics (test cases x brain slices x variants x metrics_slice, and the 3-D metrics as depth slices);
      latency (variants x (3 warm-up + LATENCY_RUNS) runs); 4 figures
  05  start-up; examples (3 cases read); 1 figure
Not counted: papermill's own bookkeeping, the first conversion of an encoder to OpenVINO (~15 s, cached once
per machine), downloads and installs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from brainseg_utils.plan.devices import PLATFORMS, Limits
from brainseg_utils.plan.workload import EMBEDDING_BYTES, Workload

NOTEBOOKS = ("01_eda", "02_train_unet", "03_finetune_sam", "04_evaluate", "05_demo")
MARGIN = 0.9  # a notebook must fit in 90 % of a session


@dataclass
class Stage:
    name: str
    notebook: str
    seconds: float
    disk_bytes: float = 0.0
    kept: bool = False  # part of the output a platform keeps (checkpoints, results), not a rebuildable cache

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "notebook": self.notebook,
            "seconds": round(self.seconds, 1),
            "disk_bytes": int(self.disk_bytes),
            "kept": self.kept,
        }


def stages_01(w: Workload, c: dict) -> list[Stage]:
    cache_bytes = w.cases * w.slices_per_case * w.image_bytes
    return [
        Stage("start-up", "01_eda", c["startup"]),
        Stage("audit", "01_eda", w.cases * c["audit_case"], 2_000 * w.cases, kept=True),
        Stage("slice cache", "01_eda", w.cases * c["read_case"], cache_bytes),
        Stage("figures", "01_eda", 6 * c["figure"] + 10 * c["read_case"]),
    ]


def stages_02(w: Workload, c: dict, gpus: int) -> list[Stage]:
    epoch = (w.train_slices * (c["unet_train"] + c["augment"]) + w.val_slices * c["unet_infer"]) / gpus
    checkpoints = 2 * 3 * 4 * c["unet_params"]  # best.pt + last.pt, weights + AdamW's two moments, float32
    return [
        Stage("start-up", "02_train_unet", c["startup"]),
        Stage("U-Net epochs", "02_train_unet", w.unet_epochs * epoch, checkpoints, kept=True),
        Stage("figures", "02_train_unet", 2 * c["figure"]),
    ]


def stages_03(w: Workload, c: dict, gpus: int) -> list[Stage]:
    out = [
        Stage("start-up", "03_finetune_sam", c["startup"]),
        Stage(
            "embedding cache",
            "03_finetune_sam",
            w.cached_embeddings * c["encoder"],
            w.cached_embeddings * EMBEDDING_BYTES,
        ),
    ]
    for prompt in w.prompts:
        share = w.tumour_slices_per_case / w.slices_per_case if prompt == "box" else 1.0
        val = w.val_slices * share
        train = w.sam_train_slices(prompt) * c["decoder_train"] + w.encoded_on_the_fly(prompt) * c["encoder"]
        seconds = val * c["decoder_infer"] + w.sam_epochs * (train / gpus + val * c["decoder_infer"])
        out.append(Stage(f"decoder epochs ({prompt})", "03_finetune_sam", seconds, 2 * 16e6, kept=True))
    out.append(Stage("figures", "03_finetune_sam", c["figure"]))
    return out


def variants(w: Workload) -> int:
    """U-Net, one per prompt mode, and with a box decoder the zero-shot and U-Net-box variants."""
    return 1 + len(w.prompts) + (2 if "box" in w.prompts else 0)


def stages_04(w: Workload, c: dict, latency_runs: int) -> list[Stage]:
    n_var = variants(w)
    per_slice = c["unet_infer"] + c["encoder"] + (n_var - 1) * c["decoder_infer"]
    slices = w.test_cases * w.brain_slices_per_case
    sam_run = c["encoder"] + c["decoder_infer"]
    latency = (3 + latency_runs) * (c["unet_infer"] + (n_var - 1) * sam_run + c["unet_infer"])
    depth = w.case["depth"]
    return [
        Stage("start-up", "04_evaluate", c["startup"]),
        Stage(
            "prediction",
            "04_evaluate",
            w.test_cases * c["read_case"] + slices * per_slice,
            w.test_cases * n_var * w.case["voxels"] / 20,
            kept=True,
        ),
        Stage("metrics", "04_evaluate", w.test_cases * n_var * (w.brain_slices_per_case + depth) * c["metrics_slice"]),
        Stage("latency", "04_evaluate", latency),
        Stage("figures", "04_evaluate", 4 * c["figure"] + c["read_case"]),
    ]


def stages_05(w: Workload, c: dict) -> list[Stage]:
    return [
        Stage("start-up", "05_demo", c["startup"]),
        Stage("examples", "05_demo", 3 * c["read_case"] + c["figure"]),
    ]


def all_stages(w: Workload, c: dict, gpus: int = 1, latency_runs: int = 20) -> list[Stage]:
    return [
        *stages_01(w, c),
        *stages_02(w, c, gpus),
        *stages_03(w, c, gpus),
        *stages_04(w, c, latency_runs),
        *stages_05(w, c),
    ]


@dataclass
class Verdict:
    fits: bool
    reasons: list[str] = field(default_factory=list)


def judge(stages: list[Stage], limits: Limits, platform: str) -> Verdict:
    """A notebook must end within ``MARGIN`` of a session (each notebook is its own session on Kaggle; on Colab
    the VM may carry several, so the total is checked there too); kept output and disk within the caps."""
    per_nb = notebook_seconds(stages)
    reasons = []
    if limits.session_s:
        for nb, s in per_nb.items():
            if s > MARGIN * limits.session_s:
                reasons.append(f"{nb} needs {hours(s)}, more than 90 % of a {hours(limits.session_s)} session")
        if platform == "colab" and sum(per_nb.values()) > MARGIN * limits.session_s:
            reasons.append(f"all notebooks need {hours(sum(per_nb.values()))} on one Colab VM (~12 h at most)")
    kept = sum(s.disk_bytes for s in stages if s.kept)
    total = sum(s.disk_bytes for s in stages)
    if limits.kept_output_bytes and kept > limits.kept_output_bytes:
        reasons.append(f"kept output {kept / 1e9:.1f} GB exceeds {limits.kept_output_bytes / 1e9:.0f} GB")
    if limits.disk_bytes and total > limits.disk_bytes:
        reasons.append(f"disk {total / 1e9:.1f} GB exceeds the VM's {limits.disk_bytes / 1e9:.0f} GB")
    return Verdict(not reasons, reasons)


def notebook_seconds(stages: list[Stage]) -> dict[str, float]:
    return {nb: round(sum(s.seconds for s in stages if s.notebook == nb), 1) for nb in NOTEBOOKS}


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def suggestions(w: Workload, c: dict, gpus: int, platform: str, latency_runs: int) -> list[dict]:
    """Changes that would make the run fit, cheapest in quality first, each re-estimated."""
    limits = PLATFORMS[platform]
    tries = []
    if gpus == 1:
        tries.append(("NUM_GPUS=2 (T4 x2: one process per GPU)", w, 2))
    if w.overflow == "encode" and w.cached_embeddings < w.train_slices + w.val_slices:
        tries.append(
            (
                "SAM_OVERFLOW=subsample (decoders train on the cached slices only)",
                replace(w, overflow="subsample"),
                gpus,
            )
        )
    for factor in (0.5, 0.25):
        tries.append(
            (
                f"SAM_EPOCHS={max(1, int(w.sam_epochs * factor))}",
                replace(w, sam_epochs=max(1, int(w.sam_epochs * factor))),
                gpus,
            )
        )
        tries.append(
            (
                f"UNET_EPOCHS={max(1, int(w.unet_epochs * factor))}",
                replace(w, unet_epochs=max(1, int(w.unet_epochs * factor))),
                gpus,
            )
        )
    out = []
    for label, wl, g in tries:
        stages = all_stages(wl, c, g, latency_runs)
        verdict = judge(stages, limits, platform)
        out.append({"change": label, "fits": verdict.fits, "total_seconds": round(sum(s.seconds for s in stages))})
    return [s for s in out if s["fits"]] or out[:3]
