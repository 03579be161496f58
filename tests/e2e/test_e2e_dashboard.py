"""Every query of grafana-dashboard.json is valid PromQL and shows data, asked of the real Prometheus (the shipped
prometheus.yml, adapted by tests/e2e/stack.py) scraping the relay after some traffic.

Grafana's variables are substituted as Grafana would: $__rate_interval by 1m (Grafana's value for the shipped 15 s
scrape interval, 4 × 15 s; here it spans the whole test), the dashboard's own variables by All (.*).
"""

from __future__ import annotations

import json
import math
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.stack import (
    HTTP_TIMEOUT_SECONDS, MockProcess, PrometheusProcess, Stack, alert, http_session, parse_metrics, resolving,
    unique_names,
)
from tests.helpers import Relay, wait_until
from tests.test_grafana_dashboard import load_dashboard, query_panels

pytestmark = pytest.mark.e2e

GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1m"}
ALL_VALUE = ".*"  # what the dashboard's variables stand for with All selected (their allValue)
RELAY_JOB = "rocketchat-webhook"
SCRAPE_SECONDS = 20.0  # the adapted configuration scrapes every second: far more than two scrapes need
SEVERITIES = ("critical", "warning", "info", None)  # None: an alert without a severity, for the default hook
SLOW_POST_SECONDS = 1.0

DASHBOARD = load_dashboard()
VARIABLES = [variable["name"] for variable in DASHBOARD["templating"]["list"]]
TARGETS = [(panel, target) for panel in query_panels(DASHBOARD) for target in panel["targets"]]


def substitute(expr: str) -> str:
    """expr with Grafana's variables replaced as Grafana sends it to Prometheus (All selected)."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    for name in VARIABLES:
        expr = re.sub(rf"\$\{{{name}\}}|\${name}\b|\[\[{name}\]\]", ALL_VALUE, expr)
    assert "$" not in expr, f"a variable the test does not know: {expr}"
    return expr


def query(prometheus: PrometheusProcess, promql: str) -> dict:
    """The data of an instant query; fails naming Prometheus' error when the query is refused (invalid PromQL)."""
    answer = prometheus.http.get(f"{prometheus.base_url}/api/v1/query", params={"query": promql},
                                 timeout=HTTP_TIMEOUT_SECONDS)
    document = answer.json()
    assert document["status"] == "success", f"{promql}: {document.get('errorType')}: {document.get('error')}"
    return document["data"]


def scrapes_of_the_relay_since(prometheus: PrometheusProcess, since: float) -> int:
    (series,) = query(prometheus, f'up{{job="{RELAY_JOB}"}}[1m]')["result"] or [{"values": []}]
    return sum(1 for timestamp, _value in series["values"] if float(timestamp) > since)


def wait_for_scrapes(prometheus: PrometheusProcess, count: int) -> None:
    """Wait until Prometheus has prometheus the relay count times after now."""
    since = time.time()
    wait_until(lambda: scrapes_of_the_relay_since(prometheus, since) >= count, SCRAPE_SECONDS,
               f"Prometheus to scrape the relay {count} times")


def notification(alerts: list[dict], status: str) -> str:
    """An Alertmanager webhook body carrying alerts, all with status."""
    return json.dumps({
        "version": "4", "receiver": "rocketchat", "status": status, "groupKey": f"{{}}:{{e2e=\"{status}\"}}",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://alertmanager.e2e.test",
        "alerts": [{**entry, "status": status} for entry in alerts],
    })


def relay_metric(relay: Relay, name: str) -> float:
    answer = relay.http.get(f"{relay.base_url}/metrics", timeout=HTTP_TIMEOUT_SECONDS)
    answer.raise_for_status()
    return parse_metrics(answer.text, name)


def post_past_the_waiting_bound(relay: Relay, mock: MockProcess) -> None:
    """With MAX_WAITING_REQUESTS=1, a body while another waits for a slow post is answered 503 at once."""
    mock.set_fault("info", delay_seconds=SLOW_POST_SECONDS, count=1)
    names = unique_names("E2EDashboardSlow", "waiting", "refused")
    session = http_session()  # the waiting request's own: a Session is not for two threads at once
    with ThreadPoolExecutor(max_workers=1) as pool:
        waiting = pool.submit(session.post, f"{relay.base_url}/webhook", timeout=30,
                              data=notification([alert(names["waiting"], "info")], "firing"),
                              headers={"Content-Type": "application/json"})
        wait_until(lambda: relay_metric(relay, "rocketchat_webhook_requests_waiting") == 1, SCRAPE_SECONDS,
                   "the slow post's request to wait for Rocket.Chat")
        refused = relay.post_webhook(notification([alert(names["refused"], "info")], "firing"))
        assert refused.status_code == 503, refused.text
        assert waiting.result().status_code == 200, waiting.result().text
    session.close()


@pytest.fixture(scope="module")
def prometheus(request, tmp_path_factory, prometheus_programs):
    """Prometheus scraping a relay that took two rounds of traffic, a scrape apart (so the histograms' rates, and
    hence the percentiles, have an increase to show), and scraped twice since."""
    stack = Stack(tmp_path_factory.mktemp("e2e-dashboard"), prometheus_programs)
    failed_before = request.session.testsfailed
    try:
        mock = stack.start_mock()
        relay = stack.start_relay(stack.relay_settings(mock, MAX_WAITING_REQUESTS="1"))
        prometheus = stack.start_prometheus(relay, stack.start_alertmanager(relay), [])
        wait_for_scrapes(prometheus, 1)

        names = unique_names("E2EDashboard", *(severity or "unlabelled" for severity in SEVERITIES))
        alerts = [alert(name, severity) for name, severity in zip(names.values(), SEVERITIES)]
        assert relay.post_webhook(notification(alerts, "firing")).status_code == 200
        wait_for_scrapes(prometheus, 1)
        assert relay.post_webhook(notification(resolving(alerts), "resolved")).status_code == 200
        post_past_the_waiting_bound(relay, mock)
        wait_for_scrapes(prometheus, 2)
        yield prometheus
    finally:
        stack.close()
        if request.session.testsfailed > failed_before:
            print(stack.logs())  # shown under the last test's "Captured stdout teardown"


def finite(sample_value: str) -> bool:
    return math.isfinite(float(sample_value))


@pytest.mark.parametrize(
    ("panel", "target"), TARGETS, ids=[f"{panel['id']}{target['refId']}-{panel['title']}" for panel, target in TARGETS]
)
def test_each_panel_query_is_valid_promql_and_returns_data(prometheus, panel, target):
    promql = substitute(target["expr"])
    data = query(prometheus, promql)
    assert data["resultType"] == "vector", promql
    values = [series["value"][1] for series in data["result"]]
    assert any(finite(value) for value in values), (
        f"panel {panel['title']!r} {target['refId']}: no data for {promql} (values: {values})"
    )


@pytest.mark.parametrize("variable", DASHBOARD["templating"]["list"], ids=VARIABLES)
def test_each_variable_lists_values(prometheus, variable):
    """label_values(selector, label) as Grafana asks it: the label's values on the selector's series."""
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"])
    assert match, f"{variable['name']}: not a label_values() query: {variable['query']}"
    selector, label = substitute(match[1]), match[2]
    answer = prometheus.http.get(f"{prometheus.base_url}/api/v1/label/{label}/values",
                                         params={"match[]": selector}, timeout=HTTP_TIMEOUT_SECONDS)
    document = answer.json()
    assert document["status"] == "success", document
    assert document["data"], f"{variable['name']}: no values of {label} on {selector}"
