"""What processes sharing one Redis (replicas, gunicorn workers) coordinate through, besides the Store's records:

- the pacing window per hook: every process's attempts count against one budget, decided in a Lua script on
  Redis' own clock (TIME), so the processes' clocks never matter;
- the right to post to a hook: one process at a time, a lease taken for each post and expiring after
  STATE_LEASE_SECONDS if its holder dies mid-post;
- claims on notifications: the first process to take a group's notification posts it; a copy reaching another
  process (an HA peer's, a retry through another replica) waits for that outcome and answers the same;
- the live feed: each process's events reach every process's /ws clients.

Hooks are named by hook_key (a digest of the URL), groups by digests: no key or value holds a URL or a token. Keys of
one operation share a hash tag, so the scripts also run on Redis Cluster.

Without Redis (memory://, sqlite:///) LocalCoordination answers "yours, now" to everything: one process, as before.
When Redis does not answer, RedisCoordination says so (up is False), the dispatcher paces each process at the budget
divided by EXPECTED_PROCESSES on its own memory, and a probe notices Redis' return within PROBE_INTERVAL_SECONDS.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from dataclasses import dataclass
from typing import Callable, Sequence

logger = logging.getLogger("rcwebhook.shared")

PROBE_INTERVAL_SECONDS = 2.0
LIVE_CHANNEL = "live"
CLAIM_DONE = "done"


class Unavailable(Exception):
    """Redis did not answer (in time): the caller acts on its own memory."""


@dataclass(frozen=True)
class Claim:
    """What a claim on a notification found: ours (post it), or another process's, in flight or finished."""

    ours: bool
    finished: bool = False
    state: str = ""
    status: int | None = None
    reason: str = ""


OURS = Claim(True)


class LocalCoordination:
    """One process alone: every budget, lease and claim is its own."""

    shared = False
    up = True

    def reserve_post(self, hook_key: str, count: int, window_seconds: float) -> float:
        return 0.0

    def take_lease(self, hook_key: str, seconds: float) -> float:
        return 0.0

    def release_lease(self, hook_key: str) -> None:
        return None

    def posted(self, hook_key: str, window_seconds: float) -> None:
        return None

    def seed_window(self, hook_key: str, window_seconds: float, ages_seconds: Sequence[float]) -> None:
        return None

    def claim(self, keys: Sequence[tuple[str, bytes, bytes]], seconds: float, *,
              reminders: Sequence[bool] = ()) -> list[Claim]:
        return [OURS for _ in keys]

    def look(self, keys: Sequence[tuple[str, bytes, bytes]]) -> list[Claim | None]:
        return [OURS for _ in keys]

    def renew_claims(self, keys: Sequence[tuple[str, bytes, bytes]], seconds: float) -> None:
        return None

    def finish_claims(self, finished: Sequence[tuple[tuple[str, bytes, bytes], str, int | None, str]],
                      seconds: float) -> None:
        return None

    def publish_live(self, messages: Sequence[str]) -> None:
        return None

    def report_down(self, detail: str) -> None:
        return None

    def start(self, on_live: Callable[[list[str]], None] | None = None) -> None:
        return None

    def stop(self) -> None:
        return None


# KEYS[1] the hook's window (a sorted set of attempt times, ms). ARGV: count, window ms, a unique member.
# Returns 0 when the attempt was recorded now, else the milliseconds until the oldest attempt leaves the window.
RESERVE_SCRIPT = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - window)
local used = redis.call('ZCARD', KEYS[1])
if used < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now_ms, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], used - tonumber(ARGV[1]), used - tonumber(ARGV[1]), 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now_ms)
"""

# KEYS[1] the hook's window; ARGV: window ms, the member. The attempt counts from now, when Rocket.Chat has had it
# (its limiter counts on arrival, no later than its answer): reserved before the send, moved here after it, so a post
# that reached Rocket.Chat late cannot let the next window's first post in too early.
POSTED_SCRIPT = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if redis.call('ZADD', KEYS[1], 'XX', 'CH', now_ms, ARGV[2]) == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 0
"""

# KEYS[1] the hook's window; ARGV: window ms, then pairs of (age ms, member): the posts a process made alone while
# Redis was gone, so the budget they spent counts once Redis answers again.
SEED_SCRIPT = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
for index = 2, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], 'NX', now_ms - tonumber(ARGV[index]), ARGV[index + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 0
"""

# KEYS[1] the hook's lease. ARGV: owner, ms. Returns 0 when the caller holds it now, else its remaining ms.
LEASE_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if not holder or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 0
end
return math.max(1, redis.call('PTTL', KEYS[1]))
"""

RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS[1] a group's claim on one hook: "own|<owner>|<dedup>" while a process has its notification queued or in flight,
# "done|<dedup>|<state>|<status>|<reason>" once posted (kept for the de-duplication window). Only the group's latest
# notification counts, as in one process: a claim for another dedup key (a re-fire after a resolve) is replaced.
# ARGV: owner, ms, dedup, "1" for a reminder (never answered by a finished copy: it repeats on purpose).
# Returns the value held after the call.
CLAIM_SCRIPT = """
local held = redis.call('GET', KEYS[1])
local mine = 'own|' .. ARGV[1] .. '|' .. ARGV[3]
if held then
  local kind, who, key = string.match(held, '^(%a+)|([^|]*)|([^|]*)')
  if kind == 'own' and key == ARGV[3] then return held end
  if kind == 'done' and who == ARGV[3] and ARGV[4] ~= '1' then return held end
end
redis.call('SET', KEYS[1], mine, 'PX', ARGV[2])
return mine
"""

# KEYS[1] a claim; ARGV: owner, ms, dedup. Renewed only while the caller holds it for that notification.
RENEW_SCRIPT = """
if redis.call('GET', KEYS[1]) == 'own|' .. ARGV[1] .. '|' .. ARGV[3] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class RedisCoordination:
    """The coordination of processes sharing one Redis; every call raises Unavailable when Redis does not answer."""

    shared = True

    def __init__(self, client, prefix: str, *, description: str, probe_interval_seconds: float = PROBE_INTERVAL_SECONDS,
                 on_change: Callable[[bool], None] = lambda up: None):
        import redis

        self._redis = redis
        self.client = client
        self.prefix = prefix
        self.description = description
        self._owner, self._owner_pid = "", 0
        self.up = True
        self.on_change = on_change
        self.probe_interval_seconds = probe_interval_seconds
        self._scripts = {name: client.register_script(source) for name, source in (
            ("reserve", RESERVE_SCRIPT), ("lease", LEASE_SCRIPT), ("release", RELEASE_SCRIPT),
            ("claim", CLAIM_SCRIPT), ("renew", RENEW_SCRIPT), ("posted", POSTED_SCRIPT), ("seed", SEED_SCRIPT))}
        self._reserved: dict[str, str] = {}  # hook key → the member of the attempt reserved last (moved when posted)
        self._counter = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._on_live: Callable[[list[str]], None] = lambda messages: None
        self._started_in_pid = 0

    @property
    def owner(self) -> str:
        """This process's name in leases, claims and the live feed: new in each process (gunicorn --preload builds
        the app in the master; every forked worker must be an owner of its own)."""
        if self._owner_pid != os.getpid():
            self._owner, self._owner_pid, self._counter = f"{os.getpid()}-{secrets.token_hex(6)}", os.getpid(), 0
        return self._owner

    # -- keys: one hash tag per hook, so a hook's keys live in one Cluster slot ----------------------------------

    def _hook_key(self, hook_key: str, what: str) -> str:
        return f"{self.prefix}{{h:{hook_key}}}:{what}"

    def _claim_key(self, hook_key: str, group_id: bytes, dedup_key: bytes = b"") -> str:
        return self._hook_key(hook_key, f"claim:{group_id.hex()}")

    # -- calls -----------------------------------------------------------------------------------------------------

    def _call(self, call: Callable[[], object]):
        try:
            result = call()
        except (self._redis.RedisError, OSError) as error:
            self._set_up(False, type(error).__name__)
            raise Unavailable(type(error).__name__) from None
        self._set_up(True, "")
        return result

    def _set_up(self, up: bool, detail: str) -> None:
        with self._lock:
            changed = up != self.up
            self.up = up
        if not changed:
            return
        if up:
            logger.info("Redis (%s) answers again: pacing, leases and claims are shared again", self.description)
        else:
            logger.error("Redis (%s) does not answer (%s): each process goes on with its own memory, pacing at the "
                         "budget divided by EXPECTED_PROCESSES", self.description, detail)
        self.on_change(up)

    def reserve_post(self, hook_key: str, count: int, window_seconds: float) -> float:
        """0.0 when one attempt was counted now in the shared window; else the seconds until one may be."""
        owner = self.owner
        with self._lock:
            self._counter += 1
            member = f"{owner}:{self._counter}"
        waited_ms = self._call(lambda: self._scripts["reserve"](
            keys=[self._hook_key(hook_key, "window")], args=[count, int(window_seconds * 1000), member]))
        if int(waited_ms) == 0:
            self._reserved[hook_key] = member
        return int(waited_ms) / 1000.0

    def posted(self, hook_key: str, window_seconds: float) -> None:
        """The reserved attempt reached Rocket.Chat (its answer is back): it counts from now."""
        member = self._reserved.pop(hook_key, None)
        if member is not None:
            self._call(lambda: self._scripts["posted"](
                keys=[self._hook_key(hook_key, "window")], args=[int(window_seconds * 1000), member]))

    def seed_window(self, hook_key: str, window_seconds: float, ages_seconds: Sequence[float]) -> None:
        """Count in the shared window the posts this process made alone, `ages_seconds` ago."""
        if not ages_seconds:
            return
        owner = self.owner
        args: list = [int(window_seconds * 1000)]
        for index, age in enumerate(ages_seconds):
            args += [max(0, int(age * 1000)), f"{owner}:alone:{index}:{age:.3f}"]
        self._call(lambda: self._scripts["seed"](keys=[self._hook_key(hook_key, "window")], args=args))

    def take_lease(self, hook_key: str, seconds: float) -> float:
        """0.0 when this process holds the hook's lease (taken or renewed for `seconds`); else the seconds left on
        another holder's lease."""
        left_ms = self._call(lambda: self._scripts["lease"](
            keys=[self._hook_key(hook_key, "lease")], args=[self.owner, int(seconds * 1000)]))
        return int(left_ms) / 1000.0

    def release_lease(self, hook_key: str) -> None:
        self._call(lambda: self._scripts["release"](keys=[self._hook_key(hook_key, "lease")], args=[self.owner]))

    def _parse(self, held, dedup_key: bytes) -> Claim | None:
        """What a claim's value means for the notification with this dedup key; None: nobody holds it (any more)."""
        text = held.decode() if isinstance(held, bytes) else str(held)
        kind, _, rest = text.partition("|")
        if kind == "own":
            owner, _, key = rest.partition("|")
            if key != dedup_key.hex():
                return None  # another notification of the group: this one is nobody's
            return OURS if owner == self.owner else Claim(False)
        if kind == CLAIM_DONE:
            key, state, status, reason = (rest.split("|", 3) + ["", "", ""])[:4]
            if key != dedup_key.hex():
                return None
            return Claim(False, True, state, int(status) if status.isdigit() else None, reason)
        return None

    def claim(self, keys: Sequence[tuple[str, bytes, bytes]], seconds: float, *,
              reminders: Sequence[bool] = ()) -> list[Claim]:
        """For each (hook key, group id, dedup key): ours now, or what another process holds for it."""
        if not keys:
            return []
        owner = self.owner

        def run():
            pipeline = self.client.pipeline(transaction=False)
            for index, (hook_key, group_id, dedup_key) in enumerate(keys):
                reminder = "1" if index < len(reminders) and reminders[index] else "0"
                self._scripts["claim"](keys=[self._claim_key(hook_key, group_id)],
                                       args=[owner, int(seconds * 1000), dedup_key.hex(), reminder], client=pipeline)
            return pipeline.execute()
        return [self._parse(held, key[2]) or OURS for held, key in zip(self._call(run), keys)]

    def look(self, keys: Sequence[tuple[str, bytes, bytes]]) -> list[Claim | None]:
        """What each claim holds now for its notification; None where nobody does (its holder died: claim it)."""
        if not keys:
            return []

        def run():  # one GET each: keys of several hooks live in several Cluster slots
            pipeline = self.client.pipeline(transaction=False)
            for hook_key, group_id, _ in keys:
                pipeline.get(self._claim_key(hook_key, group_id))
            return pipeline.execute()
        return [None if value is None else self._parse(value, key[2]) for value, key in zip(self._call(run), keys)]

    def renew_claims(self, keys: Sequence[tuple[str, bytes, bytes]], seconds: float) -> None:
        if not keys:
            return
        owner = self.owner

        def run():
            pipeline = self.client.pipeline(transaction=False)
            for hook_key, group_id, dedup_key in keys:
                self._scripts["renew"](keys=[self._claim_key(hook_key, group_id)],
                                       args=[owner, int(seconds * 1000), dedup_key.hex()], client=pipeline)
            pipeline.execute()
        self._call(run)

    def finish_claims(self, finished: Sequence[tuple[tuple[str, bytes, bytes], str, int | None, str]],
                      seconds: float) -> None:
        """Each notification's outcome, kept for the de-duplication window: a copy arriving at another process gets
        the same answer without a post."""
        if not finished:
            return

        def run():
            pipeline = self.client.pipeline(transaction=False)
            for (hook_key, group_id, dedup_key), state, status, reason in finished:
                value = "|".join((CLAIM_DONE, dedup_key.hex(), state, "" if status is None else str(status),
                                  reason[:300]))  # the reason is last: it may hold a "|"
                # At least a few looks long: a copy waiting elsewhere must see the outcome before it goes.
                pipeline.set(self._claim_key(hook_key, group_id), value, px=max(2000, int(seconds * 1000)))
            pipeline.execute()
        self._call(run)

    # -- the live feed and the probe -------------------------------------------------------------------------------

    def publish_live(self, messages: Sequence[str]) -> None:
        if not messages or not self.up:  # known down: no timeout to pay on the event thread
            return
        payload = self.owner + "\n" + "\x1e".join(messages)
        try:
            self._call(lambda: self.client.publish(f"{self.prefix}{LIVE_CHANNEL}", payload))
        except Unavailable:
            pass  # the live feed is best effort; the page reads the journal on reconnect

    def report_down(self, detail: str) -> None:
        """The Store found Redis gone: one ERROR, and everyone follows (the probe brings it back)."""
        self._set_up(False, detail)

    def start(self, on_live: Callable[[list[str]], None] | None = None) -> None:
        """The probe, and the live feed's subscriber; started again in a forked process."""
        if on_live is not None:
            self._on_live = on_live
        if self._started_in_pid == os.getpid():
            return
        self._started_in_pid = os.getpid()
        self._threads = [threading.Thread(target=target, name=name, daemon=True)
                         for target, name in ((self._probe, "redis-probe"), (self._subscribe, "redis-live"))]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stopping.set()

    def _probe(self) -> None:
        while not self._stopping.wait(self.probe_interval_seconds):
            try:
                self._call(self.client.ping)
            except Unavailable:
                pass

    def _subscribe(self) -> None:
        channel = f"{self.prefix}{LIVE_CHANNEL}"
        while not self._stopping.is_set():
            pubsub = None
            try:
                pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(channel)
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message and message.get("type") == "message":
                        self._deliver_live(message["data"])
            except (self._redis.RedisError, OSError, ValueError):  # ValueError: its socket closed under it
                self._stopping.wait(self.probe_interval_seconds)
            except Exception:  # noqa: BLE001 - the live feed must never take a thread of ours down with it
                if self._stopping.is_set():
                    return  # the store closed its connections at shutdown
                logger.exception("internal error in the live feed's Redis subscriber; it goes on")
                self._stopping.wait(self.probe_interval_seconds)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # noqa: BLE001
                        pass

    def _deliver_live(self, data) -> None:
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        origin, _, body = text.partition("\n")
        if origin == self.owner or not body:
            return  # our own: already given to our clients
        self._on_live(body.split("\x1e"))


def open_coordination(config, store, on_change: Callable[[bool], None] = lambda up: None):
    """RedisCoordination for STATE_URL=redis://… (on the store's client: its timeouts, no retrying), else
    LocalCoordination."""
    if not config.state_is_shared:
        return LocalCoordination()
    shared_store = getattr(store, "shared", store)
    return RedisCoordination(shared_store.client, config.state_prefix, description=shared_store.description,
                             on_change=on_change)



def redis_client(url: str, timeout_seconds: float):
    """A redis-py client with the store's bounds (connect and socket timeouts that a URL's query cannot lengthen, no
    built-in retrying: redis-py's defaults retry with backoff for seconds, or block for ever on a hung server)."""
    from .store.redis import RedisStore

    return RedisStore(url, timeout_seconds=timeout_seconds).client
