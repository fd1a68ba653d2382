"""Output paths of a run: the one place every path under the run folder is built.

Owns ``RunDir`` (folder properties create their folder; file properties only name the file). A leaf: it
names files and never reads or rebuilds data (``workflow.prepare.open_run_data`` does). Notebooks talk to
each other only through these files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from brainseg_utils.runtime import env


@dataclass(frozen=True)
class RunDir:
    """Output tree of one run::

        <root>/data/slices/          slice cache (images.f16, masks.u8, index.csv, manifest.json)
        <root>/data/splits.json      patient-level split (written once)
        <root>/data/audit.csv        per-case validation report (notebook 01)
        <root>/data/audit.json       which cases passed, keyed by the input files (the audit is reused)
        <root>/data/dataset.json     dataset name ("synthetic"/"brats2020"), root, case counts
        <root>/unet/                 U-Net checkpoints (best.pt, last.pt) and history.json
        <root>/sam/<variant>/        SAM decoder checkpoints and history (variant: sam_<backend>_<prompt>)
        <root>/sam/embeddings/       frozen-encoder embedding caches
        <root>/sam/summary.csv       validation Dice of every SAM variant (notebook 03)
        <root>/results/              metrics.json, per_case.csv, per_slice.csv, results.md
        <root>/figures/              PNG figures
        <root>/predictions/<model>/  predicted volumes (NIfTI)
        <root>/demo/                 the demo's downloads; demo/examples/ its example inputs
        <root>/notebooks/            executed notebooks (run_all.sh)
        <root>/plan/                 the planner's record (plan.json; auto.yaml for PROFILE=auto), run_all.sh

    Folder properties (``data``, ``unet``, ``sam_root``, ``results``, ...) and folder methods
    (``sam(variant)``, ``predictions(model)``) create the folder; file properties (``splits``,
    ``unet_best``, ``metrics``, ...) create their parent folder, never the file. Listing methods
    (``sam_checkpoints``, ``histories``, ``prediction_dirs``) create nothing.
    """

    root: Path
    cache: Path | None = None  # where the rebuildable caches go (data/slices, sam/embeddings); None: under root

    def __init__(self, root: str | os.PathLike = "outputs", cache: str | os.PathLike | None = None):
        object.__setattr__(self, "root", Path(root))
        object.__setattr__(self, "cache", Path(cache) if cache is not None else None)

    @classmethod
    def for_platform(cls, output_dir: str | os.PathLike = "outputs") -> RunDir:
        """The run folder a notebook uses: ``output_dir`` when absolute; a relative one (the default
        ``"outputs"``) goes where outputs persist on this platform (``env.default_output_root``: Drive on
        Colab when mounted, /kaggle/working/brainseg/outputs on Kaggle, <project root>/outputs locally).
        On Kaggle and Colab-with-Drive the slice cache and embeddings go to ``env.cache_root()`` (not
        persisted, not counted against Kaggle's 20 GB output cap)."""
        out = Path(output_dir).expanduser()
        if not out.is_absolute():
            base = Path(env.default_output_root())
            out = base if out == Path("outputs") else base.parent / out
        cache = env.cache_root()
        if cache is not None:  # one cache folder per run folder
            import hashlib

            cache = cache / hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:12]
        return cls(out, cache)

    def _dir(self, *parts: str) -> Path:
        return self._dir_in(self.root, *parts)

    @staticmethod
    def _dir_in(base: Path, *parts: str) -> Path:
        p = base.joinpath(*parts)
        p.mkdir(parents=True, exist_ok=True)
        return p

    # ------------------------------------------------------------------ data (notebook 01)
    @property
    def data(self) -> Path:
        return self._dir("data")

    @property
    def slices(self) -> Path:
        """The slice cache folder (under ``cache`` when the run has one: rebuilt, never persisted)."""
        if self.cache is not None:
            return Path(self._dir_in(self.cache, "data")) / "slices"
        return self.data / "slices"

    @property
    def splits(self) -> Path:
        return self.data / "splits.json"

    @property
    def audit(self) -> Path:
        return self.data / "audit.csv"

    @property
    def audit_record(self) -> Path:
        return self.data / "audit.json"

    @property
    def dataset(self) -> Path:
        return self.data / "dataset.json"

    # ------------------------------------------------------------------ models (notebooks 02, 03)
    @property
    def unet(self) -> Path:
        return self._dir("unet")

    @property
    def unet_best(self) -> Path:
        """The U-Net checkpoint evaluation and the demo load: ``best.pt``, or the slim ``best.safetensors`` of a
        Space (``slim.py``) when only that exists."""
        full, slim = self.unet / "best.pt", self.unet / "best.safetensors"
        return slim if slim.is_file() and not full.exists() else full

    @property
    def sam_root(self) -> Path:
        return self._dir("sam")

    def sam(self, variant: str) -> Path:
        """Folder of one SAM decoder, ``variant`` = ``sam_<backend>_<prompt>``."""
        if not variant.startswith("sam_") or "/" in variant:
            raise ValueError(f"SAM variant names look like sam_<backend>_<prompt>, got {variant!r}")
        return self._dir("sam", variant)

    @property
    def sam_embeddings(self) -> Path:
        if self.cache is not None:
            return self._dir_in(self.cache, "sam", "embeddings")
        return self._dir("sam", "embeddings")

    @property
    def sam_summary(self) -> Path:
        return self.sam_root / "summary.csv"

    def sam_checkpoints(self) -> dict[str, Path]:
        """``{variant: <root>/sam/<variant>/best.pt}`` (or ``best.safetensors``, slim) for every trained SAM
        decoder, sorted by name."""
        folder = self.root / "sam"
        if not folder.is_dir():
            return {}
        found = {p.parent.name: p for p in sorted(folder.glob("sam_*/best.safetensors"))}  # slim (a Space)
        found.update({p.parent.name: p for p in sorted(folder.glob("sam_*/best.pt"))})  # full ones win
        return dict(sorted(found.items()))

    def histories(self) -> dict[str, Path]:
        """``{"unet": ..., variant: ...}``: every ``history.json`` written so far (U-Net first)."""
        out = {"unet": self.root / "unet" / "history.json"} if (self.root / "unet" / "history.json").is_file() else {}
        folder = self.root / "sam"
        if folder.is_dir():
            out.update({p.parent.name: p for p in sorted(folder.glob("sam_*/history.json"))})
        return out

    @property
    def plan(self) -> Path:
        """The planner's record of this run (``python -m brainseg_utils.plan --record <root>/plan``)."""
        return self._dir("plan") / "plan.json"

    # ------------------------------------------------------------------ results (notebook 04)
    @property
    def results(self) -> Path:
        return self._dir("results")

    @property
    def metrics(self) -> Path:
        return self.results / "metrics.json"

    @property
    def per_case(self) -> Path:
        return self.results / "per_case.csv"

    @property
    def per_slice(self) -> Path:
        return self.results / "per_slice.csv"

    @property
    def results_md(self) -> Path:
        return self.results / "results.md"

    @property
    def figures(self) -> Path:
        return self._dir("figures")

    def predictions(self, model: str) -> Path:
        """Folder of one model's predicted volumes."""
        return self._dir("predictions", model)

    def prediction_dirs(self) -> list[Path]:
        """Every ``predictions/<model>/`` folder written so far, sorted."""
        folder = self.root / "predictions"
        return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    # ------------------------------------------------------------------ demo (notebook 05)
    @property
    def demo(self) -> Path:
        return self._dir("demo")

    @property
    def demo_examples(self) -> Path:
        return self._dir("demo", "examples")

    def written(self) -> list[Path]:
        """Every file under the run root, sorted (for the "what this notebook wrote" cell)."""
        if not self.root.exists():
            return []
        return sorted(p for p in self.root.rglob("*") if p.is_file() and not p.name.startswith("."))
