"""Notebook parameters: which notebook takes which, profiles, and the text generated from the configs.

The config dataclasses (``config.py``) are the ONLY place a default is written; each field's trailing comment
is its documentation. Everything else is derived from them here:

  * ``NOTEBOOKS``: the parameters of each notebook, in the order its parameters cell lists them, and the
    configs it builds from them;
  * ``notebook_configs(notebook, namespace)``: the one call a notebook makes to build its validated configs
    from its (papermill-overridden) parameters;
  * ``parameters_cell(notebook)`` and ``full_profile_yaml()``: the text of every notebook's cell tagged
    ``parameters`` and of ``configs/full.yaml`` (``python -m brainseg_utils.workflow.generate`` writes them;
    a test fails when they are stale);
  * ``load_profile(name)`` / ``profile_configs(name)``: a profile (``configs/<name>.yaml``) as parameters, and
    as the configs a benchmark uses.
"""

from __future__ import annotations

import inspect
import io
import tokenize
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import SimpleNamespace

from brainseg_utils.config import DataConfig, DemoConfig, EvalConfig, RunConfig, SamConfig, TrainConfig, UNetConfig
from brainseg_utils.runtime import env

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@dataclass(frozen=True)
class Builder:
    """One config a notebook builds: ``attr`` names it in ``notebook_configs``' result; ``names`` maps the
    notebook's UPPER_CASE parameter names to the config's fields; ``build(**params)`` validates."""

    attr: str
    cls: type
    names: dict[str, str]
    model: str | None = None  # TrainConfig only: "unet" or "sam"

    def build(self, **params):
        if self.model is not None:
            return self.cls.from_params(self.model, **params)
        return self.cls.from_params(**params)


RUN = Builder("run", RunConfig, RunConfig.PARAMS)
DATA = Builder("data", DataConfig, DataConfig.PARAMS)
UNET_TRAIN = Builder("train", TrainConfig, TrainConfig.UNET_PARAMS, model="unet")
UNET = Builder("unet", UNetConfig, UNetConfig.PARAMS)
SAM = Builder("sam", SamConfig, SamConfig.PARAMS)
SAM_TRAIN = Builder("train", TrainConfig, TrainConfig.SAM_PARAMS, model="sam")
EVAL = Builder("evaluation", EvalConfig, EvalConfig.PARAMS)
DEMO = Builder("demo", DemoConfig, DemoConfig.PARAMS)


@dataclass(frozen=True)
class Notebook:
    """A notebook's parameters (cell order) and the configs built from them (the first owner of a name wins
    its documentation; every owner receives the value)."""

    params: tuple[str, ...]
    builders: tuple[Builder, ...]


NOTEBOOKS: dict[str, Notebook] = {
    "01_eda": Notebook(
        (
            "DATA_ROOT", "OUTPUT_DIR", "SYNTHETIC_DIR", "SYNTHETIC_CASES", "SYNTHETIC_DEPTH", "SYNTHETIC_APPEARANCE",
            "SEED", "IMG_SIZE", "MODALITIES", "TUMOUR_FREE_FRACTION", "SLICE_STEP", "SPLIT_FRACTIONS",
            "SKIP_BAD_CASES", "INTERACTIVE",
        ),
        (RUN, DATA),
    ),
    "02_train_unet": Notebook(
        (
            "OUTPUT_DIR", "UNET_EPOCHS", "UNET_BATCH_SIZE", "UNET_LR", "UNET_LR_SCHEDULE", "UNET_WEIGHT_DECAY",
            "UNET_BASE_CHANNELS", "UNET_BILINEAR", "UNET_DROPOUT", "UNET_AUG_STRENGTH", "UNET_MR_AUGMENT", "AMP",
            "CHANNELS_LAST", "UNET_EMA_DECAY", "GRAD_CLIP", "NUM_WORKERS", "RESUME", "DEVICE", "NUM_GPUS", "SEED",
        ),
        (RUN, UNET_TRAIN, UNET),
    ),
    "03_finetune_sam": Notebook(
        (
            "OUTPUT_DIR", "SAM_BACKEND", "SAM_CHECKPOINT", "SAM_PROMPTS", "SAM_EPOCHS", "SAM_BATCH_SIZE", "SAM_LR",
            "SAM_BOX_JITTER_PX", "SAM_BOX_NEGATIVES", "SAM_CACHE_BUDGET_GB", "SAM_OVERFLOW", "SAM_ENCODE_BATCH",
            "SAM_WISE_FT", "AMP", "RESUME", "DEVICE", "NUM_GPUS", "SEED",
        ),
        (RUN, SAM, SAM_TRAIN),
    ),
    "04_evaluate": Notebook(
        ("OUTPUT_DIR", "SAM_CHECKPOINT", "LATENCY_RUNS", "EXPORT_NIFTI", "MAX_TEST_CASES", "DEVICE"),
        (RUN, EVAL),
    ),
    "05_demo": Notebook(
        ("OUTPUT_DIR", "LAUNCH_DEMO", "SHARE", "AUTH", "SAM_CHECKPOINT", "DEVICE"),
        (RUN, DEMO),
    ),
}  # fmt: skip

# Parameters that describe one run or one machine, never a profile (run_all.sh and the user pass them).
RUN_SPECIFIC = frozenset(
    {"DATA_ROOT", "OUTPUT_DIR", "SYNTHETIC_DIR", "SKIP_BAD_CASES", "INTERACTIVE", "RESUME", "DEVICE", "NUM_GPUS",
     "SAM_CHECKPOINT", "LAUNCH_DEMO", "SHARE", "AUTH"}
)  # fmt: skip


@dataclass(frozen=True)
class Param:
    """One notebook parameter: its name, default (as the notebook writes it), type name and documentation."""

    name: str
    default: object
    type: str
    doc: str


@cache
def field_docs(cls: type) -> dict[str, str]:
    """field -> the trailing comment of its line in ``cls``'s source (the documentation of a parameter)."""
    src = inspect.getsource(cls)
    docs, pending = {}, None
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.NAME and tok.start[1] == 4 and pending is None:
            pending = (tok.string, tok.start[0])
        elif tok.type == tokenize.COMMENT and pending and tok.start[0] == pending[1]:
            docs[pending[0]] = tok.string.lstrip("# ").strip()
        if tok.type in (tokenize.NEWLINE, tokenize.NL):
            pending = None
    return docs


def notebook_value(value):
    """A config field's value as a notebook parameter literal: tuples of strings are comma-separated strings
    (``MODALITIES = "flair"``), other tuples lists (``SPLIT_FRACTIONS = [0.7, 0.15, 0.15]``)."""
    if isinstance(value, tuple):
        return ",".join(value) if all(isinstance(v, str) for v in value) else list(value)
    return value


def owners(name: str, builders=None) -> list[Builder]:
    """The builders (of ``builders``, else of every notebook) whose config owns ``name``."""
    if builders is None:
        builders = list({id(b): b for nb in NOTEBOOKS.values() for b in nb.builders}.values())
    return [b for b in builders if name in b.names]


def param(name: str, builders=None) -> Param:
    """``name``'s default and documentation, from the first config that owns it (all owners agree:
    ``parameter_defaults`` checks)."""
    found = owners(name, builders)
    if not found:
        raise KeyError(f"unknown parameter {name!r}; options: {sorted(all_parameters())}")
    b = found[0]
    field = b.names[name]
    default = notebook_value(getattr(b.cls(), field))
    doc = field_docs(b.cls).get(field, "")
    return Param(name, default, type(default).__name__, doc)


def all_parameters() -> set[str]:
    return {n for nb in NOTEBOOKS.values() for n in nb.params}


def notebook_configs(notebook: str, namespace: dict) -> SimpleNamespace:
    """The validated configs of ``notebook`` from its parameters, read from ``namespace`` (a notebook passes
    ``globals()``: its parameters cell plus papermill's overrides). Returns e.g. ``.run``, ``.train``, ``.unet``.

    Every parameter of the notebook must be defined (a missing one means the parameters cell was not run).
    A GPU this torch build cannot run (``env.check_gpu_supported``) stops it here unless DEVICE is "cpu"."""
    if notebook not in NOTEBOOKS:
        raise KeyError(f"unknown notebook {notebook!r}; options: {sorted(NOTEBOOKS)}")
    nb = NOTEBOOKS[notebook]
    missing = [n for n in nb.params if n not in namespace]
    if missing:
        raise NameError(f"{notebook}: parameters {missing} are not defined; run the cell tagged 'parameters' first")
    out = {}
    for b in nb.builders:
        out[b.attr] = b.build(**{n: namespace[n] for n in nb.params if n in b.names})
    if "DEVICE" in nb.params and str(namespace["DEVICE"]) != "cpu":
        env.check_gpu_supported()  # an unsupported GPU stops here, before any data work, with what to pick
    return SimpleNamespace(**out)


def parameter_defaults() -> dict[str, object]:
    """Every notebook parameter a config owns -> its default, as the notebook writes it (UPPER_CASE names).

    A name shared by several configs (``SEED``, ``DEVICE``, ...) must have one default; this raises if not.
    """
    out: dict[str, object] = {}
    sources = [
        (RunConfig(), RunConfig.PARAMS),
        (DataConfig(), DataConfig.PARAMS),
        (TrainConfig(), TrainConfig.UNET_PARAMS),
        (TrainConfig(), TrainConfig.SAM_PARAMS),
        (UNetConfig(), UNetConfig.PARAMS),
        (SamConfig(), SamConfig.PARAMS),
        (EvalConfig(), EvalConfig.PARAMS),
        (DemoConfig(), DemoConfig.PARAMS),
    ]
    for cfg, names in sources:
        for name, field in names.items():
            value = getattr(cfg, field)
            if name in out and out[name] != value:
                raise AssertionError(f"parameter {name} has two defaults: {out[name]!r} and {value!r}")
            out[name] = value
    return out


# ----------------------------------------------------------------------------- generated text
def parameters_cell(notebook: str) -> str:
    """The source of ``notebook``'s cell tagged ``parameters``: literals only, one per line, documented."""
    nb = NOTEBOOKS[notebook]
    params = [param(n, nb.builders) for n in nb.params]
    lefts = [f"{p.name}: {p.type} = {p.default!r}" for p in params]
    width = max(len(x) for x in lefts) + 2
    lines = ["# Parameters (papermill overrides these; literals only). Generated from brainseg_utils/config.py."]
    lines += [f"{left:<{width}}# {p.doc}" if p.doc else left for left, p in zip(lefts, params, strict=True)]
    return "\n".join(lines)


def profile_parameters() -> list[str]:
    """Names a profile may set, in notebook order: every parameter that is not ``RUN_SPECIFIC``."""
    seen = []
    for nb in NOTEBOOKS.values():
        seen += [n for n in nb.params if n not in RUN_SPECIFIC and n not in seen]
    return seen


def full_profile_yaml() -> str:
    """The text of ``configs/full.yaml``: every profile parameter at its default (the full profile)."""
    import yaml

    lines = [
        "# Full profile: this project's defaults, for a GPU and real BraTS 2020. NOT the seed's protocol",
        "# (configs/seed.yaml); every difference from the seed: docs/evaluation.md, deviations from the seed.",
        "# GENERATED from the defaults in brainseg_utils/config.py: edit those, then run",
        "#   python -m brainseg_utils.workflow.generate",
        "# (tests fail while this file is stale). Other profiles override some of these values.",
    ]
    current = None
    for name in profile_parameters():
        nb = next(k for k, v in NOTEBOOKS.items() if name in v.params)
        if nb != current:
            lines.append(f"# {nb}")
            current = nb
        p = param(name)
        value = yaml.safe_dump(p.default, default_flow_style=True).split("\n")[0]
        lines.append(f"{name}: {value}  # {p.doc}" if p.doc else f"{name}: {value}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- profiles
def profile_path(profile: str) -> Path:
    """``configs/<profile>.yaml``, or ``profile`` itself when it is a .yaml path."""
    path = Path(profile) if str(profile).endswith((".yaml", ".yml")) else CONFIGS / f"{profile}.yaml"
    if not path.is_file():
        options = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
        raise FileNotFoundError(f"profile {profile!r}: {path} not found (options: {options}, or a .yaml path)")
    return path


BASE_KEY = "BASE"  # a profile may start from another: ``BASE: quick`` (a name in configs/ or a .yaml path)


def load_profile(profile: str, _seen: tuple[Path, ...] = ()) -> dict:
    """A profile's parameters (NAME -> value). Unknown names and run-specific names are refused, naming the file.
    ``BASE: other`` takes every value of the profile ``other`` first (a name in configs/, or a .yaml path relative
    to this file); the profile's own values override them. Chains are followed; a cycle is refused."""
    import yaml

    path = profile_path(profile)
    if path.resolve() in _seen:
        chain = " -> ".join(p.name for p in (*_seen, path.resolve()))
        raise ValueError(f"{path}: {BASE_KEY} makes a cycle ({chain})")
    params = yaml.safe_load(path.read_text()) or {}
    if not isinstance(params, dict):
        raise ValueError(f"{path}: expected a mapping of PARAMETER: value, found {type(params).__name__}")
    base = params.pop(BASE_KEY, None)
    allowed = set(profile_parameters())
    bad = sorted(set(params) - allowed)
    if bad:
        raise ValueError(f"{path}: {bad} cannot be set by a profile; profile parameters: {sorted(allowed)}")
    if base is None:
        return params
    if not isinstance(base, str) or not base:
        raise ValueError(f"{path}: {BASE_KEY} must name a profile (e.g. quick), found {base!r}")
    if base.endswith((".yaml", ".yml")) and not Path(base).is_absolute():
        base = str(path.parent / base)
    return {**load_profile(base, (*_seen, path.resolve())), **params}


def profile_configs(profile: str, **overrides) -> SimpleNamespace:
    """Every config at a profile's values (``overrides``: NAME=value on top), e.g. for a benchmark:
    ``.data``, ``.unet_train``, ``.unet``, ``.sam``, ``.sam_train``, ``.evaluation``, ``.run``."""
    params = {**load_profile(profile), **overrides}
    out = {}
    for attr, b in [("run", RUN), ("data", DATA), ("unet_train", UNET_TRAIN), ("unet", UNET), ("sam", SAM),
                    ("sam_train", SAM_TRAIN), ("evaluation", EVAL)]:  # fmt: skip
        out[attr] = b.build(**{n: v for n, v in params.items() if n in b.names})
    return SimpleNamespace(**out)
