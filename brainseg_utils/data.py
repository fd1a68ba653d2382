"""Data parameters of a run and where the volumes come from (real BraTS or synthetic)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .brats import MODALITIES, find_brats_root
from .slices import SliceConfig
from .synthetic import SyntheticConfig, generate_dataset, is_synthetic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataConfig:
    """Validated data parameters of notebook 01 (see its parameters cell for meanings)."""

    data_root: str = ""
    output_dir: str = "outputs"
    synthetic_dir: str = "data/synthetic"
    synthetic_cases: int = 16
    synthetic_depth: int = 155
    seed: int = 0
    img_size: int = 128
    modalities: tuple[str, ...] = ("flair",)
    tumour_free_fraction: float = 0.3
    slice_step: int = 1
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    skip_bad_cases: bool = False

    def __post_init__(self) -> None:
        mods = self.modalities
        if isinstance(mods, str):
            mods = tuple(m.strip() for m in mods.split(",") if m.strip())
        bad = [m for m in mods if m not in MODALITIES]
        if not mods or bad:
            raise ValueError(f"MODALITIES must be a comma-separated subset of {','.join(MODALITIES)}, got {self.modalities!r}")
        object.__setattr__(self, "modalities", tuple(mods))
        object.__setattr__(self, "split_fractions", tuple(float(f) for f in self.split_fractions))
        self.slice_config()  # validates img_size, fraction, step
        SyntheticConfig(cases=self.synthetic_cases, seed=self.seed, depth=self.synthetic_depth)

    def slice_config(self) -> SliceConfig:
        return SliceConfig(img_size=self.img_size, modalities=self.modalities,
                           tumour_free_fraction=self.tumour_free_fraction, slice_step=self.slice_step, seed=self.seed)

    @classmethod
    def from_params(cls, **params) -> DataConfig:
        """Build from notebook parameters (UPPER_CASE names accepted); unknown names are an error."""
        fields = cls.__dataclass_fields__
        kwargs, unknown = {}, []
        for k, v in params.items():
            (kwargs.__setitem__(k.lower(), v) if k.lower() in fields else unknown.append(k))
        if unknown:
            raise TypeError(f"unknown data parameter(s) {unknown}; options: {sorted(f.upper() for f in fields)}")
        return cls(**kwargs)


def resolve_dataset(cfg: DataConfig, progress: bool = True) -> tuple[Path, str]:
    """(root, dataset name). Real BraTS when ``data_root`` is given or found on Colab/Kaggle;
    otherwise the synthetic dataset, generated on first use under ``synthetic_dir``.

    The name is "synthetic" when the root was written by our generator, else "brats2020".
    """
    root = find_brats_root(cfg.data_root or None)
    if root is None:
        log.info("no BraTS 2020 data found (give DATA_ROOT to use yours); using the synthetic dataset at %s",
                 cfg.synthetic_dir)
        root = generate_dataset(cfg.synthetic_dir, SyntheticConfig(cases=cfg.synthetic_cases, seed=cfg.seed,
                                                                   depth=cfg.synthetic_depth), progress=progress)
    return Path(os.path.abspath(root)), ("synthetic" if is_synthetic(root) else "brats2020")
