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

from brainseg_utils.app import browser as B
from brainseg_utils.app import demo as D
from brainseg_utils.app import display as V
from brainseg_utils.app.predictor import Predictor
from brainseg_utils.models.sam.backends import build_backend
from brainseg_utils.models.sam.decoder import SamDecoderModel
from brainseg_utils.models.unet import UNet

CHROMIUM, DRIVER = B.chromium_paths()


def _browser():
    if not (CHROMIUM and DRIVER):
        if os.environ.get("BRAINSEG_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium / chromedriver missing; .ci/run installs the Debian packages")
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    return B.chrome(1280, 800)  # a laptop screen: the examples must be visible without scrolling


_box_value, _text, _has = B.box_value, B.text, B.has


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
    truth = ex.parent / "example_slice_truth.png"  # a test-split example's ground truth: the bright spot
    Image.fromarray(((np.hypot(yy - 40, xx - 52) < 9) * 255).astype(np.uint8)).save(truth)
    vol = np.zeros((64, 64, 20), np.int16)
    vol[10:50, 10:50, :] = np.random.default_rng(0).normal(100, 10, (40, 40, 20)).astype(np.int16)
    vol[20:34, 20:34, 13] = 300
    vol_path = nifti(ex.parent / "example_vol.nii.gz", vol)
    demo = D.build_demo(pred, [[str(ex), None, str(truth)], [str(vol_path), 5]], tmp / "work")
    url = launch_local(demo, allowed_paths=[str(ex.parent)])
    try:
        yield driver, url, tmp
    finally:
        driver.quit()
        demo.close()


def _open(driver, url):
    return B.open_page(driver, url)


def _pick_example(driver, wait, name: str):
    B.pick_example(driver, wait, name)


def _segment(driver, wait):
    B.segment(driver, wait)


def test_page_predicts_on_an_example(page):
    """At 1280 x 800: examples visible without scrolling; the enlarged view (>= 480 px on screen) shows the first
    corner after one click and the box after two; the results come with the example's ground truth and Dice."""
    from selenium.webdriver.common.by import By

    driver, url, tmp = page
    wait = _open(driver, url)
    bottom = driver.execute_script("return document.querySelector('#examples').getBoundingClientRect().bottom")
    assert bottom <= driver.execute_script("return window.innerHeight"), "examples visible without scrolling"
    _pick_example(driver, wait, "example_slice.png")
    assert "example_slice.png (2-D image)" in _text(driver, "#info") and "ground truth" in _text(driver, "#info")
    slider = driver.find_elements(By.CSS_SELECTOR, "#slice")
    assert not slider or not slider[0].is_displayed(), "a 2-D image has no slice number (the slider is hidden)"
    drawn = B.drawn_box(driver)
    assert max(drawn[2:]) >= 480, f"the view is drawn {drawn[2]:.0f} x {drawn[3]:.0f} px on screen"
    plain = B.picture(driver, "#view img")
    assert plain.shape == (480, 480, 3), "a 96 x 96 slice is served 5 x larger"
    before = B.view_src(driver)
    B.click_view(driver, 0.25, 0.25)
    wait.until(lambda d: _box_value(d).endswith(";") and B.view_src(d) != before)
    x, y = (int(v) for v in _box_value(driver)[:-1].split(","))
    assert abs(x - 24) <= 1 and abs(y - 24) <= 1
    assert tuple(B.picture(driver, "#view img")[y * 5, x * 5]) == V.BOX_COLOUR, "the first corner is marked"
    first = B.view_src(driver)
    B.click_view(driver, 0.75, 0.75)
    wait.until(lambda d: _box_value(d).count(",") == 3 and B.view_src(d) != first)
    x0, y0, x1, y1 = (int(v) for v in _box_value(driver).split(","))
    assert abs(x0 - 24) <= 1 and abs(y0 - 24) <= 1 and abs(x1 - 72) <= 1 and abs(y1 - 72) <= 1
    shown = B.picture(driver, "#view img")
    mid = (y0 + y1) * 5 // 2
    for row, col in ((y0 * 5, mid), (y1 * 5 + 4, mid), (mid, x0 * 5), (mid, x1 * 5 + 4)):  # the four edges
        assert tuple(shown[row, col]) == V.BOX_COLOUR, (row, col)
    assert tuple(shown[mid, mid]) == tuple(plain[mid, mid]), "the inside is the slice"
    driver.find_element(By.XPATH, "//label[normalize-space()='Box you draw (two clicks on the slice)']").click()
    B.button(driver, "Segment").click()
    wait.until(lambda d: "SAM, prompt 'Box you draw" in _text(d, "#info"))
    info = _text(driver, "#info")
    assert "U-Net:" in info and "ms" in info and not re.search(r"slice \d", info)
    assert "Ground truth:" in info and info.count("Dice") >= 2 and "steady" in info
    wait.until(lambda d: "Dice" in _text(d, "#unet") and "Dice" in _text(d, "#sam"))  # next to each output
    driver.save_screenshot(str(tmp / "page.png"))


def test_results_cleared_when_another_example_is_picked(page):
    from selenium.webdriver.common.by import By

    driver, url, tmp = page
    wait = _open(driver, url)
    table = _text(driver, "#examples")
    assert "example_vol.nii.gz, slice 5 (0-based index, as in the file)" in table, table
    assert re.search(r"example_slice\.png · ground truth, Dice\s*(\n|$)", table), f"no slice number for 2-D: {table!r}"
    _pick_example(driver, wait, "example_slice.png")
    _segment(driver, wait)
    assert _has(driver, "#sam img") and _has(driver, "#masks a")
    _pick_example(driver, wait, "example_vol.nii.gz")
    assert "example_vol.nii.gz, slice 5 (0-based index, as in the file: 0 to 19)" in _text(driver, "#info")
    assert driver.find_element(By.CSS_SELECTOR, "#slice input[type=number]").get_attribute("value") == "5"
    time.sleep(1)  # nothing may come back late
    assert not _has(driver, "#unet img") and not _has(driver, "#sam img") and not _has(driver, "#masks a")
    _segment(driver, wait)
    assert "slice 5 (0-based" in _text(driver, "#info") and "slice 5 only" in _text(driver, "#info")
    assert "_z5_one_slice_unet_mask_" in _text(driver, "#masks")
    B.segment(driver, wait, whole_volume=True)
    assert "example_vol.nii.gz: the whole volume" in _text(driver, "#info")
    assert "_all_slices_unet_mask_" in _text(driver, "#masks") and "whole volume" in _text(driver, "#unet")


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
