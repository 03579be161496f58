"""Tests of mock_server.py, the Rocket.Chat stand-in, over real HTTP."""

import email.utils
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mock_server  # noqa: E402
from mock_server import MockRocketChat  # noqa: E402

MOCK_SERVER_PATH = Path(mock_server.__file__)
START_EPOCH_SECONDS = 1_700_000_000.0  # a realistic epoch so the Date header is plausible
TOO_MANY = ("Error, too many requests. Please slow down. You must wait {} seconds before trying this endpoint "
            "again. [error-too-many-requests]")


class FakeClock:
    """A clock the tests move by hand."""

    def __init__(self, now: float = START_EPOCH_SECONDS):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def mock(clock):
    with MockRocketChat(port=0, clock=clock) as server:
        yield server


@pytest.fixture
def session():
    with requests.Session() as http:
        yield http


def post(session, url, message):
    return session.post(url, json=message, timeout=5)


def valid_attachment(**overrides):
    attachment = {
        "color": "#d9534f", "title": "HighCPU", "title_link": "https://prometheus.example/graph", "text": "*firing*",
        "pretext": "pre", "author_name": "alertmanager", "author_link": "http://am.example",
        "author_icon": "data:image/png;base64,AAAA", "image_url": "https://img.example/a.png",
        "thumb_url": "https://img.example/t.png", "collapsed": False, "ts": 1700000000,
        "fields": [{"short": True, "title": "severity", "value": "critical"}],
        "actions": [{"type": "button", "text": "Silence", "url": "https://am.example/#/silences/new"}],
    }
    attachment.update(overrides)
    return attachment


# -- posting --

def test_post_answers_success_and_records_the_message(mock, session, clock):
    message = {"text": "FIRING: HighCPU", "alias": "Alertmanager", "attachments": [valid_attachment()]}
    response = post(session, mock.hook_url("critical"), message)
    assert response.status_code == 200
    assert response.json() == {"success": True}
    assert response.headers["Content-Type"] == "application/json"
    [record] = mock.messages("critical")
    message_id = record.pop("message_id")
    assert len(message_id) == 17 and set(message_id) <= set(mock_server.MESSAGE_ID_ALPHABET)
    assert record == {"hook": "critical", "message": message, "received_at": clock.now, "client": "127.0.0.1",
                      "tmid": None}
    assert mock.messages("warning") == []


def test_default_hooks_and_urls(mock):
    assert mock.hook_names == ["critical", "warning", "info"]
    assert mock.hook_url("critical") == f"{mock.base_url}/hooks/critical/critical-token"
    assert mock.base_url == f"http://127.0.0.1:{mock.port}"
    with pytest.raises(KeyError):
        mock.hook_url("nope")


def test_custom_hooks():
    with MockRocketChat({"ops": ("abc123", "s3cret")}) as server, requests.Session() as http:
        assert server.hook_url("ops").endswith("/hooks/abc123/s3cret")
        assert post(http, server.hook_url("ops"), {"text": "hi"}).status_code == 200
        assert server.messages("ops")[0]["message"] == {"text": "hi"}


def test_legacy_url_with_user_id_is_accepted(mock, session):
    response = post(session, f"{mock.base_url}/hooks/warning/someUserId/warning-token", {"text": "legacy"})
    assert response.json() == {"success": True}
    assert mock.messages("warning")[0]["message"] == {"text": "legacy"}


@pytest.mark.parametrize("path", ["/hooks/critical/wrong-token", "/hooks/unknown/critical-token",
                                  "/hooks/critical/user/wrong-token"])
def test_bad_token_answers_500_plain_text(mock, session, path):
    mock.set_rate_limit(1, 60)
    for _ in range(3):
        response = post(session, mock.base_url + path, {"text": "x"})
        assert response.status_code == 500
        assert response.headers["Content-Type"].startswith("text/plain")
        assert "X-RateLimit-Limit" not in response.headers
    # Not counted by the limiter: the one allowed request of the window is still available.
    assert post(session, mock.hook_url("critical"), {"text": "ok"}).status_code == 200
    assert len(mock.messages("critical")) == 1


def test_bad_token_with_legacy_404_answers_json():
    with MockRocketChat(legacy_404=True) as server, requests.Session() as http:
        response = post(http, f"{server.base_url}/hooks/critical/wrong", {"text": "x"})
        assert response.status_code == 404
        assert response.json() == {"success": False, "error": "Invalid integration id or token provided."}
        assert server.messages("critical") == []


@pytest.mark.parametrize("body", [b'{"text": "broken', b'[{"text": "in an array"}]', b"", b"{}", b"null",
                                  b'"a string"', b"\xff\xfe"])
def test_trap_bodies_answer_success_and_post_nothing(mock, session, body):
    response = session.post(mock.hook_url("info"), data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200
    assert response.json() == {"success": True}
    assert mock.messages("info") == []
    assert mock.stats("info") == {"requests": 1, "statuses": {"200": 1}, "ignored": 1, "recorded": 0}


def test_get_on_hook_url_answers_success_and_posts_nothing(mock, session):
    response = session.get(mock.hook_url("critical"))
    assert response.json() == {"success": True}
    assert mock.stats("critical")["recorded"] == 0


def test_form_payload_is_accepted(mock, session):
    response = session.post(mock.hook_url("critical"), data={"payload": json.dumps({"text": "slack style"})})
    assert response.json() == {"success": True}
    assert mock.messages("critical")[0]["message"] == {"text": "slack style"}


def test_chunked_body_is_read(mock, session):
    response = session.post(mock.hook_url("critical"), data=iter([b'{"text": ', b'"chunked"}']),
                            headers={"Content-Type": "application/json"})
    assert response.json() == {"success": True}
    assert mock.messages("critical")[0]["message"] == {"text": "chunked"}


@pytest.mark.parametrize("override", [{"channel": "#general"}, {"roomId": "GENERAL"}])
def test_channel_override_is_refused(mock, session, override):
    response = post(session, mock.hook_url("critical"), {"text": "x", **override})
    assert response.status_code == 400
    assert response.json() == {"success": False,
                               "error": "overriding destination channel is disabled for this integration"}
    assert mock.messages("critical") == []


@pytest.mark.parametrize("text, accepted", [
    ("a" * 5000, True),
    ("a" * 5001, False),
    ("🔥" * 2500, True),  # a non-BMP character is 2 UTF-16 code units
    ("🔥" * 2501, False),
    ("  \n" + "a" * 5000 + " \t\n", True),  # counted after trimming
])
@pytest.mark.parametrize("key", ["text", "msg"])
def test_text_size_is_counted_in_utf16_units_after_trimming(mock, session, text, accepted, key):
    response = post(session, mock.hook_url("critical"), {key: text})
    if accepted:
        assert response.json() == {"success": True}
        assert len(mock.messages("critical")) == 1
    else:
        assert response.status_code == 400
        assert response.json() == {"success": False, "error": "error-message-size-exceeded"}
        assert mock.messages("critical") == []


HREF = "Invalid href value provided"
FIELD = "Invalid attachment field, title and value is required"


@pytest.mark.parametrize("attachment, error", [
    ("not an object", "Invalid attachment: each attachment must be an object"),
    (valid_attachment(color=1), "Invalid attachment: color must be a string"),
    (valid_attachment(text=["a"]), "Invalid attachment: text must be a string"),
    (valid_attachment(title=None), "Invalid attachment: title must be a string"),
    (valid_attachment(author_name=5), "Invalid attachment: author_name must be a string"),
    (valid_attachment(pretext={}), "Invalid attachment: pretext must be a string"),
    (valid_attachment(collapsed="yes"), "Invalid attachment: collapsed must be a boolean"),
    (valid_attachment(ts=[1]), "Invalid attachment: ts must be a string or a number"),
    (valid_attachment(ts=True), "Invalid attachment: ts must be a string or a number"),
    (valid_attachment(title_link="ftp://x"), HREF),
    (valid_attachment(author_link="javascript:alert(1)"), HREF),
    (valid_attachment(author_icon="/relative.png"), HREF),
    (valid_attachment(image_url="www.example.com/a.png"), HREF),
    (valid_attachment(thumb_url=None), HREF),
    (valid_attachment(message_link="chat/message"), HREF),
    (valid_attachment(actions=[{"type": "button", "url": "mailto:x@example.com"}]), HREF),
    (valid_attachment(actions="nope"), "Invalid attachment: actions must be a list of objects"),
    (valid_attachment(fields={"title": "a", "value": "b"}), FIELD),
    (valid_attachment(fields=[{"value": "b"}]), FIELD),
    (valid_attachment(fields=[{"title": "a"}]), FIELD),
    (valid_attachment(fields=[{"title": "", "value": "b"}]), FIELD),
    (valid_attachment(fields=[{"title": "a", "value": ""}]), FIELD),
    (valid_attachment(fields=["a: b"]), FIELD),
    # Stricter than the server, as the contract recommends: values must be strings.
    (valid_attachment(fields=[{"title": "count", "value": 3}]), FIELD),
    (valid_attachment(fields=[{"title": 3, "value": "x"}]), FIELD),
])
def test_invalid_attachment_is_refused(mock, session, attachment, error):
    message = {"text": "x", "attachments": [valid_attachment(), attachment]}
    response = post(session, mock.hook_url("critical"), message)
    assert response.status_code == 400
    assert response.json() == {"success": False, "error": error}
    assert mock.messages("critical") == []


def test_valid_attachment_variants_are_accepted(mock, session):
    attachments = [valid_attachment(ts="2023-11-14T22:13:20Z"), valid_attachment(ts=1.5, collapsed=True),
                   {"text": "minimal"}, valid_attachment(title_link="http://plain.example")]
    assert post(session, mock.hook_url("critical"), {"attachments": attachments}).json() == {"success": True}


@pytest.mark.parametrize("attachments", [{"color": 1}, "text", 3])
def test_attachments_that_are_not_a_list_are_dropped_not_refused(mock, session, attachments):
    response = post(session, mock.hook_url("critical"), {"text": "x", "attachments": attachments})
    assert response.json() == {"success": True}
    assert mock.messages("critical")[0]["message"]["attachments"] == attachments


@pytest.mark.parametrize("message", [{"text": "please MOCK-REJECT this"},
                                     {"text": "x", "attachments": [{"fields": [{"title": "t", "value": "MOCK-REJECT"}]}]}])
def test_mock_reject_marker_acts_as_a_failing_script(mock, session, message):
    response = post(session, mock.hook_url("critical"), message)
    assert response.status_code == 400
    assert response.json() == {"success": False, "error": "error-running-script"}
    assert mock.messages("critical") == []


# -- rate limit --

def test_rate_limit_allows_ten_then_answers_429_until_the_window_expires(mock, session, clock):
    window_start = clock.now
    reset_ms = str(int((window_start + 60) * 1000))
    for sent in range(1, 11):
        response = post(session, mock.hook_url("critical"), {"text": f"#{sent}"})
        assert response.status_code == 200
        assert response.headers["X-RateLimit-Limit"] == "10"
        assert response.headers["X-RateLimit-Remaining"] == str(10 - sent)
        assert response.headers["X-RateLimit-Reset"] == reset_ms
        clock.advance(1.5)
    response = post(session, mock.hook_url("critical"), {"text": "#11"})
    assert response.status_code == 429
    wait_seconds = math.ceil(window_start + 60 - clock.now)  # 60 - 15 = 45
    assert response.json() == {"success": False, "error": TOO_MANY.format(wait_seconds)}
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert response.headers["X-RateLimit-Reset"] == reset_ms
    assert "Retry-After" not in response.headers
    # The Date header follows the same clock as X-RateLimit-Reset.
    assert email.utils.parsedate_to_datetime(response.headers["Date"]).timestamp() == int(clock.now)
    assert len(mock.messages("critical")) == 10
    clock.advance(44.5)  # 59.5 s into the window: "wait 1 seconds" (ceil of 0.5)
    assert post(session, mock.hook_url("critical"), {"text": "x"}).json()["error"] == TOO_MANY.format(1)
    clock.advance(0.5)  # the window has expired: the next request opens a new one
    response = post(session, mock.hook_url("critical"), {"text": "new window"})
    assert response.status_code == 200
    assert response.headers["X-RateLimit-Remaining"] == "9"
    assert response.headers["X-RateLimit-Reset"] == str(int((clock.now + 60) * 1000))
    assert mock.stats("critical")["statuses"] == {"200": 11, "429": 2}


def test_refused_and_ignored_requests_spend_the_budget(mock, session):
    mock.set_rate_limit(3, 60)
    assert post(session, mock.hook_url("critical"), {"text": "x", "channel": "#x"}).status_code == 400
    assert session.post(mock.hook_url("critical"), data=b"[]").status_code == 200
    assert post(session, mock.hook_url("critical"), {"text": "counted"}).status_code == 200
    assert post(session, mock.hook_url("critical"), {"text": "too many"}).status_code == 429
    assert [record["message"]["text"] for record in mock.messages("critical")] == ["counted"]


def test_rate_limit_windows_are_per_hook(mock, session):
    mock.set_rate_limit(1, 60)
    assert post(session, mock.hook_url("critical"), {"text": "x"}).status_code == 200
    assert post(session, mock.hook_url("critical"), {"text": "x"}).status_code == 429
    assert post(session, mock.hook_url("warning"), {"text": "x"}).status_code == 200


def test_rate_limit_with_fractional_window(mock, session, clock):
    mock.set_rate_limit(2, 0.5)
    assert [post(session, mock.hook_url("info"), {"text": "x"}).status_code for _ in range(3)] == [200, 200, 429]
    clock.advance(0.5)
    assert post(session, mock.hook_url("info"), {"text": "x"}).status_code == 200


def test_rate_limit_off(mock, session):
    mock.set_rate_limit(0, 60)
    for _ in range(15):
        response = post(session, mock.hook_url("critical"), {"text": "x"})
        assert response.status_code == 200
        assert "X-RateLimit-Limit" not in response.headers
    assert len(mock.messages("critical")) == 15


# -- disabled and faults --

def test_disabled_hook_answers_503_after_the_rate_limit(mock, session):
    mock.set_rate_limit(1, 60)
    mock.set_disabled("critical")
    response = post(session, mock.hook_url("critical"), {"text": "x"})
    assert response.status_code == 503
    assert response.json() == {"success": False, "error": "Service Unavailable"}
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert post(session, mock.hook_url("critical"), {"text": "x"}).status_code == 429
    mock.set_rate_limit(0, 60)
    mock.set_disabled("critical", False)
    assert post(session, mock.hook_url("critical"), {"text": "x"}).status_code == 200


def test_fault_by_count_then_normal_answers(mock, session):
    mock.set_fault("critical", status=500, body="upstream exploded", count=2)
    for _ in range(2):
        response = post(session, mock.hook_url("critical"), {"text": "x"})
        assert response.status_code == 500
        assert response.headers["Content-Type"].startswith("text/plain")
        assert response.text == "upstream exploded"
        assert "X-RateLimit-Limit" in response.headers
    assert post(session, mock.hook_url("critical"), {"text": "after"}).json() == {"success": True}
    assert [record["message"]["text"] for record in mock.messages("critical")] == ["after"]
    assert mock.stats("critical")["statuses"] == {"500": 2, "200": 1}


def test_fault_with_json_body_and_default_body(mock, session):
    mock.set_fault("warning", status=200, body={"success": False, "error": "odd"}, count=1)
    response = post(session, mock.hook_url("warning"), {"text": "x"})
    assert (response.status_code, response.json()) == (200, {"success": False, "error": "odd"})
    mock.set_fault("warning", status=502)
    for _ in range(3):  # neither count nor seconds: until cleared
        assert post(session, mock.hook_url("warning"), {"text": "x"}).json()["success"] is False
    mock.clear_faults("warning")
    assert post(session, mock.hook_url("warning"), {"text": "x"}).status_code == 200


def test_fault_by_seconds_follows_the_clock(mock, session, clock):
    mock.set_rate_limit(0, 60)
    mock.set_fault("info", status=503, body={"success": False, "error": "Service Unavailable"}, seconds=30)
    assert post(session, mock.hook_url("info"), {"text": "x"}).status_code == 503
    clock.advance(29.9)
    assert post(session, mock.hook_url("info"), {"text": "x"}).status_code == 503
    clock.advance(0.1)
    assert post(session, mock.hook_url("info"), {"text": "x"}).status_code == 200


def test_fault_is_not_spent_by_bad_tokens_or_rate_limited_requests(mock, session):
    mock.set_rate_limit(1, 60)
    mock.set_fault("critical", status=500, count=1)
    assert post(session, f"{mock.base_url}/hooks/critical/wrong", {"text": "x"}).status_code == 500
    assert post(session, mock.hook_url("critical"), {"text": "x"}).status_code == 500  # the fault
    assert post(session, mock.hook_url("critical"), {"text": "x"}).status_code == 429
    mock.set_rate_limit(0, 60)
    assert post(session, mock.hook_url("critical"), {"text": "x"}).status_code == 200


def test_delay_only_fault_delays_then_processes_normally(mock, session):
    delay_seconds = 0.2
    mock.set_fault("critical", delay_seconds=delay_seconds, count=1)
    started = time.monotonic()
    response = post(session, mock.hook_url("critical"), {"text": "slow"})
    assert time.monotonic() - started >= delay_seconds
    assert response.json() == {"success": True}
    assert len(mock.messages("critical")) == 1


def test_delayed_fault_does_not_block_other_hooks(mock):
    mock.set_fault("critical", status=500, delay_seconds=0.5, count=1)
    slow = threading.Thread(target=requests.post, args=(mock.hook_url("critical"),), kwargs={"json": {"text": "x"}})
    slow.start()
    started = time.monotonic()
    assert requests.post(mock.hook_url("warning"), json={"text": "fast"}, timeout=5).status_code == 200
    assert time.monotonic() - started < 0.4
    slow.join()


@pytest.mark.parametrize("kwargs", [{"status": 99}, {"status": "500"}, {"body": 3}, {"delay_seconds": -1},
                                    {"count": 0}, {"seconds": 0}])
def test_set_fault_rejects_bad_arguments(mock, kwargs):
    with pytest.raises(ValueError):
        mock.set_fault("critical", **kwargs)


# -- wait_for_messages --

def test_wait_for_messages_returns_when_a_message_arrives_from_another_thread(mock):
    timeout_seconds = 10
    mock.set_fault("info", delay_seconds=0.2, count=1)  # the record lands while we are already waiting
    poster = threading.Thread(target=requests.post, args=(mock.hook_url("info"),), kwargs={"json": {"text": "late"}})
    started = time.monotonic()
    poster.start()
    records = mock.wait_for_messages("info", 1, timeout_seconds=timeout_seconds)
    assert time.monotonic() - started < timeout_seconds / 2  # woken by the record, not by the timeout
    poster.join()
    assert [record["message"]["text"] for record in records] == ["late"]


def test_wait_for_messages_raises_with_what_it_has_on_timeout(mock, session):
    post(session, mock.hook_url("info"), {"text": "only one"})
    with pytest.raises(AssertionError, match="expected 2 message.*got 1.*only one"):
        mock.wait_for_messages("info", 2, timeout_seconds=0.05)


def test_messages_returns_copies(mock, session):
    post(session, mock.hook_url("info"), {"text": "original"})
    mock.messages("info")[0]["message"]["text"] = "changed"
    assert mock.messages("info")[0]["message"]["text"] == "original"


# -- control API --

def test_control_api_inspection(mock, session):
    post(session, mock.hook_url("critical"), {"text": "c"})
    post(session, mock.hook_url("info"), {"text": "i"})
    session.post(mock.hook_url("info"), data=b"{}")
    post(session, f"{mock.base_url}/hooks/nope/nope", {"text": "x"})
    assert session.get(f"{mock.base_url}/_mock/health").json() == {"status": "ok"}
    everything = session.get(f"{mock.base_url}/_mock/messages").json()
    assert list(everything["hooks"]) == ["critical", "warning", "info"]
    assert [record["message"] for record in everything["hooks"]["critical"]] == [{"text": "c"}]
    one = session.get(f"{mock.base_url}/_mock/messages/info").json()
    assert one["hook"] == "info" and [record["message"] for record in one["messages"]] == [{"text": "i"}]
    missing = session.get(f"{mock.base_url}/_mock/messages/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]
    stats = session.get(f"{mock.base_url}/_mock/stats").json()
    assert stats["hooks"]["info"] == {"requests": 2, "statuses": {"200": 2}, "ignored": 1, "recorded": 1}
    assert stats["hooks"]["warning"] == {"requests": 0, "statuses": {}, "ignored": 0, "recorded": 0}
    assert stats["unknown_hook_requests"] == 1


def test_control_api_clearing(mock, session):
    post(session, mock.hook_url("critical"), {"text": "c"})
    assert session.delete(f"{mock.base_url}/_mock/messages").status_code == 200
    assert mock.messages("critical") == [] and mock.stats("critical")["requests"] == 1  # counters kept
    mock.set_rate_limit(1, 60)
    post(session, mock.hook_url("critical"), {"text": "c"})
    mock.set_fault("warning", status=500)
    mock.set_disabled("info")
    assert session.post(f"{mock.base_url}/_mock/reset").status_code == 200
    assert mock.stats("critical") == {"requests": 0, "statuses": {}, "ignored": 0, "recorded": 0}
    for name in ("critical", "warning", "info"):  # windows, faults and disabled flags are gone
        assert post(session, mock.hook_url(name), {"text": "x"}).status_code == 200


def test_control_api_faults_disabled_and_rate_limit(mock, session):
    base = f"{mock.base_url}/_mock"
    assert session.post(f"{base}/faults/critical", json={"status": 500, "body": "boom", "count": 1}).ok
    response = post(session, mock.hook_url("critical"), {"text": "x"})
    assert (response.status_code, response.text) == (500, "boom")
    assert session.post(f"{base}/faults/critical", json={"status": 502, "body": {"success": False}}).ok
    assert session.delete(f"{base}/faults/critical").ok
    assert post(session, mock.hook_url("critical"), {"text": "x"}).status_code == 200

    assert session.post(f"{base}/hooks/warning/disabled", json={"disabled": True}).ok
    assert post(session, mock.hook_url("warning"), {"text": "x"}).status_code == 503
    assert session.post(f"{base}/hooks/warning/disabled", json={"disabled": False}).ok
    assert post(session, mock.hook_url("warning"), {"text": "x"}).status_code == 200

    assert session.post(f"{base}/rate-limit", json={"limit": 1, "window_seconds": 2}).ok
    assert [post(session, mock.hook_url("info"), {"text": "x"}).status_code for _ in range(2)] == [200, 429]
    assert session.post(f"{base}/rate-limit", json={"limit": 0}).ok
    assert post(session, mock.hook_url("info"), {"text": "x"}).status_code == 200


@pytest.mark.parametrize("method, path, body, status", [
    ("GET", "/_mock/nothing", None, 404),
    ("GET", "/nothing", None, 404),
    ("DELETE", "/hooks/critical/critical-token", None, 404),
    ("GET", "/hooks/critical", None, 404),
    ("POST", "/_mock/faults/nope", {"status": 500}, 404),
    ("POST", "/_mock/faults/critical", {"status": "bad"}, 400),
    ("POST", "/_mock/faults/critical", {"stauts": 500}, 400),
    ("POST", "/_mock/faults/critical", [1], 400),
    ("POST", "/_mock/hooks/critical/disabled", {"disabled": "yes"}, 400),
    ("POST", "/_mock/rate-limit", {"limit": -1}, 400),
    ("POST", "/_mock/rate-limit", {}, 400),
])
def test_control_api_errors_answer_json(mock, session, method, path, body, status):
    response = session.request(method, mock.base_url + path, json=body)
    assert response.status_code == status
    assert "error" in response.json()


def test_control_api_rejects_malformed_json(mock, session):
    response = session.post(f"{mock.base_url}/_mock/rate-limit", data=b"{nope")
    assert response.status_code == 400


# -- output --

def test_posted_messages_are_printed_without_tokens(capsys):
    long_value = "v" * 500
    with MockRocketChat(quiet=False) as server, requests.Session() as http:
        message = {"text": "FIRING: DiskFull", "attachments": [
            valid_attachment(title="DiskFull on db1", fields=[{"title": "instance", "value": long_value}])]}
        post(http, server.hook_url("critical"), message)
        post(http, f"{server.base_url}/hooks/critical/user/critical-token", message)
    out, err = capsys.readouterr()
    assert "[critical] FIRING: DiskFull" in out
    assert "color=#d9534f" in out and "DiskFull on db1" in out and "instance: vvv" in out
    assert long_value not in out  # long values are truncated
    assert "POST /hooks/critical/***" in err
    assert "critical-token" not in out + err


def test_quiet_mock_prints_nothing(capsys, mock, session):
    post(session, mock.hook_url("critical"), {"text": "hush"})
    assert capsys.readouterr() == ("", "")


# -- command line --

@pytest.mark.parametrize("text, expected", [("10/60s", (10, 60.0)), ("10/2s", (10, 2.0)), ("3/0.5s", (3, 0.5)),
                                            ("off", (0, 60.0)), ("0", (0, 60.0))])
def test_parse_rate_limit(text, expected):
    assert mock_server.parse_rate_limit(text) == expected


@pytest.mark.parametrize("text", ["10", "10/60", "10/0s", "ten/60s", "10/60ms", "-1/60s"])
def test_parse_rate_limit_rejects_bad_values(text):
    with pytest.raises(Exception):
        mock_server.parse_rate_limit(text)


def test_parse_args_defaults_and_hooks():
    args = mock_server.parse_args([])
    assert (args.host, args.port, args.hooks, args.rate_limit, args.legacy_404, args.quiet) == (
        "127.0.0.1", 9999, None, (10, 60.0), False, False)
    args = mock_server.parse_args(["--hook", "ops=abc/tok", "--hook", "dev=def/tok2", "--rate-limit", "off",
                                   "--legacy-404", "--quiet"])
    assert args.hooks == [("ops", ("abc", "tok")), ("dev", ("def", "tok2"))]
    assert (args.rate_limit, args.legacy_404, args.quiet) == ((0, 60.0), True, True)
    with pytest.raises(SystemExit):
        mock_server.parse_args(["--hook", "no-token"])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_main_serves_until_signalled(stop_signal):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(MOCK_SERVER_PATH), "--port", str(port), "--hook", "ops=abc/tok", "--rate-limit", "2/60s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:  # readiness: poll health, bounded by the deadline
            try:
                if requests.get(f"{base_url}/_mock/health", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, "mock_server did not become ready"
            time.sleep(0.02)
        hook_url = f"{base_url}/hooks/abc/tok"
        assert [requests.post(hook_url, json={"text": "cli"}).status_code for _ in range(3)] == [200, 200, 429]
        process.send_signal(stop_signal)
        out, err = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 0
    assert f"mock Rocket.Chat on {base_url}" in out and f"ops={hook_url}" in out
    assert "[ops] cli" in out
