"""config.py: one source of parameter defaults (notebooks, profiles, dataclasses agree); from_params mapping."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from functools import partial
from pathlib import Path

import pytest
import yaml

from brainseg_utils.config import OVERFLOW, DataConfig, SamConfig, TrainConfig, UNetConfig, parameter_defaults

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PROFILES = sorted((ROOT / "configs").glob("*.yaml"))

# (builder, NOTEBOOK_NAME -> field): every way a notebook parameter becomes a config field
BUILDERS = [
    (DataConfig.from_params, DataConfig.PARAMS),
    (partial(TrainConfig.from_params, "unet"), TrainConfig.UNET_PARAMS),
    (partial(TrainConfig.from_params, "sam"), TrainConfig.SAM_PARAMS),
    (UNetConfig.from_params, UNetConfig.PARAMS),
    (SamConfig.from_params, SamConfig.PARAMS),
]
# Parameters of one notebook that no config owns (run mode, evaluation and demo switches), with their
# notebook default. A new parameter must be owned by a config or be listed here.
NOTEBOOK_ONLY = {
    "INTERACTIVE": True,  # 01: ipywidgets explorer (run_all.sh passes False)
    "LATENCY_RUNS": 20,  # 04
    "EXPORT_NIFTI": True,  # 04
    "MAX_TEST_CASES": 0,  # 04
    "LAUNCH_DEMO": False,  # 05
    "SHARE": False,  # 05
    "AUTH": "",  # 05
}


def notebook_parameters(path: Path) -> dict[str, object]:
    """NAME -> literal value of the notebook's cell tagged ``parameters`` (parsed, never executed)."""
    nb = json.loads(path.read_text())
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{path.name}: expected one cell tagged 'parameters', found {len(cells)}"
    out = {}
    for node in ast.parse("".join(cells[0]["source"])).body:
        assert isinstance(node, ast.AnnAssign | ast.Assign), f"{path.name}: not an assignment: {ast.unparse(node)}"
        target = node.target if isinstance(node, ast.AnnAssign) else node.targets[0]
        out[target.id] = ast.literal_eval(node.value)
    return out


def owned(name: str, value) -> list[tuple[object, object]]:
    """[(value as the config stores it, the config's default)] for every config that owns ``name``."""
    pairs = []
    for build, names in BUILDERS:
        if name in names:
            field = names[name]
            pairs.append((getattr(build(**{name: value}), field), getattr(build(), field)))
    return pairs


# ----------------------------------------------------------------------------- one source of defaults
def test_defaults_are_the_full_profile():
    """The original hyper-parameters (configs/full.yaml; the issue's examples) are the dataclass defaults."""
    d = parameter_defaults()
    assert d["IMG_SIZE"] == 240 and d["UNET_BASE_CHANNELS"] == 64 and d["UNET_EPOCHS"] == 30
    assert d["SAM_EPOCHS"] == 30 and d["UNET_LR"] == d["SAM_LR"] == 1e-4 and d["UNET_BATCH_SIZE"] == 16
    assert d["SAM_OVERFLOW"] == "encode" and d["NUM_WORKERS"] == 2 and d["SAM_CACHE_BUDGET_GB"] == 16.0
    assert d["SAM_BACKEND"] == "auto" and d["SAM_CHECKPOINT"] == ""  # the seed's ViT-B wherever its file is found
    # names shared by several configs have one default (parameter_defaults raises otherwise)
    assert DataConfig().seed == TrainConfig().seed == d["SEED"] == 0


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_parameter_defaults_equal_config_defaults(path):
    params = notebook_parameters(path)
    assert params, f"{path.name} has an empty parameters cell"
    for name, value in params.items():
        pairs = owned(name, value)
        if not pairs:
            assert name in NOTEBOOK_ONLY, f"{path.name}: {name} is owned by no config and not listed in NOTEBOOK_ONLY"
            assert value == NOTEBOOK_ONLY[name], f"{path.name}: {name} = {value!r}, expected {NOTEBOOK_ONLY[name]!r}"
        for got, default in pairs:
            assert got == default, f"{path.name}: {name} = {value!r} but the config default is {default!r}"


def test_each_config_field_that_is_a_parameter_appears_in_its_notebook():
    nb = {p.name[:2]: notebook_parameters(p) for p in NOTEBOOKS}
    assert set(DataConfig.PARAMS) <= set(nb["01"])
    assert set(TrainConfig.UNET_PARAMS) | set(UNetConfig.PARAMS) <= set(nb["02"])
    assert set(TrainConfig.SAM_PARAMS) | set(SamConfig.PARAMS) <= set(nb["03"])


def test_full_profile_equals_the_defaults():
    full = yaml.safe_load((ROOT / "configs" / "full.yaml").read_text())
    for name, value in full.items():
        pairs = owned(name, value)
        assert pairs, f"full.yaml: {name} is not a config parameter"
        for got, default in pairs:
            assert got == default, f"full.yaml: {name} = {value!r} but the default is {default!r}"
    # run_all.sh reads these three from the profile to generate the synthetic dataset
    assert {"SYNTHETIC_CASES", "SYNTHETIC_DEPTH", "SEED"} <= set(full)


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_profile_keys_are_notebook_parameters(path):
    known = set().union(*(notebook_parameters(p) for p in NOTEBOOKS))
    profile = yaml.safe_load(path.read_text())
    unknown = sorted(set(profile) - known)
    assert not unknown, f"{path.name}: {unknown} is a parameter of no notebook (papermill would ignore it)"
    for name, value in profile.items():  # and every value is valid for the configs that own it
        owned(name, value)


def test_quick_profile_overrides_for_a_cpu():
    quick = yaml.safe_load((ROOT / "configs" / "quick.yaml").read_text())
    assert quick["IMG_SIZE"] < 240 and quick["UNET_BASE_CHANNELS"] < 64 and quick["NUM_WORKERS"] == 0
    assert quick["SAM_OVERFLOW"] == "subsample"  # never the on-the-fly encoder on a CPU


def test_benchmark_full_size_matches_the_defaults():
    """bench_unet's "full" size is the default U-Net width at the default image size."""
    text = (ROOT / "benchmarks" / "bench_unet.py").read_text()
    sizes = ast.literal_eval(re.search(r"^SIZES = (\{.*\})$", text, re.M).group(1))
    assert sizes["full"] == (UNetConfig().base_channels, DataConfig().img_size)
    quick = yaml.safe_load((ROOT / "configs" / "quick.yaml").read_text())
    assert sizes["quick"] == (quick["UNET_BASE_CHANNELS"], quick["IMG_SIZE"])


# ----------------------------------------------------------------------------- from_params
@pytest.mark.parametrize("build, names", BUILDERS, ids=["data", "train-unet", "train-sam", "unet", "sam"])
def test_from_params_rejects_unknown_names_with_the_options(build, names):
    with pytest.raises(TypeError, match=r"unknown .*\['UNET_EPOCS'\]; options: ") as err:
        build(UNET_EPOCS=3)
    for name in names:
        assert repr(name) in str(err.value)


def test_from_params_maps_notebook_names():
    unet = TrainConfig.from_params("unet", UNET_EPOCHS=3, UNET_LR=1e-3, NUM_WORKERS=0, SEED=7, DEVICE="cpu")
    assert (unet.epochs, unet.lr, unet.num_workers, unet.seed, unet.device) == (3, 1e-3, 0, 7, "cpu")
    sam = TrainConfig.from_params("sam", SAM_EPOCHS=2, SAM_BATCH_SIZE=4, RESUME="never")
    assert (sam.epochs, sam.batch_size, sam.resume, sam.num_workers) == (2, 4, "never", 0)
    assert TrainConfig.from_params("unet", epochs=5).epochs == 5  # field names work too
    # one notebook's names are unknown to the other's
    with pytest.raises(TypeError, match="UNET_EPOCHS"):
        TrainConfig.from_params("sam", UNET_EPOCHS=3)
    with pytest.raises(TypeError, match="NUM_WORKERS"):  # fixed at 0 for SAM: not a notebook 03 parameter
        TrainConfig.from_params("sam", NUM_WORKERS=2)
    with pytest.raises(ValueError, match="model must be 'unet' or 'sam'"):
        TrainConfig.from_params("vit", SAM_EPOCHS=1)
    data = DataConfig.from_params(IMG_SIZE=64, MODALITIES="flair, t2", SPLIT_FRACTIONS=[0.5, 0.25, 0.25])
    assert (data.img_size, data.modalities, data.split_fractions) == (64, ("flair", "t2"), (0.5, 0.25, 0.25))
    assert data.synthetic_config().appearance == "fixed"
    look = DataConfig.from_params(SYNTHETIC_APPEARANCE="randomised", SYNTHETIC_CASES=3, SYNTHETIC_DEPTH=40, SEED=2)
    assert dataclasses.astuple(look.synthetic_config()) == (3, 2, 40, False, (), "randomised")
    u = UNetConfig.from_params(UNET_BASE_CHANNELS=4, UNET_BILINEAR=True, UNET_DROPOUT=0.0, UNET_AUG_STRENGTH=0.5)
    assert dataclasses.astuple(u) == (4, True, 0.0, 0.5)
    s = SamConfig.from_params(
        SAM_BACKEND="litemedsam", SAM_PROMPTS="none, box,none", SAM_OVERFLOW="subsample", SAM_BOX_JITTER_PX=0
    )
    assert s.prompts == ("none", "box") and s.overflow == "subsample" and s.variant("box") == "sam_litemedsam_box"


@pytest.mark.parametrize(
    "cls, params, message",
    [
        (DataConfig, {"MODALITIES": "flair,dwi"}, "MODALITIES must be a comma-separated subset"),
        (DataConfig, {"IMG_SIZE": 8}, r"img_size must be in \[32, 1024\], got 8"),
        (
            DataConfig,
            {"SYNTHETIC_APPEARANCE": "real"},
            r"SYNTHETIC_APPEARANCE must be one of \['fixed', 'randomised'\]",
        ),
        (UNetConfig, {"UNET_BASE_CHANNELS": 0}, "UNET_BASE_CHANNELS must be >= 1, got 0"),
        (UNetConfig, {"UNET_DROPOUT": 1.0}, r"UNET_DROPOUT must be in \[0, 1\), got 1.0"),
        (UNetConfig, {"UNET_AUG_STRENGTH": 2.0}, r"UNET_AUG_STRENGTH must be in \[0, 1\], got 2.0"),
        (SamConfig, {"SAM_BACKEND": "vit_x"}, r"SAM_BACKEND must be one of \['auto', 'litemedsam'.*\], got 'vit_x'"),
        (
            SamConfig,
            {"SAM_PROMPTS": "box,unet_box"},
            r"prompt modes must be a comma-separated subset of \['none', 'box'\]",
        ),
        (SamConfig, {"SAM_PROMPTS": ""}, "prompt modes must be"),
        (SamConfig, {"SAM_OVERFLOW": "drop"}, rf"SAM_OVERFLOW must be one of {re.escape(str(OVERFLOW))}, got 'drop'"),
        (SamConfig, {"SAM_BOX_JITTER_PX": -1}, "SAM_BOX_JITTER_PX must be >= 0, got -1"),
        (SamConfig, {"SAM_ENCODE_BATCH": 0}, "SAM_ENCODE_BATCH must be >= 1, got 0"),
    ],
)
def test_bad_values_name_the_parameter(cls, params, message):
    with pytest.raises(ValueError, match=message):
        cls.from_params(**params)


def test_train_config_validation():
    with pytest.raises(ValueError, match="epochs and batch_size must be >= 1, got 0, 16"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="lr must be > 0, got 0"):
        TrainConfig.from_params("unet", UNET_LR=0)


def test_unet_config_builds_the_model_and_augmentation():
    u = UNetConfig(base_channels=4, bilinear=True, dropout=0.1, aug_strength=0.0)
    model = u.build(in_channels=2)
    assert model.config == {"arch": "unet", "in_channels": 2, "base_channels": 4, "bilinear": True, "dropout": 0.1}
    aug = u.augmentation()
    assert all(t.p == 0 for t in aug.transforms)  # strength 0: augmentation off


def test_train_module_reexports_the_config_class():
    from brainseg_utils.training import engine as train

    assert train.TrainConfig is TrainConfig
