"""grafana-dashboard.json: importable (a datasource input every panel uses), every query names a metric the relay
exports, and each topic the dashboard promises has a panel. tests/e2e/test_e2e_dashboard.py runs the queries."""

from __future__ import annotations

import json
import re

import pytest
from prometheus_client import generate_latest

from rcwebhook.metrics import Metrics
from tests.helpers import REPO

DASHBOARD_PATH = REPO / "grafana-dashboard.json"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
# Metrics of Prometheus itself that a panel may read (the scrape job's health).
PROMETHEUS_METRICS = {"up"}
# The names a sample of each type is exported under, as Prometheus scrapes them (the TYPE line's name + suffix).
SAMPLE_SUFFIXES = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count"),
                   "summary": ("", "_sum", "_count")}
METRIC_NAME = re.compile(r"\b(rocketchat_webhook_\w+|up)\b(?!\s*\()")


def load_dashboard() -> dict:
    return json.loads(DASHBOARD_PATH.read_text(encoding="utf-8"))


def query_panels(dashboard: dict) -> list[dict]:
    """The panels that query (rows only group them), nested rows' panels included."""
    found = []
    for panel in dashboard["panels"]:
        found.extend(panel.get("panels", ()))
        if panel["type"] != "row":
            found.append(panel)
    return found


def all_panels(dashboard: dict) -> list[dict]:
    return [*dashboard["panels"], *(child for panel in dashboard["panels"] for child in panel.get("panels", ()))]


def expressions(dashboard: dict) -> list[str]:
    return [target["expr"] for panel in query_panels(dashboard) for target in panel["targets"]]


def exported_metric_names() -> set[str]:
    """Every sample name a fresh relay's /metrics can carry, read from the exposition's TYPE lines."""
    metrics = Metrics()
    metrics.prime(["critical"])
    metrics.prime_integrations(["alertmanager"])
    text = generate_latest(metrics.registry).decode("utf-8")
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE):
        names.update(name + suffix for suffix in SAMPLE_SUFFIXES[kind])
    return names


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return load_dashboard()


def test_the_dashboard_declares_a_prometheus_datasource_input_and_what_it_requires(dashboard):
    (source,) = dashboard["__inputs"]
    assert (source["name"], source["type"], source["pluginId"]) == ("DS_PROMETHEUS", "datasource", "prometheus")
    required = {(entry["type"], entry["id"]) for entry in dashboard["__requires"]}
    panel_types = {panel["type"] for panel in query_panels(dashboard)}
    assert {("grafana", "grafana"), ("datasource", "prometheus")} <= required
    assert {("panel", kind) for kind in panel_types} <= required
    assert dashboard["id"] is None, "an exported dashboard carries no database id"
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36


def test_panel_ids_are_unique_and_every_panel_has_a_place(dashboard):
    panels = all_panels(dashboard)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(ids)}"
    for panel in panels:
        assert set(panel["gridPos"]) >= {"h", "w", "x", "y"}, panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        assert panel["title"].strip(), f"panel {panel['id']} has no title"


def test_every_panel_target_and_variable_queries_the_datasource_input(dashboard):
    for panel in query_panels(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), f"{panel['title']} {target['refId']}: empty expr"
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"] == DATASOURCE, variable["name"]


def test_every_metric_a_query_names_is_exported_by_the_relay(dashboard):
    exported = exported_metric_names() | PROMETHEUS_METRICS
    queries = expressions(dashboard) + [variable["query"] for variable in dashboard["templating"]["list"]]
    named = {name for query in queries for name in METRIC_NAME.findall(query)}
    assert named - exported == set(), "names no metric of rcwebhook/metrics.py exports"
    assert len(named) > 20  # the pattern really finds the names


def test_rates_use_grafanas_rate_interval_and_variables_match_as_regular_expressions(dashboard):
    """A fixed rate window is wrong at some zoom level; a multi-value or All variable expands to a regex."""
    names = [variable["name"] for variable in dashboard["templating"]["list"]]
    windows = 0
    for expr in expressions(dashboard):
        for window in re.findall(r"\brate\([^\[]*\[([^\]]+)\]", expr):
            assert window == "$__rate_interval", expr
            windows += 1
        for name in names:
            for operator in re.findall(rf'\w+\s*(=~|!~|!=|=)\s*"\${name}"', expr):
                assert operator == "=~", expr
        assert not re.search(r"\$(?!__rate_interval\b)(?!(?:" + "|".join(names) + r")\b)", expr), expr
    assert windows > 20  # the pattern really finds the rates


# Each topic the issue asks the dashboard to show, and what a query for it must contain.
TOPICS = {
    "requests and answers": [r"rocketchat_webhook_http_requests_total", r"\bstatus\b"],
    "webhook answers": [r"rocketchat_webhook_notifications_received_total", r"\bstatus\b"],
    "alerts by severity": [r"rocketchat_webhook_alerts_received_total", r"\bseverity\b"],
    "posts by destination and outcome": [r"rocketchat_webhook_posts_total", r"\bdestination\b", r"\boutcome\b"],
    "429s": [r"rocketchat_webhook_rate_limited_total"],
    "pacing waits": [r"rocketchat_webhook_rate_limit_wait_seconds_total"],
    "queued notifications": [r"rocketchat_webhook_notifications_queued"],
    "request latency percentiles": [
        r"histogram_quantile\(", r"rocketchat_webhook_http_request_duration_seconds_bucket",
    ],
    "post latency percentiles": [r"histogram_quantile\(", r"rocketchat_webhook_post_duration_seconds_bucket"],
    "journal up": [r"rocketchat_webhook_journal_up"],
    "journal write failures": [r"rocketchat_webhook_journal_write_failures_total"],
    "dropped events": [r"rocketchat_webhook_events_dropped_total"],
    "live clients": [r"rocketchat_webhook_live_clients\b"],
}


@pytest.mark.parametrize("topic", TOPICS)
def test_each_topic_has_a_panel(dashboard, topic):
    patterns = TOPICS[topic]
    matching = [expr for expr in expressions(dashboard) if all(re.search(pattern, expr) for pattern in patterns)]
    assert matching, f"no panel query shows {topic} (needs {patterns})"


def test_the_destination_variable_lists_the_destinations_posts_are_counted_for(dashboard):
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["destination"]["query"].startswith("label_values(rocketchat_webhook_posts_total")
    assert variables["destination"]["query"].endswith(", destination)")
    assert all(variable["includeAll"] and variable["allValue"] == ".*" for variable in variables.values())
