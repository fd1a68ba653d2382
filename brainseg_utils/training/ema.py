"""Weight averaging (``ema_decay > 0``): after every optimizer step an exponential moving average of the
weights and BatchNorm buffers is updated, ``ema = decay * ema + (1 - decay) * w`` (the first step copies
``w``; ``torch.optim.swa_utils.AveragedModel``). Validation, ``best.pt`` and ``last.pt``'s ``"model"`` use
the averaged weights, so every consumer (evaluation, demo) loads them unchanged; ``last.pt`` also keeps the
raw training weights (``"train_model"``) and the update count, so a resumed run continues both exactly.
With ``ema_decay = 0`` (the default) nothing is averaged and the run config omits the field, so
checkpoints written before it existed still resume.
"""

from __future__ import annotations

import torch.nn as nn


def averaged(model: nn.Module, decay: float) -> nn.Module:
    """An ``AveragedModel`` holding the exponential moving average of ``model``'s weights and buffers."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
