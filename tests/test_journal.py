"""The journal's pure parts and its failure handling: events → records, documents, the state file's rules."""

from __future__ import annotations

import logging

import pytest

from tests.conftest import ORIGINAL_DEFAULT_STATE_URL
from rcwebhook.config import ConfigError, load_config
from rcwebhook.events import AlertsReceived, NotificationAnswered, PostFinished, post_alerts
from rcwebhook.fingerprint import labels_fingerprint
from rcwebhook.journal import Journal, open_state, records_for, rfc3339
from rcwebhook.timefmt import normalised_timestamp
from rcwebhook.metrics import Metrics
from rcwebhook.model import Alert, Notification
from rcwebhook.store import GroupMemory, StoreError
from rcwebhook.store.memory import MemoryStore

HOOK = {"ROCKETCHAT_WEBHOOK_DEFAULT": "http://rc.test/hooks/id/token-123456"}


def alert(status="firing", fingerprint="", **labels) -> Alert:
    return Alert(0, status, {"alertname": "DiskFull", **labels}, {"summary": "disk full"},
                 starts_at="2026-12-01T09:00:00.123456789+01:00", fingerprint=fingerprint)


def received(*alerts: Alert, integration="default", at=1000.0) -> AlertsReceived:
    notification = Notification(alerts, receiver="rocketchat", group_key='{}:{alertname="DiskFull"}')
    return AlertsReceived("req-1", integration, notification, tuple("critical" for _ in alerts), at)


def test_an_alert_without_fingerprint_gets_alertmanagers_from_its_labels():
    # Alertmanager 0.27 sent this fingerprint for these labels (shared/corpus); FNV-1a over sorted labels.
    assert labels_fingerprint({}) == "cbf29ce484222325"
    labels = {"alertname": "DiskFull", "instance": "db1"}
    [record] = records_for([received(alert(instance="db1"))]).alerts
    assert record.fingerprint == labels_fingerprint(labels)
    [given] = records_for([received(alert(fingerprint="abc123", instance="db1"))]).alerts
    assert given.fingerprint == "abc123" and given.id != record.id


def test_one_occurrence_is_one_id_however_its_start_is_spelled():
    first = records_for([received(alert(instance="db1"))]).alerts[0]
    respelled = Alert(0, "resolved", {"alertname": "DiskFull", "instance": "db1"}, {},
                      starts_at="2026-12-01T08:00:00.123456Z")
    second = records_for([received(respelled)]).alerts[0]
    assert first.id == second.id and first.starts_at == "2026-12-01T08:00:00.123456Z"
    refired = Alert(0, "firing", {"alertname": "DiskFull", "instance": "db1"}, {}, starts_at="2026-12-01T10:00:00Z")
    assert records_for([received(refired)]).alerts[0].id != first.id


def test_timestamps_are_rfc3339_utc():
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"
    assert normalised_timestamp("0001-01-01T00:00:00Z") == ""
    assert normalised_timestamp("not a time") == "not a time"
    assert normalised_timestamp("2026-05-27 15:36:00 +0200 CEST") == "2026-05-27T13:36:00Z"


def test_a_post_becomes_deliveries_of_the_same_occurrences_and_the_groups_memory():
    firing = alert(instance="db1")
    memory = GroupMemory("hook", b"g", b"d", "delivered", 200, "", 1001.0)
    post = PostFinished("critical", "delivered", 200, "msg-1", post_alerts([firing]), 12.0, 1001.0, (memory,))
    batch = records_for([received(firing), post])
    assert batch.deliveries[0].alert_id == batch.alerts[0].id
    assert (batch.deliveries[0].destination, batch.deliveries[0].message_id) == ("critical", "msg-1")
    assert batch.groups == [memory]


def test_a_notification_record_counts_its_alerts_and_keeps_the_answer():
    notification = Notification((alert(), alert("resolved")), receiver="team", group_key="gk")
    event = NotificationAnswered("req-9", "payments", notification, 503, 8012.34, 1000.0, (("critical", "queued"),))
    [record] = records_for([event]).notifications
    assert (record.firing, record.resolved, record.status_code, record.ms) == (1, 1, 503, 8012.3)
    assert (record.request_id, record.integration, record.receiver, record.group_key) == ("req-9", "payments",
                                                                                          "team", "gk")
    assert dict(record.destinations) == {"critical": "queued"}


class BrokenStore(MemoryStore):
    """A memory store whose writes fail while broken is set (a full disk, a locked file)."""

    def __init__(self):
        super().__init__()
        self.broken = False

    def write(self, batch):
        if self.broken:
            raise StoreError("database or disk is full")
        super().write(batch)


def test_a_store_that_cannot_be_written_is_said_once_and_nothing_is_lost_when_it_recovers(caplog):
    store, metrics = BrokenStore(), Metrics()
    journal = Journal(store, load_config(HOOK), metrics, wall_clock=lambda: 1000.0)
    store.broken = True
    with caplog.at_level(logging.ERROR, logger="rcwebhook.journal"):
        journal.on_events([received(alert(instance="a"))])
        journal.on_events([received(alert(instance="b"))])
    assert [record.levelname for record in caplog.records] == ["ERROR"], "one ERROR per change of state"
    assert "database or disk is full" in caplog.records[0].getMessage()
    state = journal.state()
    assert state["available"] is False and "disk is full" in state["detail"]
    assert metrics.registry.get_sample_value("rocketchat_webhook_journal_up") == 0
    assert metrics.registry.get_sample_value("rocketchat_webhook_journal_write_failures_total") == 2
    store.broken = False
    journal.on_events([received(alert(instance="c"))])
    assert journal.state()["available"] is True
    assert metrics.registry.get_sample_value("rocketchat_webhook_journal_up") == 1
    assert sorted(a["labels"]["instance"] for a in journal.alerts()) == ["a", "b", "c"]


def test_stale_marks_a_firing_alert_not_notified_for_stale_after_hours():
    clock = [1000.0]
    journal = Journal(MemoryStore(), load_config({**HOOK, "STALE_AFTER_HOURS": "1"}), Metrics(),
                      wall_clock=lambda: clock[0])
    journal.on_events([received(alert(instance="a"), at=1000.0)])
    assert journal.alerts()[0]["stale"] is False
    clock[0] = 1000.0 + 3599
    assert journal.alerts()[0]["stale"] is False
    clock[0] = 1000.0 + 3600
    assert journal.alerts()[0]["stale"] is True
    journal.on_events([received(alert("resolved", instance="a"), at=clock[0])])
    assert journal.alerts()[0]["stale"] is False and journal.alerts()[0]["status"] == "resolved"


def test_retention_prunes_in_the_background_counting_from_the_last_update():
    clock = [1000.0]
    journal = Journal(MemoryStore(), load_config({**HOOK, "STATE_RETENTION_DAYS": "1"}), Metrics(),
                      wall_clock=lambda: clock[0])
    journal.on_events([received(alert(instance="old"), at=clock[0])])
    clock[0] += 86400 - 10
    journal.on_events([received(alert(instance="old"), at=clock[0])])  # notified again: kept
    journal.on_events([received(alert(instance="new"), at=clock[0])])
    clock[0] += 86400 + 120
    journal.on_events([received(alert(instance="newest"), at=clock[0])])
    assert [a["labels"]["instance"] for a in journal.alerts()] == ["newest"]


def test_the_default_state_file_follows_state_directory():
    assert ORIGINAL_DEFAULT_STATE_URL({}) == "sqlite:///rocketchat-webhook.sqlite3"
    assert ORIGINAL_DEFAULT_STATE_URL({"STATE_DIRECTORY": "/var/lib/rw:/var/lib/other"}) == \
        "sqlite:////var/lib/rw/state.sqlite3"


def test_an_unusable_default_falls_back_to_memory_with_one_warning(tmp_path, caplog):
    config = load_config(HOOK)
    unusable = config.__class__(**{**config.__dict__, "state_url": f"sqlite:///{tmp_path}/missing/state.sqlite3",
                                   "state_url_is_default": True})
    with caplog.at_level(logging.WARNING, logger="rcwebhook.journal"):
        store, reason = open_state(unusable)
    assert store.description == "memory://" and "lost at restart" in reason
    assert [record.levelname for record in caplog.records] == ["WARNING"]


def test_an_unusable_state_url_the_user_set_is_a_configuration_error(tmp_path):
    config = load_config({**HOOK, "STATE_URL": f"sqlite:///{tmp_path}/missing/state.sqlite3"})
    with pytest.raises(ConfigError, match="STATE_URL="):
        open_state(config)
    with pytest.raises(ConfigError, match="STATE_URL must be"):
        load_config({**HOOK, "STATE_URL": "postgres://db/state"})


def test_a_large_batch_goes_to_redis_in_parts_each_delivery_after_its_alert():
    from rcwebhook.journal import write_parts
    from rcwebhook.store import WriteBatch

    batch = WriteBatch(alerts=list(range(2001)), deliveries=["d"], notifications=["n"], groups=["g"], threads=["t"])
    parts = write_parts(batch, 1000)
    assert [len(part.alerts) for part in parts] == [1000, 1000, 1]
    assert [part.alerts for part in parts][0][0] == 0 and parts[-1].alerts == [2000]
    assert all(not part.deliveries for part in parts[:-1]) and parts[-1].deliveries == ["d"]
    assert parts[-1].notifications == ["n"] and parts[-1].groups == ["g"] and parts[-1].threads == ["t"]
    assert write_parts(batch, None) == [batch]
