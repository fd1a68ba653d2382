"""Installing on Colab and Kaggle (scripts/install_hosted.py, with a fake pip), the repository URL and the
bootstrap cell's clone failure."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from brainseg_utils.runtime.bootstrap import CELL, REPO_URL

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import install_hosted  # noqa: E402
from conftest import HOSTED_VARS  # noqa: E402  (the variables the `plain` fixture clears)
from hosted import fake_pip  # noqa: E402


# ----------------------------------------------------------------------------- installing (blockers 3, 10)
def test_install_plan_never_touches_the_platform_stack(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text(
        "torch>=2.1\nipykernel>=6.25  # comment\nipywidgets>=99\ntornado>=1\npyyaml>=6.0\npyyaml-x>=1; "
        "python_version>'3'\npytest>=999\nbrainseg-surely-missing>=1,<2\n"
    )
    todo, kept = install_hosted.plan(install_hosted.requirements(req))
    assert todo == ["pyyaml-x>=1; python_version>'3'", "pytest>=999", "brainseg-surely-missing>=1,<2"]
    assert any(k.startswith("ipywidgets: the platform's") for k in kept), "protected even when the range asks more"
    assert "pyyaml: " + metadata.version("pyyaml") + " already installed" in kept


def test_installer_with_a_wheelhouse_and_a_fake_pip(tmp_path):
    clone = tmp_path / "clone"
    (clone / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "install_hosted.py", clone / "scripts")
    (clone / "requirements.txt").write_text("torch>=2.1\nipykernel>=6.25\nbrainseg-surely-missing>=1\npyyaml>=6\n")
    pip, log = fake_pip(tmp_path)
    wheels = tmp_path / "input" / "wheels"
    run_env = {**os.environ, "BRAINSEG_PIP": str(pip), "FAKE_PIP_LOG": str(log), "BRAINSEG_WHEELS": str(wheels)}
    script = [sys.executable, str(clone / "scripts" / "install_hosted.py"), "--once"]
    res = subprocess.run(script, env=run_env, capture_output=True, text=True)
    assert res.returncode != 0 and f"BRAINSEG_WHEELS={wheels} is not a folder" in res.stderr
    wheels.mkdir(parents=True)
    before = {n: metadata.version(n) for n in ("torch", "ipykernel", "ipywidgets", "tornado", "pyzmq")}
    res = subprocess.run(script, env=run_env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    offline = ["install", "-q", "--no-index", "--find-links", str(wheels)]
    assert [c["args"] for c in calls] == [
        [*offline, "-c", calls[0]["args"][6], "brainseg-surely-missing>=1"],
        [*offline, "--no-deps", "--no-build-isolation", "-e", str(clone)],
    ]
    pins = calls[0]["constraints"].split()
    assert f"torch=={before['torch']}" in pins and f"ipykernel=={before['ipykernel']}" in pins
    assert f"tornado=={before['tornado']}" in pins and f"pyzmq=={before['pyzmq']}" in pins
    assert {n: metadata.version(n) for n in before} == before, "kernel packages untouched"
    res = subprocess.run(script, env=run_env, capture_output=True, text=True)  # --once: a restarted kernel
    assert "already installed" in res.stdout and len(log.read_text().splitlines()) == 2


def test_requirements_leave_the_kernel_stack_to_the_platform():
    req = (ROOT / "requirements.txt").read_text()
    assert "ipykernel" not in req.split("# ipykernel")[0].replace("ipykernel is", "")  # only in the comment
    assert "ipykernel" in (ROOT / "requirements-cpu.txt").read_text()  # local kernel for run_all.sh
    assert re.search(r"^ipywidgets>=7\.6,<9$", req, re.M), "Colab's ipywidgets 7.x must satisfy the range"
    assert "install_hosted.py" in (ROOT / "scripts" / "setup_env.sh").read_text()


# ----------------------------------------------------------------------------- the repository URL (blocker 2)
def test_one_repository_url():
    assert f'or "{REPO_URL}"' in CELL and CELL.count("github.com/brainseg-project") == 1
    owner_repo = REPO_URL.removeprefix("https://github.com/").removesuffix(".git")
    readme = (ROOT / "README.md").read_text()
    assert f"`{REPO_URL}`" in readme, "README names the URL the bootstrap cell clones"
    badges = set(re.findall(r"github(?:\.com)?/([\w.-]+/[\w.-]+)/blob/main/notebooks", readme))
    assert badges == {owner_repo}


def run_cell(env_vars: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CELL], env=env_vars, cwd=cwd, capture_output=True, text=True)


def test_bootstrap_clone_failure_shows_git_and_the_line_to_set(tmp_path):
    base = {k: v for k, v in os.environ.items() if k not in HOSTED_VARS}
    vm = {**base, "COLAB_RELEASE_TAG": "x", "BRAINSEG_COLAB_ROOT": str(tmp_path), "BRAINSEG_MOUNT_DRIVE": "0"}
    res = run_cell({**vm, "BRAINSEG_REPO": f"file://{tmp_path}/no-such-repo"}, tmp_path)
    assert res.returncode != 0
    assert f"git clone file://{tmp_path}/no-such-repo failed" in res.stderr and "fatal:" in res.stderr
    assert "%env BRAINSEG_REPO=https://github.com/<owner>/brainseg.git" in res.stderr
    assert run_cell(base, tmp_path).returncode == 0 and not list(tmp_path.iterdir()), "locally: a no-op"
