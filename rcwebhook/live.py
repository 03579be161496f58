"""GET /ws, the live feed: a WebSocket that tells a status page each alert received and each post's outcome.

The event thread turns each event into JSON text once and appends it to every client's bounded buffer, never
waiting for a client. Each client's sender (the gunicorn thread that took the upgrade, MAX_LIVE_CLIENTS of them
added to gunicorn's pool) sends what its buffer holds; simple-websocket's reader thread of that connection answers
pings and the close handshake. A client that falls behind, or stops reading, is closed with the reason in the close
frame, so delivery and every other client go on as if it were not there.

Close codes (RFC 6455 section 7.4 and IANA's registry): 1013 "try again later" for a client that fell behind (it may
reconnect and read what it missed from /api/v1), 1001 "going away" when the relay shuts down, 1011 for a bug of ours.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import select
import socket
import threading
import time
from typing import Callable
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, g, request
from flask_sock import Sock
from simple_websocket import ConnectionClosed
from simple_websocket.errors import SimpleWebsocketError
from wsproto.utilities import LocalProtocolError, ProtocolError

from .attachments import annotation
from .events import AlertsReceived, PostFinished
from .fingerprint import labels_fingerprint
from .metrics import Metrics
from .model import UNKNOWN_SEVERITY, alert_name

logger = logging.getLogger("rcwebhook.live")

GOING_AWAY = 1001
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013
# A close frame's payload is at most 125 bytes, two of them the code (RFC 6455 section 5.5).
MAX_CLOSE_REASON_BYTES = 123

# Messages a client may have waiting when the next batch comes: a burst of one batch (events.MAX_BATCH_EVENTS, a body
# of many alerts) always fits, so only a client still behind on earlier batches is closed. A client's buffer thus
# holds at most this plus one batch, and the texts are shared by all clients (built once per batch).
DEFAULT_BUFFER_MESSAGES = 256
# Longest one frame may take to leave (the client's TCP window stays shut): the client is not reading; closed.
SEND_TIMEOUT_SECONDS = 10.0
# Once a close is asked for (too slow, shutdown): what the frame being sent, the close frame and the client's answer
# to it share, so a SIGTERM costs the graceful drain at most this long.
CLOSE_GRACE_SECONDS = 2.0
# How often an idle sender looks whether its client went away (the reader thread notices; nothing wakes us).
IDLE_CHECK_SECONDS = 0.5
# How often a send blocked on a full socket looks at its deadline (a close may have been asked meanwhile).
SEND_POLL_SECONDS = 0.2
# simple-websocket's reader pings an idle client this often and closes one that left the previous ping unanswered:
# proxies drop idle connections after 60 s (nginx's proxy_read_timeout), and a vanished client is noticed.
PING_INTERVAL_SECONDS = 25
# The feed is one-way; what a client sends is read and dropped, a message larger than this closes it (1009).
MAX_INCOMING_MESSAGE_BYTES = 4096
JSON_SEPARATORS = (",", ":")


def _close_reason(text: str) -> str:
    """text cut to what fits in a close frame, on a character boundary."""
    data = text.encode("utf-8")
    if len(data) <= MAX_CLOSE_REASON_BYTES:
        return text
    return data[:MAX_CLOSE_REASON_BYTES].decode("utf-8", "ignore")


def _component(labels) -> str:
    for name in ("component", "service", "job"):
        value = labels.get(name, "")
        if value.strip():
            return value
    return ""


def alert_messages(event: AlertsReceived) -> list[dict]:
    """One infrastructure_alert per alert of the body."""
    notification = event.notification
    messages = []
    for position, alert in enumerate(notification.alerts):
        severity = event.severities[position] if position < len(event.severities) else UNKNOWN_SEVERITY
        messages.append({"type": "infrastructure_alert", "data": {
            "alertname": alert_name(alert, notification),
            "status": alert.status,
            "severity": severity,
            "component": _component(alert.labels),
            "summary": annotation(alert.annotations, "summary")[1],
            "description": annotation(alert.annotations, "description")[1],
            "started_at": alert.starts_at,
            "fingerprint": alert.fingerprint or labels_fingerprint(alert.labels),
            "receiver": notification.receiver,
            "integration": event.integration,
        }})
    return messages


def delivery_message(event: PostFinished) -> dict:
    return {"type": "delivery", "data": {
        "destination": event.destination, "outcome": event.outcome, "alerts": len(event.alerts),
        "ms": round(event.ms, 1),
    }}


def event_messages(batch: list) -> list[str]:
    """The feed's messages for a batch of events, as JSON text (ASCII: a lone surrogate in a label stays valid)."""
    documents: list[dict] = []
    for event in batch:
        if isinstance(event, AlertsReceived):
            documents.extend(alert_messages(event))
        elif isinstance(event, PostFinished):
            documents.append(delivery_message(event))
    return [json.dumps(document, separators=JSON_SEPARATORS) for document in documents]


class LiveClient:
    """One client's buffer and its close request; the event thread offers, the client's sender takes."""

    def __init__(self, buffer_messages: int):
        self.buffer_messages = buffer_messages
        self.condition = threading.Condition()
        self.pending: collections.deque[str] = collections.deque()
        self.close_code: int | None = None
        self.close_reason = ""
        self.close_deadline = math.inf  # monotonic; what may still be sent must be out by then

    @property
    def closing(self) -> bool:
        return self.close_code is not None

    def offer(self, messages: list[str]) -> bool:
        """Append without waiting; False when the client was still behind on earlier ones (it is now closing)."""
        with self.condition:
            if self.closing:
                return True
            if len(self.pending) >= self.buffer_messages:
                self._request_close(TRY_AGAIN_LATER,
                                    f"too slow: fell more than {self.buffer_messages} messages behind")
                return False
            self.pending.extend(messages)
            self.condition.notify()
            return True

    def request_close(self, code: int, reason: str) -> bool:
        """Ask the sender to close; False when a close was asked already."""
        with self.condition:
            return self._request_close(code, reason)

    def _request_close(self, code: int, reason: str) -> bool:
        if self.closing:
            return False
        self.close_code, self.close_reason = code, _close_reason(reason)
        self.close_deadline = time.monotonic() + CLOSE_GRACE_SECONDS
        self.pending.clear()  # not sent: the close must not wait for them (the journal has them)
        self.condition.notify()
        return True

    def take(self, timeout_seconds: float) -> list[str]:
        """What is waiting, after at most timeout_seconds of waiting for something (or for a close request)."""
        with self.condition:
            if not self.pending and not self.closing:
                self.condition.wait(timeout_seconds)
            messages = list(self.pending)
            self.pending.clear()
            return messages


class LiveFeed:
    """The live clients: admitted up to max_clients, fed by on_events, closed all at once by close_all."""

    def __init__(self, max_clients: int, metrics: Metrics, *, buffer_messages: int = DEFAULT_BUFFER_MESSAGES,
                 publish: Callable[[list[str]], None] | None = None):
        self.max_clients = max_clients
        # Replicas: this process's messages, to the other processes' clients (shared.py); alone, none.
        self.publish = publish
        self.metrics = metrics
        self.buffer_messages = buffer_messages
        self.lock = threading.Lock()
        self.clients: set[LiveClient] = set()
        self.closed = False
        metrics.live_clients.set(0)

    @property
    def clients_count(self) -> int:
        return len(self.clients)

    def admit(self) -> tuple[LiveClient | None, str]:
        """A new client, or None and why not (the relay is shutting down, or MAX_LIVE_CLIENTS are connected)."""
        with self.lock:
            if self.closed:
                return None, "the relay is shutting down"
            if len(self.clients) >= self.max_clients:
                self.metrics.live_clients_closed.labels("full").inc()
                if not self.max_clients:
                    return None, "the live feed is off (MAX_LIVE_CLIENTS=0)"
                return None, (f"{self.max_clients} live clients are connected, the most MAX_LIVE_CLIENTS allows; "
                              "retry later")
            client = LiveClient(self.buffer_messages)
            self.clients.add(client)
            self.metrics.live_clients.set(len(self.clients))
            return client, ""

    def release(self, client: LiveClient) -> None:
        """Forget a client (idempotent)."""
        with self.lock:
            self.clients.discard(client)
            self.metrics.live_clients.set(len(self.clients))

    def _current(self) -> list[LiveClient]:
        with self.lock:
            return list(self.clients)

    def on_events(self, batch: list) -> None:
        """The event bus's subscriber: the batch's messages to every client, never waiting for one."""
        clients = self._current()
        if not clients and (self.publish is None or not self.max_clients):
            return
        messages = event_messages(batch)
        if not messages:
            return
        if self.publish is not None:
            self.publish(messages)
        self.offer(messages, clients)

    def offer(self, messages: list[str], clients: list | None = None) -> None:
        """Messages to every client of this process (those of another process arrive here through shared.py)."""
        for client in clients if clients is not None else self._current():
            if not client.offer(messages):
                self.metrics.live_clients_closed.labels("slow").inc()

    def close_slow(self, client: LiveClient, reason: str) -> bool:
        """A client whose socket would not take a frame in time; False when it was being closed already."""
        if not client.request_close(TRY_AGAIN_LATER, reason):
            return False
        self.metrics.live_clients_closed.labels("slow").inc()
        return True

    def close_all(self, reason: str) -> None:
        """Close every client with 1001 and refuse new ones; returns at once (safe in a signal handler: the main
        thread never holds these locks), each client's sender closes it within CLOSE_GRACE_SECONDS."""
        with self.lock:
            self.closed = True
            clients = list(self.clients)
        for client in clients:
            if client.request_close(GOING_AWAY, reason):
                self.metrics.live_clients_closed.labels("shutdown").inc()


class _Wire:
    """The client's socket as simple-websocket uses it. Every frame, from the sender or from the reader thread (pong,
    ping, close handshake), leaves whole under one lock, or the send gives up at its deadline: simple-websocket's own
    socket.send neither serialises the two threads nor sends what a full socket leaves over."""

    def __init__(self, sock: socket.socket, client: LiveClient):
        self.sock = sock
        self.client = client
        self.lock = threading.Lock()

    def send(self, data: bytes) -> int:
        view = memoryview(data)
        deadline = time.monotonic() + SEND_TIMEOUT_SECONDS
        with self.lock:
            while view:
                try:
                    view = view[self.sock.send(view, socket.MSG_DONTWAIT):]
                    continue
                except (BlockingIOError, InterruptedError):
                    pass
                left = min(deadline, self.client.close_deadline) - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the client did not read what was sent to it in time")
                descriptor = self.sock.fileno()
                if descriptor < 0:  # closed meanwhile by the reader thread: the client went away
                    raise BrokenPipeError("the connection is closed")
                poller = select.poll()  # not select(): descriptors pass 1024 with worker_connections = 4096
                poller.register(descriptor, select.POLLOUT)
                poller.poll(min(left, SEND_POLL_SECONDS) * 1000)
        return len(data)

    def sendall(self, data: bytes) -> None:
        self.send(data)

    def __getattr__(self, name):
        return getattr(self.sock, name)


def _connection_socket() -> socket.socket | None:
    return request.environ.get("gunicorn.socket") or request.environ.get("werkzeug.socket")


def _default_port(scheme: str) -> int | None:
    return {"http": 80, "ws": 80, "https": 443, "wss": 443}.get(scheme)


def _origin_key(scheme: str, netloc: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) with the default port filled in; None when it does not parse."""
    try:
        parts = urlsplit(f"//{netloc}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    scheme = scheme.lower()
    return scheme, parts.hostname.lower(), port if port is not None else _default_port(scheme)


def foreign_origin() -> str | None:
    """The Origin header when it is not this relay's own scheme://host[:port]; None when same-origin or absent."""
    origin = request.headers.get("Origin")
    if origin is None:
        return None  # not a browser (curl, websocat, a script): nothing rides on its credentials
    own = _origin_key(request.scheme, request.host)
    try:
        parts = urlsplit(origin.strip())
    except ValueError:  # "http://[x": not an origin at all
        return origin
    theirs = _origin_key(parts.scheme, parts.netloc) if parts.scheme in ("http", "https") else None
    if own is not None and theirs == own and not parts.path and not parts.query:
        return None
    return origin


class OccasionalLog:
    """A warning at most once per interval, with the count of those left out: a page that retries in a loop, or a
    hostile one, must not flood the log."""

    def __init__(self, interval_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.interval_seconds, self.clock = interval_seconds, clock
        self.logged_at = -math.inf
        self.left_out = 0
        self.lock = threading.Lock()

    def warning(self, text: str) -> None:
        with self.lock:
            now = self.clock()
            if now - self.logged_at < self.interval_seconds:
                self.left_out += 1
                return
            left_out, self.left_out, self.logged_at = self.left_out, 0, now
        logger.warning("%s%s", text, f" ({left_out} more since the previous such line)" if left_out else "")


def _json_refusal(status: int, error: str, headers: dict | None = None) -> Response:
    return Response(json.dumps({"status": "error", "error": error}, separators=JSON_SEPARATORS), status=status,
                    headers=headers, mimetype="application/json")


def _handshake_problem() -> str | None:
    """Why this is not a WebSocket opening handshake simple-websocket can answer, or None."""
    if not request.headers.get("Sec-WebSocket-Key", "").strip():
        return "the WebSocket handshake has no Sec-WebSocket-Key"
    if request.headers.get("Sec-WebSocket-Version", "").strip() != "13":
        return "only WebSocket version 13 (RFC 6455) is spoken here: send Sec-WebSocket-Version: 13"
    if _connection_socket() is None:
        return "this server cannot hand its connections to a WebSocket (run the relay under gunicorn)"
    return None


def register_live_route(app: Flask, feed: LiveFeed, authorize: Callable[[], Response | None]) -> None:
    """GET /ws on app: authorize(), same origin, a free slot, then the feed until either side closes."""
    app.config.setdefault("SOCK_SERVER_OPTIONS", {
        "ping_interval": PING_INTERVAL_SECONDS, "max_message_size": MAX_INCOMING_MESSAGE_BYTES,
    })
    blueprint = Blueprint("live", __name__)
    sock = Sock()
    cross_origin_log = OccasionalLog()

    @blueprint.before_request
    def before_upgrade() -> Response | None:
        """Every refusal is an ordinary HTTP answer, before the upgrade."""
        refused = authorize()
        if refused is not None:
            return refused
        origin = foreign_origin()
        if origin is not None:
            error = (f"cross-origin WebSocket refused: Origin {origin[:200]!r} is not this relay's own "
                     f"{request.host_url.rstrip('/')[:200]!r} (behind a TLS proxy, let gunicorn trust its "
                     "X-Forwarded-Proto: FORWARDED_ALLOW_IPS)")
            # A browser shows its page nothing of the answer: the operator finds the reason here.
            cross_origin_log.warning(f"GET /ws: {error}")
            return _json_refusal(403, error)
        problem = _handshake_problem()
        if problem is not None:
            return _json_refusal(400, problem)
        client, refusal = feed.admit()
        if client is None:
            return _json_refusal(503, refusal, {"Retry-After": "5"})
        g.live_client = client
        # No permessage-deflate (simple-websocket accepts it whenever a browser offers it): the messages are small,
        # and compressing each one once per client would spend, in a storm, the CPU that delivery needs.
        request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        # gunicorn's thread left a read timeout on the socket; the reader thread that starts with the upgrade must
        # wait for the client's frames as long as the client stays (sends are bounded by _Wire instead).
        _connection_socket().settimeout(None)
        return None

    @blueprint.errorhandler(OSError)
    @blueprint.errorhandler(SimpleWebsocketError)
    @blueprint.errorhandler(ProtocolError)
    def handshake_failed(error: Exception) -> Response:
        """The client went away during the handshake, or sent one wsproto would not accept: not a bug of ours."""
        logger.debug("WebSocket handshake failed (%s: %s)", type(error).__name__, error)
        return _json_refusal(400, "the WebSocket handshake failed")

    @blueprint.teardown_request
    def forget_client(_error: BaseException | None) -> None:
        client = g.pop("live_client", None)
        if client is not None:  # the upgrade failed, or the feed ended: either way the slot is free
            feed.release(client)

    @sock.route("/ws", bp=blueprint)
    def live_feed(ws) -> None:
        serve_client(ws, g.live_client, feed)

    app.register_blueprint(blueprint)


def serve_client(ws, client: LiveClient, feed: LiveFeed) -> None:
    """The sender: the client's messages until either side closes; the slot is freed on every path."""
    wire = _Wire(ws.sock, client)
    ws.sock = wire  # the reader thread's pongs and close answers go through the wire from now on
    try:
        while True:
            for text in client.take(IDLE_CHECK_SECONDS):
                if client.closing:
                    break  # asked meanwhile: the close goes out now, not after the rest
                ws.send(text)
            if not threading.main_thread().is_alive():
                # The interpreter is exiting without a SIGTERM (gunicorn's SIGINT or SIGQUIT): it joins this thread
                # before it ends, which would be never while the client stays.
                feed.close_all("the relay is shutting down")
            if client.closing:
                if client.close_code == TRY_AGAIN_LATER:
                    logger.info("closing a live client: %s", client.close_reason)
                ws.close(client.close_code, client.close_reason)
                # The client's close frame ends the reader thread: a clean close on both sides.
                ws.thread.join(max(0.0, client.close_deadline - time.monotonic()))
                return
            while ws.receive(timeout=0) is not None:  # what the client sends is dropped; raises once it closed
                pass
    except TimeoutError:  # a frame, or the close frame, did not leave in time: the connection is cut instead
        if feed.close_slow(client, f"too slow: did not read for {SEND_TIMEOUT_SECONDS:g} s"):
            logger.info("closed a live client that read nothing for %g s", SEND_TIMEOUT_SECONDS)
    except (ConnectionClosed, LocalProtocolError, OSError) as error:
        logger.debug("live client went away (%s)", type(error).__name__)
    except Exception:  # noqa: BLE001 - a bug of ours costs this client, not the worker's log or the others
        logger.exception("internal error while feeding a live client; closing it")
        try:
            ws.close(INTERNAL_ERROR, "internal error in the relay; see its log")
        except Exception:  # noqa: BLE001
            pass
    finally:
        feed.release(client)
        _end_connection(ws, wire)


def _end_connection(ws, wire: _Wire) -> None:
    """Shut the socket so the reader thread, blocked in recv, ends now (closing alone would not wake it)."""
    try:
        wire.sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the reader thread
    ws.thread.join(1.0)
