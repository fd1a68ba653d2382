"""The notebooks' bootstrap cell: its one source (every notebook's second cell must equal ``CELL``, collapsed:
``TITLE`` for Colab, ``HIDDEN`` metadata for Jupyter).

On Colab / Kaggle the cell offers the Drive mount (Colab), clones the project (``REPO_URL``, or
``$BRAINSEG_REPO``), enters the clone and runs ``scripts/install_hosted.py``; locally it is a no-op. Every
folder it uses can be moved by an environment variable (``env.py``), so tests run it in a temporary tree.
The cell cannot import this module (the package is not installed yet when it runs), so the text lives
here as a constant: ``python -m brainseg_utils.workflow.generate`` writes it into every notebook, and a test
fails when a notebook's copy is stale.
"""

from __future__ import annotations

# The repository the bootstrap cell clones: the ONE place that names it. A fork changes this line and runs
# `python -m brainseg_utils.workflow.generate`, which rewrites the bootstrap cell of every notebook and the
# README's Colab/Kaggle badges from it (tests/test_hosted_install.py checks there is no other copy).
# PLACEHOLDER: the project has no public remote yet. Users of a fork or a mirror can also override it without
# editing anything: `%env BRAINSEG_REPO=https://github.com/<you>/brainseg.git` before the bootstrap cell.
REPO_URL = "https://github.com/brainseg-project/brainseg.git"
BADGE_BRANCH = "main"  # the branch the README's "Open in Colab / Kaggle" badges open


def repo_slug(url: str = REPO_URL) -> str:
    """ "owner/name" of a GitHub URL (https or git@, with or without .git)."""
    tail = url.rstrip("/").removesuffix(".git").replace("git@github.com:", "https://github.com/")
    parts = tail.split("/")
    if len(parts) < 2 or "github.com" not in tail:
        raise ValueError(f"REPO_URL {url!r} is not a GitHub repository URL (https://github.com/<owner>/<name>.git)")
    return "/".join(parts[-2:])


def badges(notebook: str, url: str = REPO_URL, branch: str = BADGE_BRANCH) -> str:
    """The README's "Open in Colab" and "Open in Kaggle" badges of ``notebooks/<notebook>.ipynb``."""
    path = f"{repo_slug(url)}/blob/{branch}/notebooks/{notebook}.ipynb"
    colab = f"https://colab.research.google.com/github/{path}"
    kaggle = f"https://kaggle.com/kernels/welcome?src=https://github.com/{path}"
    return (
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab}) "
        f"[![Open In Kaggle](https://kaggle.com/static/images/open-in-kaggle.svg)]({kaggle})"
    )


# The bootstrap cell's first line: Colab shows the cell as a collapsed form with this title (its code hidden);
# Jupyter hides the source through the cell's metadata (HIDDEN). Either way a notebook opens on its content.
TITLE = '#@title Set-up (Colab / Kaggle: clone and install; locally nothing) { display-mode: "form" }'
HIDDEN = {"jupyter": {"source_hidden": True}}  # cell metadata: JupyterLab / Notebook 7 collapse the source

CELL = f"""\
{TITLE}
# Bootstrap: on Colab / Kaggle, clone the project and install only what the platform lacks (never its
# torch or Jupyter stack; scripts/install_hosted.py). Locally this cell does nothing: run `bash run_all.sh`
# once, or `pip install -e .` in your environment. Another repository (a fork, a mirror): run
# `%env BRAINSEG_REPO=<git URL>` before this cell. Offline Kaggle: `%env BRAINSEG_WHEELS=/kaggle/input/<wheels>`.
import os
import subprocess
import sys
from pathlib import Path

REPO = os.environ.get("BRAINSEG_REPO") or "{REPO_URL}"  # placeholder: README
# Kaggle first: its image is built from Colab's, so COLAB_RELEASE_TAG is set on Kaggle too
kaggle_root = Path(os.environ.get("BRAINSEG_KAGGLE_ROOT") or "/kaggle")
kaggle_vars = ("KAGGLE_KERNEL_RUN_TYPE", "KAGGLE_URL_BASE")
kaggle = any(os.environ.get(v) for v in kaggle_vars) or (kaggle_root / "input").is_dir()
colab = not kaggle and ("google.colab" in sys.modules or bool(os.environ.get("COLAB_RELEASE_TAG")))
if colab or kaggle:
    top = Path(os.environ.get("BRAINSEG_COLAB_ROOT") or "/content") if colab else None
    home = top / "brainseg" if colab else kaggle_root / "working" / "brainseg"
    home = Path(os.environ.get("BRAINSEG_HOME") or home)
    drive = Path(os.environ.get("BRAINSEG_DRIVE") or (top / "drive" / "MyDrive" if colab else "."))
    if colab and not drive.is_dir() and os.environ.get("BRAINSEG_MOUNT_DRIVE", "1") == "1":
        try:  # outputs persist on Drive (MyDrive/brainseg/outputs); %env BRAINSEG_MOUNT_DRIVE=0 skips this
            from google.colab import drive as gdrive
            gdrive.mount(str(drive.parent))
        except Exception as exc:
            print(f"Drive not mounted ({{exc}}): outputs stay on this VM and are lost when it goes")
    if not (home / "pyproject.toml").is_file():
        r = subprocess.run(["git", "clone", "--depth", "1", REPO, str(home)], capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(
                f"git clone {{REPO}} failed:\\n{{r.stderr}}\\n"
                + ("Kaggle: switch Internet on (Settings), or " if kaggle else "")
                + "set the repository in a cell above this one, then re-run this cell:\\n%env BRAINSEG_REPO=https://github.com/<owner>/brainseg.git")
    os.chdir(home)  # every time: after a kernel restart too, outputs go under the clone (or Drive)
    r = subprocess.run([sys.executable, "scripts/install_hosted.py", "--once"], capture_output=True, text=True)
    print(r.stdout, r.stderr, sep="")
    if r.returncode:
        raise RuntimeError(f"installing the requirements failed (exit {{r.returncode}}); pip's output is above")
    if str(home) not in sys.path:  # this kernel; pip's editable install serves the next kernel start
        sys.path.insert(0, str(home))"""
