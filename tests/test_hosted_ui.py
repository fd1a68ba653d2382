"""What hosted notebooks show: Gradio launch options on Colab/Kaggle, the slice explorer on ipywidgets 7."""

from __future__ import annotations

import sys
from pathlib import Path

from brainseg_utils.app import demo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


# ----------------------------------------------------------------------------- Gradio on hosted notebooks (7)
def test_gradio_launch_options(clean, capsys):
    assert demo.launch_options(False, None) == {"share": None, "auth": None}  # locally: Gradio's default, no link
    assert demo.launch_options(True, ("u", "p")) == {"share": True, "auth": ("u", "p")}
    clean.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    opts = demo.launch_options(False, None)  # Kaggle: Gradio's hosted-notebook share link, never without auth
    assert opts["share"] is None and opts["auth"][0] == "brainseg" and len(opts["auth"][1]) >= 12
    assert f"password {opts['auth'][1]!r}" in capsys.readouterr().out


# ----------------------------------------------------------------------------- explorer on Colab's ipywidgets 7
IPYWIDGETS_7_6 = {"VBox", "HBox", "Dropdown", "IntSlider", "FloatSlider", "Checkbox", "Output"}


def test_explorer_widget_uses_what_ipywidgets_7_6_has(synth_root):
    """The explorer builds from widgets and traits that ipywidgets 7.6 (Colab's 7.x line) already had, and
    changing the case moves the slice slider to that case's largest tumour slice."""
    import matplotlib

    matplotlib.use("agg")
    from brainseg_utils.data import brats, volumes
    from brainseg_utils.evaluation import figures as viz

    cases = brats.discover_cases(synth_root)[:2]
    box = viz.SliceExplorer(cases, "synthetic").widget()
    found, stack = set(), [box]
    while stack:
        w = stack.pop()
        found.add(type(w).__name__)
        stack.extend(getattr(w, "children", ()))
    assert found == IPYWIDGETS_7_6
    (case, _), (z, _, _) = box.children[0].children, box.children[1].children
    case.value = cases[1].case_id
    seg = volumes.load_case(cases[1], ("flair",))["wt"]
    assert z.max == seg.shape[2] - 1 and z.value == volumes.best_slice(seg)
