"""Which alerts go to which hook (pure: no I/O)."""

from __future__ import annotations

from .config import Config, Destination
from .formatting import FormatOptions, classify_severity
from .model import SEVERITIES, UNKNOWN_SEVERITY, Alert, Notification


def format_options(config: Config) -> FormatOptions:
    return FormatOptions(
        severity_label=config.severity_label,
        mentions=dict(config.mentions),
        alias=config.alias,
        emoji=config.emoji,
        avatar_url=config.avatar_url,
    )


def route_alerts(notification: Notification, config: Config) -> list[tuple[Destination, list[Alert]]]:
    """Each hook this notification's alerts reach, with its alerts; hooks in severity order, critical first."""
    alerts_by_url: dict[str, list[Alert]] = {}
    for severity in (*SEVERITIES, UNKNOWN_SEVERITY):
        alerts_by_url.setdefault(config.routes[severity].url, [])
    for alert in notification.alerts:
        severity = classify_severity(alert.labels, config.severity_label)
        alerts_by_url[config.routes[severity].url].append(alert)
    destination_by_url = {destination.url: destination for destination in config.routes.values()}
    return [(destination_by_url[url], alerts) for url, alerts in alerts_by_url.items() if alerts]
