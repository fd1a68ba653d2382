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

KEPT = ("format", "config", "meta", "epoch", "best_metric", "best_epoch", "device", "amp_dtype")
SUFFIX = ".safetensors"


def export_slim(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Write ``src``'s model state (a full checkpoint, loaded with ``weights_only=True``) to ``dst`` as
    safetensors with the config as metadata, atomically. Returns ``dst``."""
    from safetensors.torch import save_file

    from .checkpoints import load_checkpoint
    from .io import atomic_write

    ckpt = load_checkpoint(src)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"{src} is not a training checkpoint (no 'model' state); expected what train.fit writes")
    state = {k: v.detach().contiguous().clone() for k, v in ckpt["model"].items()}  # no shared storage
    extra = json.dumps({k: ckpt[k] for k in KEPT if k in ckpt})
    return atomic_write(dst, lambda tmp: save_file(state, tmp, metadata={"brainseg": extra}), suffix=SUFFIX)


def load_slim(path: str | os.PathLike, map_location="cpu") -> dict:
    """``{"model": state dict, **config/meta}`` from a ``export_slim`` file."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device=str(map_location)) as f:
            extra = json.loads((f.metadata() or {}).get("brainseg", "{}"))
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"{path} is not a readable safetensors file: {exc}") from exc
    return {"model": state, **extra}
