"""workflow/pipeline.py (what run_all.sh runs): data and profile choice, papermill calls, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from brainseg_utils.config import DataConfig
from brainseg_utils.parameters import load_profile
from brainseg_utils.workflow import pipeline


@pytest.fixture
def plain(monkeypatch):
    """A plain machine: no hosted platform variables, no GPU."""
    for var in ("COLAB_RELEASE_TAG", "KAGGLE_KERNEL_RUN_TYPE", "KAGGLE_URL_BASE", "PROFILE", "DATA_ROOT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(pipeline, "cuda", lambda: False)


def test_no_data_locally_means_synthetic_data_at_the_quick_profile(plain):
    data, profile = pipeline.choose({})
    quick = load_profile("quick")
    assert profile == "quick" and data.data_root == "synthetic"
    assert (data.synthetic_cases, data.synthetic_depth, data.img_size) == (
        quick["SYNTHETIC_CASES"],
        quick["SYNTHETIC_DEPTH"],
        quick["IMG_SIZE"],
    )
    assert data.synthetic_dir == DataConfig().synthetic_dir


def test_profile_and_synthetic_dir_from_the_environment(plain, tmp_path):
    data, profile = pipeline.choose({"PROFILE": "full", "SYNTHETIC_DIR": str(tmp_path / "s")})
    assert profile == "full" and data.synthetic_cases == DataConfig().synthetic_cases
    assert data.synthetic_dir == str(tmp_path / "s")


def test_brats_found_on_a_gpu_gets_the_full_profile(plain, monkeypatch, tmp_path):
    monkeypatch.setattr(pipeline, "cuda", lambda: True)
    monkeypatch.setattr(pipeline, "locate_dataset", lambda cfg: tmp_path)
    data, profile = pipeline.choose({})
    assert profile == "full" and data.data_root == str(tmp_path)


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"DATA_ROOT": "/nonexistent/brats"}, "/nonexistent/brats"),
        ({"PROFILE": "nope"}, "profile 'nope'"),
    ],
)
def test_bad_environment_exits_2_naming_the_cause(plain, capsys, environ, message):
    assert pipeline.main([], environ) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_papermill_command_is_an_argument_list_with_the_run_folders(tmp_path):
    cmd = pipeline.papermill_command(
        "02_train_unet",
        tmp_path / "o.ipynb",
        Path("configs/quick.yaml"),
        tmp_path / "d",
        tmp_path / "out",
        ["-p", "SEED", "1; rm -rf /"],
    )
    assert cmd[1:3] == ["-m", "papermill"] and cmd[3].endswith("notebooks/02_train_unet.ipynb")
    assert "DATA_ROOT" not in cmd and "INTERACTIVE" not in cmd  # notebook 02 declares neither
    assert cmd[cmd.index("OUTPUT_DIR") + 1] == str(tmp_path / "out")
    assert cmd[-3:] == ["-p", "SEED", "1; rm -rf /"]  # passed as one argument, never through a shell
    cmd = pipeline.papermill_command("01_eda", tmp_path / "o.ipynb", Path("configs/quick.yaml"), tmp_path / "d",
                                     tmp_path / "out", [])  # fmt: skip
    assert cmd[cmd.index("DATA_ROOT") + 1] == str(tmp_path / "d") and cmd[cmd.index("INTERACTIVE") + 1] == "False"


def test_each_notebook_is_passed_only_the_parameters_it_declares(tmp_path):
    """No "Passed unknown parameter": the profile, -f / -y files and -p pairs are filtered per notebook."""
    import yaml

    from brainseg_utils.parameters import NOTEBOOKS
    from brainseg_utils.workflow.arguments import notebook_arguments, unknown_parameters

    profile = load_profile("quick")
    user = tmp_path / "mine.yaml"
    user.write_text("UNET_EPOCHS: 7\nSAM_EPOCHS: 3\n")
    extra = ["-f", str(user), "-p", "UNET_LR", "0.01", "-r", "SAM_BACKEND", "medsam", "--execution-timeout", "60"]
    run = [("-r", "OUTPUT_DIR", "/o"), ("-p", "INTERACTIVE", "False")]
    for nb, spec in NOTEBOOKS.items():
        args = notebook_arguments(nb, profile, run, extra)
        values = yaml.safe_load(args[1]) if args[:1] == ["-y"] else {}
        pairs = [args[i + 1] for i, a in enumerate(args) if a in ("-p", "-r")]
        assert set(values) | set(pairs) <= set(spec.params), nb
        assert args[-2:] == ["--execution-timeout", "60"]
    args = notebook_arguments("02_train_unet", profile, run, extra)
    values = yaml.safe_load(args[1])
    assert values["UNET_EPOCHS"] == 7 and "SAM_EPOCHS" not in values  # the user's file wins over the profile
    assert values["UNET_BASE_CHANNELS"] == profile["UNET_BASE_CHANNELS"] and "IMG_SIZE" not in values
    assert args[2:5] == ["-r", "OUTPUT_DIR", "/o"] and "INTERACTIVE" not in args and "SAM_BACKEND" not in args
    assert args[args.index("UNET_LR") - 1 : args.index("UNET_LR") + 2] == ["-p", "UNET_LR", "0.01"]
    assert "UNET_LR" not in notebook_arguments("01_eda", profile, run, extra)
    assert unknown_parameters(["-p", "UNET_EPOCS", "3", "-y", "SEED: 1"]) == ["UNET_EPOCS"]


def test_a_parameter_no_notebook_takes_stops_the_run(plain, capsys):
    assert pipeline.main(["-p", "UNET_EPOCS", "3"], {}) == 2
    assert "UNET_EPOCS" in capsys.readouterr().err


def test_a_failing_notebook_stops_the_run_naming_it(monkeypatch, tmp_path, capsys):
    calls = []

    class Done:
        def __init__(self, rc):
            self.returncode = rc

    def fake_run(cmd):
        calls.append(cmd[3])
        return Done(1 if "03_finetune_sam" in cmd[3] else 0)

    monkeypatch.setattr(pipeline.subprocess, "run", fake_run)
    rc = pipeline.run_notebooks(Path("configs/quick.yaml"), tmp_path / "d", tmp_path / "out", [])
    assert rc == 1 and [Path(c).stem for c in calls] == ["01_eda", "02_train_unet", "03_finetune_sam"]
    assert "FAILED: notebook notebooks/03_finetune_sam.ipynb" in capsys.readouterr().err


def test_brats_on_a_hosted_gpu_gets_the_auto_profile_unless_one_is_named(plain, monkeypatch, tmp_path):
    monkeypatch.setattr(pipeline, "cuda", lambda: True)
    monkeypatch.setattr(pipeline, "platform", lambda: "kaggle")
    monkeypatch.setattr(pipeline, "locate_dataset", lambda cfg: tmp_path)
    data, profile = pipeline.choose({})
    assert profile == "auto" and data.slice_step == DataConfig().slice_step  # the full profile's data settings
    assert pipeline.choose({"PROFILE": "full"})[1] == "full"


class Done:
    def __init__(self, rc):
        self.returncode = rc


@pytest.mark.parametrize(
    "where, gpu, profile, planned",
    [("local", False, "quick", False), ("local", True, "full", False), ("local", False, "auto", True),
     ("kaggle", True, "full", True), ("colab", False, "quick", False)],
)  # fmt: skip
def test_the_planner_runs_first_for_auto_and_on_hosted_gpus(plain, monkeypatch, tmp_path, where, gpu, profile, planned):
    calls = []
    monkeypatch.setattr(pipeline, "platform", lambda: where)
    monkeypatch.setattr(pipeline, "cuda", lambda: gpu)
    monkeypatch.setattr(pipeline.subprocess, "run", lambda cmd, env: calls.append((cmd, env)) or Done(0))
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    chosen, rc = pipeline.plan_gate(profile, tmp_path / "data", tmp_path / "out", {})
    assert rc == 0 and bool(calls) == planned
    if planned:
        cmd, env = calls[0]
        assert cmd[1:5] == ["-m", "brainseg_utils.plan", "--profile", profile]
        assert cmd[cmd.index("--record") + 1] == str(tmp_path / "out" / "plan") and env["DATA_ROOT"] == str(
            tmp_path / "data"
        )
        assert ("--gpus" in cmd) == gpu and (not gpu or cmd[cmd.index("--gpus") + 1] == "2")
    assert chosen == (str(tmp_path / "out" / "plan" / "auto.yaml") if profile == "auto" else profile)


def test_a_run_over_the_session_stops_before_it_starts_unless_allowed(plain, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(pipeline, "platform", lambda: "kaggle")
    monkeypatch.setattr(pipeline, "cuda", lambda: True)
    monkeypatch.setattr(pipeline.subprocess, "run", lambda cmd, env: Done(1))  # the planner: does not fit
    assert pipeline.plan_gate("full", tmp_path, tmp_path / "out", {}) == (None, 2)
    err = capsys.readouterr().err
    assert "NOT to fit" in err and "ALLOW_OVER_SESSION=1" in err and "PROFILE=auto" in err
    assert pipeline.plan_gate("full", tmp_path, tmp_path / "out", {"ALLOW_OVER_SESSION": "True"}) == ("full", 0)
    monkeypatch.setattr(pipeline.subprocess, "run", lambda cmd, env: Done(2))  # the planner itself failed
    assert pipeline.plan_gate("full", tmp_path, tmp_path / "out", {"ALLOW_OVER_SESSION": "1"}) == (None, 2)
    assert "the planner failed" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, want",
    [("", None), (" ", None), ("0,1,2", [0, 1, 2]), ("3, 7", [3, 7]), ("1,2,", [1, 2])],
)
def test_seeds_parse(text, want):
    assert pipeline.parse_seeds(text) == want


@pytest.mark.parametrize("text, message", [("0", "at least two"), ("1,1", "distinct"), ("0,a", "integers")])
def test_bad_seeds_stop_the_run_before_any_work(plain, capsys, monkeypatch, text, message):
    monkeypatch.setattr(pipeline, "run_notebooks", lambda *a: pytest.fail("ran although SEEDS is bad"))
    assert pipeline.main([], {"SEEDS": text, "DATA_ROOT": "synthetic"}) == 2
    err = capsys.readouterr().err
    assert "SEEDS" in err and message in err


def _metrics(seed: int, dice: dict) -> dict:
    """A metrics.json with the fields repeats.aggregate reads: per-patient mean Dice per model."""
    return {
        "dataset": {"name": "synthetic", "split_sha256": f"split{seed}", "n_test_cases": 2},
        "models": {m: {"per_case": {"dice": {"mean": d}}} for m, d in dice.items()},
        "statistics": {},
    }


def test_seeds_run_the_chain_per_seed_and_write_mean_and_sd(monkeypatch, tmp_path):
    import json

    runs = []
    dice = {0: {"unet": 0.8, "sam_x_none": 0.6}, 1: {"unet": 0.7, "sam_x_none": 0.5}}

    def fake_run(profile, data_root, folder, extra):
        seed = int(extra[extra.index("SEED") + 1])
        runs.append((folder.name, extra))
        (folder / "results").mkdir(parents=True)
        (folder / "results" / "metrics.json").write_text(json.dumps(_metrics(seed, dice[seed])))
        return 0

    monkeypatch.setattr(pipeline, "run_notebooks", fake_run)
    assert pipeline.run_repeats([0, 1], Path("p.yaml"), tmp_path / "d", tmp_path, ["-p", "X", "1"]) == 0
    assert runs == [("seed0", ["-p", "X", "1", "-p", "SEED", "0"]), ("seed1", ["-p", "X", "1", "-p", "SEED", "1"])]
    agg = json.loads((tmp_path / "results" / "repeats.json").read_text())
    assert agg["n_repeats"] == 2
    assert agg["models"]["unet"]["dice"]["mean"] == pytest.approx(0.75)
    assert agg["models"]["unet"]["dice"]["sd"] == pytest.approx(0.0707107, abs=1e-6)  # sqrt(2 * 0.05^2 / 1)
    md = (tmp_path / "results" / "repeats.md").read_text()
    assert "0.750 ± 0.071" in md and "2 runs on synthetic data" in md


def test_a_failing_repeat_stops_the_repeats(monkeypatch, tmp_path):
    monkeypatch.setattr(pipeline, "run_notebooks", lambda *a: 1)
    assert pipeline.run_repeats([0, 1], Path("p.yaml"), tmp_path / "d", tmp_path, []) == 1
    assert not (tmp_path / "results" / "repeats.md").exists()
