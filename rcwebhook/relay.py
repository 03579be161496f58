"""The Relay service: one webhook body for one integration in, the answer for Alertmanager out (no Flask here).

It parses, logs, routes and queues the body, waits for the delivery core within the deadline, and says truthfully
what came of it: 200 once Rocket.Chat took every alert, 503 (retry) while a retry could help, 502 for refusals.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

from .attachments import alert_name, annotation
from .auth import FailedAuthLimiter, TokenSource
from .config import Config
from .delivery import DeliveryReport, DeliveryState, answer_status, answer_within_seconds
from .dispatcher import Dispatcher, Overloaded
from .events import AlertsReceived, NotificationAnswered
from .formatting import classify_severity
from .logs import request_id_var
from .metrics import Metrics
from .model import FIRING, Notification, PayloadError
from .payload import parse_notification
from .routes import RouteTable
from .safetext import one_line
from .sms.escalation import Escalation

logger = logging.getLogger("rcwebhook")
alert_logger = logging.getLogger("rcwebhook.alerts")

JSON_HINT = (
    "send the Alertmanager webhook payload as a JSON object, e.g. "
    "curl -X POST http://<relay>:8093/webhook -H 'Content-Type: application/json' -d @test-alert.json"
)
ALERT_LOG_LEVEL = {"critical": logging.ERROR, "warning": logging.WARNING}
LOG_SUMMARY_MAX_CHARS = 200
# Threads parsing and queueing bodies at once (the rest wait blocked, off the interpreter lock).
PROCESSING_THREADS = 2
OVERLOAD_RETRY_AFTER_SECONDS = 5
# _schedule_sms: the SMS could not be scheduled (the state store failed): answered 503, Rocket.Chat's
# de-duplication absorbs Alertmanager's retry, which schedules them.
SMS_NOT_SCHEDULED = -1
FAILED_AUTH_LOG_INTERVAL_SECONDS = 60.0
FAILED_AUTH_RETRY_AFTER_SECONDS = 60
FAILED_AUTH_LOG_EVERY_SECONDS = 10.0
AUTH_HINT = (
    "missing or wrong token: send 'Authorization: Bearer <token>', 'X-API-Key: <token>', "
    "'X-Webhook-Secret: <token>' or HTTP Basic with the token as password"
)


@dataclass(frozen=True)
class Answer:
    """What to answer: HTTP status, the JSON document, extra headers."""

    status: int
    document: dict
    headers: Mapping[str, str] = field(default_factory=dict)


def error_answer(status: int, error: str, headers: Mapping[str, str] | None = None, **extra) -> Answer:
    return Answer(status, {"status": "error", "error": error, **extra}, dict(headers or {}))


def decode_json_body(body: bytes) -> object:
    """The body as JSON whatever the Content-Type says (curl -d sends form encoding); ValueError when it is not."""
    if not body.strip():
        raise ValueError("the body is empty")
    try:
        text = body.decode("utf-8-sig")  # tolerates a byte-order mark some editors write
    except UnicodeDecodeError as error:
        raise ValueError(f"the body is not UTF-8 (byte {error.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"the body is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    except RecursionError:
        raise ValueError("the body is nested too deeply to be an Alertmanager payload") from None


def log_alerts(notification: Notification, severity_label: str, integration: str) -> None:
    """One line per alert, at a level that follows its severity, so the log alone tells what fired."""
    for alert in notification.alerts:
        severity = classify_severity(alert.labels, severity_label)
        level = ALERT_LOG_LEVEL.get(severity, logging.INFO) if alert.status == FIRING else logging.INFO
        summary = next(
            (annotation(alert.annotations, key)[1] for key in ("summary", "description", "message")
             if annotation(alert.annotations, key)[1]),
            "",
        )
        instance = alert.labels.get("instance", "")
        alert_logger.log(
            level,
            "[ALERT %s] %s (%s) integration=%s%s%s",
            alert.status.upper(),
            one_line(alert_name(alert, notification))[:LOG_SUMMARY_MAX_CHARS],
            one_line(alert.labels.get(severity_label, "no severity"))[:LOG_SUMMARY_MAX_CHARS],
            integration,
            f" instance={one_line(instance)[:LOG_SUMMARY_MAX_CHARS]}" if instance else "",
            f": {one_line(summary)[:LOG_SUMMARY_MAX_CHARS]}" if summary else "",
        )
    for skipped in notification.skipped:
        logger.error("unusable alert skipped (integration %s): alerts[%d] %s", integration, skipped.index,
                     skipped.reason)


class Relay:
    """Handles bodies for the integrations of the current route table; the table can be replaced while running."""

    def __init__(
        self,
        table: RouteTable,
        dispatcher: Dispatcher,
        config: Config,
        metrics: Metrics,
        *,
        on_new_secret: Callable[[str], None] = lambda secret: None,
        publish: Callable[[object], None] = lambda event: None,
        wall_clock: Callable[[], float] = time.time,
        escalation: Escalation | None = None,
    ):
        self.dispatcher = dispatcher
        self.escalation = escalation  # SMS (issue 11): None when no Twilio is configured
        self.publish = publish  # events for the journal and the live feed; never blocks
        self.wall_clock = wall_clock
        self.config = config
        self.metrics = metrics
        self.on_new_secret = on_new_secret
        # Requests waiting for Rocket.Chat hold a thread each; past the bound, 503 at once (Alertmanager retries).
        self.waiting_slots = threading.BoundedSemaphore(config.max_waiting_requests)
        self.processing_slots = threading.BoundedSemaphore(PROCESSING_THREADS)
        self.answer_within_seconds = answer_within_seconds(config.delivery_deadline_seconds)
        # The table and its integrations' tokens, swapped together as one reference by a reload.
        self._state: tuple[RouteTable, dict[str, TokenSource]] = (table, {})
        self.failed_auth = FailedAuthLimiter()
        self._throttle_logged_at = -FAILED_AUTH_LOG_INTERVAL_SECONDS
        self._refusals_logged: dict[str, tuple[float, int]] = {}  # integration → (last logged, left out since)
        self.use_table(table)

    # -- the table ------------------------------------------------------------------------------------------------

    def use_table(self, table: RouteTable) -> None:
        """Put a (validated) table in force at once: new requests route by it; queued work keeps its destinations."""
        for secret in table.secrets:
            self.on_new_secret(secret)
        self.dispatcher.ensure_hooks(list(table.hooks.values()))
        tokens = {
            name: TokenSource(
                integration.token, integration.token_file, integration.previous_token, on_new_token=self.on_new_secret,
                setting_name=integration.token_file_setting,
            )
            for name, integration in table.integrations.items()
        }
        self.metrics.prime(hook.name for hook in table.hooks.values())
        self.metrics.prime_integrations(table.integrations)
        self._state = (table, tokens)  # one reference: a request sees the old table and tokens, or the new ones

    @property
    def table(self) -> RouteTable:
        return self._state[0]

    def announce(self) -> None:
        """The start-up lines: the route table (URLs redacted), the bounds, and every integration left open."""
        for line in self.table.describe():
            logger.info("%s", line)
        logger.info(
            "pacing %s per hook, de-duplication window %gs, at most %d waiting requests",
            self.config.rate_limit, self.config.dedup_window_seconds, self.config.max_waiting_requests,
        )
        open_integrations = [name for name, integration in self.table.integrations.items() if not integration.token]
        if open_integrations:
            logger.warning(
                "no token for integration(s) %s: their endpoints are open to anyone who can reach this port "
                "(WEBHOOK_TOKEN, or token: in the routes file)", ", ".join(open_integrations),
            )

    @staticmethod
    def _tokens_accept(tokens: TokenSource | None, presented: list[str]) -> bool:
        """Constant-time check of the presented secrets against the integration's tokens; open without one."""
        if tokens is None:
            return False
        if not tokens.enabled:
            return True
        matched = False
        for candidate in presented or [""]:
            matched |= tokens.accepts(candidate)
        return matched

    def check_access(self, integration: str, presented: list[str], address: str) -> Answer | None:
        """None when the request may proceed; else the answer: 404 unknown integration, 401, or 429 past the limits.

        Only failed authentications are slowed: a client with the right token is never refused for volume.
        """
        table, tokens = self._state  # once: a reload between two reads would mix two tables
        if integration not in table.integrations:
            return error_answer(404, "unknown integration")
        if self._tokens_accept(tokens.get(integration), presented):
            return None
        self.metrics.auth_failures.labels(integration).inc()
        exceeded = self.failed_auth.record_failure(address)
        if exceeded:
            now = time.monotonic()
            if now - self._throttle_logged_at >= FAILED_AUTH_LOG_INTERVAL_SECONDS:  # a spray must not flood the log
                self._throttle_logged_at = now
                where = f"from {address}" if exceeded == "address" else "from all addresses together"
                logger.warning("too many failed authentications %s: answering 429 to further failures", where)
            return error_answer(429, "too many failed authentications; wait a minute",
                                {"Retry-After": str(FAILED_AUTH_RETRY_AFTER_SECONDS)})
        self._log_refused(integration, address)
        return error_answer(401, AUTH_HINT, {"WWW-Authenticate": 'Bearer realm="rocketchat-webhook"'})

    def _log_refused(self, integration: str, address: str) -> None:
        """A WARNING for a wrong or missing token, so an operator whose Alertmanager has the wrong one sees it; at
        most one line per integration every FAILED_AUTH_LOG_EVERY_SECONDS, counting what it left out."""
        now = time.monotonic()
        logged_at, unlogged = self._refusals_logged.get(integration, (-FAILED_AUTH_LOG_EVERY_SECONDS, 0))
        if now - logged_at < FAILED_AUTH_LOG_EVERY_SECONDS:
            self._refusals_logged[integration] = (logged_at, unlogged + 1)
            return
        self._refusals_logged[integration] = (now, 0)
        more = f" ({unlogged} more since the last such line)" if unlogged else ""
        logger.warning("refused a request for integration %s from %s: missing or wrong token (answered 401)%s",
                       integration, address, more)

    # -- a body ---------------------------------------------------------------------------------------------------

    def overloaded(self, reason: str, kind: str) -> Answer:
        self.metrics.overloaded.labels(kind).inc()
        logger.error("answered 503 at once: %s", reason)
        return error_answer(503, f"the relay is overloaded: {reason}; retry later",
                            {"Retry-After": str(OVERLOAD_RETRY_AFTER_SECONDS)})

    def handle(self, integration: str, body: bytes, started: float) -> Answer:
        """Deliver one body received for the integration at `started` (the dispatcher's clock)."""
        if not self.waiting_slots.acquire(blocking=False):
            return self.overloaded(
                f"{self.config.max_waiting_requests} requests already waiting (MAX_WAITING_REQUESTS)",
                "waiting_requests",
            )
        self.metrics.requests_waiting.inc()
        try:
            return self._deliver(integration, body, started)
        finally:
            self.metrics.requests_waiting.dec()
            self.waiting_slots.release()

    def _deliver(self, integration: str, body: bytes, started: float) -> Answer:
        dispatcher = self.dispatcher

        def seconds_left() -> float:
            return self.answer_within_seconds - (dispatcher.clock() - started)

        # Few threads at a time do the CPU work of taking a body in: in a storm, a hundred threads all runnable
        # at once would make /health and /ready wait for the interpreter lock behind every one of them.
        if not self.processing_slots.acquire(timeout=max(0.0, seconds_left())):
            return self.overloaded("no time left to take the body in before the delivery deadline", "intake")
        try:
            accepted = self._accept(integration, body)
        finally:
            self.processing_slots.release()
        if isinstance(accepted, Answer):
            return accepted
        notification, parts, submission, sms_scheduled = accepted
        if isinstance(submission, Answer):  # parsed but not queued (overloaded): journaled with its answer
            if sms_scheduled is not None:
                submission.document["sms_scheduled"] = max(sms_scheduled, 0)
            self._journal_answer(integration, notification, submission, started, ())
            return submission
        # The deadline is enforced here, where the request waits, whatever the outbound call is doing. When the
        # hook cannot post again before it (a 429 window, a spent budget), the answer is 503 at once: the work
        # stays queued, and waiting would only hold a thread and a waiting slot.
        if dispatcher.retry_after_seconds(submission.jobs) < seconds_left():
            dispatcher.wait(submission, seconds_left())
        reports = [DeliveryReport.of(job) for job in submission.jobs]
        status, retry_after_seconds = answer_status(reports, dispatcher.retry_after_seconds(submission.jobs))
        document = {
            "status": "ok" if status == 200 else "error",
            "processed": len(notification.alerts),
            "alerts": [alert_name(alert, notification) for alert in notification.alerts],
            "messages": len(parts),
            "skipped": len(notification.skipped),
            "integration": integration,
        }
        if sms_scheduled is not None:  # SMS are asynchronous: the status stays about Rocket.Chat
            document["sms_scheduled"] = max(sms_scheduled, 0)
        if sms_scheduled == SMS_NOT_SCHEDULED and status == 200:
            status, retry_after_seconds = 503, max(retry_after_seconds or 0, OVERLOAD_RETRY_AFTER_SECONDS)
            document["status"] = "error"
            document["error"] = "the SMS of these alerts could not be scheduled (the state store failed); retry later"
        if any(submission.joined):
            document["deduplicated"] = True
        if any(report.state != DeliveryState.DELIVERED for report in reports):
            document["destinations"] = [report.as_dict() for report in reports]
        if status != 200:
            document.setdefault("error", "not every alert reached Rocket.Chat" + (
                "; retry later" if status == 503 else "; see destinations and the relay's log"
            ))
            log = logger.error
        else:
            log = logger.info
        log(
            "answered %d: %d alert(s) from %s to %s%s", status, len(notification.alerts), integration,
            ", ".join(f"{report.destination}={report.state}" for report in reports) or "nowhere",
            " (deduplicated)" if any(submission.joined) else "",
        )
        self.metrics.notifications_received.labels(integration, str(status)).inc()
        headers = {"Retry-After": str(retry_after_seconds)} if retry_after_seconds else {}
        answer = Answer(status, document, headers)
        self._journal_answer(integration, notification, answer, started,
                             tuple((report.destination, report.state) for report in reports))
        return answer

    def _journal_answer(self, integration: str, notification: Notification, answer: Answer, started: float,
                        destinations: tuple[tuple[str, str], ...]) -> None:
        elapsed_ms = (self.dispatcher.clock() - started) * 1000
        self.publish(NotificationAnswered(
            request_id_var.get(), integration, notification, answer.status, elapsed_ms,
            self.wall_clock() - elapsed_ms / 1000, destinations,
        ))

    def _accept(self, integration: str, body: bytes):
        """Parse, log, route, schedule SMS for and queue one body: (notification, parts, submission, SMS scheduled),
        or the error Answer."""
        try:
            document = decode_json_body(body)
        except ValueError as error:
            return error_answer(400, str(error), hint=JSON_HINT)
        try:
            notification = parse_notification(document)
        except PayloadError as error:
            extra = {"detail": [problem.as_dict() for problem in error.problems]} if error.problems else {}
            if error.status == 400:
                extra["hint"] = JSON_HINT
            return error_answer(error.status, error.message, **extra)
        table = self.table  # one table for the whole body, even if a reload lands meanwhile
        if integration not in table.integrations:  # removed by a reload since the request was let in
            return error_answer(404, "unknown integration")
        severity_label = table.integrations[integration].severity_label
        log_alerts(notification, severity_label, integration)
        severities = tuple(classify_severity(alert.labels, severity_label) for alert in notification.alerts)
        for alert, severity in zip(notification.alerts, severities):
            self.metrics.alerts_received.labels(alert.status, severity).inc()
        self.publish(AlertsReceived(request_id_var.get(), integration, notification, severities, self.wall_clock(),
                                    len(body)))
        if notification.skipped:
            self.metrics.alerts_skipped.inc(len(notification.skipped))
        parts = table.route(integration, notification)
        sms_scheduled = self._schedule_sms(table, integration, notification, severity_label)
        try:
            submission = self.dispatcher.submit(notification, parts, len(body))
        except Overloaded as error:
            return notification, parts, self.overloaded(str(error), error.kind), sms_scheduled
        return notification, parts, submission, sms_scheduled

    def _schedule_sms(self, table: RouteTable, integration: str, notification: Notification,
                      severity_label: str) -> int | None:
        """How many SMS this body scheduled; None when no SMS destination exists (the answer then says nothing).

        Scheduled before Rocket.Chat is tried: an SMS never waits for, or depends on, Rocket.Chat's answer."""
        if self.escalation is None or not table.sms_destinations:
            return None
        try:
            scheduled = self.escalation.schedule(notification, table.sms_route(integration, notification),
                                                 severity_label)
        except Exception:  # noqa: BLE001 - a bug of ours in the SMS path must not stop the Rocket.Chat message
            logger.exception("internal error scheduling SMS (integration %s); answered 503 so Alertmanager retries",
                             integration)
            self.metrics.internal_errors.labels("sms").inc()
            scheduled = None
        return SMS_NOT_SCHEDULED if scheduled is None else scheduled
