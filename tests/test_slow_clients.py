"""Slow, idle and oversized clients against the relay under gunicorn with the shipped gunicorn.conf.py.

gthread gave a connection a pool thread on its first byte and let it read the rest without a time limit: a few
hundred clients that sent a request line and stopped held every thread. rcwebhook.server's event loop reads each
request whole first; these tests hold a thousand such clients open and check that /health and a real notification
are still answered, and that the relay closes the slow ones after REQUEST_READ_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import http.client
import select
import socket
import subprocess
import time

import pytest

from tests.helpers import GUNICORN_COMMAND, PYTHON, REPO, Relay, direct_session, wait_until
from tests.test_processes import good_environ, mock, offline_environ  # noqa: F401 - mock is a fixture

ALERT_BODY = (REPO / "test-alert.json").read_bytes()
SLOW_CLIENTS = 1000
PROBES = 50
PROBE_TIMEOUT_SECONDS = 3.0  # /health answers in milliseconds; a probe that waits this long has failed
READ_TIMEOUT_SECONDS = 2  # REQUEST_READ_TIMEOUT_SECONDS where the test waits for it to pass
CLOSE_TIMEOUT_SECONDS = 30.0
KEEPALIVE_CLOSE_TIMEOUT_SECONDS = 20.0  # gunicorn.conf.py's keepalive (5 s), with room
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
CLOSED_LINE = "client connection(s) that did not send a whole request"


def webhook_head(content_length: int, *extra: str) -> bytes:
    lines = ["POST /webhook HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
             f"Content-Length: {content_length}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class AnswerReader:
    """HTTP/1.1 answers read off a raw socket, one after another (pipelined answers included)."""

    def __init__(self, sock: socket.socket):
        self.sock, self.data = sock, b""

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise AssertionError(f"the connection closed before a whole answer; got {self.data[:200]!r}")
        self.data += chunk

    def answer(self) -> tuple[int, dict[str, str], bytes]:
        """(status, headers with lower-case names, body by its Content-Length)."""
        while b"\r\n\r\n" not in self.data:
            self._more()
        head, _, self.data = self.data.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        length = int(headers.get("content-length", "0"))
        while len(self.data) < length:
            self._more()
        body, self.data = self.data[:length], self.data[length:]
        return int(status_line.split()[1]), headers, body

    def closed(self) -> bool:
        """True once the relay has closed the connection (after any answer still unread)."""
        return read_until_closed(self.sock, self) is not None


def read_until_closed(sock: socket.socket, into=None) -> bytes | None:
    """What arrived before the peer closed, or None while it is still open; never blocks."""
    sock.setblocking(False)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return into.data if into is not None else b""
            if into is not None:
                into.data += chunk
    except BlockingIOError:
        return None
    except ConnectionResetError:
        return into.data if into is not None else b""
    finally:
        sock.setblocking(True)


class SlowClients:
    """Connections that never finish a request: idle after connecting, one request line then nothing, headers a
    byte at a time (padded so they never end here), a body a byte at a time. trickle() sends the next bytes."""

    KINDS = ("idle", "request line", "trickled headers", "trickled body")

    def __init__(self, port: int, count: int):
        self.by_kind: dict[str, list[socket.socket]] = {kind: [] for kind in self.KINDS}
        self.unsent: dict[socket.socket, bytes] = {}
        self.readers: dict[socket.socket, AnswerReader] = {}
        self.closed: set[socket.socket] = set()
        padded_head = webhook_head(len(ALERT_BODY), "X-Padding: " + "p" * 4000)
        for index in range(count):
            kind = self.KINDS[index % len(self.KINDS)]
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            self.by_kind[kind].append(sock)
            self.readers[sock] = AnswerReader(sock)
            if kind == "request line":
                sock.sendall(b"POST /webhook HTTP/1.1\r\n")
            elif kind == "trickled headers":
                self.unsent[sock] = padded_head
            elif kind == "trickled body":
                sock.sendall(webhook_head(100_000))
                self.unsent[sock] = b"x" * 100_000

    @property
    def sockets(self) -> list[socket.socket]:
        return [sock for kind in self.KINDS for sock in self.by_kind[kind]]

    def trickle(self) -> None:
        for sock, unsent in self.unsent.items():
            if sock not in self.closed and unsent:
                try:
                    sock.send(unsent[:1])
                    self.unsent[sock] = unsent[1:]
                except OSError:  # the relay closed it (reset while a byte was on its way)
                    self.closed.add(sock)

    def still_open(self) -> int:
        for sock in self.sockets:
            if sock not in self.closed and self.readers[sock].closed():
                self.closed.add(sock)
        return len(self.sockets) - len(self.closed)

    def received(self, kind: str) -> list[bytes]:
        return [self.readers[sock].data for sock in self.by_kind[kind]]

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def probe_health(relay: Relay) -> int:
    """GET /health on a new connection, as a load balancer or the kubelet does."""
    with direct_session() as probe:
        return probe.get(f"{relay.base_url}/health", timeout=PROBE_TIMEOUT_SECONDS).status_code


@pytest.mark.slow
def test_health_and_a_notification_are_answered_while_1000_slow_clients_hold_connections(tmp_path, mock):
    # A read timeout far longer than the test: every slow client stays connected throughout.
    relay = Relay.start(GUNICORN_COMMAND, good_environ(mock, REQUEST_READ_TIMEOUT_SECONDS="120"), output_dir=tmp_path)
    clients = SlowClients(relay.port, SLOW_CLIENTS)
    try:
        for _ in range(PROBES):
            clients.trickle()
            assert probe_health(relay) == 200
        answer = relay.post_webhook(ALERT_BODY, timeout_seconds=10)
        assert answer.status_code == 200, answer.text
        assert answer.json()["processed"] == 2
        assert mock.wait_for_messages("critical", 1) and mock.wait_for_messages("warning", 1)
        assert clients.still_open() == SLOW_CLIENTS
    finally:
        clients.close()
        relay.stop()


@pytest.mark.slow
def test_slow_clients_are_closed_after_the_read_timeout_while_a_keepalive_client_goes_on(tmp_path, mock):
    environ = good_environ(mock, REQUEST_READ_TIMEOUT_SECONDS=str(READ_TIMEOUT_SECONDS))
    relay = Relay.start(GUNICORN_COMMAND, environ, output_dir=tmp_path)
    keepalive = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=PROBE_TIMEOUT_SECONDS)

    def health_on_one_connection() -> tuple[int, tuple]:
        keepalive.request("GET", "/health")
        response = keepalive.getresponse()
        response.read()
        return response.status, keepalive.sock.getsockname()  # the same local port: the connection was kept

    first = health_on_one_connection()
    assert first[0] == 200
    opened_at = time.monotonic()
    clients = SlowClients(relay.port, SLOW_CLIENTS)
    try:
        def all_closed() -> bool:
            clients.trickle()
            assert health_on_one_connection() == first
            return clients.still_open() == 0

        wait_until(all_closed, READ_TIMEOUT_SECONDS + CLOSE_TIMEOUT_SECONDS, "the relay to close every slow client")
        assert time.monotonic() - opened_at >= READ_TIMEOUT_SECONDS  # not one of them before its time
        # A client that sent part of a request is told why; one that sent nothing is closed silently.
        assert all(data.startswith(b"HTTP/1.1 408 Request Timeout\r\n") for data in clients.received("request line"))
        assert all(data == b"" for data in clients.received("idle"))
        assert health_on_one_connection() == first

        line = wait_until(lambda: [line for line in relay.log().splitlines() if CLOSED_LINE in line], 10,
                          "the relay to log the closed connections")[0]
        assert " WARNING " in line and "REQUEST_READ_TIMEOUT_SECONDS" in line
        assert "/webhook" not in line and "127.0.0.1" not in line  # counts, no request or client details

        # Left idle, the keep-alive connection is closed after gunicorn's keepalive.
        wait_until(lambda: read_until_closed(keepalive.sock) is not None, KEEPALIVE_CLOSE_TIMEOUT_SECONDS,
                   "the relay to close the idle keep-alive connection")
    finally:
        keepalive.close()
        clients.close()
        relay.stop()


def test_an_expect_100_continue_post_gets_one_continue_then_its_answer(tmp_path, mock):
    relay = Relay.start(GUNICORN_COMMAND, good_environ(mock), output_dir=tmp_path)
    try:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=PROBE_TIMEOUT_SECONDS) as sock:
            reader = AnswerReader(sock)
            # As curl sends a body over 1 KiB: the headers, then a wait (up to a second) for "100 Continue".
            sock.sendall(webhook_head(len(ALERT_BODY), "User-Agent: curl/7.88.1", "Expect: 100-continue"))
            while len(reader.data) < len(CONTINUE):
                reader._more()
            assert reader.data.startswith(CONTINUE)
            reader.data = reader.data[len(CONTINUE):]
            sock.sendall(ALERT_BODY)
            status, _headers, body = reader.answer()  # a second "100 Continue" would be read here instead
            assert status == 200, body
            # The connection is kept and serves the next request.
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert reader.answer()[0] == 200
    finally:
        relay.stop()


@pytest.fixture(scope="module")
def offline_relay(tmp_path_factory):
    """The relay with its defaults and hooks nobody listens on, for answers that post nothing."""
    relay = Relay.start(GUNICORN_COMMAND, offline_environ(MAX_BODY_BYTES="65536"),
                        output_dir=tmp_path_factory.mktemp("offline-relay"))
    yield relay
    relay.stop()


def test_a_body_over_max_body_bytes_gets_413_and_the_connection_closes(offline_relay):
    with socket.create_connection(("127.0.0.1", offline_relay.port), timeout=PROBE_TIMEOUT_SECONDS) as sock:
        reader = AnswerReader(sock)
        sock.sendall(webhook_head(65537) + b"{")  # the rest of the body never comes: the answer does not wait
        status, headers, _body = reader.answer()
        assert (status, headers["connection"]) == (413, "close")
        wait_until(reader.closed, 5, "the relay to close the connection after its 413")
    # A client that sends its whole body before reading (as requests does) gets the answer too, not a reset.
    answer = offline_relay.post_webhook(b"[" * 65537, timeout_seconds=10)
    assert answer.status_code == 413


def test_pipelined_requests_are_answered_in_order_on_one_connection(offline_relay):
    with socket.create_connection(("127.0.0.1", offline_relay.port), timeout=PROBE_TIMEOUT_SECONDS) as sock:
        reader = AnswerReader(sock)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /nowhere HTTP/1.1\r\nHost: x\r\n\r\nGET /heal")
        assert reader.answer()[0] == 200
        assert reader.answer()[0] == 404
        sock.sendall(b"th HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reader.answer()[0] == 200


@pytest.mark.parametrize(("request_bytes", "status"), [
    (webhook_head(2).replace(b"Content-Length: 2", b"Content-Length: 2x"), 400),
    # gunicorn's chunk reader raises an IOError while the app reads the body: a 400 naming the broken chunking.
    (b"POST /webhook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    (b"GET /health HTTP/1.1\r\nX-Padding: " + b"p" * 70_000, 431),
], ids=["bad Content-Length", "bad chunk size", "headers over 64 KiB"])
def test_bad_framing_is_answered_at_once_and_closed(offline_relay, request_bytes, status):
    with socket.create_connection(("127.0.0.1", offline_relay.port), timeout=PROBE_TIMEOUT_SECONDS) as sock:
        reader = AnswerReader(sock)
        sock.sendall(request_bytes)
        assert reader.answer()[0] == status
        wait_until(reader.closed, 5, "the relay to close the connection")


def test_past_max_queued_bytes_a_connection_is_answered_503(tmp_path):
    environ = offline_environ(MAX_BODY_BYTES="1024", MAX_QUEUED_BYTES="4096")
    relay = Relay.start(GUNICORN_COMMAND, environ, output_dir=tmp_path)
    senders = [socket.create_connection(("127.0.0.1", relay.port), timeout=PROBE_TIMEOUT_SECONDS) for _ in range(5)]
    try:
        for sock in senders:  # about 1,000 bytes each, held unfinished: together they pass 4,096
            sock.sendall(webhook_head(1000) + b"x" * 900)
        (refused,) = wait_until(lambda: select.select(senders, [], [], 0)[0], 5, "an answer to one of them")
        status, headers, _body = AnswerReader(refused).answer()
        assert (status, headers["retry-after"], headers["connection"]) == (503, "5", "close")
        waiting = [sock for sock in senders if sock is not refused]
        assert all(read_until_closed(sock) is None for sock in waiting)  # still waiting for their bodies
        for sock in waiting:
            sock.sendall(b"x" * 100)
            assert AnswerReader(sock).answer()[0] == 400  # whole now, the app answers (the body is not JSON)
        assert probe_health(relay) == 200
    finally:
        for sock in senders:
            sock.close()
        relay.stop()


# Starts gunicorn with an open-file limit too low for worker_connections, soft and hard.
LOW_LIMIT_LAUNCHER = (
    "import os, resource, sys; limit = int(sys.argv[1]); "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])"
)


@pytest.mark.slow
def test_out_of_file_descriptors_the_worker_logs_and_keeps_serving(tmp_path):
    command = (PYTHON, "-c", LOW_LIMIT_LAUNCHER, "64", *GUNICORN_COMMAND[1:])
    relay = Relay.start(command, offline_environ(REQUEST_READ_TIMEOUT_SECONDS="2"), output_dir=tmp_path)
    clients = []
    try:
        assert "the open-file hard limit is 64, below the" in relay.log()
        clients = [socket.create_connection(("127.0.0.1", relay.port), timeout=5) for _ in range(120)]
        wait_until(lambda: "out of file descriptors (EMFILE/ENFILE)" in relay.log(), 10,
                   "the worker to log that it ran out of file descriptors")
        for sock in clients:
            sock.close()
        relay.wait_healthy()
        assert probe_health(relay) == 200 and relay.process.running
    finally:
        for sock in clients:
            sock.close()
        relay.stop()


RAISE_LIMIT = """
import resource
from rcwebhook.server import raise_open_file_limit
resource.setrlimit(resource.RLIMIT_NOFILE, (100, 200))
print(raise_open_file_limit(150), resource.getrlimit(resource.RLIMIT_NOFILE))
print(raise_open_file_limit(500), resource.getrlimit(resource.RLIMIT_NOFILE))
"""


def test_the_open_file_limit_is_raised_up_to_the_hard_limit_and_a_shortfall_is_reported():
    finished = subprocess.run([PYTHON, "-c", RAISE_LIMIT], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert finished.returncode == 0, finished.stderr
    enough, short = finished.stdout.splitlines()
    assert enough == "None (150, 200)"
    assert short.startswith("the open-file hard limit is 200, below the 500 needed") and short.endswith("(200, 200)")
