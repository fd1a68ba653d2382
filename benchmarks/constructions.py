"""Real-anatomy benchmark constructions, by name: each builds a set in the BraTS 2020 layout with code that
shares nothing with the synthetic generator (brainseg_utils/data/phantom*.py)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

NAMES = {"mni_implant": "realanatomy", "mni_flair": "realanatomy_flair", "mni_growth": "realanatomy_growth"}


def build(name: str, out, cases: int, seed: int, workers: int | None = None) -> Path:
    """Build (or reuse) construction ``name`` under ``out``; returns the folder."""
    if name not in NAMES:
        raise ValueError(f"unknown construction {name!r}; known: {list(NAMES)}")
    extra = {} if workers is None else {"workers": workers}
    return importlib.import_module(NAMES[name]).build(out, cases, seed, progress=True, **extra)
