"""What happened, as data, for whoever listens: the journal, the live feed (and, later, SMS and threads).

The request and post paths publish; one thread delivers the events, in order, to each subscriber in turn (the
journal first, so a live client that reacts to an event finds it in the journal). Publishing never blocks and
never fails: past the queue's bound an event is dropped and counted, as the journal is never on a page's path.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from .model import Alert, Notification
from .store import GroupMemory

logger = logging.getLogger("rcwebhook.events")

# Events waiting for the subscribers, bounded in number and in the bytes of the bodies they hold (an event keeps
# its notification until it is written); a storm of 50 req/s stays far below both while the disk keeps up.
MAX_PENDING_EVENTS = 50_000
MAX_PENDING_EVENT_BYTES = 32 * 1024 * 1024
SMALL_EVENT_BYTES = 256  # a post's event, or one whose body size is not known
# The subscribers get what accumulated in this long at most, as one list (the journal writes it in one transaction).
BATCH_SECONDS = 0.05
# After a quiet spell the first event waits this long before its batch is taken: a post's event comes as its
# waiting requests are woken, and the journal's work (Python, under the GIL) would otherwise take turns with their
# answers (bench/README.md, "Measured after the journal").
FIRST_EVENT_DELAY_SECONDS = 0.15
MAX_BATCH_EVENTS = 2_000


@dataclass(frozen=True)
class AlertsReceived:
    """A body's usable alerts, as received for an integration (before any delivery)."""

    request_id: str
    integration: str
    notification: Notification
    severities: tuple[str, ...]  # normalised, one per alert of notification.alerts
    received_at: float  # wall clock
    size_bytes: int = SMALL_EVENT_BYTES  # the body's size, for the queue's bound


@dataclass(frozen=True)
class NotificationAnswered:
    """The answer a body got."""

    request_id: str
    integration: str
    notification: Notification
    status_code: int
    ms: float
    received_at: float
    destinations: tuple[tuple[str, str], ...] = ()  # (destination name, what came of it), in routing order


@dataclass(frozen=True)
class PostAlert:
    fingerprint: str  # as sent, "" when the sender gave none (the journal computes it from the labels)
    labels: dict
    starts_at: str


@dataclass(frozen=True)
class PostFinished:
    """One post attempt to a destination and what came of it (outcome.Outcome value), with the groups it
    finished for the de-duplication memory."""

    destination: str  # the destination's name
    outcome: str
    status: int | None
    message_id: str | None
    alerts: tuple[PostAlert, ...]
    ms: float
    at: float  # wall clock
    groups: tuple[GroupMemory, ...] = ()
    threads: tuple = ()  # threads.ThreadMessage: the occurrences this post announced on a hook with threads


def post_alerts(alerts: Sequence[Alert]) -> tuple[PostAlert, ...]:
    return tuple(PostAlert(alert.fingerprint, dict(alert.labels), alert.starts_at) for alert in alerts)


Subscriber = Callable[[list], None]


class EventBus:
    """A bounded queue of events and the one thread that hands them to the subscribers."""

    def __init__(self, *, max_pending: int = MAX_PENDING_EVENTS, max_pending_bytes: int = MAX_PENDING_EVENT_BYTES,
                 on_dropped: Callable[[int], None] = lambda n: None):
        self.subscribers: list[Subscriber] = []
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.pending_bytes = 0
        self.on_dropped = on_dropped
        self.pending: collections.deque = collections.deque()
        self.condition = threading.Condition()
        self.thread: threading.Thread | None = None
        self.running = False
        self.busy = False
        self.flushing = 0  # callers waiting in flush(): the first event's delay is skipped for them
        self.started_in_pid = 0
        self._dropped_logged = False

    def subscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.append(subscriber)

    def publish(self, event: object) -> None:
        if self.started_in_pid != os.getpid() and self.running:
            self.start()  # threads do not survive a fork (gunicorn --preload builds the app in the master)
        size_bytes = getattr(event, "size_bytes", SMALL_EVENT_BYTES)
        with self.condition:
            if len(self.pending) >= self.max_pending or self.pending_bytes + size_bytes > self.max_pending_bytes:
                if not self._dropped_logged:
                    self._dropped_logged = True
                    logger.error("the event queue is full (%d): events for the journal and the live feed are "
                                 "dropped until it drains (delivery goes on)", self.max_pending)
                self.on_dropped(1)
                return
            self.pending.append(event)
            self.pending_bytes += size_bytes
            if len(self.pending) == 1:
                self.condition.notify_all()

    def start(self) -> "EventBus":
        with self.condition:
            if self.thread is not None and self.thread.is_alive() and self.started_in_pid == os.getpid():
                return self
            self.running, self.started_in_pid = True, os.getpid()
            self.thread = threading.Thread(target=self._run, name="events", daemon=True)
            self.thread.start()
        return self

    def _take(self) -> list | None:
        with self.condition:
            if self.running and not self.pending:
                while self.running and not self.pending:
                    self.condition.wait()  # publish() and stop() notify: an idle bus costs nothing
                if self.running and not self.flushing:
                    self.condition.wait(FIRST_EVENT_DELAY_SECONDS)  # returns early only for stop() or flush()
            if not self.pending:
                return None
            batch = []
            while self.pending and len(batch) < MAX_BATCH_EVENTS:
                event = self.pending.popleft()
                self.pending_bytes -= getattr(event, "size_bytes", SMALL_EVENT_BYTES)
                batch.append(event)
            if len(self.pending) < self.max_pending // 2 and self.pending_bytes < self.max_pending_bytes // 2:
                self._dropped_logged = False
            self.busy = True
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            self._deliver(batch)
            with self.condition:
                self.busy = False
                self.condition.notify_all()
            if self.running:
                time.sleep(BATCH_SECONDS)  # let a burst accumulate into one transaction

    def _deliver(self, batch: list) -> None:
        for subscriber in self.subscribers:
            try:
                subscriber(batch)
            except Exception:  # noqa: BLE001 - one subscriber's bug must not starve the others or kill the thread
                logger.exception("internal error in an event subscriber (%s); its events are lost",
                                 getattr(subscriber, "__qualname__", subscriber))

    def flush(self, timeout_seconds: float) -> bool:
        """Wait until every event published so far was handed over; False on timeout."""
        deadline = time.monotonic() + timeout_seconds
        with self.condition:
            self.flushing += 1
            self.condition.notify_all()
            try:
                while self.pending or self.busy:
                    left = deadline - time.monotonic()
                    if left <= 0 or self.thread is None or not self.thread.is_alive():
                        return not (self.pending or self.busy)
                    self.condition.wait(min(left, 0.05))
            finally:
                self.flushing -= 1
        return True

    def stop(self, timeout_seconds: float = 2.0) -> None:
        """Hand over what is pending (within the time), then stop the thread."""
        self.flush(timeout_seconds)
        with self.condition:
            self.running = False
            self.condition.notify_all()
        if self.thread is not None:
            self.thread.join(timeout=1.0)
