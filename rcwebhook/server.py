"""gunicorn's gthread worker, changed so that no pool thread waits on a client that is still sending.

gthread hands a connection to a pool thread on its first readable byte, and the thread then reads the request
blocking, with no time limit: a few hundred clients that send one request line and stop hold every thread, and
Alertmanager's notifications and /health time out. Here the event loop (the main thread, non-blocking sockets,
gthread's selector) reads each request whole, headers and body, into a buffer first; a thread gets the connection
only with a complete request, and gunicorn's parser reads it from that buffer. A connection that has not sent its
request within REQUEST_READ_TIMEOUT_SECONDS is closed.

Selected in gunicorn.conf.py (worker_class = BufferedThreadWorker; the dotted name
"rcwebhook.server.BufferedThreadWorker" works as well, e.g. for --worker-class).
"""

from __future__ import annotations

import collections
import enum
import errno
import logging
import resource
import selectors
import signal
import socket
import time
from concurrent import futures
from functools import partial

from gunicorn import http, util
from gunicorn.workers.gthread import ThreadWorker, TConn

from .config import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_QUEUED_BYTES, DEFAULT_REQUEST_READ_TIMEOUT_SECONDS
from .request_scan import Framing, Resume, scan_request

RECV_CHUNK_BYTES = 64 * 1024
SWEEP_INTERVAL_SECONDS = 0.5  # how often deadlines are checked: the timeouts are whole seconds
LINGER_SECONDS = 2.0  # after an answer to a client still sending, read and drop its bytes this long, then close
ACCEPT_PAUSE_SECONDS = 0.5  # out of file descriptors: stop accepting this long instead of spinning on the listener
ACCEPTS_PER_EVENT = 64
LOG_INTERVAL_SECONDS = 60.0
# Alertmanager's request headers are a few hundred bytes; room for them beside a body of MAX_BODY_BYTES.
ORDINARY_HEADERS_BYTES = 2048

# The relay's own log (LOG_FILE, LOG_FORMAT, redaction), not gunicorn's.
logger = logging.getLogger(__name__)


def _answer(status: str, text: str, *headers: str) -> bytes:
    body = f'{{"status":"error","error":"{text}"}}'
    head = [f"HTTP/1.1 {status}", "Connection: close", "Content-Type: application/json",
            f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n" + body).encode("ascii")


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
TIMED_OUT = _answer("408 Request Timeout", "the request was not received in time (REQUEST_READ_TIMEOUT_SECONDS)")
HEADERS_TOO_LARGE = _answer("431 Request Header Fields Too Large", "the request headers are larger than 64 KiB")
QUEUE_FULL = _answer("503 Service Unavailable", "the relay holds too many request bytes (MAX_QUEUED_BYTES); "
                     "retry later", "Retry-After: 5")


class State(enum.Enum):
    READING = "reading"  # a request is arriving; deadline: REQUEST_READ_TIMEOUT_SECONDS after it began
    IDLE = "idle"  # keep-alive between requests; deadline: gunicorn's keepalive
    BUSY = "busy"  # a pool thread has it; no deadline here (the app bounds its own work)
    LINGERING = "lingering"  # answered and shut for writing; its late bytes are dropped until LINGER_SECONDS


class BufferedConnection(TConn):
    """A client connection and the bytes the event loop has read ahead of gunicorn's parser."""

    def __init__(self, cfg, sock, client, server, deadline: float, read_timeout_seconds: float, release):
        super().__init__(cfg, sock, client, server)  # non-blocking
        self.release = release  # returns bytes to the worker's pre-read budget once the parser has them
        self.buffer = bytearray()
        self.servable = 0  # bytes at the buffer's front the current request's parser may read
        self.counted_bytes = 0  # this connection's share of the worker's pre-read total
        self.resume: Resume | None = None
        self.needed_length = 0  # no scan before the buffer holds this much (a known Content-Length)
        self.state, self.deadline = State.READING, deadline
        self.read_timeout_seconds = read_timeout_seconds
        self.wants_continue = self.continue_sent = self.close_after_answer = self.registered = False
        self.parser_deadline = 0.0

    def init(self) -> None:
        """Before a pool thread takes it: a fresh parser reading the buffered request, blocking socket calls bounded."""
        self.initialized = True
        self.sock.settimeout(self.read_timeout_seconds)  # also bounds sending the answer to a client not reading it
        self.parser_deadline = time.monotonic() + self.read_timeout_seconds
        previous = self.parser
        # A parser per request: the previous one may hold unread bytes of its request's body, which are dropped
        # with the rest of that request, never taken for the next one.
        self.parser = http.RequestParser(self.cfg, BufferedSource(self), self.client)
        if previous is not None:
            self.parser.req_count = previous.req_count


class BufferedSource:
    """What gunicorn's parser reads from: the current request's buffered bytes, then the socket."""

    def __init__(self, conn: BufferedConnection):
        self.conn = conn

    def recv(self, size: int) -> bytes:
        conn = self.conn
        if conn.servable:
            data = bytes(conn.buffer[:min(size, conn.servable)])
            del conn.buffer[:len(data)]
            conn.servable -= len(data)
            conn.counted_bytes -= len(data)
            conn.release(len(data))
            return data
        # Only a request handed over unfinished (malformed, or a body over the limit the app reads anyway) gets
        # here; its reads share one deadline, and running out of it reads as the client going away.
        remaining_seconds = conn.parser_deadline - time.monotonic()
        if remaining_seconds <= 0:
            return b""
        conn.sock.settimeout(remaining_seconds)
        try:
            return conn.sock.recv(size)
        except TimeoutError:
            return b""
        finally:
            conn.sock.settimeout(conn.read_timeout_seconds)

    def __getattr__(self, name):
        return getattr(self.conn.sock, name)


class CountedLog:
    """Events counted and logged at most once per LOG_INTERVAL_SECONDS: a flood of clients must not flood the log."""

    def __init__(self, emit, describe):
        self.emit, self.describe = emit, describe
        self.counts: collections.Counter = collections.Counter()
        self.logged_at = float("-inf")

    def record(self, kind: str) -> None:
        self.counts[kind] += 1

    def flush(self, now: float) -> None:
        if self.counts and now - self.logged_at >= LOG_INTERVAL_SECONDS:
            self.emit(self.describe(self.counts))
            self.counts.clear()
            self.logged_at = now


class BufferedThreadWorker(ThreadWorker):
    """gthread whose event loop reads each request whole before a pool thread gets it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # TLS (--certfile) and the PROXY protocol keep gthread's own behaviour: the TLS handshake and the PROXY
        # line are read in the thread, and pre-reading them would take a non-blocking TLS loop of its own.
        self.buffering = not (self.cfg.is_ssl or self.cfg.proxy_protocol)
        self.connections: set[BufferedConnection] = set()
        self.finished = collections.deque()  # futures done in pool threads, taken up by the event loop
        self.queued_bytes = 0
        self.accept_paused_until = 0.0
        self.acceptors: list = []
        self.accepting = False
        self.read_timeout_seconds = DEFAULT_REQUEST_READ_TIMEOUT_SECONDS
        self.closed_log = CountedLog(lambda text: logger.warning("%s", text), self._describe_closed)
        self.fd_log = CountedLog(lambda text: logger.error("%s", text), lambda counts: (
            f"out of file descriptors (EMFILE/ENFILE) {counts['accept']} time(s) in accept; new connections wait "
            "in the listen backlog: raise the open-file limit (LimitNOFILE=, ulimit -n)"))

    def _setting(self, name: str, default):
        extensions = getattr(self.wsgi, "extensions", None) or {}
        return getattr(extensions.get("rcwebhook.config"), name, default)

    def _describe_closed(self, counts) -> str:
        """Counts only: a request's bytes may hold a token, and its client's address tells nothing of use here."""
        parts = {"silent": f"{counts['silent']} sent nothing", "partial": f"{counts['partial']} sent part of a request "
                 "(answered 408)", "headers": f"{counts['headers']} sent headers over 64 KiB (431)",
                 "queue": f"{counts['queue']} would have passed MAX_QUEUED_BYTES (503)"}
        return (f"closed {sum(counts.values())} client connection(s) that did not send a whole request within "
                f"{self.read_timeout_seconds:g} s (REQUEST_READ_TIMEOUT_SECONDS) or sent too much: "
                + ", ".join(text for kind, text in parts.items() if counts[kind])
                + "; counted since the previous such line, at most one a minute")

    # -- the event loop --
    def init_signals(self) -> None:
        """gunicorn resets SIGHUP to its default (terminate) here; the relay's handler (reload the routes) comes
        only once the app is loaded (post_worker_init). Until then a HUP, which the master passes on for a
        `systemctl reload`, is remembered instead of killing the worker while it boots."""
        super().init_signals()
        self.hup_while_booting = False
        signal.signal(signal.SIGHUP, self._remember_hup)

    def _remember_hup(self, signum, frame) -> None:
        # Kept for post_worker_init, which reloads at once: the file may have changed after the app read it.
        self.hup_while_booting = True

    def run(self) -> None:
        if not self.buffering:
            return super().run()
        self.read_timeout_seconds = float(
            self._setting("request_read_timeout_seconds", DEFAULT_REQUEST_READ_TIMEOUT_SECONDS))
        self.max_body_bytes = self._setting("max_body_bytes", DEFAULT_MAX_BODY_BYTES)
        # At least one largest body with ordinary headers fits, even when MAX_QUEUED_BYTES equals MAX_BODY_BYTES.
        self.max_queued_bytes = max(
            self._setting("max_queued_bytes", DEFAULT_MAX_QUEUED_BYTES), self.max_body_bytes + ORDINARY_HEADERS_BYTES
        )
        self.wake_reader, self.wake_writer = socket.socketpair()
        for end in (self.wake_reader, self.wake_writer):
            end.setblocking(False)
        self.poller.register(self.wake_reader, selectors.EVENT_READ, self._on_wake)
        for listener in self.sockets:
            listener.setblocking(False)
            self.acceptors.append((listener, partial(self.accept, listener.getsockname())))
        self._set_accepting(True)
        next_sweep = 0.0
        while self.alive:
            self.notify()
            for key, _ in self.poller.select(SWEEP_INTERVAL_SECONDS):
                key.data(key.fileobj)
            self._take_finished()
            if not self.is_parent_alive():
                break
            now = time.monotonic()
            self._set_accepting(len(self.connections) < self.worker_connections and now >= self.accept_paused_until)
            if now >= next_sweep:
                self._sweep(now)
                next_sweep = now + SWEEP_INTERVAL_SECONDS
        self.tpool.shutdown(False)
        for conn in [conn for conn in self.connections if conn.state is not State.BUSY]:
            self._close(conn)
        self.poller.close()
        for listener in self.sockets:
            listener.close()
        util.close(self.wake_reader)
        # The requests in flight finish (their answers say "Connection: close"); each connection is closed as its
        # thread is done with it, so no client waits for the end of the process.
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while self.futures and time.monotonic() < deadline:
            futures.wait(self.futures, timeout=min(1.0, deadline - time.monotonic()),
                         return_when=futures.FIRST_COMPLETED)
            while self.finished:
                fs = self.finished.popleft()
                self.futures.remove(fs)
                self._close(fs.conn)

    def _set_accepting(self, accepting: bool) -> None:
        """Listen or not: when full or out of descriptors, new connections wait in the kernel's backlog."""
        if accepting != self.accepting:
            for listener, acceptor in self.acceptors:
                if accepting:
                    self.poller.register(listener, selectors.EVENT_READ, acceptor)
                else:
                    self.poller.unregister(listener)
            self.accepting = accepting

    def accept(self, server, listener) -> None:
        if not self.buffering:
            try:
                return super().accept(server, listener)
            except OSError as error:  # gthread's accept lets these kill the worker
                if error.errno not in (errno.EMFILE, errno.ENFILE):
                    raise
                self.fd_log.record("accept")
                return self.fd_log.flush(time.monotonic())
        for _ in range(ACCEPTS_PER_EVENT):
            if len(self.connections) >= self.worker_connections:
                return
            try:
                sock, client = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if error.errno == errno.ECONNABORTED:
                    continue
                if error.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    raise
                self.fd_log.record("accept")
                self.accept_paused_until = time.monotonic() + ACCEPT_PAUSE_SECONDS
                self._set_accepting(False)
                return self.fd_log.flush(time.monotonic())
            now = time.monotonic()
            conn = BufferedConnection(self.cfg, sock, client, server, now + self.read_timeout_seconds,
                                      self.read_timeout_seconds, self._release)
            self.connections.add(conn)
            self.nr_conns = len(self.connections)
            self._register(conn)

    def _register(self, conn: BufferedConnection) -> None:
        if not conn.registered:
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))
            conn.registered = True

    def _unregister(self, conn: BufferedConnection) -> None:
        if conn.registered:
            self.poller.unregister(conn.sock)
            conn.registered = False

    def _on_readable(self, conn: BufferedConnection, _sock) -> None:
        try:
            self._read(conn)
        except Exception:  # a bug of ours must cost one connection, not the worker and every request in it
            logger.exception("error on a client connection in the event loop; closing it")
            self._close(conn)

    def _read(self, conn: BufferedConnection) -> None:
        try:
            data = conn.sock.recv(RECV_CHUNK_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""  # reset by the client: nothing left to answer
        if not data or conn.state is State.LINGERING:
            if not data:
                self._close(conn)
            return
        now = time.monotonic()
        if conn.state is State.IDLE:  # the next request's first byte: its read deadline counts from here
            conn.state, conn.deadline = State.READING, now + self.read_timeout_seconds
        if self.queued_bytes + len(data) > self.max_queued_bytes:
            self.closed_log.record("queue")
            return self._answer_and_linger(conn, QUEUE_FULL, now)
        conn.buffer += data
        self._count(conn, len(data))
        if len(conn.buffer) >= conn.needed_length:
            self._advance(conn, now)

    def _advance(self, conn: BufferedConnection, now: float) -> None:
        """Scan the buffer; hand a whole (or hopeless) request to a pool thread, or keep reading."""
        scan = scan_request(conn.buffer, self.max_body_bytes, conn.resume)
        if scan.expect_lines:
            for start, end in reversed(scan.expect_lines):
                del conn.buffer[start:end]
            self._count(conn, len(conn.buffer) - conn.counted_bytes)
            conn.wants_continue = True
            scan = scan_request(conn.buffer, self.max_body_bytes)
        conn.resume, conn.needed_length = scan.resume, scan.length if scan.framing is Framing.INCOMPLETE else 0
        if scan.framing is Framing.INCOMPLETE:
            if conn.wants_continue and scan.head_length and not conn.continue_sent:
                # curl waits up to a second for this before it sends a body; gunicorn would send it only
                # from the thread, which here gets the request only once the body is in.
                conn.continue_sent = True
                if not self._send_now(conn, CONTINUE):
                    self._close(conn)  # 25 bytes do not fit: the client is not reading
            return
        if scan.framing is Framing.HEADERS_TOO_LARGE:
            self.closed_log.record("headers")
            return self._answer_and_linger(conn, HEADERS_TOO_LARGE, now)
        complete = scan.framing is Framing.COMPLETE
        # An unfinished request is handed over as it is: gunicorn answers 400 to bad framing, the app 413 to a body
        # over MAX_BODY_BYTES without reading it; the connection then closes, so no thread ever drains that body.
        conn.servable = scan.length if complete else len(conn.buffer)
        conn.close_after_answer = not complete
        conn.wants_continue = conn.continue_sent = False
        conn.resume, conn.state = None, State.BUSY
        self._unregister(conn)
        self.enqueue_req(conn)

    def enqueue_req(self, conn) -> None:
        if not self.buffering:
            return super().enqueue_req(conn)
        conn.init()
        self._wrap_future(self.tpool.submit(self.handle, conn), conn)

    def handle_request(self, req, conn) -> bool:
        if getattr(conn, "close_after_answer", False):
            req.force_close()  # "Connection: close" on the answer
        try:
            return super().handle_request(req, conn)
        except TimeoutError:  # the client stopped reading its answer (socket timeout set in init)
            logger.debug("client did not read its answer within %g s", self.read_timeout_seconds)
            return False

    def finish_request(self, fs) -> None:
        """In the pool thread: the event loop takes the connection back (no socket or selector work here)."""
        if not self.buffering:
            return super().finish_request(fs)
        self.finished.append(fs)
        try:
            self.wake_writer.send(b"\0")
        except OSError:
            pass  # full: the loop is being woken already

    def _on_wake(self, _sock) -> None:
        try:
            while self.wake_reader.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _take_finished(self) -> None:
        while self.finished:
            fs = self.finished.popleft()
            self.futures.remove(fs)
            try:
                self._take_back(fs.conn, not fs.cancelled() and fs.exception() is None and fs.result()[0])
            except Exception:
                logger.exception("error taking a connection back from its thread; closing it")
                self._close(fs.conn)

    def _take_back(self, conn: BufferedConnection, keepalive: bool) -> None:
        """After the answer: close, linger, serve a pipelined request, or wait for the next one."""
        self._release(conn.servable)
        conn.counted_bytes -= conn.servable
        del conn.buffer[:conn.servable]  # what the app left unread of its request
        conn.servable = 0
        now = time.monotonic()
        if conn.sock.fileno() < 0:
            self._close(conn)
        elif conn.close_after_answer:
            self._linger(conn, now)
        elif not (keepalive and self.alive):
            self._close(conn)
        else:
            conn.sock.setblocking(False)
            if conn.buffer:  # pipelined: the next request began arriving with this one
                conn.state, conn.deadline = State.READING, now + self.read_timeout_seconds
                self._register(conn)
                self._advance(conn, now)
            else:
                conn.state, conn.deadline = State.IDLE, now + self.cfg.keepalive
                self._register(conn)

    def _sweep(self, now: float) -> None:
        """Close what outlived its deadline: requests not sent in time, idle keep-alives, lingering closes."""
        for conn in [conn for conn in self.connections if conn.state is not State.BUSY and now >= conn.deadline]:
            if conn.state is State.READING and conn.buffer:
                self.closed_log.record("partial")
                self._send_now(conn, TIMED_OUT)
            elif conn.state is State.READING:
                # Silently: a client that connects ahead of time (a browser's preconnect) would take a 408 for
                # the answer to the request it is about to send.
                self.closed_log.record("silent")
            self._close(conn)
        self.closed_log.flush(now)
        self.fd_log.flush(now)

    # -- bookkeeping --
    def _count(self, conn: BufferedConnection, byte_count: int) -> None:
        with self._lock:
            self.queued_bytes += byte_count
        conn.counted_bytes += byte_count

    def _release(self, byte_count: int) -> None:
        with self._lock:  # pool threads release what their parser read
            self.queued_bytes -= byte_count

    def _send_now(self, conn: BufferedConnection, data: bytes) -> bool:
        try:
            return conn.sock.send(data) == len(data)
        except OSError:
            return False

    def _answer_and_linger(self, conn: BufferedConnection, answer: bytes, now: float) -> None:
        self._send_now(conn, answer)
        self._linger(conn, now)

    def _linger(self, conn: BufferedConnection, now: float) -> None:
        """Shut for writing and drop what the client still sends: closing with unread bytes would reset the
        connection, and the client (still sending its body) could lose the answer."""
        try:
            conn.sock.setblocking(False)
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return self._close(conn)
        self._release(conn.counted_bytes)
        conn.counted_bytes, conn.servable = 0, 0
        conn.buffer = bytearray()
        conn.state, conn.deadline = State.LINGERING, now + LINGER_SECONDS
        self._register(conn)

    def _close(self, conn: BufferedConnection) -> None:
        if conn.registered:
            try:
                self._unregister(conn)
            except (KeyError, ValueError):
                conn.registered = False
        self._release(conn.counted_bytes)
        conn.counted_bytes = 0
        conn.close()
        self.connections.discard(conn)
        self.nr_conns = len(self.connections)


def raise_open_file_limit(wanted: int) -> str | None:
    """Raise the soft RLIMIT_NOFILE to wanted, at most to the hard limit; a warning's text when that falls short."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return None
    target = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as error:  # e.g. a seccomp filter that forbids setrlimit
            return f"could not raise the open-file limit from {soft} to {target} ({error}); {_advice(wanted)}"
    if target < wanted:
        return f"the open-file hard limit is {hard}, below the {wanted} needed; {_advice(wanted)}"
    return None


def _advice(wanted: int) -> str:
    return (f"connections past the limit wait in the listen backlog: raise it to at least {wanted} "
            "(LimitNOFILE= in the systemd unit, ulimit -n, docker run --ulimit nofile=)")
