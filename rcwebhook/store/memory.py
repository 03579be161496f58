"""The memory:// store: everything in the process behind one lock, bounded only by prune()."""

from __future__ import annotations

import dataclasses
import heapq
import json
import threading
from typing import Mapping

from . import (
    MAX_DELIVERIES_PER_ALERT, AlertRecord, AlertSeen, GroupMemory, NotificationRecord, StoreError, ThreadMessage,
    WriteBatch,
)


def checked_mapping(mapping: Mapping) -> dict:
    """A copy of the mapping, refused (TypeError, ValueError) when a durable store could not serialise it.

    The memory store refuses what the SQLite one cannot keep, so a batch behaves the same on either."""
    copy = dict(mapping)
    json.dumps(copy, ensure_ascii=True, allow_nan=False)
    return copy


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


class MemoryStore:
    """Every record in dicts of frozen records; a write stages its changes and applies them only when all built."""

    description = "memory://"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._alerts: dict[str, AlertRecord] = {}
        self._notifications: dict[str, NotificationRecord] = {}
        self._groups: dict[tuple[str, bytes], GroupMemory] = {}
        self._threads: dict[tuple[str, str], ThreadMessage] = {}
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
        return gone

    def counts(self) -> Mapping[str, int]:
        with self._lock:
            self._check_open()
            return {"alerts": len(self._alerts), "notifications": len(self._notifications),
                    "groups": len(self._groups), "threads": len(self._threads)}

    def close(self) -> None:
        with self._lock:
            self._closed = True
