"""WiSE-FT for the SAM decoder (models/sam/wise.py): the blend's arithmetic, what a checkpoint records, and that
every loader (evaluation, demo, benchmarks: ``inference.load_sam_decoder``) gets the blended weights."""

import math

import pytest
import torch

from brainseg_utils.evaluation import inference as inf
from brainseg_utils.models.sam import wise
from brainseg_utils.models.sam.backends import build_backend
from brainseg_utils.models.sam.decoder import SamDecoderModel
from brainseg_utils.runtime.checkpoints import load_checkpoint, save_checkpoint
from brainseg_utils.training import finetune


@pytest.fixture(scope="module")
def lite():
    return build_backend("litemedsam")


def test_blend_state_by_hand():
    pre = {"w": torch.tensor([0.0, 2.0, -4.0]), "n": torch.tensor(3), "h": torch.tensor([1.0], dtype=torch.float16)}
    ft = {"w": torch.tensor([4.0, 2.0, 0.0]), "n": torch.tensor(7), "h": torch.tensor([3.0], dtype=torch.float16)}
    out = wise.blend_state(pre, ft, 0.25)  # 0.75 x pre + 0.25 x ft
    torch.testing.assert_close(out["w"], torch.tensor([1.0, 2.0, -3.0]))
    assert out["n"].item() == 7, "integer buffers are the fine-tuned ones"
    assert out["h"].dtype == torch.float16 and out["h"].item() == 1.5
    assert all(torch.equal(wise.blend_state(pre, ft, 1)[k], ft[k]) for k in ft), "alpha 1: the fine-tuned weights"
    assert ft["w"].tolist() == [4.0, 2.0, 0.0], "inputs are not modified"


def test_blend_state_refuses_mismatches_and_bad_alpha():
    a = {"w": torch.zeros(2)}
    with pytest.raises(ValueError, match=r"only fine-tuned \['v'\], only pretrained \['w'\]"):
        wise.blend_state(a, {"v": torch.zeros(2)}, 0.5)
    with pytest.raises(ValueError, match=r"cannot blend w: pretrained \(2,\), fine-tuned \(3,\)"):
        wise.blend_state(a, {"w": torch.zeros(3)}, 0.5)
    for bad in (0, -0.1, 1.5, math.nan, "half", None):
        with pytest.raises(ValueError, match=r"SAM_WISE_FT must be"):
            wise.check_alpha(bad)
    assert wise.check_alpha("0.5") == 0.5 and wise.check_alpha(1) == 1.0


def _perturbed_checkpoint(lite, path, alpha=None, prompt="box"):
    """A decoder checkpoint whose weights are the pretrained ones + 1 (so a blend is easy to check)."""
    model = SamDecoderModel(lite, prompt, 64)
    state = {k: v + 1 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    meta = {"data": {"train_slices": 5, "val_slices": 2, "train_cases": 1, "val_cases": 1}}
    if alpha is not None:
        meta["wise_ft"] = wise.record(alpha, 0.5, 0.6)
    save_checkpoint(path, {"model": state, "config": {"model": model.config}, "meta": meta, "best_metric": 0.6})
    return model.state_dict(), state


@pytest.mark.parametrize("alpha", [None, 1.0, 0.5, 0.2])
def test_load_sam_decoder_applies_the_recorded_alpha(lite, tmp_path, alpha):
    pre, ft = _perturbed_checkpoint(lite, tmp_path / "best.pt", alpha)
    model, ckpt = inf.load_sam_decoder(tmp_path / "best.pt", lite)
    got = model.state_dict()
    a = 1.0 if alpha is None else alpha
    name = "mask_decoder.output_upscaling.0.weight"
    torch.testing.assert_close(got[name], pre[name] + a)  # (1 - a) x pre + a x (pre + 1)
    note = inf.training_data(ckpt).get("note", "")
    assert ("WiSE-FT alpha" in note) == (a < 1), note
    assert inf.training_data(ckpt).get("wise_ft_alpha") == alpha, "what metrics.json and the README state"
    assert ckpt["model"][name].equal(ft[name]), "the file keeps the weights training produced"


def test_a_bad_recorded_alpha_names_the_file(lite, tmp_path):
    _perturbed_checkpoint(lite, tmp_path / "best.pt")
    ckpt = load_checkpoint(tmp_path / "best.pt")
    ckpt["meta"]["wise_ft"] = {"alpha": 2}
    save_checkpoint(tmp_path / "best.pt", ckpt)
    with pytest.raises(ValueError, match=r"best.pt: meta.wise_ft.alpha must be in \(0, 1\]"):
        inf.load_sam_decoder(tmp_path / "best.pt", lite)


def test_record_wise_ft_scores_the_blend_and_can_be_redone(lite, tmp_path, monkeypatch):
    best = tmp_path / "best.pt"
    pre, ft = _perturbed_checkpoint(lite, best)
    name = "mask_decoder.output_upscaling.0.weight"
    seen = []

    def fake_eval(model, ds, batch_size, device, amp):  # the blended decoder is what gets scored
        offset = (model.state_dict()[name] - pre[name]).mean().item()
        seen.append(round(offset, 4))
        return {"dice": 0.4 + offset / 10}

    monkeypatch.setattr(finetune, "evaluate_dataset", fake_eval)
    cfg = finetune.TrainConfig(device="cpu", batch_size=2)
    rec = finetune.record_wise_ft(best, lite, None, cfg, 0.5)
    assert seen == [0.5] and rec["alpha"] == 0.5 and rec["val_dice"] == pytest.approx(0.45)
    assert rec["val_dice_finetuned"] == 0.6
    ckpt = load_checkpoint(best)
    assert ckpt["meta"]["wise_ft"] == rec and ckpt["meta"]["data"]["train_slices"] == 5, "meta kept, record added"
    assert ckpt["model"][name].equal(ft[name]), "weights in the file unchanged"
    loaded, _ = inf.load_sam_decoder(best, lite)
    torch.testing.assert_close(loaded.state_dict()[name], pre[name] + 0.5)
    # a later run with alpha 1 (or a resumed one) re-records without blending twice
    rec1 = finetune.record_wise_ft(best, lite, None, cfg, 1.0)
    assert rec1["alpha"] == 1.0 and rec1["val_dice"] == 0.6 and len(seen) == 1
    loaded, _ = inf.load_sam_decoder(best, lite)
    torch.testing.assert_close(loaded.state_dict()[name], ft[name])


def test_auto_chooses_the_coefficient_on_validation(lite, tmp_path, monkeypatch):
    best = tmp_path / "best.pt"
    pre, _ = _perturbed_checkpoint(lite, best)
    name = "mask_decoder.output_upscaling.0.weight"
    dice_at = {0.25: 0.50, 0.5: 0.70, 0.75: 0.65, 1.0: 0.60}  # validation prefers the halfway blend

    def fake_eval(model, ds, batch_size, device, amp):
        return {"dice": dice_at[round((model.state_dict()[name] - pre[name]).mean().item(), 4)]}

    monkeypatch.setattr(finetune, "evaluate_dataset", fake_eval)
    rec = finetune.record_wise_ft(best, lite, None, finetune.TrainConfig(device="cpu"), "auto")
    assert rec["alpha"] == 0.5 and rec["val_dice"] == 0.70 and rec["val_dice_finetuned"] == 0.60
    assert rec["chosen_on_validation"] == {"0.25": 0.5, "0.5": 0.7, "0.75": 0.65, "1": 0.6}
    loaded, _ = inf.load_sam_decoder(best, lite)
    torch.testing.assert_close(loaded.state_dict()[name], pre[name] + 0.5)
    dice_at.update({1.0: 0.70})  # a tie goes to the larger coefficient: the decoder as trained
    assert finetune.record_wise_ft(best, lite, None, finetune.TrainConfig(device="cpu"), "auto")["alpha"] == 1.0


def test_settings_parse():
    assert wise.parse_setting("auto") == "auto" == wise.parse_setting(" AUTO ")
    assert wise.parse_setting("0.25") == 0.25 and wise.candidates("auto") == wise.GRID and wise.candidates(1) == (1.0,)
    assert 1.0 in wise.GRID
    with pytest.raises(ValueError, match=r"SAM_WISE_FT must be 'auto' or a number in \(0, 1\], got 'best'"):
        wise.parse_setting("best")
    assert wise.choose({0.5: 0.7, 1.0: 0.7, 0.25: 0.1}) == 1.0


def test_sam_config_checks_the_parameter():
    from brainseg_utils.config import SamConfig

    assert SamConfig(backend="litemedsam").wise_ft == "auto"  # the default: chosen on validation
    assert SamConfig(backend="litemedsam", wise_ft=0.5).wise_ft == 0.5
    assert SamConfig(backend="litemedsam", wise_ft="auto").wise_ft == "auto"
    with pytest.raises(ValueError, match=r"SAM_WISE_FT must be 'auto' or a number in \(0, 1\]"):
        SamConfig(backend="litemedsam", wise_ft=0)
