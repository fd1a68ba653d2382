"""Deviations from the seed (evaluation/protocol.py) and SAM pretraining notes (models/sam/pretraining.py) in the
results: every profile listed with the comparable column; BraTS-pretrained backends marked, ViT-B rows primary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_evaluate import _tables

from brainseg_utils.evaluation import protocol, report, results_table, statistics
from brainseg_utils.models.sam import pretraining
from brainseg_utils.models.sam.backends import BACKENDS

ROOT = Path(__file__).resolve().parents[1]


def test_profile_table_lists_every_profile_and_the_comparable_column():
    table = protocol.profile_table()
    header = table.splitlines()[0]
    for p in ("seed", "full", "quick", "longer", "auto"):
        assert f"`{p}`" in header
    assert "| image size (`IMG_SIZE`) | 256 px | same | 240 | 128 | 128 | 240 |" in table
    # longer = quick (its BASE) with every 2nd tumour slice and 30 epochs (the seed's 30: "same")
    assert "| tumour slices kept (`SLICE_STEP`) | every one | same | same | 8 | 2 | same |" in table
    assert "| U-Net epochs (`UNET_EPOCHS`) | 30 | same | same | 24 | same | same |" in table
    assert "| upsampling (`UNET_BILINEAR`) | bilinear (28.9 M parameters) | same | transposed convolutions |" in table
    for param in ("TUMOUR_FREE_FRACTION", "UNET_WEIGHT_DECAY", "GRAD_CLIP", "UNET_LR_SCHEDULE", "UNET_MR_AUGMENT"):
        row = next(line for line in table.splitlines() if f"`{param}`" in line)
        assert row.split(" | ")[2] == "same" and row.split(" | ")[3] != "same", row  # seed: same; full: differs
    last = table.splitlines()[-1]
    assert last.count("`Dice (tumour slices)`") == 5
    assert not protocol.deviations(protocol.profile_params("seed"))  # the seed profile IS the seed's protocol


def test_docs_hold_the_generated_profile_table():
    docs = (ROOT / "docs" / "evaluation.md").read_text()
    assert protocol.profile_table() in docs, "run python -m brainseg_utils.evaluation.protocol and paste its table"


def test_run_deviations_come_from_what_the_run_recorded():
    data = {"IMG_SIZE": 256, "TUMOUR_FREE_FRACTION": 0.0, "SLICE_STEP": 1, "MODALITIES": "flair"}
    train = dict(epochs=30, batch_size=16, lr=1e-4, weight_decay=0.0, grad_clip=0.0, lr_schedule="constant")
    model = {"arch": "unet", "in_channels": 1, "base_channels": 64, "bilinear": True, "dropout": 0.3}
    aug = {"strength": 1.0, "mr_augment": False}
    seed = protocol.run_deviations(data, {"train": train, "model": model, "augmentation": aug}, "brats2020")
    assert seed["deviations"] == [] and seed["matches_profiles"] == ["seed"]
    md = "\n".join(protocol.section_lines(seed))
    assert "equal the `seed` profile" in md and "is comparable with the seed's 0.87" in md
    # a full-profile checkpoint stores neither the cosine schedule nor ema_decay 0 (defaults), nor (older) augmentation
    full_train = {"epochs": 30, "batch_size": 16, "lr": 1e-4, "weight_decay": 0.01, "grad_clip": 1.0}
    full = protocol.run_deviations(
        {**data, "IMG_SIZE": 240, "TUMOUR_FREE_FRACTION": 0.3},
        {"train": full_train, "model": {**model, "bilinear": False}, "augmentation": None},
        "synthetic",
    )
    got = {d["parameter"]: d["run"] for d in full["deviations"]}
    assert got == {
        "IMG_SIZE": 240,
        "TUMOUR_FREE_FRACTION": 0.3,
        "UNET_BILINEAR": False,
        "UNET_LR_SCHEDULE": "cosine",
        "UNET_WEIGHT_DECAY": 0.01,
        "GRAD_CLIP": 1.0,
        "UNET_MR_AUGMENT": None,  # not recorded by that checkpoint
        "UNET_AUG_STRENGTH": None,
    }
    md = "\n".join(protocol.section_lines(full))
    assert "| upsampling (`UNET_BILINEAR`) | bilinear (28.9 M parameters) | transposed convolutions |" in md
    assert "| MR-intensity augmentation (`UNET_MR_AUGMENT`) | none (geometric + noise) | not recorded |" in md
    assert "SYNTHETIC" in md and "not comparable while the deviations above remain" in md


def test_every_backend_has_its_pretraining_with_sources():
    assert set(pretraining.PRETRAINING) == set(BACKENDS)
    for name, p in pretraining.PRETRAINING.items():
        assert p.sources and all(s.startswith("https://") for s in p.sources), name
    assert not pretraining.pretraining("vit_b").may_have_seen_test and pretraining.pretraining("vit_b").brats == "no"
    for name in ("litemedsam", "medsam"):
        assert pretraining.pretraining(name).may_have_seen_test and "BraTS" in pretraining.pretraining(name).brats
    with pytest.raises(KeyError, match="unknown SAM backend 'sam2'"):
        pretraining.pretraining("sam2")


def _metrics(backends: tuple[str, ...], prompts: tuple[str, ...] = ("box", "none")) -> dict:
    names = ("unet", *(f"sam_{b}_{p}" for b in backends for p in prompts))
    per_case, per_slice = _tables(2, names)
    summary = statistics.summarise(per_case, per_slice)
    for name in summary:
        backend = next((b for b in backends if name.startswith(f"sam_{b}_")), None)
        summary[name].update(
            prompt=results_table.prompt_of(name),
            latency_ms={"median": 5.0, "p90": 6.0, "device": "cpu"},
            data={"train_slices": 100, "val_slices": 20, "train_cases": 7, "val_cases": 2},
            backend=backend,
        )
    return {
        "dataset": {"name": "brats2020", "n_test_cases": 2, "split_sha256": "f" * 64},
        "models": summary,
        "statistics": statistics.paired_tests(per_case),
        "conventions": {"dice": "x"},
        "latency_protocol": "y",
        "provenance": {"commit": "abc123", "dirty": False, "command": "bash run_all.sh"},
    }


def _rows(md: str) -> list[str]:
    """Rows of the main results table (the upper-bounds and paired-comparison sections below it have rows of their
    own)."""
    main = md.split("\n## ")[0]
    return [line for line in main.splitlines() if line.startswith(("| unet", "| sam_", "| `"))]


UPPER = "\n## Upper bounds (oracle prompts)\n"
README_UPPER = "**Upper bounds (oracle ground-truth box; not a comparison)**"


def _upper_rows(md: str) -> list[str]:
    """Rows of the results.md upper-bounds table (oracle prompts): between its heading and the next section."""
    return _rows(md.split(UPPER, 1)[1].split("\n## ")[0])


def test_results_mark_brats_pretrained_rows_and_put_vit_b_first():
    metrics = _metrics(("litemedsam", "medsam", "vit_b"), ("box", "none", "unet_box", "box_zeroshot"))
    md = results_table.results_markdown(metrics)
    assert [r.split(" | ")[0] for r in _rows(md)] == [
        "| unet",
        "| sam_vit_b_none (primary SAM)",
        "| sam_vit_b_unet_box (primary SAM)",
        "| sam_litemedsam_none †",
        "| sam_litemedsam_unet_box †",
        "| sam_medsam_none †",
        "| sam_medsam_unet_box †",
    ], "the main table: fully automatic rows only"
    assert md.index("\n| unet |") < md.index(UPPER) < md.index("## Paired comparisons with the U-Net")
    assert "ground-truth box, which no automatic pipeline has" in md and "not comparisons with the U-Net" in md
    upper = _upper_rows(md)
    assert [r.split(" | ")[0] for r in upper] == [
        "| sam_vit_b_box (primary SAM)",
        "| sam_vit_b_box_zeroshot (primary SAM)",
        "| sam_litemedsam_box †",
        "| sam_litemedsam_box_zeroshot †",
        "| sam_medsam_box †",
        "| sam_medsam_box_zeroshot †",
    ], "the upper bounds: every oracle row, marked as in the main table"
    header = next(line for line in md.splitlines() if line.startswith("| model"))
    assert md.count(header) == 2 and all(len(r.split(" | ")) == len(header.split(" | ")) for r in upper)
    assert all("| n/a (oracle) |" in r for r in upper) and "n/a (oracle)" not in "\n".join(_rows(md))
    assert "SAM pretraining" in md and "- vit_b: SA-1B" in md and "BraTS in it: no." in md
    assert "- litemedsam: " in md and "† Its rows may have seen these BraTS 2020 test patients" in md
    assert "Primary SAM comparison: the vit_b rows" in md
    readme = report.results_table(metrics)
    main, upper_readme = readme.split(README_UPPER)
    names = [r.split(" | ")[0] for r in _rows(main)]
    assert names == ["| `unet`", "| `sam_vit_b_none`", "| `sam_vit_b_unet_box`"] + [
        f"| `sam_{b}_{p}` †" for b in ("litemedsam", "medsam") for p in ("none", "unet_box")
    ]
    oracle = [r.split(" | ")[0] for r in _rows(upper_readme)]
    assert oracle == ["| `sam_vit_b_box`", "| `sam_vit_b_box_zeroshot`"] + [
        f"| `sam_{b}_{p}` †" for b in ("litemedsam", "medsam") for p in ("box", "box_zeroshot")
    ]
    assert "† Pretrained on BraTS 2021/2023 (which hold" in readme


def test_without_vit_b_every_sam_row_is_marked_and_the_gap_is_said():
    md = results_table.results_markdown(_metrics(("litemedsam",)))
    assert all(r.split(" | ")[0].endswith("†") for r in _rows(md) + _upper_rows(md) if r.startswith("| sam_"))
    assert "No vit_b rows in this run" in md and "primary SAM" not in md
    assert "†" not in report.results_table(_metrics(("vit_b",)))


def test_without_oracle_rows_there_is_no_upper_bounds_section():
    metrics = _metrics(("vit_b",), ("none", "unet_box"))
    assert UPPER not in results_table.results_markdown(metrics)
    assert "upper bounds below" not in results_table.results_markdown(metrics)
    assert README_UPPER not in report.results_table(metrics)


def test_docs_cite_every_pretraining_source():
    docs = (ROOT / "docs" / "models-and-training.md").read_text()
    for name, p in pretraining.PRETRAINING.items():
        for source in p.sources:
            assert source.split(" ")[0] in docs, (name, source)


def test_seed_profile_builds_a_256_px_tumour_only_cache(synth_root, tmp_path):
    """240 x 240 slices are resized up to 256 (image and mask alike, masks stay binary; the round trip back to
    the native grid is checked in test_inference) and no tumour-free slice is kept."""
    from brainseg_utils.data.brats import discover_cases
    from brainseg_utils.data.slices import build_cache
    from brainseg_utils.parameters import profile_configs

    cfg = profile_configs("seed").data.slice_config()
    cache = build_cache(discover_cases(synth_root)[:2], tmp_path / "slices", cfg, progress=False)
    assert cache.images.shape[-2:] == (256, 256) and cache.masks.shape[-2:] == (256, 256)
    assert cache.index.has_tumour.all() and set(np.unique(cache.masks)) == {0, 1}
