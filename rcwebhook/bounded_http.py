"""HTTP exchanges with a total deadline and a size cap, on a requests session.

requests' timeouts count per socket operation: a server that sends one byte a second, in the headers or the body,
holds a caller for as long as it likes. Here one watchdog thread shuts the socket of any exchange that outlives its
deadline (connect to last byte), and the body is read only up to a cap, so no answer can hold a hook's worker or
its memory.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
import zlib
from dataclasses import dataclass, field

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

READ_CHUNK_BYTES = 64 * 1024


class AnswerTooLarge(Exception):
    """The answer's body is larger than the cap."""


@dataclass(eq=False)
class Exchange:
    """One request and its answer, from connecting to the answer's last byte."""

    deadline: float  # time.monotonic()
    sock: socket.socket | None = None
    expired: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def attach(self, sock: socket.socket | None) -> None:
        """The exchange's socket, as soon as it is connected (http.client drops its own reference to it when the
        answer says Connection: close, while the answer is still being read from it)."""
        if sock is None:
            return
        with self.lock:
            self.sock = sock
            if self.expired:
                _shut(sock)

    def expire(self) -> None:
        with self.lock:
            self.expired = True
            if self.sock is not None:
                _shut(self.sock)

    def detach(self) -> bool:
        """Forget the socket (the watchdog will not touch it after this); True when the deadline had passed."""
        with self.lock:
            self.sock = None
            return self.expired


def _shut(sock: socket.socket) -> None:
    """Wake a thread blocked on this socket: the blocked read returns, the exchange fails."""
    try:
        # The plain socket's shutdown, even for TLS: SSLSocket.shutdown would tear down state the reader still uses.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except Exception:  # noqa: BLE001 - the watchdog thread must never die: every other exchange relies on it
        pass


class Watchdog:
    """One thread that expires exchanges at their deadlines."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._heap: list[tuple[float, int, Exchange]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._local = threading.local()

    def begin(self, deadline: float) -> Exchange:
        exchange = Exchange(deadline)
        self._local.exchange = exchange
        with self._condition:
            heapq.heappush(self._heap, (deadline, next(self._order), exchange))
            if self._thread is None or not self._thread.is_alive():  # none yet, or lost in a fork
                self._thread = threading.Thread(target=self._run, name="http-deadlines", daemon=True)
                self._thread.start()
            self._condition.notify()
        return exchange

    def end(self, exchange: Exchange) -> None:
        self._local.exchange = None
        with exchange.lock:
            exchange.sock = None  # the connection goes back to the pool: never shut it after this

    def current(self) -> Exchange | None:
        return getattr(self._local, "exchange", None)

    def _run(self) -> None:
        with self._condition:
            while True:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    _, _, exchange = heapq.heappop(self._heap)
                    exchange.expire()  # without a socket yet (still connecting), attach() shuts it
                wait = self._heap[0][0] - now if self._heap else None
                self._condition.wait(wait)


WATCHDOG = Watchdog()


class _Watched:
    """Lets the watchdog see the socket of the exchange a connection serves, whatever the scheme."""

    def _new_conn(self) -> socket.socket:
        # The plain TCP socket, before any TLS handshake or HTTPS_PROXY tunnel: those are inside the deadline too.
        sock = super()._new_conn()
        _attach_current(sock)
        return sock

    def request(self, *args, **kwargs):  # type: ignore[override]
        _attach_current(self.sock)  # a pooled connection is connected already
        return super().request(*args, **kwargs)


class _WatchedConnection(_Watched, HTTPConnection):
    pass


class _WatchedTLSConnection(_Watched, HTTPSConnection):
    pass


def _attach_current(sock) -> None:
    exchange = WATCHDOG.current()
    if exchange is not None:
        exchange.attach(_real_socket(sock))


def _real_socket(sock) -> socket.socket | None:
    """The OS socket under any wrapping: TLS inside an https:// proxy's TLS is urllib3's SSLTransport, whose
    .socket is the TLS socket to the proxy."""
    while sock is not None and not isinstance(sock, socket.socket):
        sock = getattr(sock, "socket", None)
    return sock


def _release_current(connection) -> None:
    """The connection goes back to the pool (urllib3 does that inside the read of the answer's last byte): from
    here the watchdog must never shut its socket, which another hook's post may take next. A connection whose
    exchange already expired is closed instead: its socket may have been shut."""
    exchange = WATCHDOG.current()
    if exchange is not None and exchange.detach() and connection is not None:
        connection.close()


class _ReleasingPool:
    """Detaches a connection from its exchange as it goes back to the pool."""

    def _put_conn(self, conn) -> None:
        _release_current(conn)
        super()._put_conn(conn)


class _WatchedPool(_ReleasingPool, HTTPConnectionPool):
    ConnectionCls = _WatchedConnection


class _WatchedTLSPool(_ReleasingPool, HTTPSConnectionPool):
    ConnectionCls = _WatchedTLSConnection


class WatchedAdapter(HTTPAdapter):
    """An adapter whose connections (direct or through HTTPS_PROXY) the watchdog can cut at the deadline."""

    POOL_CLASSES = {"http": _WatchedPool, "https": _WatchedTLSPool}

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(self.POOL_CLASSES)

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if hasattr(manager, "pool_classes_by_scheme") and not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = dict(self.POOL_CLASSES)
        return manager


@dataclass(frozen=True)
class BoundedAnswer:
    status: int
    headers: requests.structures.CaseInsensitiveDict
    body_text: str


def read_capped(response: requests.Response, max_bytes: int) -> bytes:
    """The answer's body, decompressed, at most max_bytes; AnswerTooLarge beyond (a decompression bomb too)."""
    raw = response.raw
    chunks, total = [], 0
    while True:
        chunk = raw.read(READ_CHUNK_BYTES, decode_content=False)
        if not chunk:
            break
        total += len(chunk)
        if total > max_bytes:
            raise AnswerTooLarge(f"the answer is larger than {max_bytes} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        window = 16 + zlib.MAX_WBITS if "gzip" in encoding else zlib.MAX_WBITS
        try:
            decompressor = zlib.decompressobj(window)
            body = decompressor.decompress(body, max_bytes + 1)
        except zlib.error:
            try:  # some servers send raw deflate without the zlib header
                body = zlib.decompressobj(-zlib.MAX_WBITS).decompress(b"".join(chunks), max_bytes + 1)
            except zlib.error:
                raise ValueError("the answer's compressed body is corrupt") from None
        if len(body) > max_bytes:
            raise AnswerTooLarge(f"the answer is larger than {max_bytes} bytes once decompressed")
    return body


def bounded_post(
    session: requests.Session,
    url: str,
    body: bytes,
    *,
    headers: dict[str, str],
    connect_timeout_seconds: float,
    total_timeout_seconds: float,
    max_answer_bytes: int,
) -> BoundedAnswer:
    """POST and read the whole answer within total_timeout_seconds and max_answer_bytes.

    Raises DeadlineExceeded when the deadline cut the exchange, else requests.RequestException, AnswerTooLarge or
    ValueError on failure. An answer read in full counts, even if the deadline passed as its last byte came.
    """
    exchange = WATCHDOG.begin(time.monotonic() + total_timeout_seconds)
    try:
        try:
            response = session.post(
                url, data=body, headers=headers, stream=True, allow_redirects=False,
                timeout=(min(connect_timeout_seconds, total_timeout_seconds), total_timeout_seconds),
            )
            try:
                content = read_capped(response, max_answer_bytes)
            finally:
                response.close()
        except Exception:
            if exchange.expired:
                raise DeadlineExceeded(total_timeout_seconds) from None
            raise
    finally:
        WATCHDOG.end(exchange)
    charset = response.encoding or "utf-8"
    try:
        text = content.decode(charset, errors="replace")
    except LookupError:  # an unknown charset name
        text = content.decode("utf-8", errors="replace")
    return BoundedAnswer(response.status_code, response.headers, text)


class DeadlineExceeded(Exception):
    """The whole exchange took longer than its total timeout."""

    def __init__(self, total_timeout_seconds: float):
        super().__init__(f"no complete answer within {total_timeout_seconds:g} s")
        self.total_timeout_seconds = total_timeout_seconds
