#!/usr/bin/env python3
"""Alert-storm benchmark: the relay under the shipped gunicorn config, against the mock Rocket.Chat.

    python bench/storm.py --groups 100 --alerts 10 --hooks 1 [--latency-seconds 2]
                          [--fail-first N | --fail-seconds S] [--rate-limit 10/60s] [--concurrency 64]
                          [--resend | --no-resend] [--timeout 180] [--state-url sqlite|memory|URL] [--json]

It starts mock_server.py and `gunicorn -c gunicorn.conf.py rocketchat_webhook:app` on free loopback ports, wires
them together, optionally makes the mock slow or failing, sends the groups concurrently as Alertmanager-shaped
bodies (re-sending what is answered 5xx as Alertmanager would), waits until the mock shows every alert (or the
timeout), and prints what happened. See bench/README.md for what each figure means. The relay's journal writes to a
fresh SQLite file in the run's temporary directory (the product's default kind of store), or where --state-url says.

Only the standard library, requests and the process helpers the tests use (tests/helpers.py). Every HTTP call has a
timeout, the run has a total timeout, and both child processes (each in its own process group) are always stopped:
try/finally, atexit, and SIGTERM/SIGINT handlers.
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
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests/ (a namespace package) holds the process helpers shared with the tests
from tests.helpers import (  # noqa: E402
    GUNICORN_COMMAND, PYTHON, ManagedProcess, direct_session, free_port, relay_environ, wait_until_serving,
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


def state_url_for(choice: str, workdir: Path) -> str:
    """--state-url's value as the relay's STATE_URL: "sqlite" a fresh file in workdir (the product's default kind of
    store), "memory" memory://, anything else as given (the relay refuses what it cannot use, and does not start)."""
    if choice == "sqlite":
        return f"sqlite:///{workdir / STATE_FILE_NAME}"  # workdir is absolute: sqlite:////tmp/storm-…/state.sqlite3
    if choice == "memory":
        return "memory://"
    return choice


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
    first_answer_seconds: float | None = None  # relay answer latency of the first attempt
    seconds_to_200: float | None = None  # from the first attempt's start to the 200 (re-sends included)


def final_answer(answer: str) -> bool:
    """200 and 502 end the re-sending (502: Rocket.Chat refused for good); so does any 4xx."""
    return answer in ("200", "502") or answer.startswith("4")


def send_group(url: str, group: int, body: bytes, resend: bool, deadline: float, stop: threading.Event,
               local: threading.local) -> RequestLog:
    """POST one group's body; with resend, again after a backoff while the answer is retryable (as Alertmanager)."""
    session = getattr(local, "session", None)
    if session is None:
        session = local.session = direct_session()
    log = RequestLog(group)
    started = time.monotonic()
    attempt = 0
    if time.monotonic() >= deadline:
        log.answers.append("not sent (timeout)")  # --timeout passed while it waited for a thread
        return log
    while not stop.is_set():
        attempt_started = time.monotonic()
        try:
            response = session.post(url, data=body, headers={"Content-Type": "application/json"},
                                    timeout=(CONNECT_TIMEOUT_SECONDS, WEBHOOK_READ_TIMEOUT_SECONDS))
            answer = str(response.status_code)
        except requests.RequestException as error:
            answer = f"error:{type(error).__name__}"
        now = time.monotonic()
        log.answers.append(answer)
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


def run(args: argparse.Namespace, workdir: Path) -> dict:
    revision = relay_revision()
    state_url = state_url_for(args.state_url, workdir)
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

    relay_port = free_port()
    relay_settings = relay_environ({
        "HOST": LOOPBACK, "PORT": str(relay_port), "ROCKETCHAT_RATE_LIMIT": args.rate_limit,
        "STATE_URL": state_url,  # a revision before the journal ignores it
        **{f"ROCKETCHAT_WEBHOOK_{name.upper()}": f"{mock_url}/hooks/{name}/{name}-token" for name in HOOK_NAMES},
    })
    relay = Child("relay (gunicorn)", list(GUNICORN_COMMAND), relay_settings, workdir / "relay.log")
    CHILDREN.append(relay)
    relay_url = f"http://{LOOPBACK}:{relay_port}"
    wait_for(f"{relay_url}/ready", relay, control, START_TIMEOUT_SECONDS)

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
        futures = [executor.submit(send_group, f"{relay_url}/webhook", group, body, args.resend, deadline, stop,
                                   local) for group, body in bodies]
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
        if sent <= set(seen) or time.monotonic() >= deadline or not relay.alive():
            break
        time.sleep(DELIVERY_POLL_INTERVAL_SECONDS)
    stats = mock_api.stats()

    answers = [answer for log in logs for answer in log.answers]
    first_latencies = [log.first_answer_seconds for log in logs if log.first_answer_seconds is not None]
    to_200 = [log.seconds_to_200 for log in logs if log.seconds_to_200 is not None]
    delivered = sent & set(seen)
    last_received = max((record["received_at"] for record in records), default=None)
    posts_by_hook = {hook: stats[hook]["requests"] for hook in HOOK_NAMES if stats[hook]["requests"]}
    statuses_by_hook = {hook: stats[hook]["statuses"] for hook in HOOK_NAMES if stats[hook]["statuses"]}
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
        "relay_alive_at_end": relay.alive(),
        "relay_revision": revision,
        "state_url": state_url,
        "cpus": os.cpu_count(),
        "load_average_1min_at_start": round(load_at_start, 2),
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
    return aligned(rows)


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
    parser.add_argument("--state-url", default="sqlite", metavar="sqlite|memory|URL",
                        help="the relay's STATE_URL: sqlite = a fresh sqlite:///<run's temporary dir>/"
                             f"{STATE_FILE_NAME} (the default kind of store), memory = memory://, or a URL as is")
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
    args.state_url = checked_state_url(parser, args.state_url)
    return args


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
