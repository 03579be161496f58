"""Process, port and polling helpers for the tests that run the relay as a real process.

Every process started here runs in its own session (process group), so stopping it also stops what it forked
(gunicorn's worker); stop() ends the group by its id, first politely, then with SIGKILL. bench/ uses them too.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import requests

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
GUNICORN_COMMAND = (PYTHON, "-m", "gunicorn", "-c", "gunicorn.conf.py", "rocketchat_webhook:app")
DEV_SERVER_COMMAND = (PYTHON, "rocketchat_webhook.py")
POLL_INTERVAL_SECONDS = 0.05
START_TIMEOUT_SECONDS = 15.0
STOP_TIMEOUT_SECONDS = 10.0

# Every variable the relay reads: those named in rcwebhook/config.py and gunicorn.conf.py (read from their source,
# so a setting added later is covered too) and their NAME_FILE forms, plus what else changes how the relay, gunicorn
# or the HTTP client behave. None of them is inherited from the developer's shell.
_SOURCES = (REPO / "rcwebhook" / "config.py", REPO / "gunicorn.conf.py")
_NAMED = {name for source in _SOURCES for name in re.findall(r'"([A-Z][A-Z0-9_]{2,})"', source.read_text())}
RELAY_VARIABLES = tuple(sorted(_NAMED - {"CRITICAL", "DEBUG", "ERROR", "INFO", "WARN", "WARNING"} | {"DEBUG"}))
OTHER_INFLUENCES = (
    "GUNICORN_CMD_ARGS", "WEB_CONCURRENCY", "FLASK_DEBUG", "FLASK_RUN_FROM_CLI", "FLASK_APP", "FLASK_ENV",
    "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy",
)


def _inherited(name: str) -> bool:
    return name not in RELAY_VARIABLES + OTHER_INFLUENCES and not (
        name.endswith("_FILE") and name[: -len("_FILE")] in RELAY_VARIABLES
    )


def relay_environ(overrides: Mapping[str, str | None] = ()) -> dict[str, str]:
    """A clean copy of os.environ for a relay process: no relay setting inherited, no .env read, no proxy.

    load_dotenv() finds .env by walking up from the directory of the code that calls it (rcwebhook/ and the
    directory of gunicorn.conf.py), not from the working directory, so a tmp cwd would not keep a .env in the
    checkout out; PYTHON_DOTENV_DISABLED (python-dotenv >= 1.2) does. A None value in overrides removes the name.
    STATE_URL is memory:// unless overridden.
    """
    environ = {name: value for name, value in os.environ.items() if _inherited(name)}
    environ["PYTHON_DOTENV_DISABLED"] = "1"
    environ["NO_PROXY"] = environ["no_proxy"] = "127.0.0.1,localhost"
    environ["PYTHONUNBUFFERED"] = "1"
    environ["STATE_URL"] = "memory://"  # each relay its own state; a test of persistence gives it a file
    for name, value in dict(overrides).items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    return environ


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


closed_port = free_port  # a port where a connection is refused


class SilentServer:
    """A listening socket that never accepts: connections complete in the kernel's backlog and get no answer."""

    def __init__(self):
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(64)
        self.port = self.socket.getsockname()[1]

    def close(self) -> None:
        self.socket.close()

    def __enter__(self) -> "SilentServer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def direct_session() -> requests.Session:
    """An HTTP session to 127.0.0.1 that ignores any proxy set in the developer's environment."""
    session = requests.Session()
    session.trust_env = False
    return session


def call_within(seconds: float, call: Callable[[], object], what: str) -> object:
    """call() in a thread of its own; fails the test when it takes longer than seconds (a hang), instead of hanging
    the whole run. What call raises is raised here."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            outcome["error"] = error

    worker = threading.Thread(target=run, name="bounded-call", daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"{what} did not answer within {seconds} s (a hang)"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def wait_until(condition: Callable[[], object], timeout_seconds: float, description: str) -> object:
    """Poll condition until it returns something truthy; AssertionError naming what was awaited on timeout."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_seconds} s waiting for {description}")
        time.sleep(POLL_INTERVAL_SECONDS)


class ManagedProcess:
    """A child process in its own process group, its output in files, always stopped by stop().

    Its output goes to <name>.stdout and <name>.stderr in output_dir; with merge_output, both to <name>.log in the
    order written, as a terminal shows them (a benchmark's log to keep).
    """

    def __init__(self, args: Sequence[str], *, env: Mapping[str, str], cwd: Path, output_dir: Path, name: str,
                 merge_output: bool = False):
        self.args = list(args)
        if merge_output:
            self.stdout_path = self.stderr_path = output_dir / f"{name}.log"
        else:
            self.stdout_path = output_dir / f"{name}.stdout"
            self.stderr_path = output_dir / f"{name}.stderr"
        with contextlib.ExitStack() as files:
            stdout = files.enter_context(open(self.stdout_path, "wb"))
            stderr = subprocess.STDOUT if merge_output else files.enter_context(open(self.stderr_path, "wb"))
            self.process = subprocess.Popen(
                self.args, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                start_new_session=True,  # its own process group: stop() reaches gunicorn's workers too
            )
        self.pid = self.process.pid
        self._stopped = False

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def _signal_group(self, signal_number: int) -> None:
        try:
            os.killpg(self.pid, signal_number)  # the group this process leads (start_new_session)
        except ProcessLookupError:
            pass

    def wait(self, timeout_seconds: float) -> int | None:
        """The exit status, or None if it is still running after timeout_seconds."""
        try:
            return self.process.wait(timeout_seconds)
        except subprocess.TimeoutExpired:
            return None

    def begin_stop(self) -> None:
        """SIGTERM to the group, as systemd or docker stop it; stop() waits for the end."""
        if self.running:
            self._signal_group(signal.SIGTERM)

    def stop(self, timeout_seconds: float = STOP_TIMEOUT_SECONDS) -> int:
        """SIGTERM to the group, then SIGKILL if it is not gone in time; returns the leader's exit status.

        Once it has returned, calling it again (a finally block, then atexit) signals nothing: the group's id is
        free by then and may name someone else's group.
        """
        if self._stopped:
            return self.process.returncode
        if self.running:
            self._signal_group(signal.SIGTERM)
            if self.wait(timeout_seconds) is None:
                self._signal_group(signal.SIGKILL)
                self.process.wait(timeout_seconds)
        # Whatever the leader did, nothing of its group may outlive the test (a worker whose master died).
        self._signal_group(signal.SIGKILL)
        self._stopped = True
        return self.process.returncode


def wait_until_serving(
    process: ManagedProcess, url: str, timeout_seconds: float, *, http: requests.Session, name: str,
    request_timeout_seconds: float | tuple[float, float] = 1.0,
) -> None:
    """Poll GET url until it answers 200 (no answer yet, a cut or a slow one: not yet serving).

    AssertionError naming the exit status and the output if process ends first, or what was awaited on timeout.
    """
    def serving() -> bool:
        if not process.running:
            raise AssertionError(
                f"{name} exited with status {process.process.returncode} before serving; stderr:\n{process.stderr()}"
            )
        try:
            return http.get(url, timeout=request_timeout_seconds).status_code == 200
        except requests.RequestException:
            return False

    wait_until(serving, timeout_seconds, f"GET {url} to answer 200")


@dataclass
class Finished:
    """A process run to its end."""

    returncode: int
    stdout: str
    stderr: str
    elapsed_seconds: float


def run_to_exit(
    args: Sequence[str], *, env: Mapping[str, str], cwd: Path, output_dir: Path, name: str, timeout_seconds: float
) -> Finished:
    """Run a command to completion; if it outlives timeout_seconds its whole group is killed and the test fails."""
    started = time.monotonic()
    process = ManagedProcess(args, env=env, cwd=cwd, output_dir=output_dir, name=name)
    try:
        returncode = process.wait(timeout_seconds)
        elapsed = time.monotonic() - started
        if returncode is None:
            raise AssertionError(
                f"{' '.join(map(str, args))} still running after {timeout_seconds} s; stderr:\n{process.stderr()}"
            )
        return Finished(returncode, process.stdout(), process.stderr(), elapsed)
    finally:
        process.stop()


class Relay:
    """The relay running as a process and listening on 127.0.0.1:port."""

    def __init__(self, process: ManagedProcess, port: int, log_path: Path):
        self.process = process
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = log_path  # where the relay's log goes: its stderr unless LOG_FILE says otherwise
        self.http = direct_session()  # no proxy between the test and the relay

    @classmethod
    def start(
        cls, command: Sequence[str], env: Mapping[str, str], *, output_dir: Path, name: str = "relay",
        log_path: Path | None = None,
    ) -> "Relay":
        """Start the relay (HOST and PORT come from env) and wait until GET /health answers 200."""
        process = ManagedProcess(command, env=env, cwd=REPO, output_dir=output_dir, name=name)
        relay = cls(process, int(env["PORT"]), log_path or process.stderr_path)
        try:
            relay.wait_healthy()
        except BaseException:
            relay.stop()
            raise
        return relay

    def wait_healthy(self, timeout_seconds: float = START_TIMEOUT_SECONDS) -> None:
        wait_until_serving(self.process, f"{self.base_url}/health", timeout_seconds, http=self.http, name="the relay")

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def post_webhook(self, body: bytes | str, *, content_type: str = "application/json", headers=None,
                     timeout_seconds: float = 30) -> requests.Response:
        all_headers = {"Content-Type": content_type, **(headers or {})}
        data = body.encode("utf-8") if isinstance(body, str) else body
        return self.http.post(f"{self.base_url}/webhook", data=data, headers=all_headers, timeout=timeout_seconds)

    def begin_stop(self) -> None:
        self.http.close()
        self.process.begin_stop()

    def stop(self) -> int:
        self.http.close()
        return self.process.stop()


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus' text format, 0.0 when absent."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        metric, _, label_text = series.partition("{")
        found = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
        if metric == name and found == wanted:
            return float(value)
    return 0.0


def most_in_any_window(moments, window_seconds: float) -> int:
    """The most moments in any trailing window (t - window_seconds, t], t one of them (posts against a budget)."""
    ordered = sorted(moments)
    most, start = 0, 0
    for end, moment in enumerate(ordered):
        while ordered[start] <= moment - window_seconds:
            start += 1
        most = max(most, end - start + 1)
    return most
