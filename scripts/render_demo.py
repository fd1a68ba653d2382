"""Screenshots of the demo's main states, for docs and reviews: start, example selected, box drawn, segmented,
whole-volume result, refused upload. PNGs go to outputs/render/demo/ (01_start.png ... 06_error.png).

    python scripts/render_demo.py              # synthetic: two synthetic cases and untrained tiny models
    python scripts/render_demo.py --run outputs  # a trained run: its checkpoints and test-split examples

Uses the browser tests' machinery (brainseg_utils/app/browser.py: Debian's chromium and chromium-driver,
selenium). The synthetic models are randomly initialised: their masks show the page's layout, not results.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from brainseg_utils.app import browser as B
from brainseg_utils.app.demo import build_demo
from brainseg_utils.app.examples import load_truth, write_examples

SYNTHETIC_DEPTH = 64  # slices of the synthetic volumes (BraTS has 155; fewer keep the script quick)


def synthetic(folder: Path):
    """(predictor, examples): two synthetic BraTS-layout cases and an untrained U-Net + LiteMedSAM box decoder."""
    import torch

    from brainseg_utils.app.predictor import Predictor
    from brainseg_utils.data.brats import discover_cases
    from brainseg_utils.data.synthetic import SyntheticConfig, generate_dataset
    from brainseg_utils.models.sam.backends import build_backend
    from brainseg_utils.models.sam.decoder import SamDecoderModel
    from brainseg_utils.models.unet import UNet

    root = generate_dataset(folder / "data", SyntheticConfig(cases=2, seed=0, depth=SYNTHETIC_DEPTH), progress=False)
    examples = write_examples(discover_cases(root), folder / "examples", n=1)
    torch.manual_seed(0)
    lite = build_backend("litemedsam")
    dec = SamDecoderModel(lite, "box", 128).eval()
    return Predictor(UNet(base_channels=8), 128, dec, None, lite, "cpu", "synthetic (untrained models)"), examples


def from_run(run: str):
    from brainseg_utils.app.examples import make_examples
    from brainseg_utils.app.predictor import predictor_from_run

    return predictor_from_run(run), make_examples(run)


def _tumour_fractions(truth_path: str, z: int) -> tuple[float, float, float, float]:
    """The ground truth's box on the shown slice, widened by 3 pixels, as fractions of the view."""
    sl = np.rot90(load_truth(truth_path)[:, :, z])
    ys, xs = np.nonzero(sl)
    h, w = sl.shape
    if not len(xs):
        return 0.35, 0.35, 0.65, 0.65
    return (
        max(0, xs.min() - 3) / w,
        max(0, ys.min() - 3) / h,
        min(w - 1, xs.max() + 4) / w,
        min(h - 1, ys.max() + 4) / h,
    )


def render(url: str, examples: list[list], out: Path, width: int, height: int, bad_file: Path) -> list[Path]:
    """Drive the page through its states; returns the screenshots written."""
    from selenium.webdriver.common.by import By

    vol, z, truth = next(r for r in examples if r[1] is not None)
    driver = B.chrome(width, height)
    shots = []

    def shot(name, full=False):
        shots.append(out / f"{name}.png")
        B.screenshot(driver, shots[-1], full)

    try:
        wait = B.open_page(driver, url)
        shot("01_start")
        B.pick_example(driver, wait, Path(vol).name)
        shot("02_example_selected")
        fx0, fy0, fx1, fy1 = _tumour_fractions(truth, z) if truth else (0.35, 0.35, 0.65, 0.65)
        B.click_view(driver, fx0, fy0)
        wait.until(lambda d: B.box_value(d).endswith(";"))
        B.click_view(driver, fx1, fy1)
        wait.until(lambda d: B.box_value(d).count(",") == 3)
        shot("03_box_drawn")
        driver.find_element(By.XPATH, "//label[normalize-space()='Box you draw (two clicks on the slice)']").click()
        B.segment(driver, wait)
        shot("04_segmented", full=True)
        B.segment(driver, wait, whole_volume=True)
        shot("05_whole_volume", full=True)
        wait = B.open_page(driver, url)  # a fresh page: its file field takes an upload
        B.find(driver, "#upload input[type=file]").send_keys(str(bad_file))
        wait.until(lambda d: "Not shown:" in B.text(d, "#info"))
        shot("06_error", full=True)
    finally:
        driver.quit()
    return shots


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="a run folder (OUTPUT_DIR) with trained checkpoints; default: synthetic")
    ap.add_argument("--out", default="outputs/render/demo", help="where the PNGs go")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=800)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="brainseg-render-"))
    predictor, examples = from_run(args.run) if args.run else synthetic(work)
    demo = build_demo(predictor, examples, work / "demo")
    folders = sorted({str(Path(r[0]).parent) for r in examples})
    _, url, _ = demo.launch(
        prevent_thread_lock=True, inline=False, share=False, quiet=True, server_name="127.0.0.1", allowed_paths=folders
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bad = work / "not_an_image.png"
    bad.write_text("definitely not a picture" * 30)
    try:
        for p in render(url, examples, out, args.width, args.height, bad):
            print(p)
    finally:
        demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
