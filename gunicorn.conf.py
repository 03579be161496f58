"""gunicorn settings for rocketchat-webhook: one process with threads (`gunicorn -c gunicorn.conf.py rocketchat_webhook:app`)."""

import os
import signal
import sys

from rcwebhook.cli import CONFIG_ERROR_EXIT_STATUS
from rcwebhook.config import ConfigError, load_config, load_dotenv_from_working_directory
from rcwebhook.journal import open_state
from rcwebhook.routes_file import load_route_table
from rcwebhook.server import BufferedThreadWorker, raise_open_file_limit

# The .env of the working directory, as in the app; the real environment wins over it.
load_dotenv_from_working_directory()

# A PORT that is not a number is reported by on_starting with exit status 2; gunicorn itself would exit 1 on it.
_port = os.environ.get("PORT", "").strip()
bind = f"{os.environ.get('HOST', '').strip() or '0.0.0.0'}:{_port if _port.isdigit() else '8093'}"
# One process, unless state is shared in Redis (STATE_URL=redis://…, issue 12): pacing and de-duplication live in
# its memory, per hook URL. WORKERS asks for more; on_starting refuses more than 1 without Redis, however asked.
_workers = os.environ.get("WORKERS", "").strip()
workers = int(_workers) if _workers.isdigit() and int(_workers) > 0 else 1
# gthread with an event loop that reads each request whole before a thread gets it: a client that sends slowly,
# or connects and sends nothing, holds no thread and is closed after REQUEST_READ_TIMEOUT_SECONDS. The class, not
# its dotted name "rcwebhook.server.BufferedThreadWorker" (which works too, e.g. for --worker-class): gunicorn's
# start-up line then says "Using worker: BufferedThreadWorker", and with LOG_FILE set its stderr names nothing of
# the relay's own (tests/test_integration.py checks that the relay's lines all went to the file).
worker_class = BufferedThreadWorker
# Each waiting Alertmanager request holds a thread for up to DELIVERY_DEADLINE_SECONDS. More threads than
# MAX_WAITING_REQUESTS leaves room so /health and /ready answer, and the 503 for excess is immediate, in a storm.
_max_waiting = os.environ.get("MAX_WAITING_REQUESTS", "").strip()
# Each live client of GET /ws holds a thread for as long as it stays connected (its sender; simple-websocket's reader
# thread comes on top, outside the pool): MAX_LIVE_CLIENTS more, so they never take one from Alertmanager or /health.
_max_live = os.environ.get("MAX_LIVE_CLIENTS", "").strip()
threads = (int(_max_waiting) if _max_waiting.isdigit() else 128) + 64 + (int(_max_live) if _max_live.isdigit() else 32)
# Open connections the worker holds (reading, idle keep-alive or answered): a thousand idle or slow clients (a port
# scan, a misconfigured load balancer) plus Alertmanager and the probes fit, each costing a buffer, not a thread.
worker_connections = 4096
# Seconds an idle keep-alive connection stays open: long enough for a client that reuses its connection
# (Alertmanager's HTTP pool, a probe), short enough that idle ones do not pile up.
keepalive = 5
# Descriptors beyond the client connections: listeners, log files, outbound connections to Rocket.Chat, the
# interpreter's own.
_SPARE_FILE_DESCRIPTORS = 256
# Longer than the delivery deadline (8 s by default): a graceful stop lets waiting requests get their answers
# and the queues drain before the worker is killed.
graceful_timeout = 30
timeout = 60


def _fail(message):
    print(f"rocketchat-webhook: configuration error: {message}", file=sys.stderr)
    sys.exit(CONFIG_ERROR_EXIT_STATUS)


def on_starting(server):
    """Check the configuration once in the master, so a bad setting exits 2 instead of respawning workers."""
    if _workers and not (_workers.isdigit() and int(_workers) > 0):
        _fail(f"WORKERS must be a whole number of at least 1, got {_workers!r}")
    try:
        # The routes file too: a worker that failed to boot on it would halt gunicorn with its own status, not 2.
        config = load_config(os.environ)
        if server.cfg.workers != 1 and not config.state_is_shared:
            raise ConfigError(
                f"{server.cfg.workers} worker processes asked for (-w/--workers, GUNICORN_CMD_ARGS or WORKERS); with "
                "STATE_URL on SQLite or memory run exactly 1: pacing to Rocket.Chat's rate limit and de-duplication "
                "live in one process's memory (use threads to scale, or STATE_URL=redis://… for several)")
        load_route_table(config, os.environ)
        # A STATE_URL someone set must be usable (a default that is not falls back to memory:// in the worker).
        if not config.state_url_is_default:
            open_state(config)[0].close()
    except ConfigError as error:
        _fail(error)
    if server.cfg.preload_app:  # the app is built here, in the master: its SMS worker starts in the worker only
        os.environ["RCWEBHOOK_PRELOADED"] = "1"
    # Raised here, in the master, so the worker it forks inherits the limit.
    shortfall = raise_open_file_limit(server.cfg.worker_connections + server.cfg.threads + _SPARE_FILE_DESCRIPTORS)
    if shortfall:
        server.log.warning("%s", shortfall)


def when_ready(server):
    """SIGHUP to the master re-reads ROUTES_FILE in the running worker, as Alertmanager reloads its config.

    gunicorn's own HUP handling would re-read gunicorn's config and replace the worker: queues, pacing and
    de-duplication memory would be lost, and a worker that fails to boot on a bad file halts gunicorn. Here the
    master only passes the signal on (systemctl reload and docker kill -s HUP reach the master).
    """

    def forward_hup():
        server.log.info("SIGHUP: the worker re-reads ROUTES_FILE (no restart)")
        server.kill_workers(signal.SIGHUP)

    server.handle_hup = forward_hup


def post_worker_init(worker):
    """On SIGTERM, close the live clients (GET /ws) and stop taking notifications (GET /ready turns 503) before
    gunicorn's own graceful stop runs. On SIGHUP, reload the routes in this worker."""
    sms_worker = worker.wsgi.extensions.get("rcwebhook.sms_worker")
    if sms_worker is not None:
        sms_worker.ensure_running()  # pending SMS resume with no traffic needed, in this process only
    reloader = worker.wsgi.extensions.get("rcwebhook.reloader")
    if reloader is not None:
        reloader.install_sighup_handler()
        if getattr(worker, "hup_while_booting", False):  # a reload asked for while the worker booted
            reloader.reload_in_background()
    gunicorn_handler = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        # First, and without waiting: each live client's thread sends its close (1001) and ends within
        # rcwebhook.live.CLOSE_GRACE_SECONDS, so the graceful stop does not wait for browsers that stay.
        feed = worker.wsgi.extensions.get("rcwebhook.live")
        if feed is not None:
            feed.close_all("the relay is shutting down")
        dispatcher = worker.wsgi.extensions.get("rcwebhook.dispatcher")
        if dispatcher is not None:
            dispatcher.begin_shutdown()
        if callable(gunicorn_handler):
            gunicorn_handler(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


def worker_exit(server, worker):
    """Deliver what is still queued within the delivery deadline (logging loudly what could not be), then write the
    journal's last events and close the store."""
    app = getattr(worker, "wsgi", None)
    if app is not None and "rcwebhook.dispatcher" in app.extensions:
        from rcwebhook.app import shutdown

        shutdown(app, drain_seconds=app.extensions["rcwebhook.config"].delivery_deadline_seconds)
