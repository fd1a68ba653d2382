"""Progress bars: the one place that decides how the package shows progress.

``tqdm.auto`` draws an ipywidgets bar in every Jupyter kernel, also when nobody watches: a notebook executed
headless (papermill, nbconvert / nbclient, the tests) then stores each bar as a widget view that GitHub, nbviewer
and the HTML renderings cannot draw (notebook 02 saved ~48 of them). Here:

* ``widgets``: a live notebook (a kernel not started by papermill, nbconvert, nbclient or pytest);
* ``text``: everywhere else; inside a kernel on stdout (no red stderr box) and refreshed at most every
  ``KERNEL_TEXT_INTERVAL_S`` seconds, so the executed notebook keeps a few lines, not thousands of refreshes;
* ``off``: no bar.

``BRAINSEG_PROGRESS=widgets|text|off`` overrides the choice (e.g. a headless driver this module does not know).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

MODES = ("widgets", "text", "off")
HEADLESS_DRIVERS = ("papermill", "nbconvert", "nbclient", "jupyter-execute", "pytest", "nbmake")
KERNEL_TEXT_INTERVAL_S = 5.0  # a text bar inside a kernel is stored in the notebook: refresh it rarely


def in_kernel() -> bool:
    """True inside a Jupyter kernel (IPython with a kernel attached: Jupyter, Colab, Kaggle, VS Code)."""
    if "IPython" not in sys.modules:
        return False
    from IPython import get_ipython

    return getattr(get_ipython(), "kernel", None) is not None


def parent_command(pid: int | None = None) -> str:
    """The command line of this process's parent (Linux ``/proc``; "" where it cannot be read)."""
    try:
        raw = Path(f"/proc/{pid or os.getppid()}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def headless(command: str | None = None) -> bool:
    """True when this kernel was started by a program that executes notebooks without a person watching
    (``HEADLESS_DRIVERS`` in the parent's command line)."""
    command = parent_command() if command is None else command
    return any(name in command for name in HEADLESS_DRIVERS)


def mode(environ=None) -> str:
    """ "widgets", "text" or "off": ``BRAINSEG_PROGRESS`` when set, else widgets only in a live notebook."""
    forced = (environ if environ is not None else os.environ).get("BRAINSEG_PROGRESS", "").strip().lower()
    if forced:
        if forced not in MODES:
            raise ValueError(f"BRAINSEG_PROGRESS={forced!r}; options: {list(MODES)}")
        return forced
    return "widgets" if in_kernel() and not headless() else "text"


def tqdm(iterable=None, **kwargs):
    """A ``tqdm`` progress bar drawn as ``mode()`` says (same arguments as ``tqdm.tqdm``)."""
    how = mode()
    if how == "widgets":
        try:
            from tqdm.notebook import tqdm as notebook_bar

            return notebook_bar(iterable, **kwargs)
        except ImportError:  # ipywidgets missing or too old: tqdm.notebook refuses, fall back to text
            pass
    from tqdm.std import tqdm as text_bar

    if how == "off":
        kwargs["disable"] = True
    elif in_kernel():
        kwargs.setdefault("file", sys.stdout)
        kwargs.setdefault("mininterval", KERNEL_TEXT_INTERVAL_S)
    return text_bar(iterable, **kwargs)
