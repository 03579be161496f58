"""Debian's headless Chromium driven by Selenium, for the browser tests and scripts/screenshots.py.

`make test` installs chromium and chromium-driver (tests/e2e/install-tools.sh) when it runs as root; elsewhere a
browser test skips with the command that installs them, except under REQUIRE_E2E=1, where the skip is a failure
(the convention of tests/e2e/tools.py). Selenium is given the driver's path and SE_OFFLINE=true, so Selenium Manager
never downloads a browser or a driver.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator

CHROMIUM_PATH = "/usr/bin/chromium"  # Debian's package chromium
CHROMEDRIVER_PATH = "/usr/bin/chromedriver"  # Debian's package chromium-driver
INSTALL_HINT = "sudo apt-get install --no-install-recommends chromium chromium-driver"
DESKTOP_WINDOW = (1280, 900)
PHONE_VIEWPORT = (390, 844)  # CSS pixels of a current phone (iPhone 12 to 15)
PAGE_LOAD_TIMEOUT_SECONDS = 15
# Flags for a quiet, reproducible browser in a container: no sandbox (root in a container has none to give), no GPU,
# /tmp instead of a small /dev/shm, and no network of its own (updates, sync, QUIC, first-run pages).
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)


def missing_browser() -> str | None:
    """Why no browser test can run here (and how to fix it); None when Chromium, its driver and Selenium are there."""
    missing = [path for path in (CHROMIUM_PATH, CHROMEDRIVER_PATH) if not os.access(path, os.X_OK)]
    if missing:
        return f"needs {' and '.join(missing)}: run `make test` as root (it installs them), or `{INSTALL_HINT}`"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "needs selenium: `make dev-venv` (or pip install -r requirements-dev.txt)"
    return None


def require_browser() -> None:
    """Skip the test, or fail it under REQUIRE_E2E=1, when the browser cannot run here."""
    from tests.e2e.tools import skip_or_fail

    reason = missing_browser()
    if reason:
        skip_or_fail(reason)


@contextlib.contextmanager
def chromium(window_size: tuple[int, int] = DESKTOP_WINDOW) -> Iterator["webdriver.Chrome"]:
    """A headless Chromium with a fresh profile in a temporary directory; quit and removed on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # belt and braces: Selenium Manager must not fetch anything
    profile = tempfile.mkdtemp(prefix="rcwebhook-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM_PATH
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={window_size[0]},{window_size[1]}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, for console_errors()
    try:
        driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER_PATH))
    except BaseException:
        shutil.rmtree(profile, ignore_errors=True)
        raise
    try:
        driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT_SECONDS)
        yield driver
    finally:
        driver.quit()  # ends chromedriver and the browser it started
        shutil.rmtree(profile, ignore_errors=True)


def set_viewport(driver, width: int, height: int, *, mobile: bool = False) -> None:
    """Make the page's viewport exactly width × height CSS pixels at scale 1 (a phone's when mobile)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})


def computed_style(driver, element, property_name: str) -> str:
    """The element's computed value of a CSS property, e.g. "rgb(217, 83, 79)" for a colour."""
    return driver.execute_script(
        "return getComputedStyle(arguments[0]).getPropertyValue(arguments[1]);", element, property_name)


def console_errors(driver) -> list[str]:
    """The console's errors since the last call (CSP refusals, failed loads, script errors)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
