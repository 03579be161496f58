"""The relay keeps its promise when its own machinery fails: workers that carry on, /health that tells the truth,
uncaught errors that reach the log redacted, failed authentications slowed from everywhere at once."""

from __future__ import annotations

import json
import logging
import threading

import pytest

from rcwebhook import dispatcher as dispatcher_module
from rcwebhook.app import create_app
from rcwebhook.auth import FailedAuthLimiter
from rcwebhook.logs import HANDLER_NAME
from tests.conftest import BASE_ENVIRON, HOOK_URLS, REPO
from tests.helpers import wait_until

TEST_ALERT = (REPO / "test-alert.json").read_text()


@pytest.fixture
def quick_pauses(monkeypatch):
    """Internal-error pauses of a millisecond, so a test reaches 'unhealthy' without waiting seconds."""
    monkeypatch.setattr(dispatcher_module, "INTERNAL_ERROR_PAUSE_SECONDS", 0.001)
    monkeypatch.setattr(dispatcher_module, "INTERNAL_ERROR_PAUSE_CAP_SECONDS", 0.001)


def make_app(fake_rocketchat, **overrides):
    application = create_app({**BASE_ENVIRON, "DELIVERY_DEADLINE_SECONDS": "5", **overrides}, client=fake_rocketchat)
    return application, application.extensions["rcwebhook.dispatcher"]


def queue_of(dispatcher, severity):
    return dispatcher.queues[HOOK_URLS[severity]]


def test_a_worker_whose_round_fails_logs_it_and_delivers_its_queue_afterwards(fake_rocketchat, monkeypatch, caplog):
    application, dispatcher = make_app(fake_rocketchat)
    queue = queue_of(dispatcher, "critical")
    original_take_batch = queue.take_batch
    failures = iter([RuntimeError("boom 1"), RuntimeError("boom 2")])

    def failing_take_batch(now):
        error = next(failures, None)
        if error is not None:
            raise error
        return original_take_batch(now)

    monkeypatch.setattr(queue, "take_batch", failing_take_batch)
    try:
        answer = application.test_client().post("/webhook", data=TEST_ALERT)
        assert answer.status_code == 200
        assert len(fake_rocketchat.messages_to("critical")) == 1
        errors = [record for record in caplog.records if "internal error in the post worker" in record.getMessage()]
        assert [record.levelno for record in errors] == [logging.ERROR, logging.ERROR]
        assert application.test_client().get("/health").status_code == 200
    finally:
        dispatcher.stop(drain_seconds=0)


def test_health_turns_503_while_a_worker_keeps_failing_and_200_once_it_recovers(
    fake_rocketchat, monkeypatch, quick_pauses
):
    application, dispatcher = make_app(fake_rocketchat)
    queue = queue_of(dispatcher, "warning")
    broken = threading.Event()
    broken.set()
    original_due_at = queue.due_at

    def due_at(now):
        if broken.is_set():
            raise RuntimeError("the queue is broken")
        return original_due_at(now)

    monkeypatch.setattr(queue, "due_at", due_at)
    client = application.test_client()
    try:
        with dispatcher.condition:
            dispatcher.condition.notify_all()  # the worker looks at its queue now, and fails
        unhealthy = wait_until(lambda: client.get("/health").status_code == 503 and client.get("/health"), 5,
                               "GET /health to answer 503")
        assert unhealthy.get_json()["status"] == "unhealthy"
        assert "warning" in unhealthy.get_json()["error"]
        assert client.get("/ready").status_code == 503
        broken.clear()
        wait_until(lambda: client.get("/health").status_code == 200, 5, "GET /health to answer 200 again")
        assert client.post("/webhook", data=TEST_ALERT).status_code == 200
        assert len(fake_rocketchat.messages_to("warning")) == 1
    finally:
        dispatcher.stop(drain_seconds=0)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_worker_thread_that_ended_is_restarted_by_health_with_its_queue_intact(fake_rocketchat, monkeypatch, caplog):
    application, dispatcher = make_app(fake_rocketchat)
    url = HOOK_URLS["critical"]
    original_round = dispatcher._work_one_round
    ended = threading.Event()

    def end_once(queue):
        if queue.destination.url == url and not ended.is_set():
            ended.set()
            raise SystemExit  # not an Exception: nothing in the worker catches it, the thread ends
        return original_round(queue)

    monkeypatch.setattr(dispatcher, "_work_one_round", end_once)
    dispatcher.stop(drain_seconds=0)  # start anew, so the new workers use the patched round
    dispatcher.stopping = False
    dispatcher.start()
    try:
        wait_until(lambda: not dispatcher.workers[url].is_alive(), 5, "the critical worker to end")
        client = application.test_client()
        assert client.get("/health").status_code == 200  # restarted on the spot
        assert "had stopped; restarted it" in caplog.text
        assert client.post("/webhook", data=TEST_ALERT).status_code == 200
        assert len(fake_rocketchat.messages_to("critical")) == 1
    finally:
        dispatcher.stop(drain_seconds=0)


def test_an_uncaught_error_in_any_thread_is_logged_redacted_not_printed_raw(fake_rocketchat, monkeypatch, capfd):
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    monkeypatch.setattr("sys.excepthook", __import__("sys").excepthook)
    monkeypatch.setattr("sys.unraisablehook", __import__("sys").unraisablehook)
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", root.level)
    application = create_app({**BASE_ENVIRON, "LOG_FORMAT": "json"}, client=fake_rocketchat, setup_logging=True)
    try:
        def fail():
            raise RuntimeError(f"could not reach {HOOK_URLS['info']}")

        thread = threading.Thread(target=fail, name="doomed")
        thread.start()
        thread.join()
        err = capfd.readouterr().err
        assert "uncaught error in thread doomed" in err
        assert "info-secret-token" not in err
        assert '"level": "ERROR"' in err  # the configured JSON format, not Python's raw traceback print
        assert not any(line.startswith("Traceback") for line in err.splitlines())
    finally:
        application.extensions["rcwebhook.dispatcher"].stop(drain_seconds=0)
        for handler in list(root.handlers):
            if handler.get_name() == HANDLER_NAME:
                root.removeHandler(handler)


def test_failed_authentications_from_many_addresses_are_slowed_together_and_the_right_token_never_is(
    fake_rocketchat,
):
    application = create_app({**BASE_ENVIRON, "WEBHOOK_TOKEN": "right-token-123"}, client=fake_rocketchat)
    client = application.test_client()
    try:
        answers = [
            client.post("/webhook", data="{}", headers={"X-API-Key": "guess"},
                        environ_base={"REMOTE_ADDR": f"10.0.{number // 250}.{number % 250}"}).status_code
            for number in range(2000)  # 100 addresses' worth of guesses, each address below its own limit of 20
        ]
        assert answers[:200] == [401] * 200
        assert set(answers[200:]) == {429}
        right = client.post("/webhook", data=TEST_ALERT, headers={"X-API-Key": "right-token-123"},
                            environ_base={"REMOTE_ADDR": "10.0.0.1"})
        assert right.status_code == 200
    finally:
        application.extensions["rcwebhook.dispatcher"].stop(drain_seconds=0)


def test_the_global_failure_window_expires():
    now = [0.0]
    limiter = FailedAuthLimiter(clock=lambda: now[0])
    assert not any(limiter.record_failure(f"a{number}") for number in range(200))
    assert limiter.record_failure("a-new") == "all"
    now[0] += 61
    assert limiter.record_failure("a-new") is None


def test_groups_remembered_for_de_duplication_are_capped_and_the_forgotten_are_counted(fake_rocketchat):
    application, dispatcher = make_app(fake_rocketchat, MAX_TRACKED_GROUPS="50", ROCKETCHAT_RATE_LIMIT="0")
    client = application.test_client()
    try:
        def body(number):
            return json.dumps({
                "status": "firing", "groupKey": f"group-{number}", "receiver": "rc",
                "alerts": [{"status": "firing", "labels": {"alertname": f"A{number}", "severity": "critical"},
                            "startsAt": "2026-12-01T07:00:00Z", "fingerprint": f"fp{number}"}],
            })

        assert {client.post("/webhook", data=body(number)).status_code for number in range(120)} == {200}
        assert len(queue_of(dispatcher, "critical").latest_by_group) == 50
        metrics = client.get("/metrics").get_data(as_text=True)
        assert 'rocketchat_webhook_tracked_groups_forgotten_total{destination="critical"} 70.0' in metrics
        # A recent group is still recognised; a forgotten one is posted again rather than lost.
        assert client.post("/webhook", data=body(119)).get_json().get("deduplicated") is True
        assert client.post("/webhook", data=body(0)).get_json().get("deduplicated") is None
        assert len(fake_rocketchat.messages_to("critical")) == 121
    finally:
        dispatcher.stop(drain_seconds=0)


def test_a_notification_that_cannot_be_rendered_is_isolated_and_the_others_delivered(fake_rocketchat, monkeypatch):
    application, dispatcher = make_app(fake_rocketchat, ROCKETCHAT_RATE_LIMIT="0")
    original_render = dispatcher.channel.render

    def render(batch):
        if any(job.notification.group_key == "poison" for job in batch.jobs):
            raise RuntimeError("cannot render this one")
        return original_render(batch)

    monkeypatch.setattr(dispatcher.channel, "render", render)
    client = application.test_client()
    results = {}
    try:
        def send(key):
            document = {"status": "firing", "groupKey": key, "alerts": [
                {"status": "firing", "labels": {"alertname": key, "severity": "critical"}, "fingerprint": key}]}
            results[key] = client.post("/webhook", data=json.dumps(document)).status_code

        threads = [threading.Thread(target=send, args=(key,)) for key in ("poison", "good")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        # The bad one is refused (502) instead of holding the hook; the good one goes out.
        assert results == {"poison": 502, "good": 200}
        assert [message["attachments"][0]["title"] for message in fake_rocketchat.messages_to("critical")] == [
            "FIRING: good"]
    finally:
        dispatcher.stop(drain_seconds=0)
