"""Slim inference weights and the Hugging Face Space folder (scripts/build_space.py) served by app.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hosted import full_unet_checkpoint

from brainseg_utils.runtime.paths import RunDir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


# ----------------------------------------------------------------------------- Hugging Face Space (blocker 12)
def test_slim_weights_load_like_the_checkpoint(tmp_path):
    import torch

    from brainseg_utils.runtime.checkpoints import export_slim, load_checkpoint

    full = full_unet_checkpoint(tmp_path / "best.pt")
    slim = export_slim(tmp_path / "best.pt", tmp_path / "best.safetensors")
    got = load_checkpoint(slim, expect_arch="unet")
    assert got["config"] == full["config"] and got["meta"] == full["meta"] and "optimizer" not in got
    assert got["model"].keys() == full["model"].keys()
    assert all(torch.equal(got["model"][k], v) for k, v in full["model"].items())
    ratio = (tmp_path / "best.pt").stat().st_size / slim.stat().st_size
    assert ratio > 2.5, f"best.pt is only {ratio:.2f}x the slim weights"  # Adam's two moments per weight
    with pytest.raises(ValueError, match="expected a 'sam_decoder' checkpoint"):
        load_checkpoint(slim, expect_arch="sam_decoder")
    run = RunDir(tmp_path / "run")
    (run.unet / "best.safetensors").write_bytes(slim.read_bytes())
    assert run.unet_best == run.unet / "best.safetensors"  # a Space ships only the slim file


@pytest.mark.notebook
def test_space_folder_builds_and_serves(tmp_path):
    import socket
    import time
    import urllib.request

    run = tmp_path / "outputs"
    full_unet_checkpoint(run / "unet" / "best.pt")
    space = tmp_path / "space"
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_space.py"), "--run", str(run), "--out", str(space)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert (space / "outputs" / "unet" / "best.safetensors").is_file() and not list(space.rglob("*.pt"))
    reqs = (space / "requirements.txt").read_text()
    for tool in ("papermill", "ipykernel", "ipywidgets", "albumentations", "pytest", "ruff", "seaborn"):
        assert tool not in reqs
    assert "sdk: gradio" in (space / "README.md").read_text()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # app.py as the Space runs it; on SIGTERM the probe records what the serving process had imported
    probe = textwrap.dedent(
        """\
        import json, runpy, signal, sys
        def dump(*_):
            pkg = sys.modules.get("brainseg_utils")
            out = {"modules": sorted(sys.modules), "package": getattr(pkg, "__file__", None)}
            json.dump(out, open("probe.json", "w"))
            sys.exit(0)
        signal.signal(signal.SIGTERM, dump)
        runpy.run_path("app.py", run_name="__main__")
        """
    )
    app_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BRAINSEG_OUTPUT_DIR")}
    app_env.update(GRADIO_SERVER_PORT=str(port), BRAINSEG_DEVICE="cpu", GRADIO_ANALYTICS_ENABLED="False")
    proc = subprocess.Popen(
        [sys.executable, "-c", probe], cwd=space, env=app_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline, page = time.monotonic() + 120, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
                break
            except OSError:
                time.sleep(1)
        log = proc.stdout.read().decode() if proc.poll() is not None else "(still running)"
        assert page is not None and "gradio" in page.lower(), log
        proc.terminate()
        proc.wait(timeout=30)
        probe_out = json.loads((space / "probe.json").read_text())
        assert probe_out["package"] == str(space / "brainseg_utils" / "__init__.py"), "the Space's own copy serves"
        loaded = set(probe_out["modules"])  # none of the notebook / training tools is needed to serve
        assert "gradio" in loaded and "safetensors" in loaded
        assert not loaded & {"papermill", "ipykernel", "ipywidgets", "albumentations", "seaborn", "pytest"}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
