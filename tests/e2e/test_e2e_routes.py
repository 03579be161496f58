"""A routes file end to end: Debian's Alertmanager routes alerts by label to two receivers, one per relay integration
(default: Authorization: Bearer from credentials_file; cluster-b: HTTP Basic with the token as password), and the relay
(gunicorn, the shipped gunicorn.conf.py, ROUTES_FILE=data/routes/routes.yml) routes each alert by its labels to the
mock Rocket.Chat's channels. One stack serves the whole module; every wait polls a condition up to a deadline.
"""

from __future__ import annotations

import re
import subprocess
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.e2e.stack import (
    AlertmanagerProcess, MockProcess, Stack, alert, dump_json, firing, parse_metrics, sightings, unique_names,
)
from tests.helpers import Relay, free_port, relay_environ, wait_until

pytestmark = pytest.mark.e2e

DATA = Path(__file__).resolve().parent / "data" / "routes"
ROUTES_FILE = DATA / "routes.yml"
ALERTMANAGER_CONFIG = DATA / "alertmanager.yml"
PLACEHOLDER = "SET-BY-THE-TEST"
ARRIVAL_SECONDS = 30.0  # group_wait is 0 s: far more than a delivery needs
AMTOOL_TIMEOUT_SECONDS = 30

DEFAULT_TOKEN = "e2e-am-bearer-7c1d"
CLUSTER_B_TOKEN = "e2e-am-basic-5b2e"
# The secret each Alertmanager receiver sends; relay-wrong-token offers the default integration's token to cluster-b.
RECEIVER_SECRETS = {
    "relay-default": DEFAULT_TOKEN, "relay-cluster-b": CLUSTER_B_TOKEN, "relay-wrong-token": DEFAULT_TOKEN,
}
# The relay integration each receiver posts to (the path of its url in data/routes/alertmanager.yml).
RECEIVER_INTEGRATION = {"relay-default": "default", "relay-cluster-b": "cluster-b", "relay-wrong-token": "cluster-b"}
# The mock hook (MockProcess's critical, warning, info, default) each destination of routes.yml posts to.
DESTINATION_HOOK = {"oncall": "critical", "payments": "warning", "catchall": "info", "cluster-b": "default"}
DESTINATION_URL_VARIABLE = {
    "oncall": "E2E_RC_ONCALL_URL", "payments": "E2E_RC_PAYMENTS_URL", "catchall": "E2E_RC_CATCHALL_URL",
    "cluster-b": "E2E_RC_CLUSTER_B_URL",
}
MENTIONED_DESTINATIONS = {"oncall"}  # mention: "@here"

# Each alert: its labels, the Alertmanager receiver they select and the destinations routes.yml gives them there.
CASES = {
    "critical": ({"severity": "critical"}, "relay-default", {"oncall"}),
    "alias": ({"severity": "page"}, "relay-default", {"oncall"}),  # an alias of critical
    "payments": ({"team": "payments", "severity": "critical"}, "relay-default", {"payments"}),  # first match wins
    "unlabelled": ({}, "relay-default", {"catchall"}),
    "clusterPayroll": ({"cluster": "b", "team": "payroll"}, "relay-cluster-b", {"payments", "cluster-b"}),
    "clusterStaging": ({"cluster": "b", "team": "payments", "env": "staging"}, "relay-cluster-b", {"cluster-b"}),
    "clusterCritical": ({"cluster": "b", "severity": "critical"}, "relay-cluster-b", {"oncall", "cluster-b"}),
}


# -- the stack --
def alertmanager_config(relay_url: str, secrets_dir: Path) -> dict:
    """data/routes/alertmanager.yml posting to relay_url, each SET-BY-THE-TEST value filled with its receiver's
    secret (credentials_file: a file written into secrets_dir); anything else it does not know fails loudly."""
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    for receiver in config["receivers"]:
        name = receiver["name"]
        secret = RECEIVER_SECRETS[name]
        (webhook,) = receiver["webhook_configs"]
        path = urllib.parse.urlsplit(webhook["url"]).path
        integration = RECEIVER_INTEGRATION[name]
        expected_path = "/webhook" if integration == "default" else f"/webhook/{integration}"
        assert path == expected_path, f"receiver {name!r} posts to {path}, the test expects {expected_path}"
        webhook["url"] = f"{relay_url}{path}"
        http_config = webhook["http_config"]
        if set(http_config) == {"authorization"} and http_config["authorization"]["credentials_file"] == PLACEHOLDER:
            token_file = secrets_dir / f"{name}.token"
            token_file.write_text(f"{secret}\n", encoding="utf-8")
            http_config["authorization"]["credentials_file"] = str(token_file)
        elif set(http_config) == {"basic_auth"} and http_config["basic_auth"]["password"] == PLACEHOLDER:
            http_config["basic_auth"]["password"] = secret
        else:
            raise AssertionError(f"receiver {name!r}: the test does not know http_config {sorted(http_config)}")
    return config


def check_config(amtool: str, config_path: Path) -> str:
    """`amtool check-config`'s output; the test fails with it when amtool finds the file invalid."""
    finished = subprocess.run([amtool, "check-config", str(config_path)], capture_output=True, text=True,
                              timeout=AMTOOL_TIMEOUT_SECONDS, env=relay_environ())
    output = f"{finished.stdout}{finished.stderr}"
    if finished.returncode != 0:
        pytest.fail(f"amtool check-config {config_path} failed ({finished.returncode}):\n{output}", pytrace=False)
    return output


class RoutesStack(Stack):
    def start_configured_alertmanager(self, config_path: Path) -> AlertmanagerProcess:
        return self._track(AlertmanagerProcess.start_with_config(
            self.programs["alertmanager"], self.programs["amtool"], self.workdir, config_path,
        ))


@dataclass
class Pipeline:
    mock: MockProcess
    relay: Relay
    manager: AlertmanagerProcess
    amtool_output: str

    def relay_metric(self, name: str, **labels: str) -> float:
        answer = self.relay.http.get(f"{self.relay.base_url}/metrics", timeout=5)
        answer.raise_for_status()
        return parse_metrics(answer.text, name, **labels)

    def answered(self, integration: str, status: str) -> float:
        """Webhook bodies the relay handled for the integration with this status."""
        return self.relay_metric("rocketchat_webhook_notifications_received_total", integration=integration,
                                 status=status)


@pytest.fixture(scope="module")
def pipeline(request, tmp_path_factory, alertmanager_programs):
    """The mock Rocket.Chat, the relay with routes.yml under gunicorn and Alertmanager posting to it, for the module."""
    workdir = tmp_path_factory.mktemp("e2e-routes")
    stack = RoutesStack(workdir, alertmanager_programs)
    failed_before = request.session.testsfailed
    try:
        mock = stack.start_mock()
        relay = stack.start_relay(relay_environ({
            "HOST": "127.0.0.1", "PORT": str(free_port()), "LOG_LEVEL": "DEBUG", "ROUTES_FILE": str(ROUTES_FILE),
            "E2E_DEFAULT_TOKEN": DEFAULT_TOKEN, "E2E_CLUSTER_B_TOKEN": CLUSTER_B_TOKEN,
            **{DESTINATION_URL_VARIABLE[name]: mock.hook_url(hook) for name, hook in DESTINATION_HOOK.items()},
        }))
        config_path = workdir / "alertmanager.yml"
        config_path.write_text(yaml.safe_dump(alertmanager_config(relay.base_url, workdir), sort_keys=False),
                               encoding="utf-8")
        amtool_output = check_config(alertmanager_programs["amtool"], config_path)
        manager = stack.start_configured_alertmanager(config_path)
        yield Pipeline(mock, relay, manager, amtool_output)
    finally:
        stack.close()
        if request.session.testsfailed > failed_before:
            print(stack.logs())  # shown under the last test's "Captured stdout teardown"


def alert_with(name: str, labels: dict[str, str]) -> dict:
    """stack.alert() with exactly these labels (and its instance label): the severity only when labels give one."""
    others = {key: value for key, value in labels.items() if key != "severity"}
    return alert(name, labels.get("severity"), **others)


# -- reading the outcome --
def landed(pipeline: Pipeline, names) -> list[tuple[str, str]]:
    """(hook, alertname) for each firing attachment of these alerts in the mock, sorted; a duplicate shows twice."""
    return sorted((hook, name) for hook, name, _ in firing(sightings(pipeline.mock.messages(), names)))


def failed_receivers(manager: AlertmanagerProcess) -> list[str]:
    """The receiver of each flush Alertmanager logged as failed, in order. Its 0.25 counts failures by integration
    only (alertmanager_notifications_failed_total{integration="webhook"}), which does not tell receivers apart."""
    return re.findall(r'msg="Notify for alerts failed" .*? err="([^/"]+)/webhook\[\d+\]', manager.log())


def assert_no_secret_in_relay_log(pipeline: Pipeline) -> None:
    log = pipeline.relay.log()
    hook_tokens = [urllib.parse.urlsplit(pipeline.mock.hook_url(hook)).path.rsplit("/", 1)[1]
                   for hook in DESTINATION_HOOK.values()]
    leaked = [secret for secret in (DEFAULT_TOKEN, CLUSTER_B_TOKEN, *hook_tokens) if secret in log]
    assert not leaked, f"the relay's log holds secrets: {leaked}"


# -- the tests --
def test_the_generated_alertmanager_config_has_the_three_receivers(pipeline):
    """amtool check-config accepted the configuration (the fixture fails otherwise) and counted its receivers."""
    assert "SUCCESS" in pipeline.amtool_output and "3 receivers" in pipeline.amtool_output, pipeline.amtool_output


def test_each_alert_lands_in_the_channels_its_integrations_routes_name_and_no_other(pipeline):
    """Label routes in Alertmanager pick the integration (Bearer to /webhook, Basic to /webhook/cluster-b), label and
    severity routes in routes.yml pick the channels: each alert arrives once in each channel named for it, nowhere
    else; the relay answered every notification 200 and Alertmanager logged no failed flush for these receivers."""
    manager = pipeline.manager
    names = unique_names("E2ERoutes", *CASES)
    expected = sorted((DESTINATION_HOOK[destination], names[kind])
                      for kind, (_, _, destinations) in CASES.items() for destination in destinations)
    per_receiver = Counter(receiver for _, receiver, _ in CASES.values())
    successes_before = Counter(manager.succeeded_receivers())
    answered_before = {integration: pipeline.answered(integration, "200") for integration in ("default", "cluster-b")}

    manager.post_alerts([alert_with(names[kind], labels) for kind, (labels, _, _) in CASES.items()])

    def every_group_succeeded() -> bool:
        successes = Counter(manager.succeeded_receivers()) - successes_before
        return all(successes[receiver] >= count for receiver, count in per_receiver.items())

    try:
        wait_until(every_group_succeeded, ARRIVAL_SECONDS,
                   f"Alertmanager to log a success per group: {dict(per_receiver)}")
    except AssertionError as error:
        raise AssertionError(f"{error}; the mock holds:\n{dump_json(pipeline.mock.messages())}") from None

    # The relay answers 200 only once Rocket.Chat took the posts: by now every alert is where it will ever be.
    assert landed(pipeline, names.values()) == expected, dump_json(pipeline.mock.messages())
    assert not set(failed_receivers(manager)) & set(per_receiver), f"failed flushes: {failed_receivers(manager)}"
    for integration, before in answered_before.items():
        receivers = [receiver for receiver, target in RECEIVER_INTEGRATION.items() if target == integration]
        assert pipeline.answered(integration, "200") - before == sum(per_receiver[r] for r in receivers), integration
    # mention: "@here" heads the firing messages of the oncall channel only.
    for hook, hook_messages in pipeline.mock.messages().items():
        for message in hook_messages:
            if not sightings({hook: [message]}, names.values()):
                continue
            mentioned = message.get("text", "").startswith("@here ")
            assert mentioned == (hook in {DESTINATION_HOOK[name] for name in MENTIONED_DESTINATIONS}), (hook, message)
    assert_no_secret_in_relay_log(pipeline)


def test_the_token_of_another_integration_is_refused(pipeline):
    """relay-wrong-token sends the default integration's token to /webhook/cluster-b: the relay answers 401 (counted
    for cluster-b), Alertmanager counts a failed notification, nothing is posted."""
    manager = pipeline.manager
    name = unique_names("E2ERoutes", "wrongToken")["wrongToken"]
    failures_before = manager.webhook_failures()
    refused_before = pipeline.relay_metric("rocketchat_webhook_auth_failures_total", integration="cluster-b")

    manager.post_alerts([alert(name, "critical", e2e_auth="wrong")])

    wait_until(lambda: manager.webhook_failures() > failures_before, ARRIVAL_SECONDS,
               "Alertmanager to count a failed webhook notification")
    # A new group can be flushed twice at once (its group_wait timer and the alert's arrival both fire it): a failed
    # first flush is then sent again, and refused again. Every failure Alertmanager counts is a refusal the relay
    # counted for cluster-b; nothing more comes before the route's group_interval of 1 h.
    wait_until(lambda: pipeline.relay_metric("rocketchat_webhook_auth_failures_total", integration="cluster-b")
               - refused_before == manager.webhook_failures() - failures_before, ARRIVAL_SECONDS,
               "the relay's refusals for cluster-b to match Alertmanager's failed notifications")
    assert "relay-wrong-token" in failed_receivers(manager)
    assert "unexpected status code 401: " in manager.log(), "Alertmanager's log should name the relay's 401"
    assert not sightings(pipeline.mock.messages(), [name]), "a refused notification must post nothing"
    assert_no_secret_in_relay_log(pipeline)
