"""The main job behind ``bash run_all.sh``: pick the data and the profile, then run every notebook headless.

    python -m brainseg_utils.workflow.pipeline [extra papermill arguments, e.g. -p SEED 1]

Environment (all optional): ``DATA_ROOT`` (a BraTS 2020 training root, or ``synthetic``), ``PROFILE`` (a name in
configs/ or a .yaml path), ``OUTPUT_DIR`` (default ``outputs``), ``SYNTHETIC_DIR`` (default ``data/synthetic``),
``SEEDS`` (e.g. ``0,1,2``: the whole chain once per seed into ``OUTPUT_DIR/seed<N>/``, then the mean ± SD table
across the repeats in ``OUTPUT_DIR/results/repeats.md``; the planner plans one repeat).

Policy, the same as the notebooks' (``workflow.locate``): explicit data wins; else BraTS where the platform keeps
it; else, locally, the synthetic dataset (generated once, reused); on Colab / Kaggle a missing dataset stops the
run unless synthetic data is asked for. Profile: ``full`` for real BraTS on a GPU (``auto`` on Colab / Kaggle:
the largest full-profile setting the planner predicts to fit the session), ``quick`` otherwise. With
``PROFILE=auto``, and on Colab / Kaggle with a GPU for any profile, the planner runs first
(``OUTPUT_DIR/plan/``) and a run predicted not to fit stops before it starts unless ``ALLOW_OVER_SESSION=1``.
Each notebook is executed by papermill into ``OUTPUT_DIR/notebooks/``; the first failure stops the run, naming
the notebook and its executed copy. Nothing here passes a user string to a shell.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from brainseg_utils.config import DataConfig
from brainseg_utils.parameters import NOTEBOOKS, load_profile, profile_path
from brainseg_utils.runtime.env import allow_over_session, platform
from brainseg_utils.workflow.arguments import notebook_arguments, unknown_parameters
from brainseg_utils.workflow.locate import DataNotFoundError, choose_profile, locate_dataset, resolve_dataset

ROOT = Path(__file__).resolve().parents[2]
HOSTED = ("kaggle", "colab")
KERNEL = "brainseg"  # the kernel scripts/setup_env.sh registers for this interpreter


def choose(environ: dict) -> tuple[DataConfig, str]:
    """(the data config of this run, the profile name or path), from the environment and what is found."""
    explicit = {"DATA_ROOT": environ["DATA_ROOT"]} if environ.get("DATA_ROOT") else {}
    located = locate_dataset(DataConfig.from_params(**explicit))  # None: synthetic
    profile = environ.get("PROFILE") or choose_profile("synthetic" if located is None else "brats2020", cuda())
    if profile == "full" and not environ.get("PROFILE") and platform() in HOSTED:
        profile = "auto"  # a hosted session has an end: the largest full-profile setting that fits it
    params = {k: v for k, v in load_profile("full" if profile == "auto" else profile).items() if k in DataConfig.PARAMS}
    data = DataConfig.from_params(
        **params,
        DATA_ROOT=str(located) if located is not None else "synthetic",
        SYNTHETIC_DIR=environ.get("SYNTHETIC_DIR") or DataConfig().synthetic_dir,
    )
    return data, profile


def cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def papermill_command(notebook: str, out: Path, profile: Path, data_root: Path, output_dir: Path, extra: list[str]):
    """The argument list (no shell) that executes ``notebook`` with the profile and this run's folders, passing
    only the parameters ``notebook`` declares (``workflow.arguments``: no "Passed unknown parameter")."""
    run = [("-r", "DATA_ROOT", str(data_root)), ("-r", "OUTPUT_DIR", str(output_dir)), ("-p", "INTERACTIVE", "False")]
    params = notebook_arguments(notebook, load_profile(str(profile)), run, extra)
    return [
        sys.executable, "-m", "papermill", str(ROOT / "notebooks" / f"{notebook}.ipynb"), str(out),
        "-k", KERNEL, "--cwd", str(ROOT), "--no-progress-bar", "--log-output", *params,
    ]  # fmt: skip


def run_notebooks(profile: Path, data_root: Path, output_dir: Path, extra: list[str]) -> int:
    """Execute every notebook in order; 0 when all ran, 1 at the first failure (named)."""
    (output_dir / "notebooks").mkdir(parents=True, exist_ok=True)
    start_all = time.monotonic()
    for nb in NOTEBOOKS:
        if not (ROOT / "notebooks" / f"{nb}.ipynb").is_file():
            continue
        out = output_dir / "notebooks" / f"{nb}.ipynb"
        print(f"=== {nb}", flush=True)
        start = time.monotonic()
        if subprocess.run(papermill_command(nb, out, profile, data_root, output_dir, extra)).returncode:
            print(f"FAILED: notebook notebooks/{nb}.ipynb; the executed copy with the error is {out}", file=sys.stderr)
            return 1
        print(f"=== {nb} done in {time.monotonic() - start:.0f} s", flush=True)
    print(f"all notebooks done in {time.monotonic() - start_all:.0f} s; executed copies in {output_dir / 'notebooks'}/")
    return 0


def plan_gate(profile: str, data_root: Path, output_dir: Path, environ: dict) -> tuple[str | None, int]:
    """Before any notebook: the planner (``python -m brainseg_utils.plan --record OUTPUT_DIR/plan``, a child
    process) for ``PROFILE=auto`` and, on Colab / Kaggle with a GPU, for any profile. Returns (the profile to run:
    ``auto.yaml`` for auto, else ``profile``; 0), or (None, 2) when the run does not fit the session and
    ``ALLOW_OVER_SESSION`` is not set. Locally without auto nothing is planned (no session limit)."""
    hosted = platform() in HOSTED
    if profile != "auto" and not (hosted and cuda()):
        return profile, 0
    folder = output_dir / "plan"
    cmd = [sys.executable, "-m", "brainseg_utils.plan", "--profile", profile, "--record", str(folder)]
    if environ.get("NUM_GPUS", "auto") not in ("auto", ""):
        cmd += ["--gpus", str(environ["NUM_GPUS"])]
    elif cuda():
        import torch

        cmd += ["--gpus", str(max(1, torch.cuda.device_count()))]
    print("planning the run (python -m brainseg_utils.plan): predicted time and disk per notebook", flush=True)
    rc = subprocess.run(cmd, env={**os.environ, **environ, "DATA_ROOT": str(data_root)}).returncode
    if rc not in (0, 1):
        print(f"error: the planner failed (exit {rc}); set PROFILE to a named profile to run without it",
              file=sys.stderr)  # fmt: skip
        return None, 2
    if rc == 1 and not allow_over_session(environ):
        msg = "the run is predicted NOT to fit this platform's session (above, with suggestions)"
        print(f"error: {msg}. Change the settings, use PROFILE=auto, or set ALLOW_OVER_SESSION=1 to run anyway.",
              file=sys.stderr)  # fmt: skip
        return None, 2
    if rc == 1:
        print("ALLOW_OVER_SESSION is set: running although the plan says it does not fit", flush=True)
    return (str(folder / "auto.yaml") if profile == "auto" else profile), 0


def main(argv: list[str] | None = None, environ: dict | None = None) -> int:
    extra = list(sys.argv[1:] if argv is None else argv)
    environ = dict(os.environ if environ is None else environ)
    try:
        if unknown := unknown_parameters(extra):
            raise ValueError(f"no notebook takes the parameter(s) {unknown} (run_all.sh arguments)")
        data, profile = choose(environ)
        if profile != "auto":
            profile_path(profile)  # a missing profile fails here, before any work
        parse_seeds(environ.get("SEEDS", ""))  # so does a bad SEEDS
    except (DataNotFoundError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if data.data_root == "synthetic":
        print(f"data: no BraTS 2020 found (set DATA_ROOT to use it); synthetic dataset in {data.synthetic_dir}")
    root, _ = resolve_dataset(data)
    if data.data_root != "synthetic":
        print(f"data: BraTS-layout data at {root}")
    output_dir = Path(os.path.abspath(environ.get("OUTPUT_DIR") or "outputs"))  # absolute: notebooks use it as given
    # Recorded in metrics.json (with the git commit) so every results table names what produced it.
    os.environ["BRAINSEG_RUN_COMMAND"] = f"PROFILE={profile} bash run_all.sh" + "".join(f" {a}" for a in extra)
    chosen, rc = plan_gate(profile, root, output_dir, environ)
    if chosen is None:
        return rc
    path = profile_path(chosen)
    print(f"profile: {profile} ({path})  outputs: {output_dir}", flush=True)
    seeds = parse_seeds(environ.get("SEEDS", ""))
    if seeds is None:
        return run_notebooks(path, root, output_dir, extra)
    return run_repeats(seeds, path, root, output_dir, extra)


def parse_seeds(text: str) -> list[int] | None:
    """``SEEDS`` ("0,1,2"): the seeds of repeated runs (>= 2, distinct integers), or None when unset."""
    if not text.strip():
        return None
    try:
        seeds = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise ValueError(f"SEEDS must be comma-separated integers such as 0,1,2; got {text!r}") from None
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ValueError(f"SEEDS needs at least two distinct seeds (e.g. 0,1,2); got {text!r}")
    return seeds


def run_repeats(seeds: list[int], profile: Path, data_root: Path, output_dir: Path, extra: list[str]) -> int:
    """The whole chain once per seed into ``OUTPUT_DIR/seed<N>/`` (``SEED`` seeds the patient split and training,
    so each repeat is a new random split with every model retrained), then the mean ± SD table across them
    (``evaluation/repeats.py``) in ``OUTPUT_DIR/results/repeats.md`` and ``repeats.json``."""
    from brainseg_utils.evaluation.repeats import aggregate, repeats_markdown
    from brainseg_utils.runtime.io import atomic_write_json, atomic_write_text

    files, command = [], os.environ.get("BRAINSEG_RUN_COMMAND", "bash run_all.sh")
    for i, seed in enumerate(seeds, start=1):
        folder = output_dir / f"seed{seed}"
        print(f"##### repeat {i} of {len(seeds)}: SEED={seed} -> {folder}", flush=True)
        os.environ["BRAINSEG_RUN_COMMAND"] = f"SEEDS={','.join(map(str, seeds))} {command} (this repeat: SEED={seed})"
        if run_notebooks(profile, data_root, folder, [*extra, "-p", "SEED", str(seed)]):
            return 1
        files.append(folder / "results" / "metrics.json")
    agg = aggregate([json.loads(f.read_text()) for f in files], [str(f) for f in files])
    atomic_write_json(output_dir / "results" / "repeats.json", agg)
    atomic_write_text(output_dir / "results" / "repeats.md", repeats_markdown(agg))
    print(f"repeats: mean ± SD across {len(seeds)} runs in {output_dir / 'results' / 'repeats.md'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
