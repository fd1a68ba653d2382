"""Packaging and developer habits: pyproject declares the runtime dependencies; pre-commit hooks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def requirement_lines(path: Path) -> list[str]:
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            out.append(line)
    return out


def test_pyproject_declares_the_runtime_dependencies():
    """`pip install -e .` alone gives a working package: the same ranges as requirements.txt."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["dependencies"] == requirement_lines(ROOT / "requirements.txt")
    torch = [d for d in project["dependencies"] if d.startswith(("torch>", "torch=", "torchvision"))]
    assert torch == ["torch>=2.1", "torchvision>=0.16"], "torch: lower bounds only (hosted platforms bring theirs)"


def test_pre_commit_runs_ruff_and_nbstripout():
    cfg = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = {h["id"]: h for repo in cfg["repos"] for h in repo["hooks"]}
    assert {"ruff-check", "ruff-format", "nbstripout"} <= set(hooks)
    assert "jupyter" not in hooks["ruff-format"].get("types_or", []), "notebook cells are not reformatted"
    dev = " ".join(requirement_lines(ROOT / "requirements-dev.txt"))
    assert "pre-commit" in dev and "nbstripout" in dev and "ruff" in dev


def test_nbstripout_leaves_committed_notebooks_unchanged(tmp_path):
    """The hook is a no-op on the notebooks as committed (no outputs, counts or volatile metadata)."""
    pytest.importorskip("nbstripout")
    copies = []
    for src in sorted((ROOT / "notebooks").glob("*.ipynb")):
        shutil.copy(src, tmp_path / src.name)
        copies.append(tmp_path / src.name)
    subprocess.run([sys.executable, "-m", "nbstripout", "--keep-id", *map(str, copies)], check=True)
    changed = [p.name for p in copies if p.read_bytes() != (ROOT / "notebooks" / p.name).read_bytes()]
    assert not changed, f"run `nbstripout --keep-id` on {changed} (or install the pre-commit hook)"
