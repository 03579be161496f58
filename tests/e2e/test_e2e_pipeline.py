"""Alertmanager really reaches the relay: real Alertmanager (and Prometheus) with the shipped configurations, the relay
under gunicorn with the shipped gunicorn.conf.py, and mock_server.py as Rocket.Chat, all on loopback ports.

Every wait polls a condition (the mock's records, Alertmanager's metrics and log) up to a deadline.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.stack import (
    COLOURS, RESOLVED_COLOUR, alert, dump_json, firing, holds_for, resolved, resolving, sightings, unique_names,
)
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e

ALWAYS_FIRING_RULES = Path(__file__).resolve().parent / "data" / "always-firing.rules.yml"  # test-only

ARRIVAL_SECONDS = 30.0  # group_wait is 0 s in the adapted configuration: far more than a delivery needs
KINDS = ("critical", "warning", "info", "unlabelled")
# The mock hook and colour each kind of alert must land in; an unlabelled alert goes to the default hook, grey.
EXPECTED_HOOK = {"critical": "critical", "warning": "warning", "info": "info", "unlabelled": "default"}
EXPECTED_COLOUR = {**{kind: COLOURS[kind] for kind in ("critical", "warning", "info")}, "unlabelled": COLOURS["unknown"]}
# The receiver of the shipped alertmanager.yml each kind is routed to.
EXPECTED_RECEIVER = {
    "critical": "rocketchat-critical", "warning": "rocketchat-warning", "info": "rocketchat-info",
    "unlabelled": "rocketchat",
}


def severity_of(kind: str) -> str | None:
    return None if kind == "unlabelled" else kind


def four_alerts(prefix: str) -> tuple[dict[str, str], list[dict]]:
    names = unique_names(prefix, *KINDS)
    return names, [alert(names[kind], severity_of(kind)) for kind in KINDS]


def expected_firing(names: dict[str, str]) -> list[tuple[str, str, str]]:
    return sorted((EXPECTED_HOOK[kind], names[kind], EXPECTED_COLOUR[kind]) for kind in KINDS)


def wait_for_firing(mock, names: dict[str, str], timeout_seconds: float = ARRIVAL_SECONDS) -> list:
    """Wait until every alert of names has reached the mock firing at least once; what was seen then."""
    def every_alert_seen():
        seen = firing(sightings(mock.messages(), names.values()))
        return seen if {name for _, name, _ in seen} >= set(names.values()) else None

    try:
        return wait_until(every_alert_seen, timeout_seconds, f"firing messages for {sorted(names.values())}")
    except AssertionError as error:
        raise AssertionError(f"{error}; the mock holds:\n{dump_json(mock.messages())}") from None


def wait_for_successes(manager, receivers, timeout_seconds: float = ARRIVAL_SECONDS) -> None:
    """Wait until Alertmanager has logged a successful notification to each receiver: it sends nothing more for those
    groups until something changes or repeat_interval passes."""
    def all_succeeded():
        return set(receivers) <= set(manager.succeeded_receivers())

    wait_until(all_succeeded, timeout_seconds, f"Alertmanager to log a success for each of {sorted(receivers)}")


def test_each_severity_and_an_unlabelled_alert_land_in_their_channel_in_their_colour(stack):
    """1. Fired with `amtool alert add`: critical, warning, info and unlabelled alerts each reach their own hook once,
    in red, orange, blue and grey, through the route of the shipped alertmanager.yml meant for them."""
    mock = stack.start_mock()
    relay = stack.start_relay(stack.relay_settings(mock))
    manager = stack.start_alertmanager(relay)
    names = unique_names("E2ELand", *KINDS)

    for kind in KINDS:
        labels = {"alertname": names[kind], "instance": "e2e-host:9100"}
        if severity_of(kind):
            labels["severity"] = severity_of(kind)
        manager.amtool_add(labels, {"summary": f"{names[kind]} from amtool"})

    wait_for_firing(mock, names)
    wait_for_successes(manager, EXPECTED_RECEIVER.values())
    assert sorted(sightings(mock.messages(), names.values())) == expected_firing(names)


def test_resolving_alerts_brings_green_resolved_messages_to_the_same_channels(stack):
    """2. The same four alerts resolved: each hook that showed an alert firing shows it resolved, in green."""
    mock = stack.start_mock()
    relay = stack.start_relay(stack.relay_settings(mock))
    manager = stack.start_alertmanager(relay)
    names, alerts = four_alerts("E2EResolve")
    manager.post_alerts(alerts)
    wait_for_firing(mock, names)

    manager.post_alerts(resolving(alerts))

    expected = sorted((EXPECTED_HOOK[kind], names[kind], RESOLVED_COLOUR) for kind in KINDS)
    wait_until(lambda: sorted(resolved(sightings(mock.messages(), names.values()))) == expected, ARRIVAL_SECONDS,
               f"one green resolved message per alert: {expected}")
    assert sorted(firing(sightings(mock.messages(), names.values()))) == expected_firing(names)


def test_alertmanager_authenticates_with_its_credentials_file_and_a_wrong_token_is_refused(stack):
    """3. With WEBHOOK_TOKEN set, Alertmanager's bearer token from credentials_file is accepted; the same file with a
    wrong token gets 401, which Alertmanager counts as a failed notification; the right token again delivers the
    held alert (Alertmanager reads the file on every request)."""
    mock = stack.start_mock()
    token = stack.token_file.read_text(encoding="utf-8").strip()
    relay = stack.start_relay(stack.relay_settings(mock, WEBHOOK_TOKEN=token))
    manager = stack.start_alertmanager(relay)
    names = unique_names("E2EAuth", "accepted", "refused")

    manager.post_alerts([alert(names["accepted"], "critical")])
    wait_for_firing(mock, {"accepted": names["accepted"]})

    stack.token_file.write_text("not-the-relay-token\n", encoding="utf-8")
    failures_before = manager.webhook_failures()
    manager.post_alerts([alert(names["refused"], "critical")])
    wait_until(lambda: manager.webhook_failures() > failures_before, ARRIVAL_SECONDS,
               "Alertmanager to count a failed webhook notification")
    assert "401" in manager.log(), "Alertmanager's log should name the relay's 401"
    assert not sightings(mock.messages(), [names["refused"]]), "a refused notification must post nothing"

    stack.token_file.write_text(f"{token}\n", encoding="utf-8")
    wait_for_firing(mock, {"refused": names["refused"]})
    assert sorted(sightings(mock.messages(), names.values())) == sorted(
        ("critical", name, COLOURS["critical"]) for name in names.values()
    )


@pytest.mark.slow
def test_rocketchat_failing_for_20_seconds_then_recovering_loses_no_alert_and_posts_none_twice(stack):
    """4. Every hook answers 500 for 20 s, then recovers. Alertmanager retries, the relay answers 503 until Rocket.Chat
    takes the posts: every alert arrives in its channel, none twice. The mock limits each hook as Rocket.Chat does,
    scaled to 10 posts per 20 s (the relay is told the same), and the failed attempts spend that budget too, so
    arrival may wait for a window to reopen."""
    mock = stack.start_mock(rate_limit="10/20s")
    deadline_seconds = 8.0  # the relay's default DELIVERY_DEADLINE_SECONDS, below Alertmanager's 10 s flush deadline
    relay = stack.start_relay(stack.relay_settings(
        mock, ROCKETCHAT_RATE_LIMIT="10/20s", DELIVERY_DEADLINE_SECONDS=str(deadline_seconds),
    ))
    manager = stack.start_alertmanager(relay)
    outage_seconds = 20
    for hook in ("critical", "warning", "info", "default"):
        mock.set_fault(hook, status=500, seconds=outage_seconds)
    outage_ends = time.monotonic() + outage_seconds
    names, alerts = four_alerts("E2EOutage")

    manager.post_alerts(alerts)
    wait_until(lambda: manager.metric("alertmanager_notification_requests_failed_total", integration="webhook") >= 4,
               ARRIVAL_SECONDS, "Alertmanager to see the relay fail while Rocket.Chat answers 500")
    # The outage, one 20 s rate window for the budget the failed attempts spent, and a group_interval and a retry.
    wait_for_firing(mock, names, timeout_seconds=outage_seconds + 20 + 30)
    assert time.monotonic() >= outage_ends - 1, "nothing can arrive while every hook answers 500"
    wait_for_successes(manager, EXPECTED_RECEIVER.values(), timeout_seconds=40)

    # Alertmanager sends nothing more once every group succeeded; a relay request it gave up on ends within the
    # relay's deadline. Watch that long for a late duplicate.
    def posted_once() -> bool:
        counts = Counter(name for _, name, _ in firing(sightings(mock.messages(), names.values())))
        assert max(counts.values()) == 1, f"posted twice: {dict(counts)}\n{dump_json(mock.messages())}"
        return True

    holds_for(posted_once, deadline_seconds + 2)
    assert sorted(sightings(mock.messages(), names.values())) == expected_firing(names)


@pytest.mark.slow
def test_relay_stopped_while_alerts_fire_then_started_again_delivers_every_alert(stack):
    """5. The relay is down when the alerts fire: Alertmanager's attempts fail (counted), and once the relay is started
    again on its port every alert arrives in its channel."""
    mock = stack.start_mock()
    settings = stack.relay_settings(mock)
    relay = stack.start_relay(settings)
    manager = stack.start_alertmanager(relay)
    stack.stop(relay)
    names, alerts = four_alerts("E2EDown")

    manager.post_alerts(alerts)
    wait_until(lambda: manager.metric("alertmanager_notification_requests_failed_total", integration="webhook") >= 4,
               ARRIVAL_SECONDS, "Alertmanager to fail one attempt per group while the relay is down")
    assert not sightings(mock.messages(), names.values())

    stack.start_relay(settings)
    wait_for_firing(mock, names)
    wait_for_successes(manager, EXPECTED_RECEIVER.values())
    seen = sightings(mock.messages(), names.values())
    assert sorted(set(seen)) == expected_firing(names)


@pytest.mark.slow
def test_real_prometheus_rule_reaches_the_critical_channel_through_alertmanager_and_the_relay(prometheus_stack):
    """6. Prometheus with the shipped prometheus.yml and alerting-rules.yml plus a test-only rule that always fires:
    the alert goes through Alertmanager and the relay into the critical channel, red. Prometheus also loaded the
    shipped rules and scrapes the relay's /metrics."""
    stack = prometheus_stack
    mock = stack.start_mock()
    relay = stack.start_relay(stack.relay_settings(mock))
    manager = stack.start_alertmanager(relay)
    prometheus = stack.start_prometheus(relay, manager, [ALWAYS_FIRING_RULES])

    wait_for_firing(mock, {"always": "E2EAlwaysFiring"})
    assert sightings(mock.messages(), ["E2EAlwaysFiring"]) == [("critical", "E2EAlwaysFiring", COLOURS["critical"])]

    loaded = {rule["name"] for group in prometheus.api("rules")["groups"] for rule in group["rules"]}
    assert {"HighCPUUsage", "HighMemoryUsage", "DiskFull", "E2EAlwaysFiring"} <= loaded

    def relay_target():
        targets = prometheus.api("targets")["activeTargets"]
        found = [target for target in targets if target["labels"]["job"] == "rocketchat-webhook"]
        return found if found and found[0]["health"] != "unknown" else None

    (target,) = wait_until(relay_target, ARRIVAL_SECONDS, "Prometheus to scrape the relay once")
    assert (target["scrapeUrl"], target["health"], target["lastError"]) == (f"{relay.base_url}/metrics", "up", "")


