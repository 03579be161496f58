"""User message templates (Jinja2, sandboxed): compiled once, rendered to bounded strings, never to JSON."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import jinja2
import jinja2.meta

from .formatting import classify_severity
from .model import FIRING, RESOLVED, Alert, Notification
from .safetext import cut_chars, one_line
from .template_sandbox import TemplateEnvironment, bounded_environment, data_dict, data_list, render_bounded
from .timefmt import display_timestamp, duration_between, format_duration

# What one rendered part may be (code points); longer output is cut, not refused. The relay cuts further to
# its own display limits (e.g. attachments.MAX_TITLE_CHARS, 250); these only bound what a template can cost.
MAX_HEADLINE_CHARS = 1000  # one line of the top-level text, which Rocket.Chat keeps to 5000 UTF-16 units
MAX_TITLE_CHARS = 500
MAX_TEXT_CHARS = 8000
MAX_FIELD_TITLE_CHARS = 200
MAX_FIELD_VALUE_CHARS = 2000
MAX_FIELDS = 20  # per template
MAX_TEMPLATE_SOURCE_CHARS = 10_000  # per part, as written in the routes file

# Label and annotation keys and values as templates see them (a 5 MiB body can carry a megabyte label).
MAX_CONTEXT_VALUE_CHARS = 20_000
MAX_ERROR_CHARS = 300  # of the reason in an error

_PART_CHARS = {"headline": MAX_HEADLINE_CHARS, "title": MAX_TITLE_CHARS, "text": MAX_TEXT_CHARS}
_TEMPLATE_KEYS = ("headline", "title", "text", "fields")
_FIELD_KEYS = ("title", "value")
_TEMPLATE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
_TEMPLATE_FILENAME = "<template>"  # what Jinja calls a from_string template in tracebacks


class TemplateError(ValueError):
    """A templates section that cannot be used, naming the path (and line) of the problem."""


class TemplateRenderError(Exception):
    """A template failed on one alert or notification at run time: the caller uses the built-in layout."""

    def __init__(self, template: str, part: str, line: int | None, reason: str):
        self.template = template  # the template's name, e.g. "payments"
        self.part = part  # its path in the routes file, e.g. "templates.payments.fields[0].value"
        self.line = line  # in the part's source; None when unknown
        self.reason = reason  # one line, at most MAX_ERROR_CHARS
        super().__init__(f"{part}, line {line}: {reason}" if line else f"{part}: {reason}")


# ---------------------------------------------------------------- filters for alerts


def _utc(value: Any) -> str:
    """An RFC 3339 (or Go) time as "2024-01-15 10:00:00 UTC"; "" when unset; as given when it does not parse."""
    return "" if isinstance(value, jinja2.Undefined) or value is None else display_timestamp(str(value))


def _duration(value: Any, end: Any = None) -> str:
    """Seconds as "1h 5m"; or the time between two times: start | duration(end), or [start, end] | duration."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and end is None:
        value, end = value
    if isinstance(value, jinja2.Undefined) or value is None or isinstance(value, bool):
        return ""
    if end is not None:
        return "" if isinstance(end, jinja2.Undefined) else duration_between(str(value), str(end))
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return ""
    return format_duration(int(seconds)) if math.isfinite(seconds) else ""


def _since(value: Any) -> str:
    """The time from a time until now, e.g. "2h 3m"; "" when unset, unparsable or in the future."""
    if isinstance(value, jinja2.Undefined) or value is None:
        return ""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return duration_between(str(value), now)


# ---------------------------------------------------------------- the environment

_ENVIRONMENT: list[TemplateEnvironment] = []


def _environment() -> TemplateEnvironment:
    """The one environment, built on first use (read-only afterwards, so threads share it)."""
    if not _ENVIRONMENT:
        environment = bounded_environment(
            {"utc": _utc, "duration": _duration, "since": _since},
            undefined=jinja2.ChainableUndefined,
            autoescape=False,  # chat Markdown, not HTML; the relay neutralises mentions afterwards
            trim_blocks=True,  # a {% ... %} line leaves no blank line in a multi-line YAML template
            lstrip_blocks=True,
        )
        _ENVIRONMENT.append(environment)
    return _ENVIRONMENT[0]


# ---------------------------------------------------------------- compiled templates


@dataclass(frozen=True)
class CompiledPart:
    """One part of a template, compiled, with its place in the routes file and its output cap."""

    template_name: str  # e.g. "payments"
    path: str  # e.g. "templates.payments.title"
    source: str
    max_chars: int
    template: jinja2.Template

    def render(self, context: Mapping) -> str:
        """The part rendered on context, stripped and cut to max_chars; TemplateRenderError when it fails."""
        try:
            text = render_bounded(self.template, context, self.max_chars)
        except Exception as error:  # noqa: BLE001 - RecursionError, MemoryError, the budget, a filter: all alike
            raise TemplateRenderError(self.template_name, self.path, _template_line(error), _reason(error)) from None
        return cut_chars(text.strip(), self.max_chars)


@dataclass(frozen=True)
class RenderedAlertParts:
    """What a template gives one alert: None for a part it does not set; fields with an empty side dropped."""

    title: str | None
    text: str | None
    fields: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class MessageTemplate:
    """A named template: parts that replace parts of the relay's message."""

    name: str
    headline: CompiledPart | None = None  # per notification
    title: CompiledPart | None = None  # per alert: the attachment title
    text: CompiledPart | None = None  # per alert: replaces the built-in summary and description
    fields: tuple[tuple[CompiledPart, CompiledPart], ...] = ()  # per alert, after the built-in fields

    def render_headline(self, context: Mapping) -> str | None:
        """The headline on a notification_context; None when the template has none."""
        return None if self.headline is None else self.headline.render(context)

    def render_alert_parts(self, context: Mapping) -> RenderedAlertParts:
        """Title, text and fields on an alert_context; TemplateRenderError when any of them fails."""
        title = None if self.title is None else self.title.render(context)
        text = None if self.text is None else self.text.render(context)
        fields = []
        for title_part, value_part in self.fields:
            field_title, field_value = title_part.render(context), value_part.render(context)
            if field_title and field_value:  # Rocket.Chat refuses a field without both
                fields.append((field_title, field_value))
        return RenderedAlertParts(title=title, text=text, fields=tuple(fields))


def _template_line(error: BaseException) -> int | None:
    """The line of the innermost template frame of the error (Jinja rewrites tracebacks to source lines)."""
    line = None
    traceback = error.__traceback__
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == _TEMPLATE_FILENAME:
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return line


def _reason(error: BaseException) -> str:
    """The error in one short line (it may quote a label value)."""
    text = one_line(str(error))
    if not text or isinstance(error, (RecursionError, MemoryError)):
        text = f"{type(error).__name__}: {text}".rstrip(": ")
    if isinstance(error, jinja2.UndefinedError):  # printing a missing label is fine; using it in an operation is not
        text = f"{cut_chars(text, MAX_ERROR_CHARS - 60)} (if it may be missing, use | default(...))"
    return cut_chars(text, MAX_ERROR_CHARS)


# ---------------------------------------------------------------- compiling a templates section


def compile_templates(spec: Mapping[str, object], *, where: str = "templates") -> dict[str, MessageTemplate]:
    """Every template of a routes file's templates section: validated, compiled, and tried on a sample alert."""
    if not isinstance(spec, Mapping):
        raise TemplateError(f"{where} must be a mapping of template names to templates")
    notification, alert = _sample()
    headline_context = notification_context(
        notification, notification.alerts, integration="sample", severity_label="severity"
    )
    alert_vars = alert_context(
        alert, notification, integration="sample", severity_label="severity", base_context=headline_context
    )
    compiled = {}
    for name, body in spec.items():
        if not isinstance(name, str) or not _TEMPLATE_NAME.fullmatch(name):
            shown = cut_chars(str(name), 60)
            raise TemplateError(f"{where}: template name {shown!r} may have only letters, digits, _ and -")
        template = _compile_template(name, body, f"{where}.{name}")
        for part in (template.title, template.text, *(side for pair in template.fields for side in pair)):
            if part is not None:
                _try(part, alert_vars)
        if template.headline is not None:
            _try(template.headline, headline_context)
        compiled[name] = template
    return compiled


def _compile_template(name: str, body: object, path: str) -> MessageTemplate:
    expected = ", ".join(_TEMPLATE_KEYS)
    if not isinstance(body, Mapping):
        raise TemplateError(f"{path} must be a mapping with any of: {expected}")
    unknown = sorted(str(key) for key in body if key not in _TEMPLATE_KEYS)
    if unknown:
        raise TemplateError(f"{path}.{unknown[0]}: unknown key; expected any of: {expected}")
    if not body:
        raise TemplateError(f"{path} sets no part; give any of: {expected}")
    parts = {
        key: _compile_part(name, body[key], f"{path}.{key}", max_chars)
        for key, max_chars in _PART_CHARS.items()
        if key in body
    }
    fields = body.get("fields", [])
    if not isinstance(fields, list):
        raise TemplateError(f"{path}.fields must be a list of {{title: ..., value: ...}}")
    if len(fields) > MAX_FIELDS:
        raise TemplateError(f"{path}.fields has {len(fields)} fields; the limit is {MAX_FIELDS}")
    compiled_fields = []
    for index, field in enumerate(fields):
        place = f"{path}.fields[{index}]"
        if not isinstance(field, Mapping):
            raise TemplateError(f"{place} must be a mapping with title and value")
        unknown = sorted(str(key) for key in field if key not in _FIELD_KEYS)
        if unknown:
            raise TemplateError(f"{place}.{unknown[0]}: unknown key; expected title and value")
        missing = [key for key in _FIELD_KEYS if key not in field]
        if missing:
            raise TemplateError(f"{place}.{missing[0]} is missing")
        compiled_fields.append(
            (
                _compile_part(name, field["title"], f"{place}.title", MAX_FIELD_TITLE_CHARS),
                _compile_part(name, field["value"], f"{place}.value", MAX_FIELD_VALUE_CHARS),
            )
        )
    return MessageTemplate(name=name, fields=tuple(compiled_fields), **parts)


def compile_text_template(name: str, source: object, path: str, max_chars: int,
                          variables: Sequence[str]) -> CompiledPart:
    """A template of another channel (an SMS body) that sees only the given variables; TemplateError when it
    cannot be used."""
    return _compile_part(name, source, path, max_chars, variables=variables)


def _compile_part(name: str, source: object, path: str, max_chars: int,
                  variables: Sequence[str] | None = None) -> CompiledPart:
    if not isinstance(source, str) or not source.strip():
        raise TemplateError(f"{path} must be a non-empty string (a Jinja template)")
    if len(source) > MAX_TEMPLATE_SOURCE_CHARS:
        raise TemplateError(f"{path} is {len(source)} characters long; the limit is {MAX_TEMPLATE_SOURCE_CHARS}")
    try:
        template = _environment().from_string(source)
    except jinja2.TemplateSyntaxError as error:
        reason = cut_chars(one_line(error.message or ""), MAX_ERROR_CHARS)
        raise TemplateError(f"{path}, line {error.lineno}: {reason}") from None
    except Exception as error:  # noqa: BLE001 - e.g. RecursionError on thousands of nested brackets
        raise TemplateError(f"{path}: cannot be compiled: {_reason(error)}") from None
    if variables is not None:
        _refuse_unknown_variables(source, path, variables, with_notification=False)
    else:
        headline = path.endswith(".headline")  # a headline is per notification: it has no alert of its own
        _refuse_unknown_variables(source, path, NOTIFICATION_VARIABLES if headline else ALERT_VARIABLES)
    return CompiledPart(template_name=name, path=path, source=source, max_chars=max_chars, template=template)


# The variables templates see (a missing label renders empty; a misspelled variable is refused at load, or
# "{{ lables.alertname }}" would render an empty title for ever without a word).
ALERT_VARIABLES = ("labels", "annotations", "status", "starts_at", "ends_at", "severity", "generator_url",
                   "fingerprint")
NOTIFICATION_VARIABLES = ("alerts", "status", "group_labels", "common_labels", "common_annotations",
                          "external_url", "receiver", "integration")


def _refuse_unknown_variables(source: str, path: str, part_variables: Sequence[str], *,
                              with_notification: bool = True) -> None:
    """Alert parts see the alert's variables and the notification's; a headline only the notification's."""
    environment = _environment()
    try:
        used = jinja2.meta.find_undeclared_variables(environment.parse(source))
    except Exception:  # noqa: BLE001 - it compiled above; a parse this fails on is left to the sample render
        return
    visible = sorted({*part_variables, *(NOTIFICATION_VARIABLES if with_notification else ())})
    unknown = sorted(used - {*visible, *environment.globals})
    if unknown:
        raise TemplateError(f"{path}: unknown variable(s) {', '.join(unknown)} (this part sees {', '.join(visible)})")


def _try(part: CompiledPart, context: Mapping) -> None:
    try:
        part.render(context)
    except TemplateRenderError as error:
        line = f", line {error.line}" if error.line else ""
        raise TemplateError(f"{part.path}{line}: fails on a sample alert: {error.reason}") from None


def _sample() -> tuple[Notification, Alert]:
    """A typical firing alert, to try templates on at start-up."""
    labels = {"alertname": "SampleAlert", "severity": "critical", "instance": "host-1:9100", "job": "node"}
    alert = Alert(
        index=0,
        status=FIRING,
        labels=labels,
        annotations={"summary": "Sample summary", "description": "Sample description"},
        starts_at="2024-01-15T10:00:00Z",
        ends_at="0001-01-01T00:00:00Z",
        generator_url="http://prometheus.example/graph",
        fingerprint="0123456789abcdef",
    )
    notification = Notification(
        alerts=(alert,),
        status=FIRING,
        receiver="sample",
        group_labels={"alertname": "SampleAlert"},
        common_labels=labels,
        common_annotations={"summary": "Sample summary"},
        external_url="http://alertmanager.example",
    )
    return notification, alert


# ---------------------------------------------------------------- what templates see


def _cut(text: str) -> str:
    return cut_chars(str(text), MAX_CONTEXT_VALUE_CHARS)


def _strings(mapping: Mapping) -> dict:
    """A copy of labels or annotations: a dict of strings, keys and values cut to MAX_CONTEXT_VALUE_CHARS."""
    return data_dict({_cut(key): _cut(value) for key, value in mapping.items()})


def _alert_vars(alert: Alert, severity_label: str) -> dict:
    return {
        "labels": _strings(alert.labels),
        "annotations": _strings(alert.annotations),
        "status": alert.status,
        "starts_at": _cut(alert.starts_at),
        "ends_at": _cut(alert.ends_at),
        "severity": classify_severity(alert.labels, severity_label),
        "generator_url": _cut(alert.generator_url),
        "fingerprint": _cut(alert.fingerprint),
    }


def notification_context(
    notification: Notification, alerts: Sequence[Alert], *, integration: str, severity_label: str
) -> dict:
    """The variables of a headline: the message's alerts and the notification's group context.

    status is "firing" when any of these alerts fires, else "resolved" (a message may carry part of a group).
    """
    if alerts:
        status = FIRING if any(alert.status == FIRING for alert in alerts) else RESOLVED
    else:
        status = notification.status
    return {
        "alerts": data_list(data_dict(_alert_vars(alert, severity_label)) for alert in alerts),
        "status": status,
        "group_labels": _strings(notification.group_labels),
        "common_labels": _strings(notification.common_labels),
        "common_annotations": _strings(notification.common_annotations),
        "external_url": _cut(notification.external_url),
        "receiver": _cut(notification.receiver),
        "integration": _cut(integration),
    }


def alert_context(
    alert: Alert,
    notification: Notification,
    *,
    integration: str,
    severity_label: str,
    base_context: Mapping | None = None,
) -> dict:
    """The variables of an alert's parts: the notification's, then the alert's own (its status wins).

    base_context is the message's notification_context: passing it makes a message of n alerts cost O(n),
    and alerts are then the message's; without it they are all of the notification's alerts.
    """
    if base_context is None:
        base_context = notification_context(
            notification, notification.alerts, integration=integration, severity_label=severity_label
        )
    return {**base_context, **_alert_vars(alert, severity_label)}
