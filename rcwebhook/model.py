"""The relay's data model: what a webhook body means once it has been read (no I/O, no Flask)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

# The severities the relay routes by; "unknown" covers a missing or unrecognised severity label.
SEVERITIES = ("critical", "warning", "info")
UNKNOWN_SEVERITY = "unknown"

FIRING = "firing"
RESOLVED = "resolved"


@dataclass(frozen=True)
class Alert:
    """One usable alert, normalised: every label and annotation value is a string."""

    index: int  # position in the body's "alerts" list, for notes and errors
    status: str  # FIRING or RESOLVED
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: str = ""  # as sent; "" when absent
    ends_at: str = ""  # as sent; "" when absent
    generator_url: str = ""
    fingerprint: str = ""
    # Grafana's per-alert extras (raw strings, "" when absent).
    dashboard_url: str = ""
    panel_url: str = ""
    silence_url: str = ""
    value_string: str = ""


@dataclass(frozen=True)
class SkippedAlert:
    """An entry of "alerts" that carries no usable alert, and why."""

    index: int
    reason: str  # e.g. "has no labels object"


@dataclass(frozen=True)
class Notification:
    """One webhook body: a group of alerts plus the group's context."""

    alerts: tuple[Alert, ...]
    skipped: tuple[SkippedAlert, ...] = ()
    status: str = FIRING
    receiver: str = ""
    group_key: str = ""
    group_labels: Mapping[str, str] = field(default_factory=dict)
    common_labels: Mapping[str, str] = field(default_factory=dict)
    common_annotations: Mapping[str, str] = field(default_factory=dict)
    external_url: str = ""
    truncated_alerts: int = 0
    notification_reason: str = ""


@dataclass(frozen=True)
class ProblemItem:
    """One reason a body was refused, shaped like the answer's {"loc": [...], "msg": "..."} items."""

    loc: tuple[str | int, ...]
    msg: str

    def as_dict(self) -> dict:
        return {"loc": list(self.loc), "msg": self.msg}


class PayloadError(Exception):
    """A body the relay cannot deliver anything from; status is the HTTP answer (400 or 422)."""

    def __init__(self, status: int, message: str, problems: tuple[ProblemItem, ...] = ()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.problems = problems


NO_ALERTNAME = "(no alertname)"


def alert_name(alert: Alert, notification: Notification) -> str:
    """The alert's alertname; else the group's (Grafana 11 can leave it out of the alert); else NO_ALERTNAME."""
    for labels in (alert.labels, notification.group_labels, notification.common_labels):
        name = labels.get("alertname", "").strip()
        if name:
            return name
    return NO_ALERTNAME
