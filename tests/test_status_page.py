"""The status page: escaping of alert contents, headers, the live fragment, authorization, colours, live updates."""

from __future__ import annotations

import copy
import html.parser
import pathlib
import queue
import re
import threading

import pytest
from flask import Flask, Response

from rcwebhook.attachments import FIRING_COLORS, alert_color
from rcwebhook.web import status_page
from rcwebhook.web.status_page import CONTENT_SECURITY_POLICY, color_classes, status_page_blueprint

STATIC = pathlib.Path(status_page.__file__).parent / "static"
XSS_LABEL = "<img src=x onerror=alert(1)>"
XSS_ANNOTATION = "</script><script>alert(2)</script>"
EXPECTED_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def make_alert(alertname="HighCPU", severity="critical", status="firing", **overrides) -> dict:
    alert = {
        "id": f"{alertname}-{severity}",
        "fingerprint": "0123456789abcdef",
        "alertname": alertname,
        "status": status,
        "severity": severity,
        "integration": "alertmanager",
        "labels": {"alertname": alertname, "severity": severity, "instance": "db-1:9100", "job": "node", "team": "ops"},
        "annotations": {"summary": f"{alertname} summary", "description": "More words.", "runbook_url": "https://x"},
        "starts_at": "2026-12-01T06:48:00Z",
        "ends_at": "" if status == "firing" else "2026-12-01T09:55:00Z",
        "first_received": "2026-12-01T06:48:01.000Z",
        "last_received": "2026-12-01T09:58:00.000Z",
        "stale": False,
        "fired_for_seconds": 3 * 3600 + 12 * 60 + 7,
        "deliveries": [
            {"destination": "critical", "at": "2026-12-01T06:48:02.000Z", "outcome": "transient", "status": 502,
             "message_id": None},
            {"destination": "critical", "at": "2026-12-01T06:48:05.000Z", "outcome": "delivered", "status": 200,
             "message_id": "m1"},
        ],
    }
    alert.update(overrides)
    return alert


BASE_SNAPSHOT = {
    "version": "1.2.3",
    "now": "2026-12-01T10:00:00.123Z",
    "journal": {"available": True, "store": "sqlite:///state.sqlite3", "fallback": False, "detail": ""},
    "firing": [],
    "resolved": [],
    "notifications": [],
    "hooks": [],
    "live": {"clients": 1, "max": 32},
}


def snapshot_with(**parts) -> dict:
    snapshot = copy.deepcopy(BASE_SNAPSHOT)
    snapshot.update(parts)
    return snapshot


class FakeStatus:
    """The app's two callables: answers the snapshot it holds, authorizes unless told to refuse; counts calls."""

    def __init__(self, snapshot: dict | None = None):
        self.snapshot_value = snapshot or snapshot_with()
        self.refusal: Response | None = None
        self.snapshot_calls = 0
        self.authorize_calls = 0

    def snapshot(self) -> dict:
        self.snapshot_calls += 1
        return copy.deepcopy(self.snapshot_value)

    def authorize(self) -> Response | None:
        self.authorize_calls += 1
        return self.refusal


def make_app(fake: FakeStatus) -> Flask:
    app = Flask(__name__)
    app.register_blueprint(status_page_blueprint(fake.snapshot, fake.authorize))
    return app


@pytest.fixture
def fake():
    return FakeStatus()


@pytest.fixture
def client(fake):
    return make_app(fake).test_client()


def page(client, fake, snapshot: dict, path: str = "/") -> str:
    fake.snapshot_value = snapshot
    response = client.get(path)
    assert response.status_code == 200
    return response.get_data(as_text=True)


class Tags(html.parser.HTMLParser):
    """Every start tag with its attributes, and the text outside tags."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(text: str) -> Tags:
    tags = Tags()
    tags.feed(text)
    return tags


def cards(text: str) -> list[dict]:
    return [attrs for tag, attrs in parse(text).tags if tag == "li" and "card" in attrs.get("class", "").split()]


# -- content ---------------------------------------------------------------------------------------------------------


def test_a_firing_alert_of_each_severity_shows_in_its_colour_class_in_severity_order(client, fake):
    severities = ["info", "unknown", "warning", "critical"]
    text = page(client, fake, snapshot_with(firing=[make_alert(f"Alert{s}", s) for s in severities]))
    assert [attrs["class"].split()[1] for attrs in cards(text)] == [
        "sev-critical", "sev-warning", "sev-info", "sev-unknown"]
    for severity in severities:
        assert f"Alert{severity}" in text
    assert "Critical (1)" in text and "Unknown (1)" in text
    assert "firing for 3h 12m" in text  # minutes are precision enough past an hour
    assert "HighCPU summary" not in text and "Alertcritical summary" in text
    assert "db-1:9100" in text and "alertmanager" in text
    assert "critical: delivered (200)" in text  # the latest delivery, not the first transient one
    assert "transient" not in text


def test_an_unexpected_severity_groups_as_unknown(client, fake):
    text = page(client, fake, snapshot_with(firing=[make_alert("Odd", "page-me-now")]))
    assert cards(text)[0]["class"].split()[1] == "sev-unknown"


def test_resolved_alerts_show_in_the_resolved_colour_with_their_duration(client, fake):
    resolved = make_alert("DiskFull", "critical", status="resolved", resolved_at="2026-12-01T09:55:01.000Z")
    text = page(client, fake, snapshot_with(resolved=[resolved]))
    assert [attrs["class"].split()[1] for attrs in cards(text)] == ["sev-resolved"]
    assert "resolved 4m 59s ago after 3h 7m" in text
    assert "Nothing is firing." in text


def test_alert_contents_are_escaped_everywhere(client, fake):
    hostile = make_alert(
        XSS_LABEL,
        "critical",
        integration=XSS_LABEL,
        labels={"instance": XSS_LABEL, XSS_LABEL: XSS_LABEL, "job": '"><script>alert(3)</script>'},
        annotations={"summary": XSS_ANNOTATION, "description": XSS_ANNOTATION, "other": XSS_ANNOTATION},
        deliveries=[{"destination": XSS_LABEL, "at": "x", "outcome": XSS_LABEL, "status": None, "message_id": None}],
        id='"><img src=x>',
    )
    notification = {
        "id": "n1", "request_id": XSS_LABEL, "integration": XSS_LABEL, "group_key": XSS_ANNOTATION,
        "receiver": XSS_LABEL, "alerts": {"firing": 1, "resolved": 0}, "status_code": 200, "ms": 1.0,
        "received": "2026-12-01T09:59:00Z", "destinations": {XSS_LABEL: XSS_LABEL},
    }
    hook = {"destination": XSS_LABEL, "posts_in_window": 0, "budget": None, "window_seconds": None, "queued": 0,
            "next_post_in_seconds": None}
    snapshot = snapshot_with(
        firing=[hostile], resolved=[{**hostile, "status": "resolved"}], notifications=[notification], hooks=[hook],
        journal={"available": False, "store": XSS_LABEL, "fallback": False, "detail": XSS_ANNOTATION},
    )
    for path in ("/", "/?fragment=live"):
        text = page(client, fake, snapshot, path)
        assert "<img" not in text
        assert "alert(2)</script>" not in text and "alert(3)</script>" not in text
        assert "&lt;img src=x onerror=alert(1)&gt;" in text
        assert "&lt;/script&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in text
        tags = parse(text)
        assert [attrs for tag, attrs in tags.tags if tag == "script"] == (
            [{"src": "/static/status/status.js", "defer": None}] if path == "/" else [])
        assert not [tag for tag, attrs in tags.tags if any(name.startswith("on") for name in attrs)]
        assert XSS_LABEL in "".join(tags.text)  # shown, as text


def test_no_inline_style_or_script_and_only_own_static_files(client, fake):
    alert = make_alert(annotations={"summary": "see https://evil.example/x", "runbook_url": "http://evil.example/"})
    text = page(client, fake, snapshot_with(firing=[alert]))
    tags = parse(text)
    assert "<style" not in text
    assert not [attrs for tag, attrs in tags.tags if "style" in attrs]
    references = [attrs[name] for tag, attrs in tags.tags for name in ("src", "href") if name in attrs]
    assert references == ["/static/status/favicon.svg", "/static/status/status.css", "/static/status/status.js"]
    # URLs from the data appear only as text, never as an attribute the browser would follow.
    assert not [value for tag, attrs in tags.tags for value in attrs.values() if value and "//" in value]
    for reference in references:
        assert client.get(reference).status_code == 200
    assert "https://evil.example/x" in "".join(tags.text)


def test_a_stale_alert_has_a_badge_that_explains(client, fake):
    text = page(client, fake, snapshot_with(firing=[make_alert(stale=True)], stale_after_hours=6.0))
    badges = [attrs for tag, attrs in parse(text).tags if "badge-stale" in attrs.get("class", "")]
    assert len(badges) == 1
    assert badges[0]["title"] == (
        "No notification for 6 h (STALE_AFTER_HOURS); its resolved may have been lost upstream.")
    assert "card-stale" in cards(text)[0]["class"]
    fresh = page(client, fake, snapshot_with(firing=[make_alert(stale=False)]))
    assert "badge-stale" not in fresh and "card-stale" not in fresh


def test_the_stale_title_names_the_setting_without_its_value(client, fake):
    text = page(client, fake, snapshot_with(firing=[make_alert(stale=True)]))
    assert 'title="No notification for STALE_AFTER_HOURS; its resolved may have been lost upstream."' in text


@pytest.mark.parametrize(
    ("journal", "banner"),
    [
        ({"available": False, "store": "sqlite:///state.sqlite3", "fallback": False,
          "detail": "writes failing since 10:02:03Z: database or disk is full"},
         "Journal unavailable: writes failing since 10:02:03Z: database or disk is full. Delivery goes on"),
        ({"available": True, "store": "memory://", "fallback": True, "detail": "cannot open state.sqlite3"},
         "Journal in memory only (memory://): the default SQLite journal could not be used"),
    ],
)
def test_a_journal_problem_shows_a_banner(client, fake, journal, banner):
    text = page(client, fake, snapshot_with(journal=journal))
    banners = re.findall(r'<p class="banner [^"]*" role="alert">(.*?)</p>', text, re.S)
    assert len(banners) == 1
    assert banner in re.sub(r"<[^>]+>", "", banners[0])


def test_a_healthy_journal_shows_no_banner_but_its_store_and_the_version(client, fake):
    text = page(client, fake, snapshot_with())
    assert 'class="banner' not in text
    assert "sqlite:///state.sqlite3 (ok)" in text
    assert "version 1.2.3" in text


def test_pacing_shows_posts_against_budget_queue_and_next_post(client, fake):
    hooks = [
        {"destination": "critical", "posts_in_window": 3, "budget": 10, "window_seconds": 60.0, "queued": 0,
         "next_post_in_seconds": None},
        {"destination": "warning", "posts_in_window": 10, "budget": 10, "window_seconds": 60.0, "queued": 4,
         "next_post_in_seconds": 2.5},
        {"destination": "info", "posts_in_window": 7, "budget": None, "window_seconds": None, "queued": 0,
         "next_post_in_seconds": None},
    ]
    text = page(client, fake, snapshot_with(hooks=hooks))
    rows = re.findall(r"<tr[^>]*>\s*<td>(\w+)</td>(.*?)</tr>", text, re.S)
    cells = {name: [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", rest, re.S)]
             for name, rest in rows}
    assert cells["critical"] == ["3 / 10 per 60 s", "0", "—"]
    assert cells["warning"] == ["10 / 10 per 60 s at budget", "4", "in 2.5 s"]
    assert cells["info"] == ["7 (not paced)", "0", "—"]
    assert "Live viewers: 1 of 32." in text


def test_notifications_show_each_destinations_outcome(client, fake):
    notification = {
        "id": "n1", "request_id": "req-42", "integration": "grafana", "group_key": "{}:{alertname=\"A\"}",
        "receiver": "rocketchat", "alerts": {"firing": 2, "resolved": 1}, "status_code": 200, "ms": 12.5,
        "received": "2026-12-01T09:59:00Z",
        "destinations": {"critical": "delivered", "warning": "queued", "info": "content_refused"},
    }
    text = page(client, fake, snapshot_with(notifications=[notification]))
    outcomes = re.findall(r'<span class="outcome (outcome-\w+)">([^<]*)</span>', text)
    assert outcomes == [("outcome-ok", "critical: delivered"), ("outcome-pending", "warning: queued"),
                        ("outcome-bad", "info: content refused")]
    assert "2 firing, 1 resolved" in text and "200 in 12 ms" in text and "req-42" in text and "1m ago" in text


def test_empty_states_read_well(client, fake):
    text = page(client, fake, snapshot_with(live={}))
    for sentence in ("Nothing is firing.", "Nothing has resolved recently.",
                     "No notification received since the relay started.", "No Rocket.Chat hook is configured."):
        assert f'<p class="empty">{sentence}</p>' in text
    assert "<title>rocketchat-webhook status</title>" in text
    assert "reload to refresh" in text


# -- routes and headers ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/?fragment=live", "/?fragment=other"])
def test_html_responses_carry_the_security_headers_exactly(client, path):
    response = client.get(path)
    for name, value in EXPECTED_HEADERS.items():
        assert response.headers.get_all(name) == [value]
    assert CONTENT_SECURITY_POLICY == EXPECTED_HEADERS["Content-Security-Policy"]


def test_the_page_is_complete_html_with_the_live_part_inside(client, fake):
    text = page(client, fake, snapshot_with(firing=[make_alert()]))
    assert text.startswith("<!doctype html>")
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in text
    assert 'data-fragment-url="/?fragment=live"' in text and 'data-ws-path="/ws"' in text
    assert text.count('<main id="live"') == 1


def test_the_fragment_is_only_the_live_part(client, fake):
    snapshot = snapshot_with(firing=[make_alert()])
    full, fragment = page(client, fake, snapshot), page(client, fake, snapshot, "/?fragment=live")
    assert fragment.strip().startswith('<main id="live"') and fragment.strip().endswith("</main>")
    assert "<html" not in fragment and "<head" not in fragment and "live-indicator" not in fragment
    assert fragment.strip() in full


def test_an_unknown_fragment_is_refused(client, fake):
    response = client.get("/?fragment=../status")
    assert response.status_code == 400
    assert fake.snapshot_calls == 0


def test_a_refusal_of_authorize_is_answered_unchanged(client, fake):
    fake.refusal = Response("authorization required\n", 401, {"WWW-Authenticate": 'Basic realm="rcwebhook"'},
                            mimetype="text/plain")
    for path in ("/", "/?fragment=live"):
        response = client.get(path)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Basic realm="rcwebhook"'
        assert response.get_data(as_text=True) == "authorization required\n"
        assert "Content-Security-Policy" not in response.headers  # not ours to change
    assert fake.snapshot_calls == 0 and fake.authorize_calls == 2


def test_static_files_are_served_without_authorization(client, fake):
    fake.refusal = Response("no", 401)
    static_files = (("status.css", "text/css"), ("status.js", "text/javascript"), ("favicon.svg", "image/svg+xml"))
    for name, mimetype in static_files:
        response = client.get(f"/static/status/{name}")
        assert response.status_code == 200
        assert response.mimetype == mimetype
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.get_data() == (STATIC / name).read_bytes()
        response.close()
    assert fake.authorize_calls == 0


# -- the stylesheet and the script -----------------------------------------------------------------------------------


def test_the_css_gives_each_colour_class_the_messages_hex():
    css = (STATIC / "status.css").read_text()
    classes = color_classes()
    assert classes == {
        **{f"sev-{severity}": alert_color("firing", severity) for severity in FIRING_COLORS},
        "sev-resolved": alert_color("resolved", "critical"),
    }
    for css_class, hex_color in classes.items():
        rule = re.search(rf"\.{css_class}\s*\{{\s*--sev-color:\s*(#[0-9a-fA-F]{{6}});\s*}}", css)
        assert rule is not None, css_class
        assert rule.group(1).lower() == hex_color.lower()


def test_the_css_is_responsive_and_follows_the_colour_scheme():
    css = (STATIC / "status.css").read_text()
    assert "@media (prefers-color-scheme: dark)" in css
    assert "@media (max-width: 700px)" in css
    assert "overflow-x: auto" in css
    assert "url(" not in css and "@import" not in css  # no external fonts or images


def test_the_script_uses_no_eval_no_html_strings_and_no_other_origin():
    script = (STATIC / "status.js").read_text()
    for forbidden in ("eval(", "innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "new Function",
                      "http://", "https://"):
        assert forbidden not in script
    assert "credentials: 'same-origin'" in script and "cache: 'no-store'" in script


# -- in a browser ----------------------------------------------------------------------------------------------------


class LiveServer:
    """The blueprint and a /ws that sends what the test queues, served by werkzeug in a thread."""

    def __init__(self, fake: FakeStatus):
        from flask_sock import Sock
        from werkzeug.serving import make_server

        self.commands: queue.Queue = queue.Queue()
        self.connections = 0
        self.connected = threading.Condition()
        app = make_app(fake)
        sock = Sock(app)

        @sock.route("/ws")
        def ws(socket):
            with self.connected:
                self.connections += 1
                self.connected.notify_all()
            while True:
                command = self.commands.get()
                if command is None:
                    return  # the server closes this connection
                socket.send(command)

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        for _ in range(self.connections + 1):
            self.commands.put(None)
        self.server.shutdown()
        self.thread.join()


def wait_for(driver, script: str, timeout_seconds: float = 10):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_seconds, poll_frequency=0.05).until(lambda d: d.execute_script(script))


@pytest.mark.slow
def test_the_script_follows_ws_and_swaps_the_live_part(fake):
    from tests.browser import PHONE_VIEWPORT, chromium, require_browser, set_viewport

    require_browser()
    fake.snapshot_value = snapshot_with(hooks=[
        {"destination": "critical", "posts_in_window": 3, "budget": 10, "window_seconds": 60.0, "queued": 0,
         "next_post_in_seconds": None}])
    with LiveServer(fake) as server, chromium() as driver:
        driver.get(server.url)
        wait_for(driver, "return document.body.dataset.liveState === 'live'")
        assert driver.find_element("id", "live-indicator").text == "live"
        wait_for(driver, "return Number(document.body.dataset.refreshes) >= 1")  # the catch-up on open
        refreshes = int(driver.execute_script("return document.body.dataset.refreshes"))

        labels = {"instance": '<img src=x onerror="window.pwned=1">', "team": XSS_LABEL}
        hostile = make_alert(XSS_LABEL, "warning", labels=labels, annotations={"summary": XSS_ANNOTATION})
        fake.snapshot_value = snapshot_with(firing=[hostile], hooks=fake.snapshot_value["hooks"])
        for _ in range(3):  # a burst: debounced into (at most) a couple of fetches
            server.commands.put("changed")
        wait_for(driver, "return document.querySelectorAll('#live .card').length === 1")
        assert driver.find_element("css selector", "#live .card .alert-name").text == XSS_LABEL
        assert driver.execute_script("return document.querySelectorAll('img, #live script').length") == 0
        assert driver.execute_script("return window.pwned === undefined")
        assert driver.execute_script("return document.querySelectorAll('main#live').length") == 1
        assert driver.title == "(1) rocketchat-webhook status"
        assert int(driver.execute_script("return document.body.dataset.refreshes")) > refreshes

        # An open <details> stays open across a refresh.
        driver.execute_script("document.querySelector('#live details').open = true")
        before = int(driver.execute_script("return document.body.dataset.refreshes"))
        server.commands.put("changed")
        wait_for(driver, f"return Number(document.body.dataset.refreshes) > {before}")
        assert driver.execute_script("return document.querySelector('#live details').open")

        # The server drops the connection: the script reconnects (first retry after 1 s) and is live again.
        server.commands.put(None)
        with server.connected:
            assert server.connected.wait_for(lambda: server.connections >= 2, timeout=10)
        wait_for(driver, "return document.body.dataset.liveState === 'live'")

        # On a phone the page does not scroll sideways: tables scroll inside their frame.
        set_viewport(driver, *PHONE_VIEWPORT, mobile=True)
        driver.refresh()
        wait_for(driver, "return document.readyState === 'complete'")
        assert driver.execute_script("return document.documentElement.scrollWidth") <= PHONE_VIEWPORT[0]
