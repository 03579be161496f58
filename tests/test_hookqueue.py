"""Pacing, backoff, coalescing, splitting and de-duplication of one hook's queue, on a fake clock."""

import math

import pytest

from rcwebhook.client import Outcome, PostResult
from rcwebhook.config import Destination
from rcwebhook.hookqueue import HookQueue, Job, JobState, dedup_key
from rcwebhook.merging import merge_notifications
from rcwebhook.model import Alert, Notification
from rcwebhook.pacing import WAIT_MARGIN_SECONDS, PostBudget, parse_rate_limit

HOOK = Destination("critical", "http://rc/hooks/id/critical-token")
OK = PostResult(Outcome.DELIVERED, 200, "")
SERVER_ERROR = PostResult(Outcome.TRANSIENT, 500, "HTTP 500")
SCRIPT_FAILED = PostResult(Outcome.PERMANENT, 400, "error-running-script", content_dependent=True)  # as the client says
TOO_BIG = PostResult(Outcome.CONTENT_REFUSED, 400, "error-message-size-exceeded")
WRONG_CHANNEL = PostResult(Outcome.PERMANENT, 400, "invalid-channel")
# The relay's real defaults: Rocket.Chat's 10 posts per 60 s, answered within the 8 s deadline (minus 0.2 s margin).
REAL_LIMIT = "10/60s"
ANSWER_WITHIN_SECONDS = 7.8


def alert(name="A", status="firing", fingerprint="", starts_at="2024-01-15T10:00:00Z", instance="web-1"):
    return Alert(0, status, {"alertname": name, "severity": "critical", "instance": instance}, {},
                 starts_at=starts_at, fingerprint=fingerprint)


def job(*alerts, group_key="", reason=""):
    notification = Notification(alerts=tuple(alerts), group_key=group_key, notification_reason=reason)
    return Job(HOOK, notification, tuple(alerts), dedup_key(notification, alerts), 100)


def make_queue(limit="0", dedup_window_seconds=300.0):
    return HookQueue(HOOK, parse_rate_limit(limit), dedup_window_seconds, jitter=lambda: 1.0)


def post_once(queue, now, result):
    """Take what is due and answer it with result; returns the batch."""
    assert queue.due_at(now) is not None and queue.due_at(now) <= now
    batch = queue.take_batch(now)
    queue.finish(batch, result, now)
    return batch


# -- pacing ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "count", "window"), [("10/60s", 10, 60), ("10/2s", 10, 2), ("5/1m", 5, 60),
                                                        ("10/60", 10, 60), ("10/0.5s", 10, 0.5)])
def test_rate_limit_syntax(text, count, window):
    limit = parse_rate_limit(text)
    assert (limit.count, limit.window_seconds) == (count, window)


@pytest.mark.parametrize("text", ["0", "off"])
def test_rate_limit_off(text):
    assert not parse_rate_limit(text).enabled


@pytest.mark.parametrize("text", ["ten", "10/", "/60s", "10/0s", "-1/60s"])
def test_rate_limit_unreadable(text):
    with pytest.raises(ValueError):
        parse_rate_limit(text)


def test_budget_never_allows_more_than_the_limit_in_any_trailing_window():
    budget = PostBudget(parse_rate_limit(REAL_LIMIT))
    now, last, posts = 0.0, None, []
    while len(posts) < 40:
        now = budget.earliest_post_at(now, last)
        budget.record_attempt(now)
        posts.append(now)
        last = now
    for index in range(len(posts) - 10):
        assert posts[index + 10] - posts[index] >= 60  # the 11th post is never within 60 s of the 1st


def test_posts_go_at_once_while_the_budget_is_ample_then_are_spaced_to_last_the_window():
    budget = PostBudget(parse_rate_limit(REAL_LIMIT))
    now, last, post_times = 0.0, None, []
    for _ in range(12):  # always something waiting: post as soon as allowed
        now = budget.earliest_post_at(now, last)
        budget.record_attempt(now)
        post_times.append(now)
        last = now
    gaps = [later - earlier for earlier, later in zip(post_times, post_times[1:])]
    # A burst of 3 of the 10 goes almost at once: the first at once, the next two held 0.5 s so that a storm's
    # groups arriving together share them.
    assert post_times[:3] == [0.0, 0.5, 1.0]
    assert gaps[2:9] == [7.5] * 7  # then spaced so the rest of the budget lasts the window
    assert max(gaps) <= 7.5  # never an empty budget: a post at least every 7.5 s, inside the 8 s deadline


def test_a_lone_alert_after_a_quiet_window_goes_at_once():
    budget = PostBudget(parse_rate_limit(REAL_LIMIT))
    for at in (0.0, 1.0, 2.0, 10.0):
        budget.record_attempt(at)
    assert budget.seconds_until_post(70.5, 10.0) == 0.0


def test_rocketchats_own_remaining_count_is_followed():
    budget = PostBudget(parse_rate_limit(REAL_LIMIT))
    budget.observe_server(0.0, remaining=0, reset_in_seconds=12.5)  # another client spent the budget
    assert budget.earliest_post_at(0.0, None) == 12.5
    assert budget.earliest_post_at(13.0, None) == 13.0


# -- backoff and 429 ---------------------------------------------------------------------------------------------


def test_transient_failures_back_off_exponentially_up_to_the_cap_and_keep_the_job():
    queue = make_queue()
    queued = job(alert())
    queue.submit(queued, 0.0)
    now, gaps = 0.0, []
    for _ in range(8):
        post_once(queue, now, SERVER_ERROR)
        due = queue.due_at(now)
        gaps.append(due - now)
        now = due
    assert gaps == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert queued.state == JobState.QUEUED
    post_once(queue, now, OK)
    assert queued.state == JobState.DELIVERED


def test_429_waits_for_the_window_rocketchat_names():
    queue = make_queue()
    queue.submit(job(alert()), 0.0)
    post_once(queue, 0.0, PostResult(Outcome.TRANSIENT, 429, "too many", wait_seconds=17.0))
    assert queue.due_at(1.0) == 17.0


def test_every_attempt_counts_against_the_budget_failures_included():
    queue = make_queue("3/60s")
    queue.submit(job(alert()), 0.0)
    now = 0.0
    for _ in range(3):
        now = queue.due_at(now)
        post_once(queue, now, SERVER_ERROR)
    assert queue.due_at(now) >= 60.0  # three failed attempts spent the window


# -- coalescing --------------------------------------------------------------------------------------------------


def test_notifications_waiting_while_a_post_is_in_flight_go_together():
    queue = make_queue()
    first = job(alert("A"))
    queue.submit(first, 0.0)
    in_flight = queue.take_batch(0.0)
    waiting = [job(alert(f"B{index}")) for index in range(5)]
    for queued in waiting:
        queue.submit(queued, 0.1)
    assert queue.due_at(0.1) is None  # one post at a time per hook
    queue.finish(in_flight, OK, 0.2)
    batch = post_once(queue, 0.2, OK)
    assert batch.jobs == tuple(waiting)
    assert all(queued.state == JobState.DELIVERED for queued in waiting)


def test_merged_headline_counts_groups_and_states():
    from rcwebhook.formatting import FormatOptions, build_message

    parts = [(Notification(alerts=(alert("A", instance=f"i{i}"),)), [alert("A", instance=f"i{i}")]) for i in range(11)]
    resolved = alert("B", status="resolved")
    parts.append((Notification(alerts=(resolved,), status="resolved"), [resolved]))
    notification, alerts = merge_notifications(parts)
    message = build_message(notification, alerts, FormatOptions(), group_count=len(parts))
    assert message["text"] == "[FIRING:11, RESOLVED:1] 12 groups"
    assert len(message["attachments"]) == 12


def test_newest_state_of_an_alert_wins_when_merged():
    firing = alert("A", fingerprint="f1")
    resolved = alert("A", status="resolved", fingerprint="f1")
    _, alerts = merge_notifications([(Notification(alerts=(firing,)), [firing]),
                                     (Notification(alerts=(resolved,)), [resolved])])
    assert [a.status for a in alerts] == ["resolved"]
    # A FIRING of the same occurrence arriving just after its RESOLVED is a copy out of order: RESOLVED stays.
    _, alerts = merge_notifications([(Notification(alerts=(resolved,)), [resolved]),
                                     (Notification(alerts=(firing,)), [firing])])
    assert [a.status for a in alerts] == ["resolved"]


def test_a_re_fire_with_the_same_starts_at_after_its_resolved_is_posted():
    # Prometheus restarted (it restores the alert's ActiveAt): Alertmanager resolved the alert by timeout, then
    # sends it FIRING again with the same startsAt. That is a page, not a stale retry.
    queue = make_queue()
    for state, at in (("firing", 0.0), ("resolved", 100.0), ("firing", 400.0)):
        queued, joined = queue.submit(group("f1", status=state), at)
        assert not joined
        batch = post_once(queue, at, OK)
        assert [alert.status for _, alerts in batch.parts for alert in alerts] == [state]  # it was posted
        assert queued.state == JobState.DELIVERED
    # ... and Alertmanager's retry of that last FIRING still joins it.
    assert queue.submit(group("f1"), 401.0)[1]


# -- refusals ----------------------------------------------------------------------------------------------------


def queued_behind_a_post(count):
    """A queue where `count` notifications waited while another post was in flight, so they go out merged."""
    queue = make_queue()
    queue.submit(job(alert("Z")), 0.0)
    in_flight = queue.take_batch(0.0)
    jobs = [job(alert(f"N{index}")) for index in range(count)]
    for queued in jobs:
        queue.submit(queued, 0.0)
    queue.finish(in_flight, OK, 0.0)
    return queue, jobs


def test_a_refused_merged_post_is_split_down_to_the_bad_notification():
    queue, jobs = queued_behind_a_post(8)
    bad = jobs[5]
    posts = 0
    while queue.due_at(0.0) is not None:
        batch = queue.take_batch(0.0)
        posts += 1
        queue.finish(batch, SCRIPT_FAILED if bad in batch.jobs else OK, 0.0)
    assert [queued.state for queued in jobs if queued is not bad] == [JobState.DELIVERED] * 7
    assert bad.state == JobState.REFUSED
    assert posts <= 1 + 2 * math.ceil(math.log2(8))  # halving, not one post per notification


def test_a_single_content_refusal_gets_the_plain_text_version():
    queue = make_queue()
    queued = job(alert())
    queue.submit(queued, 0.0)
    post_once(queue, 0.0, TOO_BIG)
    batch = post_once(queue, 0.0, OK)
    assert batch.plain_text
    assert queued.state == JobState.DELIVERED_PLAIN_TEXT


def test_a_refusal_no_content_change_can_fix_is_neither_split_nor_retried():
    queue, jobs = queued_behind_a_post(4)
    post_once(queue, 0.0, WRONG_CHANNEL)
    assert all(queued.state == JobState.REFUSED for queued in jobs)
    assert queue.due_at(0.0) is None


# -- de-duplication ----------------------------------------------------------------------------------------------


def group(*fingerprints, status="firing", reason=""):
    return job(*(alert(f"A{f}", status=status, fingerprint=f) for f in fingerprints), group_key="{}:{x=\"1\"}",
               reason=reason)


def test_a_repeat_of_a_delivered_notification_joins_it_within_the_window():
    queue = make_queue(dedup_window_seconds=300)
    first = group("f1", "f2")
    queue.submit(first, 0.0)
    post_once(queue, 0.0, OK)
    repeat, joined = queue.submit(group("f2", "f1"), 100.0)
    assert joined and repeat.finished and repeat.done.is_set()
    assert (repeat.state, repeat.status) == (JobState.DELIVERED, 200)  # the answer the first one got
    assert queue.due_at(100.0) is None  # nothing to post
    _, joined = queue.submit(group("f1", "f2"), 301.0)  # the window is counted from delivery
    assert not joined


def test_ha_peers_and_retries_join_a_queued_or_in_flight_notification():
    queue = make_queue()
    first = group("f1")
    queue.submit(first, 0.0)
    assert queue.submit(group("f1"), 0.0) == (first, True)  # the HA peer, while queued
    queue.take_batch(0.0)
    assert queue.submit(group("f1"), 0.1) == (first, True)  # Alertmanager's retry, while in flight


def test_a_refused_notification_is_answered_from_memory_without_posting():
    queue = make_queue()
    first = group("f1")
    queue.submit(first, 0.0)
    post_once(queue, 0.0, WRONG_CHANNEL)
    repeat, joined = queue.submit(group("f1"), 5.0)
    assert joined and repeat.state == JobState.REFUSED
    assert queue.due_at(5.0) is None


@pytest.mark.parametrize(
    "notification",
    [
        Notification(alerts=(alert(fingerprint="f1"),)),  # no groupKey: a hand-written curl test
        Notification(alerts=(alert(fingerprint="f1"), alert("B")), group_key="g"),  # an alert without fingerprint
    ],
)
def test_only_complete_alertmanager_bodies_are_deduplicated(notification):
    assert dedup_key(notification, notification.alerts) is None


def test_a_repeat_interval_reminder_is_posted_but_its_copies_in_flight_join():
    queue = make_queue()
    queue.submit(group("f1"), 0.0)
    post_once(queue, 0.0, OK)
    reminder, joined = queue.submit(group("f1", reason="repeat_interval"), 100.0)  # inside the 300 s window
    assert not joined  # the reminder is meant to be seen again
    assert queue.submit(group("f1", reason="repeat_interval"), 101.0) == (reminder, True)  # its HA copy joins


def test_a_changed_group_is_not_a_duplicate():
    assert dedup_key(*_notification_and_alerts(group("f1"))) != dedup_key(*_notification_and_alerts(group("f1", "f2")))
    assert dedup_key(*_notification_and_alerts(group("f1"))) != dedup_key(
        *_notification_and_alerts(group("f1", status="resolved")))


def _notification_and_alerts(queued):
    return queued.notification, queued.alerts


# -- storms at Rocket.Chat's real limit, simulated -----------------------------------------------------------------


class FixedWindowServer:
    """Rocket.Chat's limiter as the contract describes it: a fixed window opened by the first request."""

    def __init__(self, count=10, window_seconds=60.0):
        self.count, self.window_seconds = count, window_seconds
        self.window_start, self.seen = None, 0

    def arrive(self, at):
        if self.window_start is None or at >= self.window_start + self.window_seconds:
            self.window_start, self.seen = at, 0
        self.seen += 1
        return self.seen <= self.count


def simulate(arrival_times, latency_seconds=0.05, limit=REAL_LIMIT):
    """Requests arriving at the given times, one group each; returns (answers, posts, rejections)."""
    queue = make_queue(limit)
    server = FixedWindowServer()
    jobs = [group(f"fp{index}") for index in range(len(arrival_times))]
    events = sorted(zip(arrival_times, range(len(jobs))))
    now, next_event, in_flight, completes_at, posts, rejections = 0.0, 0, None, None, 0, 0
    finished_at = {}
    while next_event < len(events) or not queue.idle or in_flight:
        due = queue.due_at(now) if in_flight is None else None
        candidates = [time for time in (
            events[next_event][0] if next_event < len(events) else None, completes_at, due) if time is not None]
        now = max(now, min(candidates))
        if next_event < len(events) and events[next_event][0] <= now:
            queue.submit(jobs[events[next_event][1]], now)
            next_event += 1
        elif in_flight is not None and completes_at <= now:
            accepted = server.arrive(now - latency_seconds / 2)
            rejections += not accepted
            result = OK if accepted else PostResult(Outcome.TRANSIENT, 429, "too many", wait_seconds=30)
            for finished in queue.finish(in_flight, result, now):
                finished_at[id(finished)] = now
            in_flight, completes_at = None, None
        elif due is not None and due <= now:
            in_flight = queue.take_batch(now)
            posts += 1
            completes_at = now + latency_seconds
    answers = [finished_at[id(jobs[index])] - arrival <= ANSWER_WITHIN_SECONDS for arrival, index in events]
    return answers, posts, rejections


def test_a_burst_of_100_groups_in_3_seconds_at_the_real_limit():
    answers, posts, rejections = simulate([index * 0.03 for index in range(100)])
    assert rejections == 0
    assert all(answers)  # every request answered 200 inside the 8 s deadline
    assert posts <= 10


def test_a_steady_stream_of_one_group_every_2_seconds_for_10_minutes_at_the_real_limit():
    answers, posts, rejections = simulate([index * 2.0 for index in range(300)])
    assert rejections == 0
    assert all(answers)
    assert posts <= 10 * (600 / 60 + 1)


def test_a_slow_rocketchat_in_a_burst_still_never_trips_the_limit():
    answers, posts, rejections = simulate([index * 0.01 for index in range(100)], latency_seconds=2.0)
    assert rejections == 0
    assert sum(answers) >= 90


def test_after_rocketchats_window_reopens_only_our_own_count_applies():
    budget = PostBudget(parse_rate_limit(REAL_LIMIT))
    budget.record_attempt(0.0)
    budget.observe_server(0.0, remaining=0, reset_in_seconds=2.0)  # another client spent Rocket.Chat's window
    assert budget.earliest_post_at(0.5, last_post_at=0.0) == 2.0  # not 2 s plus a spacing gap


def test_a_firing_copy_arriving_just_after_its_resolved_was_posted_is_not_shown():
    queue = make_queue()
    queue.submit(job(alert("A", status="resolved", fingerprint="f1")), 0.0)
    post_once(queue, 0.0, OK)
    late = job(alert("A", fingerprint="f1"))  # the same occurrence, arrived out of order
    queue.submit(late, 1.0)
    batch = queue.take_batch(1.0)
    assert batch.parts == []  # nothing left to show: the channel keeps RESOLVED
    queue.finish(batch, None, 1.0)
    assert late.state == JobState.DELIVERED


def test_a_long_outage_never_breaks_the_backoff():
    # 2 ** 1024 overflows a float: after ~2 hours of a Rocket.Chat answering 500, the hook's worker must go on.
    queue = make_queue()
    queue.submit(job(alert()), 0.0)
    queue.consecutive_failures = 5000
    post_once(queue, 0.0, SERVER_ERROR)
    assert queue.due_at(0.0) == 4.0


# -- waits Rocket.Chat asks for, and bounded memory ------------------------------------------------------------


@pytest.mark.parametrize("asked_seconds", [3600.0, 86_400.0, 1e17])
def test_a_429_asking_for_a_long_wait_holds_the_hook_no_longer_than_the_window_plus_a_margin(asked_seconds, caplog):
    queue = make_queue("10/60s")
    queue.submit(job(alert()), 0.0)
    post_once(queue, 0.0, PostResult(Outcome.TRANSIENT, 429, "too many", wait_seconds=asked_seconds))
    due = queue.due_at(0.0)
    assert 60.0 <= due <= 60.0 + WAIT_MARGIN_SECONDS
    assert "waiting 65 s at most" in caplog.text


def test_a_429_reset_header_far_ahead_is_capped_too():
    queue = make_queue("10/2s")
    queue.submit(job(alert()), 0.0)
    result = PostResult(Outcome.TRANSIENT, 429, "too many", rate_limit_remaining=0, rate_limit_reset_seconds=1e20)
    post_once(queue, 0.0, result)
    assert queue.due_at(0.0) <= 2.0 + WAIT_MARGIN_SECONDS
    post_once(queue, queue.due_at(0.0), OK)  # and the hook posts again once that time came
    assert queue.idle


def test_tracked_groups_are_capped_oldest_first_and_each_forgotten_one_is_counted():
    forgotten = []
    queue = HookQueue(HOOK, parse_rate_limit("0"), 300.0, jitter=lambda: 1.0, max_tracked_groups=3,
                      on_group_forgotten=lambda: forgotten.append(1))
    for number in range(5):
        queue.submit(job(alert(fingerprint=f"f{number}"), group_key=f"g{number}"), float(number))
        post_once(queue, float(number), OK)
    assert len(forgotten) == 2 and len(queue.latest_by_group) == 3
    # g0 was forgotten: its repeat is posted again; g4 is remembered: its repeat joins.
    assert queue.submit(job(alert(fingerprint="f4"), group_key="g4"), 10.0)[1] is True
    assert queue.submit(job(alert(fingerprint="f0"), group_key="g0"), 10.0)[1] is False


def test_a_finished_group_is_remembered_by_digests_not_by_its_notification():
    queue = make_queue()
    big = alert(fingerprint="f1")
    big.labels["description"] = "x" * 100_000
    queue.submit(job(big, group_key="g" * 10_000), 0.0)
    post_once(queue, 0.0, OK)
    [(group, remembered)] = queue.latest_by_group.items()
    assert len(group) == 16 and len(remembered.dedup_key) == 16
    assert not hasattr(remembered, "notification")


def test_at_the_cap_a_finished_group_is_forgotten_before_one_still_queued():
    queue = HookQueue(HOOK, parse_rate_limit("0"), 300.0, jitter=lambda: 1.0, max_tracked_groups=2)
    queued = job(alert(fingerprint="f0"), group_key="g0")
    queue.submit(queued, 0.0)  # the oldest, still queued
    queue.submit(job(alert(fingerprint="f1"), group_key="g1"), 1.0)
    queue.take_batch(1.0)
    queue.finish(queue.in_flight, OK, 1.0)  # both delivered; then g0's repeat arrives again, queued anew
    queue.submit(job(alert(fingerprint="f9"), group_key="g0"), 2.0)
    queue.submit(job(alert(fingerprint="f2"), group_key="g2"), 3.0)  # past the cap of 2
    # g1 (finished, oldest) went; g0's queued repeat is still there to be joined by an HA peer's copy.
    assert queue.submit(job(alert(fingerprint="f9"), group_key="g0"), 3.5)[1] is True


def test_an_internal_error_while_taking_a_batch_loses_no_job():
    queue = make_queue()
    first = job(alert(fingerprint="f1"), group_key="g1")
    queue.submit(first, 0.0)
    original = queue._fresh_parts
    queue._fresh_parts = lambda jobs, now: (_ for _ in ()).throw(RuntimeError("boom"))
    with pytest.raises(RuntimeError):
        queue.take_batch(0.0)
    queue._fresh_parts = original
    queue.requeue_in_flight(0.0)
    post_once(queue, queue.due_at(0.0), OK)
    assert first.state == JobState.DELIVERED
