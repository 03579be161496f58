"""Rocket.Chat attachments for alerts: one colour-coded attachment per alert, compact summaries for the rest."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from typing import Mapping, Sequence
from urllib.parse import quote, urlsplit, urlunsplit

from .model import NO_ALERTNAME, RESOLVED, UNKNOWN_SEVERITY, Alert, Notification, alert_name  # noqa: F401 - re-exported
from .safetext import cut_chars, display_text, is_http_url, markdown_link
from .timefmt import display_timestamp, duration_between

# Starting limits of one attachment's parts (code points); build_message halves them while a message is too large.
MAX_TITLE_CHARS = 250
MAX_ATTACHMENT_TEXT_CHARS = 2000
MAX_FIELD_VALUE_CHARS = 500
# Longer URLs are left out rather than cut: a cut URL leads nowhere.
MAX_URL_CHARS = 2000
# Name and instance of a folded alert, each, in a summary attachment.
MAX_FOLDED_ENTRY_CHARS = 100
# No limit is halved below this.
MIN_LIMIT_CHARS = 16

FIRING_COLORS: Mapping[str, str] = {
    "critical": "#d9534f",  # red
    "warning": "#f0ad4e",  # orange
    "info": "#5bc0de",  # blue
    UNKNOWN_SEVERITY: "#9e9e9e",  # grey
}
RESOLVED_COLOR = "#5cb85c"  # green, whatever the severity was

# Prometheus's classic label name syntax; other names must be quoted in an Alertmanager matcher.
_CLASSIC_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


@dataclass(frozen=True)
class AttachmentLimits:
    """Length limits for one build of a message's attachments."""

    title_chars: int = MAX_TITLE_CHARS
    text_chars: int = MAX_ATTACHMENT_TEXT_CHARS
    field_value_chars: int = MAX_FIELD_VALUE_CHARS
    url_chars: int = MAX_URL_CHARS
    folded_entry_chars: int = MAX_FOLDED_ENTRY_CHARS
    max_folded_entries: int | None = None  # distinct entries a summary lists; None lists every one

    def halved(self) -> AttachmentLimits:
        """Every character limit halved, none below MIN_LIMIT_CHARS."""
        halved_limits = {
            limit.name: max(getattr(self, limit.name) // 2, MIN_LIMIT_CHARS)
            for limit in fields(self)
            if limit.name.endswith("_chars")
        }
        return replace(self, **halved_limits)


def alert_color(status: str, severity: str) -> str:
    """The attachment's left-border colour: green when resolved, else the severity's colour."""
    return RESOLVED_COLOR if status == RESOLVED else FIRING_COLORS.get(severity, FIRING_COLORS[UNKNOWN_SEVERITY])


def annotation(annotations: Mapping[str, str], name: str) -> tuple[str, str]:
    """(key, value) of the non-blank annotation called name in any case, the exact spelling first; ("", "") if none."""
    if annotations.get(name, "").strip():
        return name, annotations[name]
    for key, value in annotations.items():
        if key.lower() == name and value.strip():
            return key, value
    return "", ""


def usable_url(url: str, max_chars: int) -> bool:
    """True for an http(s) URL with a host that is short enough to send whole."""
    return len(url) <= max_chars and is_http_url(url)


def alert_attachment(
    alert: Alert, severity: str, severity_label: str, notification: Notification, limits: AttachmentLimits
) -> dict:
    """The full attachment of one alert: colour, title and link, summary and description, fields."""
    title = f"{alert.status.upper()}: {alert_name(alert, notification)}"
    instance = alert.labels.get("instance", "").strip()
    if instance:
        title += f" on {instance}"
    attachment: dict = {
        "color": alert_color(alert.status, severity),
        "title": display_text(title, limits.title_chars, single_line=True),
    }
    if usable_url(alert.generator_url, limits.url_chars):
        attachment["title_link"] = alert.generator_url
    text, shown_keys = _alert_text(alert.annotations, limits)
    if text:
        attachment["text"] = text
    alert_fields = _alert_fields(alert, severity_label, notification, limits, shown_keys)
    if alert_fields:
        attachment["fields"] = alert_fields
    return attachment


def _alert_text(annotations: Mapping[str, str], limits: AttachmentLimits) -> tuple[str, set[str]]:
    """The bold summary line and the description (or message), and the annotation keys they show."""
    summary_key, summary = annotation(annotations, "summary")
    body_key, body = annotation(annotations, "description")
    if not body:
        body_key, body = annotation(annotations, "message")
    parts = []
    if summary:
        line = display_text(summary, limits.field_value_chars, single_line=True)
        # Rocket.Chat bolds *text*; an asterisk inside would end the bold early, so such a summary stays plain.
        parts.append(line if "*" in line else f"*{line}*")
    if body:
        parts.append(display_text(body, limits.text_chars))
    return cut_chars("\n".join(parts), limits.text_chars), {key for key in (summary_key, body_key) if key}


def _alert_fields(
    alert: Alert, severity_label: str, notification: Notification, limits: AttachmentLimits, shown_keys: set[str]
) -> list[dict]:
    """Severity, instance, service or job, times, value, the other labels and annotations, links."""
    labels = alert.labels
    alert_fields: list[dict] = []

    def add(title: str, value: str, short: bool) -> None:
        shown = display_text(value, limits.field_value_chars, single_line=short)
        if shown:  # Rocket.Chat refuses a field without a value
            alert_fields.append({"short": short, "title": title, "value": shown})

    add("Severity", labels.get(severity_label, "").strip() or UNKNOWN_SEVERITY, True)
    add("Instance", labels.get("instance", ""), True)
    service_key = next((key for key in ("service", "job") if labels.get(key, "").strip()), "")
    if service_key:
        add(service_key.capitalize(), labels[service_key], True)
    add("Started", display_timestamp(alert.starts_at), True)
    if alert.status == RESOLVED:
        add("Ended", display_timestamp(alert.ends_at), True)
        add("Duration", duration_between(alert.starts_at, alert.ends_at), True)
    add("Value", alert.value_string, False)

    part_chars = max(limits.field_value_chars // 4, MIN_LIMIT_CHARS)
    shown_labels = {"alertname", severity_label, "instance", service_key}
    other_labels = [
        f"{key}={cut_chars(' '.join(labels[key].split()), part_chars)}"
        for key in sorted(labels)
        if key not in shown_labels and labels[key].strip()
    ]
    add("Labels", ", ".join(other_labels), False)

    links, link_keys = _links(alert, notification, limits)
    other_annotations = [
        f"{key}: {cut_chars(' '.join(value.split()), part_chars)}"
        for key, value in sorted(alert.annotations.items())
        if key not in shown_keys | link_keys and value.strip()
    ]
    add("Annotations", "\n".join(other_annotations), False)
    if links:  # built from checked URLs and fixed labels; not cut, which would break a link
        alert_fields.append({"short": False, "title": "Links", "value": links})
    return alert_fields


def _links(alert: Alert, notification: Notification, limits: AttachmentLimits) -> tuple[str, set[str]]:
    """Markdown links to the runbook, a silence form, the dashboard and panel; and the annotation keys used."""
    links: list[str] = []
    used_keys: set[str] = set()
    for runbook_name in ("runbook_url", "runbook"):
        key, url = annotation(alert.annotations, runbook_name)
        if usable_url(url, limits.url_chars):
            links.append(markdown_link("Runbook", url))
            used_keys.add(key)
            break
    # Grafana's own silence form knows its matchers; otherwise Alertmanager's form is filled from the labels.
    silence_url = alert.silence_url
    if not usable_url(silence_url, limits.url_chars):
        silence_url = alertmanager_silence_url(alert.labels, notification.external_url, limits.url_chars)
    for label, url in (("Silence", silence_url), ("Dashboard", alert.dashboard_url), ("Panel", alert.panel_url)):
        if usable_url(url, limits.url_chars):
            links.append(markdown_link(label, url))
    return " · ".join(links), used_keys


def alertmanager_silence_url(labels: Mapping[str, str], external_url: str, max_chars: int = MAX_URL_CHARS) -> str:
    """Alertmanager's "new silence" form prefilled with the alert's labels; "" without an http(s) externalURL."""
    if not is_http_url(external_url):
        return ""
    parts = urlsplit(external_url)
    base_url = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    # alertname first, as Alertmanager's UI shows it; an empty value is the same as no label in Prometheus.
    keys = sorted((key for key in labels if labels[key] != ""), key=lambda key: (key != "alertname", key))
    matchers = "{" + ",".join(f'{_matcher_name(key)}="{_matcher_escape(labels[key])}"' for key in keys) + "}"
    if len(base_url) + len(matchers) > max_chars:  # percent-encoding only makes it longer
        return ""
    return f"{base_url}/#/silences/new?filter=" + quote(matchers, safe="")


def _matcher_name(name: str) -> str:
    """A label name as an Alertmanager matcher writes it (quoted unless classic)."""
    return name if _CLASSIC_LABEL_NAME.fullmatch(name) else f'"{_matcher_escape(name)}"'


def _matcher_escape(value: str) -> str:
    """A matcher's quoted-string escaping: backslash, double quote, newline."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def summary_attachments(
    folded: Sequence[tuple[Alert, str]], severity_label: str, notification: Notification, limits: AttachmentLimits
) -> list[dict]:
    """One summary attachment per (status, severity) of the folded (alert, severity) pairs, naming each alert."""
    groups: dict[tuple[str, str], list[Alert]] = {}
    for alert, severity in folded:
        groups.setdefault((alert.status, severity), []).append(alert)
    attachments = []
    for (status, severity), members in groups.items():
        # Identical name and instance are listed once with a count (a storm often repeats one alert).
        entry_counts: dict[str, int] = {}
        for alert in members:
            entry = _folded_entry(alert, severity_label, notification, limits.folded_entry_chars)
            entry_counts[entry] = entry_counts.get(entry, 0) + 1
        lines = [f"• {entry}" + (f" ×{count}" if count > 1 else "") for entry, count in entry_counts.items()]
        if limits.max_folded_entries is not None and len(lines) > limits.max_folded_entries:
            not_listed = len(lines) - limits.max_folded_entries
            lines = lines[: limits.max_folded_entries] + [f"… and {not_listed} more not listed"]
        plural = "" if len(members) == 1 else "s"
        attachment = {
            "color": alert_color(status, severity),
            "title": f"+{len(members)} more {status.upper()} {severity} alert{plural}",
        }
        if usable_url(notification.external_url, limits.url_chars):
            attachment["title_link"] = notification.external_url
        if lines:
            attachment["text"] = "\n".join(lines)
        attachments.append(attachment)
    return attachments


def _folded_entry(alert: Alert, severity_label: str, notification: Notification, max_chars: int) -> str:
    """A folded alert in one line: its name, and its instance or else its other labels."""
    name = display_text(alert_name(alert, notification), max_chars, single_line=True)
    instance = alert.labels.get("instance", "")
    if instance.strip():
        return f"{name} on {display_text(instance, max_chars, single_line=True)}"
    other_labels = ", ".join(
        f"{cut_chars(key, max_chars)}={cut_chars(value, max_chars)}"
        for key, value in sorted(alert.labels.items())
        if key not in ("alertname", severity_label) and value.strip()
    )
    return f"{name} ({display_text(other_labels, max_chars, single_line=True)})" if other_labels else name
