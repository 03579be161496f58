"""SMS bodies: one alert through its template, several named in one SMS, a digest, a resolve; cut to the segment cap.

The default template is the seed's `system_alert` (Django Integration Guide for Alertmanager): a headline, the
alert's name, Service:, Instance: and the summary, each on its own line. Bodies are plain text; the Rocket.Chat
message is where the detail lives.
"""

from __future__ import annotations

from typing import Sequence

from ..channels.twilio.segments import fit_to_segments
from ..safetext import cut_chars, one_line
from ..store import SmsAlert
from ..templates import TemplateError, TemplateRenderError, compile_text_template
from ..template_sandbox import data_dict

# What one name or value may take of an SMS: a 3-segment SMS is about 200 characters in all.
MAX_VALUE_CHARS = 80
MAX_TEMPLATE_OUTPUT_CHARS = 1600  # Twilio's Body limit; the segment cap cuts further
SMS_TEMPLATE_VARIABLES = ("labels", "annotations", "alertname", "severity", "fingerprint", "starts_at")
DEFAULT_SMS_TEMPLATE = (
    "🚨 {{ severity | upper }} ALERT\n"
    "{{ alertname }}\n"
    "{% if labels.service or labels.job %}Service: {{ labels.service or labels.job }}\n{% endif %}"
    "{% if labels.instance %}Instance: {{ labels.instance }}\n{% endif %}"
    "{{ annotations.summary or annotations.description or annotations.message }}"
)
NAMES_SHOWN_IN_A_LIST = 5  # beyond, "… and N more": the count matters more than the names


class SmsTemplate:
    """A compiled SMS template (SMS_TEMPLATE or a destination's template:), rendered in Jinja2's sandbox."""

    def __init__(self, source: str, where: str):
        self.source = source
        self.where = where
        self._part = compile_text_template("sms", source, where, MAX_TEMPLATE_OUTPUT_CHARS, SMS_TEMPLATE_VARIABLES)
        try:  # a template that fails on a typical alert is a configuration error, not a silent phone at 3 a.m.
            self.render(_SAMPLE)
        except TemplateRenderError as error:
            raise TemplateError(f"{where}: fails on a sample alert: {error.reason}") from None

    def render(self, alert: SmsAlert) -> str:
        return self._part.render(_context(alert))


def default_template() -> SmsTemplate:
    if not _DEFAULT:
        _DEFAULT.append(SmsTemplate(DEFAULT_SMS_TEMPLATE, "the default SMS template"))
    return _DEFAULT[0]


_DEFAULT: list[SmsTemplate] = []


def _context(alert: SmsAlert) -> dict:
    return {
        "labels": data_dict({key: cut_chars(value, 2000) for key, value in alert.labels.items()}),
        "annotations": data_dict({key: cut_chars(value, 2000) for key, value in alert.annotations.items()}),
        "alertname": alert.alertname,
        "severity": alert.severity or "unknown",
        "fingerprint": alert.fingerprint,
        "starts_at": alert.starts_at,
    }


def _short(text: str) -> str:
    return cut_chars(one_line(text), MAX_VALUE_CHARS)


def _named(alert: SmsAlert) -> str:
    instance = alert.labels.get("instance", "")
    return f"{_short(alert.alertname)} ({_short(instance)})" if instance else _short(alert.alertname)


def _severity_words(alerts: Sequence[SmsAlert]) -> str:
    severities = sorted({alert.severity or "unknown" for alert in alerts})
    return "/".join(severities)


def _listed(alerts: Sequence[SmsAlert], separator: str) -> str:
    names = [_named(alert) for alert in alerts[:NAMES_SHOWN_IN_A_LIST]]
    more = len(alerts) - len(names)
    return separator.join(names) + (f"{separator}… and {more} more" if more else "")


def alert_body(alerts: Sequence[SmsAlert], template: SmsTemplate | None, max_segments: int) -> str:
    """One alert: its template (TemplateRenderError falls back to the default); several: one SMS naming them."""
    if len(alerts) == 1:
        try:
            text = (template or default_template()).render(alerts[0])
        except TemplateRenderError:
            text = default_template().render(alerts[0])
    else:
        text = (f"🚨 {len(alerts)} {_severity_words(alerts).upper()} ALERTS firing:\n"
                + _listed(alerts, "\n") + "\nsee Rocket.Chat")
    return fit_to_segments(text.strip() or f"🚨 ALERT {_named(alerts[0])}", max_segments)


def digest_body(alerts: Sequence[SmsAlert], max_segments: int) -> str:
    """Alerts held over SMS_MAX_PER_HOUR, in one SMS: never a flood."""
    noun = "alert" if len(alerts) == 1 else "alerts"
    text = f"🚨 {len(alerts)} more {_severity_words(alerts)} {noun}: {_listed(alerts, ', ')} see Rocket.Chat"
    return fit_to_segments(text, max_segments)


def resolved_body(alerts: Sequence[SmsAlert], max_segments: int) -> str:
    text = f"✅ RESOLVED: {_listed(alerts, ', ')}"
    return fit_to_segments(text, max_segments)


def test_body() -> str:
    return "rocketchat-webhook test SMS: if you can read this, SMS escalation can reach this phone."


_SAMPLE = SmsAlert(
    id="sample", fingerprint="0123456789abcdef", alertname="SampleAlert",
    labels={"alertname": "SampleAlert", "severity": "critical", "instance": "host-1:9100", "job": "node"},
    annotations={"summary": "Sample summary"}, severity="critical", starts_at="2024-01-15T10:00:00Z",
)
