"""Reading an Alertmanager (or Grafana) webhook body into the relay's model, tolerant of sloppy senders."""

from __future__ import annotations

import json
import math

from .model import FIRING, RESOLVED, Alert, Notification, PayloadError, ProblemItem, SkippedAlert
from .safetext import replace_lone_surrogates

NOT_AN_OBJECT_MESSAGE = "the body must be a JSON object (an Alertmanager webhook payload)"
NO_USABLE_ALERT_MESSAGE = "no usable alert in the body"

# Per-alert string fields: (body key, Alert attribute). Grafana adds the last four.
_ALERT_STRING_FIELDS = (
    ("startsAt", "starts_at"),
    ("endsAt", "ends_at"),
    ("generatorURL", "generator_url"),
    ("fingerprint", "fingerprint"),
    ("dashboardURL", "dashboard_url"),
    ("panelURL", "panel_url"),
    ("silenceURL", "silence_url"),
    ("valueString", "value_string"),
)


def parse_notification(document: object) -> Notification:
    """The Notification a decoded webhook body carries; PayloadError (400/422) when it carries none."""
    if not isinstance(document, dict):
        raise PayloadError(400, NOT_AN_OBJECT_MESSAGE)
    if "alerts" not in document:
        raise PayloadError(422, 'the body has no "alerts" list', (ProblemItem(("alerts",), "field required"),))
    entries = document["alerts"]
    if not isinstance(entries, list):
        raise PayloadError(422, '"alerts" must be a list', (ProblemItem(("alerts",), "must be a list"),))

    group_status = _status(document.get("status"), default=FIRING)
    alerts: list[Alert] = []
    skipped: list[SkippedAlert] = []
    problems: list[ProblemItem] = []
    for index, entry in enumerate(entries):
        # Each entry is judged alone: one broken alert must not cost the others their delivery.
        problem = _entry_problem(index, entry)
        if problem is None:
            alerts.append(_alert(index, entry, group_status))
        else:
            skipped.append(SkippedAlert(index, problem.msg))
            problems.append(problem)
    if entries and not alerts:
        raise PayloadError(422, NO_USABLE_ALERT_MESSAGE, tuple(problems))

    return Notification(
        alerts=tuple(alerts),
        skipped=tuple(skipped),
        status=group_status,
        receiver=_field_text(document.get("receiver")),
        group_key=_field_text(document.get("groupKey")),
        group_labels=_string_map(document.get("groupLabels")),
        common_labels=_string_map(document.get("commonLabels")),
        common_annotations=_string_map(document.get("commonAnnotations")),
        external_url=_field_text(document.get("externalURL")),
        truncated_alerts=_count(document.get("truncatedAlerts")),
        notification_reason=_plain_string(document.get("notification_reason")),
    )


def _entry_problem(index: int, entry: object) -> ProblemItem | None:
    """Why an entry of "alerts" is unusable, located in the body; None when it is usable."""
    if not isinstance(entry, dict):
        return ProblemItem(("alerts", index), "is not an object")
    if "labels" not in entry:
        return ProblemItem(("alerts", index, "labels"), "has no labels object")
    labels = entry["labels"]
    if labels is None:
        return ProblemItem(("alerts", index, "labels"), "labels is null")
    if not isinstance(labels, dict):
        return ProblemItem(("alerts", index, "labels"), "labels is not an object")
    return None


def _alert(index: int, entry: dict, group_status: str) -> Alert:
    """An Alert from a usable entry; a missing or odd status is inherited from the group."""
    strings = {attribute: _field_text(entry.get(key)) for key, attribute in _ALERT_STRING_FIELDS}
    return Alert(
        index=index,
        status=_status(entry.get("status"), default=group_status),
        labels=_string_map(entry["labels"]),
        annotations=_string_map(entry.get("annotations")),
        **strings,
    )


def _status(value: object, default: str) -> str:
    """FIRING or RESOLVED when the value names one (any case), else the default."""
    if isinstance(value, str) and value.strip().lower() in (FIRING, RESOLVED):
        return value.strip().lower()
    return default


def _string_map(value: object) -> dict[str, str]:
    """Labels or annotations with string values; null values dropped; null or a non-object is {}."""
    if not isinstance(value, dict):
        return {}
    normalised = {}
    for key, item in value.items():
        text = _value_text(item)
        if text is not None:
            normalised[replace_lone_surrogates(str(key))] = text
    return normalised


def _value_text(value: object) -> str | None:
    """A JSON value as label text: scalars as text, lists and objects as compact JSON, null as None."""
    if value is None:
        return None
    if isinstance(value, str):
        return replace_lone_surrogates(value)
    if isinstance(value, bool):  # before int: bool is a subclass of int
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"  # Prometheus's spelling of the infinities
        return repr(value)
    if isinstance(value, (list, dict)):
        # Nested NaN/Infinity come out as JSON-ish tokens inside the text, which is then only a string.
        return replace_lone_surrogates(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
    return replace_lone_surrogates(str(value))


def _field_text(value: object) -> str:
    """A scalar field (receiver, groupKey, startsAt...) as text; "" for null or missing."""
    text = _value_text(value)
    return "" if text is None else text


def _plain_string(value: object) -> str:
    """The value when it is a string, else ""."""
    return replace_lone_surrogates(value) if isinstance(value, str) else ""


def _count(value: object) -> int:
    """A non-negative integer from an int, an integral float or a numeric string; 0 otherwise."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return max(int(value), 0)
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        try:
            return int(value.strip())
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            return 0
    return 0
