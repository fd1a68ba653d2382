"""Gradio demo: U-Net and SAM side by side on an uploaded slice or NIfTI volume.

``build_demo(predictor, examples)`` returns a ``gr.Blocks``; ``predictor_from_run(output_dir)``
loads the trained checkpoints of a run. One stateless endpoint, ``/segment``
(file, slice index, box "x0,y0,x1,y1" or "", prompt), serves the page and API clients alike.

Uploads are validated and loaded by ``upload.py`` (bounded memory, a byte-bounded cache); every
failure is a ``gr.Error`` with a plain message and the server keeps serving. Results (overlays,
masks) go out as uniquely named files, so concurrent users never receive a file that another
request is rewriting. The queue holds ``QUEUE_SIZE`` waiting requests; beyond that a user gets
Gradio's "queue is full" message.
"""

import os
import tempfile
import time
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from brainseg_utils.app.upload import IMAGE_EXTS, MAX_UPLOAD_BYTES, Upload, UploadError, cached_upload
from brainseg_utils.data.brats import discover_cases
from brainseg_utils.data.slices import box_to_cache, resize_slice
from brainseg_utils.data.volumes import best_slice, normalise_volume, save_mask
from brainseg_utils.evaluation.inference import load_sam_decoder, load_unet, to_native
from brainseg_utils.models.sam.backends import PROMPTS, mask_to_box
from brainseg_utils.models.sam.discovery import backend_for_decoder
from brainseg_utils.runtime.checkpoints import load_checkpoint, resolve_device
from brainseg_utils.runtime.env import hosted, missing_hint
from brainseg_utils.runtime.paths import RunDir
from brainseg_utils.workflow.prepare import ensure_run_data, restore_previous, run_split

REQUEST_PREFIX = "request-"  # per-request result folders under the demo's workdir
QUEUE_SIZE = 16  # requests waiting at most; more get Gradio's "queue is full" error


SLIDER_MAX_BEFORE_UPLOAD = 154  # a BraTS volume's last slice; an upload sets the slider to its own depth


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


# ----------------------------------------------------------------------------- prediction
class Predictor:
    """U-Net + optional SAM (a box-prompt decoder and/or a no-prompt decoder) on one 2-D slice."""

    def __init__(
        self, unet, img_size: int, sam_box=None, sam_none=None, backend=None, device="cpu", dataset: str = "synthetic"
    ):
        if unet.config.get("in_channels", 1) != 1:
            raise ValueError(
                "the demo runs single-channel (FLAIR) U-Nets; this checkpoint expects "
                f"{unet.config['in_channels']} channels"
            )
        self.unet, self.img_size, self.sam_box, self.sam_none = unet.eval(), img_size, sam_box, sam_none
        self.backend, self.device, self.dataset = backend, torch.device(device), dataset

    @torch.no_grad()
    def __call__(self, sl: np.ndarray, box: np.ndarray | None = None, prompt: str = "unet_box") -> dict:
        """``sl`` float32 (H, W) in [0, 1]. Returns bool masks (H, W), latencies (ms) and the box used."""
        if prompt not in PROMPTS:
            raise UploadError(f"prompt must be one of {PROMPTS}, got {prompt!r}")
        h, w = sl.shape
        img, _ = resize_slice(sl[None].astype(np.float32), np.zeros((h, w), np.uint8), self.img_size)
        x = torch.from_numpy(img[None]).to(self.device)
        t0 = time.perf_counter()
        logits = self.unet(x)[:, 0].cpu()
        unet_ms = (time.perf_counter() - t0) * 1000
        unet_mask = to_native(logits, h, w)[0]
        out = {"unet": unet_mask, "unet_ms": unet_ms, "sam": None, "sam_ms": None, "box": None, "sam_note": ""}
        if self.backend is None:
            out["sam_note"] = "no SAM decoder in this run"
            return out
        if prompt == "unet_box":
            box = mask_to_box(unet_mask)
        elif prompt == "none":
            box = None
        if prompt != "none" and box is None:
            out["sam"], out["sam_ms"] = np.zeros((h, w), bool), 0.0
            out["sam_note"] = "no box (the U-Net found nothing)" if prompt == "unet_box" else "draw a box first"
            return out
        dec = self.sam_box if box is not None else self.sam_none
        if dec is None:
            out["sam_note"] = f"this run has no SAM decoder for prompt {prompt!r}"
            return out
        t0 = time.perf_counter()
        emb = self.backend.encode(x)
        # slice frame -> padded square -> cache size (the geometry resize_slice applied to the image)
        bx = None if box is None else torch.from_numpy(box_to_cache(box, h, w, self.img_size))[None].to(self.device)
        sam_logits = dec.low_res_logits(emb, bx)[:, 0].cpu()  # 256 x 256, straight to the native grid
        out["sam_ms"] = (time.perf_counter() - t0) * 1000
        out["sam"], out["box"] = to_native(sam_logits, h, w)[0], box
        return out


def overlay(sl: np.ndarray, mask: np.ndarray | None, colour=(255, 80, 30), box=None) -> np.ndarray:
    """uint8 RGB (H, W, 3) of the slice with the mask blended in and the box outlined."""
    grey = (np.clip(sl, 0, 1) * 255).astype(np.uint8)
    rgb = np.stack([grey] * 3, -1).astype(np.float32)
    if mask is not None and mask.any():
        rgb[mask] = 0.55 * rgb[mask] + 0.45 * np.array(colour, np.float32)
    if box is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        rgb[y0, x0 : x1 + 1] = rgb[y1, x0 : x1 + 1] = (255, 255, 0)
        rgb[y0 : y1 + 1, x0] = rgb[y0 : y1 + 1, x1] = (255, 255, 0)
    return rgb.astype(np.uint8)


def _token() -> str:
    return uuid.uuid4().hex[:8]


def _save_png(arr: np.ndarray, folder: Path, name: str) -> str:
    """Write ``arr`` (uint8 (H, W) or (H, W, 3)) to a new, uniquely named PNG and return its path.

    Results go out as unique files, never as arrays: Gradio caches an array output under a name derived
    from its content and rewrites that file in place, so identical results for two users would be
    rewritten while the first is still being downloaded (empty or cut images)."""
    from PIL import Image

    path = folder / f"{name}_{_token()}.png"
    Image.fromarray(arr).save(path)
    return str(path)


def _save_masks(up: Upload, z: int, masks: dict[str, np.ndarray], folder: Path) -> list[str]:
    from PIL import Image

    paths = []
    stem = Path(up.name).name.replace(".nii.gz", "").rsplit(".", 1)[0]
    token = _token()  # unique names: see _save_png
    for name, mask in masks.items():
        if mask is None:
            continue
        png = folder / f"{stem}_z{z}_{name}_mask_{token}.png"
        Image.fromarray(mask.astype(np.uint8) * 255).save(png)
        paths.append(str(png))
        if up.kind == "nifti":
            vol = np.zeros(up.volume.shape, np.uint8)
            vol[:, :, z] = mask
            paths.append(str(save_mask(vol, up.affine, up.header, folder / f"{stem}_{name}_mask_{token}.nii.gz")))
    return paths


# The display convention of the rest of the project: volume[:, :, z] rotated so anterior is up.
# Uploaded 2-D images are shown as they are.
def display_slice(up: Upload, z: int) -> np.ndarray:
    sl = up.volume[:, :, z]
    return np.rot90(sl) if up.kind == "nifti" else sl


def segment(predictor: Predictor, path: str, z: int, box_text: str, prompt: str, workdir: Path) -> dict:
    """The whole request: validate + load, predict, overlays, mask files. Raises ``UploadError``."""
    if not path:
        raise UploadError("upload an image (PNG/JPG/TIFF) or a NIfTI volume first")
    up = cached_upload(path)
    depth = up.volume.shape[2]
    z = int(z)
    if not 0 <= z < depth:
        raise UploadError(f"slice {z} is outside the volume (0 to {depth - 1})")
    sl = display_slice(up, z)
    box = parse_box(box_text, *sl.shape)
    res = predictor(sl, box, prompt)
    out_dir = Path(tempfile.mkdtemp(prefix=REQUEST_PREFIX, dir=workdir))
    masks = {"unet": res["unet"], "sam": res["sam"]}
    files = _save_masks(
        up, z, {k: (np.rot90(v, -1) if up.kind == "nifti" and v is not None else v) for k, v in masks.items()}, out_dir
    )
    px = {k: int(v.sum()) for k, v in masks.items() if v is not None}
    unet_ov = overlay(sl, res["unet"], (255, 80, 30), res["box"] if prompt == "unet_box" else None)
    sam_ov = overlay(sl, res["sam"], (30, 160, 255), res["box"])
    return {
        "unet_overlay": unet_ov,
        "sam_overlay": sam_ov,
        "unet_overlay_png": _save_png(unet_ov, out_dir, "unet_overlay"),
        "sam_overlay_png": _save_png(sam_ov, out_dir, "sam_overlay"),
        "info": px,
        "res": res,
        "files": files,
        "z": z,
        "depth": depth,
    }


def _prune(workdir: Path, max_age_s: float = 600.0) -> None:
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


# ----------------------------------------------------------------------------- the app
def build_demo(predictor: Predictor, examples: list[list] | None = None, workdir: str | os.PathLike | None = None):
    """The Gradio Blocks app (Gradio 6 API). ``examples``: rows of [file path, slice index]."""
    import gradio as gr

    workdir = Path(workdir or tempfile.mkdtemp(prefix="brainseg-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)

    def _view(up, z):
        folder = Path(tempfile.mkdtemp(prefix=REQUEST_PREFIX, dir=workdir))
        return _save_png(overlay(display_slice(up, z), None), folder, "slice")

    def on_file(path):
        if not path:
            return gr.update(maximum=SLIDER_MAX_BEFORE_UPLOAD, value=0), None, ""
        try:
            up = cached_upload(path)
        except UploadError as exc:
            raise gr.Error(str(exc)) from None
        z, depth = start_slice(up.volume), up.volume.shape[2]
        # a slider needs maximum > minimum: a 2-D image gets a fixed slider at 0
        slider = gr.update(maximum=max(1, depth - 1), value=z, interactive=depth > 1)
        return slider, _view(up, z), ""

    def on_slice(path, z):
        if not path:
            return None
        try:
            up = cached_upload(path)
            return _view(up, min(int(z), up.volume.shape[2] - 1))
        except UploadError as exc:
            raise gr.Error(str(exc)) from None

    def on_click(box_text, evt: gr.SelectData):
        x, y = evt.index[0], evt.index[1]
        pts = [p for p in (box_text or "").split(";") if p] if box_text and ";" in (box_text or "") else []
        if box_text and ";" not in box_text and box_text.count(",") == 3:
            pts = []  # a finished box: start a new one
        if not pts:
            return f"{x},{y};"
        x0, y0 = (float(v) for v in pts[0].split(","))
        return f"{min(x0, x):.0f},{min(y0, y):.0f},{max(x0, x):.0f},{max(y0, y):.0f}"

    def run(path, z, box_text, prompt):
        try:
            if box_text and box_text.endswith(";"):
                raise UploadError("click a second corner to finish the box (or clear it)")
            _prune(workdir)
            out = segment(predictor, path, z, box_text, prompt, workdir)
        except UploadError as exc:
            raise gr.Error(str(exc)) from None
        r = out["res"]
        lines = [
            f"**slice {out['z']} of {out['depth']}** · data the models were trained on: {predictor.dataset}",
            f"- U-Net: {out['info']['unet']} px, {r['unet_ms']:.0f} ms",
        ]
        if r["sam"] is not None:
            lines.append(
                f"- SAM ({prompt}): {out['info']['sam']} px, {r['sam_ms']:.0f} ms (encoder + decoder)"
                + (f" · box {', '.join(f'{v:.0f}' for v in r['box'])}" if r["box"] is not None else "")
            )
        if r["sam_note"]:
            lines.append(f"- SAM: {r['sam_note']}")
        return out["unet_overlay_png"], out["sam_overlay_png"], "\n".join(lines), out["files"]

    with gr.Blocks(title="brainseg demo: U-Net vs SAM") as demo:
        gr.Markdown(
            "# Brain-tumour segmentation: U-Net vs SAM\nUpload a FLAIR slice (PNG/JPG/TIFF, 8- or "
            "16-bit, grey or RGB) or a NIfTI volume (`.nii`, `.nii.gz`). For a box prompt, click two "
            "corners on the slice, or let the U-Net's prediction supply the box. "
            f"Models trained on **{predictor.dataset}** data; not for clinical use."
        )
        with gr.Row():
            with gr.Column():
                file = gr.File(label="image or NIfTI volume", type="filepath", file_types=[*IMAGE_EXTS, ".nii", ".gz"])
                z = gr.Slider(0, SLIDER_MAX_BEFORE_UPLOAD, value=0, step=1, label="slice")
                prompt = gr.Radio(
                    list(PROMPTS),
                    value="unet_box",
                    label="SAM prompt",
                    info="box: your two clicks; unet_box: the U-Net's box; none: no prompt",
                )
                box = gr.Textbox(label="box x0,y0,x1,y1 (pixels; filled by two clicks)", value="")
                with gr.Row():
                    clear = gr.Button("clear box")
                    go = gr.Button("Segment", variant="primary")
            view = gr.Image(label="slice (click two corners for a box)", type="numpy", interactive=False)
        with gr.Row():
            out_unet = gr.Image(label="U-Net", type="numpy")
            out_sam = gr.Image(label="SAM", type="numpy")
        info = gr.Markdown()
        masks = gr.File(label="masks (PNG; NIfTI for volumes)", file_count="multiple")
        if examples:
            gr.Examples(examples=examples, inputs=[file, z], label="test-split examples")
        file.change(on_file, [file], [z, view, box], api_visibility="private")
        z.release(on_slice, [file, z], [view], api_visibility="private")
        view.select(on_click, [box], [box], api_visibility="private")
        clear.click(lambda: "", None, [box], api_visibility="private")
        go.click(run, [file, z, box, prompt], [out_unet, out_sam, info, masks], api_name="segment")
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    demo.brainseg_workdir = workdir
    return demo


def launch_options(share: bool = False, auth=None) -> dict:
    """``share`` and ``auth`` for ``demo.launch``: ``share=True`` forces a public link; otherwise ``share=None``
    leaves Gradio's platform behaviour (local: no link, inline in Jupyter; Colab / Kaggle notebooks: Gradio
    makes a public link itself, the only way the inline frame works on Kaggle, whose iframe cannot reach
    127.0.0.1). A public link never goes out without auth: without ``auth`` a user "brainseg" with a random
    password is created and printed (anyone with the link could otherwise use the app and upload files)."""

    public = bool(share) or hosted()
    if public and not auth:
        import secrets

        auth = ("brainseg", secrets.token_urlsafe(9))
        print(f"public Gradio link: log in as user {auth[0]!r}, password {auth[1]!r} (set AUTH='user:password')")
    return {"share": True if share else None, "auth": auth}


def launch(demo, share: bool = False, auth=None, **kwargs):
    """Launch with upload limits and ``launch_options``' link and auth policy."""
    allowed = [str(p) for p in kwargs.pop("allowed_paths", [])]
    opts = launch_options(share, auth)
    return demo.launch(**opts, max_file_size=MAX_UPLOAD_BYTES, allowed_paths=allowed, **kwargs)


def predictor_from_run(
    output_dir: str | os.PathLike = "outputs", device: str = "auto", sam_checkpoint: str | None = None
) -> Predictor:
    """A Predictor from a run's ``unet/best.pt`` and (if present) its SAM decoders.

    ``sam_checkpoint``: ``SAM_CHECKPOINT`` (a path or ``vit_b=/a.pth,...``); weights not given are searched
    for (``sam_discovery``)."""

    run = RunDir(output_dir)
    restore_previous(run)  # Kaggle: checkpoints of a previous run attached as input (no-op elsewhere)
    dev = resolve_device(device)
    unet_path = run.unet_best
    if not unet_path.exists():
        hint = missing_hint("unet/best.pt")
        raise FileNotFoundError(f"{unet_path} not found: train the U-Net first (notebook 02 or run_all.sh); {hint}")
    unet, ckpt = load_unet(unet_path, device=dev)
    img_size = int(ckpt["meta"].get("img_size", 128))
    dataset = ckpt["meta"].get("dataset", "unknown")
    sam_box = sam_none = backend = None
    decs = list(run.sam_checkpoints().values())
    if decs:
        first_ckpt = load_checkpoint(decs[0], expect_arch="sam_decoder")
        first = first_ckpt["config"]["model"]["backend"]
        trained = first_ckpt.get("meta", {}).get("checkpoint_sha256")
        backend = backend_for_decoder(first, trained, sam_checkpoint or "").to(dev)
        for p in decs:
            if load_checkpoint(p, expect_arch="sam_decoder")["config"]["model"]["backend"] != first:
                continue
            dec, _ = load_sam_decoder(p, backend, device=dev)
            if dec.prompt == "box":
                sam_box = dec
            else:
                sam_none = dec
    return Predictor(unet, img_size, sam_box, sam_none, backend, dev, dataset)


def make_examples(output_dir: str | os.PathLike = "outputs", n: int = 2) -> list[list]:
    """[file, slice] rows from the test split: FLAIR PNG slices and one NIfTI volume, under <run>/demo/examples.

    The split is read with its hash checked against the one notebook 01 recorded (``prepare.run_split``)."""
    from PIL import Image

    run = RunDir(output_dir)
    split, info = run_split(run)
    if not Path(info["root"]).is_dir():  # a fresh VM: synthetic volumes went with /kaggle/temp or the VM
        ensure_run_data(run)
        split, info = run_split(run)
    cases = {c.case_id: c for c in discover_cases(info["root"])}
    folder = run.demo_examples
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for cid in split["test"][:n]:
        case = cases[cid]
        seg = np.asarray(nib.load(case.seg).dataobj)
        z = best_slice(seg)
        flair = normalise_volume(np.asarray(nib.load(case.images["flair"]).dataobj))
        png = folder / f"{cid}_flair_z{z}.png"
        if not png.exists():
            Image.fromarray((np.rot90(flair[:, :, z]) * 255).astype(np.uint8)).save(png)
        rows.append([str(png), 0])
    if split["test"]:
        case = cases[split["test"][0]]
        nii = folder / f"{case.case_id}_flair.nii.gz"
        if not nii.exists():
            img = nib.load(case.images["flair"])
            nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header), nii)
        seg = np.asarray(nib.load(case.seg).dataobj)
        rows.append([str(nii), best_slice(seg)])
    return rows
