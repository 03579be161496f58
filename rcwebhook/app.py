"""The Flask app factory: routes only translate HTTP to the core and back."""

from __future__ import annotations

import hmac
import time
import json
import logging
import os
from typing import Mapping

from flask import Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import BadRequest, HTTPException, RequestEntityTooLarge

from . import __version__
from .channels.rocketchat import RocketChatChannel, format_options
from .client import RocketChatClient
from .config import ConfigError, load_config, load_dotenv_from_working_directory
from .dispatcher import Dispatcher
from .events import EventBus
from .journal import Journal, open_state
from .live import LiveFeed, register_live_route
from .metrics import Metrics
from .logs import configure_logging, install_exception_hooks, new_request_id, quiet_library_loggers, request_id_var
from .redact import Redactor
from .relay import Answer, Relay
from .reload import RouteReloader
from .routes import DEFAULT_INTEGRATION
from .routes_file import load_route_table
from .shared import open_coordination
from .status import StatusView
from .web.access import StatusAccess, authorization_secrets
from .web.api import api_blueprint
from .web.status_page import status_page_blueprint
from .web.twilio_status import twilio_status_blueprint

logger = logging.getLogger("rcwebhook")

SERVICE_NAME = "rocketchat-webhook-adapter"
DEFER_SMS_WORKER_VARIABLE = "RCWEBHOOK_PRELOADED"
SMS_STOP_SECONDS = 15.0  # above the Twilio client's 10 s exchange timeout  # set by gunicorn.conf.py when the app is built in the master


def json_response(document: dict, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """A compact JSON answer built from a dict."""
    return Response(
        json.dumps(document, ensure_ascii=False, separators=(",", ":")), status=status, headers=headers,
        mimetype="application/json",
    )


def error_response(status: int, error: str, headers: Mapping[str, str] | None = None, **extra) -> Response:
    return json_response({"status": "error", "error": error, **extra}, status, headers)


def presented_secrets() -> list[str]:
    """Every secret the request offers: Bearer (Alertmanager's authorization / credentials_file), X-API-Key,
    X-Webhook-Secret (the SRE Copilot seed's header) and the password of HTTP Basic (Alertmanager's basic_auth)."""
    presented = authorization_secrets()
    for header in ("X-API-Key", "X-Webhook-Secret"):
        if request.headers.get(header, "").strip():
            presented.append(request.headers[header].strip())
    return presented


def _bearer_token() -> str:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


def bearer_token_matches(expected_token: str) -> bool:
    """Constant-time check of an Authorization: Bearer token."""
    return hmac.compare_digest(_bearer_token().encode("utf-8"), expected_token.encode("utf-8"))


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
        try:
            chunk = stream.read(min(READ_CHUNK_BYTES, max_bytes + 1 - total))
        except OSError as error:  # gunicorn's InvalidChunkSize, ChunkMissingTerminator, NoMoreData
            raise BadRequest(f"the chunked body is broken ({type(error).__name__})") from None
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
    return None


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

    table = load_route_table(config, environ)
    for secret in table.secrets:
        redactor.add(secret)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes  # bounds reading a body sent without a length
    app.extensions["rcwebhook.config"] = config
    metrics = Metrics()
    app.extensions["rcwebhook.metrics"] = metrics
    if setup_logging:
        install_exception_hooks(on_error=metrics.internal_errors.labels("thread").inc)
    channel = RocketChatChannel(
        client or RocketChatClient(Redactor(table.secrets)), format_options(config),
        on_template_error=lambda name: metrics.template_failures.labels(name).inc(),
    )
    # State: the journal's store, written behind delivery by the event thread; the live feed follows it.
    store, fallback_reason = open_state(config)
    # Replicas on Redis (shared.py): the shared budget, leases, claims, the live feed across processes.
    coordination = open_coordination(config, store)
    if coordination.shared:
        store.on_down = coordination.report_down
    journal = Journal(store, config, metrics, fallback_reason=fallback_reason)
    events = EventBus(on_dropped=metrics.events_dropped.inc)
    feed = LiveFeed(config.max_live_clients, metrics,
                    publish=coordination.publish_live if coordination.shared else None)
    events.subscribe(journal.on_events)  # first: a live client reacting to an event finds it in the journal
    events.subscribe(feed.on_events)
    app.extensions.update({"rcwebhook.journal": journal, "rcwebhook.events": events, "rcwebhook.live": feed,
                           "rcwebhook.coordination": coordination})
    dispatcher = Dispatcher(channel, list(table.hooks.values()), config, metrics=metrics, publish=events.publish,
                            remembered_groups=journal.load_groups, remembered_threads=journal.load_threads,
                            coordination=coordination, threads_since=journal.threads_since)
    if coordination.shared:
        def on_shared_state(up: bool) -> None:
            metrics.state_backend_up.set(1 if up else 0)
            store.set_up(up)
            dispatcher.on_shared_state(up)

        coordination.on_change = on_shared_state
        coordination.start(on_live=feed.offer)
    dispatcher.start()  # reads the de-duplication memory back first
    events.start()
    app.extensions["rcwebhook.dispatcher"] = dispatcher

    def add_secret(secret: str) -> None:
        redactor.add(secret)
        if isinstance(channel.client, RocketChatClient):
            channel.client.redactor.add(secret)

    escalation, sms_worker = _sms_escalation(config, store, metrics, lambda: relay.table.sms_destinations,
                                             coordination)
    relay = Relay(table, dispatcher, config, metrics, on_new_secret=add_secret, publish=events.publish,
                  escalation=escalation)
    app.extensions["rcwebhook.relay"] = relay
    app.extensions["rcwebhook.sms_worker"] = sms_worker
    reloader = RouteReloader(relay, config, environ, metrics)
    app.extensions["rcwebhook.reloader"] = reloader

    relay.announce()
    restored = dispatcher.restored_groups
    logger.info("state in %s%s", store.description,
                f" ({restored} de-duplication entries read back)" if restored else "")
    if not config.status_token:
        logger.info("the status page (GET /), /api/v1 and /ws answer on the loopback interface only (STATUS_TOKEN "
                    "unset)")

    def answer(result: Answer) -> Response:
        return json_response(result.document, result.status, result.headers or None)

    access = StatusAccess(config.status_token, answer)
    status_view = StatusView(journal, dispatcher.pacing, lambda: (feed.clients_count, config.max_live_clients),
                             stale_after_seconds=config.stale_after_seconds, sms_enabled=escalation is not None)
    app.register_blueprint(status_page_blueprint(status_view.snapshot, access.authorize))
    app.register_blueprint(api_blueprint(journal, access.authorize, answer))
    register_live_route(app, feed, access.authorize)
    if escalation is not None:
        app.register_blueprint(twilio_status_blueprint(
            escalation, config.twilio.auth_token, config.sms_status_callback_url, answer,
            on_forged=metrics.sms_status_callbacks.labels("forged").inc))
        # gunicorn --preload builds the app in the master, which must not send SMS beside its worker: there the
        # worker's post_worker_init starts it (gunicorn.conf.py); everywhere else it starts now.
        if not os.environ.get(DEFER_SMS_WORKER_VARIABLE):
            sms_worker.start()
        _announce_sms(config, table)

    # The integration's default comes from the function, not the rule: a rule default would make Werkzeug redirect
    # POST /webhook/default to /webhook (308), which many clients do not follow.
    @app.post("/webhook")
    @app.post("/webhook/<integration>")
    def receive_webhook(integration: str = DEFAULT_INTEGRATION) -> Response:
        refused = relay.check_access(integration, presented_secrets(), request.remote_addr or "unknown")
        if refused is not None:
            return answer(refused)
        if request.content_length is not None and request.content_length > config.max_body_bytes:
            return too_large()
        # The deadline counts from when the request reached Flask, time spent queued for a thread included.
        started = request.environ.get("rcwebhook.started", dispatcher.clock())
        body = read_body(config.max_body_bytes)  # before taking a slot: a slow sender holds none
        if body is None:
            return too_large()
        return answer(relay.handle(integration, body, started))

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        if config.metrics_token and not bearer_token_matches(config.metrics_token):
            return error_response(
                401, "missing or wrong token: send 'Authorization: Bearer <METRICS_TOKEN>'",
                {"WWW-Authenticate": 'Bearer realm="rocketchat-webhook metrics"'},
            )
        # content_type, not mimetype: Flask would add a second charset to CONTENT_TYPE_LATEST's own.
        return Response(generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST)

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
        if sms_worker is not None:
            sms_worker.ensure_running()  # after a fork (gunicorn --preload), or if it died: probes bring it back
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


def _sms_escalation(config, store, metrics: Metrics, destinations, coordination):
    """The SMS escalation and its worker when Twilio is configured, else (None, None)."""
    if config.twilio is None:
        return None, None
    from .channels.twilio import TwilioClient
    from .sms.escalation import Escalation
    from .sms.silences import AlertmanagerSilences
    from .sms.worker import SmsWorker

    metrics.prime_sms()
    holder: list[SmsWorker] = []
    escalation = Escalation(
        store, TwilioClient(config.twilio, redactor=Redactor(config.secrets)),
        AlertmanagerSilences(config.alertmanager_token, token_url=config.alertmanager_url), metrics, destinations=destinations,
        max_per_day=config.sms_max_per_day, status_callback_url=config.sms_status_callback_url,
        alertmanager_url=config.alertmanager_url, on_scheduled=lambda: holder[0].wake() if holder else None,
        claim_message=_sms_claim(coordination),
    )
    holder.append(SmsWorker(escalation))
    return escalation, holder[0]


def _sms_claim(coordination):
    """With replicas, one process decides each due SMS: a lease per message (no second SMS from a second process)."""
    if not coordination.shared:
        return lambda sms_id: True
    from .shared import Unavailable
    from .sms.escalation import SEND_CLAIM_SECONDS

    def claim(sms_id: str) -> bool:
        if not coordination.up:
            return True  # known down: alone for now, with no timeout to pay per SMS
        try:
            return coordination.take_lease(f"sms-{sms_id}", SEND_CLAIM_SECONDS) == 0
        except Unavailable:
            return True  # alone for now: paging errs toward the phone
    return claim


def _announce_sms(config, table) -> None:
    where = config.twilio.messaging_service_sid or "TWILIO_FROM_NUMBER"
    logger.info("SMS through Twilio at %s from %s; at most %d SMS per UTC day%s", config.twilio.api_url, where,
                config.sms_max_per_day, "" if table.sms_destinations else " (no SMS destination: only "
                "--send-test-sms uses it)")
    if config.public_url and not config.twilio.auth_token:
        logger.warning("PUBLIC_URL is set but TWILIO_AUTH_TOKEN is not: Twilio's status callbacks cannot be checked, "
                       "so none is asked for")
    elif not config.public_url:
        logger.info("PUBLIC_URL unset: SMS are tracked until Twilio takes them, not until the phone has them")


def shutdown(app: Flask, drain_seconds: float) -> None:
    """Close live clients first (they must not eat the drain's time), deliver what is queued within drain_seconds,
    then write the journal's last events and close the store."""
    app.extensions["rcwebhook.live"].close_all("the relay is shutting down")
    app.extensions["rcwebhook.dispatcher"].stop(drain_seconds=drain_seconds)
    if app.extensions.get("rcwebhook.sms_worker") is not None:
        # Longer than one send can take, so the store is not closed under a send whose outcome is being saved.
        app.extensions["rcwebhook.sms_worker"].stop(timeout_seconds=SMS_STOP_SECONDS)
    app.extensions["rcwebhook.events"].stop()
    app.extensions["rcwebhook.coordination"].stop()
    app.extensions["rcwebhook.journal"].store.close()
