"""scripts/render_notebooks.py: a tiny executed notebook to HTML (the collapsed bootstrap source left out) and to a
full-page PNG screenshot by headless Chromium (skipped without it, unless BRAINSEG_REQUIRE_BROWSER=1)."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from PIL import Image

from brainseg_utils.runtime import browser

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "render_notebooks.py"


def _png(colour) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (120, 80), colour).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture
def run_folder(tmp_path):
    """A run folder holding one executed notebook: title, a collapsed bootstrap cell, printed text and a figure."""
    nb = new_notebook(
        cells=[
            new_markdown_cell("# 99 · Tiny notebook"),
            new_code_cell("SECRET_BOOTSTRAP_SOURCE = 1", metadata={"jupyter": {"source_hidden": True}}),
            new_code_cell("print('hello from the kernel')", execution_count=1,
                          outputs=[new_output("stream", name="stdout", text="hello from the kernel\n")]),
            new_code_cell("plt.show()", execution_count=2,
                          outputs=[new_output("display_data", data={"image/png": _png((200, 30, 30))})]),
        ]
    )  # fmt: skip
    (tmp_path / "notebooks").mkdir()
    nbformat.write(nb, tmp_path / "notebooks" / "99_tiny.ipynb")
    return tmp_path


def _render(run_folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--output-dir", str(run_folder), *args], capture_output=True, text=True, cwd=ROOT
    )


def test_html_without_the_collapsed_source(run_folder):
    res = _render(run_folder, "--no-png")
    assert res.returncode == 0, res.stderr
    html = (run_folder / "render" / "notebooks" / "99_tiny.html").read_text()
    assert "Tiny notebook" in html and "hello from the kernel" in html and "data:image/png;base64," in html
    assert "SECRET_BOOTSTRAP_SOURCE" not in html
    assert "print" in html  # other sources are shown


def test_no_executed_notebooks_is_an_error(tmp_path):
    res = _render(tmp_path, "--no-png")
    assert res.returncode == 2 and "no executed notebooks" in res.stderr


def test_png_screenshot_of_the_whole_page(run_folder):
    if not browser.available():
        if os.environ.get("BRAINSEG_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium / chromedriver missing; .ci/run installs the Debian packages")
        pytest.skip("chromium and chromedriver are not installed")
    res = _render(run_folder, "--png-width", "900", "--max-height", "300")
    assert res.returncode == 0, res.stderr
    shots = sorted((run_folder / "render" / "notebooks").glob("99_tiny*.png"))
    assert len(shots) >= 2 and shots[0].name == "99_tiny-1.png", "a page taller than 300 px is split"
    images = [np.asarray(Image.open(p).convert("RGB")) for p in shots]
    assert all(im.shape[1] == 900 and im.shape[0] <= 300 for im in images)
    page = np.concatenate(images)
    assert page.std() > 5, "not a blank page"
    red = (page[..., 0] > 180) & (page[..., 1] < 60) & (page[..., 2] < 60)
    assert red.sum() > 1000, "the notebook's figure is in the screenshot"
