"""The live feed without a server: the events' messages, the clients' bounded buffers, the close requests, the wire's
deadline, and the refusals GET /ws answers before any upgrade (tests/test_live_feed_gunicorn.py has the real
WebSocket clients)."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from flask import Flask, Response
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from simple_websocket import ConnectionClosed

from rcwebhook import live
from rcwebhook.events import AlertsReceived, NotificationAnswered, PostAlert, PostFinished
from rcwebhook.fingerprint import labels_fingerprint
from rcwebhook.live import GOING_AWAY, TRY_AGAIN_LATER, LiveFeed, register_live_route
from rcwebhook.metrics import Metrics
from rcwebhook.model import Alert, Notification
from tests.helpers import call_within

WS_HEADERS = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
              "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


def alert(index=0, status="firing", fingerprint="", annotations=None, starts_at="2024-01-15T10:30:00Z",
          **labels) -> Alert:
    return Alert(index=index, status=status, labels={"alertname": "HighCPU", **labels},
                 annotations=annotations or {}, starts_at=starts_at, fingerprint=fingerprint)


def received(*alerts: Alert, severities=None, integration="default", receiver="rocketchat",
             group_labels=None) -> AlertsReceived:
    notification = Notification(alerts=alerts, receiver=receiver, group_labels=group_labels or {})
    return AlertsReceived(request_id="r1", integration=integration, notification=notification,
                          severities=tuple(severities or ["critical"] * len(alerts)), received_at=0.0)


def posted(destination="critical", outcome="delivered", alerts=1, ms=12.345) -> PostFinished:
    return PostFinished(destination=destination, outcome=outcome, status=200, message_id=None,
                        alerts=tuple(PostAlert("", {"alertname": f"A{n}"}, "") for n in range(alerts)), ms=ms, at=0.0)


def decoded(batch: list) -> list[dict]:
    return [json.loads(text) for text in live.event_messages(batch)]


def metric(metrics: Metrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def closed_count(metrics: Metrics, reason: str) -> float:
    return metric(metrics, "rocketchat_webhook_live_clients_closed_total", reason=reason)


@pytest.fixture
def metrics():
    return Metrics()


# -- the messages --

def test_an_alert_received_is_one_infrastructure_alert_with_the_seeds_fields_and_the_integration():
    event = received(alert(fingerprint="abc123", component="api", instance="web-1",
                           annotations={"summary": "CPU above 95%", "description": "for 5 minutes"}),
                     severities=["critical"], integration="grafana", receiver="team-rc")
    assert decoded([event]) == [{"type": "infrastructure_alert", "data": {
        "alertname": "HighCPU", "status": "firing", "severity": "critical", "component": "api",
        "summary": "CPU above 95%", "description": "for 5 minutes", "started_at": "2024-01-15T10:30:00Z",
        "fingerprint": "abc123", "receiver": "team-rc", "integration": "grafana",
    }}]


def test_each_alert_of_a_body_is_a_message_with_its_own_severity():
    event = received(alert(0, instance="a"), alert(1, status="resolved", instance="b"),
                     severities=["critical", "unknown"])
    messages = decoded([event])
    assert [(m["data"]["status"], m["data"]["severity"]) for m in messages] == [("firing", "critical"),
                                                                                  ("resolved", "unknown")]


@pytest.mark.parametrize("labels, component", [
    ({"component": "api", "service": "checkout", "job": "node"}, "api"),
    ({"service": "checkout", "job": "node"}, "checkout"),
    ({"job": "node"}, "node"),
    ({"component": " ", "service": "checkout"}, "checkout"),  # blank is absent
    ({}, ""),
])
def test_component_is_the_component_label_else_service_else_job(labels, component):
    assert decoded([received(alert(**labels))])[0]["data"]["component"] == component


def test_without_a_fingerprint_the_labels_fingerprint_is_sent():
    sent = alert(instance="web-1")
    assert decoded([received(sent)])[0]["data"]["fingerprint"] == labels_fingerprint(sent.labels)


def test_alertname_comes_from_the_group_when_the_alert_lacks_it():
    nameless = Alert(index=0, status="firing", labels={"instance": "a"}, annotations={})
    event = received(nameless, group_labels={"alertname": "FromGroup"})
    assert decoded([event])[0]["data"]["alertname"] == "FromGroup"


def test_summary_and_description_in_any_case_and_empty_when_absent():
    data = decoded([received(alert(annotations={"Summary": "cased", "DESCRIPTION": " "}))])[0]["data"]
    assert (data["summary"], data["description"]) == ("cased", "")


def test_a_post_is_a_delivery_with_its_alert_count_and_ms_to_a_tenth():
    assert decoded([posted("warning", "transient", alerts=3, ms=12.345)]) == [
        {"type": "delivery", "data": {"destination": "warning", "outcome": "transient", "alerts": 3, "ms": 12.3}}]


def test_other_events_are_not_sent():
    notification = Notification(alerts=(alert(),))
    answered = NotificationAnswered("r1", "default", notification, 200, 3.0, 0.0)
    assert live.event_messages([answered]) == []


def test_a_lone_surrogate_in_a_label_still_makes_valid_json_text():
    text, = live.event_messages([received(alert(component="bad\udc80"))])
    text.encode("utf-8")  # a WebSocket text frame must be UTF-8
    assert json.loads(text)["data"]["component"] == "bad\udc80"


def test_messages_are_built_once_and_shared_by_every_client(metrics):
    feed = LiveFeed(2, metrics)
    (first, _), (second, _) = feed.admit(), feed.admit()
    feed.on_events([received(alert())])
    assert first.take(0)[0] is second.take(0)[0]


# -- clients, buffers and closing --

def test_a_client_that_falls_behind_is_closed_and_the_others_get_everything(metrics):
    feed = LiveFeed(2, metrics, buffer_messages=4)
    (reading, _), (stalled, _) = feed.admit(), feed.admit()
    got = []
    for number in range(10):
        feed.on_events([received(alert(instance=f"i{number}"))])
        got.extend(reading.take(0))
    assert len(got) == 10 and not reading.closing
    assert stalled.close_code == TRY_AGAIN_LATER
    assert stalled.close_reason == "too slow: fell more than 4 messages behind"
    assert stalled.take(0) == []  # what it had is dropped: the close does not wait behind it
    assert closed_count(metrics, "slow") == 1
    feed.on_events([received(alert())])
    assert closed_count(metrics, "slow") == 1  # counted once


def test_one_burst_larger_than_the_buffer_does_not_close_a_client_that_kept_up(metrics):
    feed = LiveFeed(1, metrics, buffer_messages=4)
    client, _ = feed.admit()
    feed.on_events([received(*[alert(n, instance=str(n)) for n in range(50)])])
    assert len(client.take(0)) == 50 and not client.closing


def test_on_events_never_waits_for_a_client_that_never_reads(metrics):
    feed = LiveFeed(3, metrics)
    stalled = [feed.admit()[0] for _ in range(3)]
    batch = [received(*[alert(n, instance=str(n)) for n in range(100)])]

    def offer_many():
        for _ in range(200):
            feed.on_events(batch)

    call_within(5, offer_many, "20000 messages offered to clients that never read")
    assert all(client.close_code == TRY_AGAIN_LATER for client in stalled)
    assert all(len(client.pending) == 0 for client in stalled)  # bounded: dropped once closed


def test_take_wakes_as_soon_as_a_message_is_offered(metrics):
    feed = LiveFeed(1, metrics)
    client, _ = feed.admit()
    threading.Timer(0.05, feed.on_events, args=([received(alert())],)).start()
    started = time.monotonic()
    assert len(client.take(5)) == 1
    assert time.monotonic() - started < 2


def test_clients_past_the_bound_are_refused_and_counted(metrics):
    feed = LiveFeed(2, metrics)
    first, second = feed.admit()[0], feed.admit()[0]
    refused, why = feed.admit()
    assert refused is None and "MAX_LIVE_CLIENTS" in why
    assert closed_count(metrics, "full") == 1
    assert feed.clients_count == 2 and metric(metrics, "rocketchat_webhook_live_clients") == 2
    feed.release(first)
    feed.release(first)  # idempotent
    assert feed.clients_count == 1 and metric(metrics, "rocketchat_webhook_live_clients") == 1
    assert feed.admit()[0] is not None
    assert second is not None


def test_max_live_clients_zero_turns_the_feed_off(metrics):
    client, why = LiveFeed(0, metrics).admit()
    assert client is None and "MAX_LIVE_CLIENTS=0" in why


def test_close_all_closes_everyone_going_away_and_refuses_new_clients(metrics):
    feed = LiveFeed(3, metrics)
    clients = [feed.admit()[0] for _ in range(2)]
    call_within(1, lambda: feed.close_all("the relay is shutting down"), "close_all")
    assert [(c.close_code, c.close_reason) for c in clients] == [(GOING_AWAY, "the relay is shutting down")] * 2
    assert closed_count(metrics, "shutdown") == 2
    assert feed.admit() == (None, "the relay is shutting down")
    feed.close_all("again")
    assert closed_count(metrics, "shutdown") == 2


def test_a_close_reason_fits_a_close_frame():
    reason = live._close_reason("é" * 100)
    assert len(reason.encode("utf-8")) <= live.MAX_CLOSE_REASON_BYTES and reason == "é" * 61


# -- the sender --

class FakeWebSocket:
    """What serve_client uses of simple-websocket's Server: records what is sent; the peer's close is scripted."""

    def __init__(self, sock):
        self.sock = sock
        self.sent: list[str] = []
        self.closed_with = None
        self.peer_closed = threading.Event()
        self.thread = threading.Thread(target=self.peer_closed.wait, daemon=True)
        self.thread.start()

    def send(self, text):
        self.sent.append(text)

    def close(self, code=None, reason=None):
        self.closed_with = (code, reason)
        self.peer_closed.set()  # the peer answers the close at once

    def receive(self, timeout=None):
        if self.peer_closed.is_set():
            raise ConnectionClosed()
        return None


@pytest.fixture
def socket_pair():
    ours, theirs = socket.socketpair()
    yield ours, theirs
    ours.close()
    theirs.close()


def serve_in_thread(ws, client, feed):
    thread = threading.Thread(target=live.serve_client, args=(ws, client, feed), daemon=True)
    thread.start()
    return thread


def test_the_sender_sends_what_is_offered_then_closes_going_away_on_close_all(metrics, socket_pair):
    feed = LiveFeed(1, metrics)
    client, _ = feed.admit()
    ws = FakeWebSocket(socket_pair[0])
    sender = serve_in_thread(ws, client, feed)
    feed.on_events([received(alert()), posted()])
    call_within(5, lambda: _wait(lambda: len(ws.sent) == 2), "two messages sent")
    feed.close_all("the relay is shutting down")
    sender.join(5)
    assert not sender.is_alive()
    assert ws.closed_with == (GOING_AWAY, "the relay is shutting down")
    assert feed.clients_count == 0
    assert socket_pair[1].recv(10) == b""  # the socket was shut: simple-websocket's reader thread ends


def test_the_sender_ends_quietly_when_the_client_goes_away(metrics, socket_pair, caplog):
    feed = LiveFeed(1, metrics)
    client, _ = feed.admit()
    ws = FakeWebSocket(socket_pair[0])
    sender = serve_in_thread(ws, client, feed)
    ws.peer_closed.set()
    sender.join(5)
    assert not sender.is_alive() and feed.clients_count == 0 and ws.closed_with is None
    assert not [record for record in caplog.records if record.levelname in ("ERROR", "WARNING")]


def _wait(condition, timeout_seconds=5.0):
    deadline = time.monotonic() + timeout_seconds
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return True


def test_the_wire_gives_up_at_the_close_deadline_on_a_peer_that_never_reads(metrics, socket_pair):
    ours, _never_read = socket_pair
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client = live.LiveClient(4)
    wire = live._Wire(ours, client)
    client.close_deadline = time.monotonic() + 0.3
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        wire.send(b"x" * 10_000_000)
    assert time.monotonic() - started < 2


def test_the_wire_sends_each_frame_whole_when_two_threads_send_at_once(socket_pair):
    ours, theirs = socket_pair
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # every send is partial: interleaving would show
    wire = live._Wire(ours, live.LiveClient(4))
    frames = [bytes([65 + n]) * 200_000 for n in range(6)]
    received_bytes = bytearray()

    def read_all():
        while len(received_bytes) < sum(map(len, frames)):
            received_bytes.extend(theirs.recv(65536))

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    senders = [threading.Thread(target=wire.send, args=(frame,)) for frame in frames]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(10)
    reader.join(10)
    runs = [received_bytes[start:start + 200_000] for start in range(0, len(received_bytes), 200_000)]
    assert sorted(bytes(run) for run in runs) == frames


# -- the refusals before the upgrade --

def small_app(metrics, *, max_clients=2, token=None):
    app = Flask(__name__)
    feed = LiveFeed(max_clients, metrics)

    def authorize():
        if token is None or token == "given":
            return None
        return Response('{"status":"error","error":"missing token"}', 401, mimetype="application/json")

    register_live_route(app, feed, authorize)
    return app, feed


@pytest.mark.parametrize("origin", ["http://localhost", "http://LOCALHOST", "http://localhost:80"])
def test_the_own_origin_passes_the_origin_check(metrics, origin):
    app, _ = small_app(metrics)
    answer = app.test_client().get("/ws", headers={**WS_HEADERS, "Origin": origin})
    # The test client has no socket to hand over: the refusal after the Origin check.
    assert answer.status_code == 400 and "gunicorn" in answer.get_json()["error"]


def test_no_origin_passes_the_origin_check(metrics):
    app, _ = small_app(metrics)
    assert app.test_client().get("/ws", headers=WS_HEADERS).status_code == 400


@pytest.mark.parametrize("origin", ["http://evil.example", "https://localhost", "http://localhost:8080",
                                    "http://localhost.evil.example", "null", "http://localhost/path", "",
                                    "http://[localhost", "http://localhost:99999"])
def test_a_foreign_origin_is_refused_before_the_upgrade(metrics, origin):
    app, _ = small_app(metrics)
    answer = app.test_client().get("/ws", headers={**WS_HEADERS, "Origin": origin})
    assert answer.status_code == 403
    assert answer.get_json()["status"] == "error"
    assert answer.get_json()["error"].startswith("cross-origin WebSocket refused: ")


# Header values as a client may send them: printable Latin-1, no line breaks.
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"), max_size=40)


@settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(origin=HEADER_TEXT, host=HEADER_TEXT)
def test_any_origin_and_host_get_an_answer_never_an_error(metrics, origin, host):
    app, _ = small_app(metrics)
    answer = app.test_client().get("/ws", headers={**WS_HEADERS, "Origin": origin, "Host": host})
    assert answer.status_code in (400, 403)


def test_authorize_comes_first(metrics):
    app, _ = small_app(metrics, token="wrong")
    answer = app.test_client().get("/ws", headers={**WS_HEADERS, "Origin": "http://evil.example"})
    assert answer.status_code == 401


def test_a_full_feed_answers_503_before_the_upgrade(metrics, socket_pair):
    app, feed = small_app(metrics, max_clients=0)
    answer = app.test_client().get("/ws", headers=WS_HEADERS, environ_overrides={"werkzeug.socket": socket_pair[0]})
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
    assert "MAX_LIVE_CLIENTS" in answer.get_json()["error"]
    assert closed_count(metrics, "full") == 1 and feed.clients_count == 0


def test_a_handshake_without_a_key_is_a_400(metrics):
    app, _ = small_app(metrics)
    headers = {name: value for name, value in WS_HEADERS.items() if name != "Sec-WebSocket-Key"}
    answer = app.test_client().get("/ws", headers=headers)
    assert answer.status_code == 400 and "Sec-WebSocket-Key" in answer.get_json()["error"]


def test_a_failed_upgrade_frees_its_slot_without_an_error_in_the_log(metrics, socket_pair, caplog):
    app, feed = small_app(metrics, max_clients=1)
    socket_pair[1].close()  # the handshake's answer cannot be sent
    answer = app.test_client().get("/ws", headers=WS_HEADERS, environ_overrides={"werkzeug.socket": socket_pair[0]})
    assert answer.status_code == 400 and feed.clients_count == 0
    assert not [record for record in caplog.records if record.levelname == "ERROR"]


def test_cross_origin_refusals_are_logged_at_most_once_a_minute(metrics, caplog):
    app, _ = small_app(metrics)
    client = app.test_client()
    for _ in range(3):
        client.get("/ws", headers={**WS_HEADERS, "Origin": "http://evil.example\x1b[2J"})
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1 and "cross-origin WebSocket refused" in warnings[0]
    assert "\x1b" not in warnings[0]  # the Origin is quoted: no terminal escapes in the log


def test_occasional_log_counts_what_it_left_out(caplog):
    now = [0.0]
    log = live.OccasionalLog(60, clock=lambda: now[0])
    for _ in range(3):
        log.warning("refused")
    now[0] = 61
    log.warning("refused")
    assert [r.getMessage() for r in caplog.records] == ["refused", "refused (2 more since the previous such line)"]
