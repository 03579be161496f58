"""The mock Rocket.Chat's page in real headless Chromium: drawn as Rocket.Chat draws attachments, inert when hostile."""

from __future__ import annotations

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from mock_server import MockRocketChat
from tests.browser import chromium, computed_style, console_errors, require_browser

pytestmark = pytest.mark.e2e

WAIT_SECONDS = 10.0
REFRESH_WAIT_SECONDS = 15.0  # the page reloads itself every 5 s
XSS_TITLE = "<img src=x onerror=window.pwned=1>"
TITLE_LINK = "https://prometheus.example/graph?g0.expr=cpu&g0.tab=1"


@pytest.fixture(scope="module")
def browser():
    """One Chromium for the module's tests (starting one takes about a second)."""
    require_browser()
    with chromium() as driver:
        yield driver


@pytest.fixture
def mock():
    with MockRocketChat(port=0) as server:
        yield server


def post(mock: MockRocketChat, hook: str, message: dict) -> None:
    with requests.Session() as http:
        http.trust_env = False
        response = http.post(mock.hook_url(hook), json=message, timeout=5)
    assert response.json() == {"success": True}, response.text


def open_page(browser, mock: MockRocketChat) -> None:
    browser.get(f"{mock.base_url}/")
    WebDriverWait(browser, WAIT_SECONDS).until(lambda driver: driver.find_elements(By.CSS_SELECTOR, "main .channel"))


def attachment(**overrides) -> dict:
    value = {"color": "#d9534f", "title": "FIRING: HighCPU on web-1", "title_link": TITLE_LINK, "text": "*CPU high*",
             "fields": [{"short": True, "title": "Severity", "value": "critical"},
                        {"short": True, "title": "Instance", "value": "web-1:9100"},
                        {"short": False, "title": "Labels", "value": "env=prod, job=node"}]}
    value.update(overrides)
    return value


def test_attachment_has_its_colour_bar_title_link_and_fields_two_per_row(browser, mock):
    post(mock, "critical", {"text": "[FIRING:1] HighCPU", "attachments": [attachment()]})
    open_page(browser, mock)
    (drawn,) = browser.find_elements(By.CSS_SELECTOR, "#channel-critical .attachment")
    assert computed_style(browser, drawn, "border-left-color") == "rgb(217, 83, 79)"  # #d9534f
    assert computed_style(browser, drawn, "border-left-style") == "solid"
    assert float(computed_style(browser, drawn, "border-left-width").removesuffix("px")) >= 2
    link = drawn.find_element(By.CSS_SELECTOR, ".title a")
    assert (link.text, link.get_attribute("href"), link.get_attribute("target")) == (
        "FIRING: HighCPU on web-1", TITLE_LINK, "_blank")
    assert drawn.find_element(By.TAG_NAME, "strong").text == "CPU high"
    severity, instance, labels = drawn.find_elements(By.CSS_SELECTOR, ".field")
    # Short fields side by side, a long one on a row of its own below them.
    assert severity.location["y"] == instance.location["y"] < labels.location["y"]
    assert severity.location["x"] < instance.location["x"]
    assert labels.size["width"] > instance.size["width"]
    assert console_errors(browser) == []  # the CSP let the page's one style sheet through, nothing else was refused


def test_a_hostile_title_stays_text_and_runs_nothing(browser, mock):
    post(mock, "warning", {"text": "see [this](javascript:window.pwned=1)", "attachments": [
        attachment(title=XSS_TITLE, text="<script>window.pwned=1</script>",
                   fields=[{"short": True, "title": "x", "value": "<img src=x onerror=window.pwned=1>"}])]})
    open_page(browser, mock)
    title = browser.find_element(By.CSS_SELECTOR, "#channel-warning .attachment .title")
    assert title.text == XSS_TITLE
    assert browser.find_element(By.CSS_SELECTOR, "#channel-warning .attachment-text").text == (
        "<script>window.pwned=1</script>")
    assert browser.find_elements(By.TAG_NAME, "img") == [] and browser.find_elements(By.TAG_NAME, "script") == []
    hrefs = [anchor.get_attribute("href") for anchor in browser.find_elements(By.TAG_NAME, "a")]
    assert hrefs == [TITLE_LINK]  # only the http(s) title link; the javascript: one is text
    assert "[this](javascript:window.pwned=1)" in browser.find_element(By.CSS_SELECTOR, "#channel-warning .text").text
    assert browser.execute_script("return typeof window.pwned") == "undefined"


def test_the_page_shows_new_messages_by_itself(browser, mock):
    open_page(browser, mock)
    assert browser.find_elements(By.CSS_SELECTOR, "#channel-info .message") == []
    post(mock, "info", {"text": "arrived later"})
    WebDriverWait(browser, REFRESH_WAIT_SECONDS).until(
        lambda driver: [element.text for element in driver.find_elements(By.CSS_SELECTOR, "#channel-info .text")]
        == ["arrived later"])
