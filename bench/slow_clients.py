#!/usr/bin/env python3
"""Slow-client benchmark: /health and a notification while a thousand idle or trickling connections are open.

    python bench/slow_clients.py [--connections 1000] [--probes 300] [--read-timeout 10] [--timeout 120]
                                 [--worker-class gthread] [--json]

It starts mock_server.py and `gunicorn -c gunicorn.conf.py rocketchat_webhook:app` on free loopback ports (the
shipped config; REQUEST_READ_TIMEOUT_SECONDS from --read-timeout), times GET /health without slow clients, then
opens --connections connections that never finish a request (a quarter each: idle after connecting, one request
line then nothing, headers one byte per 100 ms, a body one byte per 100 ms), times --probes GET /health (each on
a new connection, from a separate process, 5 s timeout each) and one Alertmanager-shaped POST /webhook, and then
waits for the relay to close the slow connections. --worker-class gthread runs gunicorn's own gthread worker
instead of rcwebhook.server's, for comparison.

Loopback only; every request has a timeout, the run stops at --timeout, and both child processes are always
stopped (bench/storm.py's Child: try/finally, atexit, SIGTERM/SIGINT).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from storm import (  # noqa: E402 - bench/storm.py's process and HTTP helpers
    CHILDREN, LOOPBACK, REPO, START_TIMEOUT_SECONDS, Child, aligned, clean_environ, free_port, new_session, on_signal,
    percentile, relay_revision, stop_children, wait_for,
)

KINDS = ("idle", "request line", "trickled headers", "trickled body")
TRICKLE_INTERVAL_SECONDS = 0.1
PROBE_TIMEOUT_SECONDS = 5.0
WEBHOOK_TIMEOUT_SECONDS = 30.0
TRICKLED_BODY_BYTES = 1_000_000  # never all sent within a run
HEAD_PADDING_BYTES = 8_000  # headers never end within a run at one byte per 100 ms

# In a process of its own, as a load balancer's or the kubelet's probe: timing it here would measure this
# process's thousand sockets and trickling thread too. One JSON object per line: [kind, status, seconds].
PROBE_SCRIPT = r"""
import json, sys, time, urllib.error, urllib.request
base, probes, deadline = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
body = open(sys.argv[4], "rb").read() if sys.argv[4] else b""
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
def timed(kind, request, timeout):
    started = time.monotonic()
    try:
        with opener.open(request, timeout=timeout) as answer:
            answer.read(); status = answer.status
    except urllib.error.HTTPError as error:
        status = error.code
    except Exception as error:
        status = type(error).__name__
    print(json.dumps([kind, status, time.monotonic() - started]), flush=True)
for _ in range(probes):
    if time.time() >= deadline:
        break
    timed("health", base + "/health", %(probe)s)
if body:
    timed("webhook", urllib.request.Request(base + "/webhook", data=body,
          headers={"Content-Type": "application/json"}), %(webhook)s)
""" % {"probe": PROBE_TIMEOUT_SECONDS, "webhook": WEBHOOK_TIMEOUT_SECONDS}


def webhook_head(content_length: int, *extra: str) -> bytes:
    lines = ["POST /webhook HTTP/1.1", f"Host: {LOOPBACK}", "Content-Type: application/json",
             f"Content-Length: {content_length}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class SlowClients:
    """Connections that never finish a request, a trickling thread, and when the relay closed each one."""

    def __init__(self, port: int, count: int):
        self.sockets: list[tuple[str, socket.socket, float]] = []
        self.unsent: dict[socket.socket, bytes] = {}
        self.closed_after: dict[socket.socket, float] = {}
        self.stop = threading.Event()
        for index in range(count):
            kind = KINDS[index % len(KINDS)]
            sock = socket.create_connection((LOOPBACK, port), timeout=5)
            if kind == "request line":
                sock.sendall(b"POST /webhook HTTP/1.1\r\n")
            elif kind == "trickled headers":
                self.unsent[sock] = webhook_head(100, "X-Padding: " + "p" * HEAD_PADDING_BYTES)
            elif kind == "trickled body":
                sock.sendall(webhook_head(TRICKLED_BODY_BYTES))
                self.unsent[sock] = b"x" * TRICKLED_BODY_BYTES
            sock.setblocking(False)
            self.sockets.append((kind, sock, time.monotonic()))
        self.thread = threading.Thread(target=self._trickle, name="trickle", daemon=True)
        self.thread.start()

    def _trickle(self) -> None:
        while not self.stop.wait(TRICKLE_INTERVAL_SECONDS):  # the clients' own pace
            for sock, unsent in list(self.unsent.items()):
                try:
                    sock.send(unsent[:1])
                    self.unsent[sock] = unsent[1:]
                except OSError:  # closed by the relay
                    del self.unsent[sock]

    def poll_closed(self) -> int:
        """Record the connections the relay has closed since the last call; how many are still open."""
        now = time.monotonic()
        for _kind, sock, opened_at in self.sockets:
            if sock in self.closed_after:
                continue
            try:
                while sock.recv(65536):
                    pass  # a 408 before the close
                self.closed_after[sock] = now - opened_at
            except BlockingIOError:
                pass
            except OSError:
                self.closed_after[sock] = now - opened_at
        return len(self.sockets) - len(self.closed_after)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for _kind, sock, _opened_at in self.sockets:
            sock.close()


def run_probes(relay_url: str, probes: int, deadline: float, body_path: str) -> list[list]:
    finished = subprocess.run(
        [sys.executable, "-c", PROBE_SCRIPT, relay_url, str(probes), str(time.time() + deadline), body_path],
        capture_output=True, text=True, timeout=deadline + WEBHOOK_TIMEOUT_SECONDS + 10,
    )
    if finished.returncode != 0:
        raise RuntimeError(f"the probe process failed:\n{finished.stderr[-2000:]}")
    return [json.loads(line) for line in finished.stdout.splitlines() if line.strip()]


def latency_figures(results: list[list], kind: str) -> dict:
    rows = [(status, seconds) for row_kind, status, seconds in results if row_kind == kind]
    answered = [seconds for status, seconds in rows if status == 200]
    return {
        "count": len(rows),
        "answered_200": len(answered),
        "failures": sorted({str(status) for status, _ in rows if status != 200}),
        "p50_seconds": round(percentile(answered, 0.50), 4) if answered else None,
        "p99_seconds": round(percentile(answered, 0.99), 4) if answered else None,
        "max_seconds": round(max(seconds for _, seconds in rows), 4) if rows else None,
    }


def run(args: argparse.Namespace, workdir: Path) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = args.connections + 256
    if soft < wanted <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))  # this process holds every slow connection
    control = new_session()
    mock_port = free_port()
    mock = Child("mock_server.py", [sys.executable, "mock_server.py", "--host", LOOPBACK, "--port", str(mock_port),
                                    "--rate-limit", "off", "--quiet"], clean_environ({}), workdir / "mock.log")
    CHILDREN.append(mock)
    mock_url = f"http://{LOOPBACK}:{mock_port}"
    wait_for(f"{mock_url}/_mock/health", mock, control, START_TIMEOUT_SECONDS)

    relay_port = free_port()
    settings = {
        "HOST": LOOPBACK, "PORT": str(relay_port), "REQUEST_READ_TIMEOUT_SECONDS": str(args.read_timeout),
        **{f"ROCKETCHAT_WEBHOOK_{name.upper()}": f"{mock_url}/hooks/{name}/{name}-token"
           for name in ("critical", "warning", "info")},
    }
    if args.worker_class:
        settings["GUNICORN_CMD_ARGS"] = f"--worker-class {args.worker_class}"
    relay = Child("relay (gunicorn)", [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                                       "rocketchat_webhook:app"], clean_environ(settings), workdir / "relay.log")
    CHILDREN.append(relay)
    relay_url = f"http://{LOOPBACK}:{relay_port}"
    wait_for(f"{relay_url}/ready", relay, control, START_TIMEOUT_SECONDS)
    started = time.monotonic()
    body_path = str(REPO / "test-alert.json")

    baseline = run_probes(relay_url, args.probes, args.timeout, "")
    load_at_start = os.getloadavg()[0]
    clients = SlowClients(relay_port, args.connections)
    try:
        opened_seconds = time.monotonic() - clients.sockets[0][2]
        remaining = max(1.0, args.timeout - (time.monotonic() - started))
        loaded = run_probes(relay_url, args.probes, remaining, body_path)
        open_after_probes = clients.poll_closed()
        left_seconds = max(1.0, args.timeout - (time.monotonic() - started))
        close_deadline = time.monotonic() + min(args.read_timeout + 15, left_seconds)
        while clients.poll_closed() and time.monotonic() < close_deadline and relay.alive():
            time.sleep(0.2)  # polling the sockets the relay is due to close
        closed = sorted(clients.closed_after.values())
        closed_by_kind = {kind: sum(1 for k, sock, _ in clients.sockets if k == kind and sock in clients.closed_after)
                          for kind in KINDS}
    finally:
        clients.close()
    webhook = [(status, seconds) for kind, status, seconds in loaded if kind == "webhook"]
    return {
        "worker_class": args.worker_class or "rcwebhook.server.BufferedThreadWorker (gunicorn.conf.py)",
        "slow_connections": args.connections,
        "seconds_to_open_them": round(opened_seconds, 3),
        "request_read_timeout_seconds": args.read_timeout,
        "health_without_slow_clients": latency_figures(baseline, "health"),
        "health_with_slow_clients": latency_figures(loaded, "health"),
        "webhook_status": webhook[0][0] if webhook else "not sent (timeout)",
        "webhook_seconds": round(webhook[0][1], 4) if webhook else None,
        "slow_connections_open_after_probes": open_after_probes,
        "slow_connections_closed_by_relay": len(closed),
        "closed_by_kind": closed_by_kind,
        "closed_after_p50_seconds": round(percentile(closed, 0.5), 2) if closed else None,
        "closed_after_max_seconds": round(closed[-1], 2) if closed else None,
        "relay_alive_at_end": relay.alive(),
        "relay_revision": relay_revision(),
        "cpus": os.cpu_count(),
        "load_average_1min_before_slow_clients": round(load_at_start, 2),
    }


def table(figures: dict) -> str:
    def latency(block: dict) -> str:
        if not block["answered_200"]:
            return f"0 of {block['count']} answered 200 ({', '.join(block['failures'])})"
        text = (f"p50 {block['p50_seconds'] * 1000:.1f} ms, p99 {block['p99_seconds'] * 1000:.1f} ms, max "
                f"{block['max_seconds'] * 1000:.1f} ms; {block['answered_200']} of {block['count']} answered 200")
        return text + (f" (others: {', '.join(block['failures'])})" if block["failures"] else "")

    webhook_ms = "-" if figures["webhook_seconds"] is None else f"{figures['webhook_seconds'] * 1000:.1f} ms"
    closed_after = f"p50 {figures['closed_after_p50_seconds']} s, max {figures['closed_after_max_seconds']} s"
    load = figures["load_average_1min_before_slow_clients"]
    read_timeout = figures["request_read_timeout_seconds"]
    rows = [
        ("worker", figures["worker_class"]),
        ("slow connections", f"{figures['slow_connections']} (a quarter each: {', '.join(KINDS)}), opened in "
                             f"{figures['seconds_to_open_them']:.2f} s"),
        ("GET /health, no slow clients", latency(figures["health_without_slow_clients"])),
        ("GET /health, slow clients open", latency(figures["health_with_slow_clients"])),
        ("POST /webhook (test-alert.json)", f"{figures['webhook_status']} in {webhook_ms}"),
        ("slow connections still open after the probes", str(figures["slow_connections_open_after_probes"])),
        ("closed by the relay", f"{figures['slow_connections_closed_by_relay']} {figures['closed_by_kind']}; after "
                                f"{closed_after} (REQUEST_READ_TIMEOUT_SECONDS={read_timeout:g})"),
        ("relay alive at the end", str(figures["relay_alive_at_end"])),
        ("machine", f"{figures['cpus']} CPUs, 1-minute load average {load} before the slow clients"),
        ("relay revision", figures["relay_revision"]),
    ]
    return aligned(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--connections", type=int, default=1000, help="slow connections held open")
    parser.add_argument("--probes", type=int, default=300, help="GET /health probes, without and with them")
    parser.add_argument("--read-timeout", type=float, default=10.0,
                        help="REQUEST_READ_TIMEOUT_SECONDS for the relay (its default is 10)")
    parser.add_argument("--timeout", type=float, default=120.0, help="total seconds for the run")
    parser.add_argument("--worker-class", default="",
                        help="a gunicorn worker class to use instead of gunicorn.conf.py's (e.g. gthread)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args(argv)
    if not (1 <= args.connections <= 10_000 and 1 <= args.probes <= 10_000 and args.timeout > 0):
        parser.error("--connections and --probes must be 1..10000, --timeout above 0")
    if args.read_timeout < 0.5:
        parser.error("--read-timeout must be at least 0.5 (the relay's minimum)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, on_signal)
    atexit.register(stop_children)
    with tempfile.TemporaryDirectory(prefix="slow-clients-") as workdir:
        try:
            try:
                figures = run(args, Path(workdir))
            finally:
                stop_children()
        except RuntimeError as error:
            print(f"slow_clients: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("slow_clients: interrupted; the relay and the mock are stopped", file=sys.stderr)
            return 130
    print(json.dumps(figures) if args.json else table(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
