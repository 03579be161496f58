"""State that outlives a request, behind one small interface with interchangeable backends.

memory:// keeps everything in the process (as before this existed); sqlite:///<path> keeps it in one file on one
machine; the replicas issue adds redis://. Every backend passes tests/test_store_contract.py.

The Store holds
- the de-duplication and refusal memory: each hook's groups' latest finished notification (GroupMemory),
- the journal: one record per alert occurrence (fingerprint + startsAt) with its deliveries, and one per
  notification received,
- thread ids (ROCKETCHAT_THREADS),
- SMS escalation (issue 11): every SMS scheduled, pending, sent or given up, which occurrences have been paged to
  which recipient (so a re-send, an HA peer or a restart never pages twice), the occurrences seen resolved, Twilio's
  delivery statuses and the recipients who opted out. SMS records are written at once by the thread that decides
  (a request, the SMS worker, a status callback), not behind by the event thread: they decide what is sent.

Times are wall-clock epoch seconds given by the caller: a store keeps no clock of its own, so tests pass any time.
The journal's records are written by one thread per process (the event thread); SMS calls may write from any
thread (requests, the SMS worker, status callbacks); any thread may read. Every method may raise StoreError.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol, Sequence

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


# SMS states. Open ones are still to be decided by the SMS worker; the rest are final.
SMS_PENDING = "pending"  # waiting for its due time (delay, tier, SMS_HOURS) or its next retry
SMS_HELD = "held"  # over SMS_MAX_PER_HOUR for its recipient: goes out (alone or in a digest) when the hour allows
SMS_SENT = "sent"  # Twilio took it (201); twilio_status follows the status callbacks
SMS_DIGESTED = "digested"  # went out inside the digest SMS digest_id
SMS_CANCELLED = "cancelled"  # every alert resolved or silenced before it went (reason says which)
SMS_OPTED_OUT = "opted_out"  # the recipient replied STOP (Twilio 21610)
SMS_FAILED = "failed"  # refused for good, given up after SMS_GIVE_UP_SECONDS, or over SMS_MAX_PER_DAY
OPEN_SMS_STATES = (SMS_PENDING, SMS_HELD)
SMS_STATES = (SMS_PENDING, SMS_HELD, SMS_SENT, SMS_DIGESTED, SMS_CANCELLED, SMS_OPTED_OUT, SMS_FAILED)
# Twilio's message statuses in the order a message moves through them; a later callback never moves one back
# (callbacks may arrive out of order). The three final ones rank alike and the first of them is kept: Twilio sends
# one per message, so another is a replayed callback (signatures carry no nonce).
TWILIO_STATUS_RANK = {"accepted": 1, "queued": 1, "sending": 2, "sent": 3, "delivered": 4, "undelivered": 4,
                      "failed": 4, "read": 5}
TWILIO_FINAL_RANK = 4


@dataclass(frozen=True)
class SmsAlert:
    """One alert occurrence as an SMS names it (enough to render its body when it is due)."""

    id: str  # occurrence_id(fingerprint, starts_at)
    fingerprint: str
    alertname: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    severity: str = ""  # the relay's normalised severity (critical, warning, info, unknown)
    starts_at: str = ""


@dataclass(frozen=True)
class SmsMessage:
    """One SMS to one recipient: scheduled, then sent (or not) by the SMS worker."""

    id: str  # random, unique
    destination: str  # the SMS destination's name
    recipient: str = field(repr=False)  # E.164; the Store keeps it to send, everything else shows its last 3 digits
    kind: str  # alert | resolved | digest | test
    alerts: tuple[SmsAlert, ...]
    status: str  # one of SMS_STATES
    created_at: float
    due_at: float  # when it may first go (delay, tier, SMS_HOURS)
    next_attempt_at: float  # due_at, later after a retry or while held
    updated_at: float
    tier: int = 0
    attempts: int = 0
    check_silences: bool = False  # scheduled with a delay: ask Alertmanager before sending
    alertmanager_url: str = ""  # where to ask: ALERTMANAGER_URL or the notification's externalURL
    body: str = ""  # the text sent (or to be sent)
    segments: int = 0
    sid: str = ""  # Twilio's SM… id once sent
    twilio_status: str = ""  # Twilio's latest status for sid (the send's answer, then the callbacks)
    error_code: int | None = None  # Twilio's error code, from a refusal or a callback
    reason: str = ""  # why it is held, cancelled or failed, for people
    sent_at: float | None = None
    digest_id: str = ""  # SMS_DIGESTED: the digest that carried it


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
        updated_before, then the oldest beyond max_alerts. SMS: final messages updated before updated_before, then
        the least recently updated final ones beyond max_alerts (open ones are never pruned); paged pairs,
        resolved marks and statuses of unknown sids recorded before updated_before. Opt-outs are kept. Returns how
        many alert records went."""

    def counts(self) -> Mapping[str, int]:
        """{"alerts": n, "notifications": n, "groups": n, "threads": n, "sms": n}."""

    # -- SMS (issue 11). Each call is one transaction; labels and annotations are refused (StoreError) as in write().

    def schedule_sms(self, messages: Sequence[SmsMessage], at: float) -> list[SmsMessage]:
        """Add the messages, each with only its alerts not yet paged to its recipient for its kind: the pairs
        (recipient, kind, alert id) are recorded at `at`, and a message left with no alert is not added. Returns the
        messages added, as added (alerts trimmed). Atomic: two callers scheduling the same occurrence for the same
        recipient at once add it once between them. A message id already stored (or twice in the call) is a
        StoreError and nothing of the call is kept."""

    def save_sms(self, messages: Sequence[SmsMessage]) -> None:
        """Insert or replace each message by id (twilio_status and error_code as given, unless a status recorded
        for its sid by record_sms_status ranks higher)."""

    def due_sms(self, now: float, *, limit: int = 100) -> list[SmsMessage]:
        """Open messages (OPEN_SMS_STATES) whose next_attempt_at <= now, earliest next_attempt_at first (then id)."""

    def open_sms(self, *, recipient: str | None = None) -> list[SmsMessage]:
        """Every open message (of the recipient when given), earliest next_attempt_at first (then id)."""

    def sms(self, sms_id: str) -> SmsMessage | None: ...

    def sms_by_sid(self, sid: str) -> SmsMessage | None: ...

    def sms_for_alert(self, alert_id: str) -> list[SmsMessage]:
        """Every message naming the occurrence, oldest created first (then id)."""

    def recent_sms(self, *, limit: int = 100) -> list[SmsMessage]:
        """Newest updated first (then id, descending)."""

    def sms_sent_times(self, since: float, *, recipient: str | None = None) -> list[float]:
        """sent_at of the messages SMS_SENT at or after `since` (of the recipient when given), ascending."""

    def record_sms_status(self, sid: str, status: str, error_code: int | None, at: float) -> SmsMessage | None:
        """Twilio's status for a message (a status callback): kept unless the one held ranks higher in
        TWILIO_STATUS_RANK (equal ranks: the later `at` wins, except that a final status, TWILIO_FINAL_RANK, is
        never replaced by another final one); error_code with it. A status for a sid no message
        has yet is kept too, and applied when save_sms stores that sid (a callback can beat the send's answer).
        Applying it sets the message's updated_at to max(updated_at, at); a status missing from TWILIO_STATUS_RANK
        ranks below all; an empty sid records nothing. Returns the message as it now is, or None when no message
        has that sid."""

    def mark_resolved(self, alert_ids: Sequence[str], at: float) -> None:
        """Remember that these occurrences were seen resolved (first time kept)."""

    def resolved_among(self, alert_ids: Sequence[str]) -> set[str]:
        """Those of the occurrences seen resolved."""

    def set_opt_out(self, recipient: str, at: float | None) -> None:
        """The recipient replied STOP at `at` (a later STOP replaces the time; None: lift it)."""

    def opt_outs(self) -> Mapping[str, float]:
        """recipient → when it opted out."""

    def close(self) -> None: ...


def open_store(url: str, *, prefix: str = "rcwebhook:", timeout_seconds: float = 0.5) -> Store:
    """The backend the URL names; StoreError when it cannot be opened (a bad path, a read-only directory, a redis://
    URL that cannot be read).

    Opening checks that the store can be written now (SQLite: creates the schema in a transaction), except Redis:
    one that does not answer yet is not an error here (each call raises StoreError until it does; RedisStore.check()
    asks now). prefix (STATE_PREFIX) and timeout_seconds (STATE_TIMEOUT_SECONDS, each call's bound) are Redis' only;
    redis-py is imported only for a redis:// or rediss:// URL."""
    if url == "memory://" or url == "memory:":
        from .memory import MemoryStore

        return MemoryStore()
    if url.startswith("sqlite:///"):
        from .sqlite import SQLiteStore

        return SQLiteStore(url[len("sqlite:///"):])
    if url.startswith(("redis://", "rediss://")):
        from .redis import RedisStore

        return RedisStore(url, prefix=prefix, timeout_seconds=timeout_seconds)
    raise StoreError(f"unknown store URL scheme in {url!r}: use sqlite:///<path>, redis://host:6379/0 or memory://")
