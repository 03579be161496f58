#!/usr/bin/env python3
"""Memory benchmark: what the relay keeps per notification group for de-duplication.

    python bench/memory.py [--groups 20000] [--max-tracked-groups 50000] [--json]

Builds the relay in this process (create_app, pacing off, a Rocket.Chat stand-in that accepts every post without
network), sends it N Alertmanager-shaped bodies of N distinct groups through Flask's test client, as a storm of
distinct groups within the de-duplication window would, and prints the process's resident memory before and after
(VmRSS from /proc/self/status, after a garbage collection) and the groups remembered. Bounded: N requests, no
network, no child process.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rcwebhook.app import create_app  # noqa: E402
from rcwebhook.client import Outcome, PostResult  # noqa: E402

DELIVERED = PostResult(Outcome.DELIVERED, 200, "")
WARM_UP_GROUPS = 500


class AcceptingRocketChat:
    """Accepts every post at once and keeps nothing."""

    def post(self, url, message, *, timeout_seconds=None):
        return DELIVERED

    def close(self):
        pass


def rss_mib() -> float:
    gc.collect()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def body_for(group_number: int) -> bytes:
    """A realistic group: two alerts with labels, annotations, fingerprints and a groupKey of its own."""
    alerts = []
    for alert_number in range(2):
        labels = {
            "alertname": f"HighLatency{group_number}", "severity": "warning", "instance": f"web-{group_number}:9100",
            "job": "node", "team": "payments", "pod": f"api-{group_number}-{alert_number}",
        }
        alerts.append({
            "status": "firing", "labels": labels,
            "annotations": {
                "summary": f"p99 latency above 2 s on web-{group_number}",
                "description": "The 99th percentile of request latency has been above 2 s for 10 minutes. " * 3,
                "runbook_url": "https://runbooks.example.com/high-latency",
            },
            "startsAt": "2026-12-01T07:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": f"http://prometheus:9090/graph?g0.expr=latency%7Binstance%3D%22web-{group_number}%22%7D",
            "fingerprint": f"{group_number:012x}{alert_number:04x}",
        })
    document = {
        "version": "4", "status": "firing", "receiver": "rocketchat",
        "groupKey": f'{{}}/{{severity="warning"}}:{{alertname="HighLatency{group_number}"}}',
        "groupLabels": {"alertname": f"HighLatency{group_number}"},
        "commonLabels": {"severity": "warning"}, "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093", "alerts": alerts,
    }
    return json.dumps(document).encode()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=20_000)
    parser.add_argument("--max-tracked-groups", type=int, default=50_000)
    parser.add_argument("--json", action="store_true")
    arguments = parser.parse_args(argv)
    environ = {
        "ROCKETCHAT_WEBHOOK_DEFAULT": "http://rocketchat.invalid/hooks/bench-id/bench-token",
        "ROCKETCHAT_RATE_LIMIT": "0",
        "MAX_TRACKED_GROUPS": str(arguments.max_tracked_groups),
    }
    application = create_app(environ, client=AcceptingRocketChat())
    dispatcher = application.extensions["rcwebhook.dispatcher"]
    client = application.test_client()
    statuses: dict[int, int] = {}

    def send(first: int, count: int) -> None:
        for number in range(first, first + count):
            status = client.post("/webhook", data=body_for(number), content_type="application/json").status_code
            statuses[status] = statuses.get(status, 0) + 1

    send(0, WARM_UP_GROUPS)  # imports, caches and the first allocations are not what is measured
    before = rss_mib()
    started = time.monotonic()
    send(WARM_UP_GROUPS, arguments.groups)
    seconds = time.monotonic() - started
    after = rss_mib()
    tracked = sum(len(queue.latest_by_group) for queue in dispatcher.queues.values())
    dispatcher.stop(drain_seconds=0)
    figures = {
        "groups": arguments.groups, "max_tracked_groups": arguments.max_tracked_groups,
        "rss_before_mib": round(before, 1), "rss_after_mib": round(after, 1),
        "rss_added_mib": round(after - before, 1),
        "bytes_per_group": round((after - before) * 1024 * 1024 / arguments.groups),
        "groups_tracked": tracked, "statuses": statuses, "seconds": round(seconds, 1),
    }
    if arguments.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name:>20}: {value}")
    return 0 if set(statuses) == {200} else 3


if __name__ == "__main__":
    sys.exit(main())
