"""The second real-anatomy construction (benchmarks/realanatomy_flair.py): its own models, checked on small inputs."""

import ast
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import realanatomy_flair as F  # noqa: E402


def test_shares_no_code_with_the_generator_or_the_first_construction():
    for name in ("realanatomy_flair.py", "realanatomy.py"):
        tree = ast.parse((BENCH / name).read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not any(m.startswith("brainseg_utils.data") for m in imported), name
        assert not {"realanatomy", "realanatomy_flair", "constructions"} & imported, name


def _tissue(shape=F.GRID):
    """White matter in a ball of radius 40 at the centre, a 6-voxel grey shell, CSF outside up to radius 52."""
    g = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    r = np.sqrt(sum((gi - (n - 1) / 2) ** 2 for gi, n in zip(g, shape, strict=True)))
    wm = (r < 40).astype(np.float32)
    gm = ((r >= 40) & (r < 46)).astype(np.float32)
    csf = ((r >= 46) & (r < 52)).astype(np.float32)
    return {"wm": wm, "gm": gm, "csf": csf}, r


def test_density_peaks_at_the_seed_and_stops_at_csf():
    tissue, r = _tissue()
    c = (np.array(F.GRID, np.float32) - 1) / 2
    dens = F._density(np.random.default_rng(0), tissue, c, 10.0)
    assert dens.max() == pytest.approx(1.0) and dens[tuple(c.astype(int))] > 0.9
    assert dens[r >= 47].max() < 0.05, "no infiltration into CSF or outside the brain"
    assert dens[(r > 20) & (r < 25)].mean() < dens[r < 5].mean()


def test_edema_fades_to_its_margin_and_caps_are_not_tumour():
    tissue, r = _tissue()
    rng = np.random.default_rng(3)
    seg, dens, tumours = F.plant(rng, tissue)
    assert set(np.unique(seg)) <= {0, 1, 2, 4} and (seg > 0).any()
    assert (tissue["csf"][seg > 0] < 0.5).all()
    images, contrast = F.render(np.random.default_rng(4), tissue, seg, dens, tumours[0]["edema_threshold"])
    f = images["flair"]
    ed = seg == 2
    inner = ed & (dens > np.quantile(dens[ed], 0.8))
    outer = ed & (dens < np.quantile(dens[ed], 0.2))
    assert f[inner].mean() > f[outer].mean(), "edema brightness falls towards the labelled margin"
    assert (f[tissue["csf"] > 0.9] < 0.5 * np.median(f[(tissue["wm"] > 0.9) & (seg == 0)])).mean() > 0.9
    assert (f[r > 53] == 0).all(), "background exactly 0"
    assert 1.05 <= contrast["gm"] <= 1.35 and 1.05 <= contrast["margin"] <= 1.25
