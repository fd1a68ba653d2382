"""Where the volumes of a run come from: real BraTS 2020 when found, else the synthetic dataset.

Owns ``locate_dataset`` / ``resolve_dataset`` (the policy that picks the data; ``DataConfig`` lives in
``config.py``), the hosted search (``search_places``, ``find_hosted_brats``) and ``choose_profile`` (the
parameter profile from data + device). It stays apart from ``brats.py`` so that the real-data loader does
not depend on the synthetic generator.

Policy: an explicit ``DATA_ROOT`` (the parameter, else ``$DATA_ROOT``) wins; ``"synthetic"`` there is the opt-in
to the generated dataset. With none given, BraTS is searched (Colab: Drive and /content; Kaggle:
/kaggle/input). Not found: locally the synthetic dataset is used (the embedded default); on Colab / Kaggle the
run stops naming every place it looked, because a GPU run on synthetic data by accident costs hours.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from pathlib import Path

from brainseg_utils.config import DataConfig
from brainseg_utils.data.brats import discover_cases, find_brats_root
from brainseg_utils.data.synthetic import generate_dataset, is_synthetic
from brainseg_utils.runtime import env
from brainseg_utils.runtime.walk import DEFAULT_FOLDERS, Walk

log = logging.getLogger(__name__)

SYNTHETIC = "synthetic"  # DATA_ROOT / $DATA_ROOT value that opts in to the generated dataset
TRAINING_FOLDER = "MICCAI_BraTS2020_TrainingData"
CASE_GLOB = "BraTS20_Training_[0-9][0-9][0-9]"
DRIVE_FOLDERS = 5_000  # folders listed at most on Google Drive (each listing is a network round trip)


class DataNotFoundError(FileNotFoundError):
    """No BraTS data on a hosted platform and no synthetic opt-in; the message names every place searched."""


def search_places() -> list[Path]:
    """Folders searched for BraTS on this platform: Colab: Drive's My Drive, /content and kagglehub's
    download cache (``kagglehub.dataset_download`` puts datasets under ~/.cache/kagglehub); Kaggle:
    /kaggle/input (both its layouts: ``<slug>/`` and ``datasets/<owner>/<slug>/``). Locally none (give
    DATA_ROOT)."""
    where = env.platform()
    if where == "colab":
        return [env.drive_root(), env.colab_root(), Path.home() / ".cache" / "kagglehub"]
    if where == "kaggle":
        return [env.kaggle_root() / "input"]
    return []


def _is_case(name: str) -> bool:
    return fnmatch.fnmatchcase(name, CASE_GLOB)


def _case_folders(base: Path, skip: set[Path], max_folders: int) -> list[Path]:
    """Folders under ``base`` that hold case folders (or are named ``MICCAI_BraTS2020_TrainingData``),
    shallowest first; the walk never descends into one, nor into ``skip`` (a place searched on its own)."""
    hits = []

    def holds_cases(folder: Path, entries) -> bool:
        if folder in skip:
            return True
        if folder.name == TRAINING_FOLDER or any(_is_case(e.name) and e.is_dir() for e in entries):
            hits.append(folder)
            return True
        return False

    for _ in Walk(base, max_folders=max_folders, prune=holds_cases):
        pass
    return hits


def find_hosted_brats(places: list[Path]) -> Path | None:
    """The first folder of ``BraTS20_Training_NNN`` cases (normally ``MICCAI_BraTS2020_TrainingData``) under
    ``places``, found by a bounded walk at any depth (``runtime.walk``), skipping data our generator wrote.
    Lists folders only; reads no volume. Google Drive (a network file system) gets a smaller folder budget,
    and the Drive mount inside /content is not walked twice."""
    for base in places:
        budget = DRIVE_FOLDERS if base == env.drive_root() else DEFAULT_FOLDERS
        for cand in _case_folders(base, {env.drive_root().parent, *places} - {base}, budget):
            if not is_synthetic(cand) and discover_cases(cand, max_depth=1):
                return cand
    return None


def _explicit(cfg: DataConfig) -> str:
    return str(cfg.data_root or os.environ.get("DATA_ROOT") or "").strip()


def locate_dataset(cfg: DataConfig) -> Path | None:
    """The BraTS root to use, or None for the synthetic dataset (see the module's policy).

    Raises ``DataNotFoundError`` on Colab/Kaggle when nothing is found and synthetic data was not asked for,
    and ``FileNotFoundError`` for an explicit root that holds no cases."""
    explicit = _explicit(cfg)
    if explicit.lower() == SYNTHETIC:
        return None
    if explicit:
        return find_brats_root(explicit)
    if not env.hosted():
        return find_brats_root(None)  # known hosted paths; None: the synthetic default
    places = search_places()
    root = find_hosted_brats(places)
    if root is None:
        where = "\n".join(f"  - {p}/ (and the folders below it){'' if p.is_dir() else ' (missing)'}" for p in places)
        attach = (
            "attach the Kaggle dataset awsaf49/brats20-dataset-training-validation (Add data)"
            if env.platform() == "kaggle"
            else "put MICCAI_BraTS2020_TrainingData on Google Drive and mount it (the bootstrap cell offers it)"
        )
        raise DataNotFoundError(
            f"no BraTS 2020 training data ({TRAINING_FOLDER}/ or {CASE_GLOB.replace('[0-9]', 'N')} folders) found on "
            f"{env.platform()}; searched:\n{where}\nEither {attach}, or name the folder (notebook 01: the parameter "
            f'DATA_ROOT="/path/to/{TRAINING_FOLDER}"; any notebook: a cell `%env DATA_ROOT=/path/to/{TRAINING_FOLDER}` '
            f'before the parameters), or opt in to the synthetic stand-in data: DATA_ROOT="synthetic" in notebook '
            f"01, or in any notebook a cell `%env DATA_ROOT=synthetic` before the parameters."
        )
    return root


def synthetic_dir(cfg: DataConfig) -> Path:
    """Where synthetic volumes go: ``SYNTHETIC_DIR``, under ``env.cache_root()`` when relative and the platform
    has one (Kaggle: /kaggle/temp, not the 20 GB-capped working dir)."""
    out = Path(cfg.synthetic_dir).expanduser()
    cache = env.cache_root()
    return cache / out if cache is not None and not out.is_absolute() else out


def resolve_dataset(cfg: DataConfig, progress: bool = True) -> tuple[Path, str]:
    """(root, dataset name): ``locate_dataset``'s BraTS root, or the synthetic dataset generated on first
    use (``synthetic_dir``). The name is "synthetic" when the root was written by our generator, else
    "brats2020"."""
    root = locate_dataset(cfg)
    if root is None:
        out = synthetic_dir(cfg)
        log.info("using the synthetic dataset at %s (give DATA_ROOT to use BraTS 2020)", out)
        root = generate_dataset(
            out,
            cfg.synthetic_config(),
            progress=progress,
        )
    return Path(os.path.abspath(root)), (SYNTHETIC if is_synthetic(root) else "brats2020")


def choose_profile(dataset: str, cuda: bool) -> str:
    """Parameter profile for ``dataset`` ("synthetic"/"brats2020") on this device: "full" only for real data
    on a GPU; synthetic data (whatever the device) and CPUs get "quick". ``$PROFILE`` (a name or a YAML path)
    overrides."""
    if os.environ.get("PROFILE"):
        return os.environ["PROFILE"]
    return "full" if dataset == "brats2020" and cuda else "quick"
