"""SMS escalation through the relay, against the mock Twilio (mock_twilio.py, served by mock_server.py).

The relay is built by create_app() over the real Twilio client, Store and SMS worker, and talks HTTP to a real
MockRocketChat on 127.0.0.1 (Rocket.Chat hooks and Twilio's Messages API on one port). Where Twilio must reach the
relay (status callbacks) or the log must be the one an operator reads, the relay listens for real: in a thread of
this process (werkzeug's server) or as `python rocketchat_webhook.py`.

The escalation's decisions on a fake clock are tests/test_sms_escalation.py; here is what a user sees end to end:
the SMS on the phone (the mock's records), the answers, the API, the page, the metrics and the log.
"""

from __future__ import annotations

import json
import logging
import sys
import textwrap
import threading
import time

import pytest
from werkzeug.serving import make_server

from rcwebhook.app import create_app, shutdown
from tests.helpers import (
    DEV_SERVER_COMMAND, REPO, Relay, closed_port, direct_session, free_port, metric_value, relay_environ, wait_until,
)

sys.path.insert(0, str(REPO))
import mock_twilio  # noqa: E402
from mock_server import MockRocketChat  # noqa: E402

ALICE, BOB, CAROL = "+15551230001", "+15551230002", "+15551230003"
FROM_NUMBER = "+15017122661"
HOOKS = ("critical", "warning", "info")
WAIT_SECONDS = 10.0
# The worker's first retry comes FIRST_RETRY_SECONDS (5 s) after a transient failure.
RETRY_WAIT_SECONDS = 20.0
CALLBACK_STATUSES_PER_SMS = 2  # the mock reports "sent", then "delivered" (or "undelivered")


def digits(number: str) -> str:
    return number.lstrip("+")


def masked(number: str) -> str:
    """How the relay may show a number: its last three digits."""
    return "…" + "".join(character for character in number if character.isdigit())[-3:]


def alert(name: str = "DiskFull", severity: str = "critical", *, status: str = "firing", fingerprint: str | None = None,
          starts_at: str = "2026-12-01T07:00:00Z", **labels) -> dict:
    document = {
        "status": status,
        "labels": {"alertname": name, "severity": severity, "instance": "db-1:9100", "job": "node", **labels},
        "annotations": {"summary": f"{name} on db-1"},
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-12-01T07:30:00Z",
        "generatorURL": "http://prometheus:9090/graph",
    }
    if fingerprint is not None:
        document["fingerprint"] = fingerprint
    return document


def notification(*alerts: dict, group_key: str = '{}:{alertname="DiskFull"}') -> dict:
    """A body as Alertmanager sends it: a groupKey and a fingerprint on each alert (what de-duplication needs)."""
    alerts = alerts or (alert(fingerprint="f00d0000000000a1"),)
    return {"version": "4", "status": alerts[0]["status"], "receiver": "rocketchat", "groupKey": group_key,
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
            "alerts": list(alerts)}


def relay_settings(mock: MockRocketChat, **extra: str | None) -> dict[str, str]:
    """The relay wired to the mock's hooks and to its Twilio; extra None removes a setting."""
    settings = {
        **{f"ROCKETCHAT_WEBHOOK_{name.upper()}": mock.hook_url(name) for name in HOOKS},
        "ROCKETCHAT_RATE_LIMIT": "off",
        "DELIVERY_DEADLINE_SECONDS": "5",
        "STATE_URL": "memory://",
        "TWILIO_ACCOUNT_SID": mock.twilio.account_sid,
        "TWILIO_AUTH_TOKEN": mock.twilio.auth_token,
        "TWILIO_FROM_NUMBER": FROM_NUMBER,
        "TWILIO_API_URL": mock.twilio_api_url,
        "SMS_RECIPIENTS": f"{ALICE},{BOB}",
        # Where delayed SMS ask about silences: nothing listens there, so they go (and a WARNING says why).
        "ALERTMANAGER_URL": f"http://127.0.0.1:{closed_port()}",
    }
    for name, value in extra.items():
        if value is None:
            settings.pop(name, None)
        else:
            settings[name] = value
    return settings


class InProcessRelay:
    """create_app() on a settings mapping, asked through Flask's test client (from 127.0.0.1, as the page needs)."""

    def __init__(self, settings: dict[str, str]):
        self.settings = settings
        self.app = create_app(settings)
        self.client = self.app.test_client()
        self._stopped = False

    def post(self, body: dict, path: str = "/webhook"):
        answer = self.client.post(path, json=body)
        assert answer.status_code == 200, answer.get_data(as_text=True)
        return answer.get_json()

    def sms_api(self) -> dict:
        answer = self.client.get("/api/v1/sms")
        assert answer.status_code == 200, answer.get_data(as_text=True)
        return answer.get_json()

    def settled(self) -> "InProcessRelay":
        assert self.app.extensions["rcwebhook.events"].flush(5.0), "the journal did not catch up"
        return self

    def alert_id(self, name: str) -> str:
        self.settled()
        alerts = self.client.get("/api/v1/alerts").get_json()["alerts"]
        return next(found["id"] for found in alerts if found["alertname"] == name)

    def sms_to(self, number: str) -> list[dict]:
        return [message for message in self.sms_api()["sms"] if message["recipient"] == masked(number)]

    def idle(self) -> bool:
        """Nothing waits to be sent."""
        return self.sms_api()["pending"] == 0

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            shutdown(self.app, drain_seconds=0)


@pytest.fixture
def mock():
    with MockRocketChat(port=0, rate_limit_count=0) as server:
        yield server


@pytest.fixture
def relays():
    """Every relay a test builds, stopped at its end (a test that restarts one builds two)."""
    built: list[InProcessRelay] = []

    def build(settings: dict[str, str]) -> InProcessRelay:
        relay = InProcessRelay(settings)
        built.append(relay)
        return relay

    yield build
    for relay in built:
        relay.stop()


class ServedRelay:
    """The app listening on 127.0.0.1:port in a thread of this process (werkzeug's threaded server)."""

    def __init__(self, settings: dict[str, str], port: int):
        self.app = create_app(settings)
        self.client = self.app.test_client()
        self.base_url = f"http://127.0.0.1:{port}"
        self.server = make_server("127.0.0.1", port, self.app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, name="served-relay", daemon=True)
        self.thread.start()
        self.http = direct_session()

    def sms_api(self) -> dict:
        return self.client.get("/api/v1/sms").get_json()

    def stop(self) -> None:
        self.http.close()
        self.server.shutdown()
        self.thread.join(5)
        self.server.server_close()
        shutdown(self.app, drain_seconds=0)


@pytest.fixture
def served(mock):
    """A relay listening for real with PUBLIC_URL its own address, so the mock's status callbacks reach it."""
    started: list[ServedRelay] = []

    def serve(**extra: str | None) -> ServedRelay:
        port = free_port()
        relay = ServedRelay(relay_settings(mock, PUBLIC_URL=f"http://127.0.0.1:{port}", **extra), port)
        started.append(relay)
        return relay

    yield serve
    mock.twilio.stop()  # no callback after the relay is gone
    for relay in started:
        relay.stop()


def sends_to(mock: MockRocketChat, number: str) -> list[dict]:
    """Every request the mock Twilio read to send to number, refused ones too (an injected fault answers before the
    form is read)."""
    return [attempt for attempt in mock.twilio.requests if (attempt["params"] or {}).get("To") == number]


# -- one SMS per occurrence and recipient --

def test_alertmanagers_resends_page_each_recipient_once_and_a_restart_does_not_page_again(mock, relays, tmp_path):
    settings = relay_settings(mock, STATE_URL=f"sqlite:///{tmp_path}/state.sqlite3")
    relay = relays(settings)
    body = notification()

    answers = [relay.post(body) for _ in range(3)]

    assert [answer["sms_scheduled"] for answer in answers] == [2, 0, 0]
    assert answers[0]["status"] == "ok"  # the answer stays about Rocket.Chat
    mock.twilio.wait_for_sms(2, WAIT_SECONDS)
    wait_until(relay.idle, WAIT_SECONDS, "every SMS decided")
    assert [len(mock.twilio.messages(to=number)) for number in (ALICE, BOB)] == [1, 1]
    assert len(mock.messages("critical")) == 1  # and Rocket.Chat had its message once too (de-duplicated)

    relay.stop()
    restarted = relays(settings)
    again = restarted.post(body)

    assert again["sms_scheduled"] == 0
    wait_until(restarted.idle, WAIT_SECONDS, "every SMS decided after the restart")
    assert len(mock.twilio.messages()) == 2
    assert sorted(message["recipient"] for message in restarted.sms_api()["sms"]) == [masked(ALICE), masked(BOB)]
    assert {message["status"] for message in restarted.sms_api()["sms"]} == {"sent"}


@pytest.mark.parametrize("state", ["memory", "sqlite"])
def test_the_sms_is_the_seeds_system_alert_naming_the_severity_whatever_the_store(mock, relays, tmp_path, state):
    # SQLite is the default STATE_URL: the body must not depend on which store carried the SMS to the worker.
    state_url = "memory://" if state == "memory" else f"sqlite:///{tmp_path}/state.sqlite3"
    relay = relays(relay_settings(mock, SMS_RECIPIENTS=ALICE, STATE_URL=state_url))
    relay.post(notification())
    [message] = mock.twilio.wait_for_sms(1, WAIT_SECONDS)

    assert message["body"] == "🚨 CRITICAL ALERT\nDiskFull\nService: node\nInstance: db-1:9100\nDiskFull on db-1"


def test_an_alert_that_fires_again_after_it_resolved_pages_again(mock, relays):
    relay = relays(relay_settings(mock, SMS_RECIPIENTS=ALICE))
    first = alert(fingerprint="f00d0000000000a1", starts_at="2026-12-01T07:00:00Z")
    assert relay.post(notification(first))["sms_scheduled"] == 1
    mock.twilio.wait_for_sms(1, WAIT_SECONDS)
    resolved = {**first, "status": "resolved", "endsAt": "2026-12-01T07:30:00Z"}
    assert relay.post(notification(resolved))["sms_scheduled"] == 0  # SMS_SEND_RESOLVED is off

    again = alert(fingerprint="f00d0000000000a1", starts_at="2026-12-01T08:00:00Z")
    assert relay.post(notification(again))["sms_scheduled"] == 1

    assert len(mock.twilio.wait_for_sms(2, WAIT_SECONDS, to=ALICE)) == 2


def test_a_delayed_sms_pending_at_a_restart_is_sent_after_it_once(mock, relays, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    settings = relay_settings(mock, STATE_URL=f"sqlite:///{tmp_path}/state.sqlite3", SMS_DELAY_SECONDS="2")
    relay = relays(settings)
    body = notification()
    scheduled_at = time.time()

    assert relay.post(body)["sms_scheduled"] == 2
    assert relay.sms_api()["pending"] == 2
    relay.stop()  # before the SMS are due
    assert mock.twilio.messages() == []

    restarted = relays(settings)
    assert restarted.post(body)["sms_scheduled"] == 0  # Alertmanager's re-send after the restart
    sent = mock.twilio.wait_for_sms(2, WAIT_SECONDS)

    assert sorted(message["to"] for message in sent) == [ALICE, BOB]
    assert all(message["at"] >= scheduled_at + 2 - 0.1 for message in sent)  # not before its delay
    wait_until(restarted.idle, WAIT_SECONDS, "every SMS decided")
    assert len(mock.twilio.messages()) == 2
    # Alertmanager could not be asked whether the alert was silenced: the page went anyway, and the log says why.
    assert any(record.levelno == logging.WARNING and "cannot ask Alertmanager" in record.getMessage()
               for record in caplog.records)


# -- Twilio's answers --

@pytest.mark.slow
@pytest.mark.parametrize(("status", "code"), [(429, 20429), (500, None)], ids=["20429", "500"])
def test_a_transient_refusal_is_retried_after_a_backoff_and_the_sms_arrives_once(mock, relays, status, code):
    relay = relays(relay_settings(mock, SMS_RECIPIENTS=ALICE))
    mock.twilio.set_fault(status=status, code=code, count=1)

    assert relay.post(notification())["sms_scheduled"] == 1
    [message] = mock.twilio.wait_for_sms(1, RETRY_WAIT_SECONDS)

    # (the mock records a request once it has answered it, just after it has recorded the message)
    first, second = wait_until(lambda: len(mock.twilio.requests) == 2 and mock.twilio.requests, WAIT_SECONDS,
                               "the second attempt recorded")
    assert (first["status"], first["code"]) == (status, code or mock_twilio.FAULT_DEFAULTS[status][0])
    assert second["status"] == 201
    assert second["at"] - first["at"] >= 4.5  # backoff, not a hammering loop
    assert message["to"] == ALICE
    wait_until(relay.idle, WAIT_SECONDS, "the SMS decided")
    [shown] = relay.sms_api()["sms"]
    assert (shown["status"], shown["attempts"], shown["sid"]) == ("sent", 2, message["sid"])
    assert len(mock.twilio.requests) == 2
    metrics = relay.client.get("/metrics").get_data(as_text=True)
    assert metric_value(metrics, "rocketchat_webhook_sms_total", outcome="retried") == 1
    assert metric_value(metrics, "rocketchat_webhook_sms_total", outcome="sent") == 1


def test_a_recipient_who_replied_stop_is_marked_opted_out_and_not_tried_again_even_after_a_restart(
        mock, relays, tmp_path):
    settings = relay_settings(mock, STATE_URL=f"sqlite:///{tmp_path}/state.sqlite3")
    relay = relays(settings)
    mock.twilio.set_opted_out([BOB])

    assert relay.post(notification())["sms_scheduled"] == 2
    mock.twilio.wait_for_sms(1, WAIT_SECONDS, to=ALICE)
    wait_until(lambda: relay.sms_api()["opted_out"], WAIT_SECONDS, "Bob shown as opted out")
    api = relay.sms_api()
    assert [entry["recipient"] for entry in api["opted_out"]] == [masked(BOB)]
    [bob] = relay.sms_to(BOB)
    assert (bob["status"], bob["error_code"]) == ("opted_out", 21610)
    assert len(sends_to(mock, BOB)) == 1

    relay.stop()  # opt-outs are kept in the Store
    restarted = relays(settings)
    assert [entry["recipient"] for entry in restarted.sms_api()["opted_out"]] == [masked(BOB)]
    second = notification(alert("CpuHot", fingerprint="f00d0000000000b2"), group_key='{}:{alertname="CpuHot"}')
    assert restarted.post(second)["sms_scheduled"] == 1  # Alice only: Bob is not counted
    assert len(mock.twilio.wait_for_sms(2, WAIT_SECONDS, to=ALICE)) == 2
    wait_until(restarted.idle, WAIT_SECONDS, "every SMS decided")
    assert len(sends_to(mock, BOB)) == 1  # Bob was not tried again
    assert mock.twilio.messages(to=BOB) == []
    page = restarted.client.get("/").get_data(as_text=True)
    assert "Opted out" in page and masked(BOB) in page


# -- status callbacks --

@pytest.mark.parametrize("state", ["memory", "sqlite"])
def test_signed_status_callbacks_reach_the_relay_and_a_forged_one_is_refused(mock, served, tmp_path, state):
    state_url = "memory://" if state == "memory" else f"sqlite:///{tmp_path}/state.sqlite3"
    relay = served(SMS_RECIPIENTS=ALICE, STATE_URL=state_url)

    answer = relay.http.post(f"{relay.base_url}/webhook", json=notification(), timeout=10)
    assert answer.json()["sms_scheduled"] == 1
    [message] = mock.twilio.wait_for_sms(1, WAIT_SECONDS)
    assert message["status_callback"] == f"{relay.base_url}/twilio/status"
    callbacks = mock.twilio.wait_for_callbacks(CALLBACK_STATUSES_PER_SMS, WAIT_SECONDS)
    assert [callback["status"] for callback in callbacks] == [204, 204]  # accepted: the signatures match
    wait_until(lambda: relay.sms_api()["sms"][0]["twilio_status"] == "delivered", WAIT_SECONDS,
               "the SMS shown delivered")

    url = f"{relay.base_url}/twilio/status"
    genuine = callbacks[-1]
    tampered = {**genuine["params"], "MessageStatus": "failed", "ErrorCode": "30008"}
    forgeries = [
        ({"X-Twilio-Signature": genuine["signature"]}, tampered),  # a real signature over other fields
        ({"X-Twilio-Signature": mock_twilio.twilio_signature("another-token", url, tampered)}, tampered),
        ({}, tampered),  # no signature at all
    ]
    for headers, params in forgeries:
        refused = relay.http.post(url, data=params, headers=headers, timeout=10)
        assert refused.status_code == 403, refused.text

    [shown] = relay.sms_api()["sms"]
    assert (shown["twilio_status"], shown["error_code"]) == ("delivered", None)  # nothing changed
    metrics = relay.client.get("/metrics").get_data(as_text=True)
    assert metric_value(metrics, "rocketchat_webhook_sms_status_callbacks_total", status="forged") == len(forgeries)
    assert metric_value(metrics, "rocketchat_webhook_sms_status_callbacks_total", status="delivered") == 1


def test_a_delivery_failure_is_shown_undelivered_with_twilios_error_code(mock, served, caplog):
    caplog.set_level(logging.INFO)
    mock.twilio.set_delivery_failure(BOB, 30003)
    relay = served()

    relay.http.post(f"{relay.base_url}/webhook", json=notification(), timeout=10)
    mock.twilio.wait_for_callbacks(2 * CALLBACK_STATUSES_PER_SMS, WAIT_SECONDS)

    def twilio_statuses():
        return {message["recipient"]: (message["twilio_status"], message["error_code"])
                for message in relay.sms_api()["sms"]}

    wait_until(lambda: twilio_statuses() == {masked(ALICE): ("delivered", None), masked(BOB): ("undelivered", 30003)},
               WAIT_SECONDS, f"Bob's SMS undelivered (30003), Alice's delivered; got {twilio_statuses()}")
    page = relay.client.get("/").get_data(as_text=True)
    assert "undelivered (30003)" in page
    assert any(record.levelno == logging.ERROR and "undelivered" in record.getMessage()
               and masked(BOB) in record.getMessage() for record in caplog.records)


def test_without_the_auth_token_no_status_callback_is_asked_for(relays, caplog):
    """An API key sends, but only the account's auth token can check Twilio's signatures."""
    caplog.set_level(logging.INFO)
    key_sid, key_secret = "SK" + "b2" * 16, "TwilioKeySecret-99e1c3"
    with MockRocketChat(port=0, rate_limit_count=0, twilio_api_keys={key_sid: key_secret}) as mock:
        relay = relays(relay_settings(mock, TWILIO_AUTH_TOKEN=None, TWILIO_API_KEY_SID=key_sid,
                                      TWILIO_API_KEY_SECRET=key_secret, SMS_RECIPIENTS=ALICE,
                                      PUBLIC_URL="http://127.0.0.1:9"))
        relay.post(notification())
        [message] = mock.twilio.wait_for_sms(1, WAIT_SECONDS)

    assert message["username"] == key_sid and message["status_callback"] is None
    assert relay.client.post("/twilio/status", data={"MessageSid": message["sid"], "MessageStatus": "failed"}
                             ).status_code == 404
    assert any(record.levelno == logging.WARNING and "TWILIO_AUTH_TOKEN" in record.getMessage()
               for record in caplog.records)
    assert all(key_secret not in record.getMessage() for record in caplog.records)


# -- where a user looks --

def test_the_status_page_and_the_alerts_record_show_each_sms_with_its_status(mock, relays):
    relay = relays(relay_settings(mock))
    relay.post(notification())
    mock.twilio.wait_for_sms(2, WAIT_SECONDS)
    wait_until(relay.idle, WAIT_SECONDS, "every SMS decided")

    page = relay.client.get("/").get_data(as_text=True)
    assert "SMS escalation" in page
    assert masked(ALICE) in page and masked(BOB) in page
    assert ALICE not in page and digits(ALICE) not in page
    sms_section = page[page.index("SMS escalation"):]
    assert "DiskFull" in sms_section and masked(ALICE) in sms_section

    record = relay.client.get(f"/api/v1/alerts/{relay.alert_id('DiskFull')}").get_json()
    assert sorted((sms["recipient"], sms["status"], sms["kind"]) for sms in record["sms"]) == [
        (masked(ALICE), "sent", "alert"), (masked(BOB), "sent", "alert")]
    assert {sms["sid"] for sms in record["sms"]} == {message["sid"] for message in mock.twilio.messages()}


@pytest.mark.slow
def test_no_full_number_or_twilio_secret_appears_in_the_log_answers_metrics_api_or_page(mock, tmp_path):
    """A real relay process at DEBUG, through sends, a retry, an opt-out, a refusal quoting the number (as Twilio's
    21211 text does), signed status callbacks (whose form carries To) and a forged one."""
    port = free_port()
    settings = relay_environ({
        **relay_settings(mock, SMS_RECIPIENTS=f"{ALICE},{BOB},{CAROL}", PUBLIC_URL=f"http://127.0.0.1:{port}"),
        "HOST": "127.0.0.1", "PORT": str(port), "LOG_LEVEL": "DEBUG",
    })
    mock.twilio.set_opted_out([BOB])
    relay = Relay.start(DEV_SERVER_COMMAND, settings, output_dir=tmp_path)
    answers, documents = [], []
    try:
        def sms_api():
            return relay.http.get(f"{relay.base_url}/api/v1/sms", timeout=5).json()

        # One transient failure first (whichever recipient meets it is retried 5 s later; Bob is opted out)...
        mock.twilio.set_fault(status=429, code=20429, count=1)
        answers.append(relay.post_webhook(json.dumps(notification())))
        wait_until(lambda: len(mock.twilio.messages()) == 2 and sms_api()["pending"] == 0, RETRY_WAIT_SECONDS,
                   "Alice's and Carol's SMS sent, one of them perhaps after a retry, and Bob's refused")
        # ... then a refusal whose text quotes the number, as Twilio's 21211 does, for the next alert.
        mock.twilio.set_fault(status=400, code=21211, count=1,
                              message=f"The 'To' number {CAROL} is not a valid phone number.")
        second = notification(alert("CpuHot", fingerprint="f00d0000000000b2"), group_key='{}:{alertname="CpuHot"}')
        answers.append(relay.post_webhook(json.dumps(second)))
        wait_until(lambda: len(mock.twilio.messages()) == 3 and sms_api()["pending"] == 0
                   and any(sms["error_code"] == 21211 for sms in sms_api()["sms"]), WAIT_SECONDS,
                   "one SMS of the second alert sent, the other refused")
        mock.twilio.wait_for_callbacks(3 * CALLBACK_STATUSES_PER_SMS, WAIT_SECONDS)
        forged = relay.http.post(f"{relay.base_url}/twilio/status", timeout=5,
                                 data={"MessageSid": "SM" + "0" * 32, "MessageStatus": "failed", "To": ALICE})
        assert forged.status_code == 403
        answers.append(forged)
        for path in ("/api/v1/sms", "/api/v1/alerts", "/api/v1/notifications", "/metrics", "/"):
            shown = relay.http.get(f"{relay.base_url}{path}", timeout=5)
            assert shown.status_code == 200, path
            documents.append(shown.text)
    finally:
        relay.stop()
    log = relay.process.stderr() + relay.process.stdout()

    assert "SMS sent to" in log and "opted out" in log and "21211" in log and "retrying in" in log  # it happened
    assert masked(CAROL) in log and masked(BOB) in log
    everything = [log, *(answer.text for answer in answers), *documents]
    for number in (ALICE, BOB, CAROL, FROM_NUMBER):
        for text in everything:
            assert number not in text and digits(number) not in text, f"{masked(number)} shown in full"
    for secret in (mock.twilio.auth_token, mock_twilio.DEFAULT_TWILIO_AUTH_TOKEN):
        assert all(secret not in text for text in everything)
    assert masked(CAROL) in documents[0] and masked(BOB) in documents[0]


# -- existing deployments, severities and routes files --

def test_without_twilio_the_answer_is_as_before(mock, relays):
    relay = relays(relay_settings(mock, TWILIO_ACCOUNT_SID=None, TWILIO_AUTH_TOKEN=None, TWILIO_FROM_NUMBER=None,
                                  TWILIO_API_URL=None, SMS_RECIPIENTS=None))
    answer = relay.post(notification())
    assert answer["status"] == "ok" and "sms_scheduled" not in answer
    assert relay.client.post("/twilio/status", data={"MessageSid": "SM" + "0" * 32}).status_code == 404
    assert "SMS escalation" not in relay.client.get("/").get_data(as_text=True)
    assert mock.twilio.requests == []


def test_a_warning_alert_is_not_paged_when_only_critical_ones_are(mock, relays):
    relay = relays(relay_settings(mock, SMS_RECIPIENTS=ALICE, SMS_SEVERITIES="critical"))
    warning = notification(alert("DiskFilling", "warning", fingerprint="f00d0000000000c3"),
                           group_key='{}:{alertname="DiskFilling"}')

    assert relay.post(warning)["sms_scheduled"] == 0
    assert relay.post(notification())["sms_scheduled"] == 1  # a critical one after it: SMS do go out
    mock.twilio.wait_for_sms(1, WAIT_SECONDS)
    wait_until(relay.idle, WAIT_SECONDS, "every SMS decided")

    [message] = mock.twilio.messages()
    assert "DiskFull" in message["body"] and "DiskFilling" not in message["body"]
    assert [sms["alerts"][0]["alertname"] for sms in relay.sms_api()["sms"]] == ["DiskFull"]
    assert len(mock.messages("warning")) == 1  # the warning still reached Rocket.Chat


def test_a_routes_files_sms_destination_pages_its_own_teams_recipients(mock, relays, tmp_path):
    routes = tmp_path / "routes.yml"
    routes.write_text(textwrap.dedent(f"""
        destinations:
          db-chat: {{rocketchat: {{url_env: RC_DB_URL}}}}
          web-chat: {{rocketchat: {{url_env: RC_WEB_URL}}}}
          db-sms: {{sms: {{recipients: ["{ALICE}"]}}}}
          web-sms: {{sms: {{recipients: ["{BOB}", "{CAROL}"]}}}}
        integrations:
          default:
            routes:
              - matchers: ['team="db"', 'severity="critical"']
                destinations: [db-chat, db-sms]
              - matchers: ['team="web"', 'severity="critical"']
                destinations: [web-chat, web-sms]
              - destination: web-chat
    """), encoding="utf-8")
    settings = relay_settings(mock, SMS_RECIPIENTS=None, ROUTES_FILE=str(routes), RC_DB_URL=mock.hook_url("critical"),
                              RC_WEB_URL=mock.hook_url("warning"),
                              **{f"ROCKETCHAT_WEBHOOK_{name.upper()}": None for name in HOOKS})
    relay = relays(settings)

    db_alert = notification(alert("ReplicaLag", fingerprint="f00d0000000000d4", team="db"),
                            group_key='{}:{alertname="ReplicaLag"}')
    answer = relay.post(db_alert)

    assert answer["sms_scheduled"] == 1
    mock.twilio.wait_for_sms(1, WAIT_SECONDS, to=ALICE)
    wait_until(relay.idle, WAIT_SECONDS, "every SMS decided")
    assert [message["to"] for message in mock.twilio.messages()] == [ALICE]  # not the web team's phones
    assert [sms["destination"] for sms in relay.sms_api()["sms"]] == ["db-sms"]
    assert len(mock.messages("critical")) == 1 and mock.messages("warning") == []  # and the db team's channel

    web_warning = notification(alert("SlowPages", "warning", fingerprint="f00d0000000000e5", team="web"),
                               group_key='{}:{alertname="SlowPages"}')
    assert relay.post(web_warning)["sms_scheduled"] == 0  # not critical: the last route, chat only
    web_alert = notification(alert("SiteDown", fingerprint="f00d0000000000f6", team="web"),
                             group_key='{}:{alertname="SiteDown"}')
    assert relay.post(web_alert)["sms_scheduled"] == 2
    mock.twilio.wait_for_sms(3, WAIT_SECONDS)
    assert sorted(message["to"] for message in mock.twilio.messages()) == [ALICE, BOB, CAROL]
    assert len(mock.twilio.messages(to=ALICE)) == 1


def test_sms_that_cannot_be_scheduled_are_answered_503_so_alertmanager_retries(mock, relays):
    """The state store refuses the SMS record: Rocket.Chat still gets its message, but Alertmanager hears 503, and
    its retry (de-duplicated for Rocket.Chat) schedules the SMS once the store works again."""
    relay = relays(relay_settings(mock))
    store = relay.app.extensions["rcwebhook.journal"].store
    schedule = store.schedule_sms

    def refuse(messages, at):
        from rcwebhook.store import StoreError

        raise StoreError("database or disk is full")

    store.schedule_sms = refuse
    answer = relay.client.post("/webhook", json=notification())
    assert answer.status_code == 503 and answer.headers["Retry-After"]
    assert "could not be scheduled" in answer.get_json()["error"]
    mock.wait_for_messages("critical", 1)  # the channel has it meanwhile
    store.schedule_sms = schedule
    retried = relay.post(notification())
    assert retried["sms_scheduled"] == 2 and retried.get("deduplicated") is True
    mock.twilio.wait_for_sms(2, WAIT_SECONDS)
    assert len(mock.messages("critical")) == 1
