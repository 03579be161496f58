"""GET /ws with real WebSocket clients (websocket-client, and a raw socket that never reads) against the relay under
gunicorn with the shipped gunicorn.conf.py: the messages, a slow client closed while Alertmanager's answers stay
prompt, MAX_LIVE_CLIENTS, Origin and STATUS_TOKEN, and SIGTERM with clients connected."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import signal
import socket
import struct
import threading
import time

import pytest
import websocket
from prometheus_client.parser import text_string_to_metric_families

from rcwebhook.live import DEFAULT_BUFFER_MESSAGES, GOING_AWAY, TRY_AGAIN_LATER
from tests.helpers import GUNICORN_COMMAND, REPO, Relay, wait_until
from tests.test_processes import good_environ, mock  # noqa: F401 - mock is a fixture
from mock_server import MockRocketChat

MAX_LIVE_CLIENTS = 2
CONNECT_TIMEOUT_SECONDS = 10.0
ANSWER_SECONDS = 5.0  # a webhook answered by a relay that waits for no live client: well under this
DELIVERY_DEADLINE_SECONDS = 4
EXIT_MARGIN_SECONDS = 4.0  # SIGTERM to exit: the drain's deadline plus this much for gunicorn and the interpreter
ALERT_BODY = (REPO / "test-alert.json").read_bytes()


@pytest.fixture(scope="module")
def module_mock():
    with MockRocketChat(port=0, rate_limit_count=0) as server:
        yield server


@pytest.fixture(scope="module")
def relay(module_mock, tmp_path_factory):
    """One relay for the module: pacing off (the slow-client test posts many bodies), MAX_LIVE_CLIENTS=2."""
    started = Relay.start(GUNICORN_COMMAND, good_environ(
        module_mock, MAX_LIVE_CLIENTS=str(MAX_LIVE_CLIENTS), ROCKETCHAT_RATE_LIMIT="0"),
        output_dir=tmp_path_factory.mktemp("live"))
    yield started
    started.stop()
    assert "Traceback" not in started.log()


@pytest.fixture
def live(relay):
    """The module's relay with no live client left over from an earlier test."""
    wait_until(lambda: live_clients(relay) == 0, 10, "the earlier tests' live clients to be gone")
    return relay


def metric(relay: Relay, name: str, **labels: str) -> float:
    text = relay.http.get(f"{relay.base_url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items()):
                return sample.value
    return 0.0


def live_clients(relay: Relay) -> float:
    return metric(relay, "rocketchat_webhook_live_clients")


def closed_total(relay: Relay, reason: str) -> float:
    return metric(relay, "rocketchat_webhook_live_clients_closed_total", reason=reason)


def connect(relay: Relay, **options) -> websocket.WebSocket:
    """websocket-client sends Origin: http://127.0.0.1:<port> by itself: the relay's own origin."""
    return websocket.create_connection(f"ws://127.0.0.1:{relay.port}/ws", timeout=CONNECT_TIMEOUT_SECONDS, **options)


def refusal(relay: Relay, **options) -> websocket.WebSocketBadStatusException:
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        connect(relay, **options)
    return refused.value


def messages_until(ws: websocket.WebSocket, done) -> list[dict]:
    """Text messages read until done(messages) is true."""
    messages: list[dict] = []
    while not done(messages):
        messages.append(json.loads(ws.recv()))
    return messages


class Follower:
    """A client that reads everything in a thread of its own: the texts, and the relay's close frame."""

    def __init__(self, ws: websocket.WebSocket):
        self.ws = ws
        self.texts: list[str] = []
        self.close: tuple[int, str] | None = None
        self.thread = threading.Thread(target=self._read, name="follower", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        self.ws.settimeout(None)
        try:
            while True:
                opcode, data = self.ws.recv_data(control_frame=True)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    self.close = (struct.unpack("!H", data[:2])[0], data[2:].decode("utf-8"))
                    return
                if opcode == websocket.ABNF.OPCODE_TEXT:
                    self.texts.append(data.decode("utf-8"))
        except (websocket.WebSocketException, OSError):
            pass

    def count(self, text: str) -> int:
        return sum(text in message for message in list(self.texts))


def raw_client(relay: Relay, receive_buffer_bytes: int = 4096, extra_headers: str = "") -> tuple[socket.socket, str]:
    """A WebSocket client that completes the handshake and then never reads, with a small receive window; and the
    handshake's answer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer_bytes)
    sock.settimeout(CONNECT_TIMEOUT_SECONDS)
    sock.connect(("127.0.0.1", relay.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{relay.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)  # byte by byte: nothing of the first frames is read past the handshake
        assert chunk, "the relay closed the connection during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock, head.decode("latin-1")


def reaches_end(sock: socket.socket, into: bytearray) -> bool:
    """Read what is there into into, without waiting; True once the relay has closed the connection."""
    sock.setblocking(False)
    try:
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                return True
            into += chunk
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def big_body(tag: str, alerts: int = 100) -> bytes:
    return json.dumps({"receiver": "rocketchat", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": f"Big{tag}", "severity": "info", "instance": f"host-{n}"},
         "annotations": {"summary": f"big alert {n}", "description": "d" * 4000}} for n in range(alerts)]}).encode()


# -- the messages --

def test_a_webhook_is_one_infrastructure_alert_per_alert_then_a_delivery_per_post(live):
    ws = connect(live)
    try:
        answer = live.post_webhook(ALERT_BODY)
        assert answer.status_code == 200
        messages = messages_until(ws, lambda got: sum(m["type"] == "delivery" for m in got) == 2)
    finally:
        ws.close()
    alerts = [m for m in messages if m["type"] == "infrastructure_alert"]
    deliveries = [m["data"] for m in messages if m["type"] == "delivery"]
    assert [m["type"] for m in messages[:2]] == ["infrastructure_alert"] * 2  # received before posted
    assert alerts[0] == {"type": "infrastructure_alert", "data": {
        "alertname": "HighCPUUsage", "status": "firing", "severity": "critical", "component": "node",
        "summary": "CPU usage above 95% on web-1", "description": "CPU usage has been above 95% for 5 minutes.",
        "started_at": "2024-01-15T10:30:00Z", "fingerprint": alerts[0]["data"]["fingerprint"],
        "receiver": "rocketchat", "integration": "default"}}
    assert len(alerts[0]["data"]["fingerprint"]) == 16
    assert [(a["data"]["alertname"], a["data"]["severity"]) for a in alerts] == [
        ("HighCPUUsage", "critical"), ("HighMemoryUsage", "warning")]
    assert sorted((d["destination"], d["outcome"], d["alerts"]) for d in deliveries) == [
        ("critical", "delivered", 1), ("warning", "delivered", 1)]
    assert all(isinstance(d["ms"], float) and d["ms"] >= 0 for d in deliveries)


def test_a_client_that_closes_frees_its_slot(live):
    ws = connect(live)
    wait_until(lambda: live_clients(live) == 1, 5, "the client to be counted")
    ws.close()
    wait_until(lambda: live_clients(live) == 0, 5, "the closed client to be forgotten")


# -- bounds and refusals --

def test_past_max_live_clients_the_next_is_refused_503_and_health_still_answers(live):
    before = closed_total(live, "full")
    clients = [connect(live) for _ in range(MAX_LIVE_CLIENTS)]
    try:
        refused = refusal(live)
        assert refused.status_code == 503
        assert "MAX_LIVE_CLIENTS" in json.loads(refused.resp_body)["error"]
        assert closed_total(live, "full") == before + 1
        health = live.http.get(f"{live.base_url}/health", timeout=2)
        assert health.status_code == 200
        assert live.post_webhook(ALERT_BODY, timeout_seconds=ANSWER_SECONDS).status_code == 200
        clients.pop().close()
        wait_until(lambda: live_clients(live) == MAX_LIVE_CLIENTS - 1, 5, "a slot to free up")
        clients.append(connect(live))  # the freed slot is taken again
    finally:
        for ws in clients:
            ws.close()


@pytest.mark.parametrize("origin", ["http://evil.example", "https://127.0.0.1"])
def test_a_foreign_origin_is_refused_403(live, origin):
    refused = refusal(live, origin=origin)
    assert refused.status_code == 403
    body = json.loads(refused.resp_body)
    assert body["status"] == "error" and body["error"].startswith("cross-origin WebSocket refused: ")
    assert live_clients(live) == 0


def test_a_client_without_origin_is_served(live):
    ws = connect(live, suppress_origin=True)
    try:
        live.post_webhook(ALERT_BODY)
        assert json.loads(ws.recv())["type"] == "infrastructure_alert"
    finally:
        ws.close()


def test_what_a_client_sends_is_dropped_and_compression_is_not_negotiated(live):
    ws = connect(live)
    try:
        for _ in range(20):
            ws.send("hello")  # a page's own keep-alive, say
        live.post_webhook(ALERT_BODY)
        assert json.loads(ws.recv())["type"] == "infrastructure_alert"
    finally:
        ws.close()
    offered, answer = raw_client(
        live, extra_headers="Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n")
    try:
        assert "sec-websocket-extensions" not in answer.lower()
    finally:
        offered.close()


# -- a slow client --

@pytest.mark.slow
def test_a_client_that_never_reads_is_closed_and_webhooks_never_wait_for_it(live):
    before = closed_total(live, "slow")
    fast = Follower(connect(live))
    slow, _ = raw_client(live)
    try:
        wait_until(lambda: live_clients(live) == 2, 5, "both clients to be counted")
        answers = []
        for number in range(60):
            started = time.monotonic()
            answer = live.post_webhook(big_body(str(number)), timeout_seconds=30)
            answers.append((answer.status_code, time.monotonic() - started))
            if closed_total(live, "slow") > before:
                break
        assert closed_total(live, "slow") == before + 1, "the client that never reads was not closed"
        assert all(status == 200 for status, _ in answers)
        assert max(seconds for _, seconds in answers) < ANSWER_SECONDS, answers
        # Read at last (within the relay's close grace): the frame it was stuck in, then the close frame, then the end.
        stream = bytearray()
        wait_until(lambda: reaches_end(slow, stream), 15, "the relay to close the client that never reads")
        reason = f"too slow: fell more than {DEFAULT_BUFFER_MESSAGES} messages behind".encode()
        close = bytes([0x88, 2 + len(reason)]) + struct.pack("!H", TRY_AGAIN_LATER) + reason
        assert stream.endswith(close), stream[-200:]
        wait_until(lambda: live_clients(live) == 1, 5, "the slow client to be forgotten")
        # The reading client was not affected: it got everything and stays connected.
        sent = 100 * len(answers)
        wait_until(lambda: fast.count('"infrastructure_alert"') == sent, 15, "the reading client to get every alert")
        assert fast.thread.is_alive() and fast.close is None
    finally:
        slow.close()
        fast.ws.close()


# -- STATUS_TOKEN --

def test_with_status_token_ws_needs_the_token(mock, tmp_path):  # noqa: F811 - mock is the fixture
    relay = Relay.start(GUNICORN_COMMAND, good_environ(mock, STATUS_TOKEN="s3cret"), output_dir=tmp_path)
    try:
        assert refusal(relay).status_code == 401
        assert refusal(relay, header=["Authorization: Bearer wrong"]).status_code == 401
        ws = connect(relay, header=["Authorization: Bearer s3cret"])
        relay.post_webhook(ALERT_BODY)
        assert json.loads(ws.recv())["type"] == "infrastructure_alert"
        ws.close()
    finally:
        relay.stop()
    assert "Traceback" not in relay.log()


# -- SIGTERM --

@pytest.mark.slow
def test_sigterm_closes_live_clients_going_away_and_the_drain_keeps_its_time(mock, tmp_path):  # noqa: F811
    relay = Relay.start(GUNICORN_COMMAND, good_environ(
        mock, DELIVERY_DEADLINE_SECONDS=str(DELIVERY_DEADLINE_SECONDS), MAX_LIVE_CLIENTS="4"), output_dir=tmp_path)
    try:
        reading = Follower(connect(relay))
        silent, _ = raw_client(relay)  # never reads, never answers the close: must not hold the exit
        wait_until(lambda: live_clients(relay) == 2, 5, "both clients to be counted")
        mock.set_fault("critical", delay_seconds=1.5, count=1)  # the first post is in flight at SIGTERM
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            first = pool.submit(relay.post_webhook, _one_alert("InFlightAtStop"))
            wait_until(lambda: mock.stats("critical")["requests"] >= 1, 10, "the first post to be in flight")
            queued = pool.submit(relay.post_webhook, _one_alert("QueuedAtStop"))
            wait_until(lambda: reading.count("QueuedAtStop"), 10, "the queued notification to be received")
            stopped_at = time.monotonic()
            os.killpg(relay.process.pid, signal.SIGTERM)  # as systemd stops the unit: every process of it
            wait_until(lambda: reading.close, 5, "the reading client's close frame")
            assert reading.close == (GOING_AWAY, "the relay is shutting down")
            assert first.result(timeout=30).status_code == 200
            assert queued.result(timeout=30).status_code == 200
        assert relay.process.wait(DELIVERY_DEADLINE_SECONDS + EXIT_MARGIN_SECONDS) == 0
        assert time.monotonic() - stopped_at < DELIVERY_DEADLINE_SECONDS + EXIT_MARGIN_SECONDS
        delivered = json.dumps(mock.messages("critical"))
        assert "InFlightAtStop" in delivered and "QueuedAtStop" in delivered
        silent.close()
    finally:
        relay.stop()
    assert "Traceback" not in relay.log()


def _one_alert(name: str) -> bytes:
    return json.dumps({"receiver": "rocketchat", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": name, "severity": "critical", "instance": "web-1"},
         "annotations": {"summary": f"{name} summary"}}]}).encode()
