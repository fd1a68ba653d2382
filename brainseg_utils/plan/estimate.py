"""Stages x unit costs -> seconds and disk per stage and per notebook, the platform's limits, the verdict and
the cheapest changes that make a run fit.

What each stage counts (``workload.Workload`` counts, ``calibrate`` costs, all in seconds):
  every notebook: start-up (papermill, the kernel, the imports) and papermill's save after each code cell
  01  audit (cases x audit_case); slice cache (cases x read_case + its bytes written); figures (eda_figures:
      histograms of 6 cases, overlays of 3; 3 more figures; the explorer reads a case)
  02  U-Net epochs (epochs x (train slices x unet_epoch_train + val slices x unet_epoch_val + unet_epoch_fixed),
      the per-image parts shared among GPUs); 2 figures
  03  the SAM backend built; embedding cache (cached slices x encoder + its bytes written); per prompt mode:
      zero-shot on validation, then epochs x (train slices x sam_epoch_train [+ encoder for slices re-encoded
      on the fly] + val slices x sam_epoch_val + sam_epoch_fixed), then one validation pass per WiSE-FT
      coefficient tried; 1 figure
  04  models loaded (backend, U-Net conversion, first calls); prediction (per test case: reading it, every brain
      slice through the U-Net, the encoded slices through the encoder, each decoder on its slices: no prompt on
      every brain slice, box variants on the tumour slices); predicted volumes written; metrics; latency
      ((3 warm-up + LATENCY_RUNS) x every variant's batch-1 pipeline, and the encoder / decoder split); 4 figures
  05  models loaded; examples (3 cases read and segmented, 1 figure); the Gradio app built
Not counted: the first conversion of an encoder to OpenVINO (~15 s, cached once per machine), downloads and
installs, and the DataLoader's overlap of augmentation with GPU work (counted as serial).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from brainseg_utils.plan.devices import PLATFORMS, Limits
from brainseg_utils.plan.workload import Workload

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


def start_up(nb: str, w: Workload, c: dict) -> Stage:
    return Stage("start-up", nb, c["notebook_start"] + w.cells.get(nb, 0) * c["notebook_cell"])


def stages_01(w: Workload, c: dict) -> list[Stage]:
    cache_bytes = w.cases * w.slices_per_case * w.image_bytes
    return [
        start_up("01_eda", w, c),
        Stage("audit", "01_eda", w.cases * c["audit_case"], 2_000 * w.cases, kept=True),
        Stage("slice cache", "01_eda", w.cases * c["read_case"] + cache_bytes * c["disk_write"], cache_bytes),
        Stage("figures", "01_eda", c.get("eda_figures", 9 * c["read_case"]) + 3 * c["figure"] + c["read_case"]),
    ]


def stages_02(w: Workload, c: dict, gpus: int) -> list[Stage]:
    images = w.train_slices * c["unet_epoch_train"] + w.val_slices * c["unet_epoch_val"]
    checkpoints = 2 * 3 * 4 * c["unet_params"]  # best.pt + last.pt, weights + AdamW's two moments, float32
    return [
        start_up("02_train_unet", w, c),
        Stage(
            "U-Net epochs", "02_train_unet", w.unet_epochs * (images / gpus + c["unet_epoch_fixed"]), checkpoints, True
        ),
        Stage("figures", "02_train_unet", 2 * c["figure"]),
    ]


def stages_03(w: Workload, c: dict, gpus: int) -> list[Stage]:
    cache_bytes = w.cached_embeddings * w.embedding_bytes
    out = [
        start_up("03_finetune_sam", w, c),
        Stage("SAM backend", "03_finetune_sam", c["sam_build"]),
        Stage(
            "embedding cache",
            "03_finetune_sam",
            w.cached_embeddings * c["encoder"] / gpus + c.get("encoder_first", 0.0) + cache_bytes * c["disk_write"],
            cache_bytes,
        ),
    ]
    if "box" in w.prompts:  # the box decoder is selected with U-Net boxes: the U-Net on every validation case
        unet_val = w.val_cases * (c["read_case"] + w.brain_slices_per_case * c["unet_infer"])
        out.append(Stage("U-Net on validation cases", "03_finetune_sam", unet_val))
    for prompt in w.prompts:
        val = w.val_slices * c["sam_epoch_val"]  # box: every validation slice, prompted with the U-Net's boxes
        train = w.sam_train_slices(prompt) * c["sam_epoch_train"] + w.encoded_on_the_fly(prompt) * c["encoder"]
        # zero-shot before training, WiSE-FT's coefficients after it (w.wise_passes), epochs in between
        seconds = (1 + w.wise_passes) * val + w.sam_epochs * ((train + val) / gpus + c["sam_epoch_fixed"])
        out.append(Stage(f"decoder epochs ({prompt})", "03_finetune_sam", seconds, 2 * 16e6, kept=True))
    # zero-shot vs fine-tuned on 4 validation slices per prompt mode (finetune.validation_previews): the box mode's
    # U-Net boxes need the U-Net on the validation cases again
    previews = len(w.prompts) * 2 * 4 * c["decoder_infer"] + c["figure"]
    if "box" in w.prompts:
        previews += w.val_cases * (c["read_case"] + w.brain_slices_per_case * c["unet_infer"])
    out.append(Stage("validation previews", "03_finetune_sam", previews))
    out.append(Stage("figures", "03_finetune_sam", c["figure"]))
    return out


def variants(w: Workload) -> int:
    """U-Net, one per prompt mode, and with a box decoder the zero-shot and U-Net-box variants."""
    return 1 + len(w.prompts) + (2 if "box" in w.prompts else 0)


def decoder_runs(w: Workload) -> tuple[float, float]:
    """(slices encoded, decoder runs) per test case: the no-prompt decoder sees every brain slice, each box
    variant (oracle box, U-Net box, zero-shot) the slices with tumour (about as many for the U-Net's box)."""
    tumour, brain = w.case["tumour_slices"], w.brain_slices_per_case
    boxes = 3 * tumour if "box" in w.prompts else 0.0
    nones = brain if "none" in w.prompts else 0.0
    return (brain if nones else tumour), boxes + nones


def models_loaded(nb: str, c: dict) -> Stage:
    return Stage("models loaded", nb, c["sam_build"] + c.get("encoder_first", 0.0) + c.get("unet_first", 0.0))


def stages_04(w: Workload, c: dict, latency_runs: int) -> list[Stage]:
    n_var = variants(w)
    encoded, decoded = decoder_runs(w)
    slices = w.brain_slices_per_case * c["unet_infer"] + encoded * c["encoder"] + decoded * c["decoder_infer"]
    per_case = c["read_case"] + slices
    volumes = w.test_cases * n_var * w.case["voxels"] / 20  # compressed uint8 masks
    sam_run = c["encoder_b1"] + c["decoder_infer"]
    pipeline = 2 * c["unet_infer"] + (n_var - 1) * sam_run  # every variant once, unet_box with its U-Net
    split = c["encoder_b1"] + (n_var - 2) * c["decoder_infer"]  # the encoder / decoder columns
    depth = w.case["depth"]
    return [
        start_up("04_evaluate", w, c),
        models_loaded("04_evaluate", c),
        Stage("prediction", "04_evaluate", w.test_cases * per_case + volumes * c["disk_write"], volumes, kept=True),
        Stage("metrics", "04_evaluate", w.test_cases * n_var * (w.brain_slices_per_case + depth) * c["metrics_slice"]),
        Stage("latency", "04_evaluate", (3 + latency_runs) * (pipeline + (split if n_var > 1 else 0.0))),
        Stage("figures", "04_evaluate", 4 * c["figure"] + c["read_case"]),
    ]


def stages_05(w: Workload, c: dict) -> list[Stage]:
    example = c["read_case"] + c["unet_infer"] + c["encoder_b1"] + c["decoder_infer"]
    steady = c["unet_infer"] + c["encoder_b1"] + c["decoder_infer"]
    return [
        start_up("05_demo", w, c),
        models_loaded("05_demo", c),
        # Predictor.warm_up: the box pipeline twice, the no-prompt one once, the U-Net at the volume batch (8)
        Stage("warm-up", "05_demo", 3 * steady + 8 * c["unet_infer"]),
        Stage("examples", "05_demo", 3 * example + c["figure"]),
        Stage("Gradio app", "05_demo", c.get("gradio_build", 0.0)),
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
