"""Fixed costs the notebooks pay once, measured on the present machine (part of the planner's calibration).

* ``papermill_overhead``: ``python -m papermill`` executing a generated notebook (the kernel the run uses, an
  import cell like the notebooks', then empty cells) twice, with 1 and with 21 empty cells: start-up
  (process, kernel, imports) and the cost per cell (papermill saves the notebook after every cell);
* ``training_costs``: the product's own ``engine.fit`` for two epochs on a few in-memory slices (the second
  epoch's images per second for training and validation, and per epoch what is not per image: the loader,
  the checkpoint writes, the history);
* ``gradio_build``: importing Gradio and building a small Blocks app in a fresh interpreter.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

IMPORTS = (
    "import torch, pandas, matplotlib.pyplot\n"
    "import brainseg_utils.evaluation.evaluate, brainseg_utils.training.engine, brainseg_utils.parameters"
)


def _notebook(cells: int) -> dict:
    code = [IMPORTS] + ["x = 1"] * cells
    return {
        "cells": [
            {"cell_type": "code", "metadata": {}, "source": src, "outputs": [], "execution_count": None} for src in code
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def _papermill_seconds(cells: int, kernel: str, tmp: Path) -> float:
    src, out = tmp / f"n{cells}.ipynb", tmp / f"n{cells}-out.ipynb"
    src.write_text(json.dumps(_notebook(cells)))
    cmd = [sys.executable, "-m", "papermill", str(src), str(out), "-k", kernel, "--no-progress-bar"]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t


def papermill_overhead(kernel: str) -> dict:
    """``{"notebook_start": s, "notebook_cell": s}``; a fresh interpreter's imports when papermill or the kernel
    is missing (cells then cost nothing extra)."""
    try:
        with tempfile.TemporaryDirectory(prefix="plan-nb-") as tmp:
            short = _papermill_seconds(1, kernel, Path(tmp))
            long = _papermill_seconds(21, kernel, Path(tmp))
    except (subprocess.CalledProcessError, FileNotFoundError):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", IMPORTS], check=True, capture_output=True)
        return {"notebook_start": time.perf_counter() - t, "notebook_cell": 0.0}
    cell = max(0.0, (long - short) / 20)
    return {"notebook_start": max(0.0, short - cell), "notebook_cell": cell}


class _Slices(Dataset):
    """Random slices shaped as the slice cache's (an ``images`` / ``masks`` pair ``SliceDataset`` reads)."""

    def __init__(self, n: int, channels: int, size: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.images = rng.random((n, channels, size, size), dtype=np.float32)
        self.masks = np.zeros((n, size, size), np.uint8)
        self.masks[:, size // 3 : size // 2, size // 3 : size // 2] = 1

    def __len__(self) -> int:
        return len(self.images)


class _Embeddings(Dataset):
    """Items as ``EmbeddingDataset`` yields them: ``({"embeddings", "boxes"}, mask)``."""

    def __init__(self, embeddings: torch.Tensor, size: int):
        self.emb, self.size = embeddings, size

    def __len__(self) -> int:
        return len(self.emb)

    def __getitem__(self, i: int):
        s = self.size
        mask = torch.zeros(1, s, s)
        mask[:, s // 3 : s // 2, s // 3 : s // 2] = 1
        return {"embeddings": self.emb[i], "boxes": torch.tensor([s * 0.3, s * 0.3, s * 0.6, s * 0.6])}, mask


def training_costs(model, train_ds, val_ds, cfg, params=None) -> dict:
    """Two epochs of ``engine.fit`` into a temporary folder: ``{"train": s per image, "val": s per image,
    "epoch": s per epoch besides the images}`` from the second epoch (the first pays one-time set-up)."""
    from brainseg_utils.training.engine import fit

    cfg = replace(cfg, epochs=2, resume="never", progress=False, num_gpus=1, stop_after_epoch=None)
    with tempfile.TemporaryDirectory(prefix="plan-fit-") as tmp, contextlib.redirect_stdout(io.StringIO()):
        t = time.perf_counter()
        history = fit(model, train_ds, val_ds, tmp, cfg, params=params)
        wall = time.perf_counter() - t
    last = history[-1]
    train, val = 1.0 / last["train_images_per_s"], 1.0 / last["val_images_per_s"]
    loop = len(train_ds) * train + len(val_ds) * val
    outside = (wall - sum(h["epoch_seconds"] for h in history)) / len(history)  # checkpoints, history
    return {"train": train, "val": val, "epoch": max(0.0, last["epoch_seconds"] - loop) + max(0.0, outside)}


def unet_training(configs, channels: int, device: torch.device) -> dict:
    from brainseg_utils.data.dataset import SliceDataset

    size, batch = configs.data.img_size, configs.unet_train.batch_size
    data = _Slices(3 * batch + 1, channels, size)
    train = SliceDataset(data, np.arange(3 * batch), configs.unet.augmentation(), seed=0)
    val = SliceDataset(data, np.arange(batch), None)
    cfg = replace(configs.unet_train, device=str(device))
    out = training_costs(configs.unet.build(channels), train, val, cfg)
    return {"unet_epoch_train": out["train"], "unet_epoch_val": out["val"], "unet_epoch_fixed": out["epoch"]}


def decoder_training(configs, backend, embeddings: torch.Tensor, device: torch.device) -> dict:
    from brainseg_utils.models.sam.decoder import SamDecoderModel

    size, batch = configs.data.img_size, configs.sam_train.batch_size
    model = SamDecoderModel(backend, "box", size)
    cfg = replace(configs.sam_train, device=str(device))
    copies = embeddings.repeat(4 * batch // len(embeddings) + 1, 1, 1, 1)  # 4 steps: a decoder step is short
    train, val = _Embeddings(copies[: 4 * batch], size), _Embeddings(copies[: 2 * batch], size)
    out = training_costs(model, train, val, cfg, params=model.trainable_parameters())
    return {"sam_epoch_train": out["train"], "sam_epoch_val": out["val"], "sam_epoch_fixed": out["epoch"]}


def gradio_build() -> float:
    """Importing Gradio and building a Blocks app with a few components, in a fresh interpreter, beyond the
    interpreter's own start (0 when Gradio is not installed)."""
    code = (
        "import gradio as gr\n"
        "with gr.Blocks() as demo:\n"
        "    [gr.Image() for _ in range(3)]; gr.Slider(); gr.Radio(['a', 'b']); gr.Button(); gr.File()\n"
    )
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True)
    built = time.perf_counter() - t
    if done.returncode:
        return 0.0
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return max(0.0, built - (time.perf_counter() - t))
