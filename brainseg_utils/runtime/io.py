"""Atomic file writes and content hashing shared by every module that writes artefacts.

Every artefact is written to a temporary file in the same folder and moved into place with
``os.replace``, so a reader never sees a half-written file, even after a crash or a Colab
disconnect mid-write.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

TMP_MARK = ".tmp"  # temporary files are ".<name>.<random>.tmp<suffix>" beside their target


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """fsync a folder so a rename in it survives a power loss; a no-op where the OS cannot (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = "") -> Path:
    """Call ``write(tmp_path)``, fsync it, move it onto ``path`` atomically, fsync the folder.

    ``suffix`` keeps extensions that writers look at (nibabel needs ``.nii.gz``).
    The temporary file is removed when ``write`` raises; one left by a killed process is removed
    by ``remove_stale_temps``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f"{TMP_MARK}{suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; artefacts are ordinary files
        _fsync_file(tmp)  # the data is on disk before the name points at it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def remove_stale_temps(folder: str | os.PathLike, names: list[str] | tuple[str, ...]) -> list[Path]:
    """Delete temporary files that ``atomic_write`` left for ``names`` in ``folder`` when a process was
    killed mid-write (``.<name>.<random>.tmp*``). Returns what was removed."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for name in names:
        for p in folder.glob(f".{name}.*{TMP_MARK}*"):
            if p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    def _write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    return atomic_write(path, _write)


def _finite(obj: Any) -> Any:
    """NaN / inf -> None, so the file is strict JSON any reader accepts."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Strict JSON (NaN and inf written as null), sorted keys, atomically."""
    return atomic_write_text(path, json.dumps(_finite(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")


def canonical_sha256(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys, no whitespace)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_fingerprint(path: str | os.PathLike) -> dict:
    """Cheap identity of a file: name, size and modification time (ns).

    Used for cache keys over real BraTS (~33 GB), where hashing contents on every run
    would cost minutes; any rewrite of a file changes its size or mtime.
    """
    st = Path(path).stat()
    return {"name": Path(path).name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
