"""Retries, fallback and the answer to Alertmanager, on a fake clock with a fake Rocket.Chat client."""

import threading
import time

import pytest

from rcwebhook.client import Outcome, PostResult
from rcwebhook.config import Destination
from rcwebhook.delivery import Deliverer, DeliveryState, PlannedMessage, answer_status

CRITICAL = Destination("critical", "http://rc/hooks/id/critical-token")
RICH = {"text": "[FIRING:1] HighCPUUsage", "attachments": [{"color": "#d9534f", "title": "FIRING: HighCPUUsage"}]}
PLAIN = {"text": "[FIRING:1] HighCPUUsage\n• FIRING critical HighCPUUsage"}
OK = PostResult(Outcome.DELIVERED, 200, "")


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


class ScriptedClient:
    """Answers each post with the next scripted result and records what was posted."""

    def __init__(self, *results):
        self.results = list(results)
        self.posted = []

    def post(self, url, message, *, timeout_seconds=None):
        self.posted.append((url, message, timeout_seconds))
        return self.results.pop(0)


def deliver(client, clock=None, deadline_seconds=8.0):
    clock = clock or FakeClock()
    deliverer = Deliverer(client, deadline_seconds=deadline_seconds, clock=clock, sleep=clock.sleep, jitter=lambda: 1.0)
    planned = PlannedMessage(CRITICAL, ("alert",), RICH, PLAIN)
    return deliverer.deliver_one(planned, clock() + deadline_seconds), clock


def test_delivered_on_first_attempt():
    client = ScriptedClient(OK)
    report, _ = deliver(client)
    assert report.state == DeliveryState.DELIVERED
    assert [message for _, message, _ in client.posted] == [RICH]
    assert answer_status([report]) == (200, None)


def test_transient_failures_are_retried_with_growing_backoff_until_delivered():
    failure = PostResult(Outcome.TRANSIENT, 500, "HTTP 500")
    client = ScriptedClient(failure, failure, failure, OK)
    report, clock = deliver(client)
    assert report.state == DeliveryState.DELIVERED
    assert report.attempts == 4
    assert clock.now == pytest.approx(1000 + 0.25 + 0.5 + 1.0)


def test_transient_failure_past_the_deadline_answers_503_with_retry_after():
    failure = PostResult(Outcome.TRANSIENT, None, "connection refused")
    client = ScriptedClient(*[failure] * 50)
    report, clock = deliver(client)
    assert report.state == DeliveryState.FAILED
    assert clock.now < 1000 + 8  # gave up before the deadline instead of sleeping past it
    assert answer_status([report]) == (503, 5)


def test_429_is_waited_out_when_the_window_reopens_inside_the_deadline():
    limited = PostResult(Outcome.TRANSIENT, 429, "too many requests", wait_seconds=3.0)
    client = ScriptedClient(limited, OK)
    report, clock = deliver(client)
    assert report.state == DeliveryState.DELIVERED
    assert clock.now == pytest.approx(1003)


def test_429_beyond_the_deadline_answers_503_at_once_with_its_wait():
    limited = PostResult(Outcome.TRANSIENT, 429, "too many requests", wait_seconds=41.2)
    client = ScriptedClient(limited)
    report, clock = deliver(client)
    assert report.state == DeliveryState.FAILED
    assert clock.now == 1000  # no pointless waiting
    assert answer_status([report]) == (503, 42)


def test_content_refusal_falls_back_to_plain_text():
    refused = PostResult(Outcome.CONTENT_REFUSED, 400, "error-message-size-exceeded")
    client = ScriptedClient(refused, OK)
    report, _ = deliver(client)
    assert report.state == DeliveryState.DELIVERED_PLAIN_TEXT
    assert [message for _, message, _ in client.posted] == [RICH, PLAIN]
    assert answer_status([report]) == (200, None)


def test_plain_text_refused_too_answers_502():
    refused = PostResult(Outcome.CONTENT_REFUSED, 400, "Invalid href value provided")
    report, _ = deliver(ScriptedClient(refused, refused))
    assert report.state == DeliveryState.REFUSED
    assert answer_status([report]) == (502, None)


def test_permanent_refusal_gets_no_fallback_and_answers_502():
    permanent = PostResult(Outcome.PERMANENT, 400, "invalid-channel")
    client = ScriptedClient(permanent)
    report, _ = deliver(client)
    assert report.state == DeliveryState.REFUSED
    assert len(client.posted) == 1
    assert report.reason == "invalid-channel"


def test_each_attempt_gets_only_the_time_left():
    failure = PostResult(Outcome.TRANSIENT, 503, "HTTP 503")
    client = ScriptedClient(failure, OK)
    deliver(client, deadline_seconds=8.0)
    timeouts = [timeout for _, _, timeout in client.posted]
    assert timeouts[0] == pytest.approx(8.0)
    assert timeouts[1] == pytest.approx(8.0 - 0.25)


def test_a_failed_hook_outweighs_a_refused_one_so_alertmanager_retries():
    reports = [deliver(ScriptedClient(PostResult(Outcome.PERMANENT, 404, "wrong token")))[0],
               deliver(ScriptedClient(*[PostResult(Outcome.TRANSIENT, 500, "x")] * 50))[0]]
    assert answer_status(reports)[0] == 503


def test_the_request_is_answered_at_the_deadline_even_when_the_post_hangs():
    release = threading.Event()

    class HangingClient:
        def post(self, url, message, *, timeout_seconds=None):
            release.wait(30)  # a hung DNS lookup: no timeout of requests applies
            return OK

    deliverer = Deliverer(HangingClient(), deadline_seconds=0.6)
    started = time.monotonic()
    try:
        reports = deliverer.deliver([PlannedMessage(CRITICAL, ("alert",), RICH, PLAIN)])
    finally:
        release.set()
        deliverer.close()
    assert time.monotonic() - started < 2.0
    assert reports[0].state == DeliveryState.FAILED
    assert answer_status(reports)[0] == 503
