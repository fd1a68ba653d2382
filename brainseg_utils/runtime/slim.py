"""Slim inference weights: a checkpoint's model state as safetensors, without optimizer, scheduler, scaler,
RNG or history (what a Hugging Face Space needs; ``best.pt`` is ~3x larger).

``best.safetensors`` holds the model's tensors; its safetensors metadata entry ``"brainseg"`` holds the JSON of
``config``, ``meta`` and the training summary, so ``checkpoints.load_checkpoint`` returns the same dict keys the
loaders read from a full checkpoint (``model``, ``config``, ``meta``). Nothing is unpickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from brainseg_utils.runtime.io import atomic_write

KEPT = ("format", "config", "meta", "epoch", "best_metric", "best_epoch", "device", "amp_dtype")
SUFFIX = ".safetensors"


def save_slim(ckpt: dict, dst: str | os.PathLike) -> Path:
    """Write a loaded training checkpoint's model state to ``dst`` as safetensors with the config as metadata,
    atomically. Returns ``dst``. (``checkpoints.export_slim`` loads the checkpoint file first.)"""
    from safetensors.torch import save_file

    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"not a training checkpoint (no 'model' state): cannot write {dst}")
    state = {k: v.detach().contiguous().clone() for k, v in ckpt["model"].items()}  # no shared storage
    extra = json.dumps({k: ckpt[k] for k in KEPT if k in ckpt})
    return atomic_write(dst, lambda tmp: save_file(state, tmp, metadata={"brainseg": extra}), suffix=SUFFIX)


def load_slim(path: str | os.PathLike, map_location="cpu") -> dict:
    """``{"model": state dict, **config/meta}`` from a ``save_slim`` file."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device=str(map_location)) as f:
            extra = json.loads((f.metadata() or {}).get("brainseg", "{}"))
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"{path} is not a readable safetensors file: {exc}") from exc
    return {"model": state, **extra}
