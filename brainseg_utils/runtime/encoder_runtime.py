"""Inference runtimes for frozen networks (SAM image encoders; usable for any frozen image model).

This module owns three decisions and nothing else:

  * **which runtime** runs a frozen network: ``"openvino"`` (fp32) on a CPU when the ``openvino``
    package imports, ``"pytorch"`` otherwise and always on CUDA (``resolve_runtime``). OpenVINO is
    ~4x faster than eager PyTorch fp32 for LiteMedSAM's encoder on a 2-core CPU with the same
    embeddings (max abs difference ~5e-6); see ``benchmarks/bench_encoder.py``.
  * **precision**: fp32, explicitly. OpenVINO picks bf16 by default on CPUs with AVX-512 bf16 /
    AMX, which moves LiteMedSAM embeddings by ~0.1 and drops box-prompt Dice to 0.7-0.9, so
    ``INFERENCE_PRECISION_HINT`` is always set to ``"f32"``; the saved IR keeps fp32 weights
    (``ov.save_model`` would compress them to fp16 by default).
  * **the converted-model cache**: ``ov.convert_model(module, example_input=...)`` costs ~15 s for
    LiteMedSAM, so the IR is written once to ``<cache_dir>/openvino/<name>-<key16>/`` (``model.xml``,
    ``model.bin``, ``meta.json``), keyed by the checkpoint sha256, the input shape, the
    preprocessing and the OpenVINO version, and published atomically (a temporary folder renamed
    into place, so a crash or two processes converting at once never leave half a model).
    ``cache_dir`` defaults to ``$BRAINSEG_CACHE``, else ``$XDG_CACHE_HOME/brainseg``, else
    ``~/.cache/brainseg``: a converted model depends on the weights and the runtime, not on a run,
    so it is shared by every run (and survives ``rm -rf outputs``). Networks without a checkpoint
    hash (random weights, for timing) are converted in memory and never cached.

Runtimes take and return float32 torch tensors: ``(B, C, H, W) -> (B, ...)``. The OpenVINO runtime
runs batch 1 on CPU (one request per image; batch 4 is slower per image on CPU), with a static
input shape ``(1, C, H, W)``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from brainseg_utils.runtime.io import atomic_write_json, canonical_sha256
from brainseg_utils.runtime.openvino_core import shared_core

RUNTIMES = ("auto", "pytorch", "openvino")
IR_FORMAT = 1  # bump when what is stored next to the IR changes
_warned_missing = False


def openvino_version() -> str | None:
    """The installed OpenVINO version ("2026.4.1-..."), or None when ``import openvino`` fails."""
    try:
        import openvino as ov
    except ImportError:
        return None
    return ov.get_version()


def default_cache_dir() -> Path:
    """``$BRAINSEG_CACHE``, else ``$XDG_CACHE_HOME/brainseg``, else ``~/.cache/brainseg``."""
    if os.environ.get("BRAINSEG_CACHE"):
        return Path(os.environ["BRAINSEG_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "brainseg"


def resolve_runtime(requested: str, device: str | torch.device) -> str:
    """``"auto"``/``"pytorch"``/``"openvino"`` on ``device`` -> the runtime used: "pytorch" or "openvino".

    ``auto`` picks OpenVINO on CPU when it imports, PyTorch otherwise (one printed line says why when
    OpenVINO is missing). ``openvino`` on a CUDA device or without the package raises.
    """
    if requested not in RUNTIMES:
        raise KeyError(f"unknown encoder runtime {requested!r}; options: {list(RUNTIMES)}")
    dev = torch.device(device)
    if requested == "pytorch":
        return "pytorch"
    if dev.type != "cpu":
        if requested == "openvino":
            raise ValueError(f"runtime 'openvino' runs on CPU only, the model is on {dev}; use 'auto' or 'pytorch'")
        return "pytorch"
    if openvino_version() is None:
        if requested == "openvino":
            raise ImportError(
                "runtime 'openvino' requested but the openvino package is not installed "
                "(pip install -r requirements-cpu.txt)"
            )
        global _warned_missing
        if not _warned_missing:
            print(
                "encoder runtime: openvino not installed, using PyTorch on CPU (~4x slower; "
                "pip install -r requirements-cpu.txt)"
            )
            _warned_missing = True
        return "pytorch"
    return "openvino"


CUDA_ENCODER_PRECISION = "fp16"  # autocast dtype for frozen encoders on CUDA (see TorchRuntime)
PRECISIONS = ("fp32", "fp16", "bf16")


def _sdpa_attention_forward(self, x: torch.Tensor) -> torch.Tensor:
    """segment-anything's ``image_encoder.Attention.forward`` through ``F.scaled_dot_product_attention``.

    SAM adds decomposed relative positions to the logits: ``q.k * scale + rel_h[q, row(k)] + rel_w[q, col(k)]``,
    where ``rel_h = q . Rh`` and ``rel_w = q . Rw``. The same logits are the dot product of augmented vectors
    ``[q * scale, rel_h, rel_w] . [k, onehot(row(k)), onehot(col(k))]``, so one fused attention kernel (flash /
    memory-efficient) computes them without materialising the (H*W)^2 logits, bias and softmax tensors that the
    original writes and re-reads (four full passes per block; 12 x 4096^2 per image in a global block).
    ``v`` is zero-padded to the augmented width (kernels want equal head sizes); padding to a multiple of 8
    adds zero columns to both q and k. Same maths; fp32 agreement with the original ~1e-6 (tests).
    """
    import torch.nn.functional as F
    from segment_anything.modeling.image_encoder import get_rel_pos

    b, h, w, _ = x.shape
    n, heads = h * w, self.num_heads
    q, k, v = self.qkv(x).reshape(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, N, d)
    d = q.shape[-1]
    if not self.use_rel_pos:
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
    else:
        rh = get_rel_pos(h, h, self.rel_pos_h).to(q.dtype)  # (H, H, d)
        rw = get_rel_pos(w, w, self.rel_pos_w).to(q.dtype)  # (W, W, d)
        rq = q.reshape(b, heads, h, w, d)
        rel_h = torch.einsum("bnhwc,hkc->bnhwk", rq, rh).reshape(b, heads, n, h)
        rel_w = torch.einsum("bnhwc,wkc->bnhwk", rq, rw).reshape(b, heads, n, w)
        width = d + h + w
        pad = -width % 8
        eye_h = torch.eye(h, dtype=q.dtype, device=q.device).repeat_interleave(w, dim=0)  # (N, H): row of key
        eye_w = torch.eye(w, dtype=q.dtype, device=q.device).repeat(h, 1)  # (N, W): column of key
        keys_pos = torch.cat([eye_h, eye_w], 1).expand(b, heads, n, h + w)
        qa = F.pad(torch.cat([q * self.scale, rel_h.to(q.dtype), rel_w.to(q.dtype)], -1), (0, pad))
        ka = F.pad(torch.cat([k, keys_pos], -1), (0, pad))
        va = F.pad(v, (0, width + pad - d))
        out = F.scaled_dot_product_attention(qa, ka, va, scale=1.0)[..., :d]
    out = out.reshape(b, heads, h, w, d).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
    return self.proj(out)


def use_fused_attention(module: nn.Module) -> int:
    """Run every segment-anything ViT attention block inside ``module`` through ``_sdpa_attention_forward``
    (instance-level; the weights and state_dict are untouched). Returns how many blocks were switched
    (0 for encoders without them, e.g. LiteMedSAM's TinyViT)."""
    try:
        from segment_anything.modeling.image_encoder import Attention
    except ImportError:
        return 0
    import types

    n = 0
    for m in module.modules():
        if isinstance(m, Attention) and getattr(m, "_brainseg_fused", False) is False:
            m.forward = types.MethodType(_sdpa_attention_forward, m)
            m._brainseg_fused = True
            n += 1
    return n


class TorchRuntime:
    """The module itself under ``torch.no_grad`` (any device, any batch). Not ``inference_mode``:
    its tensors refuse to join autograd later (embeddings encoded on the fly feed decoder training).

    ``precision``: "fp32" (default; the only choice on CPU) or an autocast dtype, "fp16"/"bf16", for CUDA;
    outputs are always float32. ``fused_attention`` switches SAM ViT attention blocks to one fused kernel
    (``use_fused_attention``). On CUDA the SAM backends use fp16 + fused attention: measured on an H200
    (benchmarks/bench_sam_gpu.py), fp16 encodes SAM ViT-B ~2.2x faster than fp32 with relative RMS error 9e-4
    of the embeddings (bf16: 7.6e-3) and LiteMedSAM box masks agreeing with fp32 at Dice 0.998 (bf16: 0.983).
    """

    name = "pytorch"

    def __init__(self, module: nn.Module, precision: str = "fp32", fused_attention: bool = False):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.module = module.eval()
        self.version = torch.__version__
        self.precision = precision
        self.fused_blocks = use_fused_attention(module) if fused_attention else 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
        with torch.no_grad(), torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            return self.module(x).float()

    def describe(self) -> dict:
        return {
            "runtime": self.name,
            "version": self.version,
            "precision": "f32" if self.precision == "fp32" else f"{self.precision}-autocast",
            "fused_attention_blocks": self.fused_blocks,
        }


class OpenVinoRuntime:
    """A frozen module converted to OpenVINO IR (fp32) and compiled for the CPU, run batch 1.

    ``module``: eval-mode network taking float32 (batch, *input_shape); ``key``: what identifies its
    weights and inputs (must hold a ``checkpoint_sha256``; a non-hex value such as "random-init"
    disables the disk cache). ``converted`` tells whether this instance paid the conversion.
    ``batch`` fixes the IR's batch (1 by default: fastest per image on CPU; a static shape, since
    TinyViT's ``len(x)`` is traced as a constant); any input batch is run in chunks of it.
    """

    name = "openvino"

    def __init__(
        self,
        module: nn.Module,
        input_shape: tuple[int, ...],
        key: dict,
        cache_dir=None,
        label: str = "model",
        num_threads: int | None = None,
        batch: int = 1,
    ):
        import openvino as ov

        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.version = ov.get_version()
        self.input_shape = (int(batch), *[int(s) for s in input_shape])
        self.key = {
            **key,
            "input_shape": list(self.input_shape),
            "openvino": self.version,
            "precision": "f32",
            "format": IR_FORMAT,
        }
        sha = str(key.get("checkpoint_sha256", ""))
        cacheable = len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)
        self.path: Path | None = None
        self.converted = False
        self.convert_seconds = 0.0
        core = shared_core()  # never one Core per model: see openvino_core
        if cacheable:
            root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
            self.path = root / "openvino" / f"{label}-{canonical_sha256(self.key)[:16]}"
            if not (self.path / "model.xml").exists():
                self._convert_to_disk(module)
            try:
                model = core.read_model(self.path / "model.xml")
            except RuntimeError as exc:
                raise RuntimeError(
                    f"cached OpenVINO model {self.path} is unreadable ({str(exc).splitlines()[0]}); "
                    "delete that folder to convert again"
                ) from exc
        else:
            model = self._convert(module)
        threads = num_threads or torch.get_num_threads()
        self.compiled = core.compile_model(
            model,
            "CPU",
            {
                "INFERENCE_PRECISION_HINT": "f32",  # never the bf16 default of AVX-512-bf16 CPUs
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_NUM_THREADS": threads,
            },
        )
        got = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        if "f32" not in got and "float32" not in got:
            raise RuntimeError(f"OpenVINO compiled {label} with precision {got}, expected f32")
        self.request = self.compiled.create_infer_request()
        self._lock = threading.Lock()  # one infer request: calls from several threads (a Gradio app) queue

    def _convert(self, module: nn.Module):
        import openvino as ov

        t0 = time.perf_counter()
        example = torch.zeros(self.input_shape)
        with torch.no_grad(), warnings.catch_warnings():
            # OpenVINO traces the module with torch.jit: torch says trace is deprecated (FutureWarning) and that
            # shape-dependent branches (the U-Net's padding check) become constants (TracerWarning). Both are
            # expected here: the converted network serves only the input shape it was traced with; any other
            # shape runs in PyTorch. Not the user's business, so not shown in the notebooks.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
            model = ov.convert_model(module.eval(), example_input=example, input=[self.input_shape])
        self.converted, self.convert_seconds = True, time.perf_counter() - t0
        return model

    def _convert_to_disk(self, module: nn.Module) -> None:
        import openvino as ov

        model = self._convert(module)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        try:
            ov.save_model(model, tmp / "model.xml", compress_to_fp16=False)  # keep fp32 weights
            atomic_write_json(tmp / "meta.json", {**self.key, "convert_seconds": round(self.convert_seconds, 2)})
            os.chmod(tmp, 0o755)  # mkdtemp creates 0700; the cache is an ordinary folder
            try:
                os.replace(tmp, self.path)  # atomic publish of the whole folder
            except OSError:
                if not (self.path / "model.xml").exists():  # not another process winning the race
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise ValueError(f"the OpenVINO runtime runs on CPU tensors, got one on {x.device}")
        if tuple(x.shape[1:]) != self.input_shape[1:]:
            raise ValueError(f"expected input (B, {', '.join(map(str, self.input_shape[1:]))}), got {tuple(x.shape)}")
        x = x.detach().float().contiguous().numpy()
        n, step = len(x), self.input_shape[0]
        outs = []
        for i in range(0, n, step):
            chunk = x[i : i + step]
            if len(chunk) < step:  # the IR's batch is static: pad the last chunk with zeros
                chunk = np.concatenate([chunk, np.zeros((step - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            with self._lock:
                outs.append(torch.from_numpy(self.request.infer({0: chunk})[0][: min(step, n - i)].copy()))
        return torch.cat(outs) if outs else torch.zeros(0)

    def describe(self) -> dict:
        return {
            "runtime": self.name,
            "version": self.version,
            "precision": "f32",
            "ir": str(self.path) if self.path else None,
            "converted_now": self.converted,
        }


def build_runtime(
    module: nn.Module,
    requested: str,
    device: str | torch.device,
    input_shape: tuple[int, ...],
    key: dict,
    cache_dir=None,
    label: str = "model",
) -> TorchRuntime | OpenVinoRuntime:
    """The runtime ``resolve_runtime(requested, device)`` names, ready to call on (B, *input_shape)."""
    if resolve_runtime(requested, device) == "openvino":
        return OpenVinoRuntime(module, input_shape, key, cache_dir, label)
    if torch.device(device).type == "cuda":
        return TorchRuntime(module, CUDA_ENCODER_PRECISION, fused_attention=True)
    return TorchRuntime(module)


def runtime_meta(path: str | os.PathLike) -> dict:
    """The ``meta.json`` beside a cached IR (what it was converted from)."""
    return json.loads((Path(path) / "meta.json").read_text())


class RuntimeModule(nn.Module):
    """Inference wrapper for a frozen model (e.g. a trained U-Net): CPU forward passes outside autograd
    on inputs shaped ``(B, *input_shape)`` go through ``runtime`` ("auto": OpenVINO fp32 when installed);
    everything else (training mode, gradients, CUDA, other shapes) calls the wrapped module unchanged.

    ``input_shape`` (C, H, W), or None: fixed by the first eligible input (later shapes that differ
    run in PyTorch). ``key`` identifies the weights (``checkpoint_sha256`` = the checkpoint file's
    sha256); for a U-Net put ``cache_dir`` beside its checkpoint (``<run>/unet``): the IR belongs to
    that training run. E.g. ``RuntimeModule(unet, None, {"checkpoint_sha256": file_sha256(path)},
    path.parent, label="unet")``. Wrap for inference only: the wrapper's state_dict keys carry a
    ``module.`` prefix.
    """

    def __init__(
        self,
        module: nn.Module,
        input_shape: tuple[int, ...] | None,
        key: dict,
        cache_dir=None,
        label: str = "model",
        runtime: str = "auto",
    ):
        super().__init__()
        if runtime not in RUNTIMES:
            raise KeyError(f"unknown runtime {runtime!r}; options: {list(RUNTIMES)}")
        self.module = module
        self.input_shape = tuple(int(s) for s in input_shape) if input_shape is not None else None
        self.key, self.cache_dir, self.label, self.runtime_request = dict(key), cache_dir, label, runtime
        self.config = getattr(module, "config", {})
        self._runner = None

    @property
    def runtime(self) -> str:
        p = next(self.module.parameters(), None)
        return resolve_runtime(self.runtime_request, p.device if p is not None else "cpu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            self.training
            or torch.is_grad_enabled()
            or x.device.type != "cpu"
            or self.runtime != "openvino"
            or tuple(x.shape[1:]) != (self.input_shape or tuple(x.shape[1:]))
        ):
            return self.module(x)
        self.input_shape = tuple(x.shape[1:])
        if self._runner is None:
            self.module.eval()
            self._runner = OpenVinoRuntime(self.module, self.input_shape, self.key, self.cache_dir, self.label)
        return self._runner(x)
