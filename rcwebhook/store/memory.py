"""The memory:// store: everything in the process behind one lock, bounded only by prune()."""

from __future__ import annotations

import dataclasses
import heapq
import json
import threading
from typing import Iterable, Mapping, Sequence

from . import (
    MAX_DELIVERIES_PER_ALERT, OPEN_SMS_STATES, SMS_SENT, TWILIO_FINAL_RANK, TWILIO_STATUS_RANK, AlertRecord, AlertSeen, GroupMemory,
    NotificationRecord, SmsMessage, StoreError, ThreadMessage, WriteBatch,
)


def checked_mapping(mapping: Mapping) -> dict:
    """A copy of the mapping, refused (TypeError, ValueError) when a durable store could not serialise it.

    The memory store refuses what the SQLite one cannot keep, so a batch behaves the same on either."""
    copy = dict(mapping)
    json.dumps(copy, ensure_ascii=True, allow_nan=False)
    return copy


def checked_sms(message: SmsMessage) -> SmsMessage:
    """The message with copies of its alerts' labels and annotations (refused as checked_mapping refuses) and its
    alerts as a tuple, so that a caller changing its mappings later does not change what is stored."""
    alerts = tuple(dataclasses.replace(alert, labels=checked_mapping(alert.labels),
                                       annotations=checked_mapping(alert.annotations)) for alert in message.alerts)
    return dataclasses.replace(message, alerts=alerts)


@dataclasses.dataclass(frozen=True)
class RecordedStatus:
    """Twilio's latest status callback for a sid (as the SQLite store's sms_statuses row)."""

    status: str
    error_code: int | None
    at: float


def twilio_rank(status: str) -> int:
    """The status's place in TWILIO_STATUS_RANK; one Twilio adds later (or "" before any) ranks below them all."""
    return TWILIO_STATUS_RANK.get(status, 0)


def moves_forward(status: str, held_status: str) -> bool:
    """Whether a status may replace the one held: it ranks higher, or alike and the held one is not final (a final
    status is kept: Twilio sends one per message, so a second is a replayed callback)."""
    rank, held_rank = twilio_rank(status), twilio_rank(held_status)
    return rank > held_rank or (rank == held_rank and held_rank < TWILIO_FINAL_RANK)


def supersedes(status: str, at: float, held: RecordedStatus | None) -> bool:
    """Whether a status callback replaces the one recorded for its sid: it moves forward and, when it ranks alike,
    is not older."""
    if held is None:
        return True
    return moves_forward(status, held.status) and (twilio_rank(status) > twilio_rank(held.status) or at >= held.at)


def with_recorded_status(message: SmsMessage, recorded: RecordedStatus | None) -> SmsMessage:
    """The message as save_sms stores it: the recorded status (a callback that beat this save) when it ranks higher."""
    if recorded is None or twilio_rank(recorded.status) <= twilio_rank(message.twilio_status):
        return message
    return dataclasses.replace(message, twilio_status=recorded.status, error_code=recorded.error_code)


def upserted(record: AlertRecord | None, seen: AlertSeen) -> AlertRecord:
    """The occurrence's record once the alert as seen is applied to it (the rules of Store.write)."""
    labels, annotations = checked_mapping(seen.labels), checked_mapping(seen.annotations)
    if record is None:
        return AlertRecord(
            id=seen.id, fingerprint=seen.fingerprint, alertname=seen.alertname, status=seen.status,
            severity=seen.severity, integration=seen.integration, labels=labels, annotations=annotations,
            starts_at=seen.starts_at, ends_at=seen.ends_at, first_received=seen.received_at,
            last_received=seen.received_at, resolved_at=seen.received_at if seen.status == "resolved" else None,
            updated_at=seen.received_at,
        )
    times = dict(
        first_received=min(record.first_received, seen.received_at),
        last_received=max(record.last_received, seen.received_at),
        updated_at=max(record.updated_at, seen.received_at),
    )
    if seen.received_at < record.last_received:  # an older copy arriving late
        return dataclasses.replace(record, **times)
    if seen.status == "resolved":
        resolved_at = record.resolved_at if record.resolved_at is not None else seen.received_at
    else:
        resolved_at = None
    return dataclasses.replace(
        record, **times, alertname=seen.alertname, status=seen.status, severity=seen.severity,
        integration=seen.integration, labels=labels, annotations=annotations, ends_at=seen.ends_at,
        resolved_at=resolved_at,
    )


def _by_next_attempt(message: SmsMessage) -> tuple[float, str]:
    return message.next_attempt_at, message.id


def _by_creation(message: SmsMessage) -> tuple[float, str]:
    return message.created_at, message.id


class MemoryStore:
    """Every record in dicts of frozen records; a write stages its changes and applies them only when all built."""

    description = "memory://"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._alerts: dict[str, AlertRecord] = {}
        self._notifications: dict[str, NotificationRecord] = {}
        self._groups: dict[tuple[str, bytes], GroupMemory] = {}
        self._threads: dict[tuple[str, str], ThreadMessage] = {}
        self._sms: dict[str, SmsMessage] = {}
        self._paged: dict[tuple[str, str, str], float] = {}  # (recipient, kind, alert id) → when it was scheduled
        self._resolved: dict[str, float] = {}  # alert id → when first seen resolved
        self._statuses: dict[str, RecordedStatus] = {}  # sid → Twilio's latest callback
        self._opt_outs: dict[str, float] = {}
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self.description}: the store is closed")

    def write(self, batch: WriteBatch) -> None:
        with self._lock:
            self._check_open()
            try:
                alerts = self._staged_alerts(batch)
                notifications = [
                    dataclasses.replace(record, destinations=checked_mapping(record.destinations))
                    for record in batch.notifications
                ]
                groups = [dataclasses.replace(memory, group_id=bytes(memory.group_id),
                                              dedup_key=bytes(memory.dedup_key)) for memory in batch.groups]
            except (TypeError, ValueError) as error:
                raise StoreError(f"{self.description}: a record cannot be stored: {error}") from error
            # Nothing below can fail: the batch goes in whole or not at all.
            self._alerts.update(alerts)
            self._notifications.update((record.id, record) for record in notifications)
            self._groups.update(((memory.hook_key, memory.group_id), memory) for memory in groups)
            for thread in batch.threads:
                self._threads.setdefault((thread.hook_key, thread.alert_id), thread)

    def _staged_alerts(self, batch: WriteBatch) -> dict[str, AlertRecord]:
        staged: dict[str, AlertRecord] = {}
        for seen in batch.alerts:
            staged[seen.id] = upserted(staged.get(seen.id) or self._alerts.get(seen.id), seen)
        for delivery in batch.deliveries:
            record = staged.get(delivery.alert_id) or self._alerts.get(delivery.alert_id)
            if record is None:
                continue  # its record was pruned (or never written): nothing to attach it to
            staged[delivery.alert_id] = dataclasses.replace(
                record, updated_at=max(record.updated_at, delivery.at),
                deliveries=(record.deliveries + (delivery,))[-MAX_DELIVERIES_PER_ALERT:],
            )
        return staged

    def load_groups(self, finished_since: float) -> list[GroupMemory]:
        with self._lock:
            self._check_open()
            found = [memory for memory in self._groups.values() if memory.finished_at >= finished_since]
        return sorted(found, key=lambda memory: (memory.finished_at, memory.hook_key, memory.group_id))

    def load_threads(self, since: float) -> list[ThreadMessage]:
        with self._lock:
            self._check_open()
            found = [thread for thread in self._threads.values() if thread.at >= since]
        return sorted(found, key=lambda thread: (thread.at, thread.hook_key, thread.alert_id))

    def alerts(
        self, *, status: str | None = None, severity: str | None = None, integration: str | None = None,
        limit: int = 100, newest_by: str = "first_received",
    ) -> list[AlertRecord]:
        if newest_by not in ("first_received", "resolved_at"):
            raise StoreError(f"cannot order alerts by {newest_by!r}")
        wanted = {name: value for name, value in
                  (("status", status), ("severity", severity), ("integration", integration)) if value is not None}
        with self._lock:
            self._check_open()
            found = [record for record in self._alerts.values()
                     if all(getattr(record, name) == value for name, value in wanted.items())]
        if newest_by == "resolved_at":  # never resolved: last, as SQLite sorts NULLs in a descending order
            return heapq.nlargest(max(limit, 0), found, key=lambda record: (
                record.resolved_at is not None, record.resolved_at or 0.0, record.id))
        return heapq.nlargest(max(limit, 0), found, key=lambda record: (record.first_received, record.id))

    def alert(self, alert_id: str) -> AlertRecord | None:
        with self._lock:
            self._check_open()
            return self._alerts.get(alert_id)

    def notifications(self, *, limit: int = 100) -> list[NotificationRecord]:
        with self._lock:
            self._check_open()
            found = list(self._notifications.values())
        return heapq.nlargest(max(limit, 0), found, key=lambda record: (record.received, record.id))

    def prune(self, *, updated_before: float, max_alerts: int, groups_finished_before: float) -> int:
        keep = max(max_alerts, 0)
        with self._lock:
            self._check_open()
            alerts = {key: record for key, record in self._alerts.items() if record.updated_at >= updated_before}
            if len(alerts) > keep:
                newest = heapq.nlargest(keep, alerts.values(), key=lambda record: (record.updated_at, record.id))
                alerts = {record.id: record for record in newest}
            notifications = {key: record for key, record in self._notifications.items()
                             if record.received >= updated_before}
            if len(notifications) > keep:
                newest = heapq.nlargest(keep, notifications.values(), key=lambda record: (record.received, record.id))
                notifications = {record.id: record for record in newest}
            gone = len(self._alerts) - len(alerts)
            self._alerts, self._notifications = alerts, notifications
            self._groups = {key: memory for key, memory in self._groups.items()
                            if memory.finished_at >= groups_finished_before}
            threads = [thread for thread in self._threads.values() if thread.at >= updated_before]
            threads = heapq.nlargest(keep, threads, key=lambda thread: thread.at) if len(threads) > keep else threads
            self._threads = {(thread.hook_key, thread.alert_id): thread for thread in threads}
            self._prune_sms(updated_before, keep)
        return gone

    def _prune_sms(self, updated_before: float, keep: int) -> None:
        final = [message for message in self._sms.values()
                 if message.status not in OPEN_SMS_STATES and message.updated_at >= updated_before]
        if len(final) > keep:
            final = heapq.nlargest(keep, final, key=lambda message: (message.updated_at, message.id))
        kept = [message for message in self._sms.values() if message.status in OPEN_SMS_STATES] + final
        self._sms = {message.id: message for message in kept}
        self._paged = {key: at for key, at in self._paged.items() if at >= updated_before}
        self._resolved = {key: at for key, at in self._resolved.items() if at >= updated_before}
        known = {message.sid for message in self._sms.values()}
        self._statuses = {sid: recorded for sid, recorded in self._statuses.items()
                          if sid in known or recorded.at >= updated_before}

    def counts(self) -> Mapping[str, int]:
        with self._lock:
            self._check_open()
            return {"alerts": len(self._alerts), "notifications": len(self._notifications),
                    "groups": len(self._groups), "threads": len(self._threads), "sms": len(self._sms)}

    # -- SMS

    def schedule_sms(self, messages: Sequence[SmsMessage], at: float) -> list[SmsMessage]:
        with self._lock:
            self._check_open()
            checked = self._checked_all(messages)
            paged: dict[tuple[str, str, str], float] = {}  # this call's pairs: staged with its messages
            added: list[SmsMessage] = []
            for message in checked:
                fresh = []
                for alert in message.alerts:
                    pair = (message.recipient, message.kind, alert.id)
                    if pair not in self._paged and pair not in paged:
                        paged[pair] = at
                        fresh.append(alert)
                if fresh:
                    added.append(dataclasses.replace(message, alerts=tuple(fresh)))
            staged = self._staged_sms(added)
            if len(staged) < len(added) or any(message.id in self._sms for message in added):
                raise StoreError(f"{self.description}: an SMS with this id is already stored")  # as SQLite's key
            self._paged.update(paged)
            self._sms.update(staged)
            return list(staged.values())

    def save_sms(self, messages: Sequence[SmsMessage]) -> None:
        with self._lock:
            self._check_open()
            self._sms.update(self._staged_sms(self._checked_all(messages)))

    def _checked_all(self, messages: Iterable[SmsMessage]) -> list[SmsMessage]:
        try:
            return [checked_sms(message) for message in messages]
        except (TypeError, ValueError) as error:
            raise StoreError(f"{self.description}: a record cannot be stored: {error}") from error

    def _staged_sms(self, messages: Iterable[SmsMessage]) -> dict[str, SmsMessage]:
        """The messages by id as stored: a status callback that came before the save ranks over the one given."""
        return {message.id: with_recorded_status(message, self._statuses.get(message.sid) if message.sid else None)
                for message in messages}

    def _found_sms(self, wanted, key, *, limit: int | None = None, newest: bool = False) -> list[SmsMessage]:
        """The stored messages for which wanted(message) holds, sorted by key (the first `limit` of them)."""
        with self._lock:
            self._check_open()
            found = [message for message in self._sms.values() if wanted(message)]
        if limit is None:
            return sorted(found, key=key, reverse=newest)
        pick = heapq.nlargest if newest else heapq.nsmallest
        return pick(max(limit, 0), found, key=key)

    def due_sms(self, now: float, *, limit: int = 100) -> list[SmsMessage]:
        return self._found_sms(lambda message: message.status in OPEN_SMS_STATES and message.next_attempt_at <= now,
                               _by_next_attempt, limit=limit)

    def open_sms(self, *, recipient: str | None = None) -> list[SmsMessage]:
        return self._found_sms(lambda message: message.status in OPEN_SMS_STATES and recipient in (
            None, message.recipient), _by_next_attempt)

    def sms(self, sms_id: str) -> SmsMessage | None:
        with self._lock:
            self._check_open()
            return self._sms.get(sms_id)

    def sms_by_sid(self, sid: str) -> SmsMessage | None:
        with self._lock:
            self._check_open()
            return self._first_with_sid(sid)

    def _first_with_sid(self, sid: str) -> SmsMessage | None:
        """The oldest message with the sid (a sid is Twilio's, so one at most; "" is no sid)."""
        with_sid = [message for message in self._sms.values() if sid and message.sid == sid]
        return min(with_sid, key=_by_creation, default=None)

    def sms_for_alert(self, alert_id: str) -> list[SmsMessage]:
        return self._found_sms(lambda message: any(alert.id == alert_id for alert in message.alerts), _by_creation)

    def recent_sms(self, *, limit: int = 100) -> list[SmsMessage]:
        return self._found_sms(lambda message: True, lambda message: (message.updated_at, message.id), limit=limit,
                               newest=True)

    def sms_sent_times(self, since: float, *, recipient: str | None = None) -> list[float]:
        sent = self._found_sms(lambda message: message.status == SMS_SENT and message.sent_at is not None
                               and message.sent_at >= since and recipient in (None, message.recipient),
                               lambda message: message.sent_at)
        return [message.sent_at for message in sent]

    def record_sms_status(self, sid: str, status: str, error_code: int | None, at: float) -> SmsMessage | None:
        with self._lock:
            self._check_open()
            if not sid:
                return None  # not a Twilio sid: nothing to apply it to, ever
            if supersedes(status, at, self._statuses.get(sid)):
                self._statuses[sid] = RecordedStatus(status, error_code, at)
                for message in [message for message in self._sms.values() if message.sid == sid]:
                    if moves_forward(status, message.twilio_status):  # never moves a message back
                        self._sms[message.id] = dataclasses.replace(
                            message, twilio_status=status, error_code=error_code,
                            updated_at=max(message.updated_at, at))
            return self._first_with_sid(sid)

    def mark_resolved(self, alert_ids: Sequence[str], at: float) -> None:
        with self._lock:
            self._check_open()
            for alert_id in alert_ids:
                self._resolved.setdefault(alert_id, at)

    def resolved_among(self, alert_ids: Sequence[str]) -> set[str]:
        with self._lock:
            self._check_open()
            return {alert_id for alert_id in alert_ids if alert_id in self._resolved}

    def set_opt_out(self, recipient: str, at: float | None) -> None:
        with self._lock:
            self._check_open()
            if at is None:
                self._opt_outs.pop(recipient, None)
            else:  # a later STOP (a retry refused again) replaces the earlier: the wait starts anew from it
                self._opt_outs[recipient] = at

    def opt_outs(self) -> Mapping[str, float]:
        with self._lock:
            self._check_open()
            return dict(self._opt_outs)

    def close(self) -> None:
        with self._lock:
            self._closed = True
