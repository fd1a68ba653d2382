"""The reaction-diffusion real-anatomy construction (benchmarks/realanatomy_growth.py, 'mni_growth')."""

import ast
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nilearn")  # dev dependency: the MNI152 template ships inside it
BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import constructions  # noqa: E402
import realanatomy_growth as G  # noqa: E402


def test_registered_and_independent():
    assert constructions.NAMES["mni_growth"] == "realanatomy_growth"
    tree = ast.parse((BENCH / "realanatomy_growth.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not any(m.startswith("brainseg_utils.data") for m in imported)
    assert not set(constructions.NAMES.values()) - {"realanatomy_growth"} & imported
    assert "constructions" not in imported


def test_reaction_diffusion_step_matches_a_hand_computed_update():
    u = np.array([0.0, 0.0, 1.0, 0.5, 0.0], np.float32).reshape(5, 1, 1)
    d = np.ones_like(u)
    d[4] = 0.0  # the last voxel is CSF: no flux across its face
    new = G.rd_step(u, G.face_diffusivity(d), dt=0.1, h=1.0, rho=0.4)
    # interior: u + dt * (u[i-1] - 2 u[i] + u[i+1] + rho u (1 - u)); face 3|4 closed, border faces closed
    expect = [0.0, 0.1 * 1.0, 1 + 0.1 * (0 - 2 + 0.5), 0.5 + 0.1 * (1.0 - 0.5 + 0.4 * 0.25), 0.0]
    np.testing.assert_allclose(new.ravel(), expect, rtol=1e-6)


def test_growth_stays_out_of_csf_and_follows_white_matter():
    d = np.ones((40, 40, 40), np.float32) / 6  # grey matter: D_wm / 6
    d[:, :, 20:] = 1.0  # white matter above z = 20
    d[28:, :, :] = 0.0  # CSF slab
    u, sat, steps = G.grow(d, (20, 20, 20), h=1.0, lam=2.0, volume_mm3=4000.0, threshold=0.1)
    assert steps > 5 and u.max() > 0.5 and sat.shape == d.shape
    assert (u[28:] == 0).all(), "the tumour entered CSF"
    assert (u[:, :, 20:] > 0.1).sum() > 1.5 * (u[:, :, :20] > 0.1).sum(), "white matter should carry more tumour"


def test_thick_slices_keep_a_z_constant_volume_and_blur_an_edge():
    rng = np.random.default_rng(0)
    flat = np.repeat(rng.uniform(1, 5, (6, 7, 1)).astype(np.float32), 31, axis=2)
    for thick, gap, off in ((3, 0, 0), (5, 1, 2), (4, 1, 3)):
        np.testing.assert_allclose(G.thick_slices(flat, thick, gap, off), flat, rtol=1e-6)
    step = np.zeros((2, 2, 40), np.float32)
    step[:, :, 20:] = 1.0
    out = G.thick_slices(step, 5)
    assert 0 < out[0, 0, 19] < 1 and 0 < out[0, 0, 20] < 1 and out[0, 0, 5] == 0 and out[0, 0, 35] == 1


@pytest.fixture(scope="module")
def tissue():
    return G.load_tissue()


def test_one_case_layout_labels_and_determinism(tissue):
    a = G.make_case(tissue, 0, 3)
    for m in G.MODALITIES:
        assert a[m].shape == G.SHAPE and a[m].dtype == np.int16 and a[m].min() >= 0
    seg, brain = a["seg"], a["flair"] > 0
    assert seg.dtype == np.uint8 and set(np.unique(seg)) <= {0, 1, 2, 4} and (seg == 2).any()
    assert brain[seg > 0].all(), "tumour labels outside the brain"
    assert all((a[m] > 0).sum() == brain.sum() for m in G.MODALITIES), "background must be exactly 0 in all"
    z = np.flatnonzero(brain.any((0, 1)))
    assert z[0] > 0 and z[-1] < G.SHAPE[2] - 1 and len(z) > 120, "the whole brain, vertex to cerebellum"
    meta = a["meta"]
    assert 0 <= meta["flair_overlap"] <= 1 and meta["tumours"][0]["steps"] > 0
    b = G.make_case(tissue, 0, 3)
    np.testing.assert_array_equal(a["seg"], b["seg"])
    np.testing.assert_array_equal(a["flair"], b["flair"])
