"""Open an HTML file in headless Chromium (Debian's chromium + chromium-driver) through selenium."""

import shutil
from contextlib import contextmanager

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@contextmanager
def headless_chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path keeps selenium from looking for (downloading) one.
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(path):
    """(console errors, [(naturalWidth, naturalHeight, shown width, shown height) per image]) of a page."""
    with headless_chromium() as driver:
        driver.get(path.resolve().as_uri())
        images = driver.execute_script(
            "return [...document.images].map(i => { const r = i.getBoundingClientRect();"
            " return [i.naturalWidth, i.naturalHeight, r.width, r.height]; })")
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    return errors, images
