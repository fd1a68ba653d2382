"""Notebook hygiene, and each notebook executed headless through papermill on tiny synthetic data."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainseg_utils.parameters import NOTEBOOKS as PARAMETER_SPECS

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "brainseg"
WIDGET = "application/vnd.jupyter.widget-view+json"
NOTEBOOKS_PARAMS = {name: nb.params for name, nb in PARAMETER_SPECS.items()}


def test_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == [
        "01_eda.ipynb",
        "02_train_unet.ipynb",
        "03_finetune_sam.ipynb",
        "04_evaluate.ipynb",
        "05_demo.ipynb",
    ]


def parameters_cell_values(source: str) -> dict:
    """NAME -> value of a parameters cell that holds literals only: every statement is `NAME: type = literal`
    (papermill injects overrides after this cell, so a value computed here would go stale).
    ``ast.literal_eval`` refuses calls, names and arithmetic; nothing is executed."""
    out = {}
    for node in ast.parse(source).body:
        assert isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name), ast.unparse(node)
        assert node.target.id.isupper(), f"parameter names are UPPER_CASE: {node.target.id}"
        try:
            out[node.target.id] = ast.literal_eval(node.value)
        except ValueError as exc:
            raise AssertionError(f"{ast.unparse(node)} is not a literal") from exc
    return out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_hygiene(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not [c for c in code if c.outputs or c.execution_count], "commit notebooks without outputs"
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    assert parameters_cell_values(params[0].source), "empty parameters cell"
    defs = [c for c in code if any(ln.lstrip().startswith(("def ", "class ")) for ln in c.source.splitlines())]
    assert not defs, "logic belongs in brainseg_utils, not in notebooks"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[1].cell_type == "code", "title, then bootstrap"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_bootstrap_cell_is_the_one_source(path):
    """Every notebook's bootstrap cell is brainseg_utils.runtime.bootstrap.CELL, verbatim
    (edit CELL, then `python -m brainseg_utils.workflow.generate` rewrites the five cells)."""
    from brainseg_utils.runtime.bootstrap import CELL
    from brainseg_utils.workflow.generate import bootstrap_cell_index

    nb = nbformat.read(path, as_version=4)
    assert bootstrap_cell_index(nb.cells) == 1
    assert nb.cells[1].source == CELL, f"{path.name}: bootstrap cell differs from brainseg_utils.runtime.bootstrap.CELL"
    # collapsed, so a notebook opens on its content: a Colab form title, Jupyter's hidden source
    first = CELL.splitlines()[0]
    assert first.startswith("#@title ") and 'display-mode: "form"' in first
    assert nb.cells[1].metadata["jupyter"] == {"source_hidden": True}


def test_bootstrap_sync_rewrites_a_drifted_cell(tmp_path):
    import shutil

    from brainseg_utils.runtime.bootstrap import CELL
    from brainseg_utils.workflow.generate import sync

    (tmp_path / "notebooks").mkdir()
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    for p in NOTEBOOKS[:2]:
        shutil.copy(p, tmp_path / "notebooks" / p.name)
    drifted = tmp_path / "notebooks" / NOTEBOOKS[0].name
    nb = nbformat.read(drifted, as_version=4)
    nb.cells[1].source = CELL.replace("--depth", "--depth=1 #")
    nbformat.write(nb, drifted)
    unfolded = tmp_path / "notebooks" / NOTEBOOKS[1].name
    nb = nbformat.read(unfolded, as_version=4)
    del nb.cells[1].metadata["jupyter"]  # the source is current, but the cell is no longer collapsed
    nbformat.write(nb, unfolded)
    assert sync(tmp_path) == [drifted, unfolded]  # only these two are rewritten
    assert nbformat.read(drifted, as_version=4).cells[1].source == CELL
    assert nbformat.read(unfolded, as_version=4).cells[1].metadata["jupyter"] == {"source_hidden": True}
    assert sync(tmp_path) == []


def test_parameters_check_refuses_non_literals():
    """The hygiene check refuses what compile() accepted: calls, names, arithmetic, untyped or lower-case names."""
    good = 'A: int = 1  # comment\nB: list = [0.7, 0.15, 0.15]\nC: str = "x"\nD: float = -1e-4\n'
    assert parameters_cell_values(good) == {"A": 1, "B": [0.7, 0.15, 0.15], "C": "x", "D": -1e-4}
    for bad in (
        "X: int = int('3')",
        "X: int = OTHER",
        "X: int = 2 * 3",
        "X: str = __import__('os').getcwd()",
        "X = 3",
        "x: int = 3",
        "import os",
    ):
        with pytest.raises(AssertionError):
            parameters_cell_values(bad)


def injected_names(nb) -> set[str]:
    """The names papermill injected (the cell tagged ``injected-parameters``)."""
    cells = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    return {t.id for c in cells for node in ast.parse(c.source).body for t in getattr(node, "targets", [])}


@pytest.fixture(scope="session")
def kernel():
    from jupyter_client.kernelspec import KernelSpecManager

    if KERNEL not in KernelSpecManager().find_kernel_specs():
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", KERNEL], check=True)
    return KERNEL


@pytest.fixture(scope="session")
def nb_run(tmp_path_factory, kernel):
    """Runs notebooks in order into one output folder; later notebooks read what earlier ones wrote."""
    import papermill as pm

    base = tmp_path_factory.mktemp("nbrun")
    params = {
        "OUTPUT_DIR": str(base / "outputs"),
        "SYNTHETIC_DIR": str(base / "synthetic"),
        "SYNTHETIC_CASES": 6,
        "SYNTHETIC_DEPTH": 48,
        "IMG_SIZE": 64,
        "INTERACTIVE": False,
        "SEED": 1,
    }

    from brainseg_utils.workflow.arguments import declared

    def run(name: str, **extra):
        out = base / f"{name}.out.ipynb"
        pm.execute_notebook(
            str(ROOT / "notebooks" / f"{name}.ipynb"),
            str(out),
            parameters=declared(name, {**params, **extra}),  # as run_all.sh: only what the notebook declares
            kernel_name=kernel,
            cwd=str(ROOT),
            progress_bar=False,
        )
        return nbformat.read(out, as_version=4)

    run.params = params
    run.base = base
    return run


@pytest.fixture(scope="session")
def run01(nb_run):
    return nb_run("01_eda")


@pytest.mark.notebook
def test_01_eda(nb_run, run01):
    nb = run01
    out = Path(nb_run.params["OUTPUT_DIR"])
    audit = pd.read_csv(out / "data" / "audit.csv")
    assert len(audit) == 6 and set(audit.status) == {"ok"} and (audit.tumour_ml > 0).all()
    ds = json.loads((out / "data" / "dataset.json").read_text())
    assert ds["name"] == "synthetic" and ds["n_cases"] == 6
    split = json.loads((out / "data" / "splits.json").read_text())
    assert ds["split_sha256"] == split["sha256"]
    assert sorted(split["train"] + split["val"] + split["test"]) == sorted(audit.case_id)
    manifest = json.loads((out / "data" / "slices" / "manifest.json").read_text())
    assert manifest["config"]["img_size"] == 64 and manifest["n_cases"] == 6
    for fig in (
        "eda_distributions",
        "eda_flair_histograms",
        "eda_examples",
        "eda_cache_samples",
        "eda_explorer_static",
    ):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 10_000, fig
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert images >= 5, "figures are shown inline in the executed notebook"
    assert injected_names(nb) <= set(NOTEBOOKS_PARAMS["01_eda"]), "only the parameters notebook 01 declares"
    # Re-running reuses the split and the cache.
    mtime = (out / "data" / "slices" / "images.f16").stat().st_mtime_ns
    nb_run("01_eda")
    assert json.loads((out / "data" / "splits.json").read_text()) == split
    assert (out / "data" / "slices" / "images.f16").stat().st_mtime_ns == mtime


UNET_TINY = {"UNET_EPOCHS": 2, "UNET_BATCH_SIZE": 8, "UNET_BASE_CHANNELS": 4, "NUM_WORKERS": 0, "UNET_LR": 1e-3}


@pytest.fixture(scope="session")
def run02(nb_run, run01):
    return nb_run("02_train_unet", **UNET_TINY)


@pytest.mark.notebook
def test_02_train_unet(nb_run, run02):
    nb = run02
    out = Path(nb_run.params["OUTPUT_DIR"])
    hist = json.loads((out / "unet" / "history.json").read_text())
    assert [h["epoch"] for h in hist["history"]] == [1, 2]
    split = json.loads((out / "data" / "splits.json").read_text())
    assert hist["meta"]["split_sha256"] == split["sha256"] and hist["meta"]["dataset"] == "synthetic"
    data = hist["meta"]["data"]
    manifest_rows = pd.read_csv(out / "data" / "slices" / "index.csv")
    assert data["train_slices"] == manifest_rows.case_id.isin(split["train"]).sum()
    assert data["val_slices"] == manifest_rows.case_id.isin(split["val"]).sum()
    assert data["train_cases"] == len(split["train"]) and "note" not in data
    import torch

    ckpt = torch.load(out / "unet" / "best.pt", map_location="cpu", weights_only=True)
    assert ckpt["config"]["model"]["base_channels"] == 4 and ckpt["meta"]["split_sha256"] == split["sha256"]
    assert (out / "figures" / "unet_training_curves.png").stat().st_size > 10_000
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "U-Net: " in text and "parameters" in text
    assert injected_names(nb) == {"OUTPUT_DIR", "SEED", *UNET_TINY}, "no data or SAM parameters in notebook 02"
    widgets = [o for c in nb.cells for o in c.get("outputs", []) if WIDGET in o.get("data", {})]
    assert not widgets, "headless: text progress bars, no widget views saved in the notebook"
    # Re-running resumes: training is complete, nothing is retrained.
    mtime = (out / "unet" / "last.pt").stat().st_mtime_ns
    nb_run("02_train_unet", **UNET_TINY)
    assert (out / "unet" / "last.pt").stat().st_mtime_ns == mtime


SAM_TINY = {
    "SAM_BACKEND": "litemedsam",  # quick.yaml's CPU backend, whatever SAM weights this machine holds
    "SAM_PROMPTS": "box,none",
    "SAM_EPOCHS": 1,
    "SAM_BATCH_SIZE": 4,
    "SAM_CACHE_BUDGET_GB": 0.0234,
    "SAM_ENCODE_BATCH": 4,
    "SAM_OVERFLOW": "subsample",
}


@pytest.fixture(scope="session")
def run03(nb_run, run01, run02):
    # after notebook 02, so the box decoder is selected with the U-Net's boxes (the automatic cascade)
    return nb_run("03_finetune_sam", **SAM_TINY)


@pytest.mark.notebook
def test_03_finetune_sam(nb_run, run03):
    out = Path(nb_run.params["OUTPUT_DIR"])
    split = json.loads((out / "data" / "splits.json").read_text())
    emb_dirs = [p for p in (out / "sam" / "embeddings").iterdir() if p.is_dir()]
    assert (
        len(emb_dirs) == 1 and json.loads((emb_dirs[0] / "manifest.json").read_text())["n"] == 11
    )  # budget: 11 slices
    for prompt in ("box", "none"):
        d = out / "sam" / f"sam_litemedsam_{prompt}"
        zs = json.loads((d / "zero_shot.json").read_text())
        assert zs["oracle_box"] is False and 0.0 <= zs["val_dice"] <= 1.0 and zs["dataset"] == "synthetic"
        assert zs["validation_prompt"].startswith("U-Net boxes" if prompt == "box" else "no prompt")
        hist = json.loads((d / "history.json").read_text())
        assert len(hist["history"]) == 1 and hist["meta"]["split_sha256"] == split["sha256"]
        assert hist["meta"]["prompt"] == prompt and (d / "best.pt").exists()
        data = hist["meta"]["data"]  # the tiny budget holds 11 slices: the subsample is recorded, not hidden
        assert 0 < data["train_slices"] + data["val_slices"] <= 11 and "holds 11 of" in data["note"]
    summary = pd.read_csv(out / "sam" / "summary.csv")
    assert set(summary.variant) == {"sam_litemedsam_box", "sam_litemedsam_none"}
    assert (out / "figures" / "sam_training_curves.png").stat().st_size > 10_000


@pytest.mark.notebook
def test_04_evaluate(nb_run, run02, run03):
    nb_run("04_evaluate", LATENCY_RUNS=2, MAX_TEST_CASES=1)
    out = Path(nb_run.params["OUTPUT_DIR"])
    m = json.loads((out / "results" / "metrics.json").read_text())
    split = json.loads((out / "data" / "splits.json").read_text())
    assert m["dataset"]["name"] == "synthetic" and m["dataset"]["split_sha256"] == split["sha256"]
    names = {
        "unet",
        "unet_clean",
        "sam_litemedsam_box",
        "sam_litemedsam_none",
        "sam_litemedsam_unet_box",
        "sam_litemedsam_box_zeroshot",
    }
    assert set(m["models"]) == names
    for name in names:
        entry = m["models"][name]
        for metric in ("dice", "iou", "precision", "recall", "hd95"):
            assert entry["per_case"][metric]["mean"] is not None and entry["per_slice"][metric]["mean"] is not None
        if name == "unet_clean":  # a whole-volume step: no batch-1 latency, but a per-volume time
            assert entry["latency_ms"] is None and entry["prompt"] == m["models"]["unet"]["prompt"]
            assert entry["volume"]["seconds"] > 0 and entry["volume"]["slices"] > 0
        else:
            assert entry["latency_ms"]["median"] > 0 and entry["latency_ms"]["device"] == "cpu"
    assert (
        m["models"]["sam_litemedsam_box"]["oracle"] is True
        and m["models"]["sam_litemedsam_unet_box"]["oracle"] is False
    )
    assert "encoder_ms" in m["models"]["sam_litemedsam_none"]["latency_ms"]
    unet_meta = json.loads((out / "unet" / "history.json").read_text())["meta"]["data"]
    assert m["models"]["unet"]["data"] == {
        k: unet_meta[k] for k in ("train_slices", "val_slices", "train_cases", "val_cases")
    }
    assert "holds 11 of" in m["models"]["sam_litemedsam_box"]["data"]["note"]
    assert m["models"]["sam_litemedsam_box_zeroshot"]["data"]["train_slices"] == 0
    # one test patient: no CI, no p-value, and the oracle box has no false-positive rate
    assert m["models"]["unet"]["per_case"]["dice"]["ci95"] is None
    assert m["statistics"]["sam_litemedsam_none"]["p_value"] is None
    assert m["models"]["sam_litemedsam_box"]["false_positive_rate"]["value"] is None
    assert m["provenance"]["commit"] and m["provenance"]["command"]
    per_case = pd.read_csv(out / "results" / "per_case.csv")
    assert set(per_case.model) == names and len(per_case) == 6
    assert m["cleanup"]["chosen_on"] == "validation cases" and m["cleanup"]["n_val_cases"] >= 1
    assert {"lesion_dice", "lesion_hd95", "n_tp", "n_fn", "n_fp", "nsd_2mm", "fp_ml"} <= set(per_case.columns)
    md = (out / "results" / "results.md").read_text()
    assert "SYNTHETIC" in md and "ORACLE" in md
    # issue 25: deviations from the seed read from what the run recorded; BraTS-pretrained SAM rows marked
    proto = m["seed_protocol"]
    assert proto["comparable_column"] == "Dice (tumour slices)" and proto["data_differs"] is True
    assert proto["recorded"]["UNET_MR_AUGMENT"] is not None and proto["deviations"]  # notebook 02 recorded it
    assert m["sam_backends"]["litemedsam"]["pretraining"]["may_have_seen_test"] is True
    assert m["models"]["sam_litemedsam_box"]["pretraining_note"].startswith("†")
    assert m["models"]["unet"]["pretraining_note"] == ""
    assert "| sam_litemedsam_box † |" in md and "Deviations from the seed" in md and "SAM pretraining" in md
    case = m["dataset"]["test_cases"][0]
    src = nib.load(next((Path(nb_run.params["SYNTHETIC_DIR"]) / case).glob("*_flair.nii*")))
    for name in names:
        pred = nib.load(out / "predictions" / name / f"{case}_pred.nii.gz")
        assert pred.shape == src.shape and np.allclose(pred.affine, src.affine)
    for fig in ("training_curves_all", "comparison_grid", "dice_per_patient", "dice_vs_size"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 10_000, fig


@pytest.mark.notebook
def test_04_refuses_other_split(nb_run, run02, tmp_path):
    """A checkpoint whose split hash differs from splits.json stops the evaluation notebook."""
    import shutil

    import papermill as pm
    import torch

    out = Path(nb_run.params["OUTPUT_DIR"])
    other = tmp_path / "outputs"
    shutil.copytree(out / "data", other / "data")
    (other / "unet").mkdir(parents=True)
    ckpt = torch.load(out / "unet" / "best.pt", map_location="cpu", weights_only=True)
    ckpt["meta"]["split_sha256"] = "0" * 64
    torch.save(ckpt, other / "unet" / "best.pt")
    with pytest.raises(pm.PapermillExecutionError, match="was trained on split 000000000000"):
        nb_run("04_evaluate", OUTPUT_DIR=str(other), LATENCY_RUNS=1)


@pytest.mark.notebook
def test_05_demo_headless(nb_run, run02, run03):
    nb = nb_run("05_demo")
    out = Path(nb_run.params["OUTPUT_DIR"])
    assert (out / "figures" / "demo_examples.png").stat().st_size > 10_000
    examples = sorted(p.name for p in (out / "demo" / "examples").iterdir())
    assert any(n.endswith(".png") for n in examples) and any(n.endswith("_flair.nii.gz") for n in examples)
    assert any(n.endswith("_truth.png") for n in examples) and any(n.endswith("_truth.nii.gz") for n in examples)
    text = "\\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "LAUNCH_DEMO=False: not launched" in text
    tables = "".join(o.get("data", {}).get("text/plain", "") for c in nb.cells for o in c.get("outputs", []))
    assert "unet_dice" in tables and "sam_dice" in tables, "the examples' table lists ground truth and Dice"
