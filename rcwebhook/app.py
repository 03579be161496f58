"""The Flask app factory: routes only translate HTTP to the core and back."""

from __future__ import annotations

import hmac
import threading
import time
import json
import logging
import os
from typing import Mapping

from flask import Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from . import __version__
from .attachments import alert_name, annotation
from .auth import FailedAuthLimiter, TokenSource
from .client import RocketChatClient
from .config import Config, ConfigError, describe_config, load_config, load_dotenv_from_working_directory
from .delivery import DeliveryReport, DeliveryState, answer_status
from .dispatcher import Dispatcher, Overloaded
from .formatting import classify_severity
from .metrics import Metrics
from .logs import configure_logging, install_exception_hooks, new_request_id, quiet_library_loggers, request_id_var
from .model import FIRING, Notification, PayloadError
from .payload import parse_notification
from .redact import Redactor
from .routing import format_options, route_alerts
from .safetext import one_line

logger = logging.getLogger("rcwebhook")
alert_logger = logging.getLogger("rcwebhook.alerts")

SERVICE_NAME = "rocketchat-webhook-adapter"
JSON_HINT = (
    "send the Alertmanager webhook payload as a JSON object, e.g. "
    "curl -X POST http://<relay>:8093/webhook -H 'Content-Type: application/json' -d @test-alert.json"
)
ALERT_LOG_LEVEL = {"critical": logging.ERROR, "warning": logging.WARNING}
LOG_SUMMARY_MAX_CHARS = 200
# Threads parsing and queueing bodies at once (the rest wait blocked, off the interpreter lock).
PROCESSING_THREADS = 2
FAILED_AUTH_LOG_INTERVAL_SECONDS = 60.0


def json_response(document: dict, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """A compact JSON answer built from a dict."""
    return Response(
        json.dumps(document, ensure_ascii=False, separators=(",", ":")), status=status, headers=headers,
        mimetype="application/json",
    )


def error_response(status: int, error: str, headers: Mapping[str, str] | None = None, **extra) -> Response:
    return json_response({"status": "error", "error": error, **extra}, status, headers)


def _presented_token() -> str:
    """The webhook token as Alertmanager's authorization (Bearer) or an X-API-Key header sends it."""
    return _bearer_token() or request.headers.get("X-API-Key", "").strip()


def _bearer_token() -> str:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


def bearer_token_matches(expected_token: str) -> bool:
    """Constant-time check of an Authorization: Bearer token."""
    return hmac.compare_digest(_bearer_token().encode("utf-8"), expected_token.encode("utf-8"))


def count_alerts(metrics: Metrics, notification: Notification, severity_label: str) -> None:
    for alert in notification.alerts:
        metrics.alerts_received.labels(alert.status, classify_severity(alert.labels, severity_label)).inc()
    if notification.skipped:
        metrics.alerts_skipped.inc(len(notification.skipped))


READ_CHUNK_BYTES = 64 * 1024


def read_body(max_bytes: int) -> bytes | None:
    """The request body, or None when it is longer than max_bytes (a body without a length is read only that far)."""
    if request.content_length is not None:
        return request.get_data(cache=False)
    if not request.environ.get("wsgi.input_terminated"):
        return b""  # no length and no end marker: WSGI gives no safe way to read it
    # Werkzeug's own limit cuts such a body short without an error, so the limit is counted here.
    stream = request.environ["wsgi.input"]
    chunks, total = [], 0
    while total <= max_bytes:
        chunk = stream.read(min(READ_CHUNK_BYTES, max_bytes + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
    return None


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


def log_alerts(notification: Notification, severity_label: str) -> None:
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
            "[ALERT %s] %s (%s)%s%s",
            alert.status.upper(),
            one_line(alert_name(alert, notification))[:LOG_SUMMARY_MAX_CHARS],
            one_line(alert.labels.get(severity_label, "no severity"))[:LOG_SUMMARY_MAX_CHARS],
            f" instance={one_line(instance)[:LOG_SUMMARY_MAX_CHARS]}" if instance else "",
            f": {one_line(summary)[:LOG_SUMMARY_MAX_CHARS]}" if summary else "",
        )
    for skipped in notification.skipped:
        logger.error("unusable alert skipped: alerts[%d] %s", skipped.index, skipped.reason)


def create_app(
    environ: Mapping[str, str] | None = None,
    *,
    client: RocketChatClient | None = None,
    setup_logging: bool | None = None,
) -> Flask:
    """Build the relay; with no mapping it reads .env and the environment and sets up logging."""
    if environ is None:
        load_dotenv_from_working_directory()
        environ = os.environ
        setup_logging = True if setup_logging is None else setup_logging
    config = load_config(environ)
    # Logs keep URLs that hold no secret (where the relay listens, an alert's links); Rocket.Chat's error texts
    # lose every URL, as an answer to Alertmanager must name no destination by URL.
    redactor = Redactor(config.secrets, strip_urls=False)
    if setup_logging:
        try:
            configure_logging(config, redactor)
        except OSError as error:  # checked at load time, but the file can change before it is opened
            raise ConfigError(f"LOG_FILE={config.log_file!r} cannot be opened: {error.strerror}") from None
    quiet_library_loggers()

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes  # bounds reading a body sent without a length
    app.extensions["rcwebhook.config"] = config
    metrics = Metrics()
    metrics.prime(destination.name for destination in config.destinations)
    app.extensions["rcwebhook.metrics"] = metrics
    if setup_logging:
        install_exception_hooks(on_error=metrics.internal_errors.labels("thread").inc)
    dispatcher = Dispatcher(
        client or RocketChatClient(Redactor(config.secrets)), config, format_options(config), metrics=metrics
    ).start()
    app.extensions["rcwebhook.dispatcher"] = dispatcher
    # Requests waiting for Rocket.Chat hold a thread each; past the bound, 503 at once (Alertmanager retries).
    waiting_slots = threading.BoundedSemaphore(config.max_waiting_requests)
    processing_slots = threading.BoundedSemaphore(PROCESSING_THREADS)
    # Answer Alertmanager a little before the deadline so the answer itself is never late.
    answer_within_seconds = max(0.1, config.delivery_deadline_seconds - 0.2)

    for line in describe_config(config):
        logger.info("%s", line)
    logger.info(
        "pacing %s per hook, de-duplication window %gs, at most %d waiting requests",
        config.rate_limit, config.dedup_window_seconds, config.max_waiting_requests,
    )
    tokens = TokenSource(
        config.webhook_token, config.webhook_token_file, config.webhook_token_previous, on_new_token=redactor.add
    )
    failed_auth = FailedAuthLimiter()
    if not tokens.enabled:
        logger.warning("WEBHOOK_TOKEN is not set: POST /webhook is open to anyone who can reach this port")

    throttle_log_state = {"last_logged": -FAILED_AUTH_LOG_INTERVAL_SECONDS}

    def log_throttled_authentication(exceeded: str, address: str) -> None:
        """One WARNING a minute at most: a spray of guesses must not also flood the log."""
        now = time.monotonic()
        if now - throttle_log_state["last_logged"] >= FAILED_AUTH_LOG_INTERVAL_SECONDS:
            throttle_log_state["last_logged"] = now
            where = f"from {address}" if exceeded == "address" else "from all addresses together"
            logger.warning("too many failed authentications %s: answering 429 to further failures", where)

    def overloaded(reason: str, kind: str) -> Response:
        metrics.overloaded.labels(kind).inc()
        logger.error("answered 503 at once: %s", reason)
        return error_response(503, f"the relay is overloaded: {reason}; retry later", {"Retry-After": "5"})

    @app.post("/webhook")
    def receive_webhook() -> Response:
        if tokens.enabled and not tokens.accepts(_presented_token()):
            metrics.auth_failures.inc()
            address = request.remote_addr or "unknown"
            exceeded = failed_auth.record_failure(address)
            if exceeded:
                # Only failed authentications are slowed: a client with the right token is never refused for volume.
                log_throttled_authentication(exceeded, address)
                return error_response(429, "too many failed authentications; wait a minute", {"Retry-After": "60"})
            return error_response(
                401,
                "missing or wrong token: send 'Authorization: Bearer <token>' or 'X-API-Key: <token>'",
                {"WWW-Authenticate": 'Bearer realm="rocketchat-webhook"'},
            )
        if request.content_length is not None and request.content_length > config.max_body_bytes:
            return too_large()
        # The deadline counts from when the request reached Flask, time spent queued for a thread included.
        started = request.environ.get("rcwebhook.started", dispatcher.clock())
        body = read_body(config.max_body_bytes)  # before taking a slot: a slow sender holds none
        if body is None:
            return too_large()
        if not waiting_slots.acquire(blocking=False):
            return overloaded(
                f"{config.max_waiting_requests} requests already waiting (MAX_WAITING_REQUESTS)", "waiting_requests"
            )
        metrics.requests_waiting.inc()
        try:
            return deliver_request(body, started)
        finally:
            metrics.requests_waiting.dec()
            waiting_slots.release()

    def deliver_request(body: bytes, started: float) -> Response:
        def seconds_left() -> float:
            return answer_within_seconds - (dispatcher.clock() - started)

        # Few threads at a time do the CPU work of taking a body in: in a storm, a hundred threads all runnable
        # at once would make /health and /ready wait for the interpreter lock behind every one of them.
        if not processing_slots.acquire(timeout=max(0.0, seconds_left())):
            return overloaded("no time left to take the body in before the delivery deadline", "intake")
        try:
            accepted = accept_notification(body)
        finally:
            processing_slots.release()
        if isinstance(accepted, Response):
            return accepted
        notification, parts, submission = accepted
        # The deadline is enforced here, where the request waits, whatever the outbound call is doing. When the
        # hook cannot post again before it (a 429 window, a spent budget), the answer is 503 at once: the work
        # stays queued, and waiting would only hold a thread and a waiting slot.
        if dispatcher.retry_after_seconds(submission.jobs) < seconds_left():
            dispatcher.wait(submission, seconds_left())
        reports = [DeliveryReport.of(job) for job in submission.jobs]
        status, retry_after_seconds = answer_status(reports, dispatcher.retry_after_seconds(submission.jobs))
        answer = {
            "status": "ok" if status == 200 else "error",
            "processed": len(notification.alerts),
            "alerts": [alert_name(alert, notification) for alert in notification.alerts],
            "messages": len(parts),
            "skipped": len(notification.skipped),
        }
        if any(submission.joined):
            answer["deduplicated"] = True
        if any(report.state != DeliveryState.DELIVERED for report in reports):
            answer["destinations"] = [report.as_dict() for report in reports]
        if status != 200:
            answer["error"] = "not every alert reached Rocket.Chat" + (
                "; retry later" if status == 503 else "; see destinations and the relay's log"
            )
            log = logger.error
        else:
            log = logger.info
        log(
            "answered %d: %d alert(s) to %s%s", status, len(notification.alerts),
            ", ".join(f"{report.destination}={report.state}" for report in reports) or "nowhere",
            " (deduplicated)" if any(submission.joined) else "",
        )
        headers = {"Retry-After": str(retry_after_seconds)} if retry_after_seconds else None
        return json_response(answer, status, headers)

    def accept_notification(body: bytes):
        """Parse, log, route and queue one body: (notification, parts, submission), or the error Response."""
        try:
            document = decode_json_body(body)
        except ValueError as error:
            return error_response(400, str(error), hint=JSON_HINT)
        try:
            notification = parse_notification(document)
        except PayloadError as error:
            extra = {"detail": [problem.as_dict() for problem in error.problems]} if error.problems else {}
            if error.status == 400:
                extra["hint"] = JSON_HINT
            return error_response(error.status, error.message, **extra)
        log_alerts(notification, config.severity_label)
        count_alerts(metrics, notification, config.severity_label)
        parts = route_alerts(notification, config)
        try:
            submission = dispatcher.submit(notification, parts, len(body))
        except Overloaded as error:
            return overloaded(str(error), error.kind)
        return notification, parts, submission

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        if config.metrics_token and not bearer_token_matches(config.metrics_token):
            return error_response(
                401, "missing or wrong token: send 'Authorization: Bearer <METRICS_TOKEN>'",
                {"WWW-Authenticate": 'Bearer realm="rocketchat-webhook metrics"'},
            )
        return Response(generate_latest(metrics.registry), mimetype=CONTENT_TYPE_LATEST)

    @app.before_request
    def start_request() -> None:
        request.environ["rcwebhook.started"] = time.monotonic()
        request_id = new_request_id(request.headers.get("X-Request-ID"))
        request.environ["rcwebhook.request_id"] = request_id
        request.environ["rcwebhook.request_id_token"] = request_id_var.set(request_id)

    @app.after_request
    def count_request(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics.requests.labels(route, request.method, str(response.status_code)).inc()
        started = request.environ.get("rcwebhook.started")
        if started is not None:
            metrics.request_duration.labels(route).observe(time.monotonic() - started)
        if "rcwebhook.request_id" in request.environ:
            response.headers["X-Request-ID"] = request.environ["rcwebhook.request_id"]
        return response

    @app.teardown_request
    def end_request(_error: BaseException | None) -> None:
        token = request.environ.pop("rcwebhook.request_id_token", None)
        if token is not None:
            request_id_var.reset(token)

    @app.get("/ready")
    def ready() -> Response:
        if dispatcher.ready:
            return json_response({"status": "ready"})
        return error_response(503, "the delivery machinery is not running (starting or shutting down)")

    @app.get("/health")
    def health() -> Response:
        # 200 only while every hook's worker runs: a liveness probe (or systemd's watchdog) then restarts a relay
        # whose delivery machinery cannot run, rather than leave a channel silent behind a healthy answer.
        unhealthy = dispatcher.check_workers()
        if unhealthy:
            return json_response(
                {"service": SERVICE_NAME, "status": "unhealthy", "version": __version__,
                 "error": "the post workers of these destinations are not running: " + ", ".join(unhealthy)},
                503,
            )
        return json_response({"service": SERVICE_NAME, "status": "healthy", "version": __version__})

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_error: Exception | None = None) -> Response:
        metrics.bodies_too_large.inc()
        logger.error("refused a body larger than MAX_BODY_BYTES=%d", config.max_body_bytes)
        return error_response(
            413,
            f"the body is larger than {config.max_body_bytes} bytes (MAX_BODY_BYTES); "
            "lower max_alerts in Alertmanager's receiver or raise MAX_BODY_BYTES",
        )

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        headers = {"Allow": ", ".join(error.valid_methods)} if getattr(error, "valid_methods", None) else None
        return error_response(error.code or 500, error.description or error.name, headers)

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception) -> Response:
        # A bug of ours: logged with its traceback (redacted), answered 500 so Alertmanager retries, no traceback out.
        logger.exception("internal error while handling %s %s", request.method, request.path)
        return error_response(500, "internal error in the relay; see its log")

    return app
