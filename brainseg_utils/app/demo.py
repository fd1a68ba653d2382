"""Gradio demo: U-Net and SAM side by side on an uploaded slice or NIfTI volume (the page and its wiring).

``build_demo(predictor, examples)`` returns a ``gr.Blocks``; ``predictor.predictor_from_run(output_dir)``
loads the trained checkpoints of a run and ``examples.make_examples`` picks inputs from its test split (with
their ground truth). Two stateless endpoints serve the page and API clients alike: ``/segment`` (file, slice
index, box "x0,y0,x1,y1" or "", prompt; ``request.segment``) and ``/segment_volume`` (file, slice to show;
``volume.segment_volume``). The handlers are ``callbacks.py``.

The slice is shown enlarged (``display.py``: a whole factor, at least ``display.DISPLAY_MIN_PX`` on the longer
side); two clicks draw a box on it, and the box text field stays as the typed alternative. Uploads are
validated and loaded by ``upload.py`` (bounded memory, a byte-bounded cache); one that does not look like a
brain MRI slice gets a notice (``plausibility.py``), not a refusal. A refused upload or slice on the page is a
warning and a line in the info field (the file field is emptied; slider, box and view stay usable); a refused
request is a ``gr.Error`` with a plain message. Either way the server logs one line, no traceback, and keeps
serving. Choosing another file or example, or moving the slider, clears the previous results. Slices are
numbered from 0, as in the file, everywhere (``SLICE_CONVENTION``); a 2-D image has no slice number. The
models are warmed up before the page serves (``Predictor.warm_up``), so the latencies shown are steady ones.
The queue holds ``QUEUE_SIZE`` waiting requests; beyond that a user gets Gradio's "queue is full" message.
"""

import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

from brainseg_utils.app.callbacks import (
    PANEL_TITLES,
    PROMPT_LABELS,
    SLICE_CONVENTION,
    SLIDER_MAX_BEFORE_UPLOAD,
    cleared,
    click_callback,
    retitle,
    segment_callback,
    view_callbacks,
    volume_callback,
)
from brainseg_utils.app.display import DISPLAY_MIN_PX
from brainseg_utils.app.examples import Truths
from brainseg_utils.app.predictor import Predictor
from brainseg_utils.app.upload import IMAGE_EXTS, MAX_UPLOAD_BYTES
from brainseg_utils.runtime.env import hosted

QUEUE_SIZE = 16  # requests waiting at most; more get Gradio's "queue is full" error
VIEW_HEIGHT_PX = 520  # the view's height on the page (the picture is at least DISPLAY_MIN_PX on its longer side)
__all__ = ["PROMPT_LABELS", "SLICE_CONVENTION", "SLIDER_MAX_BEFORE_UPLOAD", "build_demo", "cleared", "launch"]


def example_label(path: str, z: int | None, truth: str | None = None) -> str:
    """An example's row in the table: its file name, its slice for a volume, and whether it has a ground truth."""
    name = Path(path).name
    where = name if z is None else f"{name}, slice {z} ({SLICE_CONVENTION})"
    return where + (" · ground truth, Dice" if truth else "")


def _inputs(ui: SimpleNamespace, dataset: str) -> None:
    """The left column's inputs (created unrendered: the examples go above them)."""
    import gradio as gr

    ui.file = gr.File(
        label="image or NIfTI volume",
        type="filepath",
        file_types=[*IMAGE_EXTS, ".nii", ".gz"],
        elem_id="upload",
        height=110,
        render=False,
    )
    ui.z = gr.Slider(
        0, SLIDER_MAX_BEFORE_UPLOAD, value=0, step=1, label=f"slice ({SLICE_CONVENTION})", elem_id="slice", render=False
    )


def intro(dataset: str, modalities: tuple[str, ...] = ("flair",)) -> str:
    """The page's first lines: what to upload for this run's U-Net, and what its models were trained on."""
    if len(modalities) > 1:
        what = (
            f"upload one case's {', '.join(modalities)} stacked in that order as a 4-D NIfTI (X, Y, Z, "
            f"{len(modalities)}; `.nii`, `.nii.gz`: the Medical Segmentation Decathlon's brain-tumour layout); "
            "the slice shown is the first (FLAIR)"
        )
    else:
        what = "upload a FLAIR slice (PNG/JPG/TIFF) or a NIfTI volume (`.nii`, `.nii.gz`)"
    return (
        f"## Brain-tumour segmentation: U-Net vs SAM\nPick a test-split example or {what}; click two corners on "
        f"the slice for a box. Models trained on **{dataset}** data; not for clinical use."
    )


def _layout(
    dataset: str, examples: list[list] | None = None, modalities: tuple[str, ...] = ("flair",)
) -> SimpleNamespace:
    """The page's components, created inside the open ``gr.Blocks``: examples, inputs and the enlarged view on
    top (visible without scrolling at 1280 x 800), the two results, the info line and downloads below."""
    import gradio as gr

    gr.Markdown(intro(dataset, modalities))
    ui = SimpleNamespace(examples=None)
    _inputs(ui, dataset)
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=380):
            if examples:
                ui.examples = gr.Examples(
                    examples=[row[:2] for row in examples],
                    inputs=[ui.file, ui.z],
                    label="test-split examples",
                    example_labels=[example_label(*row) for row in examples],  # not the slider's 0 for a 2-D image
                    elem_id="examples",
                    cache_examples=False,
                    api_visibility="private",
                )
            ui.file.render()
            ui.z.render()
            ui.prompt = gr.Radio(
                [(label, key) for key, label in PROMPT_LABELS.items()],
                value="unet_box",
                label="SAM prompt",
            )
            with gr.Row():
                ui.box = gr.Textbox(
                    label="box x0,y0,x1,y1 (slice pixels; two clicks fill it)", value="", elem_id="box", scale=3
                )
                ui.clear = gr.Button("clear box", scale=1, elem_id="clear-box")
            with gr.Row():
                ui.go = gr.Button("Segment", variant="primary", elem_id="segment")
                ui.go_volume = gr.Button("Segment the whole volume", elem_id="segment-volume")
        with gr.Column(scale=3):
            ui.view = gr.Image(
                label=f"slice, enlarged (click two corners for a box; at least {DISPLAY_MIN_PX} px)",
                type="filepath",
                interactive=False,
                height=VIEW_HEIGHT_PX,
                elem_id="view",
            )
    with gr.Row():
        ui.out_unet = gr.Image(label=PANEL_TITLES[0], type="filepath", elem_id="unet")
        ui.out_sam = gr.Image(label=PANEL_TITLES[1], type="filepath", elem_id="sam")
    ui.info = gr.Markdown(elem_id="info")
    ui.masks = gr.File(label="masks (PNG; NIfTI for volumes)", file_count="multiple", elem_id="masks")
    ui.titles = gr.State(PANEL_TITLES)  # the panels' titles with Dice; a State, so API outputs stay plain values
    return ui


def build_demo(
    predictor: Predictor,
    examples: list[list] | None = None,
    workdir: str | os.PathLike | None = None,
    warm_up: bool = True,
):
    """The Gradio Blocks app (Gradio 6 API). ``examples``: rows of [file path, slice index (0-based, as in the
    file) or None for a 2-D image, ground-truth file or None (optional)]; the example's slice is the one shown.
    ``warm_up``: run the models once before serving (``Predictor.warm_up``), so shown latencies are steady."""
    import gradio as gr

    workdir = Path(workdir or tempfile.mkdtemp(prefix="brainseg-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if warm_up:
        predictor.warm_up()
    truths = Truths(examples)
    show, on_slice, on_box = view_callbacks(workdir, truths)
    on_click = click_callback(workdir)
    run, run_volume = segment_callback(predictor, workdir, truths), volume_callback(predictor, workdir, truths)
    with gr.Blocks(title="brainseg demo: U-Net vs SAM") as demo:
        ui = _layout(predictor.dataset, examples, predictor.modalities)
        results = [ui.out_unet, ui.out_sam, ui.info, ui.masks]
        shown = [ui.file, ui.z, ui.view, ui.box, *results]
        # .upload / .clear, not .change: an example sets the file too, and its own slice must win (below)
        ui.file.upload(show, [ui.file], shown, api_visibility="private")
        ui.file.clear(show, [ui.file], shown, api_visibility="private")
        if ui.examples is not None:  # a click loads the file and the example's slice, then shows them
            ui.examples.load_input_event.then(show, [ui.file, ui.z], shown, api_visibility="private")
        ui.z.release(on_slice, [ui.file, ui.z, ui.box], [ui.view, *results], api_visibility="private")
        ui.view.select(on_click, [ui.box, ui.file, ui.z], [ui.box, ui.view], api_visibility="private")
        for event in (ui.box.submit, ui.box.blur):
            event(on_box, [ui.file, ui.z, ui.box], [ui.view], api_visibility="private")
        ui.clear.click(lambda: "", None, [ui.box], api_visibility="private").then(
            on_box, [ui.file, ui.z, ui.box], [ui.view], api_visibility="private"
        )
        ui.go.click(run, [ui.file, ui.z, ui.box, ui.prompt], [*results, ui.titles], api_name="segment").success(
            retitle, [ui.titles], [ui.out_unet, ui.out_sam], api_visibility="private"
        )
        ui.go_volume.click(run_volume, [ui.file, ui.z], [*results, ui.titles], api_name="segment_volume").success(
            retitle, [ui.titles], [ui.out_unet, ui.out_sam], api_visibility="private"
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
