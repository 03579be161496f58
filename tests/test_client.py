"""Classifying Rocket.Chat's answers: what each one means for the alert, as the contract describes them."""

import json
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


@pytest.mark.parametrize("body", [{"success": False}, {}, "OK", "", {"success": "true"}])
def test_200_without_success_true_is_a_content_refusal(body):
    assert answer(200, body)[0] is Outcome.CONTENT_REFUSED


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


@pytest.mark.parametrize("status", [401, 403])
def test_proxy_auth_refusals_are_permanent(status):
    assert answer(status, "Forbidden")[0] is Outcome.PERMANENT


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
