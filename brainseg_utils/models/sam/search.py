"""Searches for checkpoint files: the places hosted platforms put them (``default_roots``) and ``walk``, a
bounded breadth-first search of them (``runtime.walk``: a folder budget per root, so a large Drive cannot
stall a notebook, and depth enough for Kaggle's model layout)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from brainseg_utils.runtime import env
from brainseg_utils.runtime.walk import DEFAULT_DEPTH, Walk


@dataclass(frozen=True)
class SearchRoot:
    """One place searched: ``path`` and up to ``max_depth`` folder levels below it (its own files are depth 0)."""

    label: str
    path: Path
    max_depth: int
    max_dirs: int = 20_000  # folders listed at most (a Drive can hold many)


def default_roots(home: str | os.PathLike | None = None) -> list[SearchRoot]:
    """The hosted-platform places, in search order. Kaggle's inputs are walked deep enough for every layout
    (``/kaggle/input/<slug>/``, ``datasets/<owner>/<slug>/``, and a Kaggle Model's
    ``models/<owner>/<model>/<framework>/<variation>/<version>/``: the file is 6 folders down); the folder
    budget, not the depth, keeps the walk cheap. Colab: Drive, then kagglehub's download cache."""
    home = Path(home) if home is not None else Path.home()
    project = Path(__file__).resolve().parents[3]
    roots = [
        SearchRoot("Kaggle inputs", env.kaggle_root() / "input", DEFAULT_DEPTH),
        SearchRoot("Google Drive", env.drive_root(), 6, max_dirs=5_000),
        SearchRoot("user cache", home / ".cache", 8),
        SearchRoot("project checkpoints", project / "checkpoints", 2),
    ]
    cwd = Path.cwd() / "checkpoints"
    if cwd.resolve() != (project / "checkpoints").resolve():
        roots.append(SearchRoot("working-directory checkpoints", cwd, 2))
    return roots


@dataclass
class Found:
    """What a search saw: candidate files in search order and one line per root."""

    candidates: list[tuple[Path, str]] = field(default_factory=list)  # (path, root label)
    looked_in: list[str] = field(default_factory=list)


def walk(roots: list[SearchRoot], names: set[str], sizes: set[int] = frozenset()) -> Found:
    """Bounded breadth-first search (``runtime.walk``) of ``roots`` for files named in ``names`` or of a size
    in ``sizes``. Links to files are followed (Hugging Face snapshots use them), links to folders are not."""
    out, seen = Found(), set()
    for root in roots:
        tree = Walk(root.path, root.max_depth, root.max_dirs)
        for _, _, entries in tree:
            for entry in entries:
                try:
                    if entry.is_file() and (entry.name in names or (sizes and entry.stat().st_size in sizes)):
                        key = os.path.realpath(entry.path)
                        if key not in seen:
                            seen.add(key)
                            out.candidates.append((Path(entry.path), root.label))
                except OSError:
                    continue
        out.looked_in.append(tree.summary(root.label))
    return out


# ----------------------------------------------------------------------------- checking
