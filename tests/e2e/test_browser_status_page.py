"""The relay's status page in real headless Chromium, the relay under gunicorn wired to a mock Rocket.Chat: alerts
posted to /webhook appear and resolve without a reload, hostile alert contents stay text, STATUS_TOKEN asks for
Basic credentials and the page opens with them, and a phone shows everything without sideways scrolling."""

from __future__ import annotations

import datetime
import json
import uuid

import pytest
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.support.ui import WebDriverWait

from mock_server import MockRocketChat
from tests.browser import PHONE_VIEWPORT, chromium, console_errors, require_browser, set_viewport
from tests.helpers import GUNICORN_COMMAND, Relay, free_port, relay_environ

pytestmark = pytest.mark.e2e

WAIT_SECONDS = 10.0  # an update takes the relay's event, /ws, status.js's 250 ms debounce and one fetch
POLL_SECONDS = 0.05
STATUS_TOKEN = "some-token"
CRITICAL_RGB = "rgb(217, 83, 79)"  # #d9534f, the critical message's colour
RESOLVED_RGB = "rgb(92, 184, 92)"  # #5cb85c, the resolved message's colour
HOSTILE_INSTANCE = "<img src=x onerror=window.pwned=1>"
HOSTILE_SUMMARY = "<script>window.pwned=2</script>"
FIRING_NAMES = "section.firing .card .alert-name"
RESOLVED_NAMES = "section.resolved .card .alert-name"
# An opening handshake (RFC 6455 section 4.1): without one, GET /ws is refused with 400 before any access check.
WEBSOCKET_HANDSHAKE = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                       "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


@pytest.fixture(scope="module")
def browser():
    """One Chromium for the module's tests (starting one takes about a second)."""
    require_browser()
    with chromium() as driver:
        yield driver


@pytest.fixture(scope="module")
def mock():
    with MockRocketChat(port=0, rate_limit_count=0) as server:
        yield server


def start_relay(mock: MockRocketChat, output_dir, **settings: str) -> Relay:
    """The relay under gunicorn, one mock hook per severity, no pacing, state in memory (relay_environ's default)."""
    hooks = {f"ROCKETCHAT_WEBHOOK_{name.upper()}": mock.hook_url(name) for name in ("critical", "warning", "info")}
    environ = relay_environ({"HOST": "127.0.0.1", "PORT": str(free_port()), "ROCKETCHAT_RATE_LIMIT": "0",
                             **hooks, **settings})
    return Relay.start(GUNICORN_COMMAND, environ, output_dir=output_dir)


@pytest.fixture(scope="module")
def relay(mock, tmp_path_factory):
    relay = start_relay(mock, tmp_path_factory.mktemp("relay"))
    yield relay
    relay.stop()


@pytest.fixture(scope="module")
def token_relay(mock, tmp_path_factory):
    relay = start_relay(mock, tmp_path_factory.mktemp("token-relay"), STATUS_TOKEN=STATUS_TOKEN)
    yield relay
    relay.stop()


def unique_name(prefix: str) -> str:
    """An alert name no other test of the module uses (they share the relay and its journal)."""
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def alert(name: str, *, severity: str = "critical", labels: dict | None = None,
          annotations: dict | None = None) -> dict:
    """A firing alert as Alertmanager sends it, started five minutes ago."""
    started = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    return {
        "status": "firing",
        "labels": {"alertname": name, "severity": severity, "instance": "web-1:9100", "job": "node", **(labels or {})},
        "annotations": {"summary": f"{name} is firing", **(annotations or {})},
        "startsAt": started.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
    }


def resolved(firing: dict) -> dict:
    """The same alert (labels, startsAt) as Alertmanager sends it once resolved."""
    return {**firing, "status": "resolved",
            "endsAt": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")}


def post(relay: Relay, *alerts: dict) -> None:
    """One Alertmanager notification to the relay's /webhook; 200 means delivered to the mock."""
    status = "firing" if any(item["status"] == "firing" for item in alerts) else "resolved"
    notification = {"version": "4", "groupKey": "{}:{alertname=\"browser\"}", "status": status,
                    "receiver": "rocketchat", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
                    "externalURL": "http://alertmanager:9093", "alerts": list(alerts)}
    response = relay.post_webhook(json.dumps(notification))
    assert response.status_code == 200, response.text


def wait_for(driver, script: str, *args, what: str = "", timeout_seconds: float = WAIT_SECONDS):
    """Poll a script until it returns something truthy (its value); the script runs whole in the page, so a swap of
    the live part between two lookups cannot leave a stale element."""
    return WebDriverWait(driver, timeout_seconds, poll_frequency=POLL_SECONDS).until(
        lambda driver: driver.execute_script(script, *args), f"waiting for {what or script} {list(args)}")


def texts(driver, selector: str) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]), node => node.textContent.trim());", selector)


def open_live(driver, url: str) -> None:
    """Open the page and wait until its WebSocket is open."""
    driver.get(url)
    wait_for(driver, "return document.body.dataset.liveState === 'live';")


# The card of the alert named arguments[1] in section.<arguments[0]>, read in one go (the next swap may replace it).
DESCRIBE_CARD = """
const card = Array.from(document.querySelectorAll(`section.${arguments[0]} .card`))
    .find(card => card.querySelector('.alert-name').textContent.trim() === arguments[1]);
if (!card) { return null; }
const group = card.closest('.severity-group');
return {
    classes: Array.from(card.classList),
    group_classes: group ? Array.from(group.classList) : [],
    border_color: getComputedStyle(card).borderLeftColor,
    summary: (card.querySelector('.alert-summary') || {}).textContent,
    labels: Array.from(card.querySelectorAll('dl.labels div'),
                       pair => [pair.querySelector('dt').textContent, pair.querySelector('dd').textContent]),
};
"""


def wait_for_card(driver, section: str, name: str) -> dict:
    """What the card of the alert named name in section (firing or resolved) shows, once it is there."""
    return wait_for(driver, DESCRIBE_CARD, section, name, what="the card of (section, name)")


def test_a_posted_alert_appears_firing_then_resolved_without_a_reload(browser, relay):
    name = unique_name("BrowserCPU")
    firing = alert(name, severity="critical")
    open_live(browser, f"{relay.base_url}/")
    browser.execute_script("window.__marker = 1;")
    assert name not in texts(browser, FIRING_NAMES)

    post(relay, firing)
    card = wait_for_card(browser, "firing", name)
    assert "sev-critical" in card["classes"] and "sev-critical" in card["group_classes"]
    assert card["border_color"] == CRITICAL_RGB
    assert name not in texts(browser, RESOLVED_NAMES)

    post(relay, resolved(firing))
    card = wait_for_card(browser, "resolved", name)
    assert "sev-resolved" in card["classes"] and card["border_color"] == RESOLVED_RGB
    assert name not in texts(browser, FIRING_NAMES)
    # The same document all along: status.js swapped the live part in, nothing navigated.
    assert browser.execute_script("return window.__marker;") == 1
    assert browser.execute_script("return performance.getEntriesByType('navigation').length;") == 1
    assert int(browser.execute_script("return document.body.dataset.refreshes;")) >= 2
    assert browser.execute_script("return document.body.dataset.liveState;") == "live"


def test_hostile_alert_contents_stay_text_and_run_nothing(browser, relay):
    name = unique_name("BrowserXSS")
    hostile = alert(name, severity="warning", labels={"instance": HOSTILE_INSTANCE},
                    annotations={"summary": HOSTILE_SUMMARY})
    console_errors(browser)  # drop what earlier tests logged
    open_live(browser, f"{relay.base_url}/")
    post(relay, hostile)  # arrives through the live swap (DOMParser, importNode): the riskier path

    def assert_inert(how: str) -> None:
        card = wait_for_card(browser, "firing", name)
        assert card["summary"] == HOSTILE_SUMMARY, how
        assert ["instance", HOSTILE_INSTANCE] in card["labels"], how
        assert browser.execute_script("return document.querySelectorAll('#live img, #live script').length;") == 0, how
        scripts = browser.execute_script("return Array.from(document.scripts, script => script.src);")
        assert [src.rsplit("/", 1)[-1] for src in scripts] == ["status.js"], how
        assert browser.execute_script("return typeof window.pwned;") == "undefined", how

    assert_inert("swapped in by status.js")
    open_live(browser, f"{relay.base_url}/")
    assert_inert("rendered by the server")
    assert console_errors(browser) == []  # no CSP refusal, no failed load, no script error


def test_with_status_token_the_page_asks_for_basic_credentials(token_relay):
    base_url, http = token_relay.base_url, token_relay.http
    for path, headers in (("/", {}), ("/?fragment=live", {}), ("/ws", WEBSOCKET_HANDSHAKE)):
        for auth in (None, ("anyone", "wrong-token")):
            refused = http.get(f"{base_url}{path}", headers=headers, auth=auth, timeout=5)
            assert refused.status_code == 401, (path, auth)
            assert refused.headers["WWW-Authenticate"].startswith("Basic realm="), (path, auth)
    assert http.get(f"{base_url}/", auth=("anyone", STATUS_TOKEN), timeout=5).status_code == 200
    assert http.get(f"{base_url}/", headers={"Authorization": f"Bearer {STATUS_TOKEN}"}, timeout=5).status_code == 200
    with http.get(f"{base_url}/ws", headers=WEBSOCKET_HANDSHAKE, auth=("anyone", STATUS_TOKEN), timeout=5,
                  stream=True) as upgraded:
        assert upgraded.status_code == 101


def assert_live_and_updating(driver, relay: Relay) -> None:
    """The page's WebSocket is open (its handshake was authorized) and an alert posted now is swapped in."""
    wait_for(driver, "return document.body.dataset.liveState === 'live';")
    name = unique_name("BrowserToken")
    post(relay, alert(name))
    try:
        wait_for_card(driver, "firing", name)
    except TimeoutException:
        indicator = driver.execute_script("return document.getElementById('live-indicator').textContent;")
        raise AssertionError(f"{name} was not swapped in within {WAIT_SECONDS} s; the page says: {indicator}") from None
    state = driver.execute_script("return [document.body.dataset.liveState, "
                                  "document.getElementById('live-indicator').textContent];")
    assert state == ["live", "live"]


def test_with_status_token_the_page_opens_with_credentials_in_the_url_and_goes_live(browser, token_relay):
    browser.get(f"http://anyone:{STATUS_TOKEN}@127.0.0.1:{token_relay.port}/")
    assert browser.find_element("css selector", "h1").text == "rocketchat-webhook"
    assert_live_and_updating(browser, token_relay)


def test_with_status_token_the_page_goes_live_once_logged_in(browser, token_relay):
    """After a login (the browser's dialog or a URL with credentials) the browser's HTTP auth cache holds them: the
    plain URL then opens, and the fragment fetches and the WebSocket handshake carry them too."""
    browser.get(f"http://anyone:{STATUS_TOKEN}@127.0.0.1:{token_relay.port}/")
    browser.get(f"{token_relay.base_url}/")
    assert browser.execute_script("return document.URL;") == f"{token_relay.base_url}/"  # no credentials in it
    assert browser.find_element("css selector", "h1").text == "rocketchat-webhook"
    assert_live_and_updating(browser, token_relay)


@pytest.fixture
def phone(browser):
    """The module's browser with a phone's viewport, restored afterwards."""
    set_viewport(browser, *PHONE_VIEWPORT, mobile=True)
    yield browser
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_on_a_phone_nothing_scrolls_sideways_and_the_tables_are_cards(phone, relay):
    name = unique_name("BrowserPhone")
    post(relay, alert(name, labels={"instance": "a-rather-long-instance-name.eu-west-1.compute.internal:9100"}))
    open_live(phone, f"{relay.base_url}/")
    wait_for(phone, "return document.querySelectorAll('.notifications tbody tr').length > 0;")
    width = phone.execute_script("return window.innerWidth;")
    assert width == PHONE_VIEWPORT[0]
    assert phone.execute_script("return document.documentElement.scrollWidth;") <= width
    for table in ("notifications", "hooks"):
        # Every cell lies within the screen, labelled with its column's header (status.css repeats them).
        layout = phone.execute_script("""
            const table = document.querySelector(`section.${arguments[0]} table`);
            const headers = Array.from(table.querySelectorAll('thead th'), th => th.textContent.trim());
            return {headers, rows: Array.from(table.querySelectorAll('tbody tr'), row => Array.from(row.cells, cell => {
                const box = cell.getBoundingClientRect();
                return {left: box.left, right: box.right, width: box.width,
                        label: getComputedStyle(cell, '::before').content.replace(/^"|"$/g, '')};
            }))};""", table)
        assert layout["rows"], table
        for cells in layout["rows"]:
            assert [cell["label"] for cell in cells] == layout["headers"], table
            for cell in cells:
                assert 0 <= cell["left"] and cell["right"] <= width and cell["width"] > 0, (table, cell)
