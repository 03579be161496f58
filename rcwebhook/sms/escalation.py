"""SMS escalation: which SMS a notification schedules, and what the SMS worker does with each when it is due.

Pure of HTTP and threads: the Store, Twilio (a sender), Alertmanager (silences) and the clock are passed in, so the
tests drive it on a fake clock. SmsWorker (worker.py) calls process_due() on a thread.

Paging errs toward the phone: an Alertmanager that cannot be asked, a destination removed by a reload, an answer
lost in transit all lead to an SMS rather than to none. Cost is bounded by the per-recipient hourly cap (a digest,
never a flood) and the relay-wide day cap.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import secrets
import threading
import time
from typing import Callable, Mapping, Protocol, Sequence

from ..channels.twilio import SmsOutcome, SmsResult
from ..channels.twilio.segments import segment_count
from ..fingerprint import alert_occurrence
from ..formatting import classify_severity
from ..attachments import alert_name
from ..model import FIRING, RESOLVED, Alert, Notification
from ..store import (
    OPEN_SMS_STATES, SMS_CANCELLED, SMS_DIGESTED, SMS_FAILED, SMS_HELD, SMS_OPTED_OUT, SMS_PENDING, SMS_SENT, SmsAlert, SmsMessage,
    StoreError,
)
from ..safetext import masked_number
from .destination import SmsDestination
from .render import alert_body, digest_body, resolved_body
from .silences import SilenceAnswer

logger = logging.getLogger("rcwebhook.sms")

HOUR_SECONDS = 3600.0
# Twilio lets a number that replied STOP receive again once it replies START; nothing tells us when, so an opted-out
# recipient is tried again a day later (twilio-facts.md, 21610).
OPT_OUT_RETRY_SECONDS = 86400.0
FIRST_RETRY_SECONDS = 5.0
MAX_RETRY_SECONDS = 300.0
DUE_BATCH = 50
# A message that raised something unexpected is tried again this much later, so one bad record cannot spin the worker.
AFTER_INTERNAL_ERROR_SECONDS = 30.0
WARN_EVERY_SECONDS = 300.0
# After Alertmanager could not be asked, SMS due meanwhile go without asking it again for this long (each question
# may cost its 3-8 s timeout, and paging errs toward the phone anyway).
SILENCES_FAILURE_SECONDS = 30.0
# An SMS going out this long after it was scheduled asks Alertmanager first, whatever its delay.
LATE_SECONDS = 60.0
# Before a send the message is saved as attempted with its next attempt this far ahead: if the outcome cannot be
# saved (or the process dies mid-send), the SMS is tried again only then, not in a loop (Twilio's answer may have
# been a 201; a second SMS a minute later beats none, a flood does not).
SEND_CLAIM_SECONDS = 120.0  # repeated warnings (an Alertmanager that cannot be asked) at most this often


class Sender(Protocol):
    def send(self, to: str, body: str, *, status_callback: str = "") -> SmsResult: ...


class SilenceChecker(Protocol):
    def check(self, base_url: str, alerts: Sequence[SmsAlert]) -> SilenceAnswer: ...


def retry_delay_seconds(attempts: int, asked_seconds: float | None = None) -> float:
    """Exponential backoff from FIRST_RETRY_SECONDS to MAX_RETRY_SECONDS; at least what Twilio asked (Retry-After)."""
    delay = min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** max(attempts - 1, 0))
    return max(delay, min(asked_seconds or 0.0, MAX_RETRY_SECONDS))


def utc_day_start(at: float) -> float:
    moment = datetime.datetime.fromtimestamp(at, datetime.timezone.utc)
    return datetime.datetime(moment.year, moment.month, moment.day, tzinfo=datetime.timezone.utc).timestamp()


class Escalation:
    """Schedules SMS for notifications and decides each when it is due."""

    def __init__(
        self,
        store,
        sender: Sender,
        silences: SilenceChecker,
        metrics,
        *,
        destinations: Callable[[], Mapping[str, SmsDestination]],
        max_per_day: int,
        status_callback_url: str = "",
        alertmanager_url: str = "",
        wall_clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: secrets.token_hex(10),
        on_scheduled: Callable[[], None] = lambda: None,
        claim_message: Callable[[str], bool] = lambda sms_id: True,
    ):
        self.claim_message = claim_message  # replicas: only the process that claims a due SMS decides it
        self.store = store
        self.sender = sender
        self.silences = silences
        self.metrics = metrics
        self.destinations = destinations
        self.max_per_day = max_per_day
        self.status_callback_url = status_callback_url
        self.alertmanager_url = alertmanager_url
        self.wall_clock = wall_clock
        self.new_id = new_id
        self.on_scheduled = on_scheduled  # wakes the worker
        self._lock = threading.Lock()  # one decision at a time: the worker and a test SMS share the caps
        self._warned_at: dict[str, float] = {}
        self._next_attempt_at: float | None = None  # of the earliest open SMS, at the last process_due()
        self._silences_failing_until: dict[str, float] = {}  # Alertmanager URL → monotonic time
        self._day_cap_logged_for = -1.0

    # -- scheduling (request threads) ------------------------------------------------------------------------------

    def schedule(self, notification: Notification, targets: Sequence[tuple[SmsDestination, Sequence[Alert]]],
                 severity_label: str) -> int | None:
        """Schedule the SMS this notification asks for; returns how many were scheduled, or None when the Store
        failed (with an ERROR: the relay then answers 503 so that Alertmanager's retry schedules them)."""
        now = self.wall_clock()
        # Occurrences are one SMS per recipient only when the body says which they are (a groupKey and the
        # fingerprints Alertmanager sends); a hand-written body pages every time, as it posts every time.
        deduplicated = bool(notification.group_key) and all(alert.fingerprint for alert in notification.alerts)
        try:
            resolved = [self._sms_alert(alert, severity_label) for alert in notification.alerts
                        if alert.status == RESOLVED]
            if resolved:
                self.store.mark_resolved([alert.id for alert in resolved], now)
            messages: list[SmsMessage] = []
            opted_out = self._opted_out(now)
            for destination, alerts in targets:
                wanted = [alert for alert in alerts if classify_severity(alert.labels, severity_label)
                          in destination.severities]
                firing = [self._sms_alert(alert, severity_label) for alert in wanted if alert.status == FIRING]
                if firing:
                    messages += self._firing_messages(destination, firing, notification, now, opted_out)
                gone = [self._sms_alert(alert, severity_label) for alert in wanted if alert.status == RESOLVED]
                if gone and destination.send_resolved:
                    messages += self._resolved_messages(destination, gone, now, opted_out)
            if not messages:
                return 0
            if deduplicated:
                added = self.store.schedule_sms(messages, now)
            else:
                self.store.save_sms(messages)
                added = messages
        except StoreError as error:
            logger.error("SMS NOT scheduled for %d alert(s) of %s: the state store failed: %s (the Rocket.Chat "
                         "message is unaffected; answered 503 so that Alertmanager's retry schedules them)",
                         len(notification.alerts), alert_name(notification.alerts[0], notification)
                         if notification.alerts else "a notification", error)
            return None
        for message in added:
            logger.info("SMS %s scheduled to %s (destination %s, tier %d) for %s, due in %.0f s", message.kind,
                        masked_number(message.recipient), message.destination, message.tier, _names(message.alerts),
                        max(0.0, message.due_at - now))
        if added:
            self.metrics.sms_scheduled.inc(len(added))
            self.on_scheduled()
        return len(added)

    @staticmethod
    def _sms_alert(alert: Alert, severity_label: str) -> SmsAlert:
        alert_id, fingerprint = alert_occurrence(alert.fingerprint, alert.labels, alert.starts_at)
        return SmsAlert(alert_id, fingerprint, alert.labels.get("alertname", "") or "alert", dict(alert.labels),
                        dict(alert.annotations), classify_severity(alert.labels, severity_label), alert.starts_at)

    def _opted_out(self, now: float) -> set[str]:
        return {recipient for recipient, at in self.store.opt_outs().items() if now - at < OPT_OUT_RETRY_SECONDS}

    def _firing_messages(self, destination: SmsDestination, alerts: list[SmsAlert], notification: Notification,
                         now: float, opted_out: set[str]) -> list[SmsMessage]:
        messages = []
        for tier_index, tier in enumerate(destination.tiers):
            due = now + tier.after_seconds
            if destination.hours is not None:
                due = destination.hours.next_open(due)  # outside SMS_HOURS: sent when they begin, if still firing
            for recipient in tier.numbers():
                if recipient in opted_out:
                    logger.warning("SMS to %s skipped: opted out (replied STOP) less than a day ago",
                                   masked_number(recipient))
                    self.metrics.sms.labels("opted_out").inc()
                    continue
                messages.append(SmsMessage(
                    id=self.new_id(), destination=destination.name, recipient=recipient, kind="alert",
                    alerts=tuple(alerts), status=SMS_PENDING, created_at=now, due_at=due, next_attempt_at=due,
                    updated_at=now, tier=tier_index, check_silences=due > now,
                    alertmanager_url=self.alertmanager_url or notification.external_url,
                ))
        return messages

    def _resolved_messages(self, destination: SmsDestination, alerts: list[SmsAlert], now: float,
                           opted_out: set[str]) -> list[SmsMessage]:
        """SMS_SEND_RESOLVED: tell each recipient who was paged for these alerts that they resolved."""
        by_recipient: dict[str, list[SmsAlert]] = {}
        for alert in alerts:
            paged = {message.recipient for message in self.store.sms_for_alert(alert.id)
                     if message.kind in ("alert", "digest") and message.status in (SMS_SENT, SMS_DIGESTED)
                     and message.destination == destination.name}
            for recipient in sorted(paged - opted_out):
                by_recipient.setdefault(recipient, []).append(alert)
        return [SmsMessage(
            id=self.new_id(), destination=destination.name, recipient=recipient, kind="resolved",
            alerts=tuple(resolved), status=SMS_PENDING, created_at=now, due_at=now, next_attempt_at=now,
            updated_at=now) for recipient, resolved in by_recipient.items()]

    # -- the worker ------------------------------------------------------------------------------------------------

    def process_due(self) -> int:
        """Decide every SMS due now; returns how many were decided. StoreError propagates (the worker logs it)."""
        decided = 0
        with self._lock:
            now = self.wall_clock()
            for due in self.store.due_sms(now, limit=DUE_BATCH):
                if not self.claim_message(due.id):
                    continue  # another process decides it now
                message = self.store.sms(due.id)  # deciding one (a digest) may have decided others of the batch
                if message is None or message.status not in OPEN_SMS_STATES or message.next_attempt_at > now:
                    continue
                try:
                    self._decide(message, now)
                except StoreError:
                    raise
                except Exception:  # noqa: BLE001 - a bug of ours must not stop every other SMS
                    logger.exception("internal error deciding SMS %s to %s; trying again in %.0f s", message.id,
                                     masked_number(message.recipient), AFTER_INTERNAL_ERROR_SECONDS)
                    self.metrics.internal_errors.labels("sms").inc()
                    current = self.store.sms(message.id)  # as it now is: what failed may have decided it already
                    if current is not None and current.status in OPEN_SMS_STATES:
                        self.store.save_sms([dataclasses.replace(
                            current, next_attempt_at=max(current.next_attempt_at, now + AFTER_INTERNAL_ERROR_SECONDS),
                            updated_at=now)])
                decided += 1
            waiting = self.store.open_sms()  # earliest next attempt first: the worker sleeps until that one
            self._next_attempt_at = waiting[0].next_attempt_at if waiting else None
            self.metrics.sms_open.set(len(waiting))
            # Refreshed every round, so the shipped rule stops paging once the UTC day turns, even on a quiet relay.
            self.metrics.sms_day_cap_reached.set(
                1 if len(self.store.sms_sent_times(utc_day_start(now))) >= self.max_per_day else 0)
        return decided

    def next_due_in_seconds(self, default: float) -> float:
        """Until the next open SMS is due, as the last process_due() found (one scheduled since wakes the worker)."""
        if self._next_attempt_at is None:
            return default
        return max(0.0, min(default, self._next_attempt_at - self.wall_clock()))

    def _decide(self, message: SmsMessage, now: float) -> None:
        destination = self.destinations().get(message.destination)
        max_segments = destination.max_segments if destination else 3
        if message.kind in ("alert", "digest"):
            alive = self._still_unacknowledged(message)
            if alive is None:
                return  # cancelled
            message = dataclasses.replace(message, alerts=alive)
        opted_out_at = self.store.opt_outs().get(message.recipient)
        if opted_out_at is not None and now - opted_out_at < OPT_OUT_RETRY_SECONDS:
            self._finish(message, now, SMS_OPTED_OUT, "the recipient replied STOP (opted out) less than a day ago",
                         "opted_out", logging.WARNING)
            return
        if message.kind != "test" and self._day_cap_spent(message, now):
            return
        max_per_hour = destination.max_per_hour if destination else 10
        if message.kind != "test":
            sent = self.store.sms_sent_times(now - HOUR_SECONDS, recipient=message.recipient)
            if len(sent) >= max_per_hour:
                # Allowed once the oldest SMS that fills the cap has left the trailing hour (a second past it,
                # as sms_sent_times counts the boundary in).
                self._hold(message, now, sent[len(sent) - max_per_hour] + HOUR_SECONDS + 1, max_per_hour)
                return
            if message.kind in ("alert", "digest"):  # a resolved SMS goes as itself, never inside a firing digest
                message = self._with_held(message, now)
                if message is None:
                    return
        self._send(message, now, destination, max_segments)

    def _still_unacknowledged(self, message: SmsMessage) -> tuple[SmsAlert, ...] | None:
        """The alerts still firing and, when the SMS was delayed, not silenced or inhibited; None when none is
        (the message is then cancelled)."""
        now = self.wall_clock()
        resolved = self.store.resolved_among([alert.id for alert in message.alerts])
        alive = [alert for alert in message.alerts if alert.id not in resolved]
        if not alive:
            self._finish(message, now, SMS_CANCELLED, "resolved before it was sent", "cancelled", logging.INFO)
            return None
        # Delayed on purpose, or late (held for the hourly cap, resumed after a restart, a digest): somebody may
        # have acknowledged it since.
        if message.check_silences or message.kind == "digest" or now - message.created_at > LATE_SECONDS:
            failed_until = self._silences_failing_until.get(message.alertmanager_url, 0.0)
            if time.monotonic() < failed_until:  # just failed: each due SMS must not wait its own timeout
                return tuple(alive)
            answer = self.silences.check(message.alertmanager_url, alive)
            if answer.error:
                self._silences_failing_until[message.alertmanager_url] = time.monotonic() + SILENCES_FAILURE_SECONDS
                self._warn_once(f"silences:{message.alertmanager_url}",
                                "cannot ask Alertmanager whether alerts are silenced (%s): sending the SMS anyway",
                                answer.error)
            alive = [alert for alert in alive if alert.id not in answer.suppressed]
            if not alive:
                self._finish(message, now, SMS_CANCELLED, "silenced or inhibited in Alertmanager (acknowledged)",
                             "cancelled", logging.INFO)
                return None
        return tuple(alive)

    def _day_cap_spent(self, message: SmsMessage, now: float) -> bool:
        day_start = utc_day_start(now)
        if len(self.store.sms_sent_times(day_start)) < self.max_per_day:
            self.metrics.sms_day_cap_reached.set(0)
            return False
        self.metrics.sms_day_cap_reached.set(1)
        if self._day_cap_logged_for != day_start:
            self._day_cap_logged_for = day_start
            logger.error("SMS_MAX_PER_DAY (%d) reached for today (UTC): no more SMS until midnight UTC; alerts still "
                         "go to Rocket.Chat", self.max_per_day)
        # Nothing more today; tomorrow it goes if still firing and unacknowledged (it is late by then, so
        # Alertmanager is asked, and the hourly cap folds a backlog into one digest per recipient).
        tomorrow = day_start + 86400.0
        reason = f"waiting for the next UTC day: SMS_MAX_PER_DAY ({self.max_per_day}) was reached"
        if message.reason != reason:
            self.metrics.sms.labels("day_cap").inc()
            logger.warning("SMS to %s for %s not sent today: SMS_MAX_PER_DAY (%d) reached; it goes after midnight UTC "
                           "if still firing and unsilenced", masked_number(message.recipient), _names(message.alerts),
                           self.max_per_day)
        self.store.save_sms([dataclasses.replace(
            message, status=SMS_PENDING, due_at=tomorrow, next_attempt_at=tomorrow, updated_at=now, reason=reason)])
        return True

    def _hold(self, message: SmsMessage, now: float, allowed_at: float, max_per_hour: int) -> None:
        if message.status != SMS_HELD:
            logger.warning("SMS to %s for %s held: %d SMS sent to it in the last hour (SMS_MAX_PER_HOUR); it goes "
                           "out in one digest in %.0f s", masked_number(message.recipient), _names(message.alerts),
                           max_per_hour, allowed_at - now)
            self.metrics.sms.labels("held").inc()
        self.store.save_sms([dataclasses.replace(
            message, status=SMS_HELD, next_attempt_at=self._within_hours(message, max(allowed_at, now)), updated_at=now,
            reason=f"held: over SMS_MAX_PER_HOUR ({max_per_hour}) for this recipient")])

    def _within_hours(self, message: SmsMessage, at: float) -> float:
        """`at`, or when its destination's SMS_HOURS next open (a held or retried SMS keeps to them too)."""
        destination = self.destinations().get(message.destination)
        return destination.hours.next_open(at) if destination and destination.hours else at

    def _with_held(self, message: SmsMessage, now: float) -> SmsMessage | None:
        """When the recipient has other SMS held for the hourly cap, one digest carries them all (and this one)."""
        held = [other for other in self.store.open_sms(recipient=message.recipient)
                if other.status == SMS_HELD and other.id != message.id and other.kind in ("alert", "digest")]
        if not held and message.status != SMS_HELD:
            return message
        if not held:  # alone: it goes as itself; SMS_GIVE_UP_SECONDS counts from its release, not from the hold
            return dataclasses.replace(message, status=SMS_PENDING, due_at=now)
        members = sorted([message, *held], key=lambda member: (member.created_at, member.id))
        resolved = self.store.resolved_among([alert.id for member in members for alert in member.alerts])
        alerts = {alert.id: alert for member in members for alert in member.alerts if alert.id not in resolved}
        digest = SmsMessage(
            id=self.new_id(), destination=message.destination, recipient=message.recipient, kind="digest",
            alerts=tuple(alerts.values()), status=SMS_PENDING, created_at=now, due_at=now, next_attempt_at=now,
            updated_at=now, alertmanager_url=message.alertmanager_url,
        )
        self.store.save_sms([digest] + [dataclasses.replace(
            member, status=SMS_DIGESTED, digest_id=digest.id, updated_at=now,
            reason=f"sent in digest {digest.id}") for member in members])
        self.metrics.sms.labels("digested").inc(len(members))
        if not alerts:  # every one of them resolved meanwhile
            self._finish(digest, now, SMS_CANCELLED, "resolved before it was sent", "cancelled", logging.INFO)
            return None
        return digest

    # -- sending ---------------------------------------------------------------------------------------------------

    def _body(self, message: SmsMessage, destination: SmsDestination | None, max_segments: int) -> str:
        if message.kind == "digest":
            return digest_body(message.alerts, max_segments)
        if message.kind == "resolved":
            return resolved_body(message.alerts, max_segments)
        if message.kind == "test":
            return message.body
        return alert_body(message.alerts, destination.template if destination else None, max_segments)

    def _send(self, message: SmsMessage, now: float, destination: SmsDestination | None, max_segments: int) -> None:
        body = self._body(message, destination, max_segments)
        message = dataclasses.replace(message, body=body, attempts=message.attempts + 1, updated_at=now,
                                      status=SMS_PENDING, next_attempt_at=now + SEND_CLAIM_SECONDS)
        self.store.save_sms([message])  # the claim: a StoreError here sends nothing (the worker retries later)
        result = self.sender.send(message.recipient, body, status_callback=self.status_callback_url)
        now = self.wall_clock()
        self._record_outcome(dataclasses.replace(message, updated_at=now), now, result, destination)

    def _record_outcome(self, message: SmsMessage, now: float, result: SmsResult,
                        destination: SmsDestination | None) -> None:
        outcome = result.outcome
        if outcome is SmsOutcome.SENT:
            segments = result.segments or segment_count(message.body)
            self.store.save_sms([dataclasses.replace(
                message, status=SMS_SENT, sid=result.sid, twilio_status=result.twilio_status or "queued",
                segments=segments, sent_at=now, reason="")])
            self.metrics.sms.labels("sent").inc()
            self.metrics.sms_segments.inc(segments)
            self.metrics.sms_auth_failing.set(0)
            logger.info("SMS sent to %s for %s (%d segment(s), Twilio %s %s)", masked_number(message.recipient),
                        _names(message.alerts) if message.alerts else message.kind, segments, result.sid,
                        result.twilio_status)
        elif outcome is SmsOutcome.OPTED_OUT:
            self.store.set_opt_out(message.recipient, now)
            self._finish(message, now, SMS_OPTED_OUT, f"Twilio {result.code}: the recipient replied STOP; tried "
                         "again after a day", "opted_out", logging.WARNING, code=result.code)
        elif outcome is SmsOutcome.PERMANENT:
            self._finish(message, now, SMS_FAILED, f"refused by Twilio ({result.code or result.http_status}): "
                         f"{result.reason}", "refused", logging.ERROR, code=result.code)
        else:  # TRANSIENT, AUTH_FAILED, CONFIG_ERROR: retried until SMS_GIVE_UP_SECONDS (a fixed credential and a
            # restart then still page)
            self._retry(message, now, result, destination)

    def _retry(self, message: SmsMessage, now: float, result: SmsResult, destination: SmsDestination | None) -> None:
        give_up_seconds = destination.give_up_seconds if destination else 3600.0
        if result.outcome in (SmsOutcome.AUTH_FAILED, SmsOutcome.CONFIG_ERROR):
            self.metrics.sms.labels("auth_failed").inc()
            self.metrics.sms_auth_failing.set(1)
            what = ("Twilio refused the credentials (TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN or the API key)"
                    if result.outcome is SmsOutcome.AUTH_FAILED else
                    "Twilio refused the sender (TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID)")
            logger.error("SMS to %s NOT sent: %s: %s %s", masked_number(message.recipient), what, result.code or "",
                         result.reason)
        elif result.lost_in_transit:
            logger.warning("SMS to %s: Twilio's answer was lost in transit (%s); sending it again: a second SMS "
                           "beats none", masked_number(message.recipient), result.reason)
        if now >= message.due_at + give_up_seconds:
            self._finish(message, now, SMS_FAILED, f"gave up after {message.attempts} attempt(s) over "
                         f"{now - message.due_at:.0f} s (SMS_GIVE_UP_SECONDS): {result.reason}", "gave_up",
                         logging.ERROR, code=result.code)
            return
        delay = retry_delay_seconds(message.attempts, result.retry_after_seconds)
        if result.outcome is SmsOutcome.TRANSIENT:
            self.metrics.sms.labels("retried").inc()
            logger.warning("SMS to %s not sent (%s); retrying in %.0f s", masked_number(message.recipient),
                           result.reason or result.code or result.http_status, delay)
        next_attempt = self._within_hours(message, now + delay)
        self.store.save_sms([dataclasses.replace(
            message, status=SMS_PENDING, next_attempt_at=next_attempt, error_code=result.code,
            # Moved into the next SMS_HOURS: SMS_GIVE_UP_SECONDS counts from then, not across the night.
            due_at=next_attempt if next_attempt > now + delay else message.due_at,
            reason=f"retrying: {result.reason}")])

    def _finish(self, message: SmsMessage, now: float, status: str, reason: str, outcome: str, level: int,
                code: int | None = None) -> None:
        self.store.save_sms([dataclasses.replace(message, status=status, reason=reason, updated_at=now,
                                                 error_code=code if code is not None else message.error_code)])
        self.metrics.sms.labels(outcome).inc()
        logger.log(level, "SMS %s to %s for %s: %s", status.replace("_", " "), masked_number(message.recipient),
                   _names(message.alerts) if message.alerts else message.kind, reason)

    def _warn_once(self, key: str, text: str, *args) -> None:
        now = time.monotonic()
        if now - self._warned_at.get(key, -WARN_EVERY_SECONDS) >= WARN_EVERY_SECONDS:
            self._warned_at[key] = now
            logger.warning(text, *args)

    # -- callbacks and test SMS -------------------------------------------------------------------------------------

    def record_status(self, sid: str, status: str, error_code: int | None) -> SmsMessage | None:
        message = self.store.record_sms_status(sid, status, error_code, self.wall_clock())
        self.metrics.sms_status_callbacks.labels(status if status in (
            "queued", "sent", "delivered", "undelivered", "failed") else "other").inc()
        if status in ("undelivered", "failed"):
            logger.error("SMS %s to %s was not delivered: Twilio says %s (error %s)", sid,
                         masked_number(message.recipient) if message else "an unknown recipient", status, error_code)
        return message

    def send_test(self, recipient: str, body: str) -> SmsResult:
        """--send-test-sms: one SMS now, recorded like any other, outside the caps."""
        return self.sender.send(recipient, body, status_callback=self.status_callback_url)


def _names(alerts: Sequence[SmsAlert]) -> str:
    names = [alert.alertname for alert in alerts[:3]]
    return ", ".join(names) + (f" and {len(alerts) - 3} more" if len(alerts) > 3 else "")
