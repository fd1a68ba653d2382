"""WiSE-FT for the SAM mask decoder: a weight-space ensemble of the fine-tuned decoder and the pretrained one.

Wortsman et al., "Robust fine-tuning of zero-shot models" (CVPR 2022): fine-tune as usual, then use
``(1 - alpha) * pretrained + alpha * fine-tuned`` weights. The pretrained decoder keeps what it learnt from real
scans; fine-tuning on data unlike them (here: synthetic tumours on synthetic anatomy) drifts away from it. The
paper reports that such blends keep much of the in-distribution gain while recovering robustness under
distribution shift; alpha = 1 is plain fine-tuning. ``SAM_WISE_FT="auto"`` chooses alpha per decoder from ``GRID``
by the validation Dice that selects its checkpoint (1 included: the blend is used only where validation prefers it).

A decoder checkpoint keeps the weights training produced (so resuming, selection and ``last.pt`` are unchanged)
and records the coefficient in ``meta["wise_ft"]`` (``record``); every loader builds the pretrained decoder,
loads the checkpoint and blends (``blend_state`` via ``checkpoint_alpha``), so notebook 04, the demo and the
benchmarks all evaluate the same weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from brainseg_utils.models.sam.decoder import SamDecoderModel
from brainseg_utils.runtime.checkpoints import load_model_state

PARAM = "SAM_WISE_FT"
AUTO = "auto"
GRID = (0.25, 0.5, 0.75, 1.0)  # what "auto" tries; 1 (the decoder as trained) is always a candidate
REFERENCE = "WiSE-FT (Wortsman et al., CVPR 2022): (1 - alpha) x pretrained + alpha x fine-tuned decoder weights"


def check_alpha(alpha, where: str = PARAM) -> float:
    """``alpha`` as a float in (0, 1]; a ``ValueError`` naming ``where`` otherwise (0 would be the pretrained
    decoder, which notebook 04 reports anyway as the zero-shot row)."""
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a number in (0, 1], got {alpha!r}") from None
    if not (math.isfinite(a) and 0 < a <= 1):
        raise ValueError(
            f"{where} must be in (0, 1] (1: the fine-tuned decoder as trained; 0.5: halfway back to the pretrained "
            f"one), got {alpha!r}"
        )
    return a


def blend_state(
    pretrained: Mapping[str, torch.Tensor], finetuned: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * pretrained + alpha * finetuned`` for every floating-point tensor (computed in float32 or
    wider, returned in the fine-tuned tensor's dtype); other tensors (integer buffers) are the fine-tuned ones.
    Both must hold the same keys and shapes (a clear error lists what differs)."""
    alpha = check_alpha(alpha, "alpha")
    missing, extra = sorted(set(finetuned) - set(pretrained)), sorted(set(pretrained) - set(finetuned))
    if missing or extra:
        raise ValueError(f"cannot blend decoder weights: only fine-tuned {missing[:5]}, only pretrained {extra[:5]}")
    out = {}
    for key, ft in finetuned.items():
        pre = pretrained[key]
        if pre.shape != ft.shape:
            raise ValueError(f"cannot blend {key}: pretrained {tuple(pre.shape)}, fine-tuned {tuple(ft.shape)}")
        if alpha == 1 or not ft.is_floating_point():
            out[key] = ft.clone()
            continue
        wide = torch.promote_types(ft.dtype, torch.float32)
        mixed = (1 - alpha) * pre.to(ft.device, wide) + alpha * ft.to(wide)
        out[key] = mixed.to(ft.dtype)
    return out


def checkpoint_alpha(ckpt: dict, path=None) -> float:
    """The coefficient a decoder checkpoint records (``meta["wise_ft"]["alpha"]``; 1 when it records none)."""
    rec = (ckpt.get("meta") or {}).get("wise_ft") or {}
    return check_alpha(rec.get("alpha", 1.0), f"{path or 'checkpoint'}: meta.wise_ft.alpha")


def parse_setting(value, where: str = PARAM) -> float | str:
    """``SAM_WISE_FT`` as given: ``"auto"`` (the coefficient chosen on the validation slices from ``GRID``) or a
    coefficient in (0, 1]."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        return check_alpha(value, where)
    except ValueError:
        raise ValueError(f"{where} must be {AUTO!r} or a number in (0, 1], got {value!r}") from None


def candidates(setting: float | str) -> tuple[float, ...]:
    """The coefficients a setting tries: ``GRID`` for ``"auto"``, else the one given."""
    s = parse_setting(setting)
    return GRID if s == AUTO else (s,)


def choose(scores: dict[float, float]) -> float:
    """The coefficient with the highest validation Dice (a tie goes to the larger: closer to the trained weights)."""
    return max(scores, key=lambda a: (scores[a], a))


def record(alpha: float, val_dice: float, val_dice_finetuned: float, scores: dict | None = None) -> dict:
    """What ``meta["wise_ft"]`` holds: the coefficient, the blended and the as-trained validation Dice, and (when
    it was chosen on validation) every candidate's validation Dice."""
    out = {
        "alpha": check_alpha(alpha),
        "val_dice": float(val_dice),
        "val_dice_finetuned": float(val_dice_finetuned),
        "method": REFERENCE,
    }
    if scores and len(scores) > 1:
        out["chosen_on_validation"] = {f"{a:g}": float(d) for a, d in sorted(scores.items())}
    return out


def note(alpha: float) -> str:
    """One line for tables and model notes ("" for plain fine-tuning)."""
    return "" if alpha == 1 else f"WiSE-FT alpha {alpha:g}: {1 - alpha:g} x pretrained + {alpha:g} x fine-tuned weights"


def decoder_from_checkpoint(backend, ckpt: dict, path="checkpoint", alpha: float | None = None) -> SamDecoderModel:
    """The decoder a loaded checkpoint describes, on ``backend``'s device: the pretrained decoder of ``backend``
    with the checkpoint's weights loaded, blended back towards the pretrained ones by ``alpha`` (None: the
    checkpoint's own, ``checkpoint_alpha``)."""
    cfg = ckpt["config"]["model"]
    alpha = checkpoint_alpha(ckpt, path) if alpha is None else check_alpha(alpha)
    model = SamDecoderModel(backend, cfg["prompt"], cfg["img_size"])
    pretrained = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()} if alpha < 1 else None
    load_model_state(model, ckpt["model"], str(path))
    if pretrained is not None:
        model.load_state_dict(blend_state(pretrained, model.state_dict(), alpha))
    return model
