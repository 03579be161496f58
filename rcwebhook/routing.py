"""Which alerts go to which hook, and the messages each hook gets (pure: no I/O)."""

from __future__ import annotations

from .config import Config
from .delivery import PlannedMessage
from .formatting import FormatOptions, build_message, build_plain_text_message, classify_severity
from .model import SEVERITIES, UNKNOWN_SEVERITY, Notification


def format_options(config: Config) -> FormatOptions:
    return FormatOptions(
        severity_label=config.severity_label,
        mentions=dict(config.mentions),
        alias=config.alias,
        emoji=config.emoji,
        avatar_url=config.avatar_url,
    )


def plan_messages(notification: Notification, config: Config, options: FormatOptions) -> list[PlannedMessage]:
    """One message per hook that this notification's alerts reach, hooks in severity order."""
    alerts_by_url: dict[str, list] = {}
    destination_by_url = {}
    # Visiting severities in order makes the critical hook's message go first.
    for severity in (*SEVERITIES, UNKNOWN_SEVERITY):
        destination = config.routes[severity]
        destination_by_url.setdefault(destination.url, destination)
        alerts_by_url.setdefault(destination.url, [])
    for alert in notification.alerts:
        severity = classify_severity(alert.labels, config.severity_label)
        alerts_by_url[config.routes[severity].url].append(alert)
    return [
        PlannedMessage(
            destination_by_url[url],
            tuple(alerts),
            build_message(notification, alerts, options),
            build_plain_text_message(notification, alerts, options),
        )
        for url, alerts in alerts_by_url.items()
        if alerts
    ]
