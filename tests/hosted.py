"""Helpers shared by the hosted-platform tests (imported as ``hosted``: pytest puts tests/ on the path)."""

from __future__ import annotations

import shutil
import stat
import sys
from pathlib import Path

TRAINING = "BraTS2020_TrainingData/MICCAI_BraTS2020_TrainingData"  # inside the Kaggle dataset
KAGGLE_ONLY = ("KAGGLE_KERNEL_RUN_TYPE", "KAGGLE_URL_BASE", "KAGGLE_DATA_PROXY_URL", "BRAINSEG_KAGGLE_ROOT")


def on_colab(mp) -> None:
    """Turn a test that has both the ``colab`` and ``kaggle`` fixtures into Colab (no Kaggle variable, no
    /kaggle tree; Colab's own COLAB_RELEASE_TAG stays)."""
    for var in KAGGLE_ONLY:
        mp.delenv(var, raising=False)
    mp.setenv("COLAB_RELEASE_TAG", "release-colab_20261101-060000_RC00")


def on_kaggle(mp, kaggle_root: Path) -> None:
    """Back to the simulated Kaggle (conftest.KAGGLE_ENV: COLAB_RELEASE_TAG is set there too)."""
    from conftest import KAGGLE_ENV

    for var, value in KAGGLE_ENV.items():
        mp.setenv(var, value)
    mp.setenv("BRAINSEG_KAGGLE_ROOT", str(kaggle_root))


def real_layout(synth: Path, dst: Path) -> Path:
    """Copy of a synthetic dataset without our generator's marker: to the code it is BraTS."""
    shutil.copytree(synth, dst, ignore=shutil.ignore_patterns("SYNTHETIC.json"))
    return dst


def snapshot(tree: Path) -> dict:
    """path -> (size, mtime_ns, mode) of everything under ``tree`` (to prove nothing was written there)."""
    out = {}
    for p in tree.rglob("*"):
        st = p.stat()
        out[str(p.relative_to(tree))] = (st.st_size, st.st_mtime_ns, st.st_mode)
    return out


def read_only(tree: Path) -> None:
    for p in [tree, *tree.rglob("*")]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


FAKE_PIP = """\
#!{python}
import json, os, sys
args = sys.argv[1:]
cons = args[args.index("-c") + 1] if "-c" in args else None
with open(os.environ["FAKE_PIP_LOG"], "a") as f:
    f.write(json.dumps({{"args": args, "constraints": open(cons).read() if cons else None}}) + "\\n")
"""


def fake_pip(tmp_path: Path) -> tuple[Path, Path]:
    pip, log = tmp_path / "fakepip", tmp_path / "pip.log"
    pip.write_text(FAKE_PIP.format(python=sys.executable))
    pip.chmod(0o755)
    log.write_text("")
    return pip, log


def full_unet_checkpoint(path: Path) -> dict:
    """What train.fit writes for a tiny U-Net: model, optimizer (after a step: Adam moments), config, meta."""
    import torch

    from brainseg_utils.models.unet import UNet
    from brainseg_utils.runtime.checkpoints import save_checkpoint

    torch.manual_seed(0)
    model = UNet(1, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.rand(2, 1, 32, 32)).mean().backward()
    opt.step()
    payload = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "epoch": 1,
        "config": {"model": model.config},
        "meta": {"img_size": 32, "dataset": "synthetic", "split_sha256": "ab" * 32},
    }
    save_checkpoint(path, payload)
    return payload
