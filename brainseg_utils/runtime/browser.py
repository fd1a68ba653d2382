"""Headless Chromium for developer tools: the demo's browser test and ``scripts/render_notebooks.py``.

Needs Debian's ``chromium`` and ``chromium-driver`` (or any ``chromium`` / ``chromedriver`` on PATH) and the
``selenium`` package (requirements-dev.txt); nothing in the notebooks or the demo imports this module.
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def binaries() -> tuple[str | None, str | None]:
    """(chromium, chromedriver) found on PATH, None where missing."""
    return shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")


def available() -> bool:
    return all(binaries())


def chromium(width: int = 1400, height: int = 1800):
    """A headless Chromium ``selenium`` driver with a ``width`` x ``height`` window; a RuntimeError naming what
    to install when Chromium, its driver or selenium is missing."""
    browser, driver = binaries()
    if not (browser and driver):
        raise RuntimeError("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        raise RuntimeError("selenium is missing: pip install -r requirements-dev.txt") from exc
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in (*FLAGS, f"--window-size={width},{height}"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=opts)


def page_height(driver) -> int:
    return int(driver.execute_script("return Math.ceil(document.documentElement.scrollHeight)"))


def full_page_screenshots(driver, url: str, out: Path, width: int, max_height: int = 8000) -> list[Path]:
    """Screenshots of the whole page at ``url``, ``width`` CSS pixels wide, as PNGs of at most ``max_height``
    pixels each: ``out`` (e.g. ``nb.png``) when one is enough, else ``nb-1.png``, ``nb-2.png``, ... in page order.
    Uses the DevTools ``Page.captureScreenshot`` beyond the viewport, so nothing is cut at the window's edge."""
    driver.get(url)
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}
    )
    total = page_height(driver)
    tops = list(range(0, max(total, 1), max_height))
    paths = [out] if len(tops) == 1 else [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(1, len(tops) + 1)]
    for top, path in zip(tops, paths, strict=True):
        clip = {"x": 0, "y": top, "width": width, "height": min(max_height, total - top), "scale": 1}
        shot = driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
        )
        path.write_bytes(base64.b64decode(shot["data"]))
    return paths
