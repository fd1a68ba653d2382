"""The notebooks' bootstrap cell: its one source (every notebook's second cell must equal ``CELL``).

On Colab / Kaggle the cell clones the project and installs it with its requirements; locally it is a
no-op. The cell cannot import this module (the package is not installed yet when it runs), so the text
lives here as a constant: ``tests/test_notebooks.py`` checks that all five notebooks carry it verbatim,
and ``python -m brainseg_utils.bootstrap`` rewrites the notebooks' cell after ``CELL`` is edited.
"""

from __future__ import annotations

import sys
from pathlib import Path

CELL = """\
# Bootstrap: on Colab / Kaggle, fetch the project and install what the platform lacks
# (their torch already has CUDA). Locally this cell does nothing: run `bash run_all.sh` once,
# or `pip install -e .` in your environment.
import os, subprocess, sys

if "google.colab" in sys.modules or "KAGGLE_KERNEL_RUN_TYPE" in os.environ:
    try:
        import brainseg_utils  # noqa: F401  (already installed in this session)
    except ImportError:
        repo = os.environ.get("BRAINSEG_REPO", "https://github.com/brainseg-project/brainseg.git")
        if not os.path.isfile("brainseg/pyproject.toml"):
            # Kaggle: switch Internet on in the notebook settings for this step.
            subprocess.run(["git", "clone", "--depth", "1", repo, "brainseg"], check=True)
        os.chdir("brainseg")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", "requirements.txt", "."], check=True)"""

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def bootstrap_cell_index(cells) -> int:
    """Index of the bootstrap cell: the first code cell (after the title)."""
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "code":
            return i
    raise ValueError("notebook has no code cell")


def sync(folder: str | Path = NOTEBOOKS) -> list[Path]:
    """Write ``CELL`` into the bootstrap cell of every ``*.ipynb`` under ``folder``; returns those changed."""
    import nbformat

    changed = []
    for path in sorted(Path(folder).glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        cell = nb.cells[bootstrap_cell_index(nb.cells)]
        if cell.source != CELL:
            cell.source = CELL
            nbformat.write(nb, path)
            changed.append(path)
    return changed


if __name__ == "__main__":
    for p in sync(sys.argv[1] if len(sys.argv) > 1 else NOTEBOOKS):
        print("updated", p)
