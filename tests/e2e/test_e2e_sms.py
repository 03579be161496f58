"""SMS escalation through the real pipeline: Debian's Alertmanager (the shipped alertmanager.yml, adapted) posting to
the relay under gunicorn with SMS_DELAY_SECONDS of a few seconds, and mock_server.py playing Rocket.Chat and Twilio
on one port (in this process, so the test reads the SMS it received directly).

Alertmanager runs with --web.external-url pointing at itself and the relay has no ALERTMANAGER_URL: the relay asks
the Alertmanager named in each notification's externalURL whether an alert was silenced, as a default set-up does.

One stack serves the module; each test fires alerts of its own (unique names). Every wait polls a condition up to a
deadline; an SMS that must not be sent is shown final ("cancelled", with its reason) by the relay's GET /api/v1/sms
once its due time has passed, so its absence at Twilio is a decision and not a wait that ended too early.
"""

from __future__ import annotations

import datetime
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mock_server import MockRocketChat
from tests.e2e.stack import (
    HTTP_TIMEOUT_SECONDS, MOCK_HOOKS, SHIPPED_ALERTMANAGER_CONFIG, AlertmanagerProcess, Stack, adapt_alertmanager_config,
    alert, dump_json, resolving, unique_names,
)
from tests.helpers import ManagedProcess, Relay, free_port, relay_environ, wait_until

pytestmark = pytest.mark.e2e

SMS_DELAY_SECONDS = 4.0
# The critical route re-sends a group that did not change after this (shipped: 30m), so the test sees Alertmanager
# notify an alert again after its SMS went out. Longer than the delay: the first re-send comes after the SMS.
CRITICAL_REPEAT_INTERVAL = "5s"
RECIPIENT = "+15551230001"
FROM_NUMBER = "+15017122661"
ARRIVAL_SECONDS = 30.0  # group_wait 0 s, group_interval 1 s: far more than a notification needs
DECISION_SECONDS = SMS_DELAY_SECONDS + 20.0  # from scheduling to the SMS's final state, with a wide margin
RESEND_SECONDS = 30.0  # a repeat_interval re-send (5 s, checked every group_interval) reaches the relay within this
API_LIMIT = 1000


@dataclass
class SmsStack:
    mock: MockRocketChat
    relay: Relay
    manager: AlertmanagerProcess
    stack: Stack


# -- the stack -----------------------------------------------------------------------------------------------------
def alertmanager_config(relay_url: str, token_file: Path) -> dict:
    """The shipped alertmanager.yml as the other end-to-end tests adapt it, with a short repeat_interval on the
    critical route."""
    shipped = yaml.safe_load(SHIPPED_ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    config = adapt_alertmanager_config(shipped, relay_url=relay_url, token_file=token_file,
                                       smarthost=f"127.0.0.1:{free_port()}")
    critical = [route for route in config["route"]["routes"] if route.get("receiver") == "rocketchat-critical"]
    assert len(critical) == 1, f"the shipped alertmanager.yml has no single rocketchat-critical route: {config}"
    critical[0]["repeat_interval"] = CRITICAL_REPEAT_INTERVAL
    return config


def start_alertmanager(programs: dict[str, str], workdir: Path, relay: Relay, token_file: Path) -> AlertmanagerProcess:
    """Alertmanager on a free loopback port whose externalURL is its own address (the stack's helper starts it with
    the default, http://<hostname>:9093/, which the relay could not reach)."""
    config_path = workdir / "alertmanager.yml"
    config_path.write_text(yaml.safe_dump(alertmanager_config(relay.base_url, token_file), sort_keys=False),
                           encoding="utf-8")
    port = free_port()
    storage = workdir / "alertmanager-data"
    storage.mkdir()
    process = ManagedProcess(
        [
            programs["alertmanager"], f"--config.file={config_path}", f"--storage.path={storage}",
            f"--web.listen-address=127.0.0.1:{port}", f"--web.external-url=http://127.0.0.1:{port}",
            "--cluster.listen-address=",  # no HA peer: it would listen on 0.0.0.0:9094
            "--log.level=debug",
        ],
        env=relay_environ(), cwd=workdir, output_dir=workdir, name="alertmanager",
    )
    return AlertmanagerProcess(process, port, config_path, programs["amtool"])._await_ready()


def relay_settings(mock: MockRocketChat) -> dict[str, str]:
    """Rocket.Chat hooks and SMS through the mock; no ALERTMANAGER_URL (relay_environ() drops any inherited one), so
    the relay asks the notification's externalURL."""
    return relay_environ({
        "HOST": "127.0.0.1", "PORT": str(free_port()), "LOG_LEVEL": "DEBUG",
        **{f"ROCKETCHAT_WEBHOOK_{name.upper()}": mock.hook_url(name) for name in MOCK_HOOKS},
        # Every critical alert of the module posts to one hook: paced to Rocket.Chat's 10 a minute, the relay would
        # hold Alertmanager's requests (the resolved notification's answer) for seconds, which has nothing to do
        # with SMS.
        "ROCKETCHAT_RATE_LIMIT": "off",
        "SMS_RECIPIENTS": RECIPIENT,
        "SMS_DELAY_SECONDS": f"{SMS_DELAY_SECONDS:g}",
        "TWILIO_ACCOUNT_SID": mock.twilio.account_sid,
        "TWILIO_AUTH_TOKEN": mock.twilio.auth_token,
        "TWILIO_FROM_NUMBER": FROM_NUMBER,
        "TWILIO_API_URL": mock.twilio_api_url,
    })


@pytest.fixture(scope="module")
def sms_stack(tmp_path_factory, alertmanager_programs):
    workdir = tmp_path_factory.mktemp("e2e-sms")
    stack = Stack(workdir, alertmanager_programs)  # starts the relay; close() stops it
    # No rate limit, as the other end-to-end tests run the mock (--rate-limit off).
    mock = MockRocketChat({name: (name, f"{name}-token") for name in MOCK_HOOKS}, rate_limit_count=0).start()
    manager = None
    try:
        relay = stack.start_relay(relay_settings(mock))
        manager = start_alertmanager(alertmanager_programs, workdir, relay, stack.token_file)
        yield SmsStack(mock, relay, manager, stack)
    finally:
        if manager is not None:
            manager.stop()
        stack.close()
        mock.stop()


@pytest.fixture
def sms(request, sms_stack):
    """The module's stack; the end of every process's output when the test failed."""
    yield sms_stack
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        print(sms_stack.stack.logs())
        print(f"----- mock Twilio requests -----\n{dump_json(sms_stack.mock.twilio.requests)}")


# -- reading the relay and the mock ----------------------------------------------------------------------------------
def relay_api(relay: Relay, path: str) -> dict:
    answer = relay.http.get(f"{relay.base_url}/api/v1/{path}", params={"limit": API_LIMIT},
                            timeout=HTTP_TIMEOUT_SECONDS)
    assert answer.status_code == 200, f"GET /api/v1/{path}: {answer.status_code} {answer.text}"
    return answer.json()


def sms_records(relay: Relay, name: str) -> list[dict]:
    """The relay's SMS records for the alert called name."""
    return [record for record in relay_api(relay, "sms")["sms"]
            if any(entry["alertname"] == name for entry in record["alerts"])]


def notifications(relay: Relay, name: str) -> list[dict]:
    """The notifications the relay journaled for the group of the alert called name (group_by has alertname),
    oldest first."""
    found = [record for record in relay_api(relay, "notifications")["notifications"]
             if f'alertname="{name}"' in (record["group_key"] or "")]
    return sorted(found, key=lambda record: record["received"])


def sms_received(mock: MockRocketChat, name: str) -> list[dict]:
    """The SMS the mock Twilio accepted for the recipient that name the alert."""
    return [message for message in mock.twilio.messages(to=RECIPIENT) if name in message["body"]]


def moment(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def wait_for_record(relay: Relay, name: str, status: str | None, timeout_seconds: float) -> dict:
    """Wait until the relay holds exactly one SMS record for the alert, in status (any, when None); that record."""
    def found():
        records = sms_records(relay, name)
        if len(records) > 1:
            raise AssertionError(f"more than one SMS record for {name}: {dump_json(records)}")
        return records[0] if records and status in (None, records[0]["status"]) else None

    try:
        return wait_until(found, timeout_seconds, f"an SMS record for {name} in status {status or 'any'}")
    except AssertionError as error:
        raise AssertionError(f"{error}; GET /api/v1/sms:\n{dump_json(relay_api(relay, 'sms'))}") from None


def wait_for_final(relay: Relay, name: str) -> dict:
    """Wait until the alert's one SMS record is no longer pending: sent, cancelled or failed; that record."""
    def final():
        record = wait_for_record(relay, name, None, 0)
        return record if record["status"] not in ("pending", "held") else None

    try:
        return wait_until(final, DECISION_SECONDS, f"the SMS for {name} to be decided")
    except AssertionError as error:
        raise AssertionError(f"{error}; GET /api/v1/sms:\n{dump_json(relay_api(relay, 'sms'))}") from None


def assert_delayed(record: dict) -> None:
    """The record is due SMS_DELAY_SECONDS after it was created."""
    delay = (moment(record["due"]) - moment(record["created"])).total_seconds()
    assert abs(delay - SMS_DELAY_SECONDS) < 0.5, dump_json(record)
    assert record["recipient"].endswith(RECIPIENT[-3:]) and RECIPIENT not in str(record), dump_json(record)


def amtool(manager: AlertmanagerProcess, *args: str) -> str:
    command = [manager.amtool, f"--alertmanager.url={manager.base_url}", *args]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=30, env=relay_environ())
    assert finished.returncode == 0, f"{command}: {finished.stderr}"
    return finished.stdout


# -- the four cases --------------------------------------------------------------------------------------------------
def test_an_unsilenced_critical_alert_gives_one_sms_and_a_resend_gives_no_second(sms):
    """1. Fired with `amtool alert add`: after SMS_DELAY_SECONDS the recipient gets one SMS naming the alert. When
    Alertmanager notifies the unchanged group again (repeat_interval), after the SMS went out, the relay schedules
    nothing more: still one record and one SMS."""
    name = unique_names("E2ESms", "paged")["paged"]
    sms.manager.amtool_add({"alertname": name, "severity": "critical", "instance": "e2e-host:9100"},
                           {"summary": f"{name} from amtool"})

    assert_delayed(wait_for_record(sms.relay, name, None, ARRIVAL_SECONDS))
    record = wait_for_final(sms.relay, name)
    assert record["status"] == "sent", dump_json(record)
    [received] = wait_until(lambda: sms_received(sms.mock, name), ARRIVAL_SECONDS, f"the mock Twilio's SMS for {name}")
    assert received["sid"] == record["sid"] and received["from"] == FROM_NUMBER, dump_json(received)
    assert "CRITICAL" in received["body"], received["body"]
    assert moment(record["sent_at"]) >= moment(record["due"]), dump_json(record)

    # Alertmanager's next notification of the group, sent after the SMS was: the relay has handled it (it is
    # journaled once answered, after SMS scheduling) and the occurrence was already paged.
    sent_at = moment(record["sent_at"])
    wait_until(lambda: [note for note in notifications(sms.relay, name) if moment(note["received"]) > sent_at],
               RESEND_SECONDS, f"Alertmanager to notify {name} again after its SMS went out")
    assert [entry["status"] for entry in sms_records(sms.relay, name)] == ["sent"], \
        dump_json(relay_api(sms.relay, "sms"))
    assert len(sms_received(sms.mock, name)) == 1, dump_json(sms.mock.twilio.messages())
    # The silence check before sending reached Alertmanager through the notification's externalURL.
    assert "cannot ask Alertmanager" not in sms.relay.log()


def test_an_alert_silenced_with_amtool_before_it_is_due_gives_no_sms(sms):
    """2. Fired, then silenced with `amtool silence add` once the relay has scheduled its SMS and before it is due:
    when due, the relay asks Alertmanager (at the notification's externalURL), finds the alert silenced and cancels
    the SMS."""
    name = unique_names("E2ESms", "silenced")["silenced"]
    labels = {"alertname": name, "severity": "critical", "instance": "e2e-host:9100"}
    sms.manager.amtool_add(labels, {"summary": f"{name} from amtool"})
    pending = wait_for_record(sms.relay, name, "pending", ARRIVAL_SECONDS)
    assert_delayed(pending)

    amtool(sms.manager, "silence", "add", *(f"{key}={value}" for key, value in labels.items()),
           "--author=e2e", f"--comment=acknowledging {name}", "--duration=10m")
    assert now() < moment(pending["due"]), f"the silence came after the SMS was due: {dump_json(pending)}"
    silences = amtool(sms.manager, "silence", "query", f"alertname={name}", "--output=json")
    assert name in silences, silences

    record = wait_for_final(sms.relay, name)
    assert record["status"] == "cancelled" and "silenced" in record["reason"], dump_json(record)
    assert record["sent_at"] is None and record["attempts"] == 0, dump_json(record)
    assert sms_received(sms.mock, name) == [], dump_json(sms.mock.twilio.messages())


def test_an_alert_resolved_before_it_is_due_gives_no_sms(sms):
    """3. Fired through Alertmanager's API, then resolved (endsAt now) once the relay has scheduled its SMS:
    Alertmanager's resolved notification reaches the relay before the SMS is due, and the SMS is cancelled."""
    name = unique_names("E2ESms", "resolved")["resolved"]
    fired = [alert(name, "critical")]
    sms.manager.post_alerts(fired)
    pending = wait_for_record(sms.relay, name, "pending", ARRIVAL_SECONDS)
    assert_delayed(pending)

    sms.manager.post_alerts(resolving(fired))
    [resolved_note] = wait_until(
        lambda: [note for note in notifications(sms.relay, name) if note["alerts"]["resolved"] >= 1][:1],
        ARRIVAL_SECONDS, f"Alertmanager's resolved notification for {name}")
    assert moment(resolved_note["received"]) < moment(pending["due"]), (
        f"the resolved notification came after the SMS was due: {dump_json(resolved_note)} {dump_json(pending)}")

    record = wait_for_final(sms.relay, name)
    assert record["status"] == "cancelled" and record["reason"] == "resolved before it was sent", dump_json(record)
    assert record["sent_at"] is None and record["attempts"] == 0, dump_json(record)
    assert sms_received(sms.mock, name) == [], dump_json(sms.mock.twilio.messages())


def test_a_warning_alert_gives_no_sms(sms):
    """4. A warning alert and a critical one fired together through the API: the warning reaches Rocket.Chat's
    warning hook and the relay journals its notification, but no SMS is scheduled for it (SMS_SEVERITIES defaults
    to critical); the critical one, paged from the same moment, shows that SMS were being sent meanwhile."""
    names = unique_names("E2ESms", "warning", "control")
    sms.manager.post_alerts([alert(names["warning"], "warning"), alert(names["control"], "critical")])

    wait_until(lambda: [record for record in sms.mock.messages("warning") if names["warning"] in str(record)],
               ARRIVAL_SECONDS, f"the Rocket.Chat warning hook to get {names['warning']}")
    [warning_note] = wait_until(lambda: notifications(sms.relay, names["warning"])[:1], ARRIVAL_SECONDS,
                                f"the relay to journal the notification of {names['warning']}")
    assert warning_note["receiver"] == "rocketchat-warning" and warning_note["status_code"] == 200, \
        dump_json(warning_note)

    control = wait_for_final(sms.relay, names["control"])
    assert control["status"] == "sent", dump_json(control)
    wait_until(lambda: sms_received(sms.mock, names["control"]), ARRIVAL_SECONDS,
               f"the mock Twilio's SMS for {names['control']}")
    # The warning's notification was handled (scheduling happens before the answer that was journaled): an SMS for
    # it would have a record now, pending or decided.
    assert sms_records(sms.relay, names["warning"]) == [], dump_json(relay_api(sms.relay, "sms"))
    assert sms_received(sms.mock, names["warning"]) == [], dump_json(sms.mock.twilio.messages())
