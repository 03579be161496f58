"""The relay as it runs in production (gunicorn with the shipped gunicorn.conf.py) against the mock Rocket.Chat,
everything over real HTTP on 127.0.0.1. Route behaviour with a fake client is in test_app.py; here each test checks
what Alertmanager gets back and what Rocket.Chat (the mock) receives."""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.parse

import pytest

from tests.helpers import (
    DEV_SERVER_COMMAND, GUNICORN_COMMAND, REPO, Relay, SilentServer, closed_port, direct_session, free_port,
    relay_environ, run_to_exit, wait_until,
)

sys.path.insert(0, str(REPO))
from mock_server import MockRocketChat  # noqa: E402

TEST_ALERT_BYTES = (REPO / "test-alert.json").read_bytes()
CORPUS_FILES = sorted((REPO / "tests" / "data" / "corpus").glob("*.json"))
SEVERITIES = ("critical", "warning", "info")
RED, ORANGE = "#d9534f", "#f0ad4e"
MAX_TEXT_UTF16_UNITS = 5000
SHORT_DEADLINE_SECONDS = 2.0  # DELIVERY_DEADLINE_SECONDS where a test waits for the relay to give up
FAST_DEADLINE_SECONDS = 1.0  # the same where only the answer's kind matters, not the retries before it
AT_ONCE_SECONDS = 1.5  # "at once": far below the default 8 s delivery deadline a retry loop would use up
HEADLINE_COUNTS = re.compile(r"\[(?:FIRING:(\d+))?(?:, )?(?:RESOLVED:(\d+))?\]")


# -- building bodies and reading what the mock recorded --

def alert(name: str, severity: str | None = "critical", status: str = "firing", **annotations) -> dict:
    labels = {"alertname": name, "instance": f"{name.lower()}-host:9100", "job": "node"}
    if severity is not None:
        labels["severity"] = severity
    return {
        "status": status,
        "labels": labels,
        "annotations": {"summary": f"{name} summary", **annotations},
        "startsAt": "2024-01-15T10:30:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
    }


def webhook_body(*alerts: dict, **extra) -> bytes:
    document = {"version": "4", "status": "firing", "receiver": "rocketchat", "groupLabels": {},
                "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
                "alerts": list(alerts), **extra}
    return json.dumps(document).encode("utf-8")


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def strings_in(value) -> list[str]:
    """Every string inside a JSON value (keys excluded), as Rocket.Chat would render them."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in strings_in(item)]
    if isinstance(value, list):
        return [text for item in value for text in strings_in(item)]
    return []


def one_line(text: str) -> str:
    return " ".join(text.split())


def recorded(mock: MockRocketChat) -> dict[str, list[dict]]:
    """The messages each hook posted, by hook name."""
    return {name: [record["message"] for record in mock.messages(name)] for name in mock.hook_names}


def headline_alert_count(message: dict) -> int:
    """How many alerts a message says it carries ("[FIRING:2, RESOLVED:1] ...")."""
    match = HEADLINE_COUNTS.search(message["text"])
    assert match, f"no [FIRING:n] headline in {message['text']!r}"
    return sum(int(count or 0) for count in match.groups())


# -- fixtures: one mock and one default relay for the module, special relays per test --

def hook_environ(urls: dict[str, str], port: int, extra: dict | None = None) -> dict[str, str]:
    overrides = {"HOST": "127.0.0.1", "PORT": str(port),
                 **{f"ROCKETCHAT_WEBHOOK_{severity.upper()}": url for severity, url in urls.items()}}
    return relay_environ({**overrides, **(extra or {})})


def mock_urls(mock: MockRocketChat) -> dict[str, str]:
    return {severity: mock.hook_url(severity) for severity in SEVERITIES}


@pytest.fixture(scope="module")
def module_mock():
    with MockRocketChat(port=0, rate_limit_count=0) as server:
        yield server


@pytest.fixture
def shared_mock(module_mock):
    """The module relay's mock, emptied: no records, counters, faults, disabled hooks or rate limit."""
    module_mock.reset()
    module_mock.set_rate_limit(0)
    yield module_mock
    module_mock.reset()


# The module's relay runs dozens of unrelated notifications through the same hooks in a few seconds, each test
# checking what its own request did: its pacing (a steady 10/60s per hook) and its de-duplication (same group and
# fingerprints within 300 s: posted once) are switched off, so no test is delayed or merged by an earlier one.
# Both stay on (the defaults) in the relays started per test.
SHARED_RELAY_SETTINGS = {"ROCKETCHAT_RATE_LIMIT": "off", "DEDUP_WINDOW_SECONDS": "0"}


@pytest.fixture(scope="module")
def shared_relay(module_mock, tmp_path_factory):
    environ = hook_environ(mock_urls(module_mock), free_port(), SHARED_RELAY_SETTINGS)
    relay = Relay.start(GUNICORN_COMMAND, environ, output_dir=tmp_path_factory.mktemp("shared-relay"))
    yield relay
    relay.stop()


@pytest.fixture
def relay(shared_relay, shared_mock):
    """The module's relay (delivery deadline 8 s, no pacing or de-duplication), wired to shared_mock's hooks.

    Only tests whose notifications end delivered or refused use it: a job still queued when a test ends would
    go on posting into the next test's mock.
    """
    return shared_relay


@pytest.fixture
def mock():
    """A mock of its own for a test that starts its own relay (a draining relay never posts into another test)."""
    with MockRocketChat(port=0, rate_limit_count=0) as server:
        yield server


@pytest.fixture(scope="module")
def stopping_relays():
    """Relays told to stop (SIGTERM) by their tests; their graceful drain overlaps the next tests, and every one
    of them is waited for (or killed) here at the latest."""
    relays: list[Relay] = []
    yield relays
    for relay in relays:
        relay.stop()


@pytest.fixture
def start_relay(mock, tmp_path, stopping_relays):
    """Start a relay wired to the test's mock, with extra settings (and other hook URLs); each is stopped after."""
    started: list[Relay] = []

    def start(extra: dict | None = None, *, urls: dict[str, str] | None = None, name: str = "relay",
              log_path=None) -> Relay:
        environ = hook_environ({**mock_urls(mock), **(urls or {})}, free_port(), extra)
        relay = Relay.start(GUNICORN_COMMAND, environ, output_dir=tmp_path, name=name, log_path=log_path)
        started.append(relay)
        return relay

    yield start
    for relay in started:
        relay.begin_stop()
        stopping_relays.append(relay)


# -- 1. the seed's test alert --

@pytest.mark.parametrize("sent_as", ["json", "curl -d form"])
def test_seed_test_alert_posts_one_coloured_message_per_severity(relay, shared_mock, sent_as):
    if sent_as == "json":
        response = relay.post_webhook(TEST_ALERT_BYTES)
    else:
        # What `curl -X POST .../webhook -d @test-alert.json` sends: the file without its line breaks, form-encoded.
        body = TEST_ALERT_BYTES.replace(b"\r", b"").replace(b"\n", b"")
        response = relay.post_webhook(body, content_type="application/x-www-form-urlencoded")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ok", "processed": 2, "alerts": ["HighCPUUsage", "HighMemoryUsage"], "messages": 2, "skipped": 0,
        "integration": "default",
    }
    messages = recorded(shared_mock)
    [critical] = messages["critical"]
    [warning] = messages["warning"]
    assert messages["info"] == []
    assert [attachment["color"] for attachment in critical["attachments"]] == [RED]
    assert [attachment["color"] for attachment in warning["attachments"]] == [ORANGE]
    assert "HighCPUUsage" in critical["text"] and "HighMemoryUsage" in warning["text"]


# -- 2. real-world bodies --

def usable_entries(document) -> list[dict]:
    alerts = document.get("alerts") if isinstance(document, dict) else None
    return [entry for entry in alerts or [] if isinstance(entry, dict) and isinstance(entry.get("labels"), dict)]


@pytest.mark.parametrize("path", CORPUS_FILES, ids=[path.stem for path in CORPUS_FILES])
def test_corpus_body_is_delivered_rich_with_every_usable_alert(relay, shared_mock, path):
    raw = path.read_bytes()
    document = json.loads(raw.decode("utf-8-sig"))
    usable = usable_entries(document)

    response = relay.post_webhook(raw)

    if not usable:  # the body whose only alert has no labels: nothing to deliver
        assert response.status_code == 422, response.text
        assert sum(len(messages) for messages in recorded(shared_mock).values()) == 0
        return
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["status"] == "ok"
    assert answer["processed"] == len(usable)
    assert "destinations" not in answer  # every hook's message went through as it was first sent

    messages = [message for hook_messages in recorded(shared_mock).values() for message in hook_messages]
    assert len(messages) == answer["messages"] >= 1
    for hook_messages in recorded(shared_mock).values():
        assert len(hook_messages) <= 1  # one message per hook per notification
    for message in messages:  # the rich message, never the plain-text fallback
        assert isinstance(message.get("attachments"), list) and message["attachments"], message
    assert sum(headline_alert_count(message) for message in messages) == len(usable)
    shown = one_line("\n".join(text for message in messages for text in strings_in(message)))
    for entry in usable:
        name = entry["labels"].get("alertname")
        if isinstance(name, str) and name.strip():
            assert one_line(name) in shown, f"alert {name!r} is missing from what Rocket.Chat received"
    assert all(shared_mock.stats(name)["statuses"].keys() <= {"200"} for name in shared_mock.hook_names)


# -- 3. a storm in one request --

def test_500_alerts_in_one_request_make_one_acceptable_message_per_hook(relay, shared_mock):
    names = {severity: [] for severity in SEVERITIES}
    alerts = []
    for index in range(500):
        severity = SEVERITIES[index % 3]
        # Long names with characters outside the BMP (two UTF-16 units each) push the text towards its limit.
        name = f"Storm{index:03d}x-🔥-{'ü' * 20}-{'𝔸' * 20}"
        names[severity].append(name)
        alerts.append(alert(name, severity, description="🔥" * 300))
    alerts += [{"status": "firing", "annotations": {"summary": "no labels"}} for _ in range(10)]

    response = relay.post_webhook(webhook_body(*alerts))

    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["status"], answer["processed"], answer["messages"], answer["skipped"]) == ("ok", 500, 3, 10)
    for severity in SEVERITIES:
        assert shared_mock.stats(severity)["statuses"] == {"200": 1}  # accepted first time: no 400 for size or content
        [message] = recorded(shared_mock)[severity]
        assert utf16_units(message["text"].strip()) <= MAX_TEXT_UTF16_UNITS
        assert message["attachments"]
        assert headline_alert_count(message) == len(names[severity])
        shown = "\n".join(strings_in(message))
        missing = [name for name in names[severity] if name[:9] not in shown]  # "Storm123x" identifies each
        assert missing == [], f"{len(missing)} {severity} alerts are not in the message"


# -- 4. the answer table, against the mock's real behaviour --

def test_script_refusal_is_answered_502_at_once(relay, shared_mock):
    started = time.monotonic()
    response = relay.post_webhook(webhook_body(alert("Refused", "critical", summary="MOCK-REJECT please")))
    elapsed = time.monotonic() - started

    assert response.status_code == 502, response.text
    assert elapsed < AT_ONCE_SECONDS
    assert "Retry-After" not in response.headers
    [destination] = response.json()["destinations"]
    assert (destination["outcome"], destination["rocketchat_status"]) == ("refused", 400)
    assert "error-running-script" in destination["reason"]
    # No retry and no plain-text attempt: no content change can fix a failing script.
    assert shared_mock.stats("critical")["requests"] == 1
    assert recorded(shared_mock)["critical"] == []


def test_two_server_errors_then_success_is_answered_200(relay, shared_mock):
    shared_mock.set_fault("critical", status=500, count=2)

    response = relay.post_webhook(webhook_body(alert("FlakyServer", "critical")))

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ok"
    assert shared_mock.stats("critical")["statuses"] == {"500": 2, "200": 1}
    [message] = recorded(shared_mock)["critical"]
    assert message["attachments"]


def test_server_error_on_every_attempt_is_answered_503_within_the_deadline(start_relay, mock):
    relay = start_relay({"DELIVERY_DEADLINE_SECONDS": str(SHORT_DEADLINE_SECONDS)})
    mock.set_fault("critical", status=500)

    started = time.monotonic()
    response = relay.post_webhook(webhook_body(alert("DownServer", "critical")))
    elapsed = time.monotonic() - started

    assert response.status_code == 503, response.text
    assert elapsed <= SHORT_DEADLINE_SECONDS + 1
    assert int(response.headers["Retry-After"]) >= 1
    [destination] = response.json()["destinations"]
    assert (destination["outcome"], destination["rocketchat_status"]) == ("failed", 500)
    assert mock.stats("critical")["requests"] >= 2  # it did retry before giving up
    assert recorded(mock)["critical"] == []


@pytest.mark.slow
def test_rate_limited_post_waits_out_the_429_and_is_delivered(start_relay, mock):
    # Pacing off: what is tested is the answer to Rocket.Chat's own 429, not the relay's spacing.
    relay = start_relay({"ROCKETCHAT_RATE_LIMIT": "off"})
    mock.set_rate_limit(1, 2)  # one request per 2 s per hook
    # Another client (a second relay, a script) has just used the hook's window: the relay cannot know.
    with direct_session() as http:
        other_client = http.post(mock.hook_url("critical"), json={"text": "another client"}, timeout=5)
    assert other_client.status_code == 200

    started = time.monotonic()
    response = relay.post_webhook(webhook_body(alert("AfterTheOtherClient", "critical")))
    waited = time.monotonic() - started

    assert response.status_code == 200, response.text
    assert "destinations" not in response.json()
    # Exactly one 429: the relay retried once the window had reopened (X-RateLimit-Reset), not before.
    assert mock.stats("critical")["statuses"] == {"200": 2, "429": 1}
    assert 0.5 <= waited <= 4.0
    records = mock.messages("critical")
    assert "AfterTheOtherClient" in records[1]["message"]["text"]
    assert records[1]["received_at"] - records[0]["received_at"] >= 1.0
    assert re.search(r"status=429.*wait \d+ seconds", relay.log()), relay.log()


def test_two_notifications_in_a_row_never_trip_the_limit_rocketchat_announced(start_relay, mock):
    relay = start_relay({"ROCKETCHAT_RATE_LIMIT": "off"})
    mock.set_rate_limit(1, 2)

    first = relay.post_webhook(webhook_body(alert("FirstInWindow", "critical")))
    started = time.monotonic()
    second = relay.post_webhook(webhook_body(alert("SecondInWindow", "critical")))
    waited = time.monotonic() - started

    assert (first.status_code, second.status_code) == (200, 200), second.text
    # X-RateLimit-Remaining: 0 on the first answer: the second post waited for the reset instead of a 429.
    assert mock.stats("critical")["statuses"] == {"200": 2}
    assert 0.5 <= waited <= 4.0


@pytest.mark.slow
def test_with_default_pacing_a_post_goes_when_rocketchats_window_reopens(start_relay, mock):
    relay = start_relay({"DELIVERY_DEADLINE_SECONDS": "4"})  # default pacing, 10/60s
    mock.set_rate_limit(1, 2)

    first = relay.post_webhook(webhook_body(alert("PacedFirst", "critical")))
    started = time.monotonic()
    second = relay.post_webhook(webhook_body(alert("PacedSecond", "critical")))
    waited = time.monotonic() - started

    assert first.status_code == 200
    assert second.status_code == 200, second.text
    assert waited <= 3.6  # the mock's window reopens within 2 s (+1 s: the Date header has whole seconds)


def test_rate_limit_window_longer_than_the_deadline_is_answered_503_with_its_retry_after(start_relay, mock):
    relay = start_relay({"DELIVERY_DEADLINE_SECONDS": str(FAST_DEADLINE_SECONDS)})
    mock.set_rate_limit(1, 60)  # Rocket.Chat's real window is 60 s: no use waiting for it inside the deadline

    first = relay.post_webhook(webhook_body(alert("UsesTheBudget", "critical")))
    started = time.monotonic()
    second = relay.post_webhook(webhook_body(alert("OverTheBudget", "critical")))
    elapsed = time.monotonic() - started

    assert first.status_code == 200
    assert second.status_code == 503, second.text  # 5xx: Alertmanager retries (a 429 passed on would be final)
    assert elapsed <= FAST_DEADLINE_SECONDS + 1
    assert 45 <= int(second.headers["Retry-After"]) <= 61  # when the window reopens
    [destination] = second.json()["destinations"]
    assert destination["outcome"] == "failed"
    assert mock.stats("critical")["statuses"] == {"200": 1}  # it waits for the window instead of burning a 429


@pytest.mark.slow
def test_rate_limit_reset_is_read_against_the_servers_date_not_the_local_clock(start_relay, mock):
    # A Rocket.Chat whose clock is an hour ahead: X-RateLimit-Reset is an hour in our future, and only its own
    # Date header says the window reopens in about 2 s.
    with MockRocketChat(port=0, rate_limit_count=1, rate_limit_window_seconds=2,
                        clock=lambda: time.time() + 3600) as skewed:
        relay = start_relay({"ROCKETCHAT_RATE_LIMIT": "off", "DELIVERY_DEADLINE_SECONDS": "5"},
                            urls=mock_urls(skewed))
        first = relay.post_webhook(webhook_body(alert("SkewFirst", "warning")))
        second = relay.post_webhook(webhook_body(alert("SkewSecond", "warning")))
        assert (first.status_code, second.status_code) == (200, 200), second.text
        assert skewed.stats("warning")["statuses"].get("200") == 2
        relay.stop()  # before the skewed mock goes away


def test_wrong_hook_token_is_retried_until_the_deadline_with_a_hint_in_the_log(start_relay, mock):
    wrong_url = f"{mock.base_url}/hooks/info/not-the-info-token"
    relay = start_relay({"DELIVERY_DEADLINE_SECONDS": str(SHORT_DEADLINE_SECONDS)}, urls={"info": wrong_url})

    started = time.monotonic()
    response = relay.post_webhook(webhook_body(alert("WrongToken", "info")))
    elapsed = time.monotonic() - started

    assert response.status_code == 503, response.text
    assert elapsed <= SHORT_DEADLINE_SECONDS + 1
    assert int(response.headers["Retry-After"]) >= 1
    assert mock.stats("info")["statuses"].get("500", 0) >= 2  # plain-text 500 each time, retried
    assert recorded(mock)["info"] == []
    assert "wrong hook id or token" in relay.log()


def test_wrong_hook_token_on_a_legacy_server_is_answered_502_at_once(start_relay, mock):
    mock.legacy_404 = True  # Rocket.Chat 6.x answers 404 JSON
    relay = start_relay(urls={"info": f"{mock.base_url}/hooks/info/not-the-info-token"})

    started = time.monotonic()
    response = relay.post_webhook(webhook_body(alert("LegacyWrongToken", "info")))
    elapsed = time.monotonic() - started

    assert response.status_code == 502, response.text
    assert elapsed < AT_ONCE_SECONDS
    [destination] = response.json()["destinations"]
    assert (destination["outcome"], destination["rocketchat_status"]) == ("refused", 404)
    assert mock.stats("info")["statuses"] == {"404": 1}


def test_disabled_hook_is_answered_503(start_relay, mock):
    relay = start_relay({"DELIVERY_DEADLINE_SECONDS": str(SHORT_DEADLINE_SECONDS)})
    mock.set_disabled("warning")

    started = time.monotonic()
    response = relay.post_webhook(webhook_body(alert("DisabledHook", "warning"), alert("StillFine", "critical")))
    elapsed = time.monotonic() - started

    assert response.status_code == 503, response.text
    assert elapsed <= SHORT_DEADLINE_SECONDS + 1
    assert int(response.headers["Retry-After"]) >= 1
    destinations = {item["destination"]: item for item in response.json()["destinations"]}
    assert (destinations["warning"]["outcome"], destinations["warning"]["rocketchat_status"]) == ("failed", 503)
    assert len(recorded(mock)["critical"]) == 1  # the other hook is not held back by the disabled one
    assert recorded(mock)["warning"] == []


def test_text_size_refusal_is_answered_200_after_the_plain_text_version(relay, shared_mock):
    shared_mock.set_fault("critical", status=400, body={"success": False, "error": "error-message-size-exceeded"},
                          count=1)

    response = relay.post_webhook(webhook_body(alert("TooBigForServer", "critical")))

    assert response.status_code == 200, response.text
    [destination] = response.json()["destinations"]
    assert destination["outcome"] == "delivered_plain_text"
    assert shared_mock.stats("critical")["statuses"] == {"400": 1, "200": 1}
    [message] = recorded(shared_mock)["critical"]
    assert "attachments" not in message
    assert "TooBigForServer" in message["text"]


def test_unreadable_rocketchat_answer_is_reported_as_rocketchats_failure(start_relay, mock):
    relay = start_relay({"DELIVERY_DEADLINE_SECONDS": str(FAST_DEADLINE_SECONDS)})
    mock.set_fault("critical", status=502, body="[" * 5000 + "]" * 5000)  # e.g. a broken proxy in front

    response = relay.post_webhook(webhook_body(alert("BehindBrokenProxy", "critical"), alert("Fine", "warning")))

    assert len(recorded(mock)["warning"]) == 1  # the other hook is not held back
    assert response.status_code == 503, response.text
    destinations = {item["destination"]: item for item in response.json()["destinations"]}
    assert destinations["critical"]["outcome"] == "failed"
    assert destinations["critical"].get("rocketchat_status") == 502
    assert "Traceback" not in relay.log()


# -- 5. mentions --

def test_configured_mention_leads_and_mentions_from_alert_text_are_defused(start_relay, mock):
    relay = start_relay({"ROCKETCHAT_MENTION_CRITICAL": "@here", "ROCKETCHAT_RATE_LIMIT": "off"})
    loud = alert("Disk @all full", "warning", summary="paging @all and @here now", description="@all: see @all.")
    loud["labels"]["instance"] = "@all"
    loud["labels"]["team"] = "@all"

    response = relay.post_webhook(webhook_body(alert("PageMe", "critical"), loud))
    assert response.status_code == 200, response.text
    # The plain-text fallback must not bring the mention back either.
    mock.set_fault("warning", status=400, body={"success": False, "error": "error-message-size-exceeded"}, count=1)
    response = relay.post_webhook(webhook_body(loud))
    assert response.status_code == 200, response.text

    messages = recorded(mock)
    [critical] = messages["critical"]
    assert critical["text"].startswith("@here")
    rich, plain = messages["warning"]
    assert "attachments" not in plain
    for message in (rich, plain):
        shown = "\n".join(strings_in(message))
        assert "paging" in shown  # the alert is there...
        assert "@all" not in shown  # ...without notifying the whole room
        assert "@here" not in shown  # no mention is configured for warning, and the alert's own does not count


# -- 6. the relay's own token --

def test_webhook_token_is_required_as_bearer_or_api_key(start_relay, mock):
    token = "relay-token-for-alertmanager"
    relay = start_relay({"WEBHOOK_TOKEN": token})
    body = webhook_body(alert("AuthCheck", "critical"))

    refused = [
        relay.post_webhook(body),
        relay.post_webhook(body, headers={"Authorization": "Bearer wrong-token"}),
        relay.post_webhook(body, headers={"X-API-Key": "wrong-token"}),
        relay.post_webhook(body, headers={"Authorization": f"Basic {token}"}),
    ]
    assert [response.status_code for response in refused] == [401] * 4
    assert all(response.headers.get("WWW-Authenticate", "").startswith("Bearer") for response in refused)
    assert recorded(mock)["critical"] == []  # nothing refused was posted

    accepted = [
        relay.post_webhook(body, headers={"Authorization": f"Bearer {token}"}),
        relay.post_webhook(body, headers={"X-API-Key": token}),
    ]
    assert [response.status_code for response in accepted] == [200, 200]
    assert len(recorded(mock)["critical"]) == 2
    assert relay.http.get(f"{relay.base_url}/health", timeout=5).status_code == 200  # probes need no token


# -- 7. no secret leaks --

@pytest.mark.slow
@pytest.mark.parametrize("log_to", ["stderr-text", "LOG_FILE-json"])
def test_no_secret_reaches_a_log_an_answer_or_a_header(tmp_path, log_to):
    webhook_token = "RelayInboundSecret-7d1c9e"
    metrics_token = "MetricsScrapeSecret-5a4b3c"
    previous_token = "RelayPreviousSecret-2e3f4a"
    hooks = {
        # connection refused
        "critical": f"http://127.0.0.1:{closed_port()}/hooks/RefusedHookId4711/RefusedHookToken-aa11bb22",
    }
    log_file = tmp_path / "relay.log"
    echo_mock = MockRocketChat({"info": ("EchoHookId0815", "EchoHookToken-cc33dd44"),
                                "default": ("RefuseHookId0816", "RefuseHookToken-dd44ee55")},
                               port=0, rate_limit_count=0)
    with SilentServer() as silent, echo_mock:
        hooks["warning"] = f"http://127.0.0.1:{silent.port}/hooks/SilentHookId1234/SilentHookToken-ee55ff66"
        hooks["info"] = echo_mock.hook_url("info")  # answers with bodies that echo its own URL
        hooks["default"] = echo_mock.hook_url("default")  # refuses with a body that echoes its own URL
        extra = {"LOG_LEVEL": "DEBUG", "WEBHOOK_TOKEN": webhook_token, "ROCKETCHAT_RATE_LIMIT": "off",
                 "WEBHOOK_TOKEN_PREVIOUS": previous_token, "METRICS_TOKEN": metrics_token,
                 "DELIVERY_DEADLINE_SECONDS": str(FAST_DEADLINE_SECONDS)}
        if log_to == "LOG_FILE-json":
            extra.update(LOG_FILE=str(log_file), LOG_FORMAT="json")
        environ = hook_environ(hooks, free_port(), extra)
        relay = Relay.start(GUNICORN_COMMAND, environ, output_dir=tmp_path,
                            log_path=log_file if log_to == "LOG_FILE-json" else None)
        try:
            responses = exercise_every_failure(relay, echo_mock, webhook_token)
            responses.append(relay.post_webhook(webhook_body(alert("WithPrevious", "info")),
                                                headers={"X-API-Key": previous_token}))
            for headers in ({}, {"Authorization": f"Bearer {metrics_token}"}):
                responses.append(relay.http.get(f"{relay.base_url}/metrics", headers=headers, timeout=5))
            assert [response.status_code for response in responses[-2:]] == [401, 200]
            assert "rocketchat_webhook_posts_total" in responses[-1].text
            if log_to == "stderr-text":
                # The silent hook's post times out after the client's 5 s read timeout, well after the answer.
                wait_until(lambda: "read timeout" in relay.log(), 10, "the relay to log the read timeout")
        finally:
            relay.stop()

    check = run_to_exit((*DEV_SERVER_COMMAND, "--check-config"), env=environ, cwd=REPO, output_dir=tmp_path,
                        name="check-config", timeout_seconds=30)
    assert check.returncode == 0, check.stderr

    secrets = {webhook_token, metrics_token, previous_token}
    for url in hooks.values():
        path = urllib.parse.urlsplit(url).path
        secrets |= {url, path, path.rsplit("/", 1)[1]}  # the URL, its path, its token
    places = {"stderr": relay.process.stderr(), "stdout": relay.process.stdout(),
              "--check-config output": check.stdout + check.stderr}
    if log_to == "LOG_FILE-json":
        places["LOG_FILE"] = log_file.read_text(encoding="utf-8")
        assert "rcwebhook" not in places["stderr"]  # the relay's own lines went to the file...
        assert all(json.loads(line)["message"] for line in places["LOG_FILE"].splitlines())  # ...one object each
    log = relay.log()
    # The log did record the failures, so its cleanliness means something.
    expected_lines = ["connection refused", "status=500", "status=400"]
    if log_to == "stderr-text":
        expected_lines.append("read timeout")
    for expected in expected_lines:
        assert expected in log, f"{expected!r} not logged"
    for index, response in enumerate(responses):
        places[f"answer {index} ({response.request.method} {response.status_code}) body"] = response.text
        places[f"answer {index} headers"] = json.dumps(dict(response.headers))
    leaks = [(secret, place) for secret in secrets for place, text in places.items() if secret in text]
    assert leaks == []


def exercise_every_failure(relay: Relay, echo_mock: MockRocketChat, token: str) -> list:
    """Alerts to a refused, a silent, an echoing and a refusing hook; bad input; failed authentication; the other
    routes. Returns the answers."""
    auth = {"Authorization": f"Bearer {token}"}
    responses = []
    for name, status, wrap in (("info", 500, str), ("default", 400, lambda text: {"success": False, "error": text})):
        url = echo_mock.hook_url(name)
        path = urllib.parse.urlsplit(url).path
        echo_mock.set_fault(name, status=status, body=wrap(f"no route for {url} (path {path}, {path.rsplit('/')[-1]})"))
    responses.append(relay.post_webhook(
        webhook_body(alert("ToRefused", "critical"), alert("ToSilent", "warning"), alert("ToEcho", "info")),
        headers=auth))
    assert responses[-1].status_code == 503, responses[-1].text
    responses.append(relay.post_webhook(webhook_body(alert("ToRefusing", "bogus-severity")), headers=auth))
    assert responses[-1].status_code == 502, responses[-1].text
    for bad_body in (b"{not json", b"[1, 2]", b"", b"\xff\xfe", b"{}", b'{"alerts": [{"status": "firing"}]}'):
        responses.append(relay.post_webhook(bad_body, headers=auth))
        assert 400 <= responses[-1].status_code < 500
    for headers in ({}, {"Authorization": "Bearer nope"}, {"X-API-Key": token[:-1]}, {"Authorization": token}):
        responses.append(relay.post_webhook(webhook_body(alert("NoAuth", "critical")), headers=headers))
        assert responses[-1].status_code == 401
    for path in ("/webhook", "/console", "/health", "/ready", "/metrics"):
        responses.append(relay.http.get(f"{relay.base_url}{path}", timeout=5))
    return responses
