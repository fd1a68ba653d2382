"""Where the volumes of a run come from: real BraTS 2020 when found, else the synthetic dataset.

Owns ``resolve_dataset`` (the policy that picks the data; ``DataConfig`` lives in ``config.py``). It stays
apart from ``brats.py`` so that the real-data loader does not depend on the synthetic generator.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .brats import find_brats_root
from .config import DataConfig
from .synthetic import SyntheticConfig, generate_dataset, is_synthetic

log = logging.getLogger(__name__)


def resolve_dataset(cfg: DataConfig, progress: bool = True) -> tuple[Path, str]:
    """(root, dataset name). Real BraTS when ``data_root`` is given or found on Colab/Kaggle;
    otherwise the synthetic dataset, generated on first use under ``synthetic_dir``.

    The name is "synthetic" when the root was written by our generator, else "brats2020".
    """
    root = find_brats_root(cfg.data_root or None)
    if root is None:
        log.info(
            "no BraTS 2020 data found (give DATA_ROOT to use yours); using the synthetic dataset at %s",
            cfg.synthetic_dir,
        )
        root = generate_dataset(
            cfg.synthetic_dir,
            SyntheticConfig(cases=cfg.synthetic_cases, seed=cfg.seed, depth=cfg.synthetic_depth),
            progress=progress,
        )
    return Path(os.path.abspath(root)), ("synthetic" if is_synthetic(root) else "brats2020")
