"""Percentiles of the nonzero values of a float32 array without copying them (bounded extra memory).

``nonzero_percentiles(flat, q)`` returns what ``np.percentile(flat[flat != 0], q)`` returns (method
"linear"), bit for bit, while holding only fixed-size chunks: the k-th smallest value is found exactly by
two histogram passes over the float32 bit patterns (a radix select), then numpy's own interpolation
formula is applied to the neighbours.

Why: ``flat[flat != 0]`` is a float32 copy of the brain (about the whole volume), which was the largest
allocation of an upload after the volume itself.
"""

from __future__ import annotations

import numpy as np

CHUNK = 1 << 18  # values per step (a few MiB of temporaries whatever the array's size)
_BINS = 1 << 16  # one pass sorts 16 of the 32 key bits


def _keys(chunk: np.ndarray) -> np.ndarray:
    """uint32 keys whose unsigned order is the float order of the nonzero values of ``chunk`` (float32 (n,))."""
    vals = chunk[chunk != 0]  # a new float32 array: flipped in place below
    keys = vals.view(np.uint32)
    flip = (vals.view(np.int32) >> 31).view(np.uint32)  # all ones for negatives, 0 otherwise
    flip |= np.uint32(0x80000000)
    keys ^= flip  # negative: all bits flipped; positive: sign bit set
    return keys


def _key_to_float(key: int) -> np.float32:
    bits = key ^ 0x80000000 if key & 0x80000000 else ~key & 0xFFFFFFFF
    return np.array([bits], np.uint32).view(np.float32)[0]


def _chunks(flat: np.ndarray):
    for i in range(0, flat.size, CHUNK):
        yield flat[i : i + CHUNK]


def _select(flat: np.ndarray, hist_hi: np.ndarray, ranks: list[int]) -> list[np.float32]:
    """The values of 0-based ``ranks`` in the sorted nonzero values (second pass over the low 16 bits)."""
    cum = np.cumsum(hist_hi)
    hi_bins = [int(np.searchsorted(cum, r, side="right")) for r in ranks]
    within = [r - (int(cum[b - 1]) if b else 0) for r, b in zip(ranks, hi_bins, strict=True)]
    wanted = sorted(set(hi_bins))
    hist_lo = {b: np.zeros(_BINS, np.int64) for b in wanted}
    for chunk in _chunks(flat):
        keys = _keys(chunk)
        top = keys >> 16
        for b in wanted:
            hist_lo[b] += np.bincount(keys[top == b] & 0xFFFF, minlength=_BINS)
    out = []
    for b, r in zip(hi_bins, within, strict=True):
        lo = int(np.searchsorted(np.cumsum(hist_lo[b]), r, side="right"))
        out.append(_key_to_float((b << 16) | lo))
    return out


def nonzero_percentiles(flat: np.ndarray, q) -> np.ndarray:
    """float64 (len(q),): ``np.percentile(flat[flat != 0], q)`` for float32 (N,) ``flat``, q in [0, 100].

    NaN among the values gives NaN, as numpy does; no nonzero value raises ``ValueError``."""
    assert flat.dtype == np.float32 and flat.ndim == 1, f"expected float32 (N,), got {flat.dtype} {flat.shape}"
    hist_hi, has_nan = np.zeros(_BINS, np.int64), False
    for chunk in _chunks(flat):
        has_nan = has_nan or bool(np.isnan(chunk).any())
        hist_hi += np.bincount(_keys(chunk) >> 16, minlength=_BINS)
    n = int(hist_hi.sum())
    if n == 0:
        raise ValueError("no nonzero values to take percentiles of")
    quantiles = np.true_divide(np.asarray(q, np.float64), 100)  # as np.percentile computes them
    virtual = (n - 1) * quantiles  # numpy's "linear" method
    if has_nan:
        return np.full(virtual.shape, np.nan)
    prev = np.floor(virtual).astype(np.int64)
    above = virtual >= n - 1  # numpy takes the last value for both neighbours there
    prev_rank = np.where(above, n - 1, prev)
    next_rank = np.where(above, n - 1, prev + 1)
    ranks = sorted(set(prev_rank.tolist()) | set(next_rank.tolist()))
    value = dict(zip(ranks, _select(flat, hist_hi, ranks), strict=True))
    a = np.array([value[r] for r in prev_rank.tolist()], np.float32)
    b = np.array([value[r] for r in next_rank.tolist()], np.float32)
    gamma = virtual - np.where(above, -1, prev)  # numpy's _get_gamma after its bounds fix
    # numpy's _lerp, step for step (float32 difference, float64 weights)
    diff = b - a
    out = np.add(a, diff * gamma)
    np.subtract(b, diff * (1 - gamma), out=out, where=gamma >= 0.5, casting="unsafe")
    return out
