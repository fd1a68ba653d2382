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

from brainseg_utils.runtime.bootstrap import CELL, REPO_URL, badges, repo_slug
from brainseg_utils.workflow.generate import readme_text

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


# ----------------------------------------------------------------------------- Colab's build tools
COLAB_TOOLS = ROOT / "tests" / "colab-build-tools.txt"  # pip 24.1.2, setuptools 75.2.0 (googlecolab/backend-info)


def tracked_files(root: Path) -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=root, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return [f for f in out.stdout.splitlines() if (root / f).is_file()]


def test_checkout_builds_with_colabs_pip_and_setuptools(tmp_path):
    """The hosted install (install_hosted.py: --no-deps --no-build-isolation -e) in a fresh venv holding Colab's
    pip and setuptools, offline from the wheels set-up downloaded. A PEP 639 ``license = "MIT"`` fails here."""
    wheels = Path(sys.prefix) / "colab-build-tools"
    pins = [line for line in COLAB_TOOLS.read_text().splitlines() if line and not line.startswith("#")]
    have = sorted(p.name for p in wheels.glob("*.whl")) if wheels.is_dir() else []
    assert len(have) == len(pins), f"{wheels} lacks {pins} (found {have}): `bash run_tests.sh`'s set-up fetches them"
    checkout = tmp_path / "brainseg"  # a copy: the install writes a stamp and egg-info into the checkout
    for rel in tracked_files(ROOT):
        (checkout / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, checkout / rel)
    venv = tmp_path / "colab-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    offline = ["--no-index", "--find-links", str(wheels)]
    subprocess.run([py, "-m", "pip", "install", "-q", *offline, *pins], check=True, capture_output=True)
    for pin in pins:  # one import per process: pip's import of distutils upsets setuptools' distutils hack
        name, version = pin.split("==")
        got = subprocess.run([py, "-c", f"import {name}; print({name}.__version__)"], capture_output=True, text=True)
        assert got.stdout.strip() == version, got.stderr
    empty = tmp_path / "nothing.txt"  # the requirements themselves are not under test (they need the network)
    empty.write_text("")
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels)}
    res = subprocess.run(
        [py, str(checkout / "scripts" / "install_hosted.py"), "--requirements", str(empty)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    shown = subprocess.run([py, "-m", "pip", "show", "brainseg"], capture_output=True, text=True).stdout
    assert "Version: 0.1.0" in shown and f"Editable project location: {checkout}" in shown


# ----------------------------------------------------------------------------- the repository URL
def test_one_repository_url():
    """REPO_URL is the one copy: the bootstrap cell of each notebook and the README's badges are generated from
    it (workflow.generate --check keeps them current); no other file names the repository."""
    slug = repo_slug()
    assert f'or "{REPO_URL}"' in CELL and CELL.count(slug) == 1
    readme = (ROOT / "README.md").read_text()
    assert readme_text(readme) == readme, "README badges are stale: python -m brainseg_utils.workflow.generate"
    start, end = readme.index("<!-- notebooks:start"), readme.index("<!-- notebooks:end -->")
    assert slug not in readme[:start] + readme[end:], "README names the repository outside the generated badges"
    assert set(re.findall(r"github(?:\.com)?/([\w.-]+/[\w.-]+)/blob/main/notebooks", readme)) == {slug}
    allowed = {"brainseg_utils/runtime/bootstrap.py", "README.md"}
    for rel in tracked_files(ROOT):
        if rel in allowed or not rel.endswith(
            (".py", ".md", ".ipynb", ".sh", ".toml", ".yaml", ".yml", ".txt", ".cfg")
        ):
            continue
        text = (ROOT / rel).read_text(errors="ignore")
        expected = CELL.count(slug) if rel.startswith("notebooks/") and rel.endswith(".ipynb") else 0
        assert text.count(slug) == expected, f"{rel} names {slug}: read REPO_URL (runtime/bootstrap.py) instead"
    fork = badges("02_train_unet", "git@github.com:someone/brainseg-fork.git")
    assert "colab.research.google.com/github/someone/brainseg-fork/blob/main/notebooks/02_train_unet.ipynb" in fork
    assert "welcome?src=https://github.com/someone/brainseg-fork/blob/main/notebooks/02_train_unet.ipynb" in fork


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


def test_bootstrap_on_kaggle_with_colabs_variable_clones_into_the_working_dir(tmp_path):
    """Kaggle as published (COLAB_RELEASE_TAG set too): the cell takes the Kaggle branch, never mounts Drive."""
    from conftest import KAGGLE_ENV

    base = {k: v for k, v in os.environ.items() if k not in HOSTED_VARS}
    (tmp_path / "kaggle" / "input").mkdir(parents=True)
    vm = {**base, **KAGGLE_ENV, "BRAINSEG_KAGGLE_ROOT": str(tmp_path / "kaggle"), "BRAINSEG_COLAB_ROOT": str(tmp_path)}
    res = run_cell({**vm, "BRAINSEG_REPO": f"file://{tmp_path}/no-such-repo"}, tmp_path)
    assert res.returncode != 0 and "Kaggle: switch Internet on" in res.stderr
    assert "Drive" not in res.stdout + res.stderr and not (tmp_path / "drive").exists()
    snap = tmp_path / "snap"
    subprocess.run(["git", "init", "-q", str(snap)], check=True)
    (snap / "pyproject.toml").write_text('[project]\nname = "brainseg"\n')
    (snap / "scripts").mkdir()
    (snap / "scripts" / "install_hosted.py").write_text("print('installed here')\n")
    subprocess.run(["git", "-C", str(snap), "add", "."], check=True)
    commit = ["git", "-C", str(snap), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "s"]
    subprocess.run(commit, check=True)
    res = run_cell({**vm, "BRAINSEG_REPO": f"file://{snap}"}, tmp_path)
    assert res.returncode == 0, res.stderr
    assert (
        tmp_path / "kaggle" / "working" / "brainseg" / "pyproject.toml"
    ).is_file() and "installed here" in res.stdout
