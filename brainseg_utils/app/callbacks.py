"""The demo page's event handlers (``demo.build_demo`` wires them): showing a file, drawing a box, segmenting one
slice or the whole volume.

Every handler that changes the input (another file or example, another slice) clears the results
(``CLEARED``). A refused upload on the page is a warning plus a line in the info field; a refused
``/segment`` or ``/segment_volume`` request is a ``gr.Error``; either way the server logs one line, no traceback.
"""

import logging
import tempfile
from pathlib import Path

from brainseg_utils.app.display import display_factor, to_slice_pixel
from brainseg_utils.app.examples import Truths
from brainseg_utils.app.plausibility import upload_notice
from brainseg_utils.app.predictor import Predictor
from brainseg_utils.app.request import (
    REQUEST_PREFIX,
    display_plane,
    display_slice,
    overlay,
    parse_corner,
    prune_requests,
    save_png,
    segment,
    start_slice,
    view_image,
)
from brainseg_utils.app.upload import UploadError, cached_upload
from brainseg_utils.app.volume import segment_volume

SLIDER_MAX_BEFORE_UPLOAD = 154  # a BraTS volume's last slice; an upload sets the slider to its own depth
SLICE_CONVENTION = "0-based index, as in the file"  # slider, info line, examples, API and mask file names
PROMPT_LABELS = {  # the page's words for the prompt modes (``PROMPTS``: the API and the code keep the identifiers)
    "unet_box": "Box from the U-Net's prediction",
    "box": "Box you draw (two clicks on the slice)",
    "none": "No prompt (SAM decoder trained without prompts)",
}
PANEL_TITLES = ("U-Net", "SAM")
TRUTH_POLICY = "Dice on this slice against the ground truth (green contour); both empty counts as 1"

log = logging.getLogger(__name__)


def panels(unet=None, sam=None, titles=PANEL_TITLES):
    """The two result panels' updates: pictures (or None) and their titles (where each model's Dice goes)."""
    import gradio as gr

    return gr.update(value=unet, label=titles[0]), gr.update(value=sam, label=titles[1])


def cleared() -> tuple:
    """U-Net panel, SAM panel, info line, download files: no stale results."""
    return (*panels(), "", None)


def slice_text(name: str, z: int, depth: int) -> str:
    """Where the shown slice lies, in the page's one convention; a 2-D image has no slice number."""
    if depth == 1:
        return f"{name} (2-D image)"
    return f"{name}, slice {z} ({SLICE_CONVENTION}: 0 to {depth - 1})"


def refused(exc: Exception, what: str) -> str:
    """A handled error: one log line (no traceback), a warning toast; returns the info line's text."""
    import gradio as gr

    log.warning("%s refused: %s", what, exc)
    gr.Warning(str(exc))
    return f"**Not shown:** {exc}"


def _error(exc: Exception, what: str):
    """A refused API request: one log line (no traceback), a ``gr.Error`` for the client."""
    import gradio as gr

    log.warning("%s refused: %s", what, exc)
    return gr.Error(str(exc), print_exception=False)


def _slider(depth: int | None = None, z: int = 0):
    """The slider for a volume of ``depth`` slices at ``z``; hidden for a 2-D image; reset for no file."""
    import gradio as gr

    if depth is None:
        return gr.update(maximum=SLIDER_MAX_BEFORE_UPLOAD, value=0, interactive=True, visible=True)
    # a slider needs maximum > minimum: a 2-D image gets a hidden, fixed slider at 0
    return gr.update(maximum=max(1, depth - 1), value=z, interactive=depth > 1, visible=depth > 1)


def _ready_text(up, z: int, path, truths: Truths) -> str:
    """The info line once a file is shown: where, what next, whether a ground truth exists, any notice."""
    depth = up.volume.shape[2]
    lines = [f"{slice_text(up.name, z, depth)} · press Segment" + (" or Segment the whole volume" if depth > 1 else "")]
    if truths.get(path) is not None:
        lines.append(
            "Test-split example: its ground truth (green contour) and each model's Dice come with the results."
        )
    note = upload_notice(up, path)
    if note:
        lines.append(f"**Note:** {note}")
    return "\n\n".join(lines)


def view_callbacks(workdir: Path, truths: Truths | None = None):
    """(show, on_slice, on_box): a newly chosen file at its start (or the example's) slice; the slider's slice; the
    box typed or cleared. The view always shows the current box; show and on_slice clear the results."""
    import gradio as gr

    truths = truths or Truths()

    def _view(up, z, box_text=""):
        folder = Path(tempfile.mkdtemp(prefix=REQUEST_PREFIX, dir=workdir))
        try:
            return save_png(view_image(display_slice(up, z), box_text), folder, "slice")
        except UploadError:  # a box that does not fit this slice: show the slice without it
            return save_png(view_image(display_slice(up, z), ""), folder, "slice")

    def show(path, z=None):
        """Outputs: file, slider, view, box, *cleared(). ``z`` None: the brightest slice (``start_slice``)."""
        if not path:
            return gr.update(), _slider(), None, "", *cleared()
        try:
            up = cached_upload(path)
        except UploadError as exc:
            return None, _slider(), None, "", *panels(), refused(exc, "upload"), None
        depth = up.volume.shape[2]
        z = start_slice(up.volume) if z is None or depth == 1 else min(max(int(z), 0), depth - 1)
        note = upload_notice(up, path)
        if note:
            gr.Info(note)
        return gr.update(), _slider(depth, z), _view(up, z), "", *panels(), _ready_text(up, z, path, truths), None

    def on_slice(path, z, box_text=""):
        """Outputs: view, *cleared()."""
        if not path:
            return None, *cleared()
        try:
            up = cached_upload(path)
            z = min(int(z), up.volume.shape[2] - 1)
            return _view(up, z, box_text), *panels(), _ready_text(up, z, path, truths), None
        except UploadError as exc:
            return gr.update(), *panels(), refused(exc, "slice"), None

    def on_box(path, z, box_text):
        """Outputs: view (the slice with the typed box; a bad box is a warning and leaves the view as it was)."""
        if not path:
            return gr.update()
        try:
            up = cached_upload(path)
            sl = display_slice(up, min(int(z or 0), up.volume.shape[2] - 1))
            folder = Path(tempfile.mkdtemp(prefix=REQUEST_PREFIX, dir=workdir))
            return save_png(view_image(sl, box_text), folder, "slice")
        except UploadError as exc:
            refused(exc, "box")
            return gr.update()

    return show, on_slice, on_box


def next_box_text(box_text: str, x: int, y: int, h: int, w: int) -> str:
    """The box text after a click on slice pixel (x, y): the first corner "x,y;", or, after one, the finished box
    "x0,y0,x1,y1" (corners sorted); a click after a finished box starts a new one."""
    try:
        corner = parse_corner(box_text, h, w)
    except UploadError:
        corner = None
    if corner is None:
        return f"{x},{y};"
    x0, y0 = corner
    return f"{min(x0, x)},{min(y0, y)},{max(x0, x)},{max(y0, y)}"


def click_callback(workdir: Path):
    """on_click: a click on the (enlarged) view -> slice pixel (``display.to_slice_pixel``) -> the box text, and
    the view redrawn with the first corner marked or the finished box outlined."""
    import gradio as gr

    def on_click(box_text, path, z, evt: gr.SelectData):
        if not path:
            return box_text, gr.update()
        try:
            up = cached_upload(path)
            sl = display_slice(up, min(int(z or 0), up.volume.shape[2] - 1))
            h, w = sl.shape
            x, y = to_slice_pixel(evt.index[0], evt.index[1], display_factor(h, w), h, w)
            text = next_box_text(box_text, x, y, h, w)
            folder = Path(tempfile.mkdtemp(prefix=REQUEST_PREFIX, dir=workdir))
            return text, save_png(view_image(sl, text), folder, "slice")
        except (UploadError, ValueError, TypeError) as exc:
            refused(exc, "click")
            return box_text, gr.update()

    return on_click


def _warm_line(predictor: Predictor) -> str:
    w = predictor.warmup
    if not w:
        return ""
    return (
        f"_Latencies are steady ones: every model ran twice on a made-up slice at start-up (the U-Net's first call "
        f"took {w['unet_first_ms']:.0f} ms, the second {w['unet_ms']:.0f} ms: first calls pay one-off set-up)._"
    )


def _score(out: dict, key: str) -> str:
    d = out.get("dice", {}).get(key)
    return "" if d is None else f" · Dice {d:.3f}"


def summary(out: dict, prompt: str, predictor: Predictor, notice: str = "") -> str:
    """The Markdown under one slice's results: file and slice, pixels, latency and Dice of each model, SAM's
    prompt and box, what a NIfTI download holds, the warm-up."""
    r = out["res"]
    lines = [
        f"**{slice_text(out['name'], out['z'], out['depth'])}** · data the models were trained on: {predictor.dataset}",
        f"- U-Net: {out['info']['unet']} px, {r['unet_ms']:.0f} ms{_score(out, 'unet')}",
    ]
    if r["sam"] is not None:
        lines.append(
            f"- SAM, prompt {PROMPT_LABELS[prompt]!r}: {out['info']['sam']} px, {r['sam_ms']:.0f} ms "
            "(encoder + decoder)"
            + (f" · box {', '.join(f'{v:.0f}' for v in r['box'])}" if r["box"] is not None else "")
            + (f" and {len(r['boxes']) - 1} more (one per U-Net component)" if _many(r.get("boxes")) else "")
            + _score(out, "sam")
        )
    if r["sam_note"]:
        lines.append(f"- SAM: {r['sam_note']}")
    if out.get("truth_px") is not None:
        lines.append(f"- Ground truth: {out['truth_px']} px; {TRUTH_POLICY}.")
    if out["depth"] > 1:
        lines.append(
            f"- Downloads hold **slice {out['z']} only** (the NIfTI masks are 0 on every other slice: "
            "`_one_slice_` in their names); **Segment the whole volume** predicts all slices."
        )
    if notice:
        lines.append(f"\n**Note:** {notice}")
    return "\n".join(lines + ["", _warm_line(predictor)])


def _titles(out: dict, prefix: str = "") -> tuple[str, str]:
    return tuple(f"{prefix}{t}{_score(out, k)}" for t, k in zip(PANEL_TITLES, ("unet", "sam"), strict=True))


def retitle(titles):
    """The result panels' titles (with each model's Dice) from the ``gr.State`` the endpoints fill."""
    import gradio as gr

    return gr.update(label=titles[0]), gr.update(label=titles[1])


def segment_callback(predictor: Predictor, workdir: Path, truths: Truths | None = None):
    """run: the ``/segment`` endpoint (its parameter names are the API's). Outputs: U-Net and SAM pictures, info,
    files, and the panels' titles (a ``gr.State``: API clients get the first four, plain values)."""
    truths = truths or Truths()

    def run(path, z, box_text, prompt):
        try:
            prune_requests(workdir)
            out = segment(predictor, path, z, box_text, prompt, workdir, truths.get(path))
            notice = upload_notice(cached_upload(path), path)
        except UploadError as exc:
            raise _error(exc, "segment") from None
        return (
            out["unet_overlay_png"],
            out["sam_overlay_png"],
            summary(out, prompt, predictor, notice),
            out["files"],
            _titles(out),
        )

    return run


def volume_summary(out: dict, z: int, predictor: Predictor) -> str:
    """The Markdown under a whole-volume result: per model its volume, slices and 3-D Dice; the downloads."""
    lines = [
        f"**{out['name']}: the whole volume** ({out['n_slices']} brain slices of {out['depth']}, "
        f"{out['seconds']:.1f} s) · shown: slice {z} ({SLICE_CONVENTION}) · data the models were trained on: "
        f"{predictor.dataset}"
    ]
    names = {"unet": "U-Net", "unet_clean": "U-Net after the 3-D clean-up"}
    for key, s in out["stats"].items():
        name = names.get(key, "SAM, boxes from the U-Net's components (the automatic cascade)")
        dice = "" if s["dice"] is None else f" · Dice {s['dice']:.3f} (whole volume)"
        lines.append(f"- {name}: {s['ml']:.1f} mL ({s['voxels']} voxels) on {s['slices']} slices{dice}")
    if out["sam_note"]:
        lines.append(f"- SAM: {out['sam_note']}")
    if any(s["dice"] is not None for s in out["stats"].values()):
        lines.append("- Ground truth: green contour; Dice over the whole volume (both empty counts as 1).")
    lines.append(
        "- Downloads: one 3-D NIfTI per model (`_all_slices_` in the name), every slice, in the upload's "
        "geometry (its affine and header)."
    )
    return "\n".join(lines)


def volume_callback(predictor: Predictor, workdir: Path, truths: Truths | None = None):
    """run_volume: the ``/segment_volume`` endpoint (file, slice to show), with a progress bar; outputs as
    ``segment_callback``'s."""
    import gradio as gr

    truths = truths or Truths()

    def run_volume(path, z, progress=gr.Progress()):  # noqa: B008 (Gradio's way to ask for a progress bar)
        try:
            prune_requests(workdir)
            truth = truths.get(path)
            progress(0, desc="Segmenting the whole volume")

            def tick(stage, done, n):
                progress((done, n), desc=f"{stage} on the brain slices", unit="slices")

            out = segment_volume(predictor, path, workdir, truth, tick)
        except UploadError as exc:
            raise _error(exc, "volume") from None
        z = min(max(int(z or 0), 0), out["depth"] - 1)
        sl = display_slice(cached_upload(path), z)
        t = None if truth is None else display_plane(truth, "nifti", z)
        k = display_factor(*sl.shape)
        folder = Path(tempfile.mkdtemp(prefix=REQUEST_PREFIX, dir=workdir))
        sam_key = next((m for m in out["pred"] if m.endswith("_unet_box")), None)
        pics, titles = [], []
        for key, colour, title in (("unet", (255, 80, 30), "U-Net"), (sam_key, (30, 160, 255), "SAM cascade")):
            if key is None:
                pics.append(None)
                titles.append("SAM (not run on the whole volume)")
                continue
            mask = display_plane(out["pred"][key], "nifti", z)
            pics.append(save_png(overlay(sl, mask, colour, None, t, k), folder, f"volume_{key}"))
            d = out["stats"][key]["dice"]
            titles.append(f"{title}, whole volume (slice {z})" + ("" if d is None else f" · Dice {d:.3f} (3-D)"))
        return *pics, volume_summary(out, z, predictor), out["files"], tuple(titles)

    return run_volume


def _many(boxes) -> bool:
    return boxes is not None and len(boxes) > 1
