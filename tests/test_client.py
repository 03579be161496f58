"""Classifying Rocket.Chat's answers: what each one means for the alert, as the contract describes them."""

import json
import math
import socket

import pytest

from rcwebhook.client import Outcome, RocketChatClient, classify_response, rate_limit_wait_seconds
from rcwebhook.redact import Redactor

NOW = 1_700_000_000.0


def answer(status, body, headers=None):
    text = body if isinstance(body, str) else json.dumps(body)
    return classify_response(status, headers or {}, text, NOW)


def test_success_needs_200_and_success_true():
    assert answer(200, {"success": True})[0] is Outcome.DELIVERED
    assert answer(200, {"success": True, "responses": [{"channel": "x", "message": {"_id": "1"}}]})[0] is Outcome.DELIVERED


def test_200_with_success_false_is_rocketchats_refusal_of_the_content():
    assert answer(200, {"success": False, "error": "x"})[0] is Outcome.CONTENT_REFUSED


@pytest.mark.parametrize("body", [{}, "OK", "", "<html>maintenance</html>", {"success": "true"}, [1], "null"])
def test_200_that_is_not_rocketchats_answer_is_transient_never_a_refusal(body):
    # A proxy's or a maintenance page's 200 posted nothing, but a retry may well post.
    outcome, reason, _ = answer(200, body)
    assert outcome is Outcome.TRANSIENT
    assert "not Rocket.Chat's answer" in reason


@pytest.mark.parametrize(
    "error",
    ["error-message-size-exceeded", "Invalid attachment field, title and value is required", "Invalid href value provided"],
)
def test_content_errors_can_be_fixed_by_a_plain_text_version(error):
    outcome, reason, _ = answer(400, {"success": False, "error": error})
    assert outcome is Outcome.CONTENT_REFUSED
    assert reason == error


@pytest.mark.parametrize(
    "error",
    ["invalid-channel", "error-not-allowed", "overriding destination channel is disabled for this integration",
     "error-running-script"],
)
def test_refusals_no_content_change_can_fix_are_permanent(error):
    assert answer(400, {"success": False, "error": error})[0] is Outcome.PERMANENT


def test_404_says_wrong_hook_id_or_token():
    outcome, reason, _ = answer(404, {"success": False, "error": "Invalid integration id or token provided."})
    assert outcome is Outcome.PERMANENT
    assert "wrong hook id or token" in reason


@pytest.mark.parametrize("status", [401, 403, 404])
def test_refusals_that_are_not_rocketchats_json_are_transient(status):
    # Not an answer Rocket.Chat gives (a proxy in front): retried, and 503 to Alertmanager, never a remembered refusal.
    outcome, reason, _ = answer(status, "Forbidden")
    assert outcome is Outcome.TRANSIENT
    assert "proxy" in reason


@pytest.mark.parametrize("status", [100, 204, 302, 405, 410, 418, 422, 451, 599, 600, 999])
def test_statuses_the_contract_does_not_list_are_transient(status):
    assert answer(status, "whatever")[0] is Outcome.TRANSIENT


def test_a_400_that_is_not_rocketchats_json_is_transient():
    assert answer(400, "<html>400 Bad Request</html>")[0] is Outcome.TRANSIENT


def test_plain_text_500_is_transient_with_wrong_token_hint():
    outcome, reason, _ = answer(500, "Internal Server Error")
    assert outcome is Outcome.TRANSIENT
    assert "wrong hook id or token" in reason


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_server_errors_are_transient(status):
    assert answer(status, {"success": False, "error": "Service Unavailable"})[0] is Outcome.TRANSIENT


def test_429_wait_read_from_reset_against_server_date():
    # The server's clock is 100 s behind ours: the wait must come from its Date, not from our clock.
    server_now = NOW - 100
    headers = {
        "X-RateLimit-Reset": str(int((server_now + 42) * 1000)),
        "Date": "Tue, 14 Nov 2023 22:11:40 GMT",  # = NOW - 100
    }
    assert abs(rate_limit_wait_seconds(headers, "", NOW) - 42) < 1e-6
    outcome, _, wait = answer(429, {"success": False, "error": "too many"}, headers)
    assert outcome is Outcome.TRANSIENT
    assert abs(wait - 42) < 1e-6


@pytest.mark.parametrize("reset", ["99999999999999999999", "1e400", "nan", "inf", "-inf", "garbage", "-5000", "", "0x10"])
def test_429_wait_from_an_unusable_or_absurd_reset_never_raises(reset):
    headers = {"X-RateLimit-Reset": reset, "Date": "Tue, 14 Nov 2023 22:13:20 GMT"}
    wait = rate_limit_wait_seconds(headers, "", NOW)
    # Absurd but finite values are returned as they are: the hook's queue caps them at its window.
    assert wait is None or (math.isfinite(wait) and wait >= 0)
    assert answer(429, {"success": False, "error": "x"}, headers)[0] is Outcome.TRANSIENT


@pytest.mark.parametrize("date", ["garbage", "Tue, 14 Nov 99999 22:13:20 GMT", "Mon, 32 Foo 2023 25:61:61 GMT"])
def test_429_with_an_unreadable_date_reads_the_reset_against_our_clock(date):
    headers = {"X-RateLimit-Reset": str(int((NOW + 30) * 1000)), "Date": date}
    assert abs(rate_limit_wait_seconds(headers, "", NOW) - 30) < 1e-6


def test_429_reset_in_the_past_is_ignored_in_favour_of_the_body_text():
    headers = {"X-RateLimit-Reset": str(int((NOW - 30) * 1000))}
    assert rate_limit_wait_seconds(headers, "You must wait 12 seconds", NOW) == 12
    assert rate_limit_wait_seconds(headers, "", NOW) is None


def test_429_wait_read_from_body_text_without_headers():
    body = {"success": False, "error": "Error, too many requests. Please slow down. You must wait 17 seconds before "
            "trying this endpoint again. [error-too-many-requests]"}
    assert answer(429, body)[2] == 17


def test_connection_refused_is_transient_and_names_no_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hooks/some-id/super-secret-token"
    result = RocketChatClient(Redactor([url])).post(url, {"text": "x"}, timeout_seconds=2)
    assert result.outcome is Outcome.TRANSIENT
    assert result.status is None
    assert result.reason == "connection refused"


def test_read_timeout_is_transient_and_names_no_url():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)  # accepts the connection but never answers
        url = f"http://127.0.0.1:{server.getsockname()[1]}/hooks/some-id/super-secret-token"
        result = RocketChatClient().post(url, {"text": "x"}, timeout_seconds=0.3)
    assert result.outcome is Outcome.TRANSIENT
    assert "timeout" in result.reason
    assert "super-secret-token" not in result.reason


def test_redactor_removes_secrets_urls_and_hook_paths():
    redact = Redactor(["tok-123456"])
    text = "failed http://rc:3000/hooks/abc/tok-123456 and /hooks/abc/other and bare tok-123456"
    redacted = redact(text)
    assert "tok-123456" not in redacted
    assert "/hooks/abc" not in redacted
    assert "rc:3000" not in redacted


def _serve_once(raw_answer: bytes):
    """A server that answers one request with raw_answer and closes; returns (url, thread)."""
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def answer_once():
        connection, _ = server.accept()
        with connection, server:
            connection.recv(65536)
            connection.sendall(raw_answer)

    thread = threading.Thread(target=answer_once, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{server.getsockname()[1]}/hooks/some-id/super-secret-token", thread


def test_a_compressed_answer_that_expands_past_the_cap_is_transient_not_held_in_memory():
    import gzip

    bomb = gzip.compress(b"0" * (64 * 1024 * 1024))  # 64 MiB of zeros in about 64 KiB
    head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
            f"Content-Length: {len(bomb)}\r\nConnection: close\r\n\r\n").encode()
    url, thread = _serve_once(head + bomb)
    result = RocketChatClient().post(url, {"text": "x"}, timeout_seconds=5)
    thread.join(5)
    assert result.outcome is Outcome.TRANSIENT
    assert "larger than 1048576 bytes" in result.reason


def test_a_gzip_answer_within_the_cap_is_read():
    import gzip

    body = gzip.compress(json.dumps({"success": True}).encode())
    head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    url, thread = _serve_once(head + body)
    result = RocketChatClient().post(url, {"text": "x"}, timeout_seconds=5)
    thread.join(5)
    assert result.outcome is Outcome.DELIVERED


def test_a_proxy_that_drips_its_tunnel_answer_holds_a_post_no_longer_than_its_bound(monkeypatch):
    import threading
    import time

    proxy = socket.socket()
    proxy.bind(("127.0.0.1", 0))
    proxy.listen(1)
    stop = threading.Event()

    def drip_connect_answer():
        connection, _ = proxy.accept()
        with connection:
            connection.recv(4096)
            for byte in b"HTTP/1.1 200 Connection established\r\n\r\n":
                if stop.wait(0.3):
                    return
                try:
                    connection.sendall(bytes([byte]))
                except OSError:
                    return

    thread = threading.Thread(target=drip_connect_answer, daemon=True)
    thread.start()
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.getsockname()[1]}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    started = time.monotonic()
    try:
        result = RocketChatClient().post("https://rocketchat.invalid/hooks/id/token", {"text": "x"}, timeout_seconds=1)
    finally:
        stop.set()
        proxy.close()
    assert result.outcome is Outcome.TRANSIENT
    assert time.monotonic() - started < 3  # the tunnel's dripped answer would take 12 s


def test_a_deadline_passing_as_the_answer_ends_never_cuts_the_next_post_on_that_pooled_connection(monkeypatch):
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import requests

    from rcwebhook import bounded_http

    posted = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_POST(self):
            posted.append(self.rfile.read(int(self.headers["Content-Length"])))
            if posted[-1] == b"second":
                time.sleep(0.6)  # the first exchange's 0.3 s deadline passes while this one waits for its answer
            answer_body = b'{"success":true}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer_body)))
            self.end_headers()
            self.wfile.write(answer_body)

        def log_message(self, *arguments):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/hooks/x/y"
    session = requests.Session()
    session.mount("http://", bounded_http.WatchedAdapter(pool_connections=1, pool_maxsize=1, max_retries=0))
    first_answered, second_done = threading.Event(), threading.Event()
    original_read = bounded_http.read_capped

    def read_then_linger(response, cap):
        content = original_read(response, cap)  # at the last byte urllib3 put the connection back in the pool
        if threading.current_thread().name == "first":
            first_answered.set()
            second_done.wait(5)  # the first exchange's deadline passes meanwhile, while the second uses the socket
        return content

    monkeypatch.setattr(bounded_http, "read_capped", read_then_linger)
    results = {}

    def post(name, total_seconds):
        try:
            results[name] = bounded_http.bounded_post(session, url, name.encode(), headers={},
                                                      connect_timeout_seconds=1, total_timeout_seconds=total_seconds,
                                                      max_answer_bytes=1000).status
        except Exception as error:  # noqa: BLE001 - recorded for the assertion
            results[name] = type(error).__name__
        if name == "second":
            second_done.set()

    first = threading.Thread(target=post, args=("first", 0.3), name="first")
    first.start()
    first_answered.wait(5)
    second = threading.Thread(target=post, args=("second", 5), name="second")
    second.start()
    for thread in (first, second):
        thread.join(10)
    server.shutdown()
    assert results == {"first": 200, "second": 200}
    assert posted == [b"first", b"second"]  # each posted once: nothing was cut and retried
