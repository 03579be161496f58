"""The journal through the relay: the API, state across a restart, a database that fails, who may look."""

from __future__ import annotations

import base64
import copy
import json
import os

import pytest

from tests.conftest import BASE_ENVIRON, HOOK_URLS, REPO, RecordingClient
from rcwebhook.app import create_app, shutdown
from rcwebhook.client import Outcome, PostResult

TEST_ALERT = json.loads((REPO / "test-alert.json").read_text())
ALERT_KEYS = {"id", "fingerprint", "alertname", "status", "severity", "integration", "labels", "annotations",
              "starts_at", "ends_at", "first_received", "last_received", "stale", "deliveries"}
NOTIFICATION_KEYS = {"id", "request_id", "integration", "group_key", "receiver", "alerts", "status_code", "ms",
                     "received"}


def grouped(body: dict, group_key: str = '{}:{alertname="HighCPUUsage"}') -> dict:
    """The body as Alertmanager sends it: a groupKey and a fingerprint on every alert (de-duplication needs both)."""
    body = copy.deepcopy(body)
    body["groupKey"] = group_key
    for index, alert in enumerate(body["alerts"]):
        alert["fingerprint"] = f"{index:016x}"
    return body


class Relay:
    """One relay on a state file, with its fake Rocket.Chat; restart() builds a new one on the same file."""

    def __init__(self, state_url: str, **environ: str):
        self.environ = {**BASE_ENVIRON, "STATE_URL": state_url, **environ}
        self.fake = RecordingClient()
        self.app = create_app(self.environ, client=self.fake)
        self.client = self.app.test_client()

    def post(self, body: dict, **kwargs):
        return self.client.post("/webhook", json=body, **kwargs)

    def settled(self) -> "Relay":
        assert self.app.extensions["rcwebhook.events"].flush(5.0), "the journal did not catch up"
        return self

    def stop(self) -> None:
        shutdown(self.app, drain_seconds=0)

    def restart(self) -> "Relay":
        self.stop()
        return Relay(self.environ["STATE_URL"], **{k: v for k, v in self.environ.items() if k not in BASE_ENVIRON})


@pytest.fixture
def relay(tmp_path):
    relay = Relay(f"sqlite:///{tmp_path}/state.sqlite3")
    yield relay
    relay.stop()


def test_the_api_lists_each_alert_occurrence_and_each_notification(relay):
    assert relay.post(TEST_ALERT).status_code == 200
    relay.settled()
    alerts = relay.client.get("/api/v1/alerts").get_json()["alerts"]
    assert [alert["alertname"] for alert in alerts] == ["HighCPUUsage", "HighMemoryUsage"] or \
        sorted(alert["alertname"] for alert in alerts) == ["HighCPUUsage", "HighMemoryUsage"]
    for alert in alerts:
        assert set(alert) >= ALERT_KEYS
        assert alert["status"] == "firing" and alert["integration"] == "default" and alert["stale"] is False
        assert alert["first_received"].endswith("Z") and alert["starts_at"] == "2024-01-15T10:30:00Z" or \
            alert["starts_at"].endswith("Z")
        [delivery] = alert["deliveries"]
        assert delivery["outcome"] == "delivered" and delivery["status"] == 200
        assert delivery["destination"] in ("critical", "warning")
    cpu = next(alert for alert in alerts if alert["alertname"] == "HighCPUUsage")
    assert cpu["severity"] == "critical" and cpu["labels"]["instance"] == "web-1:9100"
    assert relay.client.get(f"/api/v1/alerts/{cpu['id']}").get_json() == {**cpu, "sms": []}  # one record: its SMS too
    [notification] = relay.client.get("/api/v1/notifications").get_json()["notifications"]
    assert set(notification) >= NOTIFICATION_KEYS
    assert notification["status_code"] == 200 and notification["alerts"] == {"firing": 2, "resolved": 0}
    assert notification["receiver"] == "rocketchat" and notification["integration"] == "default"


def test_the_api_filters_and_refuses_bad_queries_with_json(relay):
    relay.post(TEST_ALERT)
    resolved = copy.deepcopy(TEST_ALERT)
    resolved["alerts"] = [dict(resolved["alerts"][0], status="resolved", endsAt="2024-01-15T11:00:00Z")]
    relay.post(resolved)
    relay.settled()
    get = relay.client.get
    assert [a["alertname"] for a in get("/api/v1/alerts?status=resolved").get_json()["alerts"]] == ["HighCPUUsage"]
    assert [a["alertname"] for a in get("/api/v1/alerts?status=firing").get_json()["alerts"]] == ["HighMemoryUsage"]
    assert [a["severity"] for a in get("/api/v1/alerts?severity=warning").get_json()["alerts"]] == ["warning"]
    assert get("/api/v1/alerts?integration=nope").get_json() == {"alerts": []}
    assert len(get("/api/v1/alerts?limit=1").get_json()["alerts"]) == 1
    for query in ("status=burning", "severity=extreme", "limit=0", "limit=abc", "limit=100000", "limit=%C2%B2",
                  "limit=" + "9" * 5000, "limit=-1"):
        answer = get(f"/api/v1/alerts?{query}")
        assert answer.status_code == 400 and answer.get_json()["status"] == "error", query
    missing = get("/api/v1/alerts/does-not-exist")
    assert missing.status_code == 404 and missing.get_json()["error"] == "no such alert"


def test_a_duplicate_after_a_restart_is_still_recognised_and_the_journal_remembers(relay):
    body = grouped(TEST_ALERT)
    assert relay.post(body).status_code == 200
    assert len(relay.fake.posts) == 2
    relay.settled()
    restarted = relay.restart()
    try:
        again = restarted.post(body)  # an HA peer's copy, arriving just after the restart
        assert again.status_code == 200 and again.get_json()["deduplicated"] is True
        assert restarted.fake.posts == [], "posted twice across a restart"
        restarted.settled()
        alerts = restarted.client.get("/api/v1/alerts").get_json()["alerts"]
        assert sorted(a["alertname"] for a in alerts) == ["HighCPUUsage", "HighMemoryUsage"]
        assert all(len(a["deliveries"]) == 1 for a in alerts)
        assert len(restarted.client.get("/api/v1/notifications").get_json()["notifications"]) == 2
    finally:
        restarted.stop()


def test_a_refusal_is_remembered_across_a_restart(relay):
    body = grouped({**TEST_ALERT, "alerts": TEST_ALERT["alerts"][:1]})
    refused = PostResult(Outcome.PERMANENT, 404, "error-invalid-integration")
    relay.fake.answer(HOOK_URLS["critical"], refused)
    assert relay.post(body).status_code == 502
    relay.settled()
    restarted = relay.restart()
    try:
        again = restarted.post(body)
        assert again.status_code == 502 and again.get_json()["deduplicated"] is True
        assert restarted.fake.posts == []
    finally:
        restarted.stop()


def test_a_memory_store_forgets_at_restart_as_before(tmp_path):
    relay = Relay("memory://")
    body = grouped(TEST_ALERT)
    relay.post(body)
    restarted = relay.restart()
    try:
        assert restarted.post(body).status_code == 200 and len(restarted.fake.posts) == 2
    finally:
        restarted.stop()


def test_a_database_that_cannot_be_written_never_stops_delivery(relay, tmp_path):
    relay.post(TEST_ALERT)
    relay.settled()
    os.remove(tmp_path / "state.sqlite3")  # deleted under the running relay (a cleanup script, a bad volume)
    second = grouped(TEST_ALERT, group_key="second")
    answer = relay.post(second)
    assert answer.status_code == 200 and len(relay.fake.posts) == 4, "delivery must go on"
    relay.settled()
    metrics = relay.client.get("/metrics").get_data(as_text=True)
    assert "rocketchat_webhook_journal_up 0.0" in metrics
    page = relay.client.get("/").get_data(as_text=True)
    assert "unavailable" in page.lower()
    assert relay.post(grouped(TEST_ALERT, group_key="third")).status_code == 200


def test_without_status_token_only_loopback_clients_see_status_data(relay):
    remote = {"REMOTE_ADDR": "10.1.2.3"}
    for path in ("/", "/api/v1/alerts", "/api/v1/notifications"):
        assert relay.client.get(path).status_code == 200, path
        refused = relay.client.get(path, environ_base=remote)
        assert refused.status_code == 403 and "STATUS_TOKEN" in refused.get_json()["error"], path
    assert relay.client.get("/health", environ_base=remote).status_code == 200
    assert relay.client.get("/metrics", environ_base=remote).status_code == 200
    assert relay.client.get("/", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200


def test_status_token_is_asked_for_with_basic_so_a_browser_can_log_in(tmp_path):
    relay = Relay(f"sqlite:///{tmp_path}/s.sqlite3", STATUS_TOKEN="status-secret-42")
    try:
        for path in ("/", "/api/v1/alerts", "/api/v1/alerts/x", "/api/v1/notifications"):
            refused = relay.client.get(path)
            assert refused.status_code == 401, path
            assert refused.headers["WWW-Authenticate"].startswith("Basic realm="), path
            assert "status-secret-42" not in refused.get_data(as_text=True)
        basic = base64.b64encode(b"anyone:status-secret-42").decode()
        assert relay.client.get("/", headers={"Authorization": f"Basic {basic}"}).status_code == 200
        bearer = {"Authorization": "Bearer status-secret-42"}
        assert relay.client.get("/api/v1/alerts", headers=bearer).status_code == 200
        wrong = base64.b64encode(b"anyone:wrong").decode()
        assert relay.client.get("/", headers={"Authorization": f"Basic {wrong}"}).status_code == 401
        # A remote client with the token is let in: the token, not the address, decides then.
        assert relay.client.get("/api/v1/alerts", headers=bearer,
                                environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200
        assert relay.client.get("/health").status_code == 200
    finally:
        relay.stop()


def test_the_page_shows_untrusted_alert_contents_as_text(relay):
    body = copy.deepcopy(TEST_ALERT)
    body["alerts"][0]["labels"]["instance"] = "<img src=x onerror=alert(1)>"
    relay.post(body)
    relay.settled()
    page = relay.client.get("/")
    html = page.get_data(as_text=True)
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "HighCPUUsage" in html


def test_a_worker_started_in_a_new_process_reads_the_memory_written_since(relay):
    """gunicorn --preload builds the app in the master; the worker forked later restores from the store again."""
    body = grouped(TEST_ALERT)
    assert relay.post(body).status_code == 200 and len(relay.fake.posts) == 2
    relay.settled()
    dispatcher = relay.app.extensions["rcwebhook.dispatcher"]
    for queue in dispatcher.queues.values():
        queue.latest_by_group.clear()  # what a process that never saw the post knows
    dispatcher.started_in_pid = -1  # as after a fork
    dispatcher.start()
    assert dispatcher.restored_groups == 2
    again = relay.post(body)
    assert again.get_json()["deduplicated"] is True and len(relay.fake.posts) == 2
