"""Gradio demo: U-Net and SAM side by side on an uploaded slice or NIfTI volume (the page and its wiring).

``build_demo(predictor, examples)`` returns a ``gr.Blocks``; ``predictor.predictor_from_run(output_dir)``
loads the trained checkpoints of a run and ``examples.make_examples`` picks inputs from its test split.
One stateless endpoint, ``/segment`` (file, slice index, box "x0,y0,x1,y1" or "", prompt), serves the page
and API clients alike; its work is ``request.segment``.

Uploads are validated and loaded by ``upload.py`` (bounded memory, a byte-bounded cache); every
failure is a ``gr.Error`` with a plain message and the server keeps serving. The queue holds
``QUEUE_SIZE`` waiting requests; beyond that a user gets Gradio's "queue is full" message.
"""

import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

from brainseg_utils.app.predictor import Predictor
from brainseg_utils.app.request import (
    REQUEST_PREFIX,
    display_slice,
    overlay,
    prune_requests,
    save_png,
    segment,
    start_slice,
)
from brainseg_utils.app.upload import IMAGE_EXTS, MAX_UPLOAD_BYTES, UploadError, cached_upload
from brainseg_utils.models.sam.prompts import PROMPTS
from brainseg_utils.runtime.env import hosted

QUEUE_SIZE = 16  # requests waiting at most; more get Gradio's "queue is full" error


SLIDER_MAX_BEFORE_UPLOAD = 154  # a BraTS volume's last slice; an upload sets the slider to its own depth


def _view_callbacks(workdir: Path):
    """(on_file, on_slice): show the uploaded file's start slice / the slice the slider picked."""
    import gradio as gr

    def _view(up, z):
        folder = Path(tempfile.mkdtemp(prefix=REQUEST_PREFIX, dir=workdir))
        return save_png(overlay(display_slice(up, z), None), folder, "slice")

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

    return on_file, on_slice


def _click_callback():
    """on_click: two clicks on the slice make the box text ("x0,y;" after the first, "x0,y0,x1,y1" after)."""
    import gradio as gr

    def on_click(box_text, evt: gr.SelectData):
        x, y = evt.index[0], evt.index[1]
        pts = [p for p in (box_text or "").split(";") if p] if box_text and ";" in (box_text or "") else []
        if box_text and ";" not in box_text and box_text.count(",") == 3:
            pts = []  # a finished box: start a new one
        if not pts:
            return f"{x},{y};"
        x0, y0 = (float(v) for v in pts[0].split(","))
        return f"{min(x0, x):.0f},{min(y0, y):.0f},{max(x0, x):.0f},{max(y0, y):.0f}"

    return on_click


def _summary(out: dict, prompt: str, dataset: str) -> str:
    """The Markdown under the results: slice, pixels and latency of each model, SAM's box or note."""
    r = out["res"]
    lines = [
        f"**slice {out['z']} of {out['depth']}** · data the models were trained on: {dataset}",
        f"- U-Net: {out['info']['unet']} px, {r['unet_ms']:.0f} ms",
    ]
    if r["sam"] is not None:
        lines.append(
            f"- SAM ({prompt}): {out['info']['sam']} px, {r['sam_ms']:.0f} ms (encoder + decoder)"
            + (f" · box {', '.join(f'{v:.0f}' for v in r['box'])}" if r["box"] is not None else "")
        )
    if r["sam_note"]:
        lines.append(f"- SAM: {r['sam_note']}")
    return "\n".join(lines)


def _segment_callback(predictor: Predictor, workdir: Path):
    """run: the ``/segment`` endpoint (its parameter names are the API's)."""
    import gradio as gr

    def run(path, z, box_text, prompt):
        try:
            if box_text and box_text.endswith(";"):
                raise UploadError("click a second corner to finish the box (or clear it)")
            prune_requests(workdir)
            out = segment(predictor, path, z, box_text, prompt, workdir)
        except UploadError as exc:
            raise gr.Error(str(exc)) from None
        return out["unet_overlay_png"], out["sam_overlay_png"], _summary(out, prompt, predictor.dataset), out["files"]

    return run


def _layout(dataset: str, examples: list[list] | None) -> SimpleNamespace:
    """The page's components, created inside the open ``gr.Blocks`` (creation order is the page order)."""
    import gradio as gr

    gr.Markdown(
        "# Brain-tumour segmentation: U-Net vs SAM\nUpload a FLAIR slice (PNG/JPG/TIFF, 8- or "
        "16-bit, grey or RGB) or a NIfTI volume (`.nii`, `.nii.gz`). For a box prompt, click two "
        "corners on the slice, or let the U-Net's prediction supply the box. "
        f"Models trained on **{dataset}** data; not for clinical use."
    )
    ui = SimpleNamespace()
    with gr.Row():
        with gr.Column():
            ui.file = gr.File(label="image or NIfTI volume", type="filepath", file_types=[*IMAGE_EXTS, ".nii", ".gz"])
            ui.z = gr.Slider(0, SLIDER_MAX_BEFORE_UPLOAD, value=0, step=1, label="slice")
            ui.prompt = gr.Radio(
                list(PROMPTS),
                value="unet_box",
                label="SAM prompt",
                info="box: your two clicks; unet_box: the U-Net's box; none: no prompt",
            )
            ui.box = gr.Textbox(label="box x0,y0,x1,y1 (pixels; filled by two clicks)", value="")
            with gr.Row():
                ui.clear = gr.Button("clear box")
                ui.go = gr.Button("Segment", variant="primary")
        ui.view = gr.Image(label="slice (click two corners for a box)", type="numpy", interactive=False)
    with gr.Row():
        ui.out_unet = gr.Image(label="U-Net", type="numpy")
        ui.out_sam = gr.Image(label="SAM", type="numpy")
    ui.info = gr.Markdown()
    ui.masks = gr.File(label="masks (PNG; NIfTI for volumes)", file_count="multiple")
    if examples:
        gr.Examples(examples=examples, inputs=[ui.file, ui.z], label="test-split examples")
    return ui


def build_demo(predictor: Predictor, examples: list[list] | None = None, workdir: str | os.PathLike | None = None):
    """The Gradio Blocks app (Gradio 6 API). ``examples``: rows of [file path, slice index]."""
    import gradio as gr

    workdir = Path(workdir or tempfile.mkdtemp(prefix="brainseg-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    on_file, on_slice = _view_callbacks(workdir)
    on_click, run = _click_callback(), _segment_callback(predictor, workdir)
    with gr.Blocks(title="brainseg demo: U-Net vs SAM") as demo:
        ui = _layout(predictor.dataset, examples)
        ui.file.change(on_file, [ui.file], [ui.z, ui.view, ui.box], api_visibility="private")
        ui.z.release(on_slice, [ui.file, ui.z], [ui.view], api_visibility="private")
        ui.view.select(on_click, [ui.box], [ui.box], api_visibility="private")
        ui.clear.click(lambda: "", None, [ui.box], api_visibility="private")
        outputs = [ui.out_unet, ui.out_sam, ui.info, ui.masks]
        ui.go.click(run, [ui.file, ui.z, ui.box, ui.prompt], outputs, api_name="segment")
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
