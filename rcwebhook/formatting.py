"""Rocket.Chat messages from alerts: severity, order, headline, one colour-coded attachment per alert, limits."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Mapping, Sequence

from .attachments import AttachmentLimits, alert_attachment, alert_name, annotation, summary_attachments, usable_url
from .model import FIRING, UNKNOWN_SEVERITY, Alert, Notification
from .safetext import cut_utf16_units, display_text, one_line, utf16_units

# Rocket.Chat's Message_MaxAllowedSize default: UTF-16 code units of the trimmed top-level text (5000).
MAX_TEXT_UTF16_UNITS = 5000
# Our ceiling for one serialised message (UTF-8 bytes of its JSON), far below any request-body limit on the way.
MAX_MESSAGE_BYTES = 512 * 1024
# Alerts shown as full attachments in one message; the rest are folded into per-group summaries, because
# Rocket.Chat sets no limit on attachments and a wall of hundreds is unreadable.
MAX_FULL_ALERTS = 50
# Alert names spelled out in the headline before "and N more".
MAX_HEADLINE_NAMES = 5
MAX_HEADLINE_NAME_CHARS = 100
# Unusable entries named in the skipped-alerts note before "and N more".
MAX_SKIPPED_NAMED = 5
MAX_SKIPPED_REASON_CHARS = 100
# One alert's line in the plain-text fallback.
MAX_PLAIN_LINE_CHARS = 300
# The externalURL in the plain fallback's "and N more" line is left out when longer (a cut URL is broken).
MAX_PLAIN_LINK_CHARS = 1000

# The product's severity vocabulary: what each severity label value (case-insensitive, stripped) means.
SEVERITY_ALIASES: Mapping[str, tuple[str, ...]] = {
    "critical": ("critical", "crit", "error", "page", "fatal", "emergency", "alert", "p1"),
    "warning": ("warning", "warn", "high", "major", "p2"),
    "info": ("info", "informational", "notice", "low", "minor", "none", "p3"),
}
_SEVERITY_BY_ALIAS = {alias: severity for severity, aliases in SEVERITY_ALIASES.items() for alias in aliases}
# Most severe first. "unknown" ranks above "info" because an unrecognised label may hide anything.
SEVERITY_ORDER = ("critical", "warning", UNKNOWN_SEVERITY, "info")
_SEVERITY_RANK = {severity: rank for rank, severity in enumerate(SEVERITY_ORDER)}


@dataclass(frozen=True)
class FormatOptions:
    """How messages are dressed: which label holds the severity, mentions and the sender's look."""

    severity_label: str = "severity"
    mentions: Mapping[str, str] = field(default_factory=dict)  # severity -> e.g. "@here"; firing alerts only
    alias: str = ""  # display name; sent only when non-empty
    emoji: str = ""  # e.g. ":rotating_light:"; sent only when non-empty and no avatar_url
    avatar_url: str = ""  # Rocket.Chat's "avatar"; wins over emoji


def classify_severity(labels: Mapping[str, str], severity_label: str = "severity") -> str:
    """critical, warning or info from the severity label's value and its aliases; "unknown" otherwise."""
    value = labels.get(severity_label, "")
    if not isinstance(value, str):
        return UNKNOWN_SEVERITY
    return _SEVERITY_BY_ALIAS.get(value.strip().lower(), UNKNOWN_SEVERITY)


def sort_alerts(alerts: Sequence[Alert], severity_label: str = "severity") -> list[Alert]:
    """Firing before resolved, then most severe first (critical, warning, unknown, info); stable otherwise."""
    return sorted(
        alerts,
        key=lambda alert: (alert.status != FIRING, _SEVERITY_RANK[classify_severity(alert.labels, severity_label)]),
    )


def build_message(
    notification: Notification,
    alerts: Sequence[Alert],
    options: FormatOptions,
    group_count: int = 1,
    *,
    mentions: Sequence[str] | None = None,
    headline: str | None = None,
    decorate: Callable[[Alert, dict, AttachmentLimits], dict] | None = None,
) -> dict:
    """One rich Rocket.Chat message for these alerts of the notification, within every limit of the contract.

    group_count > 1 says the notification merges that many groups: the headline then counts groups, not names.
    mentions replaces the per-severity ones of options; headline (already made safe) replaces the built-in one
    after them; decorate(alert, attachment, limits) may change each full alert's attachment (a user's template).
    """
    ordered = sort_alerts(alerts, options.severity_label)
    head_line = _headline_line(notification, ordered, options, group_count, mentions=mentions, headline=headline)
    head = "\n".join([head_line, *_notes(notification)])
    text = cut_utf16_units(head, MAX_TEXT_UTF16_UNITS)
    label = options.severity_label
    graded = [(alert, classify_severity(alert.labels, label)) for alert in ordered]
    full, folded = graded[:MAX_FULL_ALERTS], graded[MAX_FULL_ALERTS:]
    message: dict = {}
    for limits in _shrinking_limits():
        attachments = [alert_attachment(alert, severity, label, notification, limits) for alert, severity in full]
        if decorate is not None:
            attachments = [decorate(alert, attachment, limits) for (alert, _), attachment in zip(full, attachments)]
        attachments += summary_attachments(folded, label, notification, limits)
        message = {"text": text, **_sender_fields(options), "attachments": attachments}
        if _serialised_size_bytes(message) <= MAX_MESSAGE_BYTES:
            break
    return message


def build_plain_text_message(
    notification: Notification,
    alerts: Sequence[Alert],
    options: FormatOptions,
    group_count: int = 1,
    *,
    mentions: Sequence[str] | None = None,
) -> dict:
    """A text-only message (for when Rocket.Chat refused the rich one): headline, then one line per alert."""
    ordered = sort_alerts(alerts, options.severity_label)
    head_line = _headline_line(notification, ordered, options, group_count, mentions=mentions)
    head = "\n".join([head_line, *_notes(notification)])
    lines = [_plain_line(alert, notification, options.severity_label) for alert in ordered]
    text = "\n".join([head, *lines])
    if utf16_units(text) > MAX_TEXT_UTF16_UNITS:
        # Keep whole lines while they fit, leaving room for the "and N more" line at its longest.
        link = notification.external_url if usable_url(notification.external_url, MAX_PLAIN_LINK_CHARS) else ""
        reserve_units = utf16_units("\n" + _more_alerts_line(len(lines), link))
        used_units = utf16_units(head)
        kept: list[str] = []
        for line in lines:
            if used_units + 1 + utf16_units(line) + reserve_units > MAX_TEXT_UTF16_UNITS:
                break
            kept.append(line)
            used_units += 1 + utf16_units(line)
        text = "\n".join([head, *kept, _more_alerts_line(len(lines) - len(kept), link)])
    return {"text": cut_utf16_units(text, MAX_TEXT_UTF16_UNITS), **_sender_fields(options)}


def _shrinking_limits() -> Iterator[AttachmentLimits]:
    """Ever smaller limits, the last one small enough for any message to fit MAX_MESSAGE_BYTES."""
    limits = AttachmentLimits()
    for _ in range(6):
        yield limits
        limits = limits.halved()
    yield limits
    # Past that, summaries stop naming every folded alert (10,000 folded names alone exceed 512 KiB).
    yield replace(limits, max_folded_entries=20)
    yield replace(limits, max_folded_entries=0)


def _sender_fields(options: FormatOptions) -> dict:
    """The top-level alias and avatar or emoji, only those set (Rocket.Chat prefers avatar over emoji)."""
    fields = {"alias": options.alias} if options.alias else {}
    if options.avatar_url:
        fields["avatar"] = options.avatar_url
    elif options.emoji:
        fields["emoji"] = options.emoji
    return fields


def _headline_line(
    notification: Notification,
    ordered: Sequence[Alert],
    options: FormatOptions,
    group_count: int = 1,
    *,
    mentions: Sequence[str] | None = None,
    headline: str | None = None,
) -> str:
    """The configured mentions due, then e.g. "[FIRING:2, RESOLVED:1] HighCPUUsage, DiskFull" or "... 12 groups"."""
    firing = sum(1 for alert in ordered if alert.status == FIRING)
    resolved = len(ordered) - firing
    counts = [f"FIRING:{firing}"] if firing or not resolved else []
    counts += [f"RESOLVED:{resolved}"] if resolved else []
    # A dict keeps the first-seen order and finds repeats in constant time (a storm can carry thousands).
    shown_names = (display_text(alert_name(alert, notification), MAX_HEADLINE_NAME_CHARS, True) for alert in ordered)
    names = list(dict.fromkeys(shown_names))
    named = ", ".join(names[:MAX_HEADLINE_NAMES])
    if len(names) > MAX_HEADLINE_NAMES:
        named += f" and {len(names) - MAX_HEADLINE_NAMES} more"
    if group_count > 1:
        named = _count_of(group_count, "group")
    if headline is None:
        headline = f"[{', '.join(counts)}] {named}".rstrip()
    if mentions is None:
        mentions = _mentions(ordered, options)
    # The configured mention is the one @ in a message meant to notify: it is not neutralised.
    return f"{' '.join(mentions)} {headline}" if mentions else headline


def _mentions(ordered: Sequence[Alert], options: FormatOptions) -> list[str]:
    """The configured mentions of the severities among firing alerts, in severity order, each once."""
    firing_severities = {
        classify_severity(alert.labels, options.severity_label) for alert in ordered if alert.status == FIRING
    }
    mentions: list[str] = []
    for severity in SEVERITY_ORDER:
        mention = one_line(str(options.mentions.get(severity) or ""))
        if severity in firing_severities and mention and mention not in mentions:
            mentions.append(mention)
    return mentions


def _notes(notification: Notification) -> list[str]:
    """Warnings about what this notification could not carry: unusable entries, alerts Alertmanager left out."""
    notes = []
    skipped = notification.skipped
    if skipped:
        described = "; ".join(
            f"alerts[{entry.index}] {display_text(entry.reason, MAX_SKIPPED_REASON_CHARS, single_line=True)}"
            for entry in skipped[:MAX_SKIPPED_NAMED]
        )
        if len(skipped) > MAX_SKIPPED_NAMED:
            described += f"; and {len(skipped) - MAX_SKIPPED_NAMED} more"
        notes.append(f"⚠ {_count_of(len(skipped), 'unusable alert')} skipped: {described}")
    if notification.truncated_alerts > 0:
        left_out = _count_of(notification.truncated_alerts, "more alert")
        notes.append(f"⚠ Alertmanager left out {left_out} of this group (max_alerts)")
    return notes


def _plain_line(alert: Alert, notification: Notification, severity_label: str) -> str:
    """One alert as "• FIRING critical HighCPUUsage on web-1: <summary>"."""
    severity = classify_severity(alert.labels, severity_label)
    line = f"• {alert.status.upper()} {severity} {alert_name(alert, notification)}"
    instance = alert.labels.get("instance", "")
    if instance.strip():
        line += f" on {instance}"
    summary = next(
        (text for name in ("summary", "description", "message") if (text := annotation(alert.annotations, name)[1])), ""
    )
    if summary:
        line += f": {summary}"
    return display_text(line, MAX_PLAIN_LINE_CHARS, single_line=True)


def _more_alerts_line(count: int, link: str) -> str:
    """The plain fallback's last line: how many alerts did not fit, and where to see them."""
    return f"… and {_count_of(count, 'more alert')}" + (f": {link}" if link else "")


def _count_of(count: int, noun: str) -> str:
    """ "1 alert", "2 alerts"."""
    return f"{count} {noun}" + ("" if count == 1 else "s")


# Attachment keys whose value Rocket.Chat requires to be a string, and those it requires to be a link.
_ATTACHMENT_STRING_KEYS = ("color", "text", "title", "author_name", "pretext")
_ATTACHMENT_URL_KEYS = ("title_link", "author_link", "author_icon", "image_url", "thumb_url")
_URL_PREFIXES = ("http://", "https://", "data:")


def _serialised_size_bytes(message: dict) -> int:
    """Size of the message as it is posted: JSON without NaN, UTF-8."""
    return len(json.dumps(message, ensure_ascii=False, allow_nan=False).encode("utf-8"))


def validate_message(message: dict) -> list[str]:
    """Every rule of the Rocket.Chat contract the message breaks; [] when it may be posted."""
    if not isinstance(message, dict):
        return ["the message must be a JSON object (a dict)"]
    problems = [
        f"{key} must not be sent (refused, or drawn as a quote)"
        for key in ("channel", "roomId", "message_link")
        if key in message
    ]
    for key in ("text", "msg"):  # Rocket.Chat reads "msg" as "text"
        if key in message and not isinstance(message[key], str):
            problems.append(f"{key} must be a string")
        elif key in message and utf16_units(message[key].strip()) > MAX_TEXT_UTF16_UNITS:
            units = utf16_units(message[key].strip())
            problems.append(f"{key} is {units} UTF-16 code units after trimming; the limit is {MAX_TEXT_UTF16_UNITS}")
    problems += [
        f"{key} must be a string"
        for key in ("alias", "emoji", "avatar")
        if key in message and not isinstance(message[key], str)
    ]
    attachments = message.get("attachments", [])
    if not isinstance(attachments, list):
        problems.append("attachments must be a list")
    else:
        for index, attachment in enumerate(attachments):
            problems += _attachment_problems(f"attachments[{index}]", attachment)
    try:
        size_bytes = _serialised_size_bytes(message)
    except (TypeError, ValueError) as error:  # NaN, a non-JSON type, a lone surrogate (UnicodeEncodeError)
        problems.append(f"the message does not serialise to JSON: {error}")
    else:
        if size_bytes > MAX_MESSAGE_BYTES:
            problems.append(f"the message is {size_bytes} bytes; the limit is {MAX_MESSAGE_BYTES}")
    return problems


def _attachment_problems(where: str, attachment: object) -> list[str]:
    """The contract rules one attachment breaks."""
    if not isinstance(attachment, dict):
        return [f"{where} must be an object"]
    problems = [f"{where}.message_link must not be sent (drawn as a quote)"] if "message_link" in attachment else []
    problems += [
        f"{where}.{key} must be a string"
        for key in _ATTACHMENT_STRING_KEYS
        if key in attachment and not isinstance(attachment[key], str)
    ]
    problems += [
        f"{where}.{key} must start with http://, https:// or data:"
        for key in _ATTACHMENT_URL_KEYS
        if key in attachment and not (isinstance(attachment[key], str) and attachment[key].startswith(_URL_PREFIXES))
    ]
    if "collapsed" in attachment and not isinstance(attachment["collapsed"], bool):
        problems.append(f"{where}.collapsed must be a boolean")
    timestamp = attachment.get("ts", "")
    if isinstance(timestamp, bool) or not isinstance(timestamp, (str, int, float)):
        problems.append(f"{where}.ts must be a string or a number")
    attachment_fields = attachment.get("fields", [])
    if not isinstance(attachment_fields, list):
        return problems + [f"{where}.fields must be a list"]
    for index, item in enumerate(attachment_fields):
        place = f"{where}.fields[{index}]"
        if not isinstance(item, dict):
            problems.append(f"{place} must be an object")
            continue
        problems += [
            f"{place}.{key} must be a non-empty string"
            for key in ("title", "value")
            if not (isinstance(item.get(key), str) and item[key])
        ]
        if "short" in item and not isinstance(item["short"], bool):
            problems.append(f"{place}.short must be a boolean")
    return problems
