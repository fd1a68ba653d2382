"""CUDA out-of-memory: halve the work per pass, say so in one line, and go on.

A T4 has 16 GB; the batch sizes that fit a larger GPU may not. ``Halving`` remembers how many parts a batch
is cut into (1, 2, 4, ...): training accumulates the gradients of the parts (the optimiser still steps once
per batch, so the effective batch and the learning-rate schedule are unchanged; BatchNorm sees the smaller
parts, and a Dice loss is averaged over the parts instead of taken over the whole batch), and encoding runs
the parts one after the other. The number of parts only grows: a batch that failed once is not retried
whole. Under DDP the processes would disagree on the parts, so the error stops the run with what to lower.
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

    def encode(self, fn, images: torch.Tensor) -> torch.Tensor:
        """``fn(images)`` in as many parts as memory needs, concatenated."""
        return self.run(lambda n: fn(images) if n == 1 else torch.cat([fn(p) for p in images.chunk(n)]), len(images))
