"""Threads under the dedup, retry and pacing rules, on a fake clock with rounds driven by hand (a review's repros):
a re-fire after a resolve is posted to the channel, an HA copy or a retry is split as the original, a storm resolving
at once goes to the channel rather than spending the budget on replies."""

from __future__ import annotations

import os

import pytest

from rcwebhook.config import load_config
from rcwebhook.dispatcher import Dispatcher
from rcwebhook.channels.rocketchat import RocketChatChannel
from rcwebhook.formatting import FormatOptions
from rcwebhook.hookqueue import Part
from rcwebhook.model import Alert, Notification
from rcwebhook.outcome import Outcome, PostResult
from rcwebhook.routes import Hook

URL = "http://rocketchat.test/hooks/critical-id/critical-secret-token"


class Clock:
    def __init__(self):
        self.t = 1000.0
    def __call__(self):
        return self.t


class FakeClient:
    """Answers with message ids to separateResponse posts; script: list of PostResults to use first."""
    def __init__(self):
        self.posts, self.script, self.n = [], [], 0
    def post(self, url, message, *, timeout_seconds=None):
        self.posts.append(message)
        if self.script:
            return self.script.pop(0)
        self.n += 1
        return PostResult(Outcome.DELIVERED, 200, "",
                          message_id=f"msg{self.n}" if message.get("separateResponse") else None)
    def close(self):
        pass


def make(threads=True, rate="10/60s", deadline="8", extra=None):
    env = {"ROCKETCHAT_WEBHOOK_DEFAULT": URL, "ROCKETCHAT_RATE_LIMIT": rate, "DELIVERY_DEADLINE_SECONDS": deadline,
           **(extra or {})}
    config = load_config(env)
    hook = Hook("critical", URL, threads=threads)
    clock = Clock()
    client = FakeClient()
    channel = RocketChatChannel(client, FormatOptions())
    d = Dispatcher(channel, [hook], config, clock=clock, wall_clock=clock)
    d.running, d.started_in_pid = True, os.getpid()  # no worker threads: rounds are driven by run()
    return d, hook, clock, client


def alert(name, status="firing", group="g", starts="2026-12-01T10:00:00Z", fp=True):
    return Alert(0, status, {"alertname": name, "group": group}, {"summary": name}, starts_at=starts,
                 ends_at="2026-12-01T10:30:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
                 fingerprint=f"{group}-{name}" if fp else "")


def note(group, *alerts, reason=""):
    return Notification(tuple(alerts), group_key=group, status=alerts[0].status if alerts else "firing",
                        notification_reason=reason)


def submit(d, hook, n):
    return d.submit(n, [Part(hook, n.alerts)], 100)


def run(d, clock, until=None, max_rounds=100):
    """Post rounds as the worker would, advancing the fake clock to each due time (up to `until`)."""
    q = d.queues[URL]
    rounds = 0
    while rounds < max_rounds:
        due = q.due_at(clock())
        if due is None or (until is not None and due > until):
            break
        clock.t = max(clock.t, due)
        d._work_one_round(q)
        rounds += 1
    if until is not None:
        clock.t = max(clock.t, until)
    return rounds


def describe(message):
    names = [a.get("title", "") for a in message.get("attachments", [])]
    return {"tmid": message.get("tmid"), "sep": message.get("separateResponse"), "text": message.get("text", "")[:80],
            "titles": names}

# -- a re-fire after a resolve


@pytest.mark.parametrize("threads", [False, True])
def test_a_refire_with_the_same_startsat_after_resolved_is_posted(threads):
    """hookqueue.submit: 'after FIRING then RESOLVED, the same FIRING again (a re-fire) is new and is posted'."""
    d, hook, clock, client = make(threads=threads)
    submit(d, hook, note("g", alert("A"))); run(d, clock)
    clock.t += 30
    submit(d, hook, note("g", alert("A", "resolved"))); run(d, clock)
    clock.t += 60  # well past STALE_FIRING_SECONDS, inside the 300 s de-duplication window
    refire = submit(d, hook, note("g", alert("A"), reason="new alerts"))
    run(d, clock)
    assert len(client.posts) == 3 and not any(refire.joined)


@pytest.mark.parametrize("threads", [False, True])
def test_a_refire_after_the_window_reaches_the_channel(threads):
    """Alertmanager < 0.32 (no notification_reason): a re-fire of an announced occurrence is not a reminder."""
    d, hook, clock, client = make(threads=threads)
    submit(d, hook, note("g", alert("A"))); run(d, clock)
    clock.t += 600
    submit(d, hook, note("g", alert("A", "resolved"))); run(d, clock)
    clock.t += 600
    submit(d, hook, note("g", alert("A"))); run(d, clock)
    assert client.posts[-1].get("tmid") is None, "a new FIRING page went into an old thread"

# -- copies and retries


def announce_in_two_messages(d, hook, clock):
    """A fires (msg1); 100 s later B joins the group (msg2 is B's thread)."""
    submit(d, hook, note("g", alert("A"))); run(d, clock)
    clock.t += 100
    submit(d, hook, note("g", alert("A"), alert("B"))); run(d, clock)
    clock.t += 100


def test_ha_peer_copy_of_a_resolved_notification_is_deduplicated():
    d, hook, clock, client = make()
    announce_in_two_messages(d, hook, clock)
    resolved = note("g", alert("A", "resolved"), alert("B", "resolved"))
    submit(d, hook, resolved)
    clock.t += 0.05
    peer = submit(d, hook, resolved)  # the HA peer's identical copy, 50 ms later
    run(d, clock)
    posts = [describe(m) for m in client.posts[2:]]
    assert all(peer.joined), "the peer's copy must join what it repeats"
    assert len(posts) == 2


def test_retry_after_a_transient_reply_failure_does_not_repost_the_channel_part():
    d, hook, clock, client = make()
    submit(d, hook, note("g", alert("A"), alert("B"))); run(d, clock)  # msg1
    clock.t += 100
    update = note("g", alert("A", "resolved"), alert("B"))
    start = clock.t
    submit(d, hook, update)
    # the channel part [B firing] is accepted, the reply [A resolved] meets a 503 each time until the deadline
    client.script = [PostResult(Outcome.DELIVERED, 200, "", message_id="msg2")] + \
        [PostResult(Outcome.TRANSIENT, 503, "unavailable")] * 5
    run(d, clock, until=start + 7.8)
    clock.t = start + 12  # Alertmanager re-sends (Retry-After)
    client.script = []
    again = submit(d, hook, update)
    assert all(again.joined), "the re-send joins the delivered channel part and the queued reply"
    run(d, clock)
    posts = [describe(m) for m in client.posts[1:]]
    delivered_channel = [p for p in posts if p["tmid"] is None]
    assert len(delivered_channel) == 1, "the channel part was posted again"

# -- a storm at once


def test_storm_of_20_groups_resolving_at_once_goes_to_the_channel_not_20_replies():
    d, hook, clock, client = make()
    for i in range(20):  # 20 groups announced over the day, each in its own message
        submit(d, hook, note(f"g{i}", alert("A", group=f"g{i}"))); run(d, clock)
        clock.t += 120
    posted_before = len(client.posts)
    start = clock.t
    subs = [submit(d, hook, note(f"g{i}", alert("A", "resolved", group=f"g{i}"))) for i in range(20)]
    replies = sum(1 for s in subs for j in s.jobs if j.reply_to)
    run(d, clock, until=start + 7.8)
    answered_200 = sum(all(j.finished for j in s.jobs) for s in subs)
    assert replies <= 2 and answered_200 == 20
    assert len(client.posts) - posted_before <= 3, "within Rocket.Chat's burst"

# -- a storm arriving over 0.4 s

@pytest.mark.parametrize("threads", [False, True])
def test_storm(threads):
    d, hook, clock, client = make(threads=threads)
    for i in range(20):
        submit(d, hook, note(f"g{i}", alert("A", group=f"g{i}"))); run(d, clock); clock.t += 120
    before, start = len(client.posts), clock.t
    subs = []
    for i in range(20):  # a storm: the 20 groups' notifications within 0.4 s
        subs.append(submit(d, hook, note(f"g{i}", alert("A", "resolved", group=f"g{i}"))))
        run(d, clock, until=clock.t + 0.02)
    run(d, clock, until=start + 7.8)
    ok = sum(all(j.finished for j in s.jobs) for s in subs)
    assert ok == 20 and len(client.posts) - before <= 3
