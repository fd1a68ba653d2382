
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from brainseg_utils import evaluate as ev
from brainseg_utils.brats import discover_cases
from brainseg_utils.checkpoints import save_checkpoint
from brainseg_utils.unet import UNet


def test_to_native_undoes_padding_and_resize():
    prob = torch.zeros(1, 8, 8)
    prob[0, 2:6, 2:6] = 1.0
    out = ev.to_native(prob, 16, 16)
    assert out.shape == (1, 16, 16) and out[0, 5:11, 5:11].all() and not out[0, :3].any()
    wide = ev.to_native(torch.ones(1, 8, 8), 12, 16)  # padded to 16 x 16, rows cropped back to 12
    assert wide.shape == (1, 12, 16) and wide.all()


def test_checkpoint_from_another_split_is_refused(tmp_path):
    p = tmp_path / "best.pt"
    save_checkpoint(p, {"model": UNet(base_channels=4).state_dict(), "config": {"model": UNet(base_channels=4).config},
                        "meta": {"split_sha256": "a" * 64}})
    model, _ = ev.load_unet(p, "a" * 64)
    assert model.config["base_channels"] == 4
    with pytest.raises(ValueError, match="was trained on split aaaaaaaaaaaa…, but splits.json has bbbbbbbbbbbb…"):
        ev.load_unet(p, "b" * 64)


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


def test_summary_statistics_by_hand():
    per_case = pd.DataFrame({"model": ["unet"] * 3 + ["sam_x_none"] * 3, "case_id": ["a", "b", "c"] * 2,
                             "dice": [0.8, 0.6, 0.7, 0.5, 0.4, 0.6], "iou": 0.5, "precision": 0.5, "recall": 0.5,
                             "hd95": 3.0, "tumour_ml": 1.0})
    per_slice = pd.DataFrame({"model": ["unet"] * 4 + ["sam_x_none"] * 4, "case_id": "a", "z": [0, 1, 2, 3] * 2,
                              "has_tumour": [True, True, False, False] * 2, "tumour_px": [5, 5, 0, 0] * 2,
                              "pred_px": [4, 6, 0, 3, 0, 2, 1, 1], "dice": [0.9, 0.7, 1.0, 0.0, 0.0, 0.5, 0.0, 0.0],
                              "iou": 0.5, "precision": 0.5, "recall": 0.5, "hd95": 1.0})
    s = ev.summarise(per_case, per_slice)
    assert s["unet"]["per_case"]["dice"]["mean"] == pytest.approx(0.7)
    assert s["unet"]["per_slice"]["dice"]["mean"] == pytest.approx(0.65)
    assert s["unet"]["per_slice_tumour"]["dice"]["mean"] == pytest.approx(0.8)
    assert s["unet"]["false_positive_rate"]["value"] == pytest.approx(0.5)
    assert s["sam_x_none"]["false_positive_rate"]["value"] == pytest.approx(1.0)
    lo, hi = s["unet"]["per_case"]["dice"]["ci95"]
    assert 0.6 - 1e-9 <= lo <= 0.7 <= hi <= 0.8 + 1e-9
    tests = ev.paired_tests(per_case)
    assert set(tests) == {"sam_x_none"} and tests["sam_x_none"]["n"] == 3


def test_prompt_labels_and_parse_checkpoints():
    assert ev.prompt_of("unet") == "-"
    assert ev.prompt_of("sam_litemedsam_box") == "oracle GT box"
    assert ev.prompt_of("sam_vit_b_unet_box") == "U-Net box"
    assert ev.prompt_of("sam_vit_b_none") == "none"
    assert ev.prompt_of("sam_litemedsam_box_zeroshot").startswith("oracle GT box, zero-shot")
    assert ev.parse_checkpoints("") == {}
    assert ev.parse_checkpoints("vit_b=/a.pth, medsam=/b.pth") == {"vit_b": "/a.pth", "medsam": "/b.pth"}
    with pytest.raises(ValueError, match="backend=/path"):
        ev.parse_checkpoints("vit_b")


def test_latency_protocol_counts_runs():
    calls = []
    ms = ev.time_runs(lambda: calls.append(1), torch.device("cpu"), n_runs=5, warmup=2)
    assert len(ms) == 5 and len(calls) == 7 and all(m >= 0 for m in ms)
