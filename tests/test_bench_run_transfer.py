"""benchmarks/bench_run_transfer.py: a run's every model on real-anatomy sets (a tiny run; SAM faked)."""

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_run_transfer as B  # noqa: E402

from brainseg_utils.data.brats import discover_cases  # noqa: E402
from brainseg_utils.data.slices import write_split_once  # noqa: E402
from brainseg_utils.data.volumes import load_case  # noqa: E402
from brainseg_utils.evaluation import cascade, inference  # noqa: E402
from brainseg_utils.evaluation.cascade import Cleanup  # noqa: E402
from brainseg_utils.models.unet import UNet  # noqa: E402
from brainseg_utils.runtime.checkpoints import save_checkpoint  # noqa: E402
from brainseg_utils.runtime.io import file_sha256  # noqa: E402

MODELS = ["unet", "unet_clean", "sam_f_none", "sam_f_box", "sam_f_unet_box", "sam_f_box_zeroshot"]
STORED_MM3 = 123.0  # the run's threshold: no candidate of choose_min_volume, so a re-chosen one would show


# ----------------------------------------------------------------------------- arguments
def test_set_arguments_name_equals_path(tmp_path):
    args = B.parse_args(["--run", "r", "--set", f"mni={tmp_path}", "--set", "b.2=/x/y"])
    assert args.sets == [("mni", tmp_path), ("b.2", Path("/x/y"))]
    assert (args.cases, args.sam_cases) == (0, 4)
    for bad in ("noequals", "=/path", "name=", "bad name=/p", "-x=/p"):
        with pytest.raises(argparse.ArgumentTypeError, match="--set"):
            B.parse_set(bad)


def test_bad_arguments_exit_with_a_message(capsys):
    with pytest.raises(SystemExit):
        B.parse_args(["--run", "r", "--set", "a=/p", "--set", "a=/q"])
    assert "repeated: a" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        B.parse_args(["--run", "r", "--set", "nope"])
    assert "--set wants NAME=PATH" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        B.parse_args(["--run", "r", "--set", "a=/p", "--sam-cases", "-1"])
    assert ">= 0" in capsys.readouterr().err


# ----------------------------------------------------------------------------- across sets, by hand
def _row(values):
    return {"dice": dict(enumerate(values)), **B._stats(dict(enumerate(values)))}


def test_worst_set_and_goal_misses_by_hand():
    sets = {
        "a": {"models": {"unet": _row([0.7, 0.9]), "sam_f_box": _row([0.5]), "sam_f_box_zeroshot": _row([0.6])}},
        "b": {"models": {"unet": _row([0.5, 0.6]), "sam_f_box": _row([0.8]), "sam_f_box_zeroshot": _row([0.4])}},
        "c": {"models": {"unet": _row([0.65]), "sam_f_box": _row([]), "sam_f_box_zeroshot": _row([])}},
    }
    worst = B.worst_sets(sets)
    assert worst["unet"] == {"set": "b", "mean": pytest.approx(0.55), "n": 2}
    assert worst["sam_f_box"] == {"set": "a", "mean": 0.5, "n": 1}  # c did not run SAM: not a "worst" of None
    assert worst["sam_f_box_zeroshot"]["set"] == "b"
    misses = B.goal_misses(sets)
    assert misses == [
        "sam_f_box on a: fine-tuned box 0.500 < zero-shot box 0.600 (n = 1)",
        "unet on b: mean Dice 0.550 < 0.60",
    ]
    assert B.unjudged(sets) == ["sam_f_box vs zero-shot on c: not evaluated (--sam-cases 0?)"]
    text = B.table(sets, worst)
    assert "0.550 b" in text and "n/a" in text.splitlines()[3]


# ----------------------------------------------------------------------------- a tiny run (SAM faked)
class _FakeBackend(torch.nn.Module):
    name, low_res_size, provenance = "f", 256, "fake backend"

    def __init__(self):
        super().__init__()
        self.encoded = 0

    def encode(self, x):
        self.encoded += len(x)
        return torch.zeros(len(x), 1)


class _FakeDecoder(torch.nn.Module):
    """The fine-tuned decoders predict the whole slice, the pretrained (zero-shot) one nothing."""

    low_res_size = 256

    def __init__(self, backend, prompt, img_size):
        super().__init__()
        self.sign = 1.0

    def low_res_logits(self, emb, boxes=None):
        return torch.full((len(emb), 1, 256, 256), 5.0 * self.sign)


def _fake_sam(monkeypatch):
    backend = _FakeBackend()
    monkeypatch.setattr(inference, "backend_for_decoder", lambda *a, **k: backend)
    monkeypatch.setattr(inference, "load_sam_decoder", lambda path, b, *a: (_FakeDecoder(b, "", 64), {}))

    def zero_shot(b, prompt, size):
        dec = _FakeDecoder(b, prompt, size)
        dec.sign = -1.0
        return dec

    monkeypatch.setattr(inference, "SamDecoderModel", zero_shot)  # only load_models' zero-shot decoder
    return backend


def _tiny_run(root: Path, data: Path) -> Path:
    ids = [c.case_id for c in discover_cases(data)]
    split = write_split_once(root / "data" / "splits.json", ids, (0.6, 0.2, 0.2), seed=0)
    info = {"name": "synthetic", "root": str(data), "split_sha256": split["sha256"],
            "params": {"IMG_SIZE": 64, "MODALITIES": "flair", "SLICE_STEP": 1}}  # fmt: skip
    (root / "data" / "dataset.json").write_text(json.dumps(info))
    torch.manual_seed(0)
    net, meta = UNet(base_channels=4), {"split_sha256": split["sha256"]}
    save_checkpoint(
        root / "unet" / "best.pt", {"model": net.state_dict(), "config": {"model": net.config}, "meta": meta}
    )
    for prompt in ("none", "box"):
        cfg = {"arch": "sam_decoder", "backend": "f", "prompt": prompt, "img_size": 64}
        save_checkpoint(
            root / "sam" / f"sam_f_{prompt}" / "best.pt", {"model": {}, "config": {"model": cfg}, "meta": meta}
        )
    rec = Cleanup(STORED_MM3, {}, 1, file_sha256(root / "unet" / "best.pt"), split["sha256"]).record()
    (root / "unet" / "cleanup.json").write_text(json.dumps(rec))
    metrics = {"models": {m: {"per_case": {"dice": {"mean": 0.5}}} for m in MODELS}, "settings": {"slice_step": 1},
               "provenance": {"commit": "abc", "command": "bash run_all.sh"}, "cleanup": rec}  # fmt: skip
    (root / "results").mkdir()
    (root / "results" / "metrics.json").write_text(json.dumps(metrics))
    return root


def test_every_model_on_two_sets_sam_on_the_first_cases_only(synth_root, quirky_root, tmp_path, monkeypatch):
    backend = _fake_sam(monkeypatch)
    run = _tiny_run(tmp_path / "run", synth_root)
    monkeypatch.setattr(cascade, "choose_min_volume", lambda *a, **k: pytest.fail("the threshold is re-chosen"))
    used = []
    real_clean = inference.clean_volume
    monkeypatch.setattr(inference, "clean_volume", lambda m, s, t: used.append(t) or real_clean(m, s, t))
    out = tmp_path / "res.json"
    argv = ["--run", str(run), "--set", f"synth={synth_root}", "--set", f"quirky={quirky_root}"]
    result = B.main([*argv, "--cases", "3", "--sam-cases", "1", "--out", str(out), "--no-progress"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["complete"] and result["command"].endswith("--sam-cases 1 --out " + str(out) + " --no-progress")
    assert result["run"]["provenance"]["commit"] == "abc" and result["run"]["img_size"] == 64
    assert result["run"]["cleanup"]["min_volume_mm3"] == STORED_MM3 and result["run"]["cleanup_matches_metrics_json"]
    assert used == [STORED_MM3] * 6, "the run's stored threshold on every case of both sets"
    slices = 0
    for name, root in (("synth", synth_root), ("quirky", quirky_root)):
        s = result["sets"][name]
        assert s["label"] == "real anatomy with synthetic tumours, not BraTS"
        assert s["cases"] == [c.case_id for c in discover_cases(root)][:3] and s["sam_cases"] == s["cases"][:1]
        assert list(s["models"]) == MODELS
        for model, row in s["models"].items():
            assert row["n"] == (3 if model.startswith("unet") else 1)
            assert list(row["dice"]) == s["cases"][: row["n"]]
            assert row["mean"] == pytest.approx(np.mean(list(row["dice"].values())))
            assert row["min"] == min(row["dice"].values()) and row["max"] == max(row["dice"].values())
            assert set(row["hd95"]) == set(row["dice"])
        first = s["cases"][0]
        assert s["unet_mean_on_sam_cases"] == {m: s["models"][m]["dice"][first] for m in ("unet", "unet_clean")}
        assert s["models"]["sam_f_box_zeroshot"]["mean"] == 0.0  # it predicts nothing, the tumour is there
        timing = s["seconds"]
        assert timing["per_case_all_models"] > 0 and timing["per_case_unet_models_only"] > 0
        assert "encode f" in timing["stages_per_case"] and timing["brain_slices_per_case"] > 0
        slices += len(load_case(discover_cases(root)[0], ("flair",))["brain"].any((0, 1)).nonzero()[0])
    assert backend.encoded == slices, "the encoder ran on the first case of each set only"
    assert result["worst"]["unet"]["mean"] == min(s["models"]["unet"]["mean"] for s in result["sets"].values())
    assert result["misses"] == B.goal_misses(result["sets"])
    assert result["goals_met"] == (not result["misses"] and not result["unjudged"])


# ----------------------------------------------------------------------------- errors
def test_missing_run_files_are_named_with_what_makes_them(synth_root, tmp_path, monkeypatch):
    _fake_sam(monkeypatch)
    with pytest.raises(FileNotFoundError, match="does not exist: `OUTPUT_DIR=.* bash run_all.sh`"):
        B.load_run(tmp_path / "nowhere", "cpu")
    run = _tiny_run(tmp_path / "run", synth_root)
    for rel, who in (("results/metrics.json", "notebook 04"), ("unet/cleanup.json", "notebooks 03 / 04")):
        keep = tmp_path / "keep"
        shutil.copy(run / rel, keep)
        (run / rel).unlink()
        with pytest.raises(FileNotFoundError, match=f"{rel} is missing \\({who}.* writes it\\).*bash run_all.sh"):
            B.load_run(run, "cpu")
        shutil.copy(keep, run / rel)
    shutil.rmtree(run / "sam" / "sam_f_box")
    with pytest.raises(FileNotFoundError, match="sam/sam_f_box/best.pt is missing: metrics.json reports sam_f_box"):
        B.load_run(run, "cpu")


def test_a_cleanup_of_another_checkpoint_is_refused_not_rechosen(synth_root, tmp_path, monkeypatch):
    _fake_sam(monkeypatch)
    run = _tiny_run(tmp_path / "run", synth_root)
    rec = json.loads((run / "unet" / "cleanup.json").read_text())
    (run / "unet" / "cleanup.json").write_text(json.dumps({**rec, "unet_sha256": "0" * 64}))
    with pytest.raises(ValueError, match="cleanup.json was chosen for another U-Net checkpoint"):
        B.load_run(run, "cpu")


def test_a_set_without_cases_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no labelled BraTS cases"):
        B.set_cases(tmp_path, 0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        B.set_cases(tmp_path / "none", 0)
