"""Tumour grade per case (BraTS 2020's ``name_mapping.csv``) and the stratified order the split is cut from.

``name_mapping.csv`` sits in the BraTS 2020 training folder (the synthetic generator writes one too); its
``Grade`` column holds HGG or LGG and ``BraTS_2020_subject_ID`` the case id. When it is present,
``slices.make_split`` stratifies train / val / test by grade (``stratified_order``); without it the split is
the plain seeded permutation it always was.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

import numpy as np

NAME_MAPPING = "name_mapping.csv"
GRADE_COLUMN, ID_COLUMN = "Grade", "BraTS_2020_subject_ID"
GRADES = ("HGG", "LGG")
UNKNOWN = "unknown"  # stratum of a case the file does not list


def find_name_mapping(root: str | os.PathLike, case_folders=()) -> Path | None:
    """``root``/name_mapping.csv, else the one in the folder that holds every case folder; None when absent."""
    candidates = [Path(root)]
    parents = {Path(f).parent for f in case_folders}
    if len(parents) == 1:
        candidates.append(parents.pop())
    return next((c / NAME_MAPPING for c in candidates if (c / NAME_MAPPING).is_file()), None)


def read_grades(path: str | os.PathLike) -> dict[str, str]:
    """{case id: "HGG" | "LGG"} from a BraTS 2020 ``name_mapping.csv``. A missing column or a grade other than
    HGG / LGG is an error naming the file (never guessed); rows without a 2020 id are skipped."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in (GRADE_COLUMN, ID_COLUMN) if c not in fields]
        if missing:
            raise ValueError(f"{path}: expected columns {GRADE_COLUMN!r} and {ID_COLUMN!r}, found {fields}")
        grades = {}
        for line, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            cid, grade = row[ID_COLUMN], row[GRADE_COLUMN]
            if not cid or cid.upper() == "NA":
                continue
            if grade not in GRADES:
                raise ValueError(f"{path} line {line} ({cid}): expected Grade in {GRADES}, found {grade!r}")
            grades[cid] = grade
    return grades


def stratified_order(ids: list[str], strata: dict[str, str], seed: int = 0) -> np.ndarray:
    """A permutation of ``range(len(ids))`` in which every contiguous run holds each stratum in proportion
    (within about one case), so cutting it into train / val / test stratifies all three.

    Each stratum's cases (``strata[id]``, ``UNKNOWN`` when absent) are shuffled with a seeded generator, in sorted
    stratum order; the k-th of a stratum's m cases gets the position (k + 0.5) / m; the order sorts by position,
    ties broken by a seeded draw. Deterministic for (ids, strata, seed).
    """
    rng = np.random.default_rng(seed)
    labels = np.array([strata.get(cid, UNKNOWN) for cid in ids])
    position = np.empty(len(ids))
    for label in sorted(set(labels.tolist())):
        members = rng.permutation(np.flatnonzero(labels == label))
        position[members] = (np.arange(len(members)) + 0.5) / len(members)
    tiebreak = rng.random(len(ids))
    return np.lexsort((tiebreak, position))


def strata_counts(split: dict, strata: dict[str, str], parts=("train", "val", "test")) -> dict[str, dict[str, int]]:
    """{part: {stratum: cases}} of a split, for ``splits.json``."""
    return {k: dict(sorted(Counter(strata.get(c, UNKNOWN) for c in split[k]).items())) for k in parts}
