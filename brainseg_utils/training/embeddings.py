"""On-disk cache of frozen SAM image embeddings, and the decoder-training Dataset over it.

The image encoder is frozen, so each slice is encoded once: float16 (256, 64, 64) = 2 MiB per
slice in a memmap, keyed by backend + checkpoint sha256 + preprocessing + encoder runtime
("openvino" or "pytorch", see ``encoder_runtime``; the manifest records its version) + slice-cache
key + the rows cached. Encoding is resumable: rows are encoded in batches, ``done.u8`` flags each row
once its embedding is on disk (and, with one process, ``progress.json`` records how many leading rows are
done), so an interrupted build continues where it stopped; ``manifest.json`` is written last and marks
the cache complete.

Several processes (DDP, e.g. ``distributed.launch(build_embedding_cache, ..., num_processes=N)`` or
``accelerate launch``): the batches still to encode are dealt round-robin, each process encodes its own
disjoint batches (same batch boundaries as one process, so the bytes are identical) into the same memmap
and flags only its own rows; the main process creates the files first and writes the manifest once
every process is done. An interrupted sharded build resumes with any number of processes.

Disk budget: full BraTS at 2 MiB per slice is ~55 GB, more than Kaggle's ~20 GB working folder.
``budget_gb`` caps the cache; beyond it, ``overflow="subsample"`` keeps a deterministic (seeded)
subset of the rows and reports it, ``overflow="encode"`` keeps every row and encodes the ones not
cached on the fly (slow: an encoder pass per item).

Augmentation: image-space augmentations (flips, rotations, elastic deformation, intensity noise)
change the image and therefore its embedding, so they cannot be applied to cached embeddings
(flipping an embedding is not the embedding of the flipped image). Decoder training on the
cache uses prompt augmentation instead: ground-truth boxes enlarged at random per epoch (MedSAM-style).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from brainseg_utils.data.slices import SliceCache
from brainseg_utils.models.sam.backends import EMBED_SHAPE, SamBackend
from brainseg_utils.models.sam.prompts import jitter_box, mask_to_box
from brainseg_utils.runtime.env import free_bytes
from brainseg_utils.runtime.io import atomic_write, atomic_write_json, canonical_sha256
from brainseg_utils.training import distributed, memory

BYTES_PER_SLICE = int(np.prod(EMBED_SHAPE)) * 2
CACHE_VERSION = 1


@dataclass
class EmbeddingCache:
    root: Path
    rows: np.ndarray  # slice-cache rows held, ascending
    emb: np.ndarray  # float16 memmap (n, 256, 64, 64)
    manifest: dict

    def __post_init__(self) -> None:
        self._pos = {int(r): i for i, r in enumerate(self.rows)}

    def __contains__(self, row: int) -> bool:
        return int(row) in self._pos

    def get(self, row: int) -> np.ndarray:
        return self.emb[self._pos[int(row)]]

    @property
    def key(self) -> str:
        return self.manifest["key"]

    @classmethod
    def open(cls, folder: str | os.PathLike) -> EmbeddingCache:
        folder = Path(folder)
        manifest = json.loads((folder / "manifest.json").read_text())
        rows = np.load(folder / "rows.npy")
        emb = np.memmap(folder / "emb.f16", np.float16, "r", shape=(len(rows), *EMBED_SHAPE))
        return cls(folder, rows, emb, manifest)


def select_rows(rows, budget_gb: float, seed: int = 0) -> np.ndarray:
    """The rows that fit in ``budget_gb`` (all, or a seeded subset), ascending."""
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    n_fit = int(budget_gb * 1024**3 // BYTES_PER_SLICE)
    if n_fit < 1:
        raise ValueError(f"budget {budget_gb} GB holds no embedding ({BYTES_PER_SLICE / 2**20:.0f} MiB each)")
    if len(rows) <= n_fit:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, size=n_fit, replace=False))


def _prepare_files(folder: Path, chosen: np.ndarray, need: int) -> None:
    """Main process: create (or keep, when resuming) the embedding memmap, rows.npy and the per-row done flags
    (``done.u8``; a build interrupted before it existed has its leading ``progress.json`` rows marked done)."""
    emb_path, progress_path, flags_path = folder / "emb.f16", folder / "progress.json", folder / "done.u8"
    folder.mkdir(parents=True, exist_ok=True)
    if not (emb_path.exists() and emb_path.stat().st_size == need):
        free = free_bytes(folder)  # disk space, and what Kaggle's 20 GB output cap leaves under /kaggle/working
        if free < need:
            raise OSError(
                f"embedding cache needs {need / 1e9:.1f} GB, {folder} has {free / 1e9:.1f} GB free; "
                "lower SAM_CACHE_BUDGET_GB"
            )
        progress_path.unlink(missing_ok=True)
        flags_path.unlink(missing_ok=True)
        np.memmap(emb_path, np.float16, "w+", shape=(len(chosen), *EMBED_SHAPE)).flush()
        atomic_write(folder / "rows.npy", lambda tmp: _save_npy(tmp, chosen))
    if not (flags_path.exists() and flags_path.stat().st_size == len(chosen)):
        flags = np.memmap(flags_path, np.uint8, "w+", shape=(len(chosen),))
        if progress_path.exists():  # a build interrupted before done.u8 existed: its leading rows are done
            flags[: int(json.loads(progress_path.read_text()).get("done", 0))] = 1
        flags.flush()
        del flags


def build_embedding_cache(
    backend: SamBackend,
    slices: SliceCache,
    rows,
    root: str | os.PathLike,
    budget_gb: float = 16.0,
    seed: int = 0,
    batch_size: int = 8,
    device: str = "cpu",
    progress: bool = True,
) -> EmbeddingCache:
    """Encode ``rows`` of the slice cache (within the budget) once; reuse or resume on later calls.

    Under DDP every process calls this with the same arguments (``device="cuda"`` becomes the
    process's own GPU) and gets the finished cache back."""
    from brainseg_utils.runtime.progress import tqdm

    dist = distributed.current()
    chosen = select_rows(rows, budget_gb, seed)
    device = str(distributed.device_for(dist, torch.device(device)))
    backend.to(device)
    payload = {
        "version": CACHE_VERSION,
        "backend": backend.name,
        "checkpoint_sha256": backend.checkpoint_sha256,
        "preprocessing": backend.preprocessing,
        "runtime": backend.runtime,
        "precision": backend.precision,
        "slice_cache_key": slices.key,
        "rows_sha256": canonical_sha256(chosen.tolist()),
    }
    key = canonical_sha256(payload)
    folder = Path(root) / f"{backend.name}-{key[:16]}"
    if (folder / "manifest.json").exists():
        return EmbeddingCache.open(folder)
    need = len(chosen) * BYTES_PER_SLICE
    emb_path, progress_path, flags_path = folder / "emb.f16", folder / "progress.json", folder / "done.u8"
    if dist.is_main:
        _prepare_files(folder, chosen, need)
    distributed.barrier()  # the files exist before any process opens them
    emb = np.memmap(emb_path, np.float16, "r+", shape=(len(chosen), *EMBED_SHAPE))
    flags = np.memmap(flags_path, np.uint8, "r+", shape=(len(chosen),))
    done = int(flags.sum())
    batches = _pending_batches(np.asarray(flags), batch_size)[dist.rank :: dist.world_size]
    t0 = time.perf_counter()
    total = sum(len(b) for b in batches)
    bar = tqdm(total=total, desc=f"encoding slices ({backend.name})", disable=not (progress and dist.is_main))
    halving = memory.Halving(f"encoding ({backend.name})", distributed=dist.enabled)
    for i, pos in enumerate(batches):
        images = torch.from_numpy(np.asarray(slices.images[chosen[pos]], dtype=np.float32)).to(device)
        if (
            i == 0 and images.device.type in memory.PRESIZE_DEVICES
        ):  # before the first pass: does the batch fit the GPU?
            with torch.no_grad():
                halving.presize(lambda k, x=images: backend.encode(x[:k]), batch_size)
        emb[pos[0] : pos[-1] + 1] = halving.encode(backend.encode, images).float().cpu().numpy().astype(np.float16)
        emb.flush()
        flags[pos[0] : pos[-1] + 1] = 1  # only this process's rows; after the data is on disk
        flags.flush()
        if not dist.enabled:
            lead = int(np.argmin(flags)) if not np.asarray(flags).all() else len(chosen)
            atomic_write_json(progress_path, {"done": lead})
        bar.update(len(pos))
    bar.close()
    del emb, flags
    distributed.barrier()  # every shard is on disk
    if not dist.is_main:
        distributed.barrier()  # wait for the manifest
        return EmbeddingCache.open(folder)
    manifest = {"key": key, **payload, "n": len(chosen), "requested": int(len(np.unique(np.asarray(rows))))}
    manifest.update(budget_gb=budget_gb, bytes=need, encode_seconds_this_call=round(time.perf_counter() - t0, 2))
    manifest.update(resumed_from=done, runtime_detail=backend.runner().describe())
    if dist.enabled:
        manifest["processes"] = dist.world_size
    atomic_write_json(folder / "manifest.json", manifest)
    progress_path.unlink(missing_ok=True)
    flags_path.unlink(missing_ok=True)
    distributed.barrier()
    return EmbeddingCache.open(folder)


def _pending_batches(flags: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Positions not yet flagged, cut into batches: each run of pending rows is cut every ``batch_size``
    rows from its start (a fresh build: exactly the batches of one process)."""
    pending = np.flatnonzero(flags == 0)
    if len(pending) == 0:
        return []
    runs = np.split(pending, np.flatnonzero(np.diff(pending) != 1) + 1)
    return [run[i : i + batch_size] for run in runs for i in range(0, len(run), batch_size)]


def _save_npy(path: str, arr: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a file object: np.save would append ".npy" to a bare path
        np.save(fh, arr)


def negative_box(mask: np.ndarray, brain: np.ndarray, rng: np.random.Generator, tries: int = 20) -> np.ndarray | None:
    """A random XYXY box on tumour-free tissue: centred on a brain pixel, sides of 8 .. S/4 px, not touching any
    tumour pixel of ``mask`` (S, S); None when ``tries`` draws all touch the tumour (or there is no brain)."""
    size = mask.shape[-1]
    free = np.flatnonzero((np.asarray(brain) > 0) & ~(np.asarray(mask) > 0))
    if len(free) == 0:
        return None
    hi = max(9, size // 4)
    for _ in range(tries):
        cy, cx = divmod(int(free[rng.integers(len(free))]), size)
        hw, hh = rng.integers(8, hi + 1, 2) // 2
        x0, y0, x1, y1 = max(cx - hw, 0), max(cy - hh, 0), min(cx + hw, size - 1), min(cy + hh, size - 1)
        if not np.asarray(mask)[y0 : y1 + 1, x0 : x1 + 1].any():
            return np.array([x0, y0, x1, y1], np.float32)
    return None


class EmbeddingDataset(Dataset):
    """Decoder-training items over cached embeddings.

    Item: ``({"embeddings": float32 (256, 64, 64), "boxes": float32 (4,) XYXY in the slice frame,
    NaN for no prompt}, mask float32 (1, S, S))``.

    ``prompt="box"``: tumour slices with the ground-truth box, each side enlarged by 0..``jitter_px`` pixels
    (``sam.jitter_box``) with a seed per (seed, epoch, row); ``jitter_px=0`` gives the exact box. With
    ``negatives`` > 0 (training), tumour-free slices are kept too and get a box on tumour-free tissue
    (``negative_box``), and each tumour slice gets one with probability ``negatives``; such items have an empty
    target: the decoder learns that a box around something that is not tumour (what a cascade's spurious U-Net
    component gives it) asks for an empty mask. With ``boxes`` ({row: (K, 4)}, evaluation of the cascade),
    every row in it is kept and carries its K boxes (NaN rows unused; see ``SamDecoderModel``).
    ``prompt="none"`` keeps every slice. Rows missing from the cache are dropped, or encoded on the fly when
    ``backend`` is given.
    """

    def __init__(
        self,
        emb_cache: EmbeddingCache,
        slices: SliceCache,
        rows,
        prompt: str,
        jitter_px: int = 5,
        seed: int = 0,
        backend: SamBackend | None = None,
        negatives: float = 0.0,
        boxes: dict[int, np.ndarray] | None = None,
    ):
        if prompt not in ("none", "box"):
            raise ValueError(f"prompt must be 'none' or 'box', got {prompt!r}")
        if not 0.0 <= negatives < 1.0:
            raise ValueError(f"negatives must be in [0, 1), got {negatives}")
        if boxes is not None and prompt != "box":
            raise ValueError("boxes are given only with prompt 'box'")
        rows = np.asarray(rows, dtype=np.int64)
        if boxes is not None:
            rows = np.array([r for r in rows if int(r) in boxes], dtype=np.int64)
        elif prompt == "box" and negatives == 0:  # a ground-truth box needs a tumour in the cached mask
            rows = rows[slices.index["has_tumour"].to_numpy()[rows]]
            rows = rows[[bool(np.asarray(slices.masks[r]).any()) for r in rows]]
        if backend is None:
            rows = np.array([r for r in rows if r in emb_cache], dtype=np.int64)
        if len(rows) == 0:
            raise ValueError(f"no slices left for prompt {prompt!r} (cache holds {len(emb_cache.rows)} rows)")
        self.emb_cache, self.slices, self.rows, self.prompt = emb_cache, slices, rows, prompt
        self.jitter_px, self.seed, self.backend, self.epoch = int(jitter_px), seed, backend, 0
        self.negatives, self.boxes = float(negatives), boxes
        self.size = slices.images.shape[-1]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def embedding(self, row: int) -> torch.Tensor:
        if row in self.emb_cache:
            return torch.from_numpy(np.asarray(self.emb_cache.get(row), dtype=np.float32))
        image = torch.from_numpy(np.asarray(self.slices.images[row : row + 1], dtype=np.float32))
        device = next((p.device for p in self.backend.model.parameters()), torch.device("cpu"))  # maybe a GPU
        return self.backend.encode(image.to(device))[0].float().cpu()

    def box_and_target(self, row: int, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The prompt of ``row`` and the mask the decoder should answer it with."""
        if self.boxes is not None:
            return np.asarray(self.boxes[row], np.float32), mask
        rng = np.random.default_rng([self.seed, self.epoch, row])
        box = mask_to_box(mask)
        if self.negatives > 0 and (box is None or rng.random() < self.negatives):
            neg = negative_box(mask, np.asarray(self.slices.images[row]).any(0), rng)
            if neg is not None:
                return neg, np.zeros_like(mask)
            if box is None:  # no tumour-free tissue to put a box on: a box over the whole slice, empty target
                return np.array([0, 0, self.size - 1, self.size - 1], np.float32), mask
        if self.jitter_px > 0:
            box = jitter_box(box, self.size, rng, self.jitter_px)
        return box, mask

    def __getitem__(self, i: int):
        row = int(self.rows[i])
        mask = np.asarray(self.slices.masks[row])
        box = np.full(4, np.nan, np.float32)
        if self.prompt == "box":
            box, mask = self.box_and_target(row, mask)
        return (
            {"embeddings": self.embedding(row), "boxes": torch.from_numpy(box)},
            torch.from_numpy(mask[None].astype(np.float32)),
        )
