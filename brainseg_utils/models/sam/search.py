"""Bounded searches for checkpoint files: the places hosted platforms put them (``default_roots``) and a
breadth-first walk that stops at a depth and a folder count per root, skipping hidden folders, so a large Drive
cannot stall a notebook."""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class SearchRoot:
    """One place searched: ``path`` and up to ``max_depth`` folder levels below it (its own files are depth 0)."""

    label: str
    path: Path
    max_depth: int
    max_dirs: int = 20_000  # folders visited at most (a Drive can hold many)


def default_roots(home: str | os.PathLike | None = None) -> list[SearchRoot]:
    """The hosted-platform places, in search order (see the module docstring)."""
    home = Path(home) if home is not None else Path.home()
    project = Path(__file__).resolve().parents[3]
    roots = [
        SearchRoot("Kaggle inputs", Path("/kaggle/input"), 5),
        SearchRoot("Google Drive", Path("/content/drive/MyDrive"), 4, max_dirs=5_000),
        SearchRoot("user cache", home / ".cache", 5),
        SearchRoot("project checkpoints", project / "checkpoints", 2),
    ]
    cwd = Path.cwd() / "checkpoints"
    if cwd.resolve() != (project / "checkpoints").resolve():
        roots.append(SearchRoot("working-directory checkpoints", cwd, 2))
    return roots


@dataclass
class Walk:
    """What a search saw: candidate files in search order and one line per root."""

    candidates: list[tuple[Path, str]] = field(default_factory=list)  # (path, root label)
    looked_in: list[str] = field(default_factory=list)


def walk(roots: list[SearchRoot], names: set[str], sizes: set[int] = frozenset()) -> Walk:
    """Breadth-first, bounded search of ``roots`` for files named in ``names`` or of a size in ``sizes``.

    Symbolic links to folders are not followed (links to files are: Hugging Face snapshots use them);
    hidden folders below a root are skipped; unreadable folders are skipped silently.
    """
    out, seen = Walk(), set()
    for root in roots:
        if not root.path.is_dir():
            out.looked_in.append(f"{root.path} ({root.label}): absent")
            continue
        queue, visited, capped = deque([(root.path, 0)]), 0, False
        while queue:
            folder, depth = queue.popleft()
            if visited >= root.max_dirs:
                capped = True
                break
            visited += 1
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if depth < root.max_depth and not entry.name.startswith("."):
                            queue.append((Path(entry.path), depth + 1))
                    elif entry.is_file() and (entry.name in names or (sizes and entry.stat().st_size in sizes)):
                        key = os.path.realpath(entry.path)
                        if key not in seen:
                            seen.add(key)
                            out.candidates.append((Path(entry.path), root.label))
                except OSError:
                    continue
        note = f"stopped after {root.max_dirs:,} folders" if capped else f"{visited:,} folders"
        out.looked_in.append(f"{root.path} ({root.label}, depth <= {root.max_depth}): {note}")
    return out


# ----------------------------------------------------------------------------- checking
