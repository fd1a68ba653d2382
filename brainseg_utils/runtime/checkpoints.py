"""Checkpoint files and the device policy: everything that loads a trained model needs this, not the engine.

Owns:
  * ``save_checkpoint`` / ``load_checkpoint``: atomic ``torch.save`` and ``torch.load(weights_only=True)``
    onto the CPU by default, with clear errors for missing, truncated, unsafe and wrong-kind files.
    ``expect_arch`` checks the architecture a checkpoint records (``config.model.arch``: ``"unet"``,
    ``"sam_decoder"``) before any model is built from it;
  * ``load_model_state``: ``load_state_dict`` that lists every missing, unexpected and mis-shaped key
    (after dropping DDP's ``module.`` / torch.compile's ``_orig_mod.`` prefixes on either side);
  * ``resolve_device``, ``amp_dtype`` and ``train_amp_dtype``: which device, and which autocast dtype on it
    (``train_amp_dtype`` adds bf16 SAM-decoder training on CPUs with native bf16).

A checkpoint is a plain dict of tensors / numbers / strings / lists (``CHECKPOINT_FORMAT`` 1): model
state, optimizer, scheduler, scaler, epoch, best metric, history, RNG states, ``config`` (``train`` and
``model``), ``meta`` (split hash, dataset, ...).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
import torch.nn as nn

from brainseg_utils.runtime import env
from brainseg_utils.runtime.io import atomic_write
from brainseg_utils.runtime.slim import load_slim, save_slim

CHECKPOINT_FORMAT = 1


# ----------------------------------------------------------------------------- devices and AMP
def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> cuda if available else cpu; an explicit cuda device without CUDA is an error, and so is
    a GPU this torch build has no kernels for (``env.check_gpu_supported``: e.g. a P100 with CUDA 12.8 wheels)."""
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available; use device='cpu' or 'auto'")
    if dev.type == "cuda":
        env.check_gpu_supported()
    return dev


def amp_dtype(device: torch.device, enabled: bool = True) -> torch.dtype | None:
    """Autocast dtype for ``device``: bf16 on native-bf16 GPUs (compute capability >= 8), fp16 on older
    ones, None on CPU. A bare ``torch.cuda.is_bf16_supported()`` answers True on a T4 through emulation,
    so the decision uses the real capability."""
    if not enabled or device.type != "cuda":
        return None
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX-512 BF16 or AMX tiles, e.g. Zen 4, Sapphire Rapids).
    Elsewhere oneDNN emulates bf16, which is slower than fp32."""
    cpu = torch.cpu
    return bool(
        getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
        or getattr(cpu, "_is_amx_tile_supported", lambda: False)()
    )


# Architectures (``config["arch"]``) that train in bf16 on a CPU with native bf16. Measured on a 2-core Zen 4
# (docs/benchmarks.md, bf16 training on a CPU), same seed and data, fp32 vs bf16: the SAM decoder (box prompts)
# used 1.5x less CPU time with validation Dice 0.811 vs 0.807 (fp32); the U-Net used 1.55x less but reached
# Dice 0.52 vs 0.76 after 4 epochs, so it stays fp32 until a longer comparison clears it.
CPU_BF16_ARCHS = ("sam_decoder",)


def train_amp_dtype(device: torch.device, enabled: bool = True, arch: str | None = None) -> torch.dtype | None:
    """Autocast dtype for *training* ``arch`` on ``device``: ``amp_dtype`` on CUDA; on a CPU, bf16 when the
    architecture is in ``CPU_BF16_ARCHS`` and the CPU has native bf16 (``cpu_has_native_bf16``), else None
    (fp32). Weights, optimizer state and the loss stay float32; inference (evaluation, the demo) stays fp32."""
    if not enabled:
        return None
    if device.type == "cpu":
        return torch.bfloat16 if arch in CPU_BF16_ARCHS and cpu_has_native_bf16() else None
    return amp_dtype(device, enabled)


# ----------------------------------------------------------------------------- files
def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """``torch.save`` to a temporary file, fsync, then rename: a crash never leaves half a checkpoint."""
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _size_str(path: Path) -> str:
    return f"{path.stat().st_size:,} bytes"


def checkpoint_arch(ckpt: dict) -> str | None:
    """The architecture a checkpoint records (``config.model.arch``), or None when it records none."""
    cfg = ckpt.get("config") if isinstance(ckpt, dict) else None
    model = cfg.get("model") if isinstance(cfg, dict) else None
    arch = model.get("arch") if isinstance(model, dict) else None
    return str(arch) if arch is not None else None


def check_arch(ckpt: dict, path: str | os.PathLike, expect_arch: str) -> None:
    """Raise ``ValueError`` naming the file, what it holds and what was expected when the recorded
    architecture is not ``expect_arch``."""
    have = checkpoint_arch(ckpt)
    if have == expect_arch:
        return
    if have is None:
        holds = "no recorded architecture (no config.model.arch; not a checkpoint written by train.fit)"
    else:
        model = ckpt["config"]["model"]
        extra = ", ".join(f"{k}={model[k]!r}" for k in ("backend", "prompt") if k in model)
        holds = f"a {have!r} checkpoint" + (f" ({extra})" if extra else "")
    raise ValueError(
        f"{path} holds {holds}; expected a {expect_arch!r} checkpoint. "
        "Check which file was put at this path (e.g. a SAM decoder copied to unet/best.pt)."
    )


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", expect_arch: str | None = None
) -> dict:
    """``torch.load(weights_only=True)`` onto ``map_location`` (CPU by default: a checkpoint saved on
    CUDA loads on a CPU-only machine) with clear errors for missing, truncated or unsafe files.

    ``expect_arch`` (e.g. ``"unet"``, ``"sam_decoder"``): refuse a checkpoint whose recorded
    ``config.model.arch`` differs, naming the file, what it holds and what was expected.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":  # slim inference weights (slim.py; a Hugging Face Space)
        ckpt = load_slim(path, map_location)
        if expect_arch is not None:
            check_arch(ckpt, path, expect_arch)
        return ckpt
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"{path} holds objects other than tensors and plain data; refused to load it "
            f"(weights_only=True): {str(exc).splitlines()[0]}"
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f"{path} is truncated or not a torch checkpoint ({_size_str(path)}): {exc}") from exc
    if expect_arch is not None:
        if not isinstance(ckpt, dict):
            raise ValueError(
                f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict; expected a {expect_arch!r} checkpoint"
            )
        check_arch(ckpt, path, expect_arch)
    return ckpt


WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel / DataParallel, torch.compile


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model inside DDP / DataParallel (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif type(model).__name__ == "OptimizedModule" and isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def unwrap_state_dict(state: dict) -> dict:
    """State keys as the bare model names them: a ``module.`` (DDP) or ``_orig_mod.`` (torch.compile)
    prefix carried by EVERY key is dropped, repeatedly (``module._orig_mod.x`` -> ``x``); other keys
    are left alone, so a model with a submodule really called ``module`` is not touched."""
    while state:
        prefix = next((p for p in WRAPPER_PREFIXES if all(str(k).startswith(p) for k in state)), None)
        if prefix is None:
            break
        state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def load_model_state(model: nn.Module, state: dict, source: str = "checkpoint") -> None:
    """``load_state_dict`` that first lists every missing, unexpected and wrongly shaped key.

    Wrapper prefixes are reconciled first: a state saved from a DDP-wrapped or compiled model loads
    into the bare model and vice versa (``unwrap_model`` / ``unwrap_state_dict``)."""
    model, state = unwrap_model(model), unwrap_state_dict(state)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shapes:

        def _list(keys):
            return ", ".join(keys[:8]) + (f" … (+{len(keys) - 8})" if len(keys) > 8 else "")

        parts = [
            f"{n} {label}: {_list(k)}"
            for n, label, k in (
                (len(missing), "missing keys", missing),
                (len(unexpected), "unexpected keys", unexpected),
                (len(shapes), "shape mismatches", shapes),
            )
            if k
        ]
        raise ValueError(f"{source} does not match this model architecture; " + "; ".join(parts))
    model.load_state_dict(state)


def export_slim(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Write ``src``'s model state (a full checkpoint, loaded with ``weights_only=True``) to ``dst`` as
    safetensors with the config as metadata, atomically (``slim.save_slim``). Returns ``dst``."""
    ckpt = load_checkpoint(src)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"{src} is not a training checkpoint (no 'model' state); expected what train.fit writes")
    return save_slim(ckpt, dst)
