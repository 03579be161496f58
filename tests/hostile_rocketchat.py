"""A hostile Rocket.Chat of the tests' own: a raw TCP server that answers each request as scripted.

mock_server.py speaks correct HTTP; this one can cut a connection after N bytes of its answer (inside the status
line, the headers or the body), drip the body, stream an endless body, or never answer. Each connection carries one
request and one answer, then is closed. Scripted answers are used in order, then the fallback (a correct
`200 {"success":true}` unless fail_until_recovered() says otherwise). Every request is recorded.
"""

from __future__ import annotations

import collections
import dataclasses
import http
import json
import socket
import threading
from dataclasses import dataclass

POLL_SECONDS = 0.05  # how often blocked socket calls look at the stop flag
READY_TIMEOUT_SECONDS = 5.0
JOIN_TIMEOUT_SECONDS = 2.0
MAX_REQUEST_BYTES = 16 * 1024 * 1024
STREAM_CHUNK = b"x" * 65536
OK_BODY = b'{"success":true}'


@dataclass(frozen=True)
class Behaviour:
    """One answer: what is sent, and how (cut, dripped, endless or never)."""

    status: int = 200
    body: bytes = OK_BODY
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)
    framing: str = "length"  # "length": a correct Content-Length is added; "close": none, the close ends the body
    cut_after_bytes: int | None = None  # close the connection after this many bytes of the answer
    drip_seconds: float | None = None  # send the body one byte at a time, this far apart
    endless_bytes: int | None = None  # announce this Content-Length and stream b"x" until the client hangs up
    silent: bool = False  # read the request, never answer, close when the client gives up

    def head(self, content_length: int | None = None) -> bytes:
        try:
            reason = http.HTTPStatus(self.status).phrase
        except ValueError:
            reason = "Hostile"
        lines = [f"HTTP/1.1 {self.status} {reason}", *(f"{name}: {value}" for name, value in self.headers)]
        names = {name.lower() for name, _ in self.headers}
        if content_length is not None:
            lines.append(f"Content-Length: {content_length}")
        elif self.framing == "length" and not names & {"content-length", "transfer-encoding"}:
            lines.append(f"Content-Length: {len(self.body)}")
        if "connection" not in names:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def response_bytes(self) -> bytes:
        """The whole answer as written when it is neither cut, dripped nor endless."""
        return self.head() + self.body


OK = Behaviour()


def answer(status: int, body: bytes | str | dict = b"", headers: dict | tuple = (), **options) -> Behaviour:
    """A Behaviour from a status, a body (a dict is sent as JSON) and headers (a dict or (name, value) pairs)."""
    body = json.dumps(body) if isinstance(body, dict) else body
    body = body.encode("utf-8") if isinstance(body, str) else body
    pairs = tuple(headers.items()) if isinstance(headers, dict) else tuple(headers)
    return Behaviour(status=status, body=body, headers=pairs, **options)


def cut_after(behaviour: Behaviour, marker: bytes) -> Behaviour:
    """The same answer, cut just after the first occurrence of marker in it."""
    whole = behaviour.response_bytes()
    return dataclasses.replace(behaviour, cut_after_bytes=whole.index(marker) + len(marker))


@dataclass
class ReceivedRequest:
    """One request as it arrived, the behaviour it met, and what was sent back."""

    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    behaviour: Behaviour
    bytes_sent: int = 0
    finished: bool = False  # the answer is over: sent whole, cut, or the client hung up

    @property
    def json(self) -> object:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def mentions(self, text: str) -> bool:
        return text in self.body.decode("utf-8", "replace")


class HostileRocketChat:
    """The server: start() returns once it listens; close() ends every connection and thread."""

    def __init__(self, hook_id: str = "hostile-hook-id", token: str = "hostile-secret-token-5f3a9c"):
        self.hook_id, self.token = hook_id, token
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._scripted: collections.deque[Behaviour] = collections.deque()
        self._fallback = OK
        self._requests: list[ReceivedRequest] = []
        self._connections: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]

    @property
    def hook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{self.hook_id}/{self.token}"

    def answer(self, *behaviours: Behaviour) -> None:
        """Use these for the next requests, in order."""
        with self._lock:
            self._scripted.extend(behaviours)

    def fail_until_recovered(self, behaviour: Behaviour) -> None:
        """Answer every request so (after any scripted ones) until recover()."""
        with self._lock:
            self._fallback = behaviour

    def recover(self) -> None:
        """From now on, a correct 200 {"success":true} to every request."""
        with self._lock:
            self._scripted.clear()
            self._fallback = OK

    def reset(self) -> None:
        """recover(), and forget the requests received."""
        self.recover()
        with self._lock:
            self._requests.clear()

    @property
    def scripted_left(self) -> int:
        with self._lock:
            return len(self._scripted)

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._requests)

    def delivered(self, text: str) -> list[ReceivedRequest]:
        """Posts mentioning text that were answered a correct 200 {"success":true}: what Rocket.Chat showed."""
        return [request for request in self.requests if request.behaviour == OK and request.mentions(text)]

    def start(self) -> "HostileRocketChat":
        self._listener.listen(64)
        self._listener.settimeout(POLL_SECONDS)
        self._spawn(self._accept_loop, "hostile-accept")
        if not self.ready.wait(READY_TIMEOUT_SECONDS):
            raise RuntimeError("the hostile Rocket.Chat did not start")
        return self

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:  # wakes what blocks on them; their threads then end
            _shutdown(connection)
        for thread in list(self._threads):
            thread.join(JOIN_TIMEOUT_SECONDS)

    def __enter__(self) -> "HostileRocketChat":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _spawn(self, target, name: str, *args) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        self.ready.set()
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return  # closed
            connection.settimeout(POLL_SECONDS)
            with self._lock:
                self._connections.add(connection)
            self._spawn(self._serve, "hostile-connection", connection)

    def _serve(self, connection: socket.socket) -> None:
        try:
            request = self._read_request(connection)
            if request is not None:
                self._answer(connection, request)
                request.finished = True
        finally:
            with self._lock:
                self._connections.discard(connection)
            _shutdown(connection)

    def _recv(self, connection: socket.socket) -> bytes | None:
        """Some bytes; b"" when the client hung up; None when the server stops."""
        while not self._stop.is_set():
            try:
                return connection.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return b""
        return None

    def _read_request(self, connection: socket.socket) -> ReceivedRequest | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self._recv(connection)
            if not chunk or len(data) > MAX_REQUEST_BYTES:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, path, _ = (request_line.split(" ", 2) + ["", ""])[:3]
        pairs = (line.partition(":") for line in header_lines)
        headers = {name.strip().lower(): value.strip() for name, _, value in pairs}
        length = int(headers.get("content-length", "0") or 0)
        while len(body) < min(length, MAX_REQUEST_BYTES):
            chunk = self._recv(connection)
            if not chunk:
                return None
            body += chunk
        with self._lock:
            behaviour = self._scripted.popleft() if self._scripted else self._fallback
            request = ReceivedRequest(method, path, headers, body, behaviour)
            self._requests.append(request)
        return request

    def _send(self, connection: socket.socket, request: ReceivedRequest, data: bytes) -> bool:
        """Send data whole; False when the client hung up or the server stops."""
        view = memoryview(data)
        while view:
            if self._stop.is_set():
                return False
            try:
                sent = connection.send(view)
            except socket.timeout:
                continue
            except OSError:
                return False
            request.bytes_sent += sent
            view = view[sent:]
        return True

    def _answer(self, connection: socket.socket, request: ReceivedRequest) -> None:
        behaviour = request.behaviour
        if behaviour.silent:
            while self._recv(connection):  # until the client gives up (b"") or the server stops (None)
                pass
        elif behaviour.endless_bytes is not None:
            head = behaviour.head(behaviour.endless_bytes)
            end = len(head) + behaviour.endless_bytes
            sending = self._send(connection, request, head)
            while sending and request.bytes_sent < end:
                sending = self._send(connection, request, STREAM_CHUNK[:end - request.bytes_sent])
        elif behaviour.drip_seconds is not None:
            sending = self._send(connection, request, behaviour.head())
            for index in range(len(behaviour.body)):
                if not sending or self._stop.wait(behaviour.drip_seconds):
                    return
                sending = self._send(connection, request, behaviour.body[index:index + 1])
        else:
            self._send(connection, request, behaviour.response_bytes()[:behaviour.cut_after_bytes])


def _shutdown(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    connection.close()
