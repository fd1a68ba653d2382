"""One place that builds every output path (notebooks talk to each other only through these files)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    """Output tree of one run::

        <root>/data/slices/          slice cache (images.f16, masks.u8, index.csv, manifest.json)
        <root>/data/splits.json      patient-level split (written once)
        <root>/data/audit.csv        per-case validation report (notebook 01)
        <root>/data/dataset.json     dataset name ("synthetic"/"brats2020"), root, case counts
        <root>/unet/                 U-Net checkpoints and history
        <root>/sam/<variant>/        SAM decoder checkpoints and history (variant: sam_<backend>_<prompt>)
        <root>/sam/embeddings/       frozen-encoder embedding caches
        <root>/results/              metrics.json, per_case.csv, per_slice.csv, results.md
        <root>/figures/              PNG figures
        <root>/predictions/<model>/  predicted volumes (NIfTI)
        <root>/notebooks/            executed notebooks (run_all.sh)
    """

    root: Path

    def __init__(self, root: str | os.PathLike = "outputs"):
        object.__setattr__(self, "root", Path(root))

    def _dir(self, *parts: str) -> Path:
        p = self.root.joinpath(*parts)
        p.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def data(self) -> Path:
        return self._dir("data")

    @property
    def slices(self) -> Path:
        return self.data / "slices"

    @property
    def splits(self) -> Path:
        return self.data / "splits.json"

    @property
    def audit(self) -> Path:
        return self.data / "audit.csv"

    @property
    def dataset(self) -> Path:
        return self.data / "dataset.json"

    @property
    def unet(self) -> Path:
        return self._dir("unet")

    def sam(self, variant: str) -> Path:
        return self._dir("sam", variant)

    @property
    def sam_embeddings(self) -> Path:
        return self._dir("sam", "embeddings")

    @property
    def results(self) -> Path:
        return self._dir("results")

    @property
    def figures(self) -> Path:
        return self._dir("figures")

    def predictions(self, model: str) -> Path:
        return self._dir("predictions", model)

    def written(self) -> list[Path]:
        """Every file under the run root, sorted (for the "what this notebook wrote" cell)."""
        if not self.root.exists():
            return []
        return sorted(p for p in self.root.rglob("*") if p.is_file() and not p.name.startswith("."))
