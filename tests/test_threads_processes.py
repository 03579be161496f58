"""Threads under the real server: the relay under gunicorn with ROCKETCHAT_THREADS=true posting to mock_server.py,
which answers separateResponse with the message's id as Rocket.Chat since mid-2025 does (or, as an older server,
without it). Resolved alerts and reminders reply in the thread of the message that announced them, across a restart
too (STATE_URL); an older server gets channel posts and one WARNING."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from tests.helpers import GUNICORN_COMMAND, REPO, Relay, free_port, relay_environ, wait_until

sys.path.insert(0, str(REPO))
from mock_server import MockRocketChat  # noqa: E402

pytestmark = pytest.mark.slow

STARTS_AT = "2026-12-01T10:00:00Z"
ENDS_AT = "2026-12-01T10:30:00Z"
NO_END = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of a firing alert
GROUP_KEY = '{}/{severity="critical"}:{alertname="DiskFull"}'
NO_ID_WARNING = "without one message id"
LOG_TIMEOUT_SECONDS = 5.0


@pytest.fixture
def mock():
    with MockRocketChat(port=0, rate_limit_count=0) as server:
        yield server


def start_relay(mock: MockRocketChat, tmp_path: Path, *, name: str = "relay") -> Relay:
    hooks = {f"ROCKETCHAT_WEBHOOK_{hook.upper()}": mock.hook_url(hook) for hook in ("critical", "warning", "info")}
    environ = relay_environ({
        "HOST": "127.0.0.1", "PORT": str(free_port()), "ROCKETCHAT_THREADS": "true", "ROCKETCHAT_RATE_LIMIT": "0",
        "STATE_URL": f"sqlite:///{tmp_path}/state.sqlite3", **hooks,
    })
    return Relay.start(GUNICORN_COMMAND, environ, output_dir=tmp_path, name=name)


@pytest.fixture
def relay(mock, tmp_path):
    relay = start_relay(mock, tmp_path)
    yield relay
    relay.stop()


def notification(status: str, *, reason: str = "") -> bytes:
    """What Alertmanager sends for the group of two DiskFull alerts, all firing or all resolved."""
    alerts = [{
        "status": status,
        "labels": {"alertname": "DiskFull", "severity": "critical", "instance": instance},
        "annotations": {"summary": f"disk full on {instance}"},
        "startsAt": STARTS_AT,
        "endsAt": ENDS_AT if status == "resolved" else NO_END,
        "generatorURL": "http://prometheus.test/graph?g0.expr=disk",
        "fingerprint": fingerprint,
    } for instance, fingerprint in (("db-1:9100", "a1b2c3d4e5f60001"), ("db-2:9100", "a1b2c3d4e5f60002"))]
    body = {
        "version": "4", "groupKey": GROUP_KEY, "truncatedAlerts": 0, "status": status, "receiver": "rocketchat-critical",
        "groupLabels": {"alertname": "DiskFull"}, "commonLabels": {"alertname": "DiskFull", "severity": "critical"},
        "commonAnnotations": {}, "externalURL": "http://alertmanager.test:9093", "alerts": alerts,
    }
    if reason:
        body["notification_reason"] = reason  # Alertmanager 0.32+
    return json.dumps(body).encode()


def deliver(relay: Relay, body: bytes) -> None:
    answer = relay.post_webhook(body)
    assert answer.status_code == 200, answer.text


def fire_and_check(relay: Relay, mock: MockRocketChat) -> dict:
    """Post the firing notification; its one message asked for its id."""
    deliver(relay, notification("firing"))
    [firing] = mock.wait_for_messages("critical", 1)
    assert firing["message"]["separateResponse"] is True and firing["tmid"] is None
    assert "db-1" in json.dumps(firing["message"]) and "db-2" in json.dumps(firing["message"])
    return firing


def thread_block(page: str, parent_id: str) -> str:
    """The thread drawn right after the parent's article on the mock's page."""
    match = re.search(rf'<article class="message" id="message-{re.escape(parent_id)}">(?:(?!</article>).)*</article>'
                      r'(<div class="thread"[^>]*>.*?</article></div>)(?=<article|</section>)', page, re.DOTALL)
    assert match, f"no thread block under message {parent_id}"
    return match[1]


def delivered_posts(relay: Relay) -> int:
    return len(re.findall(r"post destination=\S+ .*outcome=delivered", relay.log()))


def test_resolved_alerts_reply_in_the_thread_of_their_firing_message(relay, mock):
    """(a) Two alerts firing: one message; both resolved: one reply in its thread, drawn under it on the page."""
    firing = fire_and_check(relay, mock)
    deliver(relay, notification("resolved"))
    first, reply = mock.wait_for_messages("critical", 2)
    assert first == firing
    assert reply["tmid"] == firing["message_id"] and reply["message_id"] != firing["message_id"]
    assert "separateResponse" not in reply["message"]
    assert "db-1" in json.dumps(reply["message"]) and "db-2" in json.dumps(reply["message"])

    page = relay.http.get(f"{mock.base_url}/", timeout=5)
    assert page.status_code == 200
    thread = thread_block(page.text, firing["message_id"])
    assert f'<article class="message reply" id="message-{reply["message_id"]}">' in thread
    assert thread.count('<article class="message reply"') == 1 and "↳ reply in thread" in thread


def test_the_thread_survives_a_restart_on_the_same_state_url(mock, tmp_path):
    """(b) Stopped between firing and resolved, the relay started again on the same STATE_URL still replies there."""
    first = start_relay(mock, tmp_path, name="relay-1")
    try:
        firing = fire_and_check(first, mock)
    finally:
        first.stop()
    second = start_relay(mock, tmp_path, name="relay-2")
    try:
        deliver(second, notification("resolved"))
        _, reply = mock.wait_for_messages("critical", 2)
        assert reply["tmid"] == firing["message_id"]
    finally:
        second.stop()


def test_an_older_server_gets_channel_posts_and_one_warning(relay, mock):
    """(c) Rocket.Chat before mid-2025 answers without the id: the resolved alerts go to the channel; one WARNING."""
    mock.set_old_server(True)
    fire_and_check(relay, mock)
    deliver(relay, notification("resolved"))
    records = mock.wait_for_messages("critical", 2)
    assert [record["tmid"] for record in records] == [None, None]
    # The warning is logged before the post's own log line, so both posts' lines mean both were looked at.
    wait_until(lambda: delivered_posts(relay) >= 2, LOG_TIMEOUT_SECONDS, "the log lines of both posts")
    warnings = [line for line in relay.log().splitlines() if NO_ID_WARNING in line]
    assert len(warnings) == 1, relay.log()
    assert "WARNING" in warnings[0] and "threads are on for critical" in warnings[0]


def test_a_reminder_replies_in_the_thread(relay, mock):
    """(d) The same firing group sent again because repeat_interval elapsed is a reply, not a new channel message."""
    firing = fire_and_check(relay, mock)
    deliver(relay, notification("firing", reason="repeat_interval elapsed"))
    _, reminder = mock.wait_for_messages("critical", 2)
    assert reminder["tmid"] == firing["message_id"]
    assert "db-1" in json.dumps(reminder["message"]) and "db-2" in json.dumps(reminder["message"])
