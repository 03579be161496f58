"""A real redis-server for the tests: Debian's package, started on a free loopback port in a temporary directory with
nothing saved (`--save "" --appendonly no`), and stopped afterwards whatever the test did.

`make test` installs the package when it runs as root (tests/e2e/install-tools.sh); elsewhere a test that needs it
skips saying how to install it, except under REQUIRE_E2E=1 (CI), where that is a failure.

In a test module:

    from tests.redis_server import redis_fixture, redis_factory_fixture

    redis_server = redis_fixture(scope="session")        # one server for the module's tests: `def test_x(redis_server)`
    redis_servers = redis_factory_fixture()             # `redis_servers(password="pw")` starts one more, for one test

Options (of both, and of RedisServer): password= (--requirepass; the URL carries it), cluster=True (a one-node Redis
Cluster, which refuses a script or MULTI across slots), tls=True (rediss:// only, a self-signed certificate made by
openssl), args=(...) (more redis-server options, e.g. ("--maxmemory", "4mb")). A RedisServer can also stop(), start()
again on the same port (a new, empty Redis), freeze() (SIGSTOP: a hung Redis) and thaw() (SIGCONT).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import urllib.parse
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.e2e.tools import skip_or_fail

PROGRAM = "redis-server"
PACKAGE = "redis-server"  # Debian's
START_TIMEOUT_SECONDS = 15.0
STOP_TIMEOUT_SECONDS = 10.0
READY = "Ready to accept connections"
_PORT_ATTEMPTS = 5


def redis_server_program() -> str:
    """The path of redis-server; skips (or fails under REQUIRE_E2E=1) saying how to install it."""
    path = shutil.which(PROGRAM)
    if path is None:
        skip_or_fail(f"needs {PROGRAM}: run `make test` as root (it installs it), or "
                     f"`sudo apt-get install --no-install-recommends {PACKAGE}`")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """One redis-server process on 127.0.0.1 in its own directory."""

    def __init__(self, directory: str | os.PathLike, *, password: str | None = None, cluster: bool = False,
                 tls: bool = False, args: tuple[str, ...] = (), program: str | None = None):
        """cluster: a one-node Redis Cluster holding every slot, where a script (or MULTI) touching keys of two
        slots is refused: what the store's hash tags must prevent. tls: TLS only (rediss://), with a self-signed
        certificate for 127.0.0.1 made by openssl (the URL names it as the CA to trust)."""
        self.directory = Path(directory)
        self.password = password
        self.cluster = cluster
        self.tls = tls
        self.args = tuple(args)
        self.program = program or redis_server_program()
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self.frozen = False
        self._log: list[str] = []
        self._logged = threading.Condition()

    @property
    def url(self) -> str:
        return self.url_with(self.password)

    def url_with(self, password: str | None) -> str:
        """The URL with another password (or none)."""
        credentials = f":{urllib.parse.quote(password, safe='')}@" if password else ""
        if self.tls:
            ca = urllib.parse.quote(str(self.certificate))
            return f"rediss://{credentials}127.0.0.1:{self.port}/0?ssl_ca_certs={ca}"
        return f"redis://{credentials}127.0.0.1:{self.port}/0"

    @property
    def certificate(self) -> Path:
        return self.directory / "tls" / "cert.pem"

    def _make_certificate(self) -> tuple[str, ...]:
        openssl = shutil.which("openssl")
        if openssl is None:
            skip_or_fail("needs openssl for a TLS redis-server: `sudo apt-get install --no-install-recommends openssl`")
        directory = self.certificate.parent
        directory.mkdir(parents=True, exist_ok=True)
        key = directory / "key.pem"
        if not self.certificate.exists():
            subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                            str(self.certificate), "-days", "2", "-subj", "/CN=127.0.0.1",
                            "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
        return ("--tls-cert-file", str(self.certificate), "--tls-key-file", str(key), "--tls-ca-cert-file",
                str(self.certificate), "--tls-auth-clients", "no")

    def log(self) -> str:
        with self._logged:
            return "".join(self._log)

    def wait_for_log(self, text: str, *, after: int = 0, timeout: float = START_TIMEOUT_SECONDS) -> bool:
        """Whether a line holding the text is logged (after the first `after` lines) within the timeout."""
        with self._logged:
            return self._logged.wait_for(lambda: any(text in line for line in self._log[after:]), timeout)

    def start(self) -> RedisServer:
        """Start it (again on the same port after stop()), and return once it accepts connections."""
        if self.process is not None and self.process.poll() is None:
            return self
        ports = [self.port] if self.port is not None else [free_port() for _ in range(_PORT_ATTEMPTS)]
        for port in ports:
            if self._start_on(port):
                self.port = port
                return self
        raise RuntimeError(f"redis-server did not start on 127.0.0.1 (ports {ports}):\n{self.log()}")

    def _start_on(self, port: int) -> bool:
        self.directory.mkdir(parents=True, exist_ok=True)
        nodes = self.directory / f"nodes-{port}.conf"
        nodes.unlink(missing_ok=True)  # started again: a new, empty node, as a Redis without the file is
        cluster = ("--cluster-enabled", "yes", "--cluster-config-file", str(nodes))
        listen = ("--port", "0", "--tls-port", str(port), *self._make_certificate()) if self.tls else ("--port", str(port))
        command = [self.program, *listen, "--bind", "127.0.0.1", "--dir", str(self.directory),
                   "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "", "--loglevel", "notice",
                   *(cluster if self.cluster else ()), *(("--requirepass", self.password) if self.password else ()),
                   *self.args]
        with self._logged:
            first_line = len(self._log)
        process = subprocess.Popen(command, cwd=self.directory, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, errors="replace")
        exited = []

        def drain() -> None:  # reads its log for ever, so the pipe never fills and blocks it
            for line in process.stdout:
                with self._logged:
                    self._log.append(line)
                    self._logged.notify_all()
            with self._logged:
                exited.append(True)
                self._logged.notify_all()

        threading.Thread(target=drain, name=f"redis-server-{port}-log", daemon=True).start()
        with self._logged:
            ready = self._logged.wait_for(lambda: exited or any(READY in line for line in self._log[first_line:]),
                                          START_TIMEOUT_SECONDS) and not exited
        if ready and process.poll() is None:
            self.process, self.port, self.frozen = process, port, False
            if self.cluster:
                self._take_every_slot(first_line)
            return True
        _end(process)
        return False

    def _take_every_slot(self, first_line: int) -> None:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=10)
        try:
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        finally:
            client.close()
        # A master takes a moment (2 s) before it calls its cluster ok: until then it answers CLUSTERDOWN.
        if not self.wait_for_log("Cluster state changed: ok", after=first_line):
            raise RuntimeError(f"the one-node Redis Cluster did not come up:\n{self.log()}")

    def freeze(self) -> None:
        """SIGSTOP: it keeps its port and its connections, and answers nothing (a hung Redis)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.frozen = False

    def stop(self) -> None:
        """Stop it (its data goes with it: nothing is saved); start() brings a new, empty one on the same port."""
        if self.process is None:
            return
        if self.frozen:
            self.thaw()
        _end(self.process)
        self.process = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _end(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def redis_fixture(*, scope: str = "function", **options):
    """A pytest fixture (assign it to a name in the test module) that yields a started RedisServer."""

    @pytest.fixture(scope=scope)
    def fixture() -> Iterator[RedisServer]:
        program = redis_server_program()
        with tempfile.TemporaryDirectory(prefix="redis-") as directory:
            server = RedisServer(directory, program=program, **options)
            try:
                yield server.start()
            finally:
                server.stop()

    return fixture


def redis_factory_fixture(*, scope: str = "function"):
    """A pytest fixture that yields a function starting a RedisServer (with the options given to it) each call;
    every one it started is stopped at the end of the scope."""

    @pytest.fixture(scope=scope)
    def fixture() -> Iterator[Callable[..., RedisServer]]:
        program = redis_server_program()
        started: list[RedisServer] = []
        with tempfile.TemporaryDirectory(prefix="redis-") as directory:
            def start(**options) -> RedisServer:
                server = RedisServer(Path(directory) / str(len(started)), program=program, **options)
                started.append(server)
                return server.start()

            try:
                yield start
            finally:
                for server in started:
                    server.stop()

    return fixture
