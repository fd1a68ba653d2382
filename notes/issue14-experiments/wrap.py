"""Run bench_transfer from a variant copy, waiting for the shared real-anatomy set (built by another run)."""
import runpy
import sys
import time
from pathlib import Path

root = Path(sys.argv[1]).resolve()
sys.path.insert(0, str(root / "benchmarks"))
import realanatomy  # noqa: E402

_orig = realanatomy.build


def build(out, *a, **k):
    m = Path(out) / realanatomy.MARKER
    while not m.exists():
        time.sleep(15)
    return _orig(out, *a, **k)


realanatomy.build = build
sys.argv = [str(root / "benchmarks/bench_transfer.py"), *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
