"""The demo page in headless Chromium: load it, pick an example, draw a box by two clicks, get a prediction.

Needs Debian's chromium and chromium-driver (.ci/run installs them). Without them the test is
skipped locally, and fails in CI (BRAINSEG_REQUIRE_BROWSER=1) so the check cannot silently vanish.
"""

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from uploads import launch_local

from brainseg_utils.app import demo as D
from brainseg_utils.app.predictor import Predictor
from brainseg_utils.models.sam.backends import build_backend
from brainseg_utils.models.sam.decoder import SamDecoderModel
from brainseg_utils.models.unet import UNet

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def _browser():
    if not (CHROMIUM and DRIVER):
        if os.environ.get("BRAINSEG_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium / chromedriver missing; .ci/run installs the Debian packages")
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1800",
    ):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(DRIVER), options=opts)


def _box_value(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.XPATH, "//label[contains(., 'box x0,y0,x1,y1')]//textarea").get_attribute("value")


def test_page_predicts_on_an_example(tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _browser()
    lite = build_backend("litemedsam")
    torch.manual_seed(0)
    pred = Predictor(UNet(base_channels=4), 64, SamDecoderModel(lite, "box", 64).eval(), None, lite, "cpu")
    yy, xx = np.mgrid[:96, :96]
    ex = tmp_path / "examples" / "example_slice.png"
    ex.parent.mkdir()
    Image.fromarray(
        ((np.hypot(yy - 48, xx - 48) < 35) * 110 + (np.hypot(yy - 40, xx - 52) < 9) * 140).astype(np.uint8)
    ).save(ex)
    demo = D.build_demo(pred, [[str(ex), 0]], tmp_path / "work")
    url = launch_local(demo, allowed_paths=[str(ex.parent)])
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 90)
        wait.until(EC.element_to_be_clickable((By.XPATH, "//button[normalize-space()='Segment']")))
        # gr.Examples renders each example as a table row; the file name sits in a div of it
        example = wait.until(
            EC.element_to_be_clickable((By.XPATH, "//body//div[contains(text(), 'example_slice.png')]"))
        )
        example.click()
        # the file component shows the loaded file with its size and a download arrow
        wait.until(lambda d: "⇣" in d.find_element(By.TAG_NAME, "body").text)
        # two clicks on the displayed slice (96 x 96 px) draw a box
        img = wait.until(
            EC.visibility_of_element_located(
                (
                    By.XPATH,
                    "//*[contains(text(),'slice (click two corners')]/ancestor::div[contains(@class,'block')][1]//img",
                )
            )
        )
        w, h = img.size["width"], img.size["height"]
        ActionChains(driver).move_to_element_with_offset(img, -w // 4, -h // 4).click().perform()
        wait.until(lambda d: _box_value(d).endswith(";"))
        ActionChains(driver).move_to_element_with_offset(img, w // 4, h // 4).click().perform()
        wait.until(lambda d: _box_value(d).count(",") == 3)
        x0, y0, x1, y1 = (float(v) for v in _box_value(driver).split(","))
        assert abs(x0 - 24) <= 2 and abs(y0 - 24) <= 2 and abs(x1 - 72) <= 2 and abs(y1 - 72) <= 2
        driver.find_element(By.XPATH, "//label[normalize-space()='box']").click()
        driver.find_element(By.XPATH, "//button[normalize-space()='Segment']").click()
        wait.until(lambda d: "SAM (box)" in d.find_element(By.TAG_NAME, "body").text)
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "U-Net:" in body and "ms" in body and "slice 0 of 1" in body
        driver.save_screenshot(str(tmp_path / "page.png"))
    finally:
        driver.quit()
        demo.close()
