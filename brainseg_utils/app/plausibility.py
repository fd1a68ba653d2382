"""Does an upload look like a brain MRI slice? A notice for the user, never a refusal.

A simple heuristic, on the slice as loaded (grey, in [0, 1] after the upload's normalisation), taken every
``step`` pixels so that its longer side is at most ``WORK_PX``; for a volume, on the slice with the largest
region above ``FOREGROUND``. Each of these adds a reason (``brain_likeness``):

  * colourful (2-D images only): more than ``COLOUR_FRACTION`` of the pixels have a chroma (max - min of R, G,
    B, in [0, 1]) above ``CHROMA``: MRI slices are grey (a chart, a photo, a screenshot with coloured overlays
    are not);
  * bright background: the median of the outer frame (1/16 of each side) is above ``BRIGHT_BACKGROUND``: an MRI
    slice lies on a dark (skull-stripped: zero) background, a chart or a document on white;
  * no head-shaped region: the largest 8-connected region above ``FOREGROUND`` (holes filled) covers less than
    ``MIN_COVER`` or more than ``MAX_COVER`` of the picture, or overlaps the ellipse of its own second moments
    by less than ``MIN_ELLIPSE_IOU`` (IoU): a head is one roughly elliptical blob;
  * noise-like: horizontally adjacent pixels inside that region correlate below ``MIN_NEIGHBOUR_CORR``: MRI is
    smooth at the scale of a pixel, random noise is not.

Tests: a synthetic brain slice (``data.synthetic``) passes; a matplotlib chart and a random-noise picture are
flagged. It is a heuristic: a slice near the top or bottom of a head, or a heavily cropped one, can be flagged
too, which is why it is a notice.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from scipy import ndimage

WORK_PX = 256  # longer side the checks look at (strided)
FOREGROUND = 0.1  # normalised intensity above which a pixel belongs to the head region
CHROMA, COLOUR_FRACTION = 0.15, 0.01  # a pixel "in colour", and how many of them make a picture colourful
BRIGHT_BACKGROUND = 0.25  # median of the outer frame
MIN_COVER, MAX_COVER = 0.05, 0.9  # the head region's share of the picture
MIN_ELLIPSE_IOU = 0.7  # head region vs the ellipse of its second moments
MIN_NEIGHBOUR_CORR = 0.5  # correlation of horizontal neighbours inside the head region


def _reduce(sl: np.ndarray) -> np.ndarray:
    step = max(1, -(-max(sl.shape) // WORK_PX))
    return np.asarray(sl[::step, ::step], np.float32)


def ellipse_iou(region: np.ndarray) -> float:
    """IoU of a bool (H, W) region and the ellipse with its centroid and second moments (for a solid ellipse:
    1 up to pixelation; a solid rectangle: about 0.83; an L shape 0.36, a ring 0.14)."""
    ys, xs = np.nonzero(region)
    if len(xs) < 3:
        return 0.0
    pts = np.stack([xs, ys], 1).astype(np.float64)
    c = pts.mean(0)
    cov = np.cov(pts.T) + np.eye(2) / 12.0  # a pixel's own extent keeps a one-pixel-wide line invertible
    inv = np.linalg.inv(cov)
    yy, xx = np.mgrid[: region.shape[0], : region.shape[1]]
    d = np.stack([xx - c[0], yy - c[1]], -1)
    ellipse = np.einsum("...i,ij,...j->...", d, inv, d) <= 4.0  # a uniform ellipse's edge: 2 standard deviations
    union = np.logical_or(region, ellipse).sum()
    return float(np.logical_and(region, ellipse).sum() / union) if union else 0.0


def neighbour_correlation(g: np.ndarray, region: np.ndarray) -> float:
    """Pearson correlation of each pixel and its right-hand neighbour, both inside ``region`` (1.0 when flat)."""
    both = region[:, :-1] & region[:, 1:]
    a, b = g[:, :-1][both].astype(np.float64), g[:, 1:][both].astype(np.float64)
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return 1.0
    return float(np.corrcoef(a, b)[0, 1])


def _largest_region(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask, np.ones((3, 3), bool))
    if n == 0:
        return mask
    biggest = 1 + int(np.bincount(labels.ravel())[1:].argmax())
    return ndimage.binary_fill_holes(labels == biggest)


def brain_likeness(sl: np.ndarray, colour_fraction: float = 0.0) -> list[str]:
    """Reasons why ``sl`` (float (H, W) in [0, 1]) does not look like a brain MRI slice; [] when none.

    ``colour_fraction``: share of the original picture's pixels in colour (``colour_fraction``), 0 for NIfTI."""
    g = _reduce(np.asarray(sl))
    reasons = []
    if colour_fraction > COLOUR_FRACTION:
        reasons.append(f"it is in colour ({colour_fraction:.0%} of the pixels; MRI is grey)")
    b = max(1, min(g.shape) // 16)
    frame = np.concatenate([g[:b].ravel(), g[-b:].ravel(), g[:, :b].ravel(), g[:, -b:].ravel()])
    if np.median(frame) > BRIGHT_BACKGROUND:
        reasons.append(f"its background is bright (median {np.median(frame):.2f} at the border; MRI's is dark)")
    region = _largest_region(g > FOREGROUND)
    cover = float(region.mean())
    if not MIN_COVER <= cover <= MAX_COVER:
        reasons.append(f"no head-shaped region (the largest bright region covers {cover:.0%} of the picture)")
    elif (iou := ellipse_iou(region)) < MIN_ELLIPSE_IOU:
        reasons.append(f"no roughly elliptical head region (overlap with an ellipse {iou:.2f})")
    corr = neighbour_correlation(g, region)
    if corr < MIN_NEIGHBOUR_CORR:
        reasons.append(f"its texture is not MRI-like (neighbouring pixels correlate {corr:.2f}; MRI is smooth)")
    return reasons


def judged_slice(volume: np.ndarray) -> int:
    """The slice of an (H, W, D) volume the check looks at: the one with most pixels above ``FOREGROUND``."""
    if volume.shape[2] == 1:
        return 0
    return int(np.argmax([np.count_nonzero(volume[:, :, z] > FOREGROUND) for z in range(volume.shape[2])]))


def colour_fraction(path: str | os.PathLike) -> float:
    """Share of a (validated) 2-D picture's pixels with chroma > ``CHROMA``, on a copy of at most 256 px."""
    from PIL import Image

    with Image.open(path) as img:
        if img.mode not in ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
            return 0.0
        img = img.convert("RGB")
        img.thumbnail((WORK_PX, WORK_PX))
        rgb = np.asarray(img, np.float32) / 255.0
    chroma = rgb.max(-1) - rgb.min(-1)
    return float((chroma > CHROMA).mean())


_NOTES: OrderedDict[tuple, list[str]] = OrderedDict()
_LOCK = threading.Lock()


def upload_notice(up, path: str | os.PathLike) -> str:
    """One plain sentence for the page when the upload ``up`` (``upload.Upload``) does not look like a brain MRI
    slice, else "". Remembered per file (path, time, size), for the last 64 files."""
    st = Path(path).stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    with _LOCK:
        if key in _NOTES:
            return _NOTES[key]
    vol = up.volume
    colour = colour_fraction(path) if up.kind == "image" else 0.0
    z = judged_slice(vol)
    sl = vol[:, :, z]
    reasons = brain_likeness(np.rot90(sl) if up.kind == "nifti" else sl, colour)
    where = f" (slice {z})" if vol.shape[2] > 1 else ""
    note = (
        f"this does not look like a brain MRI slice{where}: {'; '.join(reasons)}. The models were trained on "
        "FLAIR MRI; their output on other pictures means nothing."
        if reasons
        else ""
    )
    with _LOCK:
        _NOTES[key] = note
        while len(_NOTES) > 64:
            _NOTES.popitem(last=False)
    return note
