"""The Rocket.Chat channel: a batch of notifications → one incoming-webhook message, posted by the client.

Each alert is shown as the route destination that sent it says (its mention, its template); the client classifies
Rocket.Chat's answer.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Callable, Sequence

from ..attachments import AttachmentLimits
from ..formatting import FormatOptions, build_message, build_plain_text_message, sort_alerts, validate_message
from ..hookqueue import Batch, Hook
from ..merging import alert_identity, merge_notifications
from ..model import FIRING, Alert, Notification
from ..outcome import PostResult
from ..safetext import display_text, one_line
from ..templates import TemplateRenderError, alert_context, notification_context

logger = logging.getLogger("rcwebhook.delivery")

# A template's headline is one line of the message's text, which Rocket.Chat caps at 5000 UTF-16 units in all.
MAX_TEMPLATE_HEADLINE_CHARS = 500


def format_options(config) -> FormatOptions:
    """The look the environment's settings give (without a routes file, or for a batch without route looks)."""
    return FormatOptions(
        severity_label=config.severity_label, mentions=dict(config.mentions), alias=config.alias,
        emoji=config.emoji, avatar_url=config.avatar_url,
    )


class RocketChatChannel:
    """Renders batches for Rocket.Chat and posts them through one RocketChatClient."""

    def __init__(
        self,
        client,
        default_options: FormatOptions,
        *,
        on_template_error: Callable[[str], None] = lambda name: None,
    ):
        self.client = client
        self.default_options = default_options
        self.on_template_error = on_template_error

    def send(self, hook: Hook, message: dict, *, timeout_seconds: float) -> PostResult:
        return self.client.post(hook.url, message, timeout_seconds=timeout_seconds)

    def close(self) -> None:
        self.client.close()

    def render(self, batch: Batch) -> dict:
        """The message one post carries: rich, or plain text after Rocket.Chat refused the rich one; on a hook with
        threads, a reply names its thread (tmid) and a channel post asks for its message id (separateResponse)."""
        message = self._message(batch)
        if batch.jobs and getattr(batch.jobs[0].destination, "threads", False):
            reply_to = batch.jobs[0].reply_to
            if reply_to:
                message["tmid"] = reply_to  # Rocket.Chat does not check it (rocketchat-contract.md)
            else:
                message["separateResponse"] = True  # answered with responses[0].message._id since mid-2025
        return message

    def _message(self, batch: Batch) -> dict:
        notification, alerts = merge_notifications(batch.parts)
        looks = _looks_by_alert(batch)
        options = self._options(looks)
        group_count = len(batch.parts)
        if not batch.plain_text:
            message = self._rich(notification, alerts, looks, options, group_count)
            problems = validate_message(message)
            if not problems:
                return message
            # Our own bug, caught before Rocket.Chat could silently drop or refuse the message.
            logger.error("message breaks the Rocket.Chat contract (%s); sending plain text", "; ".join(problems[:3]))
        return build_plain_text_message(
            notification, alerts, options, group_count, mentions=_mentions(alerts, looks, options)
        )

    def _options(self, looks: dict) -> FormatOptions:
        """The sender's look and the severity label: the first route destination's (a post has one sender)."""
        if not looks:
            return self.default_options
        first = next(iter(looks.values()))
        destination = first.destination
        return FormatOptions(
            severity_label=first.severity_label, mentions={}, alias=destination.alias, emoji=destination.emoji,
            avatar_url=destination.avatar_url,
        )

    def _rich(self, notification: Notification, alerts: Sequence[Alert], looks: dict, options: FormatOptions,
              group_count: int) -> dict:
        templated = [look for look in looks.values() if look.destination.template is not None]
        contexts: dict[tuple, dict] = {}  # the notification's context once per template and integration
        logged: set[str] = set()  # templates whose failure on this message was logged

        def notification_context_for(look) -> dict:
            key = (id(look.destination.template), look.integration, look.severity_label)
            if key not in contexts:
                contexts[key] = notification_context(
                    notification, alerts, integration=look.integration, severity_label=look.severity_label
                )
            return contexts[key]

        headline = None
        distinct_templates = {id(look.destination.template) for look in looks.values()}
        if templated and len(distinct_templates) == 1:
            headline = self._headline(templated[0], notification_context_for, logged)

        def decorate(alert: Alert, attachment: dict, limits: AttachmentLimits) -> dict:
            look = look_for(looks, alert)
            if look is None or look.destination.template is None:
                return attachment
            return self._templated_attachment(look, alert, notification, attachment, limits,
                                              notification_context_for, logged)

        return build_message(
            notification, alerts, options, group_count, mentions=_mentions(alerts, looks, options),
            headline=headline, decorate=decorate if templated else None,
        )

    def _headline(self, look, notification_context_for, logged: set[str]) -> str | None:
        template = look.destination.template
        try:
            text = template.render_headline(notification_context_for(look))
        except TemplateRenderError as error:
            self._template_failed(template.name, "headline", error, logged)
            return None
        if not text:
            return None
        return display_text(text, MAX_TEMPLATE_HEADLINE_CHARS, single_line=True) or None

    def _templated_attachment(self, look, alert: Alert, notification: Notification, attachment: dict,
                              limits: AttachmentLimits, notification_context_for, logged: set[str]) -> dict:
        """The attachment with the template's title, text and fields; the built-in one if the template fails."""
        template = look.destination.template
        try:
            context = alert_context(alert, notification, integration=look.integration,
                                    severity_label=look.severity_label, base_context=notification_context_for(look))
            parts = template.render_alert_parts(context)
        except TemplateRenderError as error:
            self._template_failed(template.name, "alert", error, logged)
            return attachment
        decorated = dict(attachment)
        if parts.title:
            decorated["title"] = display_text(parts.title, limits.title_chars, single_line=True)
        if parts.text is not None:
            text = display_text(parts.text, limits.text_chars)
            if text:
                decorated["text"] = text
            else:
                decorated.pop("text", None)
        extra_fields = [
            {"title": display_text(title, limits.title_chars, single_line=True),
             "value": display_text(value, limits.field_value_chars), "short": False}
            for title, value in parts.fields
        ]
        extra_fields = [field for field in extra_fields if field["title"] and field["value"]]
        if extra_fields:
            decorated["fields"] = [*attachment.get("fields", []), *extra_fields]
        return decorated

    def _template_failed(self, name: str, part: str, error: Exception, logged: set[str]) -> None:
        """The alert is not lost: only it (or only the headline) gets the built-in layout. Each failure is counted;
        one ERROR line per template and message names it (a storm of alerts must not flood the log)."""
        if name not in logged:
            logged.add(name)
            what = "the headline" if part == "headline" else "an alert"
            logger.error("template %r failed on %s of a message (%s); it gets the built-in layout", name, what,
                         one_line(str(error))[:300])
        self.on_template_error(name)


def look_for(looks: dict, alert: Alert):
    """The alert's look; merging gives an alert without a fingerprint its group's alertname, which changes its
    identity, so the identity it had before is tried too."""
    look = looks.get(alert_identity(alert))
    if look is None and not alert.fingerprint and "alertname" in alert.labels:
        labels = {name: value for name, value in alert.labels.items() if name != "alertname"}
        look = looks.get(alert_identity(replace(alert, labels=labels)))
    return look


def _looks_by_alert(batch: Batch) -> dict:
    """Each alert's look (the route destination that sent it to this hook), by the alert's identity."""
    looks: dict = {}
    for job in batch.jobs:
        for alert, look in zip(job.alerts, job.looks):
            looks.setdefault(alert_identity(alert), look)
    return looks


def _mentions(alerts: Sequence[Alert], looks: dict, options: FormatOptions) -> list[str] | None:
    """The mentions of the destinations of the firing alerts, most severe first, each once (None: by severity)."""
    if not looks:
        return None
    firing = [alert for alert in sort_alerts(alerts, options.severity_label) if alert.status == FIRING]
    mentions: list[str] = []
    for alert in firing:
        look = look_for(looks, alert)
        for mention in (look.mentions if look is not None else ()):
            mention = one_line(mention)
            if mention and mention not in mentions:
                mentions.append(mention)
    return mentions
