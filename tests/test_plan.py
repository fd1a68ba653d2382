"""The run planner: workload counts against what the pipeline really builds, stage arithmetic by hand, limits,
suggestions, device scaling, the command line; calibration on tiny settings (slow)."""

from __future__ import annotations

import json

import pytest

from brainseg_utils.data.brats import discover_cases
from brainseg_utils.data.slices import SliceConfig, build_cache, make_split
from brainseg_utils.parameters import profile_configs
from brainseg_utils.plan import __main__ as cli
from brainseg_utils.plan import calibrate as cal
from brainseg_utils.plan import workload as wl
from brainseg_utils.plan.devices import DEVICES, PLATFORMS, key_for_gpu, speed_ratio
from brainseg_utils.plan.estimate import all_stages, judge, notebook_seconds, suggestions, variants
from brainseg_utils.plan.planner import reference_costs

COSTS = {  # hand-made unit costs, seconds
    "notebook_start": 5.0, "notebook_cell": 0.1, "audit_case": 1.0, "read_case": 2.0, "figure": 0.5,
    "unet_epoch_train": 0.11, "unet_epoch_val": 0.02, "unet_epoch_fixed": 1.0, "augment": 0.01, "unet_infer": 0.02,
    "unet_first": 3.0, "unet_params": 1_000_000, "encoder": 0.5, "encoder_b1": 0.6, "encoder_first": 1.0,
    "decoder_infer": 0.01, "sam_epoch_train": 0.05, "sam_epoch_val": 0.01, "sam_epoch_fixed": 0.5, "sam_build": 2.0,
    "metrics_slice": 0.001, "disk_write": 0.0, "gradio_build": 4.0,
}  # fmt: skip


@pytest.mark.parametrize("n", [5, 16, 369])
def test_split_counts_match_the_real_split(n):
    split = make_split([f"c{i:03d}" for i in range(n)], (0.7, 0.15, 0.15), seed=0)
    assert wl.split_counts(n, (0.7, 0.15, 0.15)) == tuple(len(split[k]) for k in ("train", "val", "test"))


def test_slices_per_case_match_the_slice_cache(synth_root, tmp_path, monkeypatch):
    monkeypatch.setattr(wl, "SAMPLE", 5)
    cases = discover_cases(synth_root)
    configs = profile_configs("quick", IMG_SIZE=32, SLICE_STEP=1, TUMOUR_FREE_FRACTION=0.3)
    cache = build_cache(cases, tmp_path / "slices", SliceConfig(img_size=32, slice_step=1, tumour_free_fraction=0.3),
                        progress=False)  # fmt: skip
    shape = wl.measure_cases(cases)
    assert shape.measured and shape.depth == 32
    work = wl.workload(configs, len(cases), shape)
    built = cache.manifest["n_slices"]
    assert abs(work.slices_per_case * len(cases) - built) <= 0.1 * built
    assert abs(work.tumour_slices_per_case * len(cases) - cache.manifest["n_tumour_slices"]) <= 0.1 * built


def small_workload(**over) -> wl.Workload:
    configs = profile_configs("quick")
    shape = wl.CaseShape(depth=80, tumour_slices=40, brain_slices=70, voxels=240 * 240 * 80, measured=True)
    w = wl.workload(configs, 16, shape)
    for k, v in over.items():
        setattr(w, k, v)
    return w


def test_stage_arithmetic_by_hand():
    w = small_workload(cells={"01_eda": 10})
    # quick: step 8 -> ceil(40 / 8) = 5 tumour slices + round(0.3 x 5) = 2 tumour-free ones; 12 / 2 / 2 cases
    assert (w.tumour_slices_per_case, w.slices_per_case, w.train_cases, w.val_cases) == (5.0, 7, 12, 2)
    stages = {(s.notebook, s.name): s for s in all_stages(w, COSTS, gpus=1, latency_runs=5)}
    assert stages[("01_eda", "start-up")].seconds == pytest.approx(5.0 + 10 * 0.1)
    epochs = stages[("02_train_unet", "U-Net epochs")].seconds
    assert epochs == pytest.approx(w.unet_epochs * (84 * 0.11 + 14 * 0.02 + 1.0))
    assert stages[("01_eda", "audit")].seconds == 16 * 1.0
    cache = stages[("03_finetune_sam", "embedding cache")].seconds
    assert cache == pytest.approx(min(98, w.cached_embeddings) * 0.5 + 1.0)  # + the encoder's first call
    n_var = variants(w)
    assert n_var == 5  # unet, box, none, box zero-shot, unet_box
    # per test case: read, 70 brain slices through the U-Net and the encoder (the no-prompt decoder needs them
    # all), decoders: 70 (no prompt) + 3 x 40 tumour slices (oracle box, U-Net box, zero-shot)
    pred = stages[("04_evaluate", "prediction")].seconds
    assert pred == pytest.approx(2 * (2.0 + 70 * 0.02 + 70 * 0.5 + (70 + 120) * 0.01))
    # (3 + 5) runs x (U-Net twice, 4 SAM variants x (batch-1 encoder + decoder), the split: encoder + 3 decoders)
    latency = stages[("04_evaluate", "latency")].seconds
    assert latency == pytest.approx(8 * (2 * 0.02 + 4 * (0.6 + 0.01) + 0.6 + 3 * 0.01))
    # per-volume time and memory come from the stages of the last test volume's own prediction: no extra run
    assert not [s for s in stages if "per-volume" in s[1]]
    # the box decoder's selection: the U-Net on the 2 validation cases' 70 brain slices, each read once
    assert stages[("03_finetune_sam", "U-Net on validation cases")].seconds == pytest.approx(2 * (2.0 + 70 * 0.02))
    # previews: 2 prompt modes x (zero-shot, fine-tuned) x 4 slices of decoder, a figure, the U-Net pass again
    previews = stages[("03_finetune_sam", "validation previews")].seconds
    assert previews == pytest.approx(2 * 2 * 4 * 0.01 + 0.5 + 2 * (2.0 + 70 * 0.02))
    assert stages[("05_demo", "models loaded")].seconds == pytest.approx(2.0 + 1.0 + 3.0)
    assert stages[("05_demo", "examples")].seconds == pytest.approx(3 * (2.0 + 0.02 + 0.6 + 0.01) + 0.5)
    assert stages[("05_demo", "Gradio app")].seconds == 4.0
    assert stages[("05_demo", "warm-up")].seconds == pytest.approx(3 * (0.02 + 0.6 + 0.01) + 8 * 0.02)
    halved = {(s.notebook, s.name): s for s in all_stages(w, COSTS, gpus=2, latency_runs=5)}
    assert halved[("02_train_unet", "U-Net epochs")].seconds == pytest.approx(
        w.unet_epochs * ((84 * 0.11 + 14 * 0.02) / 2 + 1.0)  # the images are shared, the epoch's fixed part is not
    )


def test_box_decoders_train_on_tumour_slices_and_a_subsample_stops_at_the_cache():
    w = small_workload(cached_embeddings=40, overflow="subsample", box_negatives=0.0)
    assert w.sam_train_slices("none") == pytest.approx(40 * 84 / 98)  # the cached share of the training slices
    assert w.sam_train_slices("box") == pytest.approx(40 * 84 / 98 * 5 / 7)  # of which those with tumour
    w.box_negatives = 0.1  # negative boxes: tumour-free slices train the box decoder too
    assert w.sam_train_slices("box") == pytest.approx(40 * 84 / 98)
    w = small_workload(cached_embeddings=40, overflow="encode")
    assert w.sam_train_slices("none") == 84 and w.encoded_on_the_fly("none") == pytest.approx(84 * 58 / 98)


def test_a_run_over_a_session_does_not_fit_and_gets_suggestions():
    w = small_workload(unet_epochs=6_000, sam_epochs=2)  # ~16 h of U-Net epochs; 8 h on two GPUs
    stages = all_stages(w, COSTS, 1, 5)
    verdict = judge(stages, PLATFORMS["kaggle"], "kaggle")
    assert not verdict.fits and "02_train_unet" in verdict.reasons[0] and "12.0 h session" in verdict.reasons[0]
    assert judge(stages, PLATFORMS["local"], "local").fits  # no limits locally
    fixes = suggestions(w, COSTS, 1, "kaggle", 5)
    assert fixes and all(f["fits"] for f in fixes)
    assert fixes[0]["change"].startswith("NUM_GPUS=2")
    assert sum(notebook_seconds(stages).values()) == pytest.approx(sum(s.seconds for s in stages), abs=0.5)


def test_kept_output_cap():
    w = small_workload()
    costs = {**COSTS, "unet_params": 2e9}  # 2 x 3 x 4 x 2e9 bytes of checkpoints
    verdict = judge(all_stages(w, costs, 1, 5), PLATFORMS["kaggle"], "kaggle")
    assert not verdict.fits and any("kept output" in r for r in verdict.reasons)


def test_devices_and_reference_scaling():
    assert speed_ratio("h200", "h200") == 1 and speed_ratio("t4", "h200") > 5 > speed_ratio("a100", "h200") > 1
    assert key_for_gpu("Tesla T4") == "t4" and key_for_gpu("NVIDIA H200") == "h200" and key_for_gpu("GTX 1080") is None
    assert not DEVICES["p100"].supported
    full = reference_costs(profile_configs("full"), "litemedsam")
    check = json.loads((cal.Path(__file__).parents[1] / "benchmarks/results/gpu-h200/gpu-check.json").read_text())
    assert full["unet_infer"] == pytest.approx(1 / check["unet_inference"]["images_per_s"])  # 240 px, width 64
    small = reference_costs(profile_configs("full", IMG_SIZE=120, UNET_BASE_CHANNELS=32), "litemedsam")
    assert small["unet_infer"] == pytest.approx(full["unet_infer"] / 16) and small["encoder"] == full["encoder"]


def test_command_line_errors(capsys):
    with pytest.raises(SystemExit) as err:
        cli.main(["--cases", "2"])
    assert err.value.code == 2 and "--cases must be >= 3" in capsys.readouterr().err
    assert cli.main(["--device", "v100"]) == 2 and "options cpu, t4" in capsys.readouterr().err
    assert cli.main(["--platform", "binder"]) == 2 and "options kaggle" in capsys.readouterr().err


@pytest.mark.slow
def test_calibration_measures_and_is_cached(synth_root, tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("BRAINSEG_CACHE", str(tmp_path))
    configs = profile_configs("quick", IMG_SIZE=32, UNET_BASE_CHANNELS=4, UNET_BATCH_SIZE=2, SAM_ENCODE_BATCH=1,
                              SAM_BATCH_SIZE=2)  # fmt: skip
    case = discover_cases(synth_root)[0]
    out = cal.calibrate(configs, case, torch.device("cpu"))
    costs = out["costs"]
    for name in ("unet_epoch_train", "unet_epoch_val", "unet_infer", "augment", "encoder", "encoder_b1",
                 "sam_epoch_train", "sam_epoch_val", "decoder_infer", "sam_build", "read_case", "audit_case",
                 "metrics_slice", "figure", "notebook_start", "disk_write"):  # fmt: skip
        assert isinstance(costs[name], float) and costs[name] > 0, name
    assert costs["unet_epoch_train"] > costs["unet_epoch_val"] and costs["sam_backend"] == "litemedsam"
    assert costs["sam_epoch_train"] > costs["sam_epoch_val"]  # a step (forward, backward, AdamW) > a forward
    assert list((tmp_path / "plan").glob("calibration-*.json"))
    monkeypatch.setattr(cal, "unet_costs", lambda *a: pytest.fail("measured again"))
    assert cal.calibrate(configs, case, torch.device("cpu")) == json.loads(json.dumps(out))


def test_training_is_timed_through_the_engine():
    import torch

    from brainseg_utils.plan import overheads

    configs = profile_configs("quick", IMG_SIZE=32, UNET_BASE_CHANNELS=4, UNET_BATCH_SIZE=2, UNET_EMA_DECAY=0.9)
    out = overheads.unet_training(configs, 1, torch.device("cpu"))
    assert set(out) == {"unet_epoch_train", "unet_epoch_val", "unet_epoch_fixed"}
    assert out["unet_epoch_train"] > out["unet_epoch_val"] > 0 and out["unet_epoch_fixed"] >= 0


def test_notebook_cells_and_scaled_costs():
    from brainseg_utils.plan.planner import ROOT, scaled_costs

    cells = wl.notebook_cells(ROOT / "notebooks")
    nb = json.loads((ROOT / "notebooks" / "02_train_unet.ipynb").read_text())
    assert cells["02_train_unet"] == 1 + sum(c["cell_type"] == "code" for c in nb["cells"])  # + papermill's
    assert set(cells) == {"01_eda", "02_train_unet", "03_finetune_sam", "04_evaluate", "05_demo"}
    full = profile_configs("full")
    t4 = scaled_costs(full, COSTS, "t4")
    ref = reference_costs(full, "litemedsam")
    ratio = speed_ratio("t4", "h200")
    assert t4["encoder"] == pytest.approx(ref["encoder"] * ratio)
    assert t4["unet_epoch_train"] == pytest.approx(ref["unet_train"] * ratio + COSTS["augment"])  # CPU side as here
    assert t4["sam_epoch_train"] == pytest.approx(ref["decoder_train"] * ratio)


def t4_context(platform: str = "kaggle"):
    from brainseg_utils.plan.planner import Context

    costs = {**COSTS, "unet_epoch_train": 0.03, "unet_epoch_val": 0.005, "encoder": 0.2, "encoder_b1": 0.2,
             "sam_epoch_train": 0.08, "sam_epoch_val": 0.03, "decoder_infer": 0.03}  # fmt: skip
    return Context("full", "t4", True, "test", platform, "brats2020", 369, wl.typical_brats(), costs, {})


@pytest.mark.parametrize("platform", ["kaggle", "colab"])
def test_auto_picks_the_first_level_that_fits_and_names_its_cuts(platform):
    from brainseg_utils.plan import auto

    ctx = t4_context(platform)
    plan = auto.choose(ctx)
    assert plan["fits"] and plan["profile"] == "auto" and plan["level"] > 0
    for level in range(plan["level"]):  # every larger setting does not fit
        gb, room = auto.cache_budget(ctx, auto.LADDER[level], auto.free_disk(ctx))
        assert not (room and ctx.plan(1, None, {**auto.LADDER[level], "SAM_CACHE_BUDGET_GB": gb})["fits"])
    step = auto.LADDER[plan["level"]]
    assert {c["parameter"]: c["chosen"] for c in plan["cuts"]} == step
    w = plan["workload"]
    assert w["cached_embeddings"] == w["train_slices"] + w["val_slices"]  # both models on the same slices
    limit = 0.9 * PLATFORMS[platform].session_s
    assert max(plan["notebooks"].values()) <= limit
    assert platform == "kaggle" or plan["total_seconds"] <= limit  # a Colab VM carries every notebook


def test_auto_sizes_the_cache_from_the_free_disk(monkeypatch):
    from brainseg_utils.plan import auto

    monkeypatch.setattr(auto, "free_disk", lambda ctx: 12e9)  # every train + val embedding: > 12 GB at any level
    plan = auto.choose(t4_context())
    assert not plan["fits"] and plan["level"] == len(auto.LADDER) - 1
    assert any("does not fit the free disk" in r for r in plan["why_not"])
    monkeypatch.setattr(auto, "free_disk", lambda ctx: 40e9)  # SLICE_STEP 2 needs ~33 GB + slices + 5 GB reserve
    plan = auto.choose(t4_context())
    assert plan["fits"] and plan["cache_fits_disk"] and plan["overrides"]["SLICE_STEP"] >= 3
    assert plan["overrides"]["SAM_CACHE_BUDGET_GB"] * 1e9 >= plan["workload"]["cached_embeddings"] * 2 * 1024**2


def test_record_writes_a_profile_the_pipeline_can_run(tmp_path):
    from brainseg_utils.parameters import load_profile
    from brainseg_utils.plan import auto

    plan = auto.choose(t4_context())
    cli.record(plan, tmp_path)
    assert json.loads((tmp_path / "plan.json").read_text())["level"] == plan["level"]
    assert load_profile(str(tmp_path / "auto.yaml")) == plan["overrides"]
    assert "# cut SLICE_STEP" in (tmp_path / "auto.yaml").read_text() or plan["level"] < 2


def test_the_notebooks_plan_cell(tmp_path, monkeypatch, capsys):
    from brainseg_utils.plan import auto
    from brainseg_utils.plan.check import OverSessionError, plan_check
    from brainseg_utils.runtime import env
    from brainseg_utils.runtime.io import atomic_write_json
    from brainseg_utils.runtime.paths import RunDir

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    run = RunDir(tmp_path)
    assert plan_check(run, "02_train_unet", {}) is None  # a CPU without a recorded plan: only the hint
    assert "python -m brainseg_utils.plan" in capsys.readouterr().out
    plan = auto.choose(t4_context())
    atomic_write_json(run.plan, plan)
    assert plan_check(run, "03_finetune_sam", {})["level"] == plan["level"]
    out = capsys.readouterr().out
    assert "this notebook ~" in out and "fits the session" in out and "SLICE_STEP 1->" in out
    over = {**plan, "fits": False, "why_not": ["03_finetune_sam needs 13.0 h"]}
    atomic_write_json(run.plan, over)
    monkeypatch.setattr(env, "platform", lambda: "kaggle")
    with pytest.raises(OverSessionError, match="ALLOW_OVER_SESSION=1"):
        plan_check(run, "03_finetune_sam", {}, environ={})
    assert plan_check(run, "03_finetune_sam", {}, environ={"ALLOW_OVER_SESSION": "1"})["fits"] is False
    assert "going on although" in capsys.readouterr().out
    monkeypatch.setattr(env, "platform", lambda: "local")  # a plan made for Kaggle does not stop a local run
    assert plan_check(run, "03_finetune_sam", {}, environ={}) is not None
