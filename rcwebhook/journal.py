"""The alert journal: events in, store records out (written behind, on the event thread), API documents back.

Never on a page's path: a store that cannot be written leaves delivery untouched; the journal logs ERROR once per
change of state, sets rocketchat_webhook_journal_up, keeps the unwritten records for a while, and says so.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from datetime import datetime, timezone
from typing import Callable

from .config import Config, ConfigError, redacted_state_url
from .events import AlertsReceived, NotificationAnswered, PostFinished
from .fingerprint import alert_occurrence
from .metrics import Metrics
from .model import FIRING, RESOLVED, alert_name
from .safetext import masked_number
from .store import (OPEN_SMS_STATES, AlertRecord, AlertSeen, Delivery, GroupMemory, NotificationRecord, SmsMessage,
                    Store, StoreError, WriteBatch, open_store)
from .timefmt import normalised_timestamp

logger = logging.getLogger("rcwebhook.journal")

PRUNE_INTERVAL_SECONDS = 60.0
# Records kept while the store cannot be written, so a short outage (a locked file) loses nothing; beyond, the
# oldest are dropped (and counted as failed writes).
MAX_UNWRITTEN_RECORDS = 8_000
API_DEFAULT_LIMIT = 100
API_MAX_LIMIT = 1000


def open_state(config: Config) -> tuple[Store, str]:
    """The store STATE_URL names, and "" ; or, when the default file cannot be used (a read-only file system after
    an upgrade, a pod without a volume), memory:// and why, so no running deployment breaks. A STATE_URL the user
    set that cannot be used is a ConfigError (exit 2)."""
    if config.state_is_shared:
        # Redis: opening does not wait for it; while it does not answer, this process's memory stands in.
        from .store.fallback import FallbackStore

        try:
            shared = open_store(config.state_url, prefix=config.state_prefix,
                                timeout_seconds=config.state_timeout_seconds)
        except StoreError as error:  # opening connects to nothing: only a URL redis-py cannot use lands here
            raise ConfigError(f"STATE_URL cannot be used: {error}") from None
        return FallbackStore(shared), ""
    try:
        return open_store(config.state_url), ""
    except StoreError as error:
        if not config.state_url_is_default:
            cause = str(error).removeprefix(f"{config.state_url}: ")
            raise ConfigError(f"STATE_URL={redacted_state_url(config.state_url)} cannot be used: {cause}") from None
        reason = (f"the default state file {config.state_url} cannot be used ({error}); state is kept in memory "
                  "and lost at restart: set STATE_URL or STATE_DIRECTORY to a writable place")
        logger.warning("%s", reason)
        return open_store("memory://"), reason


class JournalUnavailable(Exception):
    """The store cannot be read now."""


def rfc3339(epoch_seconds: float | None) -> str | None:
    if epoch_seconds is None:
        return None
    moment = datetime.fromtimestamp(epoch_seconds, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# Occurrence ids remembered by (fingerprint, startsAt as sent), so a post's event does not recompute what its
# alerts' intake did (a storm's post of 990 alerts spent 10 ms of the GIL on it, just as its answers went out).
MAX_REMEMBERED_OCCURRENCES = 50_000


def records_for(events: list, new_id: Callable[[], str] = lambda: secrets.token_hex(8),
                occurrences: dict | None = None) -> WriteBatch:
    """The store records a batch of events makes (pure, but for the occurrence-id memo it may be given)."""
    memo = {} if occurrences is None else occurrences
    if len(memo) > MAX_REMEMBERED_OCCURRENCES:
        memo.clear()

    def occurrence(alert) -> tuple[str, str]:
        if not alert.fingerprint:
            return alert_occurrence(alert.fingerprint, alert.labels, alert.starts_at)
        key = (alert.fingerprint, alert.starts_at)
        found = memo.get(key)
        if found is None:
            found = memo[key] = alert_occurrence(alert.fingerprint, alert.labels, alert.starts_at)
        return found

    batch = WriteBatch()
    for event in events:
        if isinstance(event, AlertsReceived):
            notification = event.notification
            for alert, severity in zip(notification.alerts, event.severities):
                alert_id, fingerprint = occurrence(alert)
                batch.alerts.append(AlertSeen(
                    alert_id, fingerprint, normalised_timestamp(alert.starts_at), normalised_timestamp(alert.ends_at),
                    alert_name(alert, notification), alert.status, severity, event.integration, dict(alert.labels),
                    dict(alert.annotations), event.received_at,
                ))
        elif isinstance(event, NotificationAnswered):
            alerts = event.notification.alerts
            batch.notifications.append(NotificationRecord(
                new_id(), event.request_id, event.integration, event.notification.group_key,
                event.notification.receiver, sum(alert.status == FIRING for alert in alerts),
                sum(alert.status == RESOLVED for alert in alerts), event.status_code, round(event.ms, 1),
                event.received_at, dict(event.destinations),
            ))
        elif isinstance(event, PostFinished):
            for alert in event.alerts:
                alert_id, _ = occurrence(alert)
                batch.deliveries.append(
                    Delivery(alert_id, event.destination, event.at, event.outcome, event.status, event.message_id)
                )
            batch.groups.extend(event.groups)
            batch.threads.extend(event.threads)
    return batch


def alert_document(record: AlertRecord, now: float, stale_after_seconds: float) -> dict:
    """One alert occurrence as GET /api/v1/alerts shows it."""
    stale = record.status == FIRING and now - record.last_received >= stale_after_seconds
    return {
        "id": record.id,
        "fingerprint": record.fingerprint,
        "alertname": record.alertname,
        "status": record.status,
        "severity": record.severity,
        "integration": record.integration,
        "labels": dict(record.labels),
        "annotations": dict(record.annotations),
        "starts_at": record.starts_at,
        "ends_at": record.ends_at,
        "first_received": rfc3339(record.first_received),
        "last_received": rfc3339(record.last_received),
        "resolved_at": rfc3339(record.resolved_at),
        "stale": stale,
        "deliveries": [
            {"destination": delivery.destination, "at": rfc3339(delivery.at), "outcome": delivery.outcome,
             "status": delivery.status, "message_id": delivery.message_id}
            for delivery in record.deliveries
        ],
    }


def sms_document(message: SmsMessage) -> dict:
    """One SMS as the API and the status page show it: the recipient by its last three digits only."""
    return {
        "id": message.id,
        "destination": message.destination,
        "recipient": masked_number(message.recipient),
        "kind": message.kind,
        "status": message.status,
        "alerts": [{"id": alert.id, "alertname": alert.alertname} for alert in message.alerts],
        "tier": message.tier,
        "attempts": message.attempts,
        "created": rfc3339(message.created_at),
        "due": rfc3339(message.due_at),
        "next_attempt": rfc3339(message.next_attempt_at) if message.status in OPEN_SMS_STATES else None,
        "sent_at": rfc3339(message.sent_at),
        "segments": message.segments,
        "sid": message.sid,
        "twilio_status": message.twilio_status,
        "error_code": message.error_code,
        "reason": message.reason,
        "digest_id": message.digest_id,
    }


def notification_document(record: NotificationRecord) -> dict:
    return {
        "id": record.id,
        "request_id": record.request_id,
        "integration": record.integration,
        "group_key": record.group_key,
        "receiver": record.receiver,
        "alerts": {"firing": record.firing, "resolved": record.resolved},
        "status_code": record.status_code,
        "ms": record.ms,
        "received": rfc3339(record.received),
        "destinations": dict(record.destinations),
    }


# Alert records per write on Redis: about 50 µs of Redis time each, so a backlog written at once would outlast
# STATE_TIMEOUT_SECONDS (and hold up every replica's pacing script meanwhile).
REDIS_ALERTS_PER_WRITE = 1_000


def write_parts(batch: WriteBatch, max_alerts: int | None) -> list[WriteBatch]:
    """The batch in parts of at most max_alerts alert records, the rest (deliveries, notifications, memory) with
    the last, so each delivery finds its alert written (None: one part)."""
    if max_alerts is None or len(batch.alerts) <= max_alerts:
        return [batch]
    parts = [WriteBatch(alerts=batch.alerts[start:start + max_alerts])
             for start in range(0, len(batch.alerts) - max_alerts, max_alerts)]
    last = len(parts) * max_alerts
    parts.append(WriteBatch(batch.alerts[last:], batch.deliveries, batch.notifications, batch.groups, batch.threads))
    return parts


class Journal:
    """Writes events to the store behind delivery and reads them back for the API and the status page."""

    def __init__(self, store: Store, config: Config, metrics: Metrics, *, fallback_reason: str = "",
                 wall_clock: Callable[[], float] = time.time):
        self.store = store
        self.config = config
        self.metrics = metrics
        self.wall_clock = wall_clock
        self.fallback_reason = fallback_reason  # why the default SQLite file is not used ("" when it is)
        self.available = True
        self.detail = ""
        self.unwritten = WriteBatch()
        self.occurrences: dict = {}  # records_for's memo (the event thread's alone)
        self.next_prune_at = 0.0
        self.lock = threading.Lock()  # state flags, read by the status page while the event thread writes
        self.max_alerts_per_write = REDIS_ALERTS_PER_WRITE if config.state_is_shared else None
        metrics.journal_up.set(1)

    # -- writing (the event thread) -------------------------------------------------------------------------------

    def on_events(self, events: list) -> None:
        batch = records_for(events, occurrences=self.occurrences)
        pending = self._with_unwritten(batch)
        if not pending:
            return
        try:
            for part in write_parts(pending, self.max_alerts_per_write):
                self.store.write(part)
        except StoreError as error:
            self.unwritten = self._bounded(pending)
            self.metrics.journal_write_failures.inc()
            self._set_available(False, str(error))
            return
        self.unwritten = WriteBatch()
        self._set_available(True, "")
        self._maybe_prune()

    def _with_unwritten(self, batch: WriteBatch) -> WriteBatch:
        if not self.unwritten:
            return batch
        kept = self.unwritten
        return WriteBatch(kept.alerts + batch.alerts, kept.deliveries + batch.deliveries,
                          kept.notifications + batch.notifications, kept.groups + batch.groups,
                          kept.threads + batch.threads)

    @staticmethod
    def _bounded(batch: WriteBatch) -> WriteBatch:
        share = MAX_UNWRITTEN_RECORDS // 4  # per kind of record
        return WriteBatch(batch.alerts[-share:], batch.deliveries[-share:], batch.notifications[-share:],
                          batch.groups[-share:], batch.threads[-share:])

    def _set_available(self, available: bool, detail: str) -> None:
        with self.lock:
            changed = available != self.available
            self.available = available
            if available:
                self.detail = ""
            elif changed:
                self.detail = f"writes failing since {rfc3339(self.wall_clock())}: {detail}"
        self.metrics.journal_up.set(1 if available else 0)
        if changed and not available:
            logger.error("the journal cannot be written (%s): delivery goes on; the status page and /api/v1 show "
                         "what was written before", detail)
        elif changed:
            logger.warning("the journal can be written again (%s)", self.store.description)

    def _maybe_prune(self) -> None:
        now = self.wall_clock()
        if now < self.next_prune_at:
            return
        self.next_prune_at = now + PRUNE_INTERVAL_SECONDS
        try:
            pruned = self.store.prune(
                updated_before=now - self.config.state_retention_seconds, max_alerts=self.config.state_max_alerts,
                groups_finished_before=now - self.config.dedup_window_seconds,
            )
        except StoreError as error:
            self._set_available(False, str(error))
            return
        if pruned:
            self.metrics.journal_records_pruned.inc(pruned)
            logger.info("journal: forgot %d alert record(s) past retention", pruned)

    # -- reading (request threads) --------------------------------------------------------------------------------

    def load_groups(self) -> list[GroupMemory]:
        """The de-duplication memory still within its window, for the queues at start."""
        try:
            return self.store.load_groups(self.wall_clock() - self.config.dedup_window_seconds)
        except StoreError as error:
            logger.error("could not read the de-duplication memory back (%s): starting without it", error)
            return []

    def load_threads(self) -> list:
        """The threads' messages within retention (ROCKETCHAT_THREADS), for the dispatcher at start."""
        try:
            return self.store.load_threads(self.wall_clock() - self.config.state_retention_seconds)
        except StoreError as error:
            logger.error("could not read the threads' message ids back (%s): starting without them; resolved "
                         "alerts of earlier messages go to the channel", error)
            return []

    def threads_since(self, since: float) -> list:
        """Thread messages recorded since a time (replicas follow each other's threads); [] when unreadable."""
        try:
            return self.store.load_threads(since)
        except StoreError:
            return []

    def _read(self, read: Callable[[], object]):
        try:
            return read()
        except StoreError as error:
            raise JournalUnavailable(str(error)) from None

    def alerts(self, *, status: str | None = None, severity: str | None = None, integration: str | None = None,
               limit: int = API_DEFAULT_LIMIT, newest_by: str = "first_received") -> list[dict]:
        records = self._read(lambda: self.store.alerts(status=status, severity=severity, integration=integration,
                                                       limit=limit, newest_by=newest_by))
        now = self.wall_clock()
        return [alert_document(record, now, self.config.stale_after_seconds) for record in records]

    def alert(self, alert_id: str) -> dict | None:
        record = self._read(lambda: self.store.alert(alert_id))
        if record is None:
            return None
        document = alert_document(record, self.wall_clock(), self.config.stale_after_seconds)
        document["sms"] = [sms_document(message) for message in self._read(lambda: self.store.sms_for_alert(alert_id))]
        return document

    def sms(self, *, limit: int = API_DEFAULT_LIMIT) -> dict:
        """The latest SMS, how many wait, and who opted out (masked), for GET /api/v1/sms and the status page."""
        recent = self._read(lambda: self.store.recent_sms(limit=limit))
        waiting = self._read(lambda: self.store.open_sms())
        opt_outs = self._read(lambda: self.store.opt_outs())
        return {
            "sms": [sms_document(message) for message in recent],
            "pending": len(waiting),
            "opted_out": [{"recipient": masked_number(recipient), "since": rfc3339(at)}
                          for recipient, at in sorted(opt_outs.items(), key=lambda item: item[1])],
        }

    def notifications(self, *, limit: int = API_DEFAULT_LIMIT) -> list[dict]:
        return [notification_document(record) for record in self._read(lambda: self.store.notifications(limit=limit))]

    def state(self) -> dict:
        with self.lock:
            available, detail = self.available, self.detail
        return {"available": available, "store": self.store.description, "fallback": bool(self.fallback_reason),
                "detail": detail or self.fallback_reason}
