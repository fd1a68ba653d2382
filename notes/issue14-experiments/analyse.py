"""Per-case error analysis of a trained U-Net on a BraTS-layout set: GT volume, FP/FN voxels, FP location."""
import sys
from pathlib import Path

import numpy as np
import torch

from brainseg_utils.brats import discover_cases
from brainseg_utils.inference import Models, load_unet, predict_case
from brainseg_utils import metrics as M

ckpt, root = sys.argv[1], sys.argv[2]
torch.set_num_threads(1)
model, _ = load_unet(ckpt, None, "cpu")
for c in discover_cases(Path(root))[: int(sys.argv[3]) if len(sys.argv) > 3 else None]:
    res = predict_case(Models(model), c, 128, ("flair",), torch.device("cpu"))
    p, g = res["pred"]["unet"].astype(bool), res["gt"].astype(bool)
    fp, fn = p & ~g, g & ~p
    zs = np.flatnonzero(fp.any((0, 1)))
    gz = np.flatnonzero(g.any((0, 1)))
    print(f"{c.case_id} dice {M.dice(p, g):.3f} gt {g.sum()/1000:.1f}ml pred {p.sum()/1000:.1f}ml fp {fp.sum()/1000:.1f}ml "
          f"fn {fn.sum()/1000:.1f}ml gt z {gz.min() if gz.size else -1}-{gz.max() if gz.size else -1} "
          f"fp z {zs.min() if zs.size else -1}-{zs.max() if zs.size else -1}", flush=True)
