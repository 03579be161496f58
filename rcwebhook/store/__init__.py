"""State that outlives a request, behind one small interface with interchangeable backends.

memory:// keeps everything in the process (as before this existed); sqlite:///<path> keeps it in one file on one
machine; the replicas issue adds redis://. Every backend passes tests/test_store_contract.py.

The Store holds
- the de-duplication and refusal memory: each hook's groups' latest finished notification (GroupMemory),
- the journal: one record per alert occurrence (fingerprint + startsAt) with its deliveries, and one per
  notification received.

Times are wall-clock epoch seconds given by the caller: a store keeps no clock of its own, so tests pass any time.
One thread per process writes (the journal's, on the event thread); any thread may read. Every method may raise StoreError.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol

# Deliveries kept per alert occurrence: a long Rocket.Chat outage retries a post many times.
MAX_DELIVERIES_PER_ALERT = 20


class StoreError(Exception):
    """The store cannot be read or written (disk full, file locked or deleted, a server gone)."""


@dataclass(frozen=True)
class GroupMemory:
    """One hook's memory of a group's latest finished notification: a repeat of it within the de-duplication
    window gets the same answer without being posted again (a refusal stays a refusal)."""

    hook_key: str  # a digest of the hook's URL: the URL itself holds its token and is never stored
    group_id: bytes  # digest of the groupKey
    dedup_key: bytes  # digest of the notification's alerts' states
    state: str  # a hookqueue.JobState of a finished job
    status: int | None
    reason: str
    finished_at: float


@dataclass(frozen=True)
class ThreadMessage:
    """The message that announced an alert occurrence on one hook (ROCKETCHAT_THREADS): its thread."""

    hook_key: str  # a digest of the hook's URL
    alert_id: str  # the occurrence: fingerprint + startsAt
    message_id: str
    at: float


@dataclass(frozen=True)
class AlertSeen:
    """One alert as one notification carried it (upserted into its occurrence's record)."""

    id: str  # occurrence_id(fingerprint, starts_at)
    fingerprint: str
    starts_at: str  # RFC 3339 UTC when it parses, else as sent
    ends_at: str  # "" when unset
    alertname: str
    status: str  # firing | resolved
    severity: str  # normalised: critical | warning | info | unknown
    integration: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    received_at: float


@dataclass(frozen=True)
class Delivery:
    """One post attempt that carried the alert."""

    alert_id: str
    destination: str  # the destination's name, never its URL
    at: float
    outcome: str  # delivered | transient | permanent | content_refused (outcome.Outcome values)
    status: int | None  # Rocket.Chat's HTTP status, None when no answer came
    message_id: str | None = None  # when Rocket.Chat said it


@dataclass(frozen=True)
class AlertRecord:
    """An alert occurrence as the journal knows it."""

    id: str
    fingerprint: str
    alertname: str
    status: str
    severity: str
    integration: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: str
    ends_at: str
    first_received: float
    last_received: float
    resolved_at: float | None  # when a resolved notification for it was first received; None while firing
    updated_at: float  # last received or delivered: retention counts from it
    deliveries: tuple[Delivery, ...] = ()  # oldest first, at most MAX_DELIVERIES_PER_ALERT (the newest)


@dataclass(frozen=True)
class NotificationRecord:
    """One webhook body received and answered."""

    id: str
    request_id: str
    integration: str
    group_key: str
    receiver: str
    firing: int
    resolved: int
    status_code: int
    ms: float
    received: float
    destinations: Mapping[str, str] = field(default_factory=dict)  # destination name → what came of it (JobState)


@dataclass
class WriteBatch:
    """What the writer applies in one transaction, in this order: alerts, deliveries, notifications, groups,
    threads."""

    alerts: list[AlertSeen] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    notifications: list[NotificationRecord] = field(default_factory=list)
    groups: list[GroupMemory] = field(default_factory=list)
    threads: list[ThreadMessage] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.alerts or self.deliveries or self.notifications or self.groups or self.threads)


class Store(Protocol):
    """The interface every backend implements (see the module's docstring for its rules)."""

    description: str  # for logs and the status page, e.g. "sqlite:////var/lib/rocketchat-webhook/state.sqlite3"

    def write(self, batch: WriteBatch) -> None:
        """Apply the batch in one transaction (all or nothing).

        An AlertSeen creates its occurrence's record (first_received = received_at) or updates it: status,
        severity, integration, labels, annotations, ends_at and alertname from the one received last (an older one
        arriving late changes nothing but first/last_received); last_received = max; resolved_at = the first
        received_at of a resolved notification since it last fired (None again when it fires again after that);
        updated_at = max(updated_at, received_at). A Delivery is appended to its record (kept: the newest
        MAX_DELIVERIES_PER_ALERT) and moves updated_at to max(updated_at, at); one for an unknown record is dropped.
        A NotificationRecord is added (same id: replaced). A GroupMemory replaces the one with the same
        (hook_key, group_id). A ThreadMessage is kept unless one for the same (hook_key, alert_id) exists (the first
        message is the thread)."""

    def load_groups(self, finished_since: float) -> list[GroupMemory]:
        """The group memory finished at or after the time, oldest first."""

    def load_threads(self, since: float) -> list[ThreadMessage]:
        """The thread messages recorded at or after the time, oldest first."""

    def alerts(
        self, *, status: str | None = None, severity: str | None = None, integration: str | None = None,
        limit: int = 100, newest_by: str = "first_received",
    ) -> list[AlertRecord]:
        """Occurrences, newest first (by first_received, or by resolved_at with never-resolved ones last; then id,
        descending), filtered by exact values when given."""

    def alert(self, alert_id: str) -> AlertRecord | None: ...

    def notifications(self, *, limit: int = 100) -> list[NotificationRecord]:
        """Newest first (by received, then id)."""

    def prune(self, *, updated_before: float, max_alerts: int, groups_finished_before: float) -> int:
        """Forget alert records (with their deliveries) and notification records last updated (received) before
        updated_before; then the least recently updated beyond max_alerts occurrences, and the oldest notifications
        beyond max_alerts; group memory finished before groups_finished_before; and thread messages recorded before
        updated_before, then the oldest beyond max_alerts. Returns how many alert records went."""

    def counts(self) -> Mapping[str, int]:
        """{"alerts": n, "notifications": n, "groups": n, "threads": n}."""

    def close(self) -> None: ...


def open_store(url: str) -> Store:
    """The backend the URL names; StoreError when it cannot be opened (a bad path, a read-only directory).

    Opening checks that the store can be written now (SQLite: creates the schema in a transaction)."""
    if url == "memory://" or url == "memory:":
        from .memory import MemoryStore

        return MemoryStore()
    if url.startswith("sqlite:///"):
        from .sqlite import SQLiteStore

        return SQLiteStore(url[len("sqlite:///"):])
    raise StoreError(f"unknown store URL scheme in {url!r}: use sqlite:///<path> or memory://")
