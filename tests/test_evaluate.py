import time

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from brainseg_utils.data.brats import discover_cases
from brainseg_utils.evaluation import evaluate as ev
from brainseg_utils.evaluation import latency, results_table, statistics


def test_export_prediction_reloads_with_source_geometry(quirky_root, tmp_path):
    case = discover_cases(quirky_root)[1]  # float32 source: the export must still be uint8
    src = nib.load(case.images["flair"])
    pred = np.zeros(src.shape, bool)
    pred[100:120, 90:110, 10:20] = True
    out = ev.export_prediction(pred, case.images["flair"], tmp_path / "p" / "x_pred.nii.gz")
    back = nib.load(out)
    assert back.shape == src.shape and np.allclose(back.affine, src.affine)
    assert back.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(back.dataobj), pred.astype(np.uint8))
    assert [p.name for p in (tmp_path / "p").iterdir()] == ["x_pred.nii.gz"]


def _tables(n_cases: int, models=("unet", "sam_x_none")):
    rng = np.random.default_rng(n_cases)
    ids = [f"c{i}" for i in range(n_cases)]
    per_case = pd.DataFrame(
        [
            {
                "model": m,
                "case_id": c,
                "dice": float(rng.uniform(0.4, 0.9)),
                "iou": 0.5,
                "precision": 0.5,
                "recall": 0.5,
                "hd95": float(rng.uniform(2.0, 20.0)),
                "tumour_ml": 1.0,
                "lesion_dice": 0.6,
                "lesion_hd95": 40.0,
                "nsd_2mm": 0.7,
                "fp_ml": 0.25,
            }
            for m in models
            for c in ids
        ]
    )
    per_slice = pd.DataFrame(
        [
            {
                "model": m,
                "case_id": "c0",
                "z": z,
                "has_tumour": z < 2,
                "tumour_px": 5 if z < 2 else 0,
                "pred_px": 1,
                "dice": 0.5,
                "iou": 0.5,
                "precision": 0.5,
                "recall": 0.5,
                "hd95": 1.0,
            }
            for m in models
            for z in range(4)
        ]
    )
    return per_case, per_slice


def test_case_rows_carry_the_metrics_the_field_reports():
    gt = np.zeros((40, 40, 20), bool)
    gt[10:20, 10:20, 5:15] = True
    pred = gt.copy()
    pred[30:32, 30:32, 0:2] = True  # a spurious 8-voxel component
    res = {"gt": gt, "pred": {"unet": pred, "sam_x_none": gt}, "spacing": (1.0, 1.0, 2.0)}
    rows = {r["model"]: r for r in ev.case_rows("c0", res)}
    assert rows["unet"]["lesion_dice"] == pytest.approx(0.5) and rows["unet"]["lesion_hd95"] == pytest.approx(187.0)
    unet = rows["unet"]
    assert (unet["n_gt_lesions"], unet["n_tp"], unet["n_fn"], unet["n_fp"]) == (1, 1, 0, 1)
    assert unet["fp_ml"] == pytest.approx(8 * 2.0 / 1000) and unet["tumour_ml"] == pytest.approx(2.0)
    # NSD (surfel areas, MedSAM's convention): both cube surfaces within 2 mm, the stray cube's not. A box of n^3
    # voxels at spacing (1, 1, 2) has the marching-cubes area: faces (n-1)^2 (2 * 2 + 2 * 2 + 2 * 1), edge strips
    # (n-1) * (8 * sqrt(5) / 2 + 4 * 2 * sqrt(2) / 2), corners 8 * sqrt(4 + 4 + 1) / 8. HD95: 8 of 496 voxels < 5 %
    cube = lambda n: (n - 1) ** 2 * 10 + (n - 1) * (4 * 5**0.5 + 4 * 2**0.5) + 3  # noqa: E731
    assert unet["nsd_2mm"] == pytest.approx(2 * cube(10) / (2 * cube(10) + cube(2))) and unet["hd95"] == 0.0
    assert rows["sam_x_none"]["nsd_2mm"] == 1.0 and rows["sam_x_none"]["fp_ml"] == 0.0
    assert rows["sam_x_none"]["lesion_dice"] == 1.0 and rows["sam_x_none"]["lesion_hd95"] == 0.0
    assert {"dice", "iou", "precision", "recall", "hd95", "lesion_dice", "lesion_hd95", "nsd_2mm", "fp_ml"} <= set(
        rows["unet"]
    )


def test_summary_statistics_by_hand():
    per_case = pd.DataFrame(
        {
            "model": ["unet"] * 3 + ["sam_x_none"] * 3,
            "case_id": ["a", "b", "c"] * 2,
            "dice": [0.8, 0.6, 0.7, 0.5, 0.4, 0.6],
            "iou": 0.5,
            "precision": 0.5,
            "recall": 0.5,
            "hd95": [3.0, 5.0, 100.0, 4.0, 6.0, 8.0],
            "tumour_ml": 1.0,
            "lesion_dice": [0.5, 1.0, 0.0, 0.5, 0.5, 0.5],
            "lesion_hd95": [187.0, 0.0, 374.0, 1.0, 1.0, 1.0],
            "nsd_2mm": [0.9, 0.8, 0.7, 0.5, 0.5, 0.5],
            "fp_ml": [0.0, 1.5, 0.3, 0.0, 0.0, 0.0],
        }
    )
    per_slice = pd.DataFrame(
        {
            "model": ["unet"] * 4 + ["sam_x_none"] * 4,
            "case_id": "a",
            "z": [0, 1, 2, 3] * 2,
            "has_tumour": [True, True, False, False] * 2,
            "tumour_px": [5, 5, 0, 0] * 2,
            "pred_px": [4, 6, 0, 3, 0, 2, 1, 1],
            "dice": [0.9, 0.7, 1.0, 0.0, 0.0, 0.5, 0.0, 0.0],
            "iou": 0.5,
            "precision": 0.5,
            "recall": 0.5,
            "hd95": 1.0,
        }
    )
    s = statistics.summarise(per_case, per_slice)
    assert s["unet"]["per_case"]["dice"]["mean"] == pytest.approx(0.7)
    # HD95 with one outlier: mean 36, median 5 [IQR 4, 52.5] (pandas' linear quantiles of 3, 5, 100)
    assert s["unet"]["per_case"]["hd95"]["mean"] == pytest.approx(36.0)
    assert s["unet"]["per_case"]["hd95"]["median"] == pytest.approx(5.0)
    assert s["unet"]["per_case"]["hd95"]["iqr"] == pytest.approx([4.0, 52.5])
    assert s["unet"]["per_case"]["lesion_dice"]["mean"] == pytest.approx(0.5)
    assert s["unet"]["per_case"]["lesion_hd95"]["mean"] == pytest.approx(187.0)
    assert s["unet"]["per_case"]["nsd_2mm"]["mean"] == pytest.approx(0.8)
    assert s["unet"]["per_case"]["fp_ml"]["mean"] == pytest.approx(0.6)
    assert "lesion_dice" not in s["unet"]["per_slice"]  # per patient only
    assert s["unet"]["per_slice"]["dice"]["mean"] == pytest.approx(0.65)
    assert s["unet"]["per_slice_tumour"]["dice"]["mean"] == pytest.approx(0.8)
    assert s["unet"]["false_positive_rate"]["value"] == pytest.approx(0.5)
    assert s["sam_x_none"]["false_positive_rate"]["value"] == pytest.approx(1.0)
    # 3 patients cannot carry a CI or a p-value: null with the reason, and the smallest attainable p
    assert s["unet"]["per_case"]["dice"]["ci95"] is None
    assert s["unet"]["per_case"]["dice"]["ci95_note"] == "n/a (n = 3 < 10 test patients)"
    tests = statistics.paired_tests(per_case)
    assert set(tests) == {"sam_x_none"} and tests["sam_x_none"]["n"] == 3
    assert tests["sam_x_none"]["p_value"] is None and tests["sam_x_none"]["p_value_note"].startswith("n/a (n = 3")
    assert tests["sam_x_none"]["min_attainable_p"] == pytest.approx(0.25) and tests["sam_x_none"]["n_tests"] == 1


def test_statistics_from_ten_patients():
    per_case, per_slice = _tables(12, ("unet", "sam_x_none", "sam_x_box"))
    s = statistics.summarise(per_case, per_slice)
    lo, hi = s["unet"]["per_case"]["dice"]["ci95"]
    assert lo < s["unet"]["per_case"]["dice"]["mean"] < hi
    tests = statistics.paired_tests(per_case)
    from scipy.stats import wilcoxon

    wide = per_case.pivot(index="case_id", columns="model", values="dice")
    assert tests["sam_x_box"]["p_value"] == pytest.approx(wilcoxon(wide["unet"], wide["sam_x_box"]).pvalue)
    assert tests["sam_x_box"]["min_attainable_p"] == pytest.approx(2.0**-11)
    assert tests["sam_x_box"]["n_tests"] == 2


def test_oracle_variants_have_no_false_positive_rate():
    per_case, per_slice = _tables(2, ("unet", "sam_x_box", "sam_x_unet_box", "sam_x_box_zeroshot", "sam_x_none"))
    s = statistics.summarise(per_case, per_slice)
    assert s["sam_x_box"]["false_positive_rate"]["value"] is None
    assert s["sam_x_box_zeroshot"]["false_positive_rate"]["value"] is None
    assert "oracle" in s["sam_x_box"]["false_positive_rate"]["note"]
    for name in ("unet", "sam_x_unet_box", "sam_x_none"):
        assert s[name]["false_positive_rate"]["value"] == pytest.approx(1.0), name
    assert results_table.fmt_fp(s["sam_x_box"]["false_positive_rate"]) == "n/a (oracle)"


def test_prompt_labels():  # SAM_CHECKPOINT parsing: test_sam_discovery.py
    assert results_table.prompt_of("unet") == "-"
    assert results_table.prompt_of("sam_litemedsam_box") == "oracle GT box"
    assert results_table.prompt_of("sam_vit_b_unet_box") == "U-Net box"
    assert results_table.prompt_of("sam_vit_b_none") == "none"
    assert results_table.prompt_of("sam_litemedsam_box_zeroshot").startswith("oracle GT box, zero-shot")


def test_latency_protocol_counts_runs():
    import time

    calls = []
    ms = latency.time_runs(lambda: (calls.append(1), time.sleep(0.002)), torch.device("cpu"), n_runs=5, warmup=2)
    assert len(ms) == 5 and len(calls) == 7 and min(ms) >= 2.0


class _Counting(torch.nn.Module):
    low_res_size, precision = 256, "fp32"  # as a SamDecoderModel / SamBackend

    def __init__(self, log, size=32):
        super().__init__()
        self.log, self.size = log, size

    def forward(self, x):  # the U-Net: a tumour in the middle
        self.log.append("unet")
        out = torch.full((len(x), 1, self.size, self.size), -5.0)
        out[:, :, 10:20, 12:22] = 5.0
        return out

    def encode(self, x):
        self.log.append("encode")
        return torch.zeros(len(x), 1)

    def low_res_logits(self, emb, boxes=None):
        self.log.append("decode" if boxes is None else f"decode box {boxes[0].tolist()}")
        return torch.zeros(len(emb), 1, 256, 256)


def test_latency_times_each_variants_whole_pipeline():
    from brainseg_utils.evaluation.inference import Models

    log = []
    fake = _Counting(log)
    models = Models(fake, sam={"f": {"none": fake, "box": fake, "box_zeroshot": fake}}, backends={"f": fake})
    x = torch.rand(1, 1, 32, 32)
    pipes = latency.pipelines(models, x, torch.tensor([[1.0, 2.0, 3.0, 4.0]]), (48, 40))
    assert set(pipes) == {"unet", "sam_f_none", "sam_f_box", "sam_f_unet_box", "sam_f_box_zeroshot"}
    log.clear()
    out = pipes["sam_f_unet_box"]()
    assert out.shape == (48, 40) and out.dtype == bool
    nan_rows = ", [nan, nan, nan, nan]" * 3  # one box per U-Net component (one here), the other slots unused
    assert log == ["unet", "encode", f"decode box [[12.0, 10.0, 21.0, 19.0]{nan_rows}]"], "U-Net, its boxes, SAM"
    log.clear()
    pipes["sam_f_box"]()
    assert log == ["encode", "decode box [1.0, 2.0, 3.0, 4.0]"]
    res = latency.measure_latency(
        models, x[0].numpy(), np.array([1, 2, 3, 4], np.float32), (48, 40), "cpu", n_runs=3, warmup=1
    )
    assert set(res) == set(pipes)
    assert res["sam_f_unet_box"]["n_runs"] == 3 and res["sam_f_unet_box"]["p90"] >= res["sam_f_unet_box"]["median"]
    assert (
        "encoder_ms" in res["sam_f_unet_box"] and "decoder_ms" in res["sam_f_none"] and "encoder_ms" not in res["unet"]
    )


def test_results_markdown_states_what_n_allows():
    per_case, per_slice = _tables(2, ("unet", "sam_x_box"))
    summary = statistics.summarise(per_case, per_slice)
    for name in summary:
        summary[name].update(
            prompt=results_table.prompt_of(name),
            latency_ms={"median": 5.0, "p90": 6.0, "device": "cpu"},
            data={"train_slices": 100, "val_slices": 20, "train_cases": 7, "val_cases": 2},
        )
    metrics = {
        "dataset": {"name": "synthetic", "n_test_cases": 2, "split_sha256": "f" * 64},
        "models": summary,
        "statistics": statistics.paired_tests(per_case),
        "conventions": {"dice": "x", "lesion_dice": "BraTS 2023 lesion-wise"},
        "latency_protocol": "y",
        "provenance": {"commit": "abc123", "dirty": False, "command": "bash run_all.sh"},
    }
    md = results_table.results_markdown(metrics)
    header = next(line for line in md.splitlines() if line.startswith("| model"))
    for col in (
        "HD95 mm mean",
        "HD95 mm median [IQR]",
        "lesion-wise Dice",
        "lesion-wise HD95 mm",
        "NSD 2 mm",
        "FP volume mL",
    ):
        assert f"| {col} |" in header, col
    unet_row = next(line for line in md.splitlines() if line.startswith("| unet |")).split(" | ")
    hd = summary["unet"]["per_case"]["hd95"]
    assert unet_row[8] == f"{hd['median']:.1f} [{hd['iqr'][0]:.1f}, {hd['iqr'][1]:.1f}]"
    assert unet_row[9:13] == ["0.600", "40.0", "0.700", "0.25"]
    assert len(unet_row) == len(header.split(" | "))
    assert "SYNTHETIC" in md and "with 2 they are n/a" in md and "CI n/a" not in md  # said once, not per row
    assert "n/a (oracle)" in md and "100 / 20 slices, 7 cases" in md
    assert "- lesion_dice: BraTS 2023 lesion-wise" in md
    assert "n/a (n = 2; min attainable p 0.5)" in md and "`bash run_all.sh` at commit `abc123`" in md


def test_the_runs_settings_and_cuts_reach_the_results(tmp_path):
    from brainseg_utils.evaluation.evaluate import run_settings
    from brainseg_utils.evaluation.results_table import settings_lines
    from brainseg_utils.runtime.io import atomic_write_json
    from brainseg_utils.runtime.paths import RunDir

    run = RunDir(tmp_path)
    info = {"params": {"SLICE_STEP": 1, "TUMOUR_FREE_FRACTION": 0.3}}
    plain = run_settings(run, info)
    assert plain == {"slice_step": 1, "tumour_free_fraction": 0.3, "profile": None, "cuts": []}
    assert settings_lines(plain) == []  # nothing was cut, nothing subsampled
    cut = {"parameter": "SAM_EPOCHS", "full": 30, "chosen": 15, "cost": "fewer decoder epochs"}
    plan = {"profile": "auto", "level": 2, "cuts": [cut], "platform": "kaggle", "device": "t4", "gpus": 2,
            "estimate": True, "notebooks": {"02_train_unet": 100.0}, "fits": True}  # fmt: skip
    atomic_write_json(run.plan, plan)
    settings = run_settings(run, {"params": {"SLICE_STEP": 2}})
    assert settings["cuts"] == [cut] and settings["planned_for"] == "kaggle on t4 x2 (estimate)"
    text = "\n".join(settings_lines(settings))
    assert "one tumour slice in 2 (SLICE_STEP 2), the same slices for both models" in text
    assert "PROFILE=auto" in text and "- SAM_EPOCHS 30 -> 15: fewer decoder epochs" in text


def test_per_volume_costs_are_assembled_from_the_stages_by_hand():
    rec = {
        "unet": {"seconds": 1.0, "peak_mb": 10.0},
        "clean": {"seconds": 0.5, "peak_mb": None},
        "encode vit_b": {"seconds": 8.0, "peak_mb": 300.0, "slices": 40},
        "sam_vit_b_none": {"seconds": 2.0, "peak_mb": 20.0, "slices": 40},
        "sam_vit_b_unet_box": {"seconds": 1.0, "peak_mb": 25.0, "slices": 10},
        "sam_vit_b_box_zeroshot": {"seconds": 1.5, "peak_mb": 5.0, "slices": 20},
    }
    c = latency.volume_costs(rec, 58, "rss")
    assert c["unet"] == {"seconds": 1.0, "slices": 58, "peak_mb": 10.0, "memory": "rss"}
    assert c["unet_clean"]["seconds"] == 1.5 and c["unet_clean"]["peak_mb"] == 10.0
    assert c["sam_vit_b_none"]["seconds"] == 10.0 and c["sam_vit_b_none"]["peak_mb"] == 300.0  # all 40 encoded
    assert c["sam_vit_b_unet_box"]["seconds"] == 1.0 + 0.5 + 8.0 * 10 / 40 + 1.0  # U-Net, clean-up, its encoder share
    assert c["sam_vit_b_box_zeroshot"]["seconds"] == 8.0 * 20 / 40 + 1.5


def test_predict_case_records_each_stage(synth_root):
    from brainseg_utils.evaluation.inference import Models, predict_case
    from brainseg_utils.evaluation.stopwatch import Stages

    log = []
    fake = _Counting(log, size=64)
    models = Models(fake, sam={"f": {"none": fake, "box": fake}}, backends={"f": fake})
    stages = Stages()
    res = predict_case(models, discover_cases(synth_root)[0], 64, ("flair",), stages=stages)
    n = len(res["brain_z"])
    assert set(stages.record) == {"unet", "encode f", "sam_f_none", "sam_f_box", "sam_f_unet_box"}
    assert stages.record["encode f"]["slices"] == n and stages.record["sam_f_none"]["slices"] == n
    assert all(r["seconds"] >= 0 and r["peak_mb"] is not None for r in stages.record.values())
    costs = latency.volume_costs(stages.record, n)
    assert set(costs) >= {"unet", "sam_f_none", "sam_f_unet_box"} and costs["sam_f_none"]["slices"] == n


def test_peak_memory_sees_an_allocation():
    from brainseg_utils.evaluation.stopwatch import PeakMemory

    with PeakMemory(torch.device("cpu")) as mem:
        block = np.ones(200 * 2**20 // 8)  # 200 MiB, touched
        time.sleep(0.05)
        del block
    assert mem.mb is not None and 150 < mem.mb < 400


def test_speed_table_reads_every_model_and_tolerates_missing_records():
    metrics = {
        "models": {
            "unet": {"latency_ms": {"median": 5.0, "p90": 6.0, "device": "cpu", "precision": "fp32"},
                     "volume": {"seconds": 1.5, "slices": 58, "peak_mb": 0.0}},
            "unet_clean": {"latency_ms": None, "volume": {"seconds": 1.6, "slices": 58, "peak_mb": None}},
            "sam_x_box": {"latency_ms": {"median": 9.0, "p90": 9.5, "device": "cpu", "encoder_ms": {"median": 7.0}}},
        }
    }  # fmt: skip
    t = latency.speed_table(metrics)
    assert list(t.index) == ["unet", "unet_clean", "sam_x_box"]
    assert t.loc["unet", "median ms"] == 5.0 and t.loc["unet", "per volume s"] == 1.5
    assert pd.isna(t.loc["unet_clean", "median ms"]) and t.loc["unet_clean", "per volume s"] == 1.6
    assert t.loc["sam_x_box", "encoder ms"] == 7.0 and pd.isna(t.loc["sam_x_box", "per volume s"])


def test_speed_table_text_rounds_and_writes_n_a():
    metrics = {
        "models": {
            "unet": {"latency_ms": {"median": 10.965837, "p90": 12.0, "device": "cpu", "precision": "fp32"},
                     "volume": {"seconds": 1.23456, "slices": 58, "peak_mb": 12.7}},
            "unet_clean": {"latency_ms": None, "volume": {"seconds": 1.6, "slices": 58, "peak_mb": None}},
        }
    }  # fmt: skip
    t = latency.speed_table_text(metrics)
    assert t.loc["unet", "median ms"] == "11.0" and t.loc["unet", "per volume s"] == "1.23"
    assert t.loc["unet", "volume slices"] == "58" and t.loc["unet", "peak MB added"] == "13"
    assert t.loc["unet", "precision"] == "fp32" and t.loc["unet_clean", "median ms"] == "n/a"
    assert "None" not in t.to_string() and "nan" not in t.to_string()
