"""Render the executed notebooks of a run to HTML and PNG, so anyone can look without Jupyter.

    python scripts/render_notebooks.py                       # OUTPUT_DIR (default outputs)/notebooks/*.ipynb
    python scripts/render_notebooks.py --output-dir /tmp/run --png-width 1200
    python scripts/render_notebooks.py --no-png              # HTML only (no Chromium needed)

Reads the copies papermill executed (``bash run_all.sh`` writes them to ``OUTPUT_DIR/notebooks/``) and writes
``<name>.html`` (nbconvert, lab template, images embedded) and ``<name>.png`` (a full-page screenshot by headless
Chromium; pages taller than ``--max-height`` are split into ``<name>-1.png``, ``<name>-2.png``, ...) into
``OUTPUT_DIR/render/notebooks/`` (``--out`` moves it). The bootstrap cell's source stays hidden, as in Jupyter.

Needs the development requirements (nbconvert, selenium) and, for PNG, Chromium and chromedriver
(``apt-get install chromium chromium-driver``); without them ``--no-png`` still writes the HTML.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from brainseg_utils.runtime.io import atomic_write_text


def hide_collapsed_sources(nb) -> None:
    """Cells whose source Jupyter shows collapsed (``metadata.jupyter.source_hidden``: the bootstrap cell) are
    rendered without their source, as nbconvert's ``--no-input`` does for one cell."""
    for cell in nb.cells:
        if cell.get("metadata", {}).get("jupyter", {}).get("source_hidden"):
            cell.metadata["transient"] = {"remove_source": True}  # as TagRemovePreprocessor marks a cell


def to_html(path: Path, out: Path) -> Path:
    """``path`` (an executed notebook) as a standalone HTML page ``out/<stem>.html``."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(path, as_version=4)
    hide_collapsed_sources(nb)
    exporter = HTMLExporter(template_name="lab", embed_images=True)
    html, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": path.stem}})
    target = out / f"{path.stem}.html"
    atomic_write_text(target, html)
    return target


def render(notebooks: list[Path], out: Path, png: bool = True, width: int = 1200, max_height: int = 8000) -> dict:
    """{notebook: [written files]}: HTML for each, and PNG screenshots of that HTML when ``png``."""
    out.mkdir(parents=True, exist_ok=True)
    written = {nb: [to_html(nb, out)] for nb in notebooks}
    if png and notebooks:
        from brainseg_utils.runtime import browser

        driver = browser.chromium(width, 900)
        try:
            for nb, files in written.items():
                files += browser.full_page_screenshots(
                    driver, files[0].resolve().as_uri(), out / f"{nb.stem}.png", width, max_height
                )
        finally:
            driver.quit()
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output-dir", default=os.environ.get("OUTPUT_DIR") or "outputs", help="the run folder")
    ap.add_argument("--out", default=None, help="where to write (default: OUTPUT_DIR/render/notebooks)")
    ap.add_argument("--no-png", action="store_true", help="HTML only (no Chromium)")
    ap.add_argument("--png-width", type=int, default=1200, help="page width of the screenshots, CSS pixels")
    ap.add_argument("--max-height", type=int, default=8000, help="the tallest PNG; longer pages are split")
    args = ap.parse_args(argv)
    folder = Path(args.output_dir) / "notebooks"
    notebooks = sorted(folder.glob("*.ipynb"))
    if not notebooks:
        print(f"error: no executed notebooks in {folder} (run `bash run_all.sh` first, or pass --output-dir)",
              file=sys.stderr)  # fmt: skip
        return 2
    out = Path(args.out) if args.out else Path(args.output_dir) / "render" / "notebooks"
    try:
        written = render(notebooks, out, png=not args.no_png, width=args.png_width, max_height=args.max_height)
    except RuntimeError as exc:  # Chromium, its driver or selenium missing
        print(f"error: {exc}; --no-png writes the HTML alone", file=sys.stderr)
        return 2
    for nb, files in written.items():
        print(f"{nb.name}: " + ", ".join(str(f) for f in files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
