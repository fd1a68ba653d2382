"""CUDA out-of-memory: halve the work per pass, say so in one line, and go on.

A T4 has 16 GB; the batch sizes that fit a larger GPU may not. ``Halving`` remembers how many parts a batch
is cut into (1, 2, 4, ...): training accumulates the gradients of the parts (the optimiser still steps once
per batch, so the effective batch and the learning-rate schedule are unchanged; BatchNorm sees the smaller
parts, and a Dice loss is averaged over the parts instead of taken over the whole batch), and encoding runs
the parts one after the other. The number of parts only grows: a batch that failed once is not retried
whole. Under DDP the processes would disagree on the parts, so the error stops the run with what to lower.

Before the first pass on a GPU, ``Halving.presize`` checks the batch against the free memory: it measures the
peak memory of 1 and of 2 slices (a fixed part: weights' gradients, workspace; and a part per slice), predicts
the whole batch's, and when that exceeds 90 % of the free memory starts with as many parts as needed (one line
says so), instead of waiting for the error.
"""

from __future__ import annotations

import math

import torch


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA (or other accelerator) out-of-memory error."""
    oom = getattr(torch.cuda, "OutOfMemoryError", ())
    return (bool(oom) and isinstance(exc, oom)) or "out of memory" in str(exc).lower()


def split(x, parts: int) -> list:
    """``x`` (a tensor, or a tuple / list / dict of them) cut into ``parts`` pieces along dim 0."""
    if isinstance(x, torch.Tensor):
        return list(x.chunk(parts))
    if isinstance(x, (tuple, list)):
        pieces = [split(v, parts) for v in x]
        return [type(x)(p[i] for p in pieces) for i in range(len(pieces[0]))]
    if isinstance(x, dict):
        pieces = {k: split(v, parts) for k, v in x.items()}
        n = len(next(iter(pieces.values())))
        return [{k: v[i] for k, v in pieces.items()} for i in range(n)]
    return [x] * parts


def head(x, k: int):
    """The first ``k`` items along dim 0 of ``x`` (a tensor, or a tuple / list / dict of them)."""
    if isinstance(x, torch.Tensor):
        return x[:k]
    if isinstance(x, (tuple, list)):
        return type(x)(head(v, k) for v in x)
    if isinstance(x, dict):
        return {key: head(v, k) for key, v in x.items()}
    return x


FREE_SHARE = 0.9  # of the free memory a pass may use
PRESIZE_DEVICES = ("cuda",)  # device types whose batches are checked against the free memory (tests add "cpu")


def cuda_peak(fn, device=None) -> float:
    """Bytes allocated at the peak of ``fn()`` beyond what was allocated before (CUDA)."""
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return float(torch.cuda.max_memory_allocated(device) - base)


def cuda_free(device=None) -> float:
    """Bytes a new allocation can get: the device's free memory plus what torch holds cached but unused."""
    free, _ = torch.cuda.mem_get_info(device)
    return float(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


class Halving:
    """How many parts a batch is cut into, doubled on each out-of-memory error (see the module docstring)."""

    def __init__(self, what: str, distributed: bool = False):
        self.what, self.distributed, self.parts = what, distributed, 1

    def run(self, fn, batch: int, reset=None):
        """``fn(parts)`` until it does not run out of memory; ``reset()`` undoes a failed attempt's effects."""
        while True:
            try:
                return fn(self.parts)
            except RuntimeError as exc:
                if not is_out_of_memory(exc):
                    raise
                if self.distributed or self.parts >= batch:
                    raise RuntimeError(
                        f"CUDA out of memory in {self.what} at {math.ceil(batch / self.parts)} slices per pass: lower "
                        "the batch size parameter (UNET_BATCH_SIZE / SAM_BATCH_SIZE / SAM_ENCODE_BATCH)"
                        + (" (multi-GPU runs cannot split batches on their own)" if self.distributed else "")
                    ) from exc
                if reset is not None:
                    reset()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                self.parts *= 2
                print(
                    f"CUDA out of memory in {self.what} with {math.ceil(batch / (self.parts // 2))} slices per pass: "
                    f"going on with {math.ceil(batch / self.parts)} per pass ({self.parts} parts per batch of {batch})",
                    flush=True,
                )

    def presize(self, fn, batch: int, peak=None, free=None) -> dict:
        """Check ``batch`` slices per pass against the free memory before the first pass: ``fn(k)`` runs a pass of
        ``k`` slices (1 and 2 are measured with ``peak``); the parts grow until a pass fits ``FREE_SHARE`` of
        ``free()``. Returns the estimate (bytes) and the parts chosen."""
        if batch < 2 or self.parts > 1:
            return {"parts": self.parts}
        peak, free = peak or cuda_peak, free or cuda_free
        one, two = peak(lambda: fn(1)), peak(lambda: fn(2))
        per_slice = max(0.0, two - one)
        fixed = max(0.0, one - per_slice)
        avail = FREE_SHARE * free()
        parts = 1
        while parts < batch and fixed + math.ceil(batch / parts) * per_slice > avail:
            parts *= 2
        need = fixed + batch * per_slice
        out = {"fixed": fixed, "per_slice": per_slice, "need": need, "free": avail / FREE_SHARE, "parts": parts}
        if parts > 1:
            gb = f"~{need / 1e9:.1f} GB for {batch} slices, {avail / FREE_SHARE / 1e9:.1f} GB free"
            if self.distributed:
                print(f"GPU memory: {self.what} needs {gb}: it may run out of memory; lower the batch size parameter "
                      "(multi-GPU runs cannot split batches on their own)", flush=True)  # fmt: skip
            else:
                self.parts = parts
                print(f"GPU memory: {self.what} needs {gb}: running {math.ceil(batch / parts)} slices per pass "
                      f"({parts} parts per batch of {batch})", flush=True)  # fmt: skip
        return out

    def encode(self, fn, images: torch.Tensor) -> torch.Tensor:
        """``fn(images)`` in as many parts as memory needs, concatenated."""
        return self.run(lambda n: fn(images) if n == 1 else torch.cat([fn(p) for p in images.chunk(n)]), len(images))
