#!/usr/bin/env python3
"""Alert-storm benchmark: the relay under the shipped gunicorn config, against the mock Rocket.Chat.

    python bench/storm.py --groups 100 --alerts 10 --hooks 1 [--latency-seconds 2]
                          [--fail-first N | --fail-seconds S] [--rate-limit 10/60s] [--concurrency 64]
                          [--resend | --no-resend] [--timeout 180] [--state-url sqlite|memory|redis|URL]
                          [--replicas N] [--workers N] [--json]

It starts mock_server.py and `gunicorn -c gunicorn.conf.py rocketchat_webhook:app` on free loopback ports, wires
them together, optionally makes the mock slow or failing, sends the groups concurrently as Alertmanager-shaped
bodies (re-sending what is answered 5xx as Alertmanager would), waits until the mock shows every alert (or the
timeout), and prints what happened. See bench/README.md for what each figure means. The relay's journal writes to a
fresh SQLite file in the run's temporary directory (the product's default kind of store), or where --state-url says.

With --replicas N (issue 12) it starts one redis-server (--state-url redis, the default then; or uses the Redis a
redis:// URL names) and N relays on it (STATE_URL=redis://…, one STATE_PREFIX, EXPECTED_PROCESSES = N × --workers),
and spreads the requests over them round-robin as a load balancer would: every request, first attempt or re-send,
goes to the next relay in turn. The figures are the whole storm's, plus each relay's (its requests and answers, its
first answers' p50/p99, its posts from its /metrics, its resident memory).

Only the standard library, requests and the process helpers the tests use (tests/helpers.py). Every HTTP call has a
timeout, the run has a total timeout, and every child process (each in its own process group: the mock, the relay or
relays, redis-server) is always stopped: try/finally, atexit, and SIGTERM/SIGINT handlers.
"""

from __future__ import annotations

import argparse
import atexit
import concurrent.futures
import datetime
import hashlib
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Callable
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests/ (a namespace package) holds the process helpers shared with the tests
from tests.helpers import (  # noqa: E402
    GUNICORN_COMMAND, PYTHON, ManagedProcess, direct_session, free_port, most_in_any_window, relay_environ,
    wait_until_serving,
)

LOOPBACK = "127.0.0.1"
HOOK_NAMES = ("critical", "warning", "info")  # mock_server.py's default hooks: /hooks/<name>/<name>-token

START_TIMEOUT_SECONDS = 20.0
STOP_TIMEOUT_SECONDS = 45.0  # gunicorn's graceful_timeout is 30 s; the worker drains for up to 8 s
READY_PROBE_TIMEOUT_SECONDS = (1.0, 2.0)  # connect, read
DELIVERY_POLL_INTERVAL_SECONDS = 0.5
CONNECT_TIMEOUT_SECONDS = 3.05
# The relay answers within DELIVERY_DEADLINE_SECONDS (8 s); a read timeout well above it never cuts an answer short.
WEBHOOK_READ_TIMEOUT_SECONDS = 30.0
CONTROL_READ_TIMEOUT_SECONDS = 30.0
# Re-sends: exponential backoff with jitter, like Alertmanager's retry loop (0.5 s growing ×1.5), capped short.
RESEND_FIRST_BACKOFF_SECONDS = 0.5
RESEND_BACKOFF_FACTOR = 1.5
RESEND_MAX_BACKOFF_SECONDS = 5.0

# Alert names and instances are unique and easy to find in any message text: StormG0007A0003 on storm-g0007-a0003:9100.
ALERT_PAIR = re.compile(r"StormG(\d{4})A(\d{4}) on storm-g(\d{4})-a(\d{4}):9100")
RATE_LIMIT_TEXT = re.compile(r"^(off|0|\d+/\d+(\.\d+)?s)$")
STATE_FILE_NAME = "state.sqlite3"
# Several relays on one Redis (--replicas): Debian's redis-server, started for the run with nothing saved.
REDIS_PROGRAM = "redis-server"
REDIS_PING_TIMEOUT_SECONDS = 1.0
MAX_REPLICAS = 8
MAX_WORKERS = 8
METRIC_SAMPLE = re.compile(r"^(rocketchat_webhook_[a-z_]+)(?:\{([^}]*)\})? (\S+)$")
OUTCOME_LABEL = re.compile(r'outcome="([^"]*)"')


def state_url_for(choice: str, workdir: Path) -> str:
    """--state-url's value as the relay's STATE_URL: "sqlite" a fresh file in workdir (the product's default kind of
    store), "memory" memory://, anything else as given (the relay refuses what it cannot use, and does not start)."""
    if choice == "sqlite":
        return f"sqlite:///{workdir / STATE_FILE_NAME}"  # workdir is absolute: sqlite:////tmp/storm-…/state.sqlite3
    if choice == "memory":
        return "memory://"
    return choice


def shared_state(state_url: str) -> bool:
    """Whether the STATE_URL is one several relays share (Redis)."""
    return state_url.startswith(("redis://", "rediss://"))


def shown_state_url(state_url: str) -> str:
    """The STATE_URL as printed: a password in it masked."""
    parts = urllib.parse.urlsplit(state_url)
    if parts.password is None:
        return state_url
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def budget_of(rate_limit: str) -> tuple[int, float] | None:
    """--rate-limit as (posts, window seconds); None for no limit."""
    if rate_limit in ("off", "0"):
        return None
    count, _, window = rate_limit.partition("/")
    return (int(count), float(window.rstrip("s"))) if int(count) else None


def alert_name(group: int, alert: int) -> str:
    return f"StormG{group:04d}A{alert:04d}"


def alert_instance(group: int, alert: int) -> str:
    return f"storm-g{group:04d}-a{alert:04d}:9100"


# -- child processes ----------------------------------------------------------------------------------------------


class Child(ManagedProcess):
    """A child in its own process group, stdout and stderr in one log (log_path: <dir>/<name>.log), run from REPO."""

    def __init__(self, name: str, args: list[str], environ: dict[str, str], log_path: Path):
        super().__init__(args, env=environ, cwd=REPO, output_dir=log_path.parent, name=log_path.stem,
                         merge_output=True)
        self.name, self.log_path = name, self.stdout_path

    def alive(self) -> bool:
        return self.running

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.stdout().splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_seconds: float = STOP_TIMEOUT_SECONDS) -> int | None:
        """SIGTERM to the group, SIGKILL after timeout_seconds; never raises, so the next child is stopped too."""
        try:
            return super().stop(timeout_seconds)
        except subprocess.TimeoutExpired:  # still there after SIGKILL (uninterruptible): nothing more to do
            return None


CHILDREN: list[Child] = []
# The names bench/slow_clients.py imports from here.
clean_environ = relay_environ
new_session = direct_session


def stop_children() -> None:
    for child in reversed(CHILDREN):  # the relay first, so its drain can still reach the mock
        child.stop()


def on_signal(signum, _frame) -> None:
    raise SystemExit(128 + signum)


def wait_for(url: str, child: Child, session: requests.Session, deadline_seconds: float) -> None:
    """Poll url until it answers 200; RuntimeError with the child's log when it exits or the deadline passes."""
    try:
        wait_until_serving(child, url, deadline_seconds, http=session, name=child.name,
                           request_timeout_seconds=READY_PROBE_TIMEOUT_SECONDS)
    except AssertionError:
        if child.alive():
            raise RuntimeError(f"{child.name} not ready within {deadline_seconds:g} s:\n{child.log_tail()}") from None
        raise RuntimeError(f"{child.name} exited with status {child.process.returncode}:\n{child.log_tail()}") from None


def redis_answers(port: int) -> bool:
    """Whether a Redis on the loopback port answers PING (with the standard library: RESP's inline command)."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=REDIS_PING_TIMEOUT_SECONDS) as connection:
            connection.settimeout(REDIS_PING_TIMEOUT_SECONDS)
            connection.sendall(b"PING\r\n")
            return connection.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(workdir: Path) -> tuple[str, str]:
    """One redis-server on a free loopback port, nothing saved, its log in <workdir>/redis.log; its URL and version."""
    program = shutil.which(REDIS_PROGRAM)
    if program is None:
        raise RuntimeError(f"--replicas and --state-url redis need {REDIS_PROGRAM} (Debian: apt-get install "
                           "--no-install-recommends redis-server), or --state-url redis://… naming a Redis to use")
    version = subprocess.run([program, "--version"], capture_output=True, text=True, timeout=10).stdout
    version = (re.search(r"v=(\S+)", version) or re.search(r"(\S+)", version or "?")).group(1)
    port = free_port()
    redis = Child(REDIS_PROGRAM, [program, "--port", str(port), "--bind", LOOPBACK, "--dir", str(workdir),
                                  "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "",
                                  "--maxmemory-policy", "noeviction"],  # as the README asks for this data
                  relay_environ(), workdir / "redis.log")
    CHILDREN.append(redis)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not redis_answers(port):
        if not redis.alive():
            raise RuntimeError(f"{REDIS_PROGRAM} exited with status {redis.process.returncode}:\n{redis.log_tail()}")
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{REDIS_PROGRAM} not answering within {START_TIMEOUT_SECONDS:g} s:\n{redis.log_tail()}")
        time.sleep(0.05)
    return f"redis://{LOOPBACK}:{port}/0", version


def status_kib(pid: int, field_name: str) -> int | None:
    """A /proc/<pid>/status field in kB (VmRSS: resident now; VmHWM: the most it was resident); None if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def proportional_kib(pid: int) -> int | None:
    """Pss from /proc/<pid>/smaps_rollup: its resident pages, each shared one divided among its sharers (gunicorn's
    worker shares the master's pages until it writes them, and RSS counts them in both)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def child_pids(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def relay_memory(relay: Child) -> dict:
    """Resident memory of a relay, gunicorn's master plus its worker(s), in MiB: now and at its most (VmHWM)."""
    pids = [relay.pid, *child_pids(relay.pid)]
    figures: dict = {}
    for key, field_name in (("rss", "VmRSS"), ("rss_peak", "VmHWM")):
        kib = [status_kib(pid, field_name) for pid in pids]
        known = [value for value in kib if value is not None]
        figures[f"{key}_mib"] = round(sum(known) / 1024, 1) if known else None
        figures[f"{key}_master_mib"] = round(kib[0] / 1024, 1) if kib[0] is not None else None
        figures[f"{key}_workers_mib"] = [round(value / 1024, 1) for value in kib[1:] if value is not None]
    pss = [value for value in map(proportional_kib, pids) if value is not None]
    figures["pss_mib"] = round(sum(pss) / 1024, 1) if pss else None
    return figures


def relay_counters(session: requests.Session, relay_url: str) -> dict | None:
    """Its posts by outcome, notifications joined to another (de-duplicated) or sharing a post (merged), and
    state_backend_up, from GET /metrics; None when it does not answer. With several workers /metrics is one worker's."""
    try:
        response = session.get(f"{relay_url}/metrics", timeout=(CONNECT_TIMEOUT_SECONDS, CONTROL_READ_TIMEOUT_SECONDS))
    except requests.RequestException:
        return None
    if response.status_code != 200:
        return None
    counters: dict = {"posts": {}, "deduplicated": 0, "merged": 0, "state_backend_up": None}
    for line in response.text.splitlines():
        sample = METRIC_SAMPLE.match(line)
        if not sample:
            continue
        name, labels, value = sample.group(1), sample.group(2) or "", float(sample.group(3))
        if name == "rocketchat_webhook_posts_total":
            outcome = OUTCOME_LABEL.search(labels)
            key = outcome.group(1) if outcome else "?"
            counters["posts"][key] = counters["posts"].get(key, 0) + int(value)
        elif name == "rocketchat_webhook_notifications_deduplicated_total":
            counters["deduplicated"] += int(value)
        elif name == "rocketchat_webhook_notifications_merged_total":
            counters["merged"] += int(value)
        elif name == "rocketchat_webhook_state_backend_up":
            counters["state_backend_up"] = int(value)
    return counters


def relay_revision() -> str:
    """The checkout's commit, with "+dirty" when the relay's code differs from it (figures belong to a version)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        changes = subprocess.run(["git", "status", "--porcelain", "--", "rcwebhook", "rocketchat_webhook.py",
                                  "gunicorn.conf.py", "requirements.txt"], cwd=REPO, capture_output=True,
                                 text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if changes else "")


# -- the storm ------------------------------------------------------------------------------------------------------


def fingerprint(labels: dict[str, str]) -> str:
    """16 hex digits from the label set, shaped like Alertmanager's."""
    return hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]


def group_body(group: int, alert_count: int, severity: str, starts_at: str) -> bytes:
    """One Alertmanager webhook body (version 4) for one aggregation group."""
    group_label = f"g{group:04d}"
    alerts = []
    for alert in range(1, alert_count + 1):
        labels = {"alertname": alert_name(group, alert), "instance": alert_instance(group, alert),
                  "job": "storm", "severity": severity, "storm_group": group_label}
        alerts.append({
            "status": "firing",
            "labels": labels,
            "annotations": {"summary": f"storm alert {alert} of group {group}",
                            "description": "Synthetic alert from bench/storm.py."},
            "startsAt": starts_at,
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example:9090/graph?g0.expr=up+%3D%3D+0",
            "fingerprint": fingerprint(labels),
        })
    document = {
        "version": "4",
        "groupKey": f'{{}}/{{severity="{severity}"}}:{{storm_group="{group_label}"}}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "rocketchat",
        "groupLabels": {"storm_group": group_label},
        "commonLabels": {"job": "storm", "severity": severity, "storm_group": group_label},
        "commonAnnotations": {"description": "Synthetic alert from bench/storm.py."},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": alerts,
    }
    return json.dumps(document).encode()


@dataclass
class RequestLog:
    """One group's request: every answer it got, and the timings."""

    group: int
    answers: list[str] = field(default_factory=list)  # "200", "503", "502", "error:ReadTimeout", ...
    relays: list[int | None] = field(default_factory=list)  # the relay each answer came from (None: not sent)
    first_answer_seconds: float | None = None  # relay answer latency of the first attempt
    seconds_to_200: float | None = None  # from the first attempt's start to the 200 (re-sends included)


def final_answer(answer: str) -> bool:
    """200 and 502 end the re-sending (502: Rocket.Chat refused for good); so does any 4xx."""
    return answer in ("200", "502") or answer.startswith("4")


class RoundRobin:
    """The relays' webhook URLs behind a load balancer: each request, a first attempt or a re-send, goes to the next
    one in turn (Alertmanager re-sends to the balancer's address, which may route it to another relay)."""

    def __init__(self, urls: list[str]):
        self.urls = list(urls)
        self._turn = 0
        self._lock = threading.Lock()

    def next(self) -> tuple[int, str]:
        with self._lock:
            index = self._turn
            self._turn = (index + 1) % len(self.urls)
        return index, self.urls[index]


def send_group(target: RoundRobin | str, group: int, body: bytes, resend: bool, deadline: float,
               stop: threading.Event, local: threading.local) -> RequestLog:
    """POST one group's body; with resend, again after a backoff while the answer is retryable (as Alertmanager).
    target: one relay's webhook URL, or several behind a RoundRobin."""
    balancer = RoundRobin([target]) if isinstance(target, str) else target
    session = getattr(local, "session", None)
    if session is None:
        session = local.session = direct_session()
    log = RequestLog(group)
    started = time.monotonic()
    attempt = 0
    if time.monotonic() >= deadline:
        log.answers.append("not sent (timeout)")  # --timeout passed while it waited for a thread
        log.relays.append(None)
        return log
    while not stop.is_set():
        relay, url = balancer.next()
        attempt_started = time.monotonic()
        try:
            response = session.post(url, data=body, headers={"Content-Type": "application/json"},
                                    timeout=(CONNECT_TIMEOUT_SECONDS, WEBHOOK_READ_TIMEOUT_SECONDS))
            answer = str(response.status_code)
        except requests.RequestException as error:
            answer = f"error:{type(error).__name__}"
        now = time.monotonic()
        log.answers.append(answer)
        log.relays.append(relay)
        if attempt == 0:
            log.first_answer_seconds = now - attempt_started
        if answer == "200":
            log.seconds_to_200 = now - started
        if final_answer(answer) or not resend:
            break
        delay = min(RESEND_MAX_BACKOFF_SECONDS, RESEND_FIRST_BACKOFF_SECONDS * RESEND_BACKOFF_FACTOR ** attempt)
        delay *= random.uniform(0.5, 1.5)
        if now + delay >= deadline:
            break
        stop.wait(delay)
        attempt += 1
    return log


def percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile (share in 0..1); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def message_strings(message: dict) -> list[str]:
    """The texts an alert can be named in: the top-level text, each attachment's title and text."""
    strings = [message.get("text") or message.get("msg") or ""]
    attachments = message.get("attachments")
    for attachment in attachments if isinstance(attachments, list) else []:
        if isinstance(attachment, dict):
            strings += [str(attachment.get("title", "")), str(attachment.get("text", ""))]
    return strings


def alerts_in_records(records: list[dict]) -> dict[tuple[int, int], int]:
    """(group, alert) → in how many recorded messages it is named (full attachment title or summary line)."""
    seen: dict[tuple[int, int], int] = {}
    for record in records:
        found = set()
        for text in message_strings(record.get("message", {})):
            for match in ALERT_PAIR.finditer(text):
                name_ids, instance_ids = match.group(1, 2), match.group(3, 4)
                if name_ids == instance_ids:
                    found.add((int(name_ids[0]), int(name_ids[1])))
        for key in found:
            seen[key] = seen.get(key, 0) + 1
    return seen


class Mock:
    """The mock's control API."""

    def __init__(self, base_url: str):
        self.base_url, self.session = base_url, direct_session()

    def _call(self, method: str, path: str, payload: dict | None = None) -> dict:
        response = self.session.request(method, f"{self.base_url}{path}", json=payload,
                                        timeout=(CONNECT_TIMEOUT_SECONDS, CONTROL_READ_TIMEOUT_SECONDS))
        if response.status_code != 200:
            raise RuntimeError(f"mock control {method} {path}: HTTP {response.status_code} {response.text[:200]}")
        return response.json()

    def set_fault(self, hook: str, fault: dict) -> None:
        self._call("POST", f"/_mock/faults/{hook}", fault)

    def stats(self) -> dict:
        return self._call("GET", "/_mock/stats")["hooks"]

    def records(self, hooks: tuple[str, ...]) -> list[dict]:
        return [record for hook in hooks for record in self._call("GET", f"/_mock/messages/{hook}")["messages"]]


def distinct_free_ports(count: int, taken: set[int]) -> list[int]:
    """count free loopback ports, none of them in taken nor twice."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in taken and port not in ports:
            ports.append(port)
    return ports


def start_relays(args: argparse.Namespace, state_url: str, mock_url: str, mock_port: int, workdir: Path,
                 control: requests.Session) -> list[tuple[Child, str]]:
    """--replicas relays under gunicorn (shipped config) on one STATE_URL, each ready; (child, base URL) each."""
    shared = shared_state(state_url)
    prefix = f"storm-{os.getpid()}-{time.time_ns()}:"  # its own keys even on a Redis shared with other things
    relays: list[tuple[Child, str]] = []
    for number, port in enumerate(distinct_free_ports(args.replicas, {mock_port}), start=1):
        settings = {
            "HOST": LOOPBACK, "PORT": str(port), "ROCKETCHAT_RATE_LIMIT": args.rate_limit,
            "STATE_URL": state_url,  # a revision before the journal ignores it
            **{f"ROCKETCHAT_WEBHOOK_{name.upper()}": f"{mock_url}/hooks/{name}/{name}-token" for name in HOOK_NAMES},
        }
        if shared:
            settings.update({"STATE_PREFIX": prefix, "WORKERS": str(args.workers),
                             # the fallback's share of the budget, should Redis stop answering
                             "EXPECTED_PROCESSES": str(args.replicas * args.workers)})
        if args.replicas == 1:
            name, log = "relay (gunicorn)", workdir / "relay.log"
        else:
            name, log = f"relay {number} (gunicorn)", workdir / f"relay{number}.log"
        relay = Child(name, list(GUNICORN_COMMAND), relay_environ(settings), log)
        CHILDREN.append(relay)
        relays.append((relay, f"http://{LOOPBACK}:{port}"))
    for relay, relay_url in relays:
        wait_for(f"{relay_url}/ready", relay, control, START_TIMEOUT_SECONDS)
    return relays


def relay_figures(number: int, relay: Child, relay_url: str, logs: list[RequestLog], control: requests.Session,
                  one_worker: bool) -> dict:
    """One relay's share of the storm: the requests it got and its answers, its posts, its memory."""
    index = number - 1
    answers = [answer for log in logs for answer, to in zip(log.answers, log.relays) if to == index]
    firsts = [log.first_answer_seconds for log in logs
              if log.relays[:1] == [index] and log.first_answer_seconds is not None]
    first_attempts = sum(1 for log in logs if log.relays[:1] == [index])
    counters = relay_counters(control, relay_url) if relay.alive() else None
    whole = counters if one_worker else None  # with several workers /metrics is one worker's counters
    return {
        "relay": number,
        "url": relay_url,
        "requests": len(answers),
        "first_attempts": first_attempts,
        "resends": len(answers) - first_attempts,
        "answers": {answer: answers.count(answer) for answer in sorted(set(answers))},
        "answer_p50_seconds": round(percentile(firsts, 0.50), 3) if firsts else None,
        "answer_p99_seconds": round(percentile(firsts, 0.99), 3) if firsts else None,
        "posts": whole["posts"] if whole else None,  # its rocketchat_webhook_posts_total by outcome
        "deduplicated": whole["deduplicated"] if whole else None,
        "merged": whole["merged"] if whole else None,
        "state_backend_up": counters["state_backend_up"] if counters else None,
        **relay_memory(relay),
        "alive_at_end": relay.alive(),
    }


def run(args: argparse.Namespace, workdir: Path) -> dict:
    revision = relay_revision()
    hooks_used = HOOK_NAMES[: args.hooks]
    sent = {(group, alert) for group in range(1, args.groups + 1) for alert in range(1, args.alerts + 1)}
    control = direct_session()

    mock_port = free_port()
    mock = Child("mock_server.py", [PYTHON, "mock_server.py", "--host", LOOPBACK, "--port", str(mock_port),
                                    "--rate-limit", args.rate_limit, "--quiet"],
                 relay_environ(), workdir / "mock.log")
    CHILDREN.append(mock)
    mock_url = f"http://{LOOPBACK}:{mock_port}"
    wait_for(f"{mock_url}/_mock/health", mock, control, START_TIMEOUT_SECONDS)

    redis_version = None
    if args.state_url == "redis":
        state_url, redis_version = start_redis(workdir)
    else:
        state_url = state_url_for(args.state_url, workdir)
    relays = start_relays(args, state_url, mock_url, mock_port, workdir, control)
    balancer = RoundRobin([f"{url}/webhook" for _, url in relays])

    mock_api = Mock(mock_url)
    fault = None
    if args.latency_seconds:
        fault = {"delay_seconds": args.latency_seconds, "seconds": args.timeout + 600}
    elif args.fail_first:
        fault = {"status": args.fail_status, "count": args.fail_first}
    elif args.fail_seconds:
        fault = {"status": args.fail_status, "seconds": args.fail_seconds}
    if fault:
        for hook in hooks_used:
            mock_api.set_fault(hook, fault)

    starts_at = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    bodies = [(group, group_body(group, args.alerts, hooks_used[group % len(hooks_used)], starts_at))
              for group in range(1, args.groups + 1)]

    load_at_start = os.getloadavg()[0]
    stop = threading.Event()
    local = threading.local()
    first_request_at = time.time()
    deadline = time.monotonic() + args.timeout
    logs: list[RequestLog] = []
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=args.concurrency, thread_name_prefix="alertmanager")
    try:
        futures = [executor.submit(send_group, balancer, group, body, args.resend, deadline, stop, local)
                   for group, body in bodies]
        for future in concurrent.futures.as_completed(futures):
            logs.append(future.result())
    finally:
        stop.set()
        executor.shutdown(wait=True, cancel_futures=True)
    all_answered_at = time.time()

    # Wait until the mock shows every alert, or the total timeout.
    records: list[dict] = []
    seen: dict[tuple[int, int], int] = {}
    while True:
        records = mock_api.records(HOOK_NAMES)
        seen = alerts_in_records(records)
        if sent <= set(seen) or time.monotonic() >= deadline or not any(relay.alive() for relay, _ in relays):
            break
        time.sleep(DELIVERY_POLL_INTERVAL_SECONDS)
    stats = mock_api.stats()
    per_relay = [relay_figures(number, relay, url, logs, control, args.workers == 1)
                 for number, (relay, url) in enumerate(relays, 1)]

    answers = [answer for log in logs for answer in log.answers]
    first_latencies = [log.first_answer_seconds for log in logs if log.first_answer_seconds is not None]
    to_200 = [log.seconds_to_200 for log in logs if log.seconds_to_200 is not None]
    delivered = sent & set(seen)
    last_received = max((record["received_at"] for record in records), default=None)
    posts_by_hook = {hook: stats[hook]["requests"] for hook in HOOK_NAMES if stats[hook]["requests"]}
    statuses_by_hook = {hook: stats[hook]["statuses"] for hook in HOOK_NAMES if stats[hook]["statuses"]}
    received = {hook: sorted(record["received_at"] for record in records if record["hook"] == hook)
                for hook in HOOK_NAMES}
    received = {hook: moments for hook, moments in received.items() if moments}
    arrivals = {hook: [round(moment - first_request_at, 3) for moment in moments] for hook, moments in received.items()}
    budget = budget_of(args.rate_limit)
    # On the mock's own clock, unrounded: two posts one window apart to the millisecond are in two windows.
    most_by_hook = ({hook: most_in_any_window(moments, budget[1]) for hook, moments in received.items()}
                    if budget else {})
    rss = [relay["rss_mib"] for relay in per_relay if relay["rss_mib"] is not None]
    rss_peak = [relay["rss_peak_mib"] for relay in per_relay if relay["rss_peak_mib"] is not None]
    pss = [relay["pss_mib"] for relay in per_relay if relay["pss_mib"] is not None]
    return {
        "groups": args.groups,
        "alerts_per_group": args.alerts,
        "alerts_sent": len(sent),
        "hooks": args.hooks,
        "rate_limit": args.rate_limit,
        "latency_seconds": args.latency_seconds,
        "fault": fault,
        "concurrency": args.concurrency,
        "resend": args.resend,
        "posts_made": sum(stats[hook]["requests"] for hook in HOOK_NAMES),
        "posts_by_hook": posts_by_hook,
        "mock_statuses_by_hook": statuses_by_hook,
        "messages_recorded": len(records),
        "rate_limited_429": sum(stats[hook]["statuses"].get("429", 0) for hook in HOOK_NAMES),
        "alerts_delivered": len(delivered),
        "alerts_lost": len(sent - delivered),
        "alerts_shown_more_than_once": sum(1 for key in delivered if seen[key] > 1),
        "seconds_to_last_delivery": (round(last_received - first_request_at, 3)
                                     if last_received is not None else None),
        "seconds_to_all_answered": round(all_answered_at - first_request_at, 3),
        "answer_p50_seconds": round(percentile(first_latencies, 0.50) or 0, 3) if first_latencies else None,
        "answer_p99_seconds": round(percentile(first_latencies, 0.99) or 0, 3) if first_latencies else None,
        "answer_max_seconds": round(max(first_latencies), 3) if first_latencies else None,
        "seconds_to_200_p50": round(percentile(to_200, 0.50) or 0, 3) if to_200 else None,
        "seconds_to_200_p99": round(percentile(to_200, 0.99) or 0, 3) if to_200 else None,
        "answers_200": answers.count("200"),
        "answers_503": answers.count("503"),
        "answers_other": {answer: answers.count(answer) for answer in sorted(set(answers) - {"200", "503"})},
        "first_answers_200": sum(1 for log in logs if log.answers[:1] == ["200"]),
        "resends": sum(len(log.answers) - 1 for log in logs),
        "requests_never_200": sum(1 for log in logs if "200" not in log.answers),
        "relay_alive_at_end": all(relay.alive() for relay, _ in relays),
        "relay_revision": revision,
        "state_url": shown_state_url(state_url),
        "cpus": os.cpu_count(),
        "load_average_1min_at_start": round(load_at_start, 2),
        # Since issue 12 (--replicas); the keys above are as they were.
        "replicas": args.replicas,
        "workers_per_relay": args.workers,
        "state_shared": shared_state(state_url),
        "redis_server_version": redis_version,  # None: no redis-server started for the run
        "budget_posts": budget[0] if budget else None,
        "budget_window_seconds": budget[1] if budget else None,
        "most_posts_in_any_window": max(most_by_hook.values()) if most_by_hook else None,
        "most_posts_in_any_window_by_hook": most_by_hook,
        "post_arrival_seconds_by_hook": arrivals,  # recorded messages only (not 429s nor injected failures)
        "relays": per_relay,
        "rss_total_mib": round(sum(rss), 1) if rss else None,
        "rss_peak_total_mib": round(sum(rss_peak), 1) if rss_peak else None,
        "pss_total_mib": round(sum(pss), 1) if pss else None,
    }


def seconds(value) -> str:
    return "-" if value is None else f"{value:.2f} s"


def table(figures: dict) -> str:
    fault = figures["fault"]
    if not fault:
        conditions = "fast Rocket.Chat"
    elif "delay_seconds" in fault:
        conditions = f"Rocket.Chat latency {fault['delay_seconds']:g} s"
    elif "count" in fault:
        conditions = f"Rocket.Chat answers HTTP {fault['status']} to the first {fault['count']} posts per hook"
    else:
        conditions = f"Rocket.Chat answers HTTP {fault['status']} for {fault['seconds']:g} s"
    other = ", ".join(f"{answer}×{count}" for answer, count in figures["answers_other"].items()) or "0"
    rows = [
        ("groups × alerts", f"{figures['groups']} × {figures['alerts_per_group']} = {figures['alerts_sent']}"),
        ("hooks", str(figures["hooks"])),
        ("Rocket.Chat", f"{conditions}, rate limit {figures['rate_limit']} (mock and relay)"),
        ("posts made (mock requests)", f"{figures['posts_made']}  {figures['posts_by_hook']}"),
        ("429s seen", str(figures["rate_limited_429"])),
        ("alerts delivered", str(figures["alerts_delivered"])),
        ("alerts lost", str(figures["alerts_lost"])),
        ("alerts shown more than once", str(figures["alerts_shown_more_than_once"])),
        ("seconds to last delivery", seconds(figures["seconds_to_last_delivery"])),
        ("relay answer p50 / p99", f"{seconds(figures['answer_p50_seconds'])} / "
                                   f"{seconds(figures['answer_p99_seconds'])}  (first attempt; max "
                                   f"{seconds(figures['answer_max_seconds'])})"),
        ("answers 200 / 503 / other", f"{figures['answers_200']} / {figures['answers_503']} / {other}"),
        ("re-sends", f"{figures['resends']}  (resend {'on' if figures['resend'] else 'off'})"),
        ("requests never answered 200", str(figures["requests_never_200"])),
        ("time to 200 p50 / p99", f"{seconds(figures['seconds_to_200_p50'])} / "
                                  f"{seconds(figures['seconds_to_200_p99'])}  (re-sends included)"),
        ("machine", f"{figures['cpus']} CPUs, 1-minute load average {figures['load_average_1min_at_start']:.2f} "
                    "at the first request"),
        ("relay revision", figures["relay_revision"]),
        ("state (STATE_URL)", figures["state_url"]),
    ]
    if figures["replicas"] > 1 or figures["state_shared"]:  # issue 12's rows; a single run's table is as it was
        rows += replica_rows(figures)
    return aligned(rows)


def mib(value) -> str:
    return "-" if value is None else f"{value:.1f} MiB"


def replica_rows(figures: dict) -> list[tuple[str, str]]:
    """The rows of a run on shared state: the budget kept in any window, then each relay's share and memory."""
    if figures["budget_posts"] is None:
        window = "- (no rate limit)"
    else:
        window = (f"{figures['most_posts_in_any_window']}  (budget {figures['budget_posts']} per "
                  f"{figures['budget_window_seconds']:g} s; recorded messages, "
                  f"{figures['most_posts_in_any_window_by_hook']})")
    redis = (f"redis-server {figures['redis_server_version']} started for the run"
             if figures["redis_server_version"] else "the Redis --state-url names")
    rows = [
        ("most posts in a trailing window", window),
        ("replicas", f"{figures['replicas']} relay(s) × {figures['workers_per_relay']} worker(s) on {redis}; "
                     "requests round-robin over them, re-sends too"),
    ]
    for relay in figures["relays"]:
        answers = ", ".join(f"{answer}×{count}" for answer, count in relay["answers"].items()) or "none"
        posts = ("-" if relay["posts"] is None else
                 f"{sum(relay['posts'].values())} "
                 f"{ {outcome: count for outcome, count in relay['posts'].items() if count} }, "
                 f"joined {relay['deduplicated']}, "
                 f"merged {relay['merged']}")
        workers = " + ".join(f"{value:.1f}" for value in relay["rss_workers_mib"]) or "-"
        rows += [
            (f"relay {relay['relay']}: requests", f"{relay['requests']} ({relay['first_attempts']} first, "
                                                 f"{relay['resends']} re-sends); answers {answers}"),
            (f"relay {relay['relay']}: answer p50 / p99", f"{seconds(relay['answer_p50_seconds'])} / "
                                                         f"{seconds(relay['answer_p99_seconds'])}  (first attempts)"),
            (f"relay {relay['relay']}: posts (/metrics)", posts),
            (f"relay {relay['relay']}: RSS now / peak", f"{mib(relay['rss_mib'])} / {mib(relay['rss_peak_mib'])}  "
                                                       f"(master {mib(relay['rss_master_mib'])} + worker(s) {workers}"
                                                       f" MiB; PSS {mib(relay['pss_mib'])}; "
                                                       f"state_backend_up {relay['state_backend_up']})"),
        ]
    total = f"{mib(figures['rss_total_mib'])} / {mib(figures['rss_peak_total_mib'])}"
    rows.append(("RSS total now / peak",
                 f"{total}  over {figures['replicas']} relay(s) (PSS {mib(figures['pss_total_mib'])})"))
    return rows


def aligned(rows: list[tuple[str, str]]) -> str:
    """Figure names padded to one width, then their values: the table both benchmarks print."""
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--groups", type=int, default=100, help="Alertmanager groups, one request each")
    parser.add_argument("--alerts", type=int, default=10, help="alerts per group")
    parser.add_argument("--hooks", type=int, choices=(1, 3), default=1,
                        help="1: every group is critical; 3: groups spread over critical, warning, info")
    parser.add_argument("--latency-seconds", type=float, default=0.0, help="delay of every Rocket.Chat answer")
    failures = parser.add_mutually_exclusive_group()
    failures.add_argument("--fail-first", type=int, default=0, metavar="N",
                          help="Rocket.Chat answers --fail-status to the first N posts of each hook")
    failures.add_argument("--fail-seconds", type=float, default=0.0, metavar="S",
                          help="Rocket.Chat answers --fail-status to every post for S seconds")
    parser.add_argument("--fail-status", type=int, default=500, help="the status of injected failures")
    parser.add_argument("--rate-limit", default="10/60s",
                        help="Rocket.Chat's limit per hook (N/Ss or off), given to the mock and to the relay")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight at once")
    parser.add_argument("--resend", action=argparse.BooleanOptionalAction, default=True,
                        help="re-send a request answered 5xx (but 502) or not answered, as Alertmanager does")
    parser.add_argument("--timeout", type=float, default=180.0,
                        help="total seconds for sending, re-sending and waiting for the last delivery")
    parser.add_argument("--state-url", default=argparse.SUPPRESS, metavar="sqlite|memory|redis|URL",
                        help="the relay's STATE_URL: sqlite = a fresh sqlite:///<run's temporary dir>/"
                             f"{STATE_FILE_NAME} (the default kind of store, and the default with one relay), "
                             "memory = memory://, redis = a redis-server started for the run (the default with "
                             "--replicas above 1), or a URL as is (sqlite:, memory:, redis://, rediss://)")
    parser.add_argument("--replicas", type=int, default=1, metavar="N",
                        help="relays sharing the state in Redis, the requests spread over them round-robin")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="gunicorn worker processes per relay (WORKERS; above 1 only with Redis)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--keep-logs", metavar="DIR", help="copy the relay's and the mock's logs into DIR")
    args = parser.parse_args(argv)
    if args.groups < 1 or args.alerts < 1 or args.concurrency < 1 or args.timeout <= 0:
        parser.error("--groups, --alerts, --concurrency and --timeout must be above 0")
    if args.groups > 9999 or args.alerts > 9999:
        parser.error("--groups and --alerts are at most 9999 (alert names have four digits each)")
    if args.latency_seconds < 0 or args.fail_first < 0 or args.fail_seconds < 0:
        parser.error("--latency-seconds, --fail-first and --fail-seconds must not be negative")
    if args.latency_seconds and (args.fail_first or args.fail_seconds):
        parser.error("--latency-seconds cannot be combined with --fail-*: the mock holds one fault per hook")
    if not 100 <= args.fail_status <= 599:
        parser.error("--fail-status must be an HTTP status")
    if not RATE_LIMIT_TEXT.match(args.rate_limit.strip().lower()):
        parser.error("--rate-limit must be N/Ss (e.g. 10/60s) or off")
    args.rate_limit = args.rate_limit.strip().lower()
    if not 1 <= args.replicas <= MAX_REPLICAS or not 1 <= args.workers <= MAX_WORKERS:
        parser.error(f"--replicas is 1 to {MAX_REPLICAS}, --workers 1 to {MAX_WORKERS}")
    several = args.replicas > 1 or args.workers > 1
    args.state_url = checked_storm_state_url(parser, getattr(args, "state_url", "redis" if several else "sqlite"))
    if several and not (args.state_url == "redis" or shared_state(args.state_url)):
        parser.error("several relays or workers share one Rocket.Chat budget only through Redis: --state-url redis "
                     "(a redis-server for the run, the default with --replicas above 1) or redis://…")
    return args


def checked_storm_state_url(parser: argparse.ArgumentParser, text: str) -> str:
    """checked_state_url(), and redis (a redis-server for the run) or a redis:// or rediss:// URL as is."""
    text = text.strip()
    if text.lower() == "redis":
        return "redis"
    if text.startswith(("redis://", "rediss://")):
        return text
    if text.lower() not in ("sqlite", "memory") and not text.startswith(("sqlite:", "memory:")):
        parser.error("--state-url must be sqlite, memory, redis or a STATE_URL (sqlite:///<path>, memory://, "
                     "redis://host:port/db, rediss://…)")
    return checked_state_url(parser, text)


def checked_state_url(parser: argparse.ArgumentParser, text: str) -> str:
    """--state-url as state_url_for() takes it: sqlite, memory, or a STATE_URL (the parser's error otherwise)."""
    text = text.strip()
    if text.lower() in ("sqlite", "memory"):
        return text.lower()
    if not text.startswith(("sqlite:", "memory:")):
        parser.error("--state-url must be sqlite, memory or a STATE_URL (sqlite:///<path>, memory://)")
    return text


def run_benchmark(name: str, args: argparse.Namespace, run_once: Callable[[argparse.Namespace, Path], dict],
                  shown: Callable[[dict], str], succeeded: Callable[[dict], bool]) -> int:
    """One run in a temporary directory, children always stopped, logs kept if asked; the exit status: 0, 1 (the
    run failed), 3 (it ran but did not succeed) or 130 (interrupted)."""
    signal.signal(signal.SIGTERM, on_signal)
    atexit.register(stop_children)
    workdir = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    try:
        try:
            figures = run_once(args, workdir)
        finally:
            stop_children()
            if args.keep_logs:
                target = Path(args.keep_logs)
                target.mkdir(parents=True, exist_ok=True)
                for log in workdir.glob("*.log"):
                    shutil.copy(log, target / log.name)
    except (RuntimeError, requests.RequestException) as error:
        print(f"{name}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted; the relay and the mock are stopped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(figures) if args.json else shown(figures))
    return 0 if succeeded(figures) else 3


def main(argv: list[str] | None = None) -> int:
    return run_benchmark("storm", parse_args(argv), run, table, lambda figures: figures["alerts_lost"] == 0)


if __name__ == "__main__":
    sys.exit(main())
