"""torch Dataset over the slice cache, with reproducible albumentations augmentation."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .slices import SliceCache


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
            self.transform.set_random_seed(int(np.random.SeedSequence([self.seed, self.epoch, row]).generate_state(1)[0]))
            out = self.transform(image=np.ascontiguousarray(image.transpose(1, 2, 0)), mask=mask)
            image = np.clip(out["image"], 0.0, 1.0).transpose(2, 0, 1)
            mask = out["mask"]
        return torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(mask[None].astype(np.float32))
