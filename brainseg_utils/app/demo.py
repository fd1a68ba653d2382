"""Gradio demo: U-Net and SAM side by side on an uploaded slice or NIfTI volume (the page and its wiring).

``build_demo(predictor, examples)`` returns a ``gr.Blocks``; ``predictor.predictor_from_run(output_dir)``
loads the trained checkpoints of a run and ``examples.make_examples`` picks inputs from its test split.
One stateless endpoint, ``/segment`` (file, slice index, box "x0,y0,x1,y1" or "", prompt), serves the page
and API clients alike; its work is ``request.segment``.

Uploads are validated and loaded by ``upload.py`` (bounded memory, a byte-bounded cache). A refused
upload or slice on the page is a warning and a line in the info field (the file field is emptied; slider,
box and view stay usable); a refused ``/segment`` request is a ``gr.Error`` with a plain message. Either
way the server logs one line, no traceback, and keeps serving. Choosing another file or example, or
moving the slider, clears the previous results. Slices are numbered from 0, as in the file, everywhere
(``SLICE_CONVENTION``); a 2-D image has no slice number. The queue holds ``QUEUE_SIZE`` waiting requests;
beyond that a user gets Gradio's "queue is full" message.
"""

import logging
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
from brainseg_utils.runtime.env import hosted

QUEUE_SIZE = 16  # requests waiting at most; more get Gradio's "queue is full" error


SLIDER_MAX_BEFORE_UPLOAD = 154  # a BraTS volume's last slice; an upload sets the slider to its own depth
SLICE_CONVENTION = "0-based index, as in the file"  # slider, info line, examples, API and mask file names
PROMPT_LABELS = {  # the page's words for the prompt modes (``PROMPTS``: the API and the code keep the identifiers)
    "unet_box": "Box from the U-Net's prediction",
    "box": "Box you draw (two clicks on the slice)",
    "none": "No prompt (SAM decoder trained without prompts)",
}
CLEARED = (None, None, "", None)  # U-Net panel, SAM panel, info line, download files: no stale results

log = logging.getLogger(__name__)


def slice_text(name: str, z: int, depth: int) -> str:
    """Where the shown slice lies, in the page's one convention; a 2-D image has no slice number."""
    if depth == 1:
        return f"{name} (2-D image)"
    return f"{name}, slice {z} ({SLICE_CONVENTION}: 0 to {depth - 1})"


def example_label(path: str, z: int | None) -> str:
    """An example's row in the table: its file name, and its slice for a volume."""
    name = Path(path).name
    return name if z is None else f"{name}, slice {z} ({SLICE_CONVENTION})"


def _refused(exc: Exception, what: str) -> str:
    """A handled error: one log line (no traceback), a warning toast; returns the info line's text."""
    import gradio as gr

    log.warning("%s refused: %s", what, exc)
    gr.Warning(str(exc))
    return f"**Not shown:** {exc}"


def _slider(depth: int | None = None, z: int = 0):
    """The slider for a volume of ``depth`` slices at ``z``; hidden for a 2-D image; reset for no file."""
    import gradio as gr

    if depth is None:
        return gr.update(maximum=SLIDER_MAX_BEFORE_UPLOAD, value=0, interactive=True, visible=True)
    # a slider needs maximum > minimum: a 2-D image gets a hidden, fixed slider at 0
    return gr.update(maximum=max(1, depth - 1), value=z, interactive=depth > 1, visible=depth > 1)


def _view_callbacks(workdir: Path):
    """(show, on_slice): a newly chosen file at its start (or the example's) slice / the slider's slice.

    Both clear the results of the previous image or slice (``CLEARED``); a bad upload is refused with a
    warning and the file field emptied, and the other components stay usable."""
    import gradio as gr

    def _view(up, z):
        folder = Path(tempfile.mkdtemp(prefix=REQUEST_PREFIX, dir=workdir))
        return save_png(overlay(display_slice(up, z), None), folder, "slice")

    def show(path, z=None):
        """Outputs: file, slider, view, box, *CLEARED. ``z`` None: the brightest slice (``start_slice``)."""
        if not path:
            return gr.update(), _slider(), None, "", *CLEARED
        try:
            up = cached_upload(path)
        except UploadError as exc:
            return None, _slider(), None, "", None, None, _refused(exc, "upload"), None
        depth = up.volume.shape[2]
        z = start_slice(up.volume) if z is None or depth == 1 else min(max(int(z), 0), depth - 1)
        info = f"{slice_text(up.name, z, depth)} · press Segment"
        return gr.update(), _slider(depth, z), _view(up, z), "", None, None, info, None

    def on_slice(path, z):
        """Outputs: view, *CLEARED."""
        if not path:
            return None, *CLEARED
        try:
            up = cached_upload(path)
            z = min(int(z), up.volume.shape[2] - 1)
            return _view(up, z), None, None, f"{slice_text(up.name, z, up.volume.shape[2])} · press Segment", None
        except UploadError as exc:
            return gr.update(), None, None, _refused(exc, "slice"), None

    return show, on_slice


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
    """The Markdown under the results: file and slice, pixels and latency of each model, SAM's prompt and box."""
    r = out["res"]
    lines = [
        f"**{slice_text(out['name'], out['z'], out['depth'])}** · data the models were trained on: {dataset}",
        f"- U-Net: {out['info']['unet']} px, {r['unet_ms']:.0f} ms",
    ]
    if r["sam"] is not None:
        lines.append(
            f"- SAM, prompt {PROMPT_LABELS[prompt]!r}: {out['info']['sam']} px, {r['sam_ms']:.0f} ms "
            "(encoder + decoder)"
            + (f" · box {', '.join(f'{v:.0f}' for v in r['box'])}" if r["box"] is not None else "")
        )
    if r["sam_note"]:
        lines.append(f"- SAM: {r['sam_note']}")
    return "\n".join(lines)


def _segment_callback(predictor: Predictor, workdir: Path):
    """run: the ``/segment`` endpoint (its parameter names are the API's). A refused request is a ``gr.Error``
    for the client, one log line (no traceback) on the server."""
    import gradio as gr

    def run(path, z, box_text, prompt):
        try:
            if box_text and box_text.endswith(";"):
                raise UploadError("click a second corner to finish the box (or clear it)")
            prune_requests(workdir)
            out = segment(predictor, path, z, box_text, prompt, workdir)
        except UploadError as exc:
            log.warning("segment refused: %s", exc)
            raise gr.Error(str(exc), print_exception=False) from None
        return out["unet_overlay_png"], out["sam_overlay_png"], _summary(out, prompt, predictor.dataset), out["files"]

    return run


def _layout(dataset: str) -> SimpleNamespace:
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
            ui.file = gr.File(
                label="image or NIfTI volume",
                type="filepath",
                file_types=[*IMAGE_EXTS, ".nii", ".gz"],
                elem_id="upload",
            )
            ui.z = gr.Slider(
                0, SLIDER_MAX_BEFORE_UPLOAD, value=0, step=1, label=f"slice ({SLICE_CONVENTION})", elem_id="slice"
            )
            ui.prompt = gr.Radio(
                [(label, key) for key, label in PROMPT_LABELS.items()],
                value="unet_box",
                label="SAM prompt",
            )
            ui.box = gr.Textbox(label="box x0,y0,x1,y1 (pixels; filled by two clicks)", value="", elem_id="box")
            with gr.Row():
                ui.clear = gr.Button("clear box")
                ui.go = gr.Button("Segment", variant="primary")
        ui.view = gr.Image(label="slice (click two corners for a box)", type="numpy", interactive=False, elem_id="view")
    with gr.Row():
        ui.out_unet = gr.Image(label="U-Net", type="numpy", elem_id="unet")
        ui.out_sam = gr.Image(label="SAM", type="numpy", elem_id="sam")
    ui.info = gr.Markdown(elem_id="info")
    ui.masks = gr.File(label="masks (PNG; NIfTI for volumes)", file_count="multiple", elem_id="masks")
    return ui


def build_demo(predictor: Predictor, examples: list[list] | None = None, workdir: str | os.PathLike | None = None):
    """The Gradio Blocks app (Gradio 6 API). ``examples``: rows of [file path, slice index (0-based, as in the
    file) or None for a 2-D image]; the example's slice is the one shown."""
    import gradio as gr

    workdir = Path(workdir or tempfile.mkdtemp(prefix="brainseg-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    show, on_slice = _view_callbacks(workdir)
    on_click, run = _click_callback(), _segment_callback(predictor, workdir)
    with gr.Blocks(title="brainseg demo: U-Net vs SAM") as demo:
        ui = _layout(predictor.dataset)
        shown = [ui.file, ui.z, ui.view, ui.box, ui.out_unet, ui.out_sam, ui.info, ui.masks]
        # .upload / .clear, not .change: an example sets the file too, and its own slice must win (below)
        ui.file.upload(show, [ui.file], shown, api_visibility="private")
        ui.file.clear(show, [ui.file], shown, api_visibility="private")
        ui.z.release(
            on_slice, [ui.file, ui.z], [ui.view, ui.out_unet, ui.out_sam, ui.info, ui.masks], api_visibility="private"
        )
        ui.view.select(on_click, [ui.box], [ui.box], api_visibility="private")
        ui.clear.click(lambda: "", None, [ui.box], api_visibility="private")
        outputs = [ui.out_unet, ui.out_sam, ui.info, ui.masks]
        ui.go.click(run, [ui.file, ui.z, ui.box, ui.prompt], outputs, api_name="segment")
        if examples:  # last on the page; a click loads the file and the example's slice, then shows them
            gr.Examples(
                examples=examples,
                inputs=[ui.file, ui.z],
                outputs=shown,
                fn=show,
                run_on_click=True,
                cache_examples=False,
                label="test-split examples",
                example_labels=[example_label(*row) for row in examples],  # not the slider's 0 for a 2-D image
                elem_id="examples",
                api_visibility="private",
            )
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
