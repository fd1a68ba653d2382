"""Bounded breadth-first walks of folders we do not control (Kaggle inputs, Google Drive, caches).

Hosted platforms move things: Kaggle's inputs were ``/kaggle/input/<slug>/`` and are now also
``/kaggle/input/datasets/<owner>/<slug>/``, ``/kaggle/input/notebooks/<user>/<slug>/`` and
``/kaggle/input/models/<owner>/<model>/<framework>/<variation>/<version>/``. Searches therefore look for
*structure* (a folder of BraTS cases, a run folder holding ``data/splits.json``, a checkpoint file) at any
depth up to a generous bound, and are kept cheap by a folder budget instead of a fixed depth: a large Drive
cannot stall a notebook, and the next layout change does not hide what is there.

Symbolic links to folders are not followed; hidden folders below the root are skipped; unreadable folders
are skipped silently. Callers can stop the descent into a folder (``prune``), e.g. into a found dataset.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DEPTH = 10  # far deeper than any published layout (Kaggle models: 6 levels below /kaggle/input)
DEFAULT_FOLDERS = 20_000  # folders listed at most per walk


@dataclass
class Walk:
    """One bounded walk of ``root``: iterate it for ``(folder, depth, entries)``; afterwards ``visited`` and
    ``capped`` say how much was seen (``summary()`` as one line for messages)."""

    root: Path
    max_depth: int = DEFAULT_DEPTH
    max_folders: int = DEFAULT_FOLDERS
    prune: Callable[[Path, list[os.DirEntry]], bool] | None = None  # True: do not descend below this folder
    visited: int = 0
    capped: bool = False

    def __iter__(self) -> Iterator[tuple[Path, int, list[os.DirEntry]]]:
        self.visited, self.capped = 0, False
        if not self.root.is_dir():
            return
        queue = deque([(self.root, 0)])
        while queue:
            if self.visited >= self.max_folders:
                self.capped = True
                return
            folder, depth = queue.popleft()
            self.visited += 1
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:
                continue
            yield folder, depth, entries
            if depth >= self.max_depth or (self.prune is not None and self.prune(folder, entries)):
                continue
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
                        queue.append((Path(entry.path), depth + 1))
                except OSError:
                    continue

    def summary(self, label: str = "") -> str:
        """One line for messages: "<root> (<label>, depth <= N): 123 folders" (or "...: absent")."""
        if not self.root.is_dir():
            return f"{self.root}{f' ({label})' if label else ''}: absent"
        seen = f"stopped after {self.max_folders:,} folders" if self.capped else f"{self.visited:,} folders"
        return f"{self.root} ({f'{label}, ' if label else ''}depth <= {self.max_depth}): {seen}"
