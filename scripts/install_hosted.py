#!/usr/bin/env python3
"""Install what a Colab / Kaggle kernel lacks, never replacing its torch or Jupyter stack.

    python scripts/install_hosted.py [--dry-run]

* Reads requirements.txt. A requirement whose distribution is installed and satisfies the range is skipped;
  torch, torchvision and the kernel stack (ipykernel, jupyter-client, tornado, pyzmq, ipywidgets, ...) are
  never installed or upgraded, whatever version the platform has (they are also pinned with a pip constraints
  file to their installed versions, so no dependency can drag them along).
* Then installs this checkout editable without dependencies (``pip install --no-deps -e .``), so the package
  is imported from the clone and a kernel restart still finds the project root.
* ``BRAINSEG_WHEELS=/kaggle/input/<wheelhouse>``: install offline from that folder of wheels (Kaggle with
  Internet off: attach a dataset built with ``pip download -d wheels -r requirements.txt``).
* ``BRAINSEG_PIP`` replaces the pip command (tests use a fake one; default ``<python> -m pip``).

Standard library only: it runs before the package is installed. Every pip command is printed with its
output; a failure exits non-zero with pip's stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shlex
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAMP = ".brainseg-installed"  # in the checkout (git-ignored): requirements + interpreter installed into
# The platform's own stack: never installed, upgraded or downgraded here.
PROTECTED = (
    "torch",
    "torchvision",
    "torchaudio",
    "numpy",
    "ipykernel",
    "ipython",
    "ipywidgets",
    "widgetsnbextension",
    "jupyterlab-widgets",
    "jupyter-client",
    "jupyter-core",
    "jupyter-server",
    "notebook",
    "tornado",
    "pyzmq",
    "traitlets",
)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(path: Path) -> list[tuple[str, str]]:
    """[(canonical name, requirement line)] of a requirements file (comments and options dropped)."""
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line or line.startswith("-"):
            continue
        name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line).group(0)
        out.append((canonical(name), line))
    return out


def installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def satisfied(line: str, version: str) -> bool:
    """Does ``version`` meet ``line``'s range? (True when ``packaging`` is unavailable: installed is enough.)"""
    try:
        from packaging.requirements import Requirement
    except ImportError:
        return True
    return Requirement(line).specifier.contains(version, prereleases=True)


def plan(reqs: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """(requirement lines to install, one line per requirement left alone and why)."""
    todo, kept = [], []
    for name, line in reqs:
        have = installed(name)
        if name in PROTECTED:
            kept.append(f"{name}: the platform's {have or '(not installed)'} (never touched)")
        elif have is not None and satisfied(line, have):
            kept.append(f"{name}: {have} already installed")
        else:
            todo.append(line)
    return todo, kept


def run(cmd: list[str]) -> None:
    print("$", " ".join(shlex.quote(c) for c in cmd), flush=True)
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.stdout.strip():
        print(res.stdout.rstrip())
    if res.returncode != 0:
        print(res.stderr.rstrip(), file=sys.stderr)
        raise SystemExit(f"install_hosted: pip failed (exit {res.returncode}); its error output is above")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requirements", action="append", help="requirements file(s); default requirements.txt")
    ap.add_argument("--dry-run", action="store_true", help="print the plan, install nothing")
    ap.add_argument("--once", action="store_true", help="skip when this checkout was installed into this Python")
    args = ap.parse_args(argv)
    files = [Path(f) for f in args.requirements or [ROOT / "requirements.txt"]]
    stamp_file = ROOT / STAMP
    where = f"{sys.prefix}|{sys.version}|{os.environ.get('BRAINSEG_WHEELS')}"
    stamp = hashlib.sha256(b"".join(f.read_bytes() for f in files) + where.encode()).hexdigest()
    if args.once and stamp_file.is_file() and stamp_file.read_text().strip() == stamp:
        print(f"install_hosted: already installed into {sys.prefix} (delete {stamp_file} to redo)")
        return 0
    pip = shlex.split(os.environ.get("BRAINSEG_PIP", "")) or [sys.executable, "-m", "pip"]
    todo, kept = plan([r for f in files for r in requirements(f)])
    for line in kept:
        print("keep", line)
    source = []
    wheels = os.environ.get("BRAINSEG_WHEELS")
    if wheels:
        if not Path(wheels).is_dir():
            raise SystemExit(f"install_hosted: BRAINSEG_WHEELS={wheels} is not a folder (attach the wheelhouse)")
        source = ["--no-index", "--find-links", wheels]
    pins = [f"{name}=={installed(name)}" for name in PROTECTED if installed(name)]
    if args.dry_run:
        print("would install:", *todo or ["(nothing)"], "and this checkout (editable, --no-deps)")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "platform-constraints.txt"
        constraints.write_text("\n".join(pins) + "\n")
        if todo:
            run([*pip, "install", "-q", *source, "-c", str(constraints), *todo])
        run([*pip, "install", "-q", *source, "--no-deps", "--no-build-isolation", "-e", str(ROOT)])
    stamp_file.write_text(stamp + "\n")
    print(f"install_hosted: installed {len(todo)} requirement(s) and brainseg (editable) from {ROOT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
