"""A headless Chromium driven by Selenium, for the review page's browser test and its screenshot.

The browser and its driver are the system's (``chromium`` and ``chromedriver``, the Debian packages
``chromium chromium-driver`` that ``scripts/bootstrap.sh`` installs); the driver's path is given to Selenium
explicitly, so Selenium Manager never runs and nothing is downloaded. Selenium is a dev extra, imported only
here and only when a browser is started.
"""

from __future__ import annotations

import shutil

from configs import UserError

BROWSERS = ("chromium", "chromium-browser")
DRIVERS = ("chromedriver",)
INSTALL_HINT = ("run scripts/bootstrap.sh (it installs the Debian packages chromium and chromium-driver, and "
                "selenium with the dev extras)")


class BrowserMissing(UserError, RuntimeError):
    """No Chromium, chromedriver or Selenium here; the message says which and how to install it."""


def find_browser() -> tuple[str, str]:
    """The paths of ``chromium`` and ``chromedriver`` on PATH; :class:`BrowserMissing` names what is absent."""
    browser = next((p for p in map(shutil.which, BROWSERS) if p), None)
    driver = next((p for p in map(shutil.which, DRIVERS) if p), None)
    missing = [name for name, path in (("chromium", browser), ("chromedriver", driver)) if not path]
    if missing:
        raise BrowserMissing(f"{' and '.join(missing)} not found on PATH; {INSTALL_HINT}")
    return browser, driver


def headless_chromium(width: int = 1280, height: int = 900):
    """A Selenium WebDriver of a headless Chromium at ``width``×``height`` (the caller quits it)."""
    browser, driver = find_browser()
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        raise BrowserMissing(f"selenium is not installed ({exc}); {INSTALL_HINT}") from exc
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--autoplay-policy=no-user-gesture-required", "--mute-audio", f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.binary_location = browser
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))
