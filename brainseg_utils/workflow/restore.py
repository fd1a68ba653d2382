"""Earlier runs attached as Kaggle input: find every one, restore what this run lacks from all of them.

A Kaggle notebook's saved output comes back as a read-only input, at ``/kaggle/input/<slug>/`` (older) or
``/kaggle/input/notebooks/<user>/<slug>/`` (current), holding the working folder's layout, so the run folder
is ``.../brainseg/outputs/`` or ``.../outputs/`` or deeper. A run folder is recognised by its structure
(``data/splits.json``) with a bounded walk (``runtime.walk``), whatever the depth.

Users attach one output per notebook (01's data, 02's U-Net, 03's SAM decoders): every attached run with
this run's split contributes, and where two hold the same file the newest (modification time) wins. Caches
are never copied. ``restore_previous`` prints and returns what came from where.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from brainseg_utils.data.slices import load_split
from brainseg_utils.runtime import env
from brainseg_utils.runtime.paths import RunDir
from brainseg_utils.runtime.walk import Walk

log = logging.getLogger(__name__)

# What a previous run contributes (never its caches): relative to its outputs/ folder.
RESTORED = (
    "data/splits.json",
    "data/dataset.json",
    "data/audit.csv",
    "data/audit.json",
    "unet/*",
    "sam/summary.csv",
    "sam/sam_*/*",
)
CASE_GLOB = "BraTS20_*_[0-9][0-9][0-9]"  # case folders of an attached dataset: never walked into


def _run_or_dataset(folder: Path, entries) -> bool:
    if (folder / "data" / "splits.json").is_file():
        return True  # a run folder: nothing below it is another run
    return any(fnmatch.fnmatchcase(e.name, CASE_GLOB) for e in entries[:50])


def previous_outputs() -> list[Path]:
    """Run folders (holding ``data/splits.json``) under /kaggle/input, at any depth, sorted; [] off Kaggle."""
    if env.platform() != "kaggle":
        return []
    found = []
    for folder, _, _ in Walk(env.kaggle_root() / "input", prune=_run_or_dataset):
        if (folder / "data" / "splits.json").is_file():
            found.append(folder)
    return sorted(found)


@dataclass
class Restored:
    """One file copied into the run: where it went and which attached run it came from."""

    path: Path
    source: Path


def _split_of(prev: Path) -> str | None:
    try:
        return load_split(prev / "data" / "splits.json")["sha256"]
    except (ValueError, KeyError, OSError, json.JSONDecodeError) as exc:
        log.warning("ignoring %s: %s", prev, exc)
        return None


def _common_split(runs: dict[Path, str]) -> str:
    """The split most attached runs share (one experiment's notebooks); ties: the newest ``splits.json``."""
    count = {sha: sum(1 for s in runs.values() if s == sha) for sha in runs.values()}
    newest = {
        sha: max((p / "data" / "splits.json").stat().st_mtime for p, s in runs.items() if s == sha) for sha in count
    }
    return max(count, key=lambda sha: (count[sha], newest[sha]))


def _files(prev: Path) -> dict[str, Path]:
    out = {}
    for pattern in RESTORED:
        for src in prev.glob(pattern):
            if src.is_file():
                out[src.relative_to(prev).as_posix()] = src
    return out


def restore_previous(run: RunDir, runs: list[Path] | None = None) -> list[Restored]:
    """Copy what the attached earlier runs hold and ``run`` lacks (split, dataset info, checkpoints,
    histories) into ``run``, from every run with ``run``'s split (with no split yet: the split most attached
    runs share). Newest file wins when several runs hold it. Reads the inputs only."""
    candidates = previous_outputs() if runs is None else runs
    splits = {prev: sha for prev in candidates if (sha := _split_of(prev)) is not None}
    if not splits:
        return []
    mine = load_split(run.splits)["sha256"] if run.splits.exists() else _common_split(splits)
    same = [prev for prev, sha in splits.items() if sha == mine]
    for prev in sorted(set(splits) - set(same)):
        print(f"not restoring from {prev}: its split {splits[prev][:12]}… differs from {mine[:12]}…")
    best: dict[str, tuple[Path, Path]] = {}  # relative path -> (newest file, its run)
    for prev in same:
        for rel, src in _files(prev).items():
            if rel not in best or src.stat().st_mtime > best[rel][0].stat().st_mtime:
                best[rel] = (src, prev)
    copied = []
    for rel, (src, prev) in sorted(best.items()):
        dst = run.root / rel
        if dst.exists():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(src, tmp)  # copyfile, not copy2: the input's read-only mode stays behind
        os.replace(tmp, dst)
        copied.append(Restored(dst, prev))
    if copied:
        print(f"restored {len(copied)} file(s) from {len(same)} attached earlier run(s) into {run.root}:")
        for item in copied:
            print(f"  {item.path.relative_to(run.root).as_posix():<40} <- {item.source}")
    return copied
