"""runtime/progress.py: widgets only in a live notebook, text bars headless, an override by environment."""

from __future__ import annotations

import io

import pytest

from brainseg_utils.runtime import progress


@pytest.mark.parametrize(
    "command, expected",
    [
        ("/venv/bin/python -m papermill notebooks/02.ipynb out.ipynb -k brainseg", True),
        ("/venv/bin/python /venv/bin/pytest -q tests/test_notebooks.py", True),
        ("/usr/bin/python3 -m jupyter nbconvert --execute --to notebook x.ipynb", True),
        ("/venv/bin/python /venv/bin/jupyter-lab --no-browser", False),
        ("/usr/bin/python3 -m colab_kernel_launcher", False),
        ("", False),
    ],
)
def test_headless_drivers_are_recognised_by_the_parent_command(command, expected):
    assert progress.headless(command) is expected


def test_outside_a_kernel_bars_are_text(monkeypatch):
    monkeypatch.delenv("BRAINSEG_PROGRESS", raising=False)
    assert progress.mode() == "text"
    bar = progress.tqdm(range(3), file=io.StringIO())
    assert type(bar).__module__ == "tqdm.std" and list(bar) == [0, 1, 2]


def test_a_live_kernel_gets_widgets_and_a_headless_one_text(monkeypatch):
    monkeypatch.delenv("BRAINSEG_PROGRESS", raising=False)
    monkeypatch.setattr(progress, "in_kernel", lambda: True)
    monkeypatch.setattr(progress, "parent_command", lambda pid=None: "python -m ipykernel_launcher (jupyter-lab)")
    assert progress.mode() == "widgets"
    monkeypatch.setattr(progress, "parent_command", lambda pid=None: "python -m papermill a.ipynb b.ipynb")
    assert progress.mode() == "text"
    out = io.StringIO()
    bar = progress.tqdm(range(2), file=out)  # in a kernel a text bar refreshes rarely (it is stored)
    assert type(bar).__module__ == "tqdm.std" and bar.mininterval == progress.KERNEL_TEXT_INTERVAL_S
    bar.close()


def test_the_environment_overrides_and_is_checked():
    assert progress.mode({"BRAINSEG_PROGRESS": "off"}) == "off"
    assert progress.mode({"BRAINSEG_PROGRESS": "Widgets "}) == "widgets"
    with pytest.raises(ValueError, match="BRAINSEG_PROGRESS='bars'"):
        progress.mode({"BRAINSEG_PROGRESS": "bars"})


def test_off_disables_the_bar(monkeypatch):
    monkeypatch.setenv("BRAINSEG_PROGRESS", "off")
    bar = progress.tqdm(range(2))
    assert bar.disable and list(bar) == [0, 1]
