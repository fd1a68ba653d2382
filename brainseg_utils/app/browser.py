"""The demo page in headless Chromium: what the browser tests (tests/test_demo_browser.py) and the screenshots
(scripts/render_demo.py) share. Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package
(requirements-dev.txt); nothing here is imported by the app itself.

Elements are found by the ``elem_id`` values ``demo._layout`` gives them (#upload, #slice, #box, #view, #unet,
#sam, #info, #masks, #examples) and the buttons by their words.
"""

from __future__ import annotations

import urllib.request

import numpy as np

from brainseg_utils.runtime import browser as rt_browser


def chromium_paths() -> tuple[str | None, str | None]:
    """(chromium, chromedriver) on PATH, or None for a missing one (``runtime.browser.binaries``)."""
    return rt_browser.binaries()


def chrome(width: int = 1280, height: int = 800):
    """A headless Chromium (``runtime.browser.chromium``) whose page area, not its window, is ``width`` x ``height``
    CSS pixels."""
    d = rt_browser.chromium(width, height)
    inner = d.execute_script("return [window.innerWidth, window.innerHeight]")
    d.set_window_size(2 * width - inner[0], 2 * height - inner[1])
    return d


def find(driver, css: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css)


def text(driver, css: str) -> str:
    return find(driver, css).text


def has(driver, css: str) -> bool:
    from selenium.webdriver.common.by import By

    return bool(driver.find_elements(By.CSS_SELECTOR, css))


def box_value(driver) -> str:
    return find(driver, "#box textarea, #box input").get_attribute("value")


def button(driver, words: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.XPATH, f"//button[normalize-space()='{words}']")


def open_page(driver, url: str, timeout: float = 90):
    """Load the page and wait for the Segment button; returns a ``WebDriverWait``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    wait = WebDriverWait(driver, timeout)
    wait.until(EC.element_to_be_clickable((By.XPATH, "//button[normalize-space()='Segment']")))
    return wait


def pick_example(driver, wait, name: str) -> None:
    """Click the example whose label contains ``name``; wait until the page shows it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    # gr.Examples renders each example's label (demo.example_label) in the #examples block
    wait.until(EC.element_to_be_clickable((By.XPATH, f"//*[@id='examples']//*[contains(text(), '{name}')]"))).click()
    wait.until(lambda d: name in text(d, "#info") and "press Segment" in text(d, "#info") and has(d, "#view img"))


def view_src(driver) -> str:
    return find(driver, "#view img").get_attribute("src")


def drawn_box(driver, css: str = "#view img") -> tuple[float, float, float, float]:
    """(left, top, width, height) of the picture as drawn inside its ``<img>`` (CSS pixels, relative to the
    element): centred, aspect ratio kept; Gradio's images use ``object-fit: scale-down`` (never enlarged beyond
    the picture's own size), ``contain`` is handled too."""
    img = find(driver, css)
    nw, nh, fit = driver.execute_script(
        "const i = arguments[0]; return [i.naturalWidth, i.naturalHeight, getComputedStyle(i).objectFit]", img
    )
    w, h = img.size["width"], img.size["height"]
    scale = min(w / nw, h / nh, 1.0 if fit == "scale-down" else float("inf"))
    return (w - nw * scale) / 2, (h - nh * scale) / 2, nw * scale, nh * scale


def click_view(driver, fx: float, fy: float) -> None:
    """Click the view's picture at fractions (fx, fy) of its drawn width and height (0, 0: top left)."""
    from selenium.webdriver.common.action_chains import ActionChains

    img = find(driver, "#view img")
    left, top, w, h = drawn_box(driver)
    x, y = left + fx * w, top + fy * h  # from the element's top left; selenium offsets are from its centre
    dx, dy = x - img.size["width"] / 2, y - img.size["height"] / 2
    ActionChains(driver).move_to_element_with_offset(img, int(round(dx)), int(round(dy))).click().perform()


def picture(driver, css: str) -> np.ndarray:
    """The picture an ``<img>`` shows, fetched from the local server: uint8 (H, W, 3)."""
    from io import BytesIO

    from PIL import Image

    src = find(driver, css).get_attribute("src")
    if not src.startswith("http://127.0.0.1") and not src.startswith("http://localhost"):
        raise ValueError(f"only pictures of a local server are fetched, not {src[:60]}")
    with urllib.request.urlopen(src, timeout=30) as r:  # noqa: S310 (a loopback URL, checked above)
        return np.asarray(Image.open(BytesIO(r.read())).convert("RGB"))


def segment(driver, wait, whole_volume: bool = False) -> None:
    """Press Segment (or Segment the whole volume) and wait for the results."""
    button(driver, "Segment the whole volume" if whole_volume else "Segment").click()
    marker = "Downloads: one 3-D NIfTI" if whole_volume else " px, "
    wait.until(lambda d: marker in text(d, "#info") and has(d, "#unet img"))


def screenshot(driver, path, full_page: bool = False) -> None:
    """Save the page area as PNG; ``full_page``: the whole page, the window stretched to its height meanwhile."""
    if not full_page:
        driver.save_screenshot(str(path))
        return
    size = driver.get_window_size()
    chrome_px = size["height"] - driver.execute_script("return window.innerHeight")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(size["width"], height + chrome_px)
    try:
        driver.save_screenshot(str(path))
    finally:
        driver.set_window_size(size["width"], size["height"])
