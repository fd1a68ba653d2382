"""Write what is generated from the package into the repository: every notebook's bootstrap cell
(``runtime.bootstrap.CELL``, collapsed: ``runtime.bootstrap.HIDDEN`` in its metadata) and cell tagged
``parameters`` (``parameters.parameters_cell``), ``configs/full.yaml`` (``parameters.full_profile_yaml``) and
the README's Colab/Kaggle badges (``runtime.bootstrap.badges``: from ``REPO_URL``).

    python -m brainseg_utils.workflow.generate           # rewrite what is stale, print what changed
    python -m brainseg_utils.workflow.generate --check   # exit 1 naming every stale file (tests run this)

Run it after editing a default or a parameter's comment in ``config.py``, a notebook's parameter list in
``parameters.py``, the bootstrap cell, or ``REPO_URL``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

from brainseg_utils import parameters
from brainseg_utils.runtime.bootstrap import CELL, HIDDEN, badges
from brainseg_utils.runtime.io import atomic_write_text

ROOT = Path(__file__).resolve().parents[2]


def bootstrap_cell_index(cells) -> int:
    """Index of the bootstrap cell: the first code cell (after the title)."""
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "code":
            return i
    raise ValueError("notebook has no code cell")


def parameters_cell_index(cells, path: Path) -> int:
    """Index of the one cell tagged ``parameters``; an error naming ``path`` when there is not exactly one."""
    found = [i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(found) != 1:
        raise ValueError(f"{path}: expected one cell tagged 'parameters', found {len(found)}")
    return found[0]


def notebook_sources(path: Path) -> dict[int, str]:
    """cell index -> the source the generator wants there (bootstrap cell; parameters cell when the notebook
    is one of ``parameters.NOTEBOOKS``)."""
    nb = nbformat.read(path, as_version=4)
    want = {bootstrap_cell_index(nb.cells): CELL}
    if path.stem in parameters.NOTEBOOKS:
        want[parameters_cell_index(nb.cells, path)] = parameters.parameters_cell(path.stem)
    return want


def sync_notebook(path: Path, write: bool = True) -> bool:
    """True when ``path`` was stale (and, with ``write``, has been rewritten): a generated cell's source, or the
    bootstrap cell's collapsed state (``HIDDEN`` in its metadata)."""
    nb = nbformat.read(path, as_version=4)
    stale = False
    for index, source in notebook_sources(path).items():
        if nb.cells[index].source != source:
            nb.cells[index].source = source
            stale = True
    meta = nb.cells[bootstrap_cell_index(nb.cells)].metadata
    for key, value in HIDDEN.items():
        if meta.get(key) != value:
            meta[key] = value
            stale = True
    if stale and write:
        text = nbformat.writes(nb)
        atomic_write_text(path, text if text.endswith("\n") else text + "\n")
    return stale


README_ROW = re.compile(r"^(\| `(?P<notebook>\d\d_\w+)` \| .*? \| ).*\|$")


def readme_text(text: str) -> str:
    """README ``text`` with the badge cell of every row of the notebooks table (between the
    ``<!-- notebooks:start`` and ``<!-- notebooks:end -->`` markers) written from ``REPO_URL``."""
    start, end = text.find("<!-- notebooks:start"), text.find("<!-- notebooks:end -->")
    if start < 0 or end < start:
        raise ValueError("README.md: the notebooks table's markers <!-- notebooks:start ... --> / end are missing")
    rows = [README_ROW.sub(lambda m: f"{m[1]}{badges(m['notebook'])} |", line) for line in text[start:end].split("\n")]
    return text[:start] + "\n".join(rows) + text[end:]


def sync(root: str | Path = ROOT, write: bool = True) -> list[Path]:
    """Every generated file under ``root`` (notebooks/*.ipynb, configs/full.yaml, README.md's badges) that was
    stale; with ``write`` they are rewritten."""
    root = Path(root)
    stale = [p for p in sorted((root / "notebooks").glob("*.ipynb")) if sync_notebook(p, write)]
    full = root / "configs" / "full.yaml"
    text = parameters.full_profile_yaml()
    if not full.is_file() or full.read_text() != text:
        stale.append(full)
        if write:
            atomic_write_text(full, text)
    readme = root / "README.md"
    if readme.is_file() and (text := readme_text(old := readme.read_text())) != old:
        stale.append(readme)
        if write:
            atomic_write_text(readme, text)
    return stale


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only report stale files (exit 1 if any)")
    ap.add_argument("--root", default=str(ROOT), help="repository root (default: this checkout)")
    args = ap.parse_args(argv)
    stale = sync(args.root, write=not args.check)
    for p in stale:
        print(("stale: " if args.check else "updated: ") + str(p))
    if args.check and stale:
        print("run: python -m brainseg_utils.workflow.generate", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
