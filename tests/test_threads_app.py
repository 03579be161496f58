"""Threads through the relay, with a fake Rocket.Chat that gives message ids as current servers do."""

from __future__ import annotations

import logging
import threading

import pytest

from tests.conftest import BASE_ENVIRON, HOOK_URLS, RecordingClient
from rcwebhook.app import create_app, shutdown
from rcwebhook.client import Outcome, PostResult


class ThreadingRocketChat(RecordingClient):
    """Answers a post that asks with separateResponse with a message id, as Rocket.Chat since mid-2025 does
    (old_server: never); gate holds the first post until released, so that later notifications merge."""

    def __init__(self, *, old_server: bool = False):
        super().__init__()
        self.old_server = old_server
        self.gate: threading.Event | None = None
        self.count = 0

    def post(self, url, message, *, timeout_seconds=None):
        if self.gate is not None:
            gate, self.gate = self.gate, None
            gate.wait(10)
        result = super().post(url, message, timeout_seconds=timeout_seconds)
        self.count += 1
        if result.outcome is Outcome.DELIVERED and message.get("separateResponse") and not self.old_server:
            return PostResult(Outcome.DELIVERED, 200, "", message_id=f"msg{self.count}")
        return result

    def critical(self) -> list[dict]:
        return self.messages_to("critical")


def body(group: str, *alerts: tuple[str, str], reason: str = "") -> dict:
    document = {"receiver": "rc", "groupKey": group, "status": alerts[0][1], "alerts": [
        {"status": status, "labels": {"alertname": name, "severity": "critical", "group": group},
         "annotations": {"summary": f"{name} summary"}, "startsAt": "2026-12-01T10:00:00Z",
         "endsAt": "2026-12-01T10:30:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
         "fingerprint": f"{group}-{name}"} for name, status in alerts]}
    if reason:
        document["notification_reason"] = reason
    return document


class Relay:
    def __init__(self, fake: ThreadingRocketChat, **environ: str):
        self.fake = fake
        self.environ = {**BASE_ENVIRON, "ROCKETCHAT_THREADS": "true", "ROCKETCHAT_RATE_LIMIT": "0",
                        "DELIVERY_DEADLINE_SECONDS": "5", **environ}
        self.app = create_app(self.environ, client=fake)
        self.client = self.app.test_client()

    def post(self, document: dict):
        return self.client.post("/webhook", json=document)

    def stop(self):
        self.app.extensions["rcwebhook.events"].flush(5)
        shutdown(self.app, drain_seconds=0)


@pytest.fixture
def relay():
    relay = Relay(ThreadingRocketChat())
    yield relay
    relay.stop()


def test_firing_posts_ask_for_their_id_and_resolved_alerts_reply_in_their_thread(relay):
    assert relay.post(body("g1", ("A", "firing"), ("B", "firing"))).status_code == 200
    [firing] = relay.fake.critical()
    assert firing["separateResponse"] is True and "tmid" not in firing
    assert relay.post(body("g1", ("A", "resolved"), ("B", "firing"))).status_code == 200
    reply = relay.fake.critical()[-1]
    assert reply["tmid"] == "msg1" and "separateResponse" not in reply
    assert "A" in str(reply) and "B summary" not in str(reply), "only the resolved alert replies"


def test_each_group_of_a_merged_post_replies_to_that_post(relay):
    relay.fake.gate = gate = threading.Event()
    answers = []
    first = threading.Thread(target=lambda: answers.append(relay.post(body("g0", ("Z", "firing")))))
    first.start()
    dispatcher = relay.app.extensions["rcwebhook.dispatcher"]
    queue = dispatcher.queues[HOOK_URLS["critical"]]
    for _ in range(200):  # the first post is in flight, held by the fake
        if queue.in_flight is not None:
            break
        threading.Event().wait(0.01)
    later = [threading.Thread(target=lambda g=g: answers.append(relay.post(body(g, ("X", "firing")))))
             for g in ("g1", "g2")]
    for thread in later:
        thread.start()
    for _ in range(200):
        if len(queue.waiting) == 2:
            break
        threading.Event().wait(0.01)
    gate.set()
    for thread in [first, *later]:
        thread.join(10)
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert len(relay.fake.critical()) == 2, "g1 and g2 shared the second post"
    for group in ("g1", "g2"):
        assert relay.post(body(group, ("X", "resolved"))).status_code == 200
        assert relay.fake.critical()[-1]["tmid"] == "msg2", group


def test_a_reminder_replies_in_the_thread(relay):
    relay.post(body("g1", ("A", "firing")))
    relay.post(body("g1", ("A", "firing"), reason="repeat_interval elapsed"))  # Alertmanager 0.32+
    reminder = relay.fake.critical()[-1]
    assert len(relay.fake.critical()) == 2 and reminder["tmid"] == "msg1"


def test_an_ha_peers_copy_of_the_firing_notification_is_still_deduplicated(relay):
    relay.post(body("g1", ("A", "firing")))
    again = relay.post(body("g1", ("A", "firing")))
    assert again.get_json()["deduplicated"] is True and len(relay.fake.critical()) == 1


def test_an_older_server_gets_channel_posts_and_one_warning(caplog):
    relay = Relay(ThreadingRocketChat(old_server=True))
    try:
        with caplog.at_level(logging.WARNING, logger="rcwebhook.delivery"):
            relay.post(body("g1", ("A", "firing")))
            relay.post(body("g2", ("B", "firing")))
            relay.post(body("g1", ("A", "resolved")))
        assert all("tmid" not in message for message in relay.fake.critical())
        warnings = [r for r in caplog.records if "without one message id" in r.getMessage()]
        assert len(warnings) == 1 and "critical" in warnings[0].getMessage()
    finally:
        relay.stop()


def test_a_reply_refused_for_its_content_goes_once_to_the_channel(relay):
    relay.post(body("g1", ("A", "firing")))
    relay.fake.answer(HOOK_URLS["critical"], PostResult(Outcome.CONTENT_REFUSED, 400, "error-invalid-tmid"))
    answer = relay.post(body("g1", ("A", "resolved")))
    assert answer.status_code == 200
    refused, channel = relay.fake.critical()[-2:]
    assert refused["tmid"] == "msg1" and "tmid" not in channel and "A" in str(channel)


def test_the_thread_survives_a_restart_and_never_crosses_to_another_hook(tmp_path):
    state = {"STATE_URL": f"sqlite:///{tmp_path}/state.sqlite3"}
    first = Relay(ThreadingRocketChat(), **state)
    first.post(body("g1", ("A", "firing")))
    first.post(body("g2", ("B", "firing")))
    first.stop()
    restarted = Relay(ThreadingRocketChat(), **state)
    try:
        restarted.post(body("g1", ("A", "resolved")))
        assert restarted.fake.critical()[-1]["tmid"] == "msg1"
    finally:
        restarted.stop()
    moved = Relay(ThreadingRocketChat(), **state,
                  ROCKETCHAT_WEBHOOK_CRITICAL="http://rocketchat.test/hooks/other-room/other-token-123")
    try:
        moved.post(body("g2", ("B", "resolved")))
        [message] = [m for url, m in moved.fake.posts if "other-room" in url]
        assert "tmid" not in message, "a reply threaded into another room's message"
    finally:
        moved.stop()


def test_with_threads_off_nothing_changes(relay):
    off = Relay(ThreadingRocketChat(), ROCKETCHAT_THREADS="false")
    try:
        off.post(body("g1", ("A", "firing")))
        off.post(body("g1", ("A", "resolved")))
        assert all("tmid" not in m and "separateResponse" not in m for m in off.fake.critical())
    finally:
        off.stop()
