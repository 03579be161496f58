"""Merging several notifications for one hook into one message's worth of alerts (pure: no I/O)."""

from __future__ import annotations

from dataclasses import replace
from typing import Hashable, Sequence

from .model import FIRING, NO_ALERTNAME, RESOLVED, Alert, Notification, SkippedAlert, alert_name
from .timefmt import is_unset


def alert_identity(alert: Alert) -> Hashable:
    """What makes two alerts the same alert: Alertmanager's fingerprint, else the whole label set."""
    if alert.fingerprint:
        return ("fingerprint", alert.fingerprint)
    return ("labels", tuple(sorted(alert.labels.items())))


def is_stale(candidate: Alert, known_status: str, known_starts_at: str) -> bool:
    """A FIRING of an occurrence just seen RESOLVED is stale: a copy that arrived out of order must not win.

    Only a real startsAt shows that two alerts are the same occurrence; without one (hand-written bodies), a
    FIRING after a RESOLVED is taken as new.
    """
    return (
        candidate.status == FIRING
        and known_status == RESOLVED
        and not is_unset(candidate.starts_at)
        and candidate.starts_at == known_starts_at
    )


def newest_alerts(parts: Sequence[tuple[Notification, Sequence[Alert]]]) -> list[tuple[Notification, Alert]]:
    """Every distinct alert once, in its newest state: the later arrival, unless it is a stale FIRING."""
    chosen: dict[Hashable, tuple[Notification, Alert]] = {}
    for notification, alerts in parts:
        for alert in alerts:
            identity = alert_identity(alert)
            previous = chosen.get(identity)
            if previous is not None and is_stale(alert, previous[1].status, previous[1].starts_at):
                continue
            chosen.pop(identity, None)  # re-inserted last: a newer state moves to its arrival position
            chosen[identity] = (notification, alert)
    return list(chosen.values())


def merge_notifications(parts: Sequence[tuple[Notification, Sequence[Alert]]]) -> tuple[Notification, list[Alert]]:
    """One notification standing for several groups, and its alerts (each alert's own group context kept)."""
    if len(parts) == 1:
        notification, alerts = parts[0]
        return notification, list(alerts)
    merged_alerts = []
    for notification, alert in newest_alerts(parts):
        name = alert_name(alert, notification)
        if "alertname" not in alert.labels and name != NO_ALERTNAME:
            # The merged message has no group labels to fall back on: carry the group's alertname on the alert.
            alert = replace(alert, labels={**alert.labels, "alertname": name})
        merged_alerts.append(alert)
    external_urls = [notification.external_url for notification, _ in parts if notification.external_url]
    skipped = [entry for notification, _ in parts for entry in notification.skipped]
    merged = Notification(
        alerts=tuple(merged_alerts),
        skipped=tuple(SkippedAlert(entry.index, entry.reason) for entry in skipped),
        status=FIRING if any(alert.status == FIRING for alert in merged_alerts) else RESOLVED,
        external_url=external_urls[0] if external_urls else "",
        truncated_alerts=sum(notification.truncated_alerts for notification, _ in parts),
    )
    return merged, merged_alerts
