"""A routes file in production: gunicorn with the shipped config, the mock Rocket.Chat, real HTTP on 127.0.0.1.

Two integrations with their own tokens, a label route reaching two channels, a template, and SIGHUP reloads (a valid
file takes effect in the running worker, keeping its de-duplication memory; an invalid one is refused and the
routes in force stay)."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import GUNICORN_COMMAND, REPO, Relay, free_port, relay_environ, wait_until

sys.path.insert(0, str(REPO))
from mock_server import MockRocketChat  # noqa: E402

pytestmark = pytest.mark.slow
HOOKS = ("critical", "warning", "info")  # the mock's three hooks, used here as three team channels


def routes_text(mock: MockRocketChat, payments_hook: str = "warning") -> str:
    return textwrap.dedent(f"""
        destinations:
          oncall: {{rocketchat: {{url: "{mock.hook_url('critical')}"}}, mention: "@here"}}
          payments:
            rocketchat: {{url_env: RC_PAYMENTS_URL}}
            template: payments
          quiet: {{rocketchat: {{url: "{mock.hook_url('info')}"}}}}
        integrations:
          default:
            token: am-token-1
            routes:
              - matchers: ['team="payments"']
                destinations: [payments, oncall]
              - destination: quiet
          grafana-prod:
            token: grafana-token-2
            routes: [{{destination: payments}}]
        templates:
          payments:
            title: "{{{{ labels.alertname }}}} for the payments team"
            text: "{{{{ annotations.summary }}}}"
    """)


def body(name: str, group_key: str = "", **labels) -> bytes:
    alert = {"status": "firing", "labels": {"alertname": name, "severity": "critical", **labels},
             "annotations": {"summary": f"{name} summary"}, "startsAt": "2026-12-01T07:00:00Z"}
    if group_key:
        alert["fingerprint"] = f"fp-{name}"
    return json.dumps({"version": "4", "status": "firing", "receiver": "rc", "groupKey": group_key,
                       "alerts": [alert]}).encode()


def worker_pids(master_pid: int) -> set[int]:
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children")
    return {int(pid) for pid in children.read_text().split()} if children.exists() else set()


@pytest.fixture
def mock():
    with MockRocketChat(port=0, rate_limit_count=0) as server:
        yield server


@pytest.fixture
def routed_relay(mock, tmp_path):
    routes = tmp_path / "routes.yml"
    routes.write_text(routes_text(mock))
    environ = relay_environ({
        "HOST": "127.0.0.1", "PORT": str(free_port()), "ROUTES_FILE": str(routes),
        "RC_PAYMENTS_URL": mock.hook_url("warning"), "ROCKETCHAT_RATE_LIMIT": "off",
    })
    relay = Relay.start(GUNICORN_COMMAND, environ, output_dir=tmp_path)
    relay.routes_path = routes
    yield relay
    relay.stop()


def post(relay: Relay, path: str, data: bytes, token: str, *, basic: bool = False):
    auth = ("alertmanager", token) if basic else None
    headers = {} if basic else {"Authorization": f"Bearer {token}"}
    return relay.http.post(f"{relay.base_url}{path}", data=data, headers={"Content-Type": "application/json",
                                                                           **headers}, auth=auth, timeout=30)


def texts(mock: MockRocketChat, hook: str) -> list[str]:
    return [json.dumps(record["message"]) for record in mock.messages(hook)]


def test_two_integrations_a_label_route_to_two_channels_and_a_template(routed_relay, mock):
    answer = post(routed_relay, "/webhook", body("PaymentsDown", team="payments"), "am-token-1")
    assert answer.status_code == 200, answer.text
    [oncall] = mock.messages("critical")
    [payments] = mock.messages("warning")
    assert oncall["message"]["text"].startswith("@here [FIRING:1] PaymentsDown")
    assert payments["message"]["attachments"][0]["title"] == "PaymentsDown for the payments team"
    assert mock.messages("info") == []

    answer = post(routed_relay, "/webhook/grafana-prod", body("GrafanaAlert"), "grafana-token-2", basic=True)
    assert answer.status_code == 200 and answer.json()["integration"] == "grafana-prod"
    assert len(mock.messages("warning")) == 2
    # One integration's token never opens another's endpoint.
    assert post(routed_relay, "/webhook/grafana-prod", body("X"), "am-token-1").status_code == 401
    assert post(routed_relay, "/webhook/nope", body("X"), "am-token-1").status_code == 404
    log = routed_relay.log()
    for secret in ("am-token-1", "grafana-token-2", mock.hook_url("critical").rsplit("/", 1)[1]):
        assert secret not in log


def test_sighup_reloads_a_valid_file_in_the_running_worker_and_refuses_an_invalid_one(routed_relay, mock):
    relay = routed_relay
    workers_before = wait_until(lambda: worker_pids(relay.process.pid), 10, "gunicorn's worker")
    steady = body("Steady", group_key="{}:{alertname=\"Steady\"}", team="payments")  # its route stays as it is
    first = post(relay, "/webhook", steady, "am-token-1")
    assert first.status_code == 200 and len(mock.messages("warning")) == 1

    # A valid file: the catch-all route now goes to the on-call channel.
    relay.routes_path.write_text(routes_text(mock).replace("      - destination: quiet", "      - destination: oncall"))
    os.kill(relay.process.pid, signal.SIGHUP)
    wait_until(lambda: "reloaded" in relay.log(), 10, "the reload to be logged")
    metrics = relay.http.get(f"{relay.base_url}/metrics", timeout=5).text
    assert "rocketchat_webhook_config_last_reload_successful 1.0" in metrics
    assert post(relay, "/webhook", body("Moved"), "am-token-1").status_code == 200
    assert "Moved" in texts(mock, "critical")[-1]
    # The de-duplication memory was kept: the same notification again is joined, not posted.
    again = post(relay, "/webhook", steady, "am-token-1")
    assert again.status_code == 200 and again.json().get("deduplicated") is True
    assert worker_pids(relay.process.pid) == workers_before

    # An invalid file: refused with an ERROR line, the routes in force stay, nothing restarts.
    relay.routes_path.write_text(routes_text(mock).replace("destination: quiet", "destination: nowhere"))
    os.kill(relay.process.pid, signal.SIGHUP)
    wait_until(lambda: "reload refused" in relay.log(), 10, "the refusal to be logged")
    assert "no destination named 'nowhere'" in relay.log()
    metrics = relay.http.get(f"{relay.base_url}/metrics", timeout=5).text
    assert "rocketchat_webhook_config_last_reload_successful 0.0" in metrics
    assert post(relay, "/webhook", body("StillThere"), "am-token-1").status_code == 200
    assert "StillThere" in texts(mock, "critical")[-1]
    assert relay.process.running and worker_pids(relay.process.pid) == workers_before
    assert relay.http.get(f"{relay.base_url}/health", timeout=5).status_code == 200
