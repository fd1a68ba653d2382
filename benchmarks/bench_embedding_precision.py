"""Does storing SAM embeddings in float16 change the masks? Box-prompted masks from float32 embeddings vs the
same embeddings rounded to float16 (what the embedding cache stores, 2 MiB per slice) and to bfloat16.

    python benchmarks/bench_embedding_precision.py [--backend litemedsam] [--slices 48] [--size 240]
                                                   [--out outputs/benchmarks/embedding_precision.json]

Slices: tumour-bearing FLAIR slices of synthetic BraTS-layout cases (``synthetic.generate_case``, two contrast
tables), normalised and resized as the slice cache does. Each is encoded once in float32 (the backend's own
encoder, PyTorch), then decoded by the backend's pretrained mask decoder (the zero-shot decoder every fine-tuned
one starts from) with the ground-truth box, from the float32 embedding and from its rounded copies. Reported per
precision: Dice between the rounded and the float32 mask (over slices: mean, minimum), the largest logit
difference, and the bytes per slice. Goal for the cache: Dice >= 0.99 on every slice.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from brainseg_utils.data.slices import resize_slice
from brainseg_utils.data.synthetic import SyntheticConfig, generate_case
from brainseg_utils.data.volumes import normalise_volume
from brainseg_utils.models.sam.backends import build_backend
from brainseg_utils.models.sam.decoder import SamDecoderModel
from brainseg_utils.models.sam.prompts import mask_to_box
from brainseg_utils.runtime.env import device_summary
from brainseg_utils.runtime.io import atomic_write_json


def slices(n: int, size: int) -> tuple[torch.Tensor, np.ndarray]:
    """float32 (n, 1, size, size) tumour slices and their boxes, from cases of both contrast tables."""
    images, boxes = [], []
    for seed, appearance in ((0, "fixed"), (1, "randomised"), (2, "randomised")):
        case = generate_case(SyntheticConfig(cases=1, seed=seed, depth=48, appearance=appearance), 0)
        flair, seg = normalise_volume(case["flair"]), case["seg"]
        zs = np.flatnonzero((seg > 0).sum((0, 1)) >= 20)
        for z in zs[np.linspace(0, len(zs) - 1, n // 3).round().astype(int)]:
            img, mask = resize_slice(flair[None, :, :, z], (seg[:, :, z] > 0).astype(np.uint8), size)
            images.append(img)
            boxes.append(mask_to_box(mask))
    return torch.from_numpy(np.stack(images)), np.stack(boxes).astype(np.float32)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * (a & b).sum() / s)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="litemedsam")
    ap.add_argument("--slices", type=int, default=48)
    ap.add_argument("--size", type=int, default=240)
    ap.add_argument("--out", default="outputs/benchmarks/embedding_precision.json")
    args = ap.parse_args(argv)
    backend = build_backend(args.backend, runtime="pytorch")
    decoder = SamDecoderModel(backend, "box", args.size).eval()
    x, boxes = slices(args.slices, args.size)
    t = time.perf_counter()
    with torch.no_grad():
        emb = torch.cat([backend.encode(x[i : i + 8]).float() for i in range(0, len(x), 8)])
        ref = decoder.low_res_logits(emb, torch.from_numpy(boxes))
    rows = {}
    for name, dtype in (("float16", torch.float16), ("bfloat16", torch.bfloat16)):
        with torch.no_grad():
            low = decoder.low_res_logits(emb.to(dtype).float(), torch.from_numpy(boxes))
        d = [dice((low[i] > 0).numpy(), (ref[i] > 0).numpy()) for i in range(len(x))]
        rows[name] = {
            "dice_vs_float32_mean": round(float(np.mean(d)), 5),
            "dice_vs_float32_min": round(float(np.min(d)), 5),
            "max_abs_logit_diff": round(float((low - ref).abs().max()), 5),
            "bytes_per_slice": int(emb[0].numel() * torch.finfo(dtype).bits // 8),
            "meets_goal": bool(np.min(d) >= 0.99),
        }
    out = {
        "command": "python benchmarks/bench_embedding_precision.py " + " ".join(argv or []),
        "what": "box-prompted masks (pretrained decoder) from rounded vs float32 embeddings; SYNTHETIC slices",
        "backend": args.backend,
        "slices": len(x),
        "size": args.size,
        "float32_bytes_per_slice": int(emb[0].numel() * 4),
        "seconds": round(time.perf_counter() - t, 1),
        "device": device_summary(),
        "precisions": rows,
    }
    atomic_write_json(args.out, out)
    for name, r in rows.items():
        mib = r["bytes_per_slice"] / 2**20
        print(f"{name}: Dice vs float32 mean {r['dice_vs_float32_mean']} min {r['dice_vs_float32_min']}, "
              f"max |logit diff| {r['max_abs_logit_diff']}, {mib:.1f} MiB per slice")  # fmt: skip
    return out


if __name__ == "__main__":
    main()
