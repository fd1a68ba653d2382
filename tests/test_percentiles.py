"""percentiles.py: nonzero_percentiles equals np.percentile on the nonzero values, bit for bit; normalise_volume
(which uses it) equals the former copy-and-np.percentile formula."""

import numpy as np
import pytest

from brainseg_utils.data import percentiles as P
from brainseg_utils.data.volumes import normalise_volume


def _cases():
    rng = np.random.default_rng(0)
    for i in range(60):
        n = int(rng.integers(1, 5000))
        if i % 3 == 0:
            a = rng.normal(0, 50, n)  # negative and positive floats
        elif i % 3 == 1:
            a = rng.integers(-20, 400, n)  # integer-valued, many ties
        else:
            a = rng.random(n) * 1e4
            a[rng.random(n) < 0.4] = 0  # background
        yield a.astype(np.float32)


@pytest.mark.parametrize("q", [[0.5, 99.5], [0, 100], [50], [1e-3, 12.5, 33.3, 66.7, 99.999]])
def test_equals_numpy_on_random_and_integer_values(q, monkeypatch):
    monkeypatch.setattr(P, "CHUNK", 777)  # many chunks, ragged last one
    for a in _cases():
        if not a.any():
            continue
        want = np.percentile(a[a != 0], q)
        got = P.nonzero_percentiles(a, q)
        assert got.dtype == np.float64 and np.array_equal(got, want), (a.size, q, got, want)


def test_small_and_degenerate_inputs():
    one = np.array([0, 0, 3.5, 0], np.float32)
    np.testing.assert_array_equal(P.nonzero_percentiles(one, [0.5, 99.5]), [3.5, 3.5])
    two = np.array([-1.0, 0.0, 2.0], np.float32)  # hand-computed: -1 + 3 * 0.005 and 2 - 3 * 0.005
    np.testing.assert_allclose(P.nonzero_percentiles(two, [0.5, 99.5]), [-0.985, 1.985], rtol=0, atol=1e-12)
    same = np.full(1000, 7.0, np.float32)
    np.testing.assert_array_equal(P.nonzero_percentiles(same, [0.5, 99.5]), [7.0, 7.0])
    tiny = np.array([np.float32(1e-45), -np.float32(1e-45), np.float32(3e38)], np.float32)  # subnormal, huge
    np.testing.assert_array_equal(P.nonzero_percentiles(tiny, [0, 50, 100]), np.percentile(tiny, [0, 50, 100]))
    with pytest.raises(ValueError, match="no nonzero values"):
        P.nonzero_percentiles(np.zeros(10, np.float32), [50])
    nan = np.array([1.0, np.nan, 2.0], np.float32)
    assert np.isnan(P.nonzero_percentiles(nan, [0.5, 99.5])).all()
    with pytest.raises(AssertionError, match="float32"):
        P.nonzero_percentiles(np.ones(4), [50])


def _old_normalise(vol, lower=0.5, upper=99.5):
    """normalise_volume before the copy-free percentiles (a float32 copy of the brain for np.percentile)."""
    vol = np.array(vol, dtype=np.float32, copy=True)
    brain = vol != 0
    if not brain.any():
        return vol
    lo, hi = np.percentile(vol[brain], [lower, upper])
    vol[brain] = np.clip((vol[brain] - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0)
    return vol


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32, np.float64])
def test_normalise_volume_unchanged(dtype):
    rng = np.random.default_rng(1)
    vol = np.zeros((70, 60, 9), dtype)
    vol[5:65, 4:50] = (rng.normal(120, 40, (60, 46, 9)).clip(1, 255)).astype(dtype)
    want = _old_normalise(vol)
    np.testing.assert_array_equal(normalise_volume(vol), want)
    inplace = np.asfortranarray(vol, np.float32)
    out = normalise_volume(inplace, copy=False)
    assert out is inplace and np.array_equal(out, want)
