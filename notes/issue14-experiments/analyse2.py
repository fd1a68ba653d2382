"""Mean per-patient Dice (notebook 04 protocol) of a checkpoint on a set; optional split.json test ids."""
import json
import sys
from pathlib import Path

import numpy as np
import torch

from brainseg_utils import metrics as M
from brainseg_utils.brats import discover_cases
from brainseg_utils.inference import Models, load_unet, predict_case

torch.set_num_threads(1)
ckpt, root = sys.argv[1], sys.argv[2]
cases = discover_cases(Path(root))
if len(sys.argv) > 3:
    test = set(json.loads(Path(sys.argv[3]).read_text())["test"])
    cases = [c for c in cases if c.case_id in test]
model, _ = load_unet(ckpt, None, "cpu")
d = {}
for c in cases:
    res = predict_case(Models(model), c, 128, ("flair",), torch.device("cpu"))
    d[c.case_id] = round(float(M.dice(res["pred"]["unet"], res["gt"])), 4)
print(json.dumps({"ckpt": ckpt, "set": root, "mean": round(float(np.mean(list(d.values()))), 4), "per_case": d}))
