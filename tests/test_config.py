"""config.py and parameters.py: the dataclasses hold every default; notebooks' parameters cells, configs/full.yaml
and the notebooks' config building are derived from them; from_params mapping and validation."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import shutil
from functools import partial
from pathlib import Path

import nbformat
import pytest
import yaml

from brainseg_utils import parameters as P
from brainseg_utils.config import (
    OVERFLOW,
    DataConfig,
    DemoConfig,
    EvalConfig,
    RunConfig,
    SamConfig,
    TrainConfig,
    UNetConfig,
)
from brainseg_utils.parameters import parameter_defaults
from brainseg_utils.workflow import generate

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
    (RunConfig.from_params, RunConfig.PARAMS),
    (EvalConfig.from_params, EvalConfig.PARAMS),
    (DemoConfig.from_params, DemoConfig.PARAMS),
]


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


# ----------------------------------------------------------------------------- one source of defaults
def test_defaults_are_the_full_profile():
    """The full profile (configs/full.yaml) is the dataclass defaults."""
    d = parameter_defaults()
    assert d["IMG_SIZE"] == 240 and d["UNET_BASE_CHANNELS"] == 64 and d["UNET_EPOCHS"] == 30
    assert d["SAM_EPOCHS"] == 30 and d["UNET_LR"] == d["SAM_LR"] == 1e-4 and d["UNET_BATCH_SIZE"] == 16
    assert d["SAM_OVERFLOW"] == "encode" and d["NUM_WORKERS"] == 2 and d["SAM_CACHE_BUDGET_GB"] == 16.0
    assert d["SAM_BACKEND"] == "auto" and d["SAM_CHECKPOINT"] == ""  # the seed's ViT-B wherever its file is found
    assert d["LATENCY_RUNS"] == 20 and d["OUTPUT_DIR"] == "outputs" and d["LAUNCH_DEMO"] is False
    assert DataConfig().seed == TrainConfig().seed == d["SEED"] == 0


def test_generated_files_are_current():
    """Notebook parameters cells, bootstrap cells and configs/full.yaml equal what the configs generate
    (after editing config.py: `python -m brainseg_utils.workflow.generate`)."""
    assert generate.sync(ROOT, write=False) == []
    assert generate.main(["--check"]) == 0


def test_generate_rewrites_stale_files_and_check_names_them(tmp_path, capsys):
    for sub in ("notebooks", "configs"):
        shutil.copytree(ROOT / sub, tmp_path / sub)
    nb_path = tmp_path / "notebooks" / "02_train_unet.ipynb"
    nb = nbformat.read(nb_path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = cell.source.replace("UNET_EPOCHS: int = 30", "UNET_EPOCHS: int = 31")
    nbformat.write(nb, nb_path)
    (tmp_path / "configs" / "full.yaml").write_text("UNET_EPOCHS: 31\n")
    assert generate.main(["--check", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "02_train_unet.ipynb" in out and "full.yaml" in out and "01_eda" not in out
    assert generate.sync(tmp_path) == [nb_path, tmp_path / "configs" / "full.yaml"]
    assert notebook_parameters(nb_path)["UNET_EPOCHS"] == 30
    assert generate.sync(tmp_path) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_parameters_are_the_config_defaults(path):
    params = notebook_parameters(path)
    assert list(params) == list(P.NOTEBOOKS[path.stem].params)
    defaults = parameter_defaults()
    for name, value in params.items():
        assert value == P.notebook_value(defaults[name]), f"{path.name}: {name} = {value!r}"


def test_every_parameter_is_documented_and_owned():
    for notebook, nb in P.NOTEBOOKS.items():
        for name in nb.params:
            assert P.owners(name, nb.builders), f"{notebook}: {name} is owned by no config it builds"
            assert P.param(name, nb.builders).doc, f"{name}: its config field needs a trailing comment"
    with pytest.raises(KeyError, match="unknown parameter 'NOPE'"):
        P.param("NOPE")


def test_field_docs_reads_trailing_comments():
    docs = P.field_docs(UNetConfig)
    assert docs["dropout"] == "dropout in the bottleneck"
    assert "PARAMS" not in docs


def test_full_profile_equals_the_defaults():
    full = yaml.safe_load((ROOT / "configs" / "full.yaml").read_text())
    assert list(full) == P.profile_parameters()
    d = parameter_defaults()
    for name, value in full.items():
        assert value == P.notebook_value(d[name]), f"full.yaml: {name} = {value!r}"
    assert not set(full) & P.RUN_SPECIFIC


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_profiles_load_and_build_every_config(path):
    params = P.load_profile(str(path))
    configs = P.profile_configs(str(path))
    for name, value in params.items():
        builders = P.owners(name)
        assert builders, name
        for b in builders:
            attr = next(a for a, c in vars(configs).items() if isinstance(c, b.cls) and name in b.names)
            cfg = getattr(configs, attr)
            assert P.notebook_value(getattr(cfg, b.names[name])) == value or b.cls is TrainConfig


def test_profile_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"profile 'nope'.*options: \['full', 'longer', 'quick'"):
        P.load_profile("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("OUTPUT_DIR: /tmp/x\nUNET_EPOCHS: 2\n")
    with pytest.raises(ValueError, match=r"bad.yaml: \['OUTPUT_DIR'\] cannot be set by a profile"):
        P.load_profile(str(bad))
    bad.write_text("- 1\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        P.load_profile(str(bad))


def test_profile_base_starts_from_another_profile(tmp_path):
    """``BASE: quick``: every value of quick.yaml, the profile's own on top; chains followed, cycles refused."""
    quick = yaml.safe_load((ROOT / "configs" / "quick.yaml").read_text())
    longer = yaml.safe_load((ROOT / "configs" / "longer.yaml").read_text())
    assert longer.pop("BASE") == "quick"
    assert P.load_profile("longer") == {**quick, **longer}
    assert P.load_profile("longer")["UNET_EPOCHS"] == 30 and quick["UNET_EPOCHS"] == 24
    one, two = tmp_path / "one.yaml", tmp_path / "two.yaml"
    one.write_text("BASE: longer\nUNET_EPOCHS: 5\n")
    two.write_text("BASE: one.yaml\nSEED: 3\n")  # a .yaml BASE is relative to the file naming it
    got = P.load_profile(str(two))
    assert (got["SEED"], got["UNET_EPOCHS"], got["SLICE_STEP"], got["IMG_SIZE"]) == (3, 5, 2, quick["IMG_SIZE"])
    assert "BASE" not in got
    one.write_text("BASE: two.yaml\n")
    with pytest.raises(ValueError, match=r"two.yaml: BASE makes a cycle \(two.yaml -> one.yaml -> two.yaml\)"):
        P.load_profile(str(two))
    one.write_text("BASE: [quick]\n")
    with pytest.raises(ValueError, match=r"one.yaml: BASE must name a profile .*\['quick'\]"):
        P.load_profile(str(one))
    one.write_text("BASE: nope\n")
    with pytest.raises(FileNotFoundError, match="profile 'nope'"):
        P.load_profile(str(one))
    one.write_text("BASE: quick\nOUTPUT_DIR: x\n")
    with pytest.raises(ValueError, match=r"one.yaml: \['OUTPUT_DIR'\] cannot be set by a profile"):
        P.load_profile(str(one))


def test_profile_configs_apply_overrides():
    c = P.profile_configs("quick", UNET_EPOCHS=3)
    quick = yaml.safe_load((ROOT / "configs" / "quick.yaml").read_text())
    assert c.unet_train.epochs == 3 and c.unet_train.lr == quick["UNET_LR"]
    assert c.unet.base_channels == quick["UNET_BASE_CHANNELS"] and c.data.img_size == quick["IMG_SIZE"]
    assert c.unet_train.weight_decay == TrainConfig().weight_decay  # not in quick.yaml: the default
    assert c.sam_train.num_workers == 0 and c.sam.overflow == quick["SAM_OVERFLOW"]


def test_notebook_configs_builds_from_a_namespace():
    ns = {n: P.param(n).default for n in P.NOTEBOOKS["02_train_unet"].params}
    ns.update(UNET_EPOCHS=3, NUM_GPUS="2", UNET_DROPOUT=0.1, unrelated=object())
    c = P.notebook_configs("02_train_unet", ns)
    assert (c.train.epochs, c.train.num_gpus, c.unet.dropout, c.run.output_dir) == (3, 2, 0.1, "outputs")
    del ns["SEED"]
    with pytest.raises(NameError, match=r"\['SEED'\] are not defined; run the cell tagged 'parameters'"):
        P.notebook_configs("02_train_unet", ns)
    with pytest.raises(KeyError, match="unknown notebook"):
        P.notebook_configs("06_nope", ns)
    ns05 = {n: P.param(n).default for n in P.NOTEBOOKS["05_demo"].params} | {"AUTH": "ann:secret"}
    assert P.notebook_configs("05_demo", ns05).demo.auth_pair() == ("ann", "secret")
    with pytest.raises(ValueError, match="AUTH must be"):
        P.notebook_configs("05_demo", ns05 | {"AUTH": "nocolon"})


def test_quick_profile_overrides_for_a_cpu():
    quick = yaml.safe_load((ROOT / "configs" / "quick.yaml").read_text())
    assert quick["IMG_SIZE"] < 240 and quick["UNET_BASE_CHANNELS"] < 64 and quick["NUM_WORKERS"] == 0
    assert quick["SAM_OVERFLOW"] == "subsample"  # never the on-the-fly encoder on a CPU


def test_benchmarks_take_their_sizes_from_the_profiles():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_unet", ROOT / "benchmarks" / "bench_unet.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.SIZES["full"] == (UNetConfig().base_channels, DataConfig().img_size)
    quick = yaml.safe_load((ROOT / "configs" / "quick.yaml").read_text())
    assert bench.SIZES["quick"] == (quick["UNET_BASE_CHANNELS"], quick["IMG_SIZE"])


# ----------------------------------------------------------------------------- from_params
@pytest.mark.parametrize(
    "build, names", BUILDERS, ids=["data", "train-unet", "train-sam", "unet", "sam", "run", "eval", "demo"]
)
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
    u = UNetConfig.from_params(
        UNET_BASE_CHANNELS=4, UNET_BILINEAR=True, UNET_DROPOUT=0.0, UNET_AUG_STRENGTH=0.5, UNET_MR_AUGMENT=False
    )
    assert dataclasses.astuple(u) == (4, True, 0.0, 0.5, False)
    assert TrainConfig.from_params("unet", UNET_LR_SCHEDULE="constant").lr_schedule == "constant"
    with pytest.raises(TypeError, match="UNET_LR_SCHEDULE"):  # the SAM decoders keep the cosine schedule
        TrainConfig.from_params("sam", UNET_LR_SCHEDULE="constant")
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


def test_train_config_refuses_an_unknown_schedule():
    with pytest.raises(ValueError, match=r"UNET_LR_SCHEDULE\) must be one of \('cosine', 'constant'\), got 'step'"):
        TrainConfig.from_params("unet", UNET_LR_SCHEDULE="step")


def test_seed_profile_is_the_seeds_protocol():
    """configs/seed.yaml: 256 px, tumour slices only, bilinear U-Net (28.9 M parameters at width 64), Adam at a
    constant LR without clipping, weight averaging or MR-intensity augmentation; the rest as the full profile."""
    from brainseg_utils.models.unet import count_parameters

    c = P.profile_configs("seed")
    assert (c.data.img_size, c.data.tumour_free_fraction, c.data.slice_step) == (256, 0.0, 1)
    assert (c.unet.base_channels, c.unet.bilinear, c.unet.mr_augment) == (64, True, False)
    t = c.unet_train
    assert (t.weight_decay, t.grad_clip, t.lr_schedule, t.ema_decay) == (0.0, 0.0, "constant", 0.0)
    assert (t.epochs, t.batch_size, t.lr) == (30, 16, 1e-4)  # the full profile's, unchanged
    assert count_parameters(c.unet.build(in_channels=1))["total"] == 28_947_521  # the seed's "28.9 M"
    assert count_parameters(P.profile_configs("full").unet.build(in_channels=1))["total"] == 31_036_481
    assert not [t for t in c.unet.augmentation().transforms if type(t).__name__ in ("RandomBiasField", "RandomGamma")]
