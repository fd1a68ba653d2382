"""torch Dataset over the slice cache, with reproducible albumentations augmentation, and the record of
what a model learnt from (``training_meta``, stored in every checkpoint and reported by evaluation)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from brainseg_utils.data.slices import SliceCache


class SliceDataset(Dataset):
    """Slices ``rows`` of a ``SliceCache``.

    Item: ``(image float32 (C, S, S) in [0, 1], mask float32 (1, S, S) in {0, 1})``.

    Augmentation is reproducible whatever the number of DataLoader workers: item ``i`` in
    epoch ``e`` is augmented with seed ``hash(seed, e, row)`` (call ``set_epoch`` each epoch).
    """

    def __init__(self, cache: SliceCache, rows, transform=None, seed: int = 0):
        self.cache = cache
        self.rows = np.asarray(rows, dtype=np.int64)
        if self.rows.size and (self.rows.min() < 0 or self.rows.max() >= len(cache)):
            raise IndexError(f"rows must lie in [0, {len(cache)}), got [{self.rows.min()}, {self.rows.max()}]")
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        row = int(self.rows[i])
        image = np.asarray(self.cache.images[row], dtype=np.float32)  # (C, S, S)
        mask = np.asarray(self.cache.masks[row], dtype=np.uint8)  # (S, S)
        if self.transform is not None:
            self.transform.set_random_seed(
                int(np.random.SeedSequence([self.seed, self.epoch, row]).generate_state(1)[0])
            )
            out = self.transform(image=np.ascontiguousarray(image.transpose(1, 2, 0)), mask=mask)
            image = np.clip(out["image"], 0.0, 1.0).transpose(2, 0, 1)
            mask = out["mask"]
        return torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(mask[None].astype(np.float32))


def training_meta(cache: SliceCache, split: dict, info: dict, train_rows, val_rows, note: str = "", **extra) -> dict:
    """The ``meta`` dict stored in a checkpoint: dataset, split hash, slice-cache key and geometry, and
    ``data`` = what the model learnt from: ``train_slices`` / ``val_slices`` (the rows actually used for
    training and checkpoint selection), ``train_cases`` / ``val_cases`` (patients among them) and an
    optional ``note`` (e.g. a budget-limited subsample). ``extra`` keys are added as they are.
    """
    case_of = cache.index["case_id"].to_numpy()
    train_rows, val_rows = np.asarray(train_rows, np.int64), np.asarray(val_rows, np.int64)
    data = {
        "train_slices": int(len(train_rows)),
        "val_slices": int(len(val_rows)),
        "train_cases": int(len(set(case_of[train_rows]))),
        "val_cases": int(len(set(case_of[val_rows]))),
    }
    if note:
        data["note"] = note
    return {
        "dataset": info["name"],
        "split_sha256": split["sha256"],
        "cache_key": cache.key,
        "img_size": int(cache.images.shape[-1]),
        "modalities": list(cache.manifest["config"]["modalities"]),
        "data": data,
        **extra,
    }
