"""The slice as the page shows it: enlarged by a whole factor, so that a click maps back to one slice pixel exactly.

A slice of (h, w) pixels is shown ``k = display_factor(h, w)`` times larger, nearest neighbour (every slice
pixel becomes a k x k block), with k the smallest whole number that makes the longer side at least
``DISPLAY_MIN_PX`` (k = 1 for slices already that large). Gradio's ``.select`` event reports the clicked
pixel of the served picture in that picture's own pixels, whatever size the browser draws it at, so display
pixel (X, Y) lies in slice pixel (X // k, Y // k): for square and non-square slices alike, with no rounding
between the two grids (``to_slice_pixel``).

Boxes are inclusive XYXY in slice pixels, as the models get them; on the display a box's outline is drawn on
the outermost display pixels of its corner pixels' blocks (``box_on_display``), so what is inside the outline
is exactly what the model is told is inside the box.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

DISPLAY_MIN_PX = 480  # the view's longer side on the page, at least (pixels of the served picture)
BOX_COLOUR = (255, 220, 0)  # yellow outline: the box SAM gets
TRUTH_COLOUR = (0, 230, 60)  # green contour: the ground truth of a test-split example
LINE_PX = 2  # outline width on the display (at most k: it never covers more than the edge pixels)


def display_factor(h: int, w: int, min_px: int = DISPLAY_MIN_PX) -> int:
    """k >= 1: the smallest whole factor with max(h, w) * k >= ``min_px``."""
    if h < 1 or w < 1:
        raise ValueError(f"a slice needs at least 1 x 1 pixels, got {h} x {w}")
    return max(1, -(-int(min_px) // max(int(h), int(w))))


def upscale(arr: np.ndarray, k: int) -> np.ndarray:
    """(H, W[, C]) -> (H * k, W * k[, C]), nearest neighbour (each pixel a k x k block)."""
    if k < 1:
        raise ValueError(f"the display factor must be >= 1, got {k}")
    return arr if k == 1 else np.repeat(np.repeat(arr, k, axis=0), k, axis=1)


def to_slice_pixel(x: float, y: float, k: int, h: int, w: int) -> tuple[int, int]:
    """A click at display pixel (x, y) -> slice pixel (column, row) in an (h, w) slice shown at factor k.

    Clicks on the last display row or column (Gradio rounds to the nearest display pixel) stay in the slice."""
    if not (np.isfinite(x) and np.isfinite(y)):
        raise ValueError(f"click position must be finite, got ({x}, {y})")
    if x < 0 or y < 0 or x > w * k or y > h * k:
        raise ValueError(f"click ({x:g}, {y:g}) is outside the {w * k} x {h * k} display")
    return min(int(x // k), w - 1), min(int(y // k), h - 1)


def box_on_display(box, k: int) -> tuple[int, int, int, int]:
    """Inclusive XYXY slice-pixel box -> the inclusive display-pixel rectangle covering its pixels' blocks."""
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    return x0 * k, y0 * k, (x1 + 1) * k - 1, (y1 + 1) * k - 1


def draw_box(disp: np.ndarray, box, k: int, colour=BOX_COLOUR) -> np.ndarray:
    """Outline ``box`` (slice pixels) on the display ``disp`` (uint8 (H*k, W*k, 3)), in place; returns it."""
    x0, y0, x1, y1 = box_on_display(box, k)
    t = max(1, min(LINE_PX, k, x1 - x0 + 1, y1 - y0 + 1))
    c = np.asarray(colour, np.uint8)
    disp[y0 : y0 + t, x0 : x1 + 1] = c
    disp[y1 - t + 1 : y1 + 1, x0 : x1 + 1] = c
    disp[y0 : y1 + 1, x0 : x0 + t] = c
    disp[y0 : y1 + 1, x1 - t + 1 : x1 + 1] = c
    return disp


def draw_point(disp: np.ndarray, x: int, y: int, k: int, colour=BOX_COLOUR) -> np.ndarray:
    """Mark slice pixel (x, y), a first box corner: its block outlined plus a cross of 2k display pixels."""
    draw_box(disp, (x, y, x, y), k, colour)
    cx, cy, r = x * k + k // 2, y * k + k // 2, 2 * k
    c = np.asarray(colour, np.uint8)
    disp[cy, max(0, cx - r) : cx + r + 1] = c
    disp[max(0, cy - r) : cy + r + 1, cx] = c
    return disp


def draw_contour(disp: np.ndarray, mask: np.ndarray, k: int, colour=TRUTH_COLOUR) -> np.ndarray:
    """The outline of ``mask`` (bool (H, W)) on ``disp`` (uint8 (H*k, W*k, 3)), in place: the display pixels of
    the mask's blocks that touch a pixel outside it (8-neighbours; the image border counts as outside)."""
    m = upscale(np.asarray(mask, bool), k)
    if m.shape != disp.shape[:2]:
        raise ValueError(f"mask {mask.shape} at factor {k} does not match the display {disp.shape[:2]}")
    edge = m & ~ndimage.binary_erosion(m, np.ones((3, 3), bool), border_value=0)
    disp[edge] = np.asarray(colour, np.uint8)
    return disp


# The models were trained on slices as stored in the files (``volume[:, :, z]``); the page shows them rotated so
# that anterior is up (``np.rot90``). A displayed slice goes back to the models' orientation, boxes with it.
def to_model_plane(shown: np.ndarray) -> np.ndarray:
    """A slice as shown -> as stored in the file (the inverse of the page's ``np.rot90``)."""
    return np.rot90(shown, -1)


def box_to_model(box, h: int) -> np.ndarray:
    """XYXY box on a shown slice of height ``h`` -> the same pixels' box in ``to_model_plane`` of it."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return np.array([h - 1 - y1, x0, h - 1 - y0, x1], np.float32)


def box_from_model(box, h: int) -> np.ndarray:
    """The inverse of ``box_to_model`` (``h``: the shown slice's height)."""
    a0, b0, a1, b1 = (float(v) for v in box)
    return np.array([b0, h - 1 - a1, b1, h - 1 - a0], np.float32)
