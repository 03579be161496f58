"""rcwebhook/shared.py's RedisCoordination and rcwebhook/store/fallback.py's FallbackStore against a real redis-server
(tests/redis_server.py starts Debian's on a free port; without it these tests skip, saying how to install it).

Two coordinations on one Redis stand for two relay processes: each has its own client (its own connections) and its
own owner id, as two processes have. Where the processes' own clocks are the point, a second Python process with a
skewed time.time takes part.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time

import pytest

from rcwebhook.shared import (
    CLAIM_DONE, LIVE_CHANNEL, OURS, PROBE_INTERVAL_SECONDS, RESERVE_SCRIPT, Claim, LocalCoordination,
    RedisCoordination, Unavailable, redis_client,
)
from rcwebhook.store import SMS_PENDING, SmsAlert, SmsMessage, Store, StoreError, open_store
from rcwebhook.store.fallback import FORWARDED, FallbackStore
from tests.helpers import REPO, wait_until
from tests.redis_server import redis_factory_fixture, redis_fixture

redis = pytest.importorskip("redis")

redis_server = redis_fixture(scope="module")
redis_servers = redis_factory_fixture()

TIMEOUT_SECONDS = 0.5  # STATE_TIMEOUT_SECONDS' default: each call's bound
HOOK = "0123456789abcdef01234567"  # a hook_key: a digest, never a URL
TIME_TOLERANCE_SECONDS = 0.002  # Redis keeps attempts in whole milliseconds
# The probe asks every PROBE_INTERVAL_SECONDS; a ping to a hung Redis takes its timeout to fail.
NOTICE_WITHIN_SECONDS = PROBE_INTERVAL_SECONDS + TIMEOUT_SECONDS + 1.5

_prefixes = iter(range(1_000_000))


def new_prefix() -> str:
    """Each test its own keys, so the module's one server carries no state from test to test."""
    return f"t{next(_prefixes)}-{time.monotonic_ns()}:"


def coordination(server, prefix: str, **options) -> RedisCoordination:
    return RedisCoordination(redis_client(server.url, TIMEOUT_SECONDS), prefix, description="test redis", **options)


@pytest.fixture
def pair(redis_server):
    """Two coordinations (two processes) sharing one prefix on the module's server."""
    prefix = new_prefix()
    first, second = coordination(redis_server, prefix), coordination(redis_server, prefix)
    yield first, second
    for one in (first, second):
        one.stop()
        one.client.close()


@pytest.fixture
def raw(redis_server):
    client = redis.Redis.from_url(redis_server.url, socket_timeout=5)
    yield client
    client.close()


def claim_key(hook: str = HOOK, group: bytes = b"\x01group", dedup: bytes = b"\x02dedup") -> tuple[str, bytes, bytes]:
    return hook, group, dedup


def stored_claim(one: RedisCoordination, key: tuple[str, bytes, bytes]) -> str:
    """The Redis key a claim is kept under (as shared.py names it): one per hook and group, the notification's
    dedup key in its value."""
    hook, group, _ = key
    return f"{one.prefix}{{h:{hook}}}:claim:{group.hex()}"


# -- the pacing window --------------------------------------------------------------------------------------------

def assert_never_more_than(admissions: list[tuple[float, float]], count: int, window_seconds: float) -> float:
    """admissions: (before, after) of each admitted call on one system-wide monotonic clock, which brackets the
    moment Redis counted it. Any count+1 of them must span the window on Redis' clock; as each true moment lies in
    its bracket, the last `after` minus the first `before` of any count+1 consecutive ones (by `after`) must be at
    least the window (a slow call only makes this weaker, never false). Returns the slowest call's seconds."""
    ordered = sorted(admissions, key=lambda admission: admission[1])
    for start in range(len(ordered) - count):
        group = ordered[start:start + count + 1]
        span = group[-1][1] - min(before for before, _ in group)
        assert span >= window_seconds - TIME_TOLERANCE_SECONDS, (
            f"{count + 1} posts admitted within {span:.4f} s, under the {window_seconds} s window: {group}")
    return max((after - before for before, after in ordered), default=0.0)


def hammer(one: RedisCoordination, hook: str, count: int, window_seconds: float, until: float,
           admitted: list[tuple[float, float]], waits: list[float]) -> None:
    while time.monotonic() < until:
        before = time.monotonic()
        wait = one.reserve_post(hook, count, window_seconds)
        after = time.monotonic()
        if wait == 0:
            admitted.append((before, after))
        else:
            waits.append(wait)


def test_two_coordinations_hammering_one_window_never_admit_more_than_its_count(pair):
    count, window = 5, 0.4
    until = time.monotonic() + 1.7
    admitted: list[tuple[float, float]] = []
    waits: list[float] = []
    threads = [threading.Thread(target=hammer, args=(one, HOOK, count, window, until, admitted, waits))
               for one in (*pair, *pair)]  # two threads in each "process"
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    slowest = assert_never_more_than(admitted, count, window)
    # It is a budget, not a wall: as many as the window allows went through (4 windows and a part in 1.7 s).
    assert 4 * count <= len(admitted) <= 5 * count, len(admitted)
    assert waits and all(0 < wait <= window for wait in waits), (min(waits), max(waits))
    print(f"\n{len(admitted)} admitted, {len(waits)} refused, slowest call {slowest * 1000:.1f} ms")


def test_a_refused_attempt_is_told_how_long_until_the_oldest_leaves_the_window(pair):
    first, second = pair
    count, window = 3, 0.6
    started = time.monotonic()
    for _ in range(count):
        assert first.reserve_post(HOOK, count, window) == 0
    asked = time.monotonic()
    wait = second.reserve_post(HOOK, count, window)
    # The oldest was counted at or after `started`: it leaves the window at most `window` after it.
    assert 0 < wait <= window + TIME_TOLERANCE_SECONDS
    assert wait >= window - (asked - started) - TIME_TOLERANCE_SECONDS, (wait, asked - started)
    # And it is right: refused until then, admitted at once after.
    admitted_at = wait_until(lambda: second.reserve_post(HOOK, count, window) == 0 and time.monotonic(), 5,
                             "a slot to come free")
    assert admitted_at >= asked + wait - TIME_TOLERANCE_SECONDS - (asked - started), (admitted_at - asked, wait)
    assert admitted_at <= asked + wait + 0.25, (admitted_at - asked, wait)


def test_a_smaller_count_waits_for_the_attempt_whose_leaving_makes_room(pair, raw):
    """After a reload lowered the budget, the window may hold more attempts than the new count: the wait is until
    enough have left, not just the oldest. The window is seeded with attempts 4, 3, 2 and 1 s old on Redis' clock."""
    first, _ = pair
    key = f"{first.prefix}{{h:{HOOK}}}:window"
    seconds, microseconds = raw.time()
    now_ms = seconds * 1000 + microseconds // 1000
    raw.zadd(key, {f"seeded-{age}": now_ms - age * 1000 for age in (4, 3, 2, 1)})
    raw.pexpire(key, 5000)
    # Full at 4 per 5 s: room when the oldest (4 s old) leaves, in about 1 s.
    assert abs(first.reserve_post(HOOK, 4, 5.0) - 1.0) < 0.05
    # At 2 per 5 s: room only when the third oldest (2 s old) leaves, in about 3 s.
    assert abs(first.reserve_post(HOOK, 2, 5.0) - 3.0) < 0.05
    # At 1 per 5 s: when the newest leaves, in about 4 s.
    assert abs(first.reserve_post(HOOK, 1, 5.0) - 4.0) < 0.05
    assert raw.zcard(key) == 4  # no refused attempt was counted
    # At 8 per 5 s there is room now.
    assert first.reserve_post(HOOK, 8, 5.0) == 0 and raw.zcard(key) == 5
    # And attempts older than the window are forgotten on the way.
    assert first.reserve_post(HOOK, 3, 1.5) == 0 and raw.zcard(key) == 3  # the 1 s old, the last, this one


def test_the_window_key_carries_the_hooks_hash_tag_expires_and_holds_no_url(pair, raw):
    first, _ = pair
    assert first.reserve_post(HOOK, 10, 0.5) == 0
    key = f"{first.prefix}{{h:{HOOK}}}:window"
    assert raw.exists(key)
    assert 0 < raw.pttl(key) <= 500
    assert all(b"http" not in member for member in raw.zrange(key, 0, -1))
    wait_until(lambda: not raw.exists(key), 5, "the window key to expire with its last attempt")


def test_the_window_is_decided_on_redis_clock_not_the_callers(pair, monkeypatch):
    first, second = pair
    count, window = 2, 30.0
    assert first.reserve_post(HOOK, count, window) == 0
    assert second.reserve_post(HOOK, count, window) == 0
    # The caller's clocks jump an hour ahead (an NTP step, a skewed replica): the window is still full.
    real_time, real_monotonic = time.time, time.monotonic
    monkeypatch.setattr(time, "time", lambda: real_time() + 3600)
    monkeypatch.setattr(time, "monotonic", lambda: real_monotonic() + 3600)
    assert 29.0 < first.reserve_post(HOOK, count, window) <= 30.0
    monkeypatch.setattr(time, "time", lambda: real_time() - 3600)
    assert 29.0 < second.reserve_post(HOOK, count, window) <= 30.0
    # The script asks Redis for the time and is given none.
    assert "redis.call('TIME')" in RESERVE_SCRIPT


SKEWED_PROCESS = """
import json, sys, time
url, prefix, hook, count, window, seconds, skew = sys.argv[1:8]
real_time = time.time
time.time = lambda: real_time() + float(skew)  # this process's wall clock is off by `skew` seconds
from rcwebhook.shared import RedisCoordination, redis_client
coordination = RedisCoordination(redis_client(url, 0.5), prefix, description="skewed")
print("ready", flush=True)
sys.stdin.readline()  # go
until, admitted = time.monotonic() + float(seconds), []
while time.monotonic() < until:
    before = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process of this machine
    wait = coordination.reserve_post(hook, int(count), float(window))
    after = time.monotonic()
    if wait == 0:
        admitted.append((before, after))
    else:
        time.sleep(min(wait, 0.003))  # this client's own pacing between asks
print(json.dumps(admitted), flush=True)
"""


@pytest.mark.slow
def test_two_processes_with_wall_clocks_an_hour_apart_share_one_window(redis_server):
    prefix, count, window, seconds = new_prefix(), 4, 0.5, 2.6
    processes = [subprocess.Popen(
        [sys.executable, "-c", SKEWED_PROCESS, redis_server.url, prefix, HOOK, str(count), str(window), str(seconds),
         skew], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for skew in ("3600", "-3600")]
    try:
        for process in processes:
            assert process.stdout.readline().strip() == "ready"
        for process in processes:
            process.stdin.write("go\n")
            process.stdin.flush()
        outputs = [process.communicate(timeout=30)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    per_process = [json.loads(output.strip().splitlines()[-1]) for output in outputs]
    assert all(per_process), "each process got some of the budget"
    admitted = [tuple(admission) for admissions in per_process for admission in admissions]
    assert_never_more_than(admitted, count, window)
    # Two hours of skew between them, and still one budget: about count per window, not twice that.
    assert len(admitted) <= count * (int(seconds / window) + 2), len(admitted)


# -- the hook's lease ---------------------------------------------------------------------------------------------

def test_the_lease_is_one_holders_renewed_by_it_and_released_only_by_it(pair):
    first, second = pair
    assert first.take_lease(HOOK, 5.0) == 0
    left = second.take_lease(HOOK, 5.0)
    assert 4.5 < left <= 5.0
    assert first.take_lease(HOOK, 5.0) == 0  # the holder renews it
    second.release_lease(HOOK)  # not the holder: nothing happens
    assert second.take_lease(HOOK, 5.0) > 4.5
    first.release_lease(HOOK)
    assert second.take_lease(HOOK, 5.0) == 0
    assert first.take_lease(HOOK, 5.0) > 0
    assert first.take_lease("another-hook", 5.0) == 0  # one lease per hook


def test_a_dead_holders_lease_expires_after_its_seconds(pair):
    first, second = pair
    before = time.monotonic()
    assert first.take_lease(HOOK, 0.4) == 0
    after = time.monotonic()
    assert 0 < second.take_lease(HOOK, 0.4) <= 0.4
    taken_at = wait_until(lambda: second.take_lease(HOOK, 5.0) == 0 and time.monotonic(), 5,
                          "the dead holder's lease to expire")
    assert taken_at >= before + 0.4 - TIME_TOLERANCE_SECONDS
    assert taken_at <= after + 0.4 + 0.25
    assert first.take_lease(HOOK, 0.4) > 4.0  # now the other's


def test_two_coordinations_racing_for_a_lease_get_it_one_at_a_time(pair):
    """Many threads of two processes take the lease, hold it a moment and release it: never two holders at once."""
    holders: list[str] = []
    overlaps: list[tuple] = []
    lock = threading.Lock()
    until = time.monotonic() + 1.0
    taken = [0]

    def work(one: RedisCoordination) -> None:
        while time.monotonic() < until:
            if one.take_lease(HOOK, 5.0) != 0:
                continue
            with lock:
                holders.append(one.owner)
                if len(set(holders)) > 1:
                    overlaps.append(tuple(holders))
                taken[0] += 1
            with lock:
                holders.remove(one.owner)
            one.release_lease(HOOK)

    # One thread per coordination: the lease is per process (its owner), so two threads of one process share it.
    threads = [threading.Thread(target=work, args=(one,)) for one in pair]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not overlaps, overlaps[:3]
    assert taken[0] > 10


# -- claims on notifications --------------------------------------------------------------------------------------

def test_the_first_claim_is_ours_and_a_copy_elsewhere_sees_it_in_flight(pair):
    first, second = pair
    key = claim_key()
    assert first.claim([key], 5.0) == [OURS]
    assert first.claim([key], 5.0) == [OURS]  # ours again: we posted nothing yet
    assert second.claim([key], 5.0) == [Claim(False)]
    assert second.look([key]) == [Claim(False)]
    assert first.look([key]) == [OURS]


def test_a_finished_claim_answers_every_copy_with_its_outcome(pair):
    first, second = pair
    delivered, refused, unanswered = claim_key(group=b"g1"), claim_key(group=b"g2"), claim_key(group=b"g3")
    assert first.claim([delivered, refused, unanswered], 5.0) == [OURS, OURS, OURS]
    reason = "Rocket.Chat said: a | in the reason " + "x" * 400
    first.finish_claims([(delivered, "delivered", 200, ""), (refused, "refused", 400, reason),
                         (unanswered, "failed", None, "timed out")], 60.0)
    assert second.look([delivered, refused, unanswered]) == [
        Claim(False, True, "delivered", 200, ""),
        Claim(False, True, "refused", 400, reason[:300]),
        Claim(False, True, "failed", None, "timed out"),
    ]
    # Claiming a finished one gets its outcome too (no second post), and so does its first holder.
    assert second.claim([refused], 5.0) == [Claim(False, True, "refused", 400, reason[:300])]
    assert first.look([delivered])[0].finished
    # A reminder repeats on purpose: it is never answered by the finished copy, it is posted again.
    assert second.claim([delivered], 5.0, reminders=[True]) == [OURS]
    assert first.look([delivered]) == [Claim(False)]


def test_a_finished_outcome_is_kept_long_enough_for_a_waiting_copy_to_see_it(pair, raw):
    first, _ = pair
    key = claim_key()
    first.claim([key], 5.0)
    first.finish_claims([(key, "delivered", 200, "")], 0.1)  # a very short de-duplication window
    assert raw.pttl(stored_claim(first, key)) > 1500


def test_claims_are_per_hook_and_group_and_keep_their_order(pair):
    first, second = pair
    keys = [claim_key(), claim_key(hook="another-hook"), claim_key(group=b"other")]
    assert first.claim(keys[:1], 5.0) == [OURS]
    assert second.claim(keys, 5.0) == [Claim(False), OURS, OURS]
    assert first.look(keys) == [OURS, Claim(False), Claim(False)]
    assert first.claim([], 5.0) == [] and first.look([]) == []


def test_the_groups_newer_notification_takes_the_claim_from_an_older_one(pair):
    """Only a group's latest notification counts, as in one process: a re-fire after a resolve (another dedup key)
    is claimed afresh, and the older notification's claim is nobody's any more."""
    first, second = pair
    older, newer = claim_key(dedup=b"firing"), claim_key(dedup=b"firing again")
    assert first.claim([older], 5.0) == [OURS]
    assert second.claim([newer], 5.0) == [OURS]
    assert first.look([older, newer]) == [None, Claim(False)]
    assert second.look([older, newer]) == [None, OURS]
    first.renew_claims([older], 30.0)  # renewing the older one does not take the newer one's claim
    assert second.look([newer]) == [OURS]
    # And a finished outcome answers its own notification only.
    second.finish_claims([(newer, "delivered", 200, "")], 60.0)
    assert first.look([older, newer]) == [None, Claim(False, True, "delivered", 200, "")]
    assert first.claim([older], 5.0) == [OURS]


def test_a_claim_whose_holder_stops_renewing_it_is_gone_after_its_seconds(pair):
    first, second = pair
    key = claim_key()
    before = time.monotonic()
    assert first.claim([key], 0.4) == [OURS]
    gone_at = wait_until(lambda: second.look([key]) == [None] and time.monotonic(), 5, "the claim to expire")
    assert gone_at >= before + 0.4 - TIME_TOLERANCE_SECONDS
    assert second.claim([key], 5.0) == [OURS]  # taken over
    assert first.claim([key], 5.0) == [Claim(False)]


def test_only_the_holder_renews_a_claim_and_a_finished_one_is_not_renewed(pair, raw):
    first, second = pair
    held, done = claim_key(group=b"held"), claim_key(group=b"done")
    assert first.claim([held, done], 1.0) == [OURS, OURS]
    first.finish_claims([(done, "delivered", 200, "")], 1.0)
    second.renew_claims([held], 30.0)
    assert raw.pttl(stored_claim(first, held)) <= 1000
    first.renew_claims([held, done], 30.0)
    assert raw.pttl(stored_claim(first, held)) > 25_000
    assert raw.pttl(stored_claim(first, done)) <= 2000  # finished: kept for its window (at least 2 s), no longer
    first.renew_claims([], 30.0)  # nothing to do, no call


def test_the_finished_outcome_is_kept_for_the_deduplication_window(pair, raw):
    first, _ = pair
    key = claim_key()
    first.claim([key], 5.0)
    first.finish_claims([(key, "delivered", 200, "")], 120.0)
    assert raw.get(stored_claim(first, key)) == f"{CLAIM_DONE}|{key[2].hex()}|delivered|200|".encode()
    assert 119_000 < raw.pttl(stored_claim(first, key)) <= 120_000


def test_the_keys_name_hooks_by_their_digest_under_the_prefix_and_one_hash_tag(pair, raw):
    first, _ = pair
    first.reserve_post(HOOK, 10, 60.0)
    first.take_lease(HOOK, 5.0)
    first.claim([claim_key()], 5.0)
    keys = sorted(key.decode() for key in raw.scan_iter(match=f"{first.prefix}*"))
    assert len(keys) == 3, keys
    assert all(key.startswith(f"{first.prefix}{{h:{HOOK}}}:") for key in keys), keys


# -- Redis not answering --------------------------------------------------------------------------------------------

def test_every_call_to_a_stopped_redis_raises_unavailable_and_marks_it_down_once(redis_servers, caplog):
    server = redis_servers()
    changes: list[bool] = []
    one = coordination(server, new_prefix(), on_change=changes.append)
    try:
        assert one.reserve_post(HOOK, 10, 60.0) == 0 and one.up
        server.stop()
        caplog.set_level(logging.INFO, logger="rcwebhook.shared")
        for call in (lambda: one.reserve_post(HOOK, 10, 60.0), lambda: one.take_lease(HOOK, 5.0),
                     lambda: one.release_lease(HOOK), lambda: one.claim([claim_key()], 5.0),
                     lambda: one.look([claim_key()]), lambda: one.renew_claims([claim_key()], 5.0),
                     lambda: one.finish_claims([(claim_key(), "delivered", 200, "")], 5.0)):
            started = time.monotonic()
            with pytest.raises(Unavailable):
                call()
            assert time.monotonic() - started < TIMEOUT_SECONDS + 0.5
        one.publish_live(["best effort"])  # the live feed never raises
        assert not one.up and changes == [False]
        errors = [record for record in caplog.records if record.levelno == logging.ERROR]
        assert len(errors) == 1 and "does not answer" in errors[0].getMessage(), caplog.text
        assert server.url not in caplog.text
    finally:
        one.client.close()


def test_a_call_to_a_frozen_redis_costs_at_most_its_timeout(redis_servers):
    server = redis_servers()
    one = coordination(server, new_prefix())
    try:
        assert one.take_lease(HOOK, 5.0) == 0  # the connection is open before Redis hangs
        server.freeze()
        started = time.monotonic()
        with pytest.raises(Unavailable):
            one.reserve_post(HOOK, 10, 60.0)
        elapsed = time.monotonic() - started
        assert TIMEOUT_SECONDS * 0.9 <= elapsed < TIMEOUT_SECONDS + 0.3, elapsed
        assert not one.up
    finally:
        server.thaw()
        one.client.close()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["stopped", "frozen"])
def test_the_probe_notices_redis_go_and_come_back_without_traffic(redis_servers, caplog, how):
    server = redis_servers()
    changes: list[tuple[bool, float]] = []
    one = coordination(server, new_prefix(), on_change=lambda up: changes.append((up, time.monotonic())))
    caplog.set_level(logging.INFO, logger="rcwebhook.shared")
    one.start()
    try:
        assert one.up
        went = time.monotonic()
        server.stop() if how == "stopped" else server.freeze()
        wait_until(lambda: not one.up, NOTICE_WITHIN_SECONDS + 1, "the probe to notice Redis gone")
        assert changes[0][1] - went <= NOTICE_WITHIN_SECONDS, changes
        came = time.monotonic()
        server.start() if how == "stopped" else server.thaw()
        wait_until(lambda: one.up, NOTICE_WITHIN_SECONDS + 1, "the probe to notice Redis back")
        assert changes[-1][1] - came <= NOTICE_WITHIN_SECONDS, changes
        assert [up for up, _ in changes] == [False, True]
        # Used again without a restart (after a restart, a new empty Redis: the scripts are loaded again).
        assert one.reserve_post(HOOK, 10, 60.0) == 0 and one.take_lease(HOOK, 5.0) == 0
        assert one.claim([claim_key()], 5.0) == [OURS]
        levels = [(record.levelno, record.getMessage()) for record in caplog.records
                  if record.name == "rcwebhook.shared"]
        assert [level for level, _ in levels] == [logging.ERROR, logging.INFO], levels
        assert "does not answer" in levels[0][1] and "answers again" in levels[1][1]
        print(f"\n{how}: noticed gone after {changes[0][1] - went:.2f} s, back after {changes[-1][1] - came:.2f} s")
    finally:
        one.stop()
        if server.frozen:
            server.thaw()
        one.client.close()


def test_report_down_marks_it_down_once_and_the_next_answer_marks_it_up(redis_servers, caplog):
    server = redis_servers()
    changes: list[bool] = []
    one = coordination(server, new_prefix(), on_change=changes.append)
    caplog.set_level(logging.INFO, logger="rcwebhook.shared")
    try:
        one.report_down("the store's call timed out")
        one.report_down("and again")
        assert not one.up and changes == [False]
        assert one.take_lease(HOOK, 5.0) == 0  # Redis answers: up again
        assert one.up and changes == [False, True]
        assert [record.levelno for record in caplog.records] == [logging.ERROR, logging.INFO]
    finally:
        one.client.close()


# -- the live feed across processes -------------------------------------------------------------------------------

def subscribers(raw, prefix: str) -> int:
    [(_, count)] = raw.pubsub_numsub(f"{prefix}{LIVE_CHANNEL}")
    return count


def test_one_processes_live_messages_reach_the_others_and_not_itself(pair, raw):
    first, second = pair
    got: dict[str, list[list[str]]] = {"first": [], "second": []}
    arrived = threading.Condition()

    def collector(name: str):
        def on_live(messages: list[str]) -> None:
            with arrived:
                got[name].append(messages)
                arrived.notify_all()
        return on_live

    first.start(on_live=collector("first"))
    second.start(on_live=collector("second"))
    wait_until(lambda: subscribers(raw, first.prefix) == 2, 5, "both subscribers to listen")
    messages = ['{"type": "post", "text": "ünïcode\\nand a newline"}', "two\nlines", '{"n": 2}']
    first.publish_live(messages)
    second.publish_live(["from the second"])
    first.publish_live([])  # nothing: nothing sent
    with arrived:
        assert arrived.wait_for(lambda: got["second"] and got["first"], 5), got
    assert got["second"] == [messages]
    assert got["first"] == [["from the second"]]
    # Another prefix (another relay sharing the Redis) hears nothing of these.
    assert subscribers(raw, new_prefix()) == 0


@pytest.mark.slow
def test_the_live_subscriber_listens_again_after_a_redis_restart(redis_servers):
    server = redis_servers()
    prefix = new_prefix()
    sender, listener = coordination(server, prefix), coordination(server, prefix)
    got: list[list[str]] = []
    listener.start(on_live=got.append)
    try:
        raw = redis.Redis.from_url(server.url, socket_timeout=5)
        wait_until(lambda: subscribers(raw, prefix) == 1, 5, "the subscriber to listen")
        raw.close()
        server.stop()
        server.start()
        raw = redis.Redis.from_url(server.url, socket_timeout=5)
        wait_until(lambda: subscribers(raw, prefix) == 1, NOTICE_WITHIN_SECONDS + 2, "the subscriber to listen again")
        raw.close()
        sender.publish_live(["after the restart"])
        wait_until(lambda: got == [["after the restart"]], 5, "the message after the restart")
    finally:
        for one in (sender, listener):
            one.stop()
            one.client.close()


def test_stop_ends_the_probe_and_the_subscriber(redis_server):
    one = coordination(redis_server, new_prefix(), probe_interval_seconds=0.1)
    one.start()
    threads = list(one._threads)
    assert [thread.name for thread in threads] == ["redis-probe", "redis-live"]
    one.start()  # again in the same process: nothing more started
    assert one._threads == threads
    one.stop()
    for thread in threads:
        thread.join(3)
    assert not any(thread.is_alive() for thread in threads)
    one.client.close()


def test_a_forked_process_is_an_owner_of_its_own(pair):
    """gunicorn --preload builds the app (and its coordination) in the master: each forked worker must hold its
    leases and claims as itself, not as its siblings."""
    first, _ = pair
    parent = first.owner
    assert first.take_lease(HOOK, 30.0) == 0
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:  # the worker
        try:
            os.write(writing, json.dumps([first.owner, first.take_lease(HOOK, 30.0) > 0]).encode())
        finally:
            os._exit(0)
    os.close(writing)
    with os.fdopen(reading) as answer:
        owner, refused = json.loads(answer.read())
    os.waitpid(child, 0)
    assert owner != parent and refused, (owner, parent)
    assert first.owner == parent


def test_local_coordination_answers_yours_now_to_everything():
    local = LocalCoordination()
    assert not local.shared and local.up
    assert local.reserve_post(HOOK, 1, 1.0) == 0 and local.reserve_post(HOOK, 1, 1.0) == 0
    assert local.take_lease(HOOK, 1.0) == 0
    assert local.claim([claim_key(), claim_key(group=b"x")], 1.0) == [OURS, OURS]
    assert local.look([claim_key()]) == [OURS]


def test_the_client_has_bounded_timeouts_and_no_retrying(redis_server):
    client = redis_client(redis_server.url, 0.25)
    try:
        kwargs = client.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == 0.25 and kwargs["socket_connect_timeout"] == 0.25
        assert client.get_retry()._retries == 0
    finally:
        client.close()


# -- FallbackStore -----------------------------------------------------------------------------------------------

class Spy:
    """A store that counts the calls that reach it."""

    def __init__(self, store):
        self.store = store
        self.description = store.description
        self.calls: list[str] = []

    def __getattr__(self, name):
        target = getattr(self.store, name)

        def call(*args, **kwargs):
            self.calls.append(name)
            return target(*args, **kwargs)
        return call


def test_every_store_method_is_forwarded():
    methods = {name for name in vars(Store) if not name.startswith("_") and callable(getattr(Store, name))}
    assert methods - {"close"} == set(FORWARDED)


def test_fallback_store_uses_redis_then_its_memory_while_redis_is_gone_then_redis_again(redis_servers):
    server = redis_servers()
    prefix = new_prefix()
    spy = Spy(open_store(server.url, prefix=prefix, timeout_seconds=TIMEOUT_SECONDS))
    downs: list[str] = []
    store = FallbackStore(spy, on_down=downs.append)
    other = open_store(server.url, prefix=prefix, timeout_seconds=TIMEOUT_SECONDS)  # another process's view
    try:
        assert store.description == spy.description and server.password is None
        store.set_opt_out("+15550000001", 10.0)
        assert other.opt_outs() == {"+15550000001": 10.0} and store.up

        server.stop()
        store.set_opt_out("+15550000002", 20.0)  # no error: kept in this process's memory
        assert not store.up and len(downs) == 1 and downs[0]
        reached = len(spy.calls)
        started = time.monotonic()
        assert store.opt_outs() == {"+15550000002": 20.0}  # this process's memory only
        assert store.counts()["sms"] == 0
        assert time.monotonic() - started < 0.1
        assert len(spy.calls) == reached, "a call reached Redis while it was known to be down"
        assert len(downs) == 1

        store.mark_resolved(["alert-seen-resolved-alone"], 21.0)

        server.start()  # a new, empty Redis on the same port
        store.set_up(True)  # the probe's word
        assert store.up
        # Redis again. The opt-outs learnt alone are handed to it (so no other process texts that recipient)...
        assert other.opt_outs() == {"+15550000002": 20.0} == store.opt_outs()
        # ...the rest of what was remembered alone is not merged back.
        assert store.resolved_among(["alert-seen-resolved-alone"]) == set()
        store.set_opt_out("+15550000003", 30.0)
        assert other.opt_outs() == {"+15550000002": 20.0, "+15550000003": 30.0}
        assert len(spy.calls) > reached and len(downs) == 1
    finally:
        other.close()
        store.close()


def test_fallback_store_falls_back_within_the_timeout_on_a_frozen_redis_and_says_so_once(redis_servers):
    server = redis_servers()
    downs: list[str] = []
    store = FallbackStore(open_store(server.url, prefix=new_prefix(), timeout_seconds=TIMEOUT_SECONDS),
                          on_down=downs.append)
    try:
        store.set_opt_out("+15550000001", 10.0)
        server.freeze()
        timings = []
        for index in range(3):
            started = time.monotonic()
            store.set_opt_out(f"+1555000001{index}", 11.0 + index)
            timings.append(time.monotonic() - started)
        assert timings[0] < TIMEOUT_SECONDS + 0.3, timings
        assert max(timings[1:]) < 0.05, timings
        assert len(downs) == 1 and not store.up
        store.set_up(False)  # the probe agreeing changes nothing
        assert len(store.opt_outs()) == 3
    finally:
        server.thaw()
        store.close()


def sms(sms_id: str, at: float) -> SmsMessage:
    alert = SmsAlert(id=f"alert-{sms_id}", fingerprint=f"fp-{sms_id}", alertname="DiskFull",
                     labels={"alertname": "DiskFull"}, annotations={"summary": "full"}, severity="critical")
    return SmsMessage(id=sms_id, destination="oncall", recipient="+15551230001", kind="alert", alerts=(alert,),
                      status=SMS_PENDING, created_at=at, due_at=at + 600, next_attempt_at=at + 600, updated_at=at)


def test_fallback_store_hands_the_sms_still_open_to_redis_on_its_return_and_decides_none_twice(redis_servers):
    server = redis_servers()
    prefix = new_prefix()
    downs: list[str] = []
    store = FallbackStore(open_store(server.url, prefix=prefix, timeout_seconds=TIMEOUT_SECONDS),
                          on_down=downs.append)
    other = open_store(server.url, prefix=prefix, timeout_seconds=TIMEOUT_SECONDS)
    try:
        server.stop()
        assert [message.id for message in store.schedule_sms([sms("delayed-tier", 100.0)], 100.0)] == ["delayed-tier"]
        assert not store.up
        server.start()
        store.set_up(True)
        assert [message.id for message in other.open_sms()] == ["delayed-tier"]
        assert [message.id for message in store.open_sms()] == ["delayed-tier"]  # from Redis now
        store.set_up(False)
        assert store.open_sms() == []  # this process's memory was emptied when it handed them over
    finally:
        other.close()
        store.close()


def test_fallback_store_stays_on_its_memory_when_the_hand_over_fails(redis_servers):
    server = redis_servers()
    downs: list[str] = []
    store = FallbackStore(open_store(server.url, prefix=new_prefix(), timeout_seconds=TIMEOUT_SECONDS),
                          on_down=downs.append)
    try:
        server.stop()
        store.set_opt_out("+15550000001", 1.0)
        store.set_up(True)  # a probe's word that turned out wrong: the hand-over cannot reach Redis
        assert not store.up and len(downs) == 2
        assert store.opt_outs() == {"+15550000001": 1.0}
    finally:
        store.close()


def test_fallback_store_tried_again_while_redis_is_still_gone_falls_back_again(redis_servers):
    server = redis_servers()
    downs: list[str] = []
    store = FallbackStore(open_store(server.url, prefix=new_prefix(), timeout_seconds=TIMEOUT_SECONDS),
                          on_down=downs.append)
    try:
        server.stop()
        assert store.opt_outs() == {}
        store.set_up(True)  # a probe's word that turned out wrong
        store.set_opt_out("+15550000001", 1.0)
        assert not store.up and len(downs) == 2
        assert store.opt_outs() == {"+15550000001": 1.0}
    finally:
        store.close()


def test_fallback_store_lets_a_bug_through_rather_than_hide_it():
    class Broken:
        description = "broken"

        def counts(self):
            raise KeyError("a bug, not Redis being gone")

        def close(self):
            pass

    store = FallbackStore(Broken())
    with pytest.raises(KeyError):
        store.counts()
    assert store.up


def test_store_error_is_what_the_redis_store_raises_when_redis_is_gone(redis_servers):
    server = redis_servers()
    store = open_store(server.url, prefix=new_prefix(), timeout_seconds=TIMEOUT_SECONDS)
    try:
        server.stop()
        with pytest.raises(StoreError) as raised:
            store.counts()
        assert "127.0.0.1" in str(raised.value) or raised.value.args
    finally:
        store.close()


def test_an_opt_out_handed_over_once_is_not_handed_over_again_at_the_next_return(redis_servers):
    server = redis_servers()
    prefix = new_prefix()
    store = FallbackStore(open_store(server.url, prefix=prefix, timeout_seconds=TIMEOUT_SECONDS))
    other = open_store(server.url, prefix=prefix, timeout_seconds=TIMEOUT_SECONDS)
    try:
        server.stop()
        store.set_opt_out("+15550000001", 10.0)  # STOP, learnt alone
        server.start()
        store.set_up(True)
        assert other.opt_outs() == {"+15550000001": 10.0}  # handed over
        other.set_opt_out("+15550000001", None)  # later, START through another process
        other.set_opt_out("+15550000002", 20.0)
        store.set_up(False)  # a blip: the probe says Redis is gone, then back
        store.set_up(True)
        assert other.opt_outs() == {"+15550000002": 20.0}, "an opt-out lifted since came back"
    finally:
        other.close()
        store.close()
