"""The demo page in headless Chromium: pick an example, draw a box by two clicks, get a prediction; results
cleared when another example is picked; the page recovers from a refused upload.

Needs Debian's chromium and chromium-driver (.ci/run installs them). Without them the test is
skipped locally, and fails in CI (BRAINSEG_REQUIRE_BROWSER=1) so the check cannot silently vanish.
"""

import os
import re
import time

import numpy as np
import pytest
import torch
from PIL import Image
from uploads import launch_local, nifti

from brainseg_utils.app import demo as D
from brainseg_utils.app.predictor import Predictor
from brainseg_utils.models.sam.backends import build_backend
from brainseg_utils.models.sam.decoder import SamDecoderModel
from brainseg_utils.models.unet import UNet
from brainseg_utils.runtime import browser

CHROMIUM, DRIVER = browser.binaries()


def _browser():
    if not (CHROMIUM and DRIVER):
        if os.environ.get("BRAINSEG_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium / chromedriver missing; .ci/run installs the Debian packages")
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    return browser.chromium(1400, 1800)  # the same headless Chromium as scripts/render_notebooks.py


def _box_value(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, "#box textarea").get_attribute("value")


def _text(driver, css: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css).text


def _has(driver, css: str) -> bool:
    from selenium.webdriver.common.by import By

    return bool(driver.find_elements(By.CSS_SELECTOR, css))


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """(driver, url, folder): the demo with a PNG example (no slice) and a NIfTI example at slice 5, whose
    brightest slice (where an upload would start) is 13."""
    driver = _browser()
    tmp = tmp_path_factory.mktemp("browser")
    lite = build_backend("litemedsam")
    torch.manual_seed(0)
    pred = Predictor(UNet(base_channels=4), 64, SamDecoderModel(lite, "box", 64).eval(), None, lite, "cpu")
    yy, xx = np.mgrid[:96, :96]
    ex = tmp / "examples" / "example_slice.png"
    ex.parent.mkdir()
    Image.fromarray(
        ((np.hypot(yy - 48, xx - 48) < 35) * 110 + (np.hypot(yy - 40, xx - 52) < 9) * 140).astype(np.uint8)
    ).save(ex)
    vol = np.zeros((64, 64, 20), np.int16)
    vol[10:50, 10:50, :] = np.random.default_rng(0).normal(100, 10, (40, 40, 20)).astype(np.int16)
    vol[20:34, 20:34, 13] = 300
    vol_path = nifti(ex.parent / "example_vol.nii.gz", vol)
    demo = D.build_demo(pred, [[str(ex), None], [str(vol_path), 5]], tmp / "work")
    url = launch_local(demo, allowed_paths=[str(ex.parent)])
    try:
        yield driver, url, tmp
    finally:
        driver.quit()
        demo.close()


def _open(driver, url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    wait = WebDriverWait(driver, 90)
    wait.until(EC.element_to_be_clickable((By.XPATH, "//button[normalize-space()='Segment']")))
    return wait


def _pick_example(driver, wait, name: str):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    # gr.Examples renders each example's label (example_label) in the #examples block
    wait.until(EC.element_to_be_clickable((By.XPATH, f"//*[@id='examples']//*[contains(text(), '{name}')]"))).click()
    wait.until(lambda d: name in _text(d, "#info") and "press Segment" in _text(d, "#info"))


def _segment(driver, wait):
    from selenium.webdriver.common.by import By

    driver.find_element(By.XPATH, "//button[normalize-space()='Segment']").click()
    wait.until(lambda d: "U-Net:" in _text(d, "#info") and _has(d, "#unet img"))


def test_page_predicts_on_an_example(page):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    driver, url, tmp = page
    wait = _open(driver, url)
    _pick_example(driver, wait, "example_slice.png")
    assert "example_slice.png (2-D image)" in _text(driver, "#info")
    slider = driver.find_elements(By.CSS_SELECTOR, "#slice")
    assert not slider or not slider[0].is_displayed(), "a 2-D image has no slice number (the slider is hidden)"
    # two clicks on the displayed slice (96 x 96 px) draw a box
    img = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#view img")))
    w, h = img.size["width"], img.size["height"]
    ActionChains(driver).move_to_element_with_offset(img, -w // 4, -h // 4).click().perform()
    wait.until(lambda d: _box_value(d).endswith(";"))
    ActionChains(driver).move_to_element_with_offset(img, w // 4, h // 4).click().perform()
    wait.until(lambda d: _box_value(d).count(",") == 3)
    x0, y0, x1, y1 = (float(v) for v in _box_value(driver).split(","))
    assert abs(x0 - 24) <= 2 and abs(y0 - 24) <= 2 and abs(x1 - 72) <= 2 and abs(y1 - 72) <= 2
    driver.find_element(By.XPATH, "//label[normalize-space()='Box you draw (two clicks on the slice)']").click()
    driver.find_element(By.XPATH, "//button[normalize-space()='Segment']").click()
    wait.until(lambda d: "SAM, prompt 'Box you draw" in _text(d, "#info"))
    info = _text(driver, "#info")
    assert "U-Net:" in info and "ms" in info and not re.search(r"slice \d", info)
    driver.save_screenshot(str(tmp / "page.png"))


def test_results_cleared_when_another_example_is_picked(page):
    from selenium.webdriver.common.by import By

    driver, url, tmp = page
    wait = _open(driver, url)
    table = _text(driver, "#examples")
    assert "example_vol.nii.gz, slice 5 (0-based index, as in the file)" in table, table
    assert re.search(r"example_slice\.png\s*(\n|$)", table), f"a 2-D example shows no slice number: {table!r}"
    _pick_example(driver, wait, "example_slice.png")
    _segment(driver, wait)
    assert _has(driver, "#sam img") and _has(driver, "#masks a")
    _pick_example(driver, wait, "example_vol.nii.gz")
    assert "example_vol.nii.gz, slice 5 (0-based index, as in the file: 0 to 19)" in _text(driver, "#info")
    assert driver.find_element(By.CSS_SELECTOR, "#slice input[type=number]").get_attribute("value") == "5"
    time.sleep(1)  # nothing may come back late
    assert not _has(driver, "#unet img") and not _has(driver, "#sam img") and not _has(driver, "#masks a")
    _segment(driver, wait)
    assert "slice 5 (0-based" in _text(driver, "#info")


def test_page_recovers_after_a_refused_upload(page):
    from selenium.webdriver.common.by import By

    driver, url, tmp = page
    wait = _open(driver, url)
    bad = tmp / "not_an_image.png"
    bad.write_text("definitely not a picture" * 30)
    driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(bad))
    wait.until(lambda d: "Not shown:" in _text(d, "#info"))
    assert "not_an_image.png: expected a PNG, JPEG or TIFF image" in _text(driver, "#info")
    body = driver.find_element(By.TAG_NAME, "body").text
    assert "Error" not in body, "no component shows an error badge"
    slider = driver.find_element(By.CSS_SELECTOR, "#slice input[type=number]")
    assert slider.is_enabled() and driver.find_element(By.CSS_SELECTOR, "#box textarea").is_enabled()
    good = tmp / "good.nii.gz"
    vol = np.zeros((64, 64, 20), np.int16)
    vol[10:50, 10:50, :] = np.random.default_rng(1).normal(100, 10, (40, 40, 20)).astype(np.int16)
    vol[20:34, 20:34, 13] = 300
    nifti(good, vol)
    driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(good))
    wait.until(lambda d: "good.nii.gz, slice 13 (0-based" in _text(d, "#info") and _has(d, "#view img"))
    _segment(driver, wait)
    assert "Error" not in driver.find_element(By.TAG_NAME, "body").text
