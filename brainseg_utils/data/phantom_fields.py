"""Random fields the synthetic phantom is drawn from: band-limited noise, MR bias fields, lobulated balls."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation weights mapping a coarse axis onto a fine one."""
    pos = (np.arange(n_out, dtype=np.float32) + 0.5) * n_in / n_out - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    w = np.zeros((n_out, n_in), np.float32)
    np.add.at(w, (np.arange(n_out), lo), 1.0 - (pos - lo))
    np.add.at(w, (np.arange(n_out), hi), pos - lo)
    return w


def lobulated_distance(dist: np.ndarray, radius: float, noise: np.ndarray, amplitude: float) -> np.ndarray:
    """``dist / (radius * (1 + amplitude * noise))``: < 1 inside a lobulated ball. The local radius factor is
    floored at 0.25: unit-std noise below ``-1 / amplitude`` (rare, but it happens in a small box) made it
    zero (division by zero) or negative, which labelled voxels far outside the ball as tumour."""
    return dist / (radius * np.maximum(1.0 + amplitude * noise, 0.25))


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float, factor: int) -> np.ndarray:
    """Band-limited Gaussian noise, unit std, correlation length ~``sigma`` voxels.

    Generated at ``shape / factor`` and upsampled linearly (three small matrix products,
    far cheaper than ``ndimage.zoom``): invisible once ``sigma / factor >= 2``.
    """
    small = tuple(max(4, -(-s // factor)) for s in shape)
    f = ndimage.gaussian_filter(rng.standard_normal(small, dtype=np.float32), sigma / factor, mode="wrap")
    f /= f.std() + 1e-8
    if factor > 1:
        f = np.einsum("ai,ijk->ajk", _interp_matrix(shape[0], small[0]), f)
        f = np.einsum("bj,ajk->abk", _interp_matrix(shape[1], small[1]), f)
        f = np.ascontiguousarray(f @ _interp_matrix(shape[2], small[2]).T)
    return f


def bias_field(rng: np.random.Generator, shape: tuple[int, ...], strength: float = 0.15) -> np.ndarray:
    """Smooth multiplicative MR bias field: exp of a random cubic polynomial in x, y, z."""
    x, y, z = (np.linspace(-1, 1, n, dtype=np.float32) for n in shape)
    log_b = np.zeros(shape, np.float32)
    for k in range(4):  # sum_k A_k(x, y) * z**k: only four full-volume operations
        a_k = np.zeros(shape[:2], np.float32)
        for i in range(4 - k):
            for j in range(4 - k - i):
                if i + j + k:
                    a_k += rng.normal(0, strength / (i + j + k)) * np.outer(x**i, y**j)
        log_b += a_k[:, :, None] * (z**k)[None, None, :]
    return np.exp(log_b)
