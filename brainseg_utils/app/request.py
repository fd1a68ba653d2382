"""One ``/segment`` request of the demo: load the upload, predict, draw overlays, write the result files.

``segment(predictor, path, z, box_text, prompt, workdir, truth)`` does the whole request and raises
``UploadError`` with a plain message on bad input. The models get the slice in the orientation they were trained
in (``predict_shown``); overlays are enlarged for the page (``display.py``), with the box and, for a test-split
example, the ground truth's contour, whose Dice per model comes back too. ``view_image`` draws the view: the
slice with the box being drawn. Results (overlays, masks) go out as uniquely named files in a new
``request-*`` folder under ``workdir``, so concurrent users never receive a file that another request is
rewriting; ``prune_requests`` drops old folders.
"""

import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from brainseg_utils.app.display import (
    box_from_model,
    box_to_model,
    display_factor,
    draw_box,
    draw_contour,
    draw_point,
    to_model_plane,
    upscale,
)
from brainseg_utils.app.predictor import Predictor
from brainseg_utils.app.upload import Upload, UploadError, cached_upload
from brainseg_utils.data.volumes import save_mask
from brainseg_utils.evaluation.metrics import dice

REQUEST_PREFIX = "request-"  # per-request result folders under the demo's workdir


def start_slice(volume: np.ndarray) -> int:
    """The slice with the most tumour-like signal: most voxels above the volume's 99th percentile of brain."""
    brain = volume > 0
    if volume.shape[2] == 1 or not brain.any():
        return 0
    thr = np.percentile(volume[brain], 99)
    return int((volume > thr).reshape(-1, volume.shape[2]).sum(0).argmax())


def parse_box(text: str, h: int, w: int) -> np.ndarray | None:
    """ "x0,y0,x1,y1" (pixels of the displayed slice) -> XYXY array; "" -> None."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        vals = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        raise UploadError(f"box must be four numbers x0,y0,x1,y1, got {text!r}") from None
    if len(vals) != 4:
        raise UploadError(f"box must be four numbers x0,y0,x1,y1, got {text!r}")
    x0, x1 = sorted((vals[0], vals[2]))
    y0, y1 = sorted((vals[1], vals[3]))
    if x1 < 0 or y1 < 0 or x0 > w - 1 or y0 > h - 1:
        raise UploadError(f"box {text} lies outside the {w} x {h} slice")
    return np.array([max(0, x0), max(0, y0), min(w - 1, x1), min(h - 1, y1)], np.float32)


def overlay(
    sl: np.ndarray, mask: np.ndarray | None, colour=(255, 80, 30), box=None, truth=None, k: int = 1
) -> np.ndarray:
    """uint8 RGB (H * k, W * k, 3): the slice (float (H, W) in [0, 1]) with ``mask`` blended in, enlarged k times
    (``display``: nearest neighbour), ``box`` (XYXY, slice pixels; or (K, 4) boxes) outlined in yellow, the truth
    ``truth`` (bool (H, W)) as a green contour."""
    grey = (np.clip(sl, 0, 1) * 255).astype(np.uint8)
    rgb = np.stack([grey] * 3, -1).astype(np.float32)
    if mask is not None and mask.any():
        rgb[mask] = 0.55 * rgb[mask] + 0.45 * np.array(colour, np.float32)
    rgb = upscale(rgb.astype(np.uint8), k)
    if truth is not None:
        draw_contour(rgb, truth, k)
    if box is not None:
        for b in np.asarray(box, np.float32).reshape(-1, 4):  # one box, or the cascade's one per component
            draw_box(rgb, b, k)
    return rgb


def parse_corner(text: str, h: int, w: int) -> tuple[int, int] | None:
    """The first corner of a box being drawn: "x,y;" (slice pixels) -> (x, y); anything else -> None."""
    text = (text or "").strip()
    if not text.endswith(";"):
        return None
    try:
        x, y = (int(float(v)) for v in text[:-1].split(","))
    except ValueError:
        raise UploadError(f"a first box corner is x,y; got {text!r}") from None
    if not (0 <= x < w and 0 <= y < h):
        raise UploadError(f"corner {x},{y} lies outside the {w} x {h} slice")
    return x, y


def view_image(sl: np.ndarray, box_text: str) -> np.ndarray:
    """The slice as the view shows it: enlarged (``display_factor``), with the box being drawn: its first
    corner ("x,y;") marked, or the whole box ("x0,y0,x1,y1") outlined. Raises ``UploadError`` on a bad box."""
    h, w = sl.shape
    k = display_factor(h, w)
    disp = overlay(sl, None, k=k)
    corner = parse_corner(box_text, h, w)
    if corner is not None:
        return draw_point(disp, *corner, k)
    box = parse_box(box_text, h, w)
    return disp if box is None else draw_box(disp, box, k)


def new_token() -> str:
    """8 hex digits that make a result file's name unique (see ``save_png``)."""
    return uuid.uuid4().hex[:8]


def save_png(arr: np.ndarray, folder: Path, name: str) -> str:
    """Write ``arr`` (uint8 (H, W) or (H, W, 3)) to a new, uniquely named PNG and return its path.

    Results go out as unique files, never as arrays: Gradio caches an array output under a name derived
    from its content and rewrites that file in place, so identical results for two users would be
    rewritten while the first is still being downloaded (empty or cut images)."""
    from PIL import Image

    path = folder / f"{name}_{new_token()}.png"
    Image.fromarray(arr).save(path)
    return str(path)


def _save_masks(up: Upload, z: int, masks: dict[str, np.ndarray], folder: Path) -> list[str]:
    from PIL import Image

    paths = []
    stem = Path(up.name).name.replace(".nii.gz", "").rsplit(".", 1)[0]
    token = new_token()  # unique names: see save_png
    where = f"_z{z}" if up.volume.shape[2] > 1 else ""  # 0-based slice index, as in the file; none for 2-D
    for name, mask in masks.items():
        if mask is None:
            continue
        png = folder / f"{stem}{where}_{name}_mask_{token}.png"
        Image.fromarray(mask.astype(np.uint8) * 255).save(png)
        paths.append(str(png))
        if up.kind == "nifti":  # the volume's grid, this slice only (the name says so; the others are 0)
            vol = np.zeros(up.volume.shape, np.uint8)
            vol[:, :, z] = mask
            nii = folder / f"{stem}{where}_one_slice_{name}_mask_{token}.nii.gz"
            paths.append(str(save_mask(vol, up.affine, up.header, nii)))
    return paths


# The display convention of the rest of the project: volume[:, :, z] rotated so anterior is up.
# Uploaded 2-D images are shown as they are.
def display_slice(up: Upload, z: int) -> np.ndarray:
    return display_plane(up.volume, up.kind, z)


def display_plane(vol: np.ndarray, kind: str, z: int) -> np.ndarray:
    """Slice z of an upload's (H, W, D) array (its volume, a mask or a ground truth) as the page shows it."""
    sl = vol[:, :, z]
    return np.rot90(sl) if kind == "nifti" else sl


def segment(
    predictor: Predictor, path: str, z: int | None, box_text: str, prompt: str, workdir: Path, truth=None
) -> dict:
    """The whole request: validate + load, predict, overlays, mask files. Raises ``UploadError``.

    ``z``: the slice, 0-based as in the file; None only for a 2-D image. ``truth``: bool (H, W, D), the
    ground truth of a test-split example in the upload's own layout (``examples.Truths``), or None: then
    its contour is drawn on both results and ``dice`` holds each model's Dice on this slice (both empty: 1)."""
    if not path:
        raise UploadError("upload an image (PNG/JPG/TIFF) or a NIfTI volume first")
    up = cached_upload(path)
    depth = up.volume.shape[2]
    if z is None and depth > 1:
        raise UploadError(f"{up.name} has {depth} slices: choose one (0-based index, 0 to {depth - 1})")
    z = 0 if z is None else int(z)  # None: a 2-D image (an example row without a slice)
    if not 0 <= z < depth:
        raise UploadError(f"slice {z} is outside the volume (0 to {depth - 1})")
    if corner_pending(box_text):
        raise UploadError("click a second corner to finish the box (or clear it)")
    sl = display_slice(up, z)
    box = parse_box(box_text, *sl.shape)
    stack = None if up.channels is None else np.moveaxis(up.channels[:, :, z, :], 2, 0)  # (C, H, W), file plane
    res = predict_shown(predictor, sl, box, prompt, stack)
    out_dir = Path(tempfile.mkdtemp(prefix=REQUEST_PREFIX, dir=workdir))
    masks = {"unet": res["unet"], "sam": res["sam"]}
    files = _save_masks(
        up, z, {k: (np.rot90(v, -1) if up.kind == "nifti" and v is not None else v) for k, v in masks.items()}, out_dir
    )
    px = {k: int(v.sum()) for k, v in masks.items() if v is not None}
    t = None if truth is None else display_plane(truth, up.kind, z)
    scores = {} if t is None else {k: dice(v, t) for k, v in masks.items() if v is not None}
    k = display_factor(*sl.shape)
    boxes = res["boxes"] if res.get("boxes") is not None else res["box"]
    unet_ov = overlay(sl, res["unet"], (255, 80, 30), boxes if prompt == "unet_box" else None, t, k)
    sam_ov = overlay(sl, res["sam"], (30, 160, 255), boxes, t, k)
    return {
        "unet_overlay": unet_ov,
        "sam_overlay": sam_ov,
        "unet_overlay_png": save_png(unet_ov, out_dir, "unet_overlay"),
        "sam_overlay_png": save_png(sam_ov, out_dir, "sam_overlay"),
        "info": px,
        "dice": scores,
        "truth_px": None if t is None else int(t.sum()),
        "res": res,
        "files": files,
        "z": z,
        "depth": depth,
        "name": up.name,
    }


def predict_shown(predictor: Predictor, sl: np.ndarray, box, prompt: str, stack: np.ndarray | None = None) -> dict:
    """``predictor`` on a slice as the page shows it: run in the orientation the models were trained in (the
    file's, ``display.to_model_plane``; a 2-D picture is taken to be shown that way too), masks and box
    returned in the shown frame. ``stack``: (C, H, W) every modality of this slice in the file's plane (a 4-D
    upload), given to the predictor instead of the shown slice."""
    h = sl.shape[0]
    x = to_model_plane(sl) if stack is None else stack
    res = predictor(np.ascontiguousarray(x), None if box is None else box_to_model(box, h), prompt)
    for key in ("unet", "sam"):
        if res[key] is not None:
            res[key] = np.ascontiguousarray(np.rot90(res[key]))
    if res["box"] is not None:
        res["box"] = box_from_model(res["box"], h)
    if res.get("boxes") is not None:
        res["boxes"] = np.array([box_from_model(b, h) for b in res["boxes"]], np.float32).reshape(-1, 4)
    return res


def corner_pending(box_text: str) -> bool:
    """True while a box is half drawn (one corner clicked: "x,y;")."""
    return bool(box_text) and box_text.strip().endswith(";")


def prune_requests(workdir: Path, max_age_s: float = 600.0) -> None:
    """Drop our request folders older than ``max_age_s`` (Gradio has copied their files to its own cache);
    nothing else in ``workdir`` (e.g. a run's demo/examples) is touched."""
    import shutil

    now = time.time()
    for d in workdir.glob(f"{REQUEST_PREFIX}*"):
        try:
            if d.is_dir() and now - d.stat().st_mtime > max_age_s:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass
