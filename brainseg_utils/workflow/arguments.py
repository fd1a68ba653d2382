"""The papermill arguments one notebook receives: only the parameters it declares.

Papermill injects every parameter it is given into the cell after ``parameters``, declared or not (it only logs
``Passed unknown parameter``): a whole profile would put the U-Net's and SAM's settings into the data notebook.
So the profile, the ``-f`` / ``-y`` / ``-b`` sources and the ``-p`` / ``-r`` pairs of the extra arguments are
merged here (papermill's order: profile, ``-b``, ``-f``, ``-y``; ``-p`` / ``-r`` pairs last) and each notebook is
given the values of ``parameters.NOTEBOOKS[notebook].params`` only, as one ``-y`` YAML mapping. A name that no
notebook declares is an error (``unknown_parameters``): a typo must not vanish silently.
"""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

from brainseg_utils.parameters import NOTEBOOKS, all_parameters

PAIR_FLAGS = {"-p": "-p", "--parameters": "-p", "-r": "-r", "--parameters_raw": "-r"}  # NAME VALUE follow
SOURCE_FLAGS = {"-b": "b64", "--parameters_base64": "b64", "-f": "file", "--parameters_file": "file",
                "-y": "yaml", "--parameters_yaml": "yaml"}  # fmt: skip


def declared(notebook: str, values: dict) -> dict:
    """The items of ``values`` whose name ``notebook`` declares (``parameters.NOTEBOOKS``), in ``values``' order."""
    if notebook not in NOTEBOOKS:
        raise KeyError(f"unknown notebook {notebook!r}; options: {sorted(NOTEBOOKS)}")
    names = set(NOTEBOOKS[notebook].params)
    return {k: v for k, v in values.items() if k in names}


def _source(kind: str, value: str) -> dict:
    if kind == "file":
        text = Path(value).read_text()
    elif kind == "b64":
        text = base64.b64decode(value).decode()
    else:
        text = value
    loaded = yaml.safe_load(text) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"papermill parameters {value!r}: expected a mapping of NAME: value")
    return loaded


def parse(extra: list[str]) -> tuple[dict, list[tuple[str, str, str]], list[str]]:
    """(the values of the ``-b``, ``-f`` and ``-y`` sources of ``extra``, merged in papermill's order; the
    ``(flag, NAME, VALUE)`` pairs of ``-p`` / ``-r``, flag normalised; every other argument, in order)."""
    sources: dict[str, list[dict]] = {"b64": [], "file": [], "yaml": []}
    pairs, rest, i = [], [], 0
    while i < len(extra):
        arg = extra[i]
        if arg in PAIR_FLAGS:
            if i + 2 >= len(extra):
                raise ValueError(f"{arg} needs NAME and VALUE")
            pairs.append((PAIR_FLAGS[arg], extra[i + 1], extra[i + 2]))
            i += 3
        elif arg in SOURCE_FLAGS:
            if i + 1 >= len(extra):
                raise ValueError(f"{arg} needs a value")
            sources[SOURCE_FLAGS[arg]].append(_source(SOURCE_FLAGS[arg], extra[i + 1]))
            i += 2
        else:
            rest.append(arg)
            i += 1
    merged = {k: v for kind in ("b64", "file", "yaml") for d in sources[kind] for k, v in d.items()}
    return merged, pairs, rest


def unknown_parameters(extra: list[str]) -> list[str]:
    """Names in ``extra`` (``-p`` / ``-r`` pairs, ``-f`` / ``-y`` / ``-b`` sources) that no notebook declares."""
    values, pairs, _ = parse(extra)
    names = [*values, *(name for _, name, _ in pairs)]
    return sorted(set(names) - all_parameters())


def notebook_arguments(notebook: str, profile: dict, run: list[tuple[str, str, str]], extra: list[str]) -> list[str]:
    """The parameter arguments of ``notebook``'s papermill call: ``-y`` with the profile's values overridden by
    the sources in ``extra``, then ``run``'s pairs (this run's folders and switches), then ``extra``'s ``-p`` /
    ``-r`` pairs, then ``extra``'s other arguments, each pair only when ``notebook`` declares its name."""
    values, pairs, rest = parse(extra)
    chosen = declared(notebook, {**profile, **values})
    names = set(NOTEBOOKS[notebook].params)
    args = ["-y", yaml.safe_dump(chosen, default_flow_style=False, sort_keys=False)] if chosen else []
    for flag, name, value in [*run, *pairs]:
        if name in names:
            args += [flag, name, value]
    return args + rest
