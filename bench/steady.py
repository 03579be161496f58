#!/usr/bin/env python3
"""Steady-load benchmark: a constant rate of distinct notifications for a while, and the answers' latency.

    python bench/steady.py [--rate 50] [--seconds 60] [--state-url sqlite|memory|URL] [--workers 100] [--json]

It starts mock_server.py (no latency, no rate limit) and `gunicorn -c gunicorn.conf.py rocketchat_webhook:app` on
free loopback ports with pacing off (ROCKETCHAT_RATE_LIMIT=0) and the journal in a fresh SQLite file in the run's
temporary directory (or where --state-url says), then sends --rate requests a second for --seconds, open loop:
request i is due at t0 + i / rate whatever the earlier ones are doing, and its latency is counted from that due
time, so a stall of the relay shows in the figures instead of slowing the sender down (no coordinated omission).
Each request is one Alertmanager group of its own (bench/storm.py's body: a groupKey, 2 alerts with fingerprints).
At the end it checks that the journal caught up: the last answered request's alerts are in GET /api/v1/alerts/<id>
with their delivery, GET /api/v1/alerts?limit=1 answers, and /metrics shows rocketchat_webhook_journal_up 1 and
rocketchat_webhook_events_dropped_total 0.

Loopback only; every HTTP call has a timeout, and both child processes are always stopped (bench/storm.py's Child:
try/finally, atexit, SIGTERM/SIGINT). Exit status 0 when every request was answered 200 and the journal caught up,
3 when not, 1 when the relay or the mock did not start.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from storm import (  # noqa: E402 - bench/storm.py's process and HTTP helpers, and its Alertmanager body
    CHILDREN, CONNECT_TIMEOUT_SECONDS, CONTROL_READ_TIMEOUT_SECONDS, GUNICORN_COMMAND, HOOK_NAMES, LOOPBACK, PYTHON,
    START_TIMEOUT_SECONDS, STATE_FILE_NAME, WEBHOOK_READ_TIMEOUT_SECONDS, Child, Mock, aligned, alert_instance,
    alert_name, checked_state_url, fingerprint, group_body, new_session, percentile, relay_environ, relay_revision,
    run_benchmark, state_url_for, wait_for, free_port,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
try:  # the relay's own id of an alert occurrence, so the check asks for exactly what the journal wrote
    from rcwebhook.fingerprint import alert_occurrence  # noqa: E402
except ImportError:  # a revision before the threads issue
    from rcwebhook.journal import alert_id_of as alert_occurrence  # noqa: E402

ALERTS_PER_REQUEST = 2
MAX_REQUESTS = 50_000  # bodies of about 1.3 kB each, built before the clock starts
SEVERITY = "critical"
CATCH_UP_POLL_SECONDS = 0.1
# The answer a request waits for after its due time before it counts as not answered (the relay answers within 8 s).
STRAGGLER_GRACE_SECONDS = WEBHOOK_READ_TIMEOUT_SECONDS + CONNECT_TIMEOUT_SECONDS + 5
METRIC_LINE = re.compile(r"^(rocketchat_webhook_[a-z_]+)(\{[^}]*\})? (\S+)$")
WATCHED_METRICS = ("rocketchat_webhook_journal_up", "rocketchat_webhook_events_dropped_total",
                   "rocketchat_webhook_journal_write_failures_total")


@dataclass
class Answer:
    index: int
    status: str  # "200", "503", "error:ReadTimeout", ...
    latency_seconds: float  # from the request's due time to its answer (includes any wait for a free thread)
    service_seconds: float  # from the moment it was actually sent to its answer
    start_lag_seconds: float  # how late it was sent after its due time (the sender's own lag)
    answered_at: float  # monotonic


def send(url: str, index: int, body: bytes, due: float, local: threading.local) -> Answer:
    session = getattr(local, "session", None)
    if session is None:
        session = local.session = new_session()
    sent = time.monotonic()
    try:
        response = session.post(url, data=body, headers={"Content-Type": "application/json"},
                                timeout=(CONNECT_TIMEOUT_SECONDS, WEBHOOK_READ_TIMEOUT_SECONDS))
        status = str(response.status_code)
    except requests.RequestException as error:
        status = f"error:{type(error).__name__}"
    done = time.monotonic()
    return Answer(index, status, done - due, done - sent, sent - due, done)


def last_alert_id(index: int, starts_at: str) -> str:
    """The journal id of request index's last alert (as group_body labels it)."""
    labels = {"alertname": alert_name(index, ALERTS_PER_REQUEST), "instance": alert_instance(index, ALERTS_PER_REQUEST),
              "job": "storm", "severity": SEVERITY, "storm_group": f"g{index:04d}"}
    return alert_occurrence(fingerprint(labels), labels, starts_at)[0]


def read_metrics(session: requests.Session, relay_url: str) -> dict[str, float]:
    response = session.get(f"{relay_url}/metrics", timeout=(CONNECT_TIMEOUT_SECONDS, CONTROL_READ_TIMEOUT_SECONDS))
    response.raise_for_status()
    values: dict[str, float] = {}
    for line in response.text.splitlines():
        match = METRIC_LINE.match(line)
        if match and match.group(1) in WATCHED_METRICS and not match.group(2):
            values[match.group(1)] = float(match.group(3))
    return values


def catch_up(session: requests.Session, relay_url: str, alert_id: str, timeout_seconds: float) -> dict:
    """Poll GET /api/v1/alerts/<alert_id> until it shows a delivery; then GET /api/v1/alerts?limit=1 and /metrics."""
    started = time.monotonic()
    found, last_status = False, None
    while True:
        try:
            response = session.get(f"{relay_url}/api/v1/alerts/{alert_id}",
                                   timeout=(CONNECT_TIMEOUT_SECONDS, CONTROL_READ_TIMEOUT_SECONDS))
            last_status = response.status_code
            found = response.status_code == 200 and bool(response.json().get("deliveries"))
        except (requests.RequestException, ValueError) as error:
            last_status = f"error:{type(error).__name__}"
        if found or time.monotonic() - started >= timeout_seconds:
            break
        time.sleep(CATCH_UP_POLL_SECONDS)
    caught_up_seconds = time.monotonic() - started
    listing_started = time.monotonic()
    try:
        listing = session.get(f"{relay_url}/api/v1/alerts", params={"limit": "1"},
                              timeout=(CONNECT_TIMEOUT_SECONDS, CONTROL_READ_TIMEOUT_SECONDS))
        listing_status = listing.status_code
        listing_count = len(listing.json().get("alerts", [])) if listing.status_code == 200 else None
    except (requests.RequestException, ValueError) as error:
        listing_status, listing_count = f"error:{type(error).__name__}", None
    listing_seconds = time.monotonic() - listing_started
    try:
        metrics = read_metrics(session, relay_url)
    except requests.RequestException as error:
        metrics = {"error": f"{type(error).__name__}"}
    return {
        "journal_caught_up": found,
        "journal_caught_up_seconds": round(caught_up_seconds, 3) if found else None,
        "journal_last_alert_status": last_status,
        "api_alerts_limit_1_status": listing_status,
        "api_alerts_limit_1_count": listing_count,
        "api_alerts_limit_1_ms": round(listing_seconds * 1000, 1),
        "journal_up": metrics.get("rocketchat_webhook_journal_up"),
        "events_dropped_total": metrics.get("rocketchat_webhook_events_dropped_total"),
        "journal_write_failures_total": metrics.get("rocketchat_webhook_journal_write_failures_total"),
        "metrics_error": metrics.get("error"),
    }


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def run(args: argparse.Namespace, workdir: Path) -> dict:
    revision = relay_revision()
    state_url = state_url_for(args.state_url, workdir)
    control = new_session()

    mock_port = free_port()
    mock = Child("mock_server.py", [PYTHON, "mock_server.py", "--host", LOOPBACK, "--port", str(mock_port),
                                    "--rate-limit", "0", "--quiet"], relay_environ(), workdir / "mock.log")
    CHILDREN.append(mock)
    mock_url = f"http://{LOOPBACK}:{mock_port}"
    wait_for(f"{mock_url}/_mock/health", mock, control, START_TIMEOUT_SECONDS)

    relay_port = free_port()
    relay_settings = relay_environ({
        "HOST": LOOPBACK, "PORT": str(relay_port), "ROCKETCHAT_RATE_LIMIT": "0", "STATE_URL": state_url,
        **{f"ROCKETCHAT_WEBHOOK_{name.upper()}": f"{mock_url}/hooks/{name}/{name}-token" for name in HOOK_NAMES},
    })
    relay = Child("relay (gunicorn)", list(GUNICORN_COMMAND), relay_settings, workdir / "relay.log")
    CHILDREN.append(relay)
    relay_url = f"http://{LOOPBACK}:{relay_port}"
    wait_for(f"{relay_url}/ready", relay, control, START_TIMEOUT_SECONDS)

    count = round(args.rate * args.seconds)
    starts_at = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    bodies = [group_body(index, ALERTS_PER_REQUEST, SEVERITY, starts_at) for index in range(1, count + 1)]

    load_at_start = os.getloadavg()[0]
    local = threading.local()
    futures: list[concurrent.futures.Future] = []
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=args.workers, thread_name_prefix="alertmanager")
    t0 = time.monotonic() + 0.1
    try:
        for index, body in enumerate(bodies, start=1):
            due = t0 + (index - 1) / args.rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            if not relay.alive():
                break
            futures.append(executor.submit(send, f"{relay_url}/webhook", index, body, due, local))
        sending_seconds = time.monotonic() - t0
        done, not_done = concurrent.futures.wait(futures, timeout=STRAGGLER_GRACE_SECONDS)
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
    answers = [future.result() for future in done]
    unanswered = len(not_done) + (count - len(futures))

    statuses: dict[str, int] = {}
    for answer in answers:
        statuses[answer.status] = statuses.get(answer.status, 0) + 1
    latencies = [answer.latency_seconds for answer in answers]
    service = [answer.service_seconds for answer in answers]
    lags = [answer.start_lag_seconds for answer in answers]
    slowest = max(answers, key=lambda answer: answer.latency_seconds, default=None)
    last_answered = max((answer for answer in answers if answer.status == "200"),
                        key=lambda answer: answer.answered_at, default=None)
    journal = (catch_up(control, relay_url, last_alert_id(last_answered.index, starts_at), args.catch_up_timeout)
               if last_answered is not None and relay.alive() else {"journal_caught_up": False})
    try:
        mock_stats = Mock(mock_url).stats()
        posts = sum(mock_stats[hook]["requests"] for hook in HOOK_NAMES)
        post_statuses = {status: n for hook in HOOK_NAMES for status, n in mock_stats[hook]["statuses"].items()}
    except (requests.RequestException, RuntimeError, ValueError):
        posts, post_statuses = None, None
    state_bytes = sum(path.stat().st_size for path in workdir.glob(f"{STATE_FILE_NAME}*"))  # with -wal and -shm
    return {
        "rate_per_second": args.rate,
        "seconds": args.seconds,
        "requests_scheduled": count,
        "requests_answered": len(answers),
        "requests_unanswered": unanswered,
        "answers_200": statuses.get("200", 0),
        "answers_not_200": sum(n for status, n in statuses.items() if status != "200") + unanswered,
        "answers_by_status": dict(sorted(statuses.items())),
        "sending_seconds": round(sending_seconds, 3),
        "latency_p50_ms": ms(percentile(latencies, 0.50)),
        "latency_p90_ms": ms(percentile(latencies, 0.90)),
        "latency_p99_ms": ms(percentile(latencies, 0.99)),
        "latency_max_ms": ms(max(latencies, default=None)),
        "latency_max_at_seconds": round((slowest.index - 1) / args.rate, 2) if slowest else None,
        "service_p50_ms": ms(percentile(service, 0.50)),
        "service_p99_ms": ms(percentile(service, 0.99)),
        "start_lag_max_ms": ms(max(lags, default=None)),
        "posts_made": posts,
        "mock_statuses": post_statuses,
        **journal,
        "state_url": state_url,
        "state_file_bytes": state_bytes or None,
        "relay_alive_at_end": relay.alive(),
        "relay_revision": revision,
        "cpus": os.cpu_count(),
        "load_average_1min_at_start": round(load_at_start, 2),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }


def passed(figures: dict) -> bool:
    return (figures["answers_not_200"] == 0 and figures["journal_caught_up"] and figures["journal_up"] == 1
            and figures["events_dropped_total"] == 0 and figures["api_alerts_limit_1_status"] == 200)


def table(figures: dict) -> str:
    def latency(prefix: str) -> str:
        return " / ".join("-" if figures.get(f"{prefix}_{p}_ms") is None else f"{figures[f'{prefix}_{p}_ms']:.1f}"
                          for p in ("p50", "p90", "p99", "max")) + " ms"

    caught_up = (f"yes, {figures['journal_caught_up_seconds']:.2f} s after the last answer"
                 if figures["journal_caught_up"] else f"NO (last GET /api/v1/alerts/<id>: "
                                                      f"{figures.get('journal_last_alert_status')})")
    rows = [
        ("load", f"{figures['rate_per_second']:g} requests/s for {figures['seconds']:g} s, open loop "
                 f"({figures['requests_scheduled']} requests, {ALERTS_PER_REQUEST} alerts each, one group each); "
                 f"pacing off, fast Rocket.Chat"),
        ("answered", f"{figures['requests_answered']} ({figures['answers_200']} × 200; not 200: "
                     f"{figures['answers_not_200']} {figures['answers_by_status']})"),
        ("latency p50 / p90 / p99 / max", latency("latency") + "  (from each request's due time; the slowest due "
                                          f"{figures['latency_max_at_seconds']} s into the run)"),
        ("service p50 / p99", f"{figures['service_p50_ms']} / {figures['service_p99_ms']} ms  (from its sending; "
                              f"sender's lag at most {figures['start_lag_max_ms']} ms)"),
        ("posts made (mock requests)", f"{figures['posts_made']}  {figures['mock_statuses']}"),
        ("journal caught up", caught_up),
        ("GET /api/v1/alerts?limit=1", f"{figures.get('api_alerts_limit_1_status')} in "
                                       f"{figures.get('api_alerts_limit_1_ms')} ms"),
        ("journal_up / events_dropped_total", f"{figures.get('journal_up')} / {figures.get('events_dropped_total')}"
                                              f"  (write failures {figures.get('journal_write_failures_total')})"),
        ("state (STATE_URL)", f"{figures['state_url']}" + (f"  ({figures['state_file_bytes']:,} bytes at the end)"
                                                           if figures["state_file_bytes"] else "")),
        ("machine", f"{figures['cpus']} CPUs, 1-minute load average {figures['load_average_1min_at_start']:.2f} at "
                    f"the start, {figures['load_average_1min_at_end']:.2f} at the end"),
        ("relay revision", figures["relay_revision"]),
    ]
    return aligned(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the load lasts")
    parser.add_argument("--workers", type=int, default=100,
                        help="sender threads (a request due while all are busy waits, and the wait counts)")
    parser.add_argument("--state-url", default="sqlite", metavar="sqlite|memory|URL",
                        help="the relay's STATE_URL: sqlite = a fresh sqlite:///<run's temporary dir>/"
                             f"{STATE_FILE_NAME} (the default kind of store), memory = memory://, or a URL as is")
    parser.add_argument("--catch-up-timeout", type=float, default=30.0,
                        help="seconds to wait after the last answer for the journal to show it")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--keep-logs", metavar="DIR", help="copy the relay's and the mock's logs into DIR")
    args = parser.parse_args(argv)
    if not (0 < args.rate <= 1000 and 0 < args.seconds <= 3600 and 1 <= args.workers <= 1000):
        parser.error("--rate must be in (0, 1000], --seconds in (0, 3600], --workers in 1..1000")
    if round(args.rate * args.seconds) < 1:
        parser.error("--rate × --seconds must make at least one request")
    if round(args.rate * args.seconds) > MAX_REQUESTS:
        parser.error(f"--rate × --seconds is at most {MAX_REQUESTS} requests (their bodies are built beforehand)")
    if args.catch_up_timeout <= 0:
        parser.error("--catch-up-timeout must be above 0")
    args.state_url = checked_state_url(parser, args.state_url)
    return args


def main(argv: list[str] | None = None) -> int:
    return run_benchmark("steady", parse_args(argv), run, table, passed)


if __name__ == "__main__":
    sys.exit(main())
