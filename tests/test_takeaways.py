"""evaluation/takeaways.py: notebook 02's note on a flat start and notebook 04's three-line takeaway, from
hand-made histories and metrics dicts."""

from __future__ import annotations

from brainseg_utils.evaluation import takeaways


def _epoch(e: int, dice: float, tumour: float) -> dict:
    return {"epoch": e, "val_dice": dice, "val_dice_tumour": tumour}


def test_flat_start_names_the_epochs_the_plateau_and_when_the_tumour_was_found():
    hist = [_epoch(1, 0.2106, 0.0), _epoch(2, 0.2106, 0.0), _epoch(3, 0.2106, 0.0), _epoch(4, 0.45, 0.31)]
    note = takeaways.flat_start_note(hist)
    assert "epochs 1-3" in note and "(here 0.211)" in note
    assert "At epoch 4 it found the tumour: tumour-slice Dice 0.310, all-slice Dice 0.450." in note


def test_no_flat_start_and_never_found():
    assert "did not sit flat" in takeaways.flat_start_note([_epoch(1, 0.5, 0.4), _epoch(2, 0.6, 0.5)])
    never = takeaways.flat_start_note([_epoch(1, 0.3, 0.0), _epoch(2, 0.3, 0.0)], model="SAM decoder")
    assert "epochs 1-2 the SAM decoder's" in never and "never found the tumour" in never
    assert "epoch 1 the" in takeaways.flat_start_note([_epoch(1, 0.3, 0.0), _epoch(2, 0.5, 0.2)])


def _model(dice, hd95, precision=0.8, recall=0.7, ci=None, fp_ml=0.5):
    return {
        "per_case": {
            "dice": {"mean": dice, "ci95": ci},
            "hd95": {"mean": hd95},
            "precision": {"mean": precision},
            "recall": {"mean": recall},
            "fp_ml": {"mean": fp_ml},
        },
        "backend": None,
    }


def _metrics(n=2, stats=None, **models):
    for name, m in models.items():
        if name.startswith("sam_"):
            m["backend"] = name.split("_")[1]
    return {"dataset": {"name": "synthetic", "n_test_cases": n}, "models": models, "statistics": stats or {}}


def test_takeaway_with_two_patients_says_what_n_allows():
    metrics = _metrics(
        unet=_model(0.70, 120.0, fp_ml=3.25),
        unet_clean=_model(0.74, 20.0),
        sam_x_unet_box=_model(0.66, 30.0),
        sam_x_box=_model(0.90, 5.0),  # oracle: never the best automatic model
        stats={"sam_x_unet_box": {"paired": {"dice": {"mean_difference": 0.04, "p_value": None, "p_holm": None}}}},
    )
    lines = takeaways.takeaway(metrics).splitlines()
    assert len(lines) == 3 and all(line.startswith("- **") for line in lines)
    assert "`unet_clean`, Dice 0.740 per patient on synthetic data (2 test patients: too few" in lines[0]
    assert "`sam_x_unet_box`" in lines[1] and "+0.040" in lines[1] and "the U-Net ahead" in lines[1]
    assert "not testable with 2 test patients" in lines[1]
    assert "islands" in lines[2] and "120.0 mm, 20.0 mm" in lines[2] and "3.25 mL" in lines[2]


def test_takeaway_with_a_ci_a_significant_test_and_no_islands():
    paired = {"mean_difference": -0.05, "ci95": [-0.08, -0.02], "p_value": 0.002, "p_holm": 0.004}
    metrics = _metrics(
        n=12,
        unet=_model(0.80, 10.0, precision=0.9, recall=0.75),
        unet_clean=_model(0.80, 9.0),
        sam_x_none=_model(0.81, 12.0),
        sam_x_unet_box=_model(0.85, 8.0, ci=[0.81, 0.88], precision=0.9, recall=0.8),
        stats={"sam_x_unet_box": {"paired": {"dice": paired}}},
    )
    best, cascade, failure = takeaways.takeaway(metrics).splitlines()
    assert "`sam_x_unet_box`, Dice 0.850 per patient [95% CI 0.810, 0.880]" in best and "too few" not in best
    assert "-0.050 per patient [95% CI -0.080, -0.020], SAM ahead; significant (Holm-adjusted p 0.004)" in cascade
    assert "failure mode of `sam_x_unet_box`" in failure and "missed tumour" in failure


def test_takeaway_without_sam_or_paired_statistics():
    metrics = _metrics(unet=_model(0.7, 10.0, precision=0.6, recall=0.9))
    _, cascade, failure = takeaways.takeaway(metrics).splitlines()
    assert "no automatic SAM model" in cascade and "over-segmentation" in failure
    metrics = _metrics(unet=_model(0.7, 10.0), sam_x_none=_model(0.5, 10.0))
    assert "`sam_x_none`" in takeaways.cascade_line(metrics) and "+0.200" in takeaways.cascade_line(metrics)


def test_headline_before_and_after_an_evaluation(tmp_path):
    import json

    path = tmp_path / "metrics.json"
    assert "appears here once the evaluation below has run" in takeaways.headline(path)
    path.write_text(json.dumps(_metrics(unet=_model(0.7, 10.0))))
    text = takeaways.headline(path)
    assert str(path) in text and "**Best automatic model:** `unet`" in text
