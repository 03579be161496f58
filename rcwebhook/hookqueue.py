"""One hook URL's queue: pacing, coalescing, de-duplication, splitting refusals (pure: no threads, no I/O).

The dispatcher drives it: submit() notifications, ask due_at() when to post, take_batch() what to post, and
finish() with Rocket.Chat's answer. Every method takes the time, so tests run it on a fake clock.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import random
import threading
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

from .config import DEFAULT_MAX_TRACKED_GROUPS
from .merging import alert_identity, is_stale
from .model import RESOLVED, Alert, Notification
from .outcome import Outcome, PostResult
from .pacing import PostBudget, RateLimit

logger = logging.getLogger("rcwebhook.queue")

# Capped exponential backoff with ±50 % jitter between attempts after a transient failure.
BACKOFF_FIRST_SECONDS = 0.25
# Low, because pacing already spaces attempts (each one spends Rocket.Chat's budget) and a recovered Rocket.Chat
# should see the queue again within the delivery deadline.
BACKOFF_CAP_SECONDS = 4.0
# A FIRING that arrives this soon after the same occurrence (same startsAt) was posted RESOLVED is a copy that
# arrived out of order, and is not shown. Later, it is a re-fire (Prometheus restored the alert after Alertmanager
# had resolved it, which takes minutes), and is posted.
STALE_FIRING_SECONDS = 10.0
# Forgetting expired de-duplication entries is a scan: done at most this often (lookups check age themselves).
FORGET_INTERVAL_SECONDS = 5.0
# When MAX_TRACKED_GROUPS is reached, how many of the oldest groups are looked at for a finished one to forget.
FORGET_SCAN_LIMIT = 64
# 128-bit digests: a collision between two different notifications is out of reach (2**64 of them for even odds).
DIGEST_BYTES = 16


class JobState:
    QUEUED = "queued"
    IN_FLIGHT = "in_flight"
    DELIVERED = "delivered"
    DELIVERED_PLAIN_TEXT = "delivered_plain_text"
    REFUSED = "refused"

    FINISHED = (DELIVERED, DELIVERED_PLAIN_TEXT, REFUSED)


class Hook(Protocol):
    """Where posts go: the queue knows its name (for logs and metrics) and its url (the key, never logged)."""

    name: str
    url: str


@dataclass(frozen=True)
class Part:
    """One notification's alerts for one hook, as routing chose them; looks says, per alert, how the channel shows
    it (opaque to the core: the route destination that sent it there)."""

    hook: Hook
    alerts: tuple[Alert, ...]
    looks: tuple[object, ...] = ()
    reply_to: str | None = None  # a thread's message id: posted as a reply there (threads.py)


@dataclass(eq=False)
class Job:
    """One notification's alerts for one hook, from submission until Rocket.Chat took or refused them."""

    destination: Hook
    notification: Notification
    alerts: tuple[Alert, ...]
    dedup_key: bytes | None
    size_bytes: int
    answer_by: float | None = None  # when the request waiting for it is answered, whatever happened
    group_id: bytes | None = None  # the digest of its groupKey, once it is remembered for de-duplication
    submitted_at: float = 0.0
    looks: tuple[object, ...] = ()  # per alert, as in Part
    reply_to: str | None = None  # as in Part; merged only with jobs replying to the same message
    state: str = JobState.QUEUED
    plain_text: bool = False  # Rocket.Chat refused its rich message: it goes alone, as plain text
    status: int | None = None
    reason: str = ""
    finished_at: float | None = None
    # Set once the job finished: each waiting request waits on its own jobs, so a post wakes only them.
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def finished(self) -> bool:
        return self.state in JobState.FINISHED


@dataclass(frozen=True, slots=True)
class FinishedGroup:
    """What a group's latest notification is remembered by once it finished: digests and the answer, ~200 bytes.

    Whole notifications (labels, annotations) cost kilobytes each; a storm of distinct groups must not hold them.
    """

    dedup_key: bytes
    state: str
    status: int | None
    reason: str
    submitted_at: float
    finished_at: float

    @property
    def finished(self) -> bool:
        return True  # only finished jobs are remembered this way

    @classmethod
    def of(cls, job: Job) -> "FinishedGroup":
        return cls(job.dedup_key, job.state, job.status, job.reason, job.submitted_at, job.finished_at)

    def answer_for(self, repeat: Job) -> Job:
        """A finished job standing for the repeat, carrying the answer the original got."""
        finished = Job(
            repeat.destination, repeat.notification, repeat.alerts, self.dedup_key, 0, state=self.state,
            status=self.status, reason=self.reason, finished_at=self.finished_at, submitted_at=self.submitted_at,
            looks=repeat.looks, reply_to=repeat.reply_to,
        )
        finished.done.set()
        return finished


@dataclass
class Batch:
    """The jobs one post carries, and the alerts it shows (duplicates merged, stale states dropped)."""

    jobs: tuple[Job, ...]
    parts: list[tuple[Notification, list[Alert]]] = field(default_factory=list)
    alone: bool = False  # came from a split or is a plain-text retry: never merged with others

    @property
    def plain_text(self) -> bool:
        return any(job.plain_text for job in self.jobs)

    @property
    def alert_count(self) -> int:
        return sum(len(alerts) for _, alerts in self.parts)


def _digest(document: object) -> bytes:
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=DIGEST_BYTES).digest()


def dedup_key(notification: Notification, alerts: Sequence[Alert]) -> bytes | None:
    """Same groupKey and same set of (fingerprint, status, startsAt, endsAt): the same notification again.

    Only bodies with a groupKey and a fingerprint on every alert qualify. A digest, so memory stays small.
    """
    if not notification.group_key or not alerts or any(not alert.fingerprint for alert in alerts):
        return None
    states = sorted({(alert.fingerprint, alert.status, alert.starts_at, alert.ends_at) for alert in alerts})
    return _digest([notification.group_key, states])


def group_id(notification: Notification, reply_to: str | None = None) -> bytes:
    """A group's key in the de-duplication memory; a thread's reply part of it is a group of its own."""
    return _digest(notification.group_key) if reply_to is None else _digest([notification.group_key, reply_to])


def is_reminder(notification: Notification) -> bool:
    """Alertmanager says the repeat interval elapsed: an intended reminder, never taken for a delivered duplicate."""
    return "repeat" in notification.notification_reason.lower()


class HookQueue:
    """The FIFO of notifications waiting for one hook URL, and everything that decides when and what to post."""

    def __init__(
        self,
        destination: Hook,
        rate_limit: RateLimit,
        dedup_window_seconds: float,
        jitter: Callable[[], float] | None = None,
        *,
        max_tracked_groups: int = DEFAULT_MAX_TRACKED_GROUPS,
        on_group_forgotten: Callable[[], None] = lambda: None,
    ):
        self.destination = destination
        self.max_tracked_groups = max_tracked_groups
        self.on_group_forgotten = on_group_forgotten
        self.budget = PostBudget(rate_limit)
        self.dedup_window_seconds = dedup_window_seconds
        self.jitter = jitter or (lambda: random.uniform(0.5, 1.5))
        self.waiting: collections.deque[Job] = collections.deque()
        self.alone_batches: collections.deque[tuple[Job, ...]] = collections.deque()
        self.in_flight: Batch | None = None
        # De-duplication: each group's latest notification (queued or in flight: the Job; finished within the
        # window: its FinishedGroup), by groupKey digest, oldest submission first.
        self.latest_by_group: dict[bytes, Job | FinishedGroup] = {}
        # Threads: how the group's latest notification was split, by groupKey digest: (its key, parts' layout).
        self.splits: collections.OrderedDict[bytes, tuple[bytes, tuple]] = collections.OrderedDict()
        self.resolved_posted: dict[object, tuple[str, float]] = {}  # alert → (startsAt, when posted RESOLVED)
        self.last_post_at: float | None = None  # when the last post was sent
        self.next_forget_at = 0.0
        self.retry_at = 0.0
        self.consecutive_failures = 0
        self.shared_gate_open = False  # replicas: this process holds the hook's lease and a slot of its budget
        self.gate_retry_at = 0.0  # replicas: when to ask again for the lease or the shared budget (never Rocket.Chat's word)
        self.full_rate_limit = rate_limit  # the budget while Redis answers (it is divided while Redis is gone)

    # -- intake -------------------------------------------------------------------------------------------------

    def submit(self, job: Job, now: float) -> tuple[Job, bool]:
        """Queue a job, or return the equal one it repeats: (job to wait on, joined).

        A job repeats the group's latest notification when their keys are equal: an HA peer's copy, or
        Alertmanager's retry after a partial failure. Only the latest counts: after FIRING then RESOLVED, the same
        FIRING again (a re-fire, e.g. after Prometheus restarted) is new and is posted.
        """
        if now >= self.next_forget_at:
            self._forget_expired(now)
            self.next_forget_at = now + FORGET_INTERVAL_SECONDS
        job.submitted_at = now
        if job.dedup_key is None:
            self.waiting.append(job)
            return job, False
        group = job.group_id = group_id(job.notification, job.reply_to)
        latest = self._repeated(group, job.dedup_key, now)
        if latest is not None:
            # A reminder repeats on purpose: it joins only a copy still on its way, never a delivered one.
            if not (is_reminder(job.notification) and latest.finished):
                if isinstance(latest, Job):
                    if job.answer_by is not None:
                        # A re-send now waits for it: the post may take the time the re-send has left.
                        latest.answer_by = max(latest.answer_by or job.answer_by, job.answer_by)
                    return latest, True
                return latest.answer_for(job), True
        self.latest_by_group.pop(group, None)  # inserted anew at the end: the dict stays in submission order
        self.latest_by_group[group] = job
        while len(self.latest_by_group) > self.max_tracked_groups:
            self._forget_oldest_group()
            self.on_group_forgotten()
        self.waiting.append(job)
        return job, False

    def _repeated(self, group: bytes, key: bytes, now: float) -> Job | FinishedGroup | None:
        """The group's latest notification when it has this key and is within the window (what a repeat joins)."""
        latest = self.latest_by_group.get(group)
        if latest is not None and latest.dedup_key == key and not self._expired(latest, now):
            return latest
        return None

    # -- replicas: a notification another process posts (shared.py) -------------------------------------------------

    def withdraw(self, job: Job) -> None:
        """Take a queued job out of the queue: another process posts it. It stays the group's latest, so a copy
        arriving here joins it and gets the outcome that process reports."""
        try:
            self.waiting.remove(job)
        except ValueError:
            pass

    def finish_elsewhere(self, job: Job, state: str, status: int | None, reason: str, now: float) -> None:
        """Another process finished the job's notification: the job carries its outcome, remembered as ours."""
        job.state, job.status, job.reason, job.finished_at = state, status, reason, now
        job.done.set()
        if job.group_id is not None and self.latest_by_group.get(job.group_id) is job:
            self.latest_by_group[job.group_id] = FinishedGroup.of(job)

    def repeats_latest(self, notification: Notification, key: bytes | None, now: float) -> bool:
        """The notification, whole, is its group's latest again, within the window (it would join it)."""
        return key is not None and self._repeated(group_id(notification), key, now) is not None

    # -- threads: a notification split into a channel part and replies --------------------------------------------

    def split_remembered(self, notification: Notification, whole_key: bytes | None, now: float):
        """The split (reply_to, alert indexes) of the group's latest notification when this one repeats it and every
        part is still remembered, so an HA peer's copy or a retry is split alike and joins each part; else None."""
        if whole_key is None:
            return None
        remembered = self.splits.get(group_id(notification))
        if remembered is None or remembered[0] != whole_key:
            return None
        for reply_to, _ in remembered[1]:
            entry = self.latest_by_group.get(group_id(notification, reply_to))
            if entry is None or self._expired(entry, now):
                return None
        return remembered[1]

    def remember_split(self, notification: Notification, whole_key: bytes | None, layout) -> None:
        """A new notification of the group was split: it is the group's latest. Finished parts of the previous one
        are forgotten, so a later notification never joins one of them (a re-fire after a resolve is new)."""
        group = group_id(notification)
        previous = self.splits.pop(group, None)
        stale = {None} | {reply_to for reply_to, _ in previous[1]} if previous else {None}
        for reply_to in stale:
            key = group_id(notification, reply_to)
            if isinstance(self.latest_by_group.get(key), FinishedGroup):
                del self.latest_by_group[key]
        if whole_key is not None:
            self.splits[group] = (whole_key, tuple(layout))
            while len(self.splits) > self.max_tracked_groups:
                self.splits.popitem(last=False)

    def _forget_oldest_group(self) -> None:
        """The oldest finished group first: a job still queued or in flight is kept while any finished one can go
        (forgetting it would let an HA peer's copy be posted twice). Only the oldest few are looked at."""
        oldest = None
        for scanned, (group, entry) in enumerate(self.latest_by_group.items()):
            oldest = oldest or group
            if entry.finished:
                del self.latest_by_group[group]
                return
            if scanned >= FORGET_SCAN_LIMIT:
                break
        del self.latest_by_group[oldest]

    def _expired(self, entry: Job | FinishedGroup, now: float) -> bool:
        """Finished longer ago than the de-duplication window (counted from delivery)."""
        return (
            entry.finished and entry.finished_at is not None
            and entry.finished_at <= now - self.dedup_window_seconds
        )

    def _forget_expired(self, now: float) -> None:
        horizon = now - self.dedup_window_seconds
        for group, entry in list(self.latest_by_group.items()):
            if entry.submitted_at > horizon:
                break  # in submission order, and none finished before it was submitted: the rest are younger
            if self._expired(entry, now):
                del self.latest_by_group[group]
        for identity, (_, when) in list(self.resolved_posted.items()):
            if now - when >= STALE_FIRING_SECONDS:
                del self.resolved_posted[identity]

    @property
    def idle(self) -> bool:
        return self.in_flight is None and not self.waiting and not self.alone_batches

    @property
    def pending_count(self) -> int:
        """Jobs queued or in flight, counted without building a list (the metrics gauge reads it on every change)."""
        alone = sum(len(batch) for batch in self.alone_batches)
        return alone + len(self.waiting) + (len(self.in_flight.jobs) if self.in_flight else 0)

    def pending_jobs(self) -> list[Job]:
        jobs = [job for batch in self.alone_batches for job in batch] + list(self.waiting)
        return jobs + (list(self.in_flight.jobs) if self.in_flight else [])

    # -- posting ------------------------------------------------------------------------------------------------

    def due_at(self, now: float) -> float | None:
        """When the next post should go, or None when there is nothing to post (or one is in flight)."""
        if self.in_flight is not None or not (self.waiting or self.alone_batches):
            return None
        return max(self.retry_at, self.gate_retry_at, self.budget.earliest_post_at(now, self.last_post_at))

    def seconds_until_post(self, now: float) -> float:
        due = self.due_at(now)
        return max(0.0, (due if due is not None else now) - now)

    def take_batch(self, now: float) -> Batch:
        """Everything waiting goes in one post (a split half or a plain-text retry goes alone)."""
        if self.alone_batches:
            batch = Batch(self.alone_batches.popleft(), alone=True)
        else:
            # Everything waiting, except replies to another thread than the first job's: one post is one message.
            reply_to = self.waiting[0].reply_to
            taken = [job for job in self.waiting if job.reply_to == reply_to]
            if len(taken) == len(self.waiting):
                self.waiting.clear()
            else:
                self.waiting = collections.deque(job for job in self.waiting if job.reply_to != reply_to)
            batch = Batch(tuple(taken))
        self.in_flight = batch  # first: after an internal error below, requeue_in_flight() puts it back
        for job in batch.jobs:
            job.state = JobState.IN_FLIGHT
        batch.parts = self._fresh_parts(batch.jobs, now)
        if batch.parts:
            self.last_post_at = now  # spacing counts from sending, so Rocket.Chat's latency is not added to it
        self.in_flight = batch
        return batch

    def _fresh_parts(self, jobs: Sequence[Job], now: float) -> list[tuple[Notification, list[Alert]]]:
        """Each job's alerts, less FIRINGs that arrived just after this hook showed the same occurrence RESOLVED."""
        parts = []
        for job in jobs:
            fresh = []
            for alert in job.alerts:
                resolved = self.resolved_posted.get(alert_identity(alert))
                recent = resolved is not None and now - resolved[1] < STALE_FIRING_SECONDS
                if not (recent and is_stale(alert, RESOLVED, resolved[0])):
                    fresh.append(alert)
            if fresh:
                parts.append((job.notification, fresh))
        return parts

    def finish(self, batch: Batch, result: PostResult | None, now: float) -> list[Job]:
        """Apply Rocket.Chat's answer (None: nothing needed posting); returns the jobs that finished."""
        self.in_flight = None
        if result is None:
            return self._complete(batch, JobState.DELIVERED, None, "", now)
        # Rocket.Chat counts a post on arrival, at the latest when its answer came back: the window's count
        # uses that (cautious) time, while the spacing between posts counts from when each was sent.
        self.budget.record_attempt(now)
        self.budget.observe_server(now, result.rate_limit_remaining, result.rate_limit_reset_seconds)
        for job in batch.jobs:
            job.status = result.status
            job.reason = result.reason
        if result.outcome is Outcome.DELIVERED:
            self.consecutive_failures, self.retry_at = 0, 0.0
            for _, alerts in batch.parts:
                for alert in alerts:
                    if alert.status == RESOLVED:
                        self.resolved_posted[alert_identity(alert)] = (alert.starts_at, now)
            state = JobState.DELIVERED_PLAIN_TEXT if batch.plain_text else JobState.DELIVERED
            return self._complete(batch, state, result.status, "", now)
        if result.outcome is Outcome.TRANSIENT:
            self._back_off(result, now)
            self._requeue(batch)
            return []
        if result.content_dependent and len(batch.jobs) > 1:
            # One bad alert must not sink the others: halve the post, down to single notifications at most.
            middle = len(batch.jobs) // 2
            self.alone_batches.extendleft([batch.jobs[middle:], batch.jobs[:middle]])
            for job in batch.jobs:
                job.state = JobState.QUEUED
            logger.error(
                "Rocket.Chat refused a post of %d notifications for %s (HTTP %s: %s); posting them in two halves",
                len(batch.jobs), self.destination, result.status, result.reason,
            )
            return []
        if result.outcome is Outcome.CONTENT_REFUSED and any(job.reply_to for job in batch.jobs):
            # A reply refused for its content (a hook's script, a server that checks tmid): the same alerts go once
            # as a channel message instead, as any refused content does.
            for job in batch.jobs:
                job.reply_to, job.state = None, JobState.QUEUED
            self.alone_batches.appendleft(batch.jobs)
            logger.error(
                "Rocket.Chat refused a thread reply for %s (HTTP %s: %s); posting it to the channel instead",
                self.destination, result.status, result.reason,
            )
            return []
        if result.outcome is Outcome.CONTENT_REFUSED and not batch.plain_text:
            [job] = batch.jobs
            job.plain_text, job.state = True, JobState.QUEUED
            self.alone_batches.appendleft((job,))
            logger.error(
                "Rocket.Chat refused the message for %s (HTTP %s: %s); sending the plain-text version",
                self.destination, result.status, result.reason,
            )
            return []
        logger.error(
            "Rocket.Chat refused %d notification(s) for %s for good (HTTP %s: %s)",
            len(batch.jobs), self.destination, result.status, result.reason,
        )
        return self._complete(batch, JobState.REFUSED, result.status, result.reason, now)

    def requeue_in_flight(self, now: float, batch: Batch | None = None) -> None:
        """Put the batch in flight (or the one given, which finish() may have let go of) back at the front after an
        internal error, and pause a little. Jobs that finished meanwhile stay finished."""
        batch = batch if batch is not None else self.in_flight
        self.in_flight = None
        if batch is not None:
            # Only jobs still in flight: finished ones stay finished, re-queued ones (a split) are queued already.
            stranded = tuple(job for job in batch.jobs if job.state == JobState.IN_FLIGHT)
            if stranded:
                self._requeue(Batch(stranded, alone=batch.alone))
                self.retry_at = now + BACKOFF_CAP_SECONDS

    def _back_off(self, result: PostResult, now: float) -> None:
        self.consecutive_failures += 1
        if result.status == 429:
            # Wait for the window to reopen: from X-RateLimit-Reset or the "wait N seconds" text.
            wait = result.wait_seconds if result.wait_seconds is not None else result.rate_limit_reset_seconds
            if wait is None:
                wait = BACKOFF_CAP_SECONDS
            elif wait > self.budget.limit.max_wait_seconds:
                logger.warning(
                    "Rocket.Chat asked %s to wait %.0f s; waiting %g s at most (the rate-limit window plus a margin)",
                    self.destination, min(wait, 1e12), self.budget.limit.max_wait_seconds,
                )
                wait = self.budget.limit.max_wait_seconds
            self.budget.block_until(now + wait)
            return
        # The exponent is bounded: 2 ** 1024 would overflow a float after a long outage.
        step = min(BACKOFF_CAP_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** min(self.consecutive_failures - 1, 16))
        self.retry_at = now + step * self.jitter()

    def _requeue(self, batch: Batch) -> None:
        """After a transient failure the jobs go first again: alone if they had to, else merged with newer ones."""
        for job in batch.jobs:
            job.state = JobState.QUEUED
        if batch.alone:
            self.alone_batches.appendleft(batch.jobs)
        else:
            self.waiting.extendleft(reversed(batch.jobs))

    def _complete(self, batch: Batch, state: str, status: int | None, reason: str, now: float) -> list[Job]:
        for job in batch.jobs:
            job.state, job.status, job.reason, job.finished_at = state, status, reason, now
            job.done.set()
            if job.group_id is not None and self.latest_by_group.get(job.group_id) is job:
                self.latest_by_group[job.group_id] = FinishedGroup.of(job)  # same key: its place is kept
        return list(batch.jobs)

