"""Cheap prerequisites of notebooks 02-05, re-used or rebuilt so that each notebook runs alone on a fresh VM.

Owns ``prepare_run_data`` (notebook 01's data steps without its figures: find the data, audit, slice cache,
split written once, ``data/dataset.json``), ``ensure_run_data`` (what notebooks 02-04 call through
``open_run_data(run, build_missing=True)``; it first restores attached earlier runs: ``workflow.restore``)
and ``profile_params`` (the data parameters of a profile).

Expensive prerequisites (trained checkpoints) are never rebuilt here: they are found in the run folder
(Drive on Colab, the working dir on Kaggle) or in an attached previous run, else the notebook that needs
them says what to run or attach (``missing_hint``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from brainseg_utils.config import DataConfig
from brainseg_utils.data import brats, slices, validate
from brainseg_utils.data.slices import SliceCache, load_split
from brainseg_utils.data.strata import find_name_mapping
from brainseg_utils.parameters import load_profile
from brainseg_utils.runtime.io import atomic_write, atomic_write_json, canonical_sha256, file_fingerprint
from brainseg_utils.runtime.paths import RunDir
from brainseg_utils.workflow.locate import choose_profile, locate_dataset, resolve_dataset
from brainseg_utils.workflow.restore import restore_previous

log = logging.getLogger(__name__)


def data_params(cfg: DataConfig) -> dict:
    """Notebook 01's parameters (UPPER_CASE names) that rebuild ``cfg``'s slice cache, JSON-ready; recorded in
    ``dataset.json`` so a later notebook on a fresh VM rebuilds the very same cache."""
    out = {}
    for name, field in DataConfig.PARAMS.items():
        value = getattr(cfg, field)
        out[name] = ",".join(value) if name == "MODALITIES" else list(value) if isinstance(value, tuple) else value
    return out


def profile_params(profile: str) -> dict:
    """Notebook 01's parameters in a profile (``parameters.load_profile``); the others are dropped."""
    return {k: v for k, v in load_profile(profile).items() if k in DataConfig.PARAMS}


def prepare_run_data(cfg: DataConfig, run: RunDir, progress: bool = True, slices: bool = True) -> dict:
    """Notebook 01's data steps, the same functions its cells call: find the data (``find_cases``), audit the
    labelled cases (``audit``: ``data/audit.csv``, reused when the input files are unchanged), build or re-use
    the slice cache (``build_slices``; skipped with ``slices=False``), write the split once and
    ``data/dataset.json`` (``write_split``). Returns the dataset info written."""
    found = find_cases(cfg, progress=progress)
    checked = audit(run, found.labelled, cfg, progress=progress)
    if slices:
        build_slices(run, checked.good, cfg, progress=progress)
    _, info = write_split(run, found, checked, cfg)
    return info


@dataclass(frozen=True)
class FoundCases:
    """What ``find_cases`` found: the data root, its dataset name, every case folder and the labelled ones."""

    root: Path
    name: str  # "synthetic" or "brats2020"
    cases: list
    labelled: list

    @property
    def n_unlabelled(self) -> int:
        return len(self.cases) - len(self.labelled)


@dataclass(frozen=True)
class AuditResult:
    """What ``audit`` wrote to ``data/audit.csv``: the cases that passed, those skipped, and the table."""

    good: list
    skipped: list
    table: object  # pandas.DataFrame, one row per case


def find_cases(cfg: DataConfig, progress: bool = True) -> FoundCases:
    """Resolve the data (``locate.resolve_dataset``: BraTS, or the synthetic dataset generated once) and list its
    case folders."""
    root, name = resolve_dataset(cfg, progress=progress)
    cases = brats.discover_cases(root)
    return FoundCases(root, name, cases, brats.labelled_cases(cases))


def audit_key(labelled: list, cfg: DataConfig) -> str:
    """What an audit depends on: every file of every labelled case (name, size, mtime) and SKIP_BAD_CASES."""
    files = {c.case_id: [file_fingerprint(p) for p in c.files()] for c in labelled}
    return canonical_sha256({"skip_bad_cases": cfg.skip_bad_cases, "cases": files})


def _recorded_audit(run: RunDir, labelled: list, key: str) -> AuditResult | None:
    try:
        record = json.loads(run.audit_record.read_text())
        if record.get("key") != key or not run.audit.is_file():
            return None
        import pandas as pd

        table = pd.read_csv(run.audit)
    except (OSError, ValueError):
        return None
    passed = set(record["good"])
    return AuditResult([c for c in labelled if c.case_id in passed], list(record["skipped"]), table)


def audit(run: RunDir, labelled: list, cfg: DataConfig, progress: bool = True) -> AuditResult:
    """Validate every labelled case (``SKIP_BAD_CASES`` skips failures instead of stopping) and write
    ``data/audit.csv`` and ``data/audit.json`` (which cases passed, keyed by ``audit_key``) atomically. An audit
    recorded for the same files (this run's, or one restored from an earlier run) is reused without reading
    a volume: it costs about as much as the slice cache (every volume read once)."""
    key = audit_key(labelled, cfg)
    recorded = _recorded_audit(run, labelled, key)
    if recorded is not None:
        print(f"data audit: reusing {run.audit} ({len(recorded.good)} cases passed; the input files are unchanged)")
        return recorded
    good, reports, skipped = validate.audit_cases(labelled, skip_bad=cfg.skip_bad_cases, progress=progress)
    table = validate.audit_frame(reports, skipped)
    atomic_write(run.audit, lambda tmp: table.to_csv(tmp, index=False), suffix=".csv")
    atomic_write_json(run.audit_record, {"key": key, "good": [c.case_id for c in good], "skipped": skipped})
    return AuditResult(good, skipped, table)


def build_slices(run: RunDir, good: list, cfg: DataConfig, progress: bool = True) -> SliceCache:
    """Build (or re-use, when its manifest matches) the slice cache of ``good`` cases under ``run``."""
    return slices.build_cache(good, run.slices, cfg.slice_config(), progress=progress)


def write_split(run: RunDir, found: FoundCases, checked: AuditResult, cfg: DataConfig) -> tuple[dict, dict]:
    """(split, dataset info): the patient-level split written once (an existing one is kept and checked) and
    ``data/dataset.json``."""
    # stratified by HGG / LGG when BraTS's name_mapping.csv is there; not for synthetic data: its generator's
    # "grade" (enhancing tumour or not) means nothing clinically, and the default run's split must not move
    grades = None if found.name == "synthetic" else find_name_mapping(found.root, [c.folder for c in found.labelled])
    split = slices.write_split_once(
        run.splits, [c.case_id for c in checked.good], cfg.split_fractions, cfg.seed, grades_from=grades
    )
    info = dataset_info(found.name, found.root, checked.good, checked.skipped, found.n_unlabelled, split, cfg)
    atomic_write_json(run.dataset, info)
    return split, info


def dataset_info(name, root, good, skipped, n_unlabelled: int, split: dict, cfg: DataConfig) -> dict:
    """The content of ``data/dataset.json`` (notebook 01 and ``prepare_run_data`` write the same)."""
    return {
        "name": name,
        "root": str(root),
        "n_cases": len(good),
        "n_skipped": len(skipped),
        "n_unlabelled": n_unlabelled,
        "split_sha256": split["sha256"],
        "params": data_params(cfg),
    }


def ensure_run_data(run: RunDir, progress: bool = True, slices: bool = True) -> None:
    """Make ``run``'s data prerequisites exist: restore an attached previous run (Kaggle), then, when
    ``dataset.json`` or (with ``slices``) the slice cache is missing, rebuild them with ``prepare_run_data``
    (the audit is reused when recorded for the same input files; ``slices=False``: no slice cache, for a
    notebook that reads the volumes themselves):

    * with the parameters ``dataset.json`` recorded (the cache went with the VM or /kaggle/temp: rebuilt
      identically, split kept);
    * else with the profile chosen from data + device (``data.choose_profile``: full for BraTS on a GPU,
      quick otherwise; ``$PROFILE`` overrides with a name or a YAML path).

    A split or cache that exists but disagrees is an error (never silently rebuilt)."""
    restore_previous(run)
    info = json.loads(run.dataset.read_text()) if run.dataset.exists() else None
    if info is not None:
        if not slices:
            return
        try:
            SliceCache.open(run.slices)
            return
        except FileNotFoundError:
            pass
    if info is not None and info.get("params"):
        params = dict(info["params"])
        if info.get("root") and Path(info["root"]).is_dir():  # the same data (BraTS, or synthetic kept elsewhere)
            params["DATA_ROOT"] = info["root"]
        elif info.get("name") == "synthetic":  # regenerated: the generator is seeded, the volumes are identical
            params["DATA_ROOT"] = "synthetic"
        why = f"the parameters {run.dataset} recorded"
    else:
        located = locate_dataset(DataConfig())
        import torch

        profile = choose_profile("synthetic" if located is None else "brats2020", torch.cuda.is_available())
        params = profile_params(profile)
        params["DATA_ROOT"] = "synthetic" if located is None else str(located)
        why = f"profile {profile!r} (data: {params['DATA_ROOT']})"
    cfg = DataConfig.from_params(**params)
    log.info("building this notebook's data prerequisites under %s with %s", run.root, why)
    print(f"data prerequisites missing in {run.root}: building them with {why} (notebook 01's steps)")
    prepare_run_data(cfg, run, progress=progress, slices=slices)


def run_split(run: RunDir) -> tuple[dict, dict]:
    """(verified split, dataset info) that notebook 01 wrote under ``run``: ``splits.json`` with its own
    sha256 checked (``slices.load_split``) and equal to the hash recorded in ``dataset.json``.

    Fails with what to do when notebook 01 has not run, when dataset.json is not JSON, or when the split
    no longer matches.
    """
    if not run.dataset.exists():
        raise FileNotFoundError(f"{run.dataset} not found: run notebooks/01_eda.ipynb first with OUTPUT_DIR={run.root}")
    try:
        info = json.loads(run.dataset.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{run.dataset} is not valid JSON ({exc}); re-run notebooks/01_eda.ipynb") from exc
    split = load_split(run.splits)
    if split["sha256"] != info.get("split_sha256"):
        raise ValueError(
            f"{run.splits} (sha256 {split['sha256'][:12]}…) differs from the split notebook 01 recorded "
            f"in {run.dataset} ({str(info.get('split_sha256'))[:12]}…); re-run notebook 01"
        )
    return split, info


def open_run_data(run: RunDir, build_missing: bool = False):
    """(slice cache, verified split, dataset info) that notebook 01 wrote under ``run`` (see ``run_split``).

    ``build_missing=True`` (notebooks 02-04, each of which may run alone on a fresh VM) first re-uses or
    rebuilds the cheap prerequisites (``prepare.ensure_run_data``: outputs of a previous run attached on
    Kaggle, data audit, slice cache, split) instead of failing when notebook 01 has not run here."""
    if build_missing:
        ensure_run_data(run)
    split, info = run_split(run)
    return SliceCache.open(run.slices), split, info


def open_run_split(run: RunDir, build_missing: bool = False) -> tuple[dict, dict]:
    """(verified split, dataset info) without the slice cache (notebook 04 reads the test volumes themselves:
    on a fresh VM it rebuilds only the audit, reused when recorded, and the split, never the cache)."""
    if build_missing:
        ensure_run_data(run, slices=False)
    return run_split(run)


def cache_geometry(info: dict) -> tuple[int, tuple[str, ...]]:
    """(image size, modalities) the slice cache was built with, from ``dataset.json``'s recorded parameters."""
    params = info.get("params") or {}
    if "IMG_SIZE" not in params or "MODALITIES" not in params:
        raise ValueError("dataset.json has no recorded IMG_SIZE / MODALITIES parameters; re-run notebook 01")
    modalities = params["MODALITIES"]
    if isinstance(modalities, str):
        modalities = [m.strip() for m in modalities.split(",") if m.strip()]
    return int(params["IMG_SIZE"]), tuple(modalities)
