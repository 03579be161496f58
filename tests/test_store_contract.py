"""The Store contract (rcwebhook/store/__init__.py) on every backend (memory, SQLite, and Redis: a real redis-server,
Debian's, started for the session), then what only the SQLite file must do, then what only Redis must do."""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from rcwebhook.store import (
    MAX_DELIVERIES_PER_ALERT, SMS_CANCELLED, SMS_DIGESTED, SMS_FAILED, SMS_HELD, SMS_PENDING, SMS_SENT,
    TWILIO_STATUS_RANK, AlertSeen, Delivery, GroupMemory, NotificationRecord, SmsAlert, SmsMessage, StoreError,
    ThreadMessage, WriteBatch, open_store,
)
from rcwebhook.store import sqlite as sqlite_module
from rcwebhook.store.memory import MemoryStore
from rcwebhook.store.sqlite import SQLiteStore
from tests.redis_server import redis_factory_fixture, redis_fixture

REPO = Path(__file__).resolve().parent.parent
ALICE, BOB = "+15550000001", "+15550000002"


def seen(alert_id="a1", at=100.0, *, status="firing", severity="critical", integration="rc", alertname="DiskFull",
         labels=None, annotations=None, ends_at=""):
    return AlertSeen(id=alert_id, fingerprint=f"fp-{alert_id}", starts_at="2024-05-01T10:00:00Z", ends_at=ends_at,
                     alertname=alertname, status=status, severity=severity, integration=integration,
                     labels={"alertname": alertname} if labels is None else labels,
                     annotations={} if annotations is None else annotations, received_at=at)


def delivery(alert_id="a1", at=101.0, *, outcome="delivered", status=200, message_id=None):
    return Delivery(alert_id=alert_id, destination="ops", at=at, outcome=outcome, status=status,
                    message_id=message_id)


def notification(notification_id="n1", received=100.0, destinations=None, *, status_code=200):
    return NotificationRecord(id=notification_id, request_id=f"req-{notification_id}", integration="rc",
                              group_key="{}:{alertname=\"DiskFull\"}", receiver="team", firing=1, resolved=0,
                              status_code=status_code, ms=12.5, received=received,
                              destinations={"ops": "delivered"} if destinations is None else destinations)


def group(hook_key="hook-a", group_id=b"\x00g1\xff", finished_at=100.0, *, state="delivered", status=200):
    return GroupMemory(hook_key=hook_key, group_id=group_id, dedup_key=b"\xfe\x00dedup", state=state, status=status,
                       reason="", finished_at=finished_at)


def sms_alert(alert_id="a1", labels=None):
    return SmsAlert(id=alert_id, fingerprint=f"fp-{alert_id}", alertname="DiskFull",
                    labels={"alertname": "DiskFull", "instance": alert_id} if labels is None else labels,
                    annotations={"summary": f"{alert_id} is full"}, severity="critical",
                    starts_at="2024-05-01T10:00:00Z")


def sms_message(sms_id="s1", alert_ids=("a1",), *, recipient=ALICE, kind="alert", status=SMS_PENDING, at=100.0,
                next_attempt_at=None, alerts=None, **fields):
    """A message created, due and updated at `at` unless told otherwise."""
    return SmsMessage(id=sms_id, destination="oncall", recipient=recipient, kind=kind,
                      alerts=tuple(sms_alert(a) for a in alert_ids) if alerts is None else alerts, status=status,
                      created_at=at, due_at=at, next_attempt_at=at if next_attempt_at is None else next_attempt_at,
                      updated_at=at, **fields)


def alert_ids(message):
    return [alert.id for alert in message.alerts]


def write(store, *, alerts=(), deliveries=(), notifications=(), groups=()):
    store.write(WriteBatch(alerts=list(alerts), deliveries=list(deliveries), notifications=list(notifications),
                           groups=list(groups)))


redis_server = redis_fixture(scope="session")  # one for the whole run: each store has a prefix of its own
# A one-node Redis Cluster: it refuses a script or MULTI whose keys are in two slots (the hash tags' job).
redis_cluster = redis_fixture(scope="session", cluster=True)
redis_servers = redis_factory_fixture()  # more, for the tests that need a server to themselves


def redis_store(server, **options):
    """A RedisStore on the server under a prefix no other test uses."""
    from rcwebhook.store.redis import RedisStore

    options.setdefault("prefix", f"test-{uuid.uuid4().hex[:12]}:")
    return RedisStore(server.url, **options)


@pytest.fixture(params=["memory", "sqlite", "redis", "redis-cluster"])
def store(request, tmp_path):
    if request.param == "memory":
        store = MemoryStore()
    elif request.param == "sqlite":
        store = SQLiteStore(str(tmp_path / "state.sqlite3"))
    else:
        store = redis_store(request.getfixturevalue("redis_cluster" if request.param == "redis-cluster" else
                                                    "redis_server"))
    yield store
    store.close()


def test_a_first_copy_creates_the_occurrence(store):
    write(store, alerts=[seen(labels={"alertname": "DiskFull", "host": "db1"}, annotations={"summary": "full"})])
    record = store.alert("a1")
    assert (record.fingerprint, record.alertname, record.status, record.severity, record.integration) == (
        "fp-a1", "DiskFull", "firing", "critical", "rc")
    assert record.labels == {"alertname": "DiskFull", "host": "db1"} and record.annotations == {"summary": "full"}
    assert (record.starts_at, record.ends_at) == ("2024-05-01T10:00:00Z", "")
    assert (record.first_received, record.last_received, record.updated_at) == (100.0, 100.0, 100.0)
    assert record.resolved_at is None and record.deliveries == ()


def test_the_copy_received_last_sets_the_record(store):
    write(store, alerts=[seen(at=100.0)])
    write(store, alerts=[seen(at=130.0, status="resolved", severity="warning", integration="other",
                              alertname="DiskAlmostFull", labels={"x": "2"}, annotations={"a": "b"},
                              ends_at="2024-05-01T10:05:00Z")])
    record = store.alert("a1")
    assert (record.alertname, record.status, record.severity, record.integration) == (
        "DiskAlmostFull", "resolved", "warning", "other")
    assert (record.labels, record.annotations, record.ends_at) == ({"x": "2"}, {"a": "b"}, "2024-05-01T10:05:00Z")
    assert (record.first_received, record.last_received, record.updated_at, record.resolved_at) == (
        100.0, 130.0, 130.0, 130.0)


def test_an_older_copy_arriving_late_changes_only_first_and_last_received(store):
    write(store, alerts=[seen(at=200.0, status="resolved", labels={"v": "new"})])
    before = store.alert("a1")
    write(store, alerts=[seen(at=150.0, status="firing", severity="info", labels={"v": "old"})])
    after = store.alert("a1")
    assert after == dataclasses.replace(before, first_received=150.0)
    assert (after.status, after.labels, after.resolved_at, after.last_received, after.updated_at) == (
        "resolved", {"v": "new"}, 200.0, 200.0, 200.0)


def test_resolved_at_is_the_first_resolved_copy_since_the_alert_last_fired(store):
    for at, status, expected in ((100.0, "firing", None), (110.0, "resolved", 110.0), (120.0, "resolved", 110.0),
                                 (130.0, "firing", None), (140.0, "resolved", 140.0)):
        write(store, alerts=[seen(at=at, status=status)])
        assert store.alert("a1").resolved_at == expected, at
    write(store, alerts=[seen("born-resolved", at=50.0, status="resolved")])
    assert store.alert("born-resolved").resolved_at == 50.0


def test_updated_at_is_the_latest_copy_or_delivery(store):
    write(store, alerts=[seen(at=100.0)], deliveries=[delivery(at=150.0)])
    assert store.alert("a1").updated_at == 150.0
    write(store, alerts=[seen(at=120.0)], deliveries=[delivery(at=140.0)])
    record = store.alert("a1")
    assert (record.updated_at, record.last_received, len(record.deliveries)) == (150.0, 120.0, 2)


def test_deliveries_are_appended_and_only_the_newest_are_kept(store):
    write(store, alerts=[seen()], deliveries=[delivery(at=1000.0 + n, status=500 + n) for n in range(5)])
    write(store, deliveries=[delivery(at=2000.0, outcome="transient", status=None, message_id="m-1")])
    record = store.alert("a1")
    assert [d.at for d in record.deliveries] == [1000.0, 1001.0, 1002.0, 1003.0, 1004.0, 2000.0]
    assert record.deliveries[-1] == delivery(at=2000.0, outcome="transient", status=None, message_id="m-1")
    write(store, deliveries=[delivery(at=3000.0 + n) for n in range(MAX_DELIVERIES_PER_ALERT + 3)])
    for n in range(4):
        write(store, deliveries=[delivery(at=4000.0 + n)])
    kept = [d.at for d in store.alert("a1").deliveries]
    expected = [3000.0 + n for n in range(MAX_DELIVERIES_PER_ALERT + 3)] + [4000.0 + n for n in range(4)]
    assert kept == expected[-MAX_DELIVERIES_PER_ALERT:]


def test_a_delivery_for_an_unknown_occurrence_is_dropped(store):
    write(store, deliveries=[delivery("ghost")], notifications=[notification()])
    assert store.alert("ghost") is None
    assert store.counts() == {"alerts": 0, "notifications": 1, "groups": 0, "threads": 0, "sms": 0}
    write(store, alerts=[seen("ghost", at=5.0)])
    assert store.alert("ghost").deliveries == () and store.alert("ghost").updated_at == 5.0


def test_alerts_are_newest_first_by_first_received_then_id_and_filtered_by_exact_values(store):
    write(store, alerts=[
        seen("a", 100.0, severity="critical", integration="rc"),
        seen("b", 300.0, severity="warning", integration="rc"),
        seen("c", 200.0, status="resolved", severity="critical", integration="mail"),
        seen("d", 200.0, severity="warning", integration="mail"),
    ])
    write(store, alerts=[seen("a", 400.0, severity="critical", integration="rc")])  # seen again: stays in place
    assert [r.id for r in store.alerts()] == ["b", "d", "c", "a"]
    assert [r.id for r in store.alerts(limit=2)] == ["b", "d"]
    assert [r.id for r in store.alerts(status="firing")] == ["b", "d", "a"]
    assert [r.id for r in store.alerts(severity="critical")] == ["c", "a"]
    assert [r.id for r in store.alerts(integration="mail", severity="warning")] == ["d"]
    assert store.alerts(severity="Critical") == [] and store.alerts(status="resolved", integration="rc") == []
    assert store.alert("nope") is None


def test_resolved_alerts_can_be_listed_by_when_they_resolved(store):
    # A long outage that resolved just now comes before short blips that resolved earlier but began later.
    write(store, alerts=[seen("outage", 100.0), seen("blip", 500.0), seen("firing", 50.0)])
    write(store, alerts=[seen("blip", 600.0, status="resolved")])
    write(store, alerts=[seen("outage", 900.0, status="resolved")])
    assert [r.id for r in store.alerts(status="resolved")] == ["blip", "outage"]
    assert [r.id for r in store.alerts(status="resolved", newest_by="resolved_at")] == ["outage", "blip"]
    assert [r.id for r in store.alerts(newest_by="resolved_at")] == ["outage", "blip", "firing"]
    with pytest.raises(StoreError):
        store.alerts(newest_by="labels")


def test_notifications_are_newest_first_and_replaced_by_id(store):
    write(store, notifications=[notification("n1", 100.0), notification("n3", 200.0), notification("n2", 200.0)])
    write(store, notifications=[notification("n1", 150.0, {"ops": "failed", "pager": "refused"}, status_code=502)])
    assert [n.id for n in store.notifications()] == ["n3", "n2", "n1"]
    assert [n.id for n in store.notifications(limit=1)] == ["n3"]
    assert store.notifications()[2] == notification("n1", 150.0, {"ops": "failed", "pager": "refused"},
                                                    status_code=502)
    assert store.counts()["notifications"] == 3


def test_group_memory_is_replaced_by_hook_and_group_and_loaded_oldest_first(store):
    write(store, groups=[group("hook-a", b"\x00g1\xff", 100.0), group("hook-b", b"\x00g1\xff", 90.0),
                         group("hook-a", b"g2", 80.0)])
    write(store, groups=[group("hook-a", b"\x00g1\xff", 120.0, state="refused", status=None)])
    loaded = store.load_groups(finished_since=90.0)
    assert loaded == [group("hook-b", b"\x00g1\xff", 90.0),
                      group("hook-a", b"\x00g1\xff", 120.0, state="refused", status=None)]
    assert all(type(g.group_id) is bytes and type(g.dedup_key) is bytes for g in loaded)
    assert [g.finished_at for g in store.load_groups(0.0)] == [80.0, 90.0, 120.0]
    assert store.load_groups(121.0) == [] and store.counts()["groups"] == 3


def test_a_threads_first_message_is_kept_and_loaded_oldest_first_and_pruned_by_age(store):
    first = ThreadMessage("hook-a", "occ-1", "msg-first", 100.0)
    store.write(WriteBatch(threads=[first, ThreadMessage("hook-b", "occ-1", "msg-b", 90.0)]))
    store.write(WriteBatch(threads=[ThreadMessage("hook-a", "occ-1", "msg-later", 150.0),
                                    ThreadMessage("hook-a", "occ-2", "msg-2", 120.0)]))
    assert store.load_threads(0.0) == [ThreadMessage("hook-b", "occ-1", "msg-b", 90.0), first,
                                       ThreadMessage("hook-a", "occ-2", "msg-2", 120.0)]
    assert [t.message_id for t in store.load_threads(100.0)] == ["msg-first", "msg-2"]
    assert store.counts()["threads"] == 3
    store.prune(updated_before=110.0, max_alerts=10, groups_finished_before=0.0)
    assert [t.message_id for t in store.load_threads(0.0)] == ["msg-2"]


def test_prune_forgets_what_was_last_updated_before_the_time(store):
    write(store, alerts=[seen("old", 100.0), seen("kept", 100.0), seen("edge", 200.0)],
          deliveries=[delivery("old", 150.0), delivery("kept", 250.0)],
          notifications=[notification("n-old", 199.0), notification("n-edge", 200.0)],
          groups=[group("h", b"old", 49.0), group("h", b"edge", 50.0)])
    assert store.prune(updated_before=200.0, max_alerts=100, groups_finished_before=50.0) == 1
    assert sorted(r.id for r in store.alerts()) == ["edge", "kept"]
    assert [n.id for n in store.notifications()] == ["n-edge"]
    assert [g.group_id for g in store.load_groups(0.0)] == [b"edge"]
    write(store, alerts=[seen("old", 300.0)])  # the same occurrence again starts afresh: its deliveries went
    assert store.alert("old").deliveries == () and store.alert("old").first_received == 300.0


def test_prune_keeps_the_most_recently_updated_beyond_max_alerts(store):
    write(store, alerts=[seen("early-but-busy", 100.0), seen("b", 200.0), seen("c", 300.0), seen("d", 300.0)],
          deliveries=[delivery("early-but-busy", 400.0)],
          notifications=[notification(f"n{n}", 100.0 + n) for n in range(5)])
    assert store.prune(updated_before=0.0, max_alerts=2, groups_finished_before=0.0) == 2
    assert sorted(r.id for r in store.alerts()) == ["d", "early-but-busy"]  # c and d tie: the id decides
    assert [n.id for n in store.notifications()] == ["n4", "n3"]
    assert store.prune(updated_before=0.0, max_alerts=2, groups_finished_before=0.0) == 0
    assert store.prune(updated_before=0.0, max_alerts=0, groups_finished_before=0.0) == 2
    assert store.counts() == {"alerts": 0, "notifications": 0, "groups": 0, "threads": 0, "sms": 0}


def test_counts(store):
    assert store.counts() == {"alerts": 0, "notifications": 0, "groups": 0, "threads": 0, "sms": 0}
    write(store, alerts=[seen("a"), seen("b"), seen("a", 101.0)], notifications=[notification("n1")],
          groups=[group("h", b"1"), group("h", b"2"), group("h", b"1")])
    assert store.counts() == {"alerts": 2, "notifications": 1, "groups": 2, "threads": 0, "sms": 0}


def test_any_unicode_is_stored_and_labels_keep_lone_surrogates(store):
    hostile = {"emoji": "🔥 ünïcödé 日本", "lone": "x\ud800y", "key\udc80": "\udfff", "nul": "a\x00b"}
    write(store, alerts=[seen("u", alertname="Disk\ud83d", labels=hostile, annotations=hostile)],
          deliveries=[delivery("u", message_id="m\udc00")],
          notifications=[notification("n\ud800", destinations={"ops\ud800": "delivered"})],
          groups=[dataclasses.replace(group(), reason="bad \ud800")])
    record = store.alert("u")
    assert record.labels == hostile and record.annotations == hostile
    assert store.notifications()[0].destinations == {"ops\ud800": "delivered"}
    # Plain text columns: kept as sent in the process and in Redis (UTF-8 with surrogatepass), U+FFFD in SQLite (it
    # binds UTF-8).
    exact = not isinstance(store, SQLiteStore)
    assert record.alertname == ("Disk\ud83d" if exact else "Disk\ufffd")
    assert store.load_groups(0.0)[0].reason == ("bad \ud800" if exact else "bad \ufffd")


def test_a_write_that_fails_stores_nothing_of_its_batch(store):
    write(store, alerts=[seen("a", 100.0)], notifications=[notification("n0")])
    before = (store.alerts(), store.notifications(), store.load_groups(0.0), store.counts())
    unserialisable = notification("n2", destinations={"ops": object()})
    with pytest.raises(StoreError):
        write(store, alerts=[seen("a", 200.0, status="resolved"), seen("new", 200.0)],
              deliveries=[delivery("a", 201.0)], notifications=[notification("n1"), unserialisable],
              groups=[group()])
    assert (store.alerts(), store.notifications(), store.load_groups(0.0), store.counts()) == before
    write(store, alerts=[seen("new", 300.0)])  # the store is still usable
    assert store.counts()["alerts"] == 2


def test_a_closed_store_refuses_calls(store):
    store.close()
    with pytest.raises(StoreError):
        store.counts()
    with pytest.raises(StoreError):
        write(store, alerts=[seen()])


def test_open_store_picks_the_backend_by_url(tmp_path):
    memory = open_store("memory://")
    sqlite = open_store(f"sqlite:///{tmp_path}/s.sqlite3")
    assert isinstance(memory, MemoryStore) and memory.description == "memory://"
    assert isinstance(sqlite, SQLiteStore) and sqlite.description == f"sqlite:///{tmp_path}/s.sqlite3"
    assert (tmp_path / "s.sqlite3").is_file()
    sqlite.close()
    with pytest.raises(StoreError, match="unknown store URL scheme"):
        open_store("postgres://x")
    # redis:// and rediss://: opening connects to nothing (a Redis that does not answer yet is not an error here).
    from rcwebhook.store.redis import RedisStore

    shared = open_store("redis://:pw@127.0.0.1:1/2", prefix="other:", timeout_seconds=0.2)
    assert isinstance(shared, RedisStore) and shared.description == "redis://:<redacted>@127.0.0.1:1/2"
    assert (shared.prefix, shared.timeout_seconds) == ("other:", 0.2)
    assert open_store("rediss://cache.example:6380/0").description == "rediss://cache.example:6380/0"
    assert open_store("redis://127.0.0.1").prefix == "rcwebhook:"
    with pytest.raises(StoreError, match="^redis at 127.0.0.1:1: "):
        shared.counts()


# SMS (issue 11).

def test_an_sms_keeps_every_field_exactly(store):
    hostile = {"emoji": "🔥 日本", "lone": "x\ud800y", "nul": "a\x00b"}
    full = sms_message(
        "s-full", alerts=(sms_alert("a1", hostile), sms_alert("a2", {})), kind="alert", status=SMS_SENT,
        next_attempt_at=130.5, tier=2, attempts=3, check_silences=True, alertmanager_url="http://am:9093",
        body="[FIRING] DiskFull db1", segments=2, sid="SM123", twilio_status="queued", error_code=30003,
        reason="retried", sent_at=131.25, digest_id="d-1")
    plain = sms_message("s-plain", alerts=(SmsAlert("a3", "fp-a3", "Load", {}, {}),), status=SMS_FAILED,
                        error_code=None, sent_at=None)
    store.save_sms([full, plain])
    assert store.sms("s-full") == full and store.sms("s-plain") == plain
    assert type(store.sms("s-full").alerts) is tuple and store.sms("s-full").check_silences is True
    assert (store.sms("s-plain").error_code, store.sms("s-plain").sent_at) == (None, None)
    assert store.sms("nope") is None


def test_schedule_sms_adds_each_occurrence_once_per_recipient_and_kind(store):
    assert store.schedule_sms([sms_message("s1", ("a1", "a2"))], at=100.0) == [sms_message("s1", ("a1", "a2"))]
    # Partly paged already: only the new occurrence goes, in a message left with it alone.
    added = store.schedule_sms([sms_message("s2", ("a2", "a3"))], at=110.0)
    assert added == [sms_message("s2", ("a3",))] and store.sms("s2") == sms_message("s2", ("a3",))
    # Wholly paged already: not added at all.
    assert store.schedule_sms([sms_message("s3", ("a1", "a3"))], at=120.0) == []
    assert store.sms("s3") is None and store.counts()["sms"] == 2
    # Another recipient, or the resolved notice for the same recipient, is paged apart.
    added = store.schedule_sms([sms_message("s4", ("a1",), recipient=BOB),
                                sms_message("s5", ("a1", "a2"), kind="resolved")], at=130.0)
    assert [(m.id, alert_ids(m)) for m in added] == [("s4", ["a1"]), ("s5", ["a1", "a2"])]
    assert store.schedule_sms([sms_message("s6", ("a2",), kind="resolved")], at=140.0) == []
    # Within one call, and within one message, an occurrence goes once too.
    added = store.schedule_sms([sms_message("s7", ("a9",)), sms_message("s8", ("a9", "a10", "a10"))], at=150.0)
    assert [(m.id, alert_ids(m)) for m in added] == [("s7", ["a9"]), ("s8", ["a10"])]
    assert [alert_ids(store.sms(i)) for i in ("s7", "s8")] == [["a9"], ["a10"]]
    assert store.counts()["sms"] == 6


def test_schedule_sms_refuses_an_id_already_stored_and_keeps_nothing_of_the_call(store):
    store.schedule_sms([sms_message("s1", ("a1",))], at=100.0)
    with pytest.raises(StoreError):
        store.schedule_sms([sms_message("s2", ("a2",)), sms_message("s1", ("a3",))], at=110.0)
    assert store.sms("s2") is None and store.sms("s1") == sms_message("s1", ("a1",))
    added = store.schedule_sms([sms_message("s3", ("a2", "a3"))], at=120.0)  # neither pair was kept
    assert [alert_ids(m) for m in added] == [["a2", "a3"]] and store.counts()["sms"] == 2


@pytest.mark.parametrize("labels", [{"x": object()}, {"nan": float("nan")}, {"bytes": b"\x00"}])
def test_sms_labels_json_cannot_hold_are_refused_and_nothing_of_the_call_kept(store, labels):
    good, bad = sms_message("good", ("a1",)), sms_message("bad", alerts=(sms_alert("a2", labels),))
    with pytest.raises(StoreError):
        store.schedule_sms([good, bad], at=100.0)
    with pytest.raises(StoreError):
        store.save_sms([good, bad])
    annotated = dataclasses.replace(sms_alert("a3"), annotations=labels)
    with pytest.raises(StoreError):
        store.save_sms([sms_message("bad-annotations", alerts=(annotated,))])
    assert store.counts()["sms"] == 0
    assert [m.id for m in store.schedule_sms([good], at=110.0)] == ["good"]  # its pair was not kept either


def test_due_sms_are_open_ones_whose_time_came_earliest_first(store):
    store.save_sms([
        sms_message("b-pending", next_attempt_at=100.0), sms_message("a-pending", next_attempt_at=100.0),
        sms_message("held", status=SMS_HELD, next_attempt_at=50.0),
        sms_message("later", next_attempt_at=200.0),
        *(sms_message(f"final-{status}", status=status, next_attempt_at=10.0)
          for status in (SMS_SENT, SMS_DIGESTED, SMS_CANCELLED, SMS_FAILED, "opted_out")),
    ])
    assert [m.id for m in store.due_sms(100.0)] == ["held", "a-pending", "b-pending"]
    assert [m.id for m in store.due_sms(100.0, limit=2)] == ["held", "a-pending"]
    assert store.due_sms(49.9) == [] and store.due_sms(1000.0, limit=0) == []
    assert [m.id for m in store.due_sms(1000.0)] == ["held", "a-pending", "b-pending", "later"]
    store.save_sms([sms_message("held", status=SMS_SENT, next_attempt_at=50.0)])  # sent: no longer due
    assert [m.id for m in store.due_sms(100.0)] == ["a-pending", "b-pending"]


def test_open_sms_are_every_open_one_of_the_recipient(store):
    store.save_sms([
        sms_message("alice-late", next_attempt_at=300.0), sms_message("alice-held", status=SMS_HELD,
                                                                       next_attempt_at=200.0),
        sms_message("alice-sent", status=SMS_SENT), sms_message("bob", recipient=BOB, next_attempt_at=100.0),
    ])
    assert [m.id for m in store.open_sms()] == ["bob", "alice-held", "alice-late"]
    assert [m.id for m in store.open_sms(recipient=ALICE)] == ["alice-held", "alice-late"]
    assert [m.id for m in store.open_sms(recipient=BOB)] == ["bob"] and store.open_sms(recipient="+1") == []


def test_save_sms_replaces_a_message_and_what_it_names(store):
    store.schedule_sms([sms_message("s1", ("a1", "a2"))], at=100.0)
    sent = sms_message("s1", ("a2", "a3"), status=SMS_SENT, at=100.0, attempts=1, sid="SM1", sent_at=105.0)
    store.save_sms([dataclasses.replace(sent, updated_at=105.0)])
    assert store.sms("s1") == dataclasses.replace(sent, updated_at=105.0) and store.counts()["sms"] == 1
    assert store.sms_for_alert("a1") == [] and [m.id for m in store.sms_for_alert("a3")] == ["s1"]


def test_sms_by_sid_for_alert_and_recent(store):
    store.save_sms([
        sms_message("s-b", ("a1",), at=100.0, sid="SM-b"), sms_message("s-a", ("a1", "a2"), at=100.0),
        sms_message("s-old", ("a1",), at=50.0, status=SMS_DIGESTED, digest_id="digest"),
        sms_message("digest", ("a1", "a2"), kind="digest", at=300.0, status=SMS_SENT, sid="SM-d"),
        sms_message("other", ("a3",), at=200.0),
    ])
    assert store.sms_by_sid("SM-d").id == "digest" and store.sms_by_sid("SM-b").id == "s-b"
    assert store.sms_by_sid("SM-none") is None and store.sms_by_sid("") is None  # "" is no sid
    assert [m.id for m in store.sms_for_alert("a1")] == ["s-old", "s-a", "s-b", "digest"]
    assert [m.id for m in store.sms_for_alert("a2")] == ["s-a", "digest"] and store.sms_for_alert("zz") == []
    assert [m.id for m in store.recent_sms()] == ["digest", "other", "s-b", "s-a", "s-old"]
    assert [m.id for m in store.recent_sms(limit=3)] == ["digest", "other", "s-b"] and store.recent_sms(limit=0) == []


def test_sms_sent_times_are_those_sent_in_the_window(store):
    store.save_sms([
        sms_message("early", status=SMS_SENT, sent_at=99.0), sms_message("edge", status=SMS_SENT, sent_at=100.0),
        sms_message("late", status=SMS_SENT, sent_at=300.0), sms_message("mid", status=SMS_SENT, sent_at=200.0),
        sms_message("bob", status=SMS_SENT, sent_at=150.0, recipient=BOB),
        # Went out inside a digest (the digest's own sending counts), or not sent: not counted.
        sms_message("digested", status=SMS_DIGESTED, sent_at=250.0), sms_message("pending", sent_at=None),
        sms_message("failed", status=SMS_FAILED, sent_at=260.0),
    ])
    assert store.sms_sent_times(100.0) == [100.0, 150.0, 200.0, 300.0]
    assert store.sms_sent_times(100.0, recipient=ALICE) == [100.0, 200.0, 300.0]
    assert store.sms_sent_times(0.0, recipient=BOB) == [150.0] and store.sms_sent_times(301.0) == []


def test_a_twilio_status_never_moves_a_message_back(store):
    store.save_sms([sms_message("s1", status=SMS_SENT, sid="SM1", twilio_status="queued")])

    def record(status, at, error_code=None):
        message = store.record_sms_status("SM1", status, error_code, at)
        assert message == store.sms("s1")
        return message.twilio_status, message.error_code, message.updated_at

    assert record("sent", 110.0) == ("sent", None, 110.0)
    assert record("sending", 120.0) == ("sent", None, 110.0)  # arrived late: ranks lower
    assert record("delivered", 130.0) == ("delivered", None, 130.0)
    assert record("failed", 125.0, 30003) == ("delivered", None, 130.0)  # same rank, older: the later one stays
    # A final status is kept: Twilio sends one per message, so another final one is a replayed callback.
    assert record("undelivered", 140.0, 30005) == ("delivered", None, 130.0)
    assert record("read", 150.0) == ("read", None, 150.0)
    assert record("delivered", 160.0) == ("read", None, 150.0)
    # The worker saving its older copy of the message does not move it back either.
    store.save_sms([sms_message("s1", status=SMS_SENT, sid="SM1", twilio_status="queued", at=170.0)])
    assert (store.sms("s1").twilio_status, store.sms("s1").updated_at) == ("read", 170.0)
    assert store.record_sms_status("SM-unknown", "delivered", None, 180.0) is None


def test_a_status_callback_that_beats_the_send_is_applied_when_the_message_is_saved(store):
    assert store.record_sms_status("SM1", "delivered", None, 100.0) is None
    assert store.record_sms_status("SM1", "sent", None, 101.0) is None  # lower: the delivered stays
    store.save_sms([sms_message("s1", status=SMS_SENT, sid="SM1", twilio_status="queued", at=102.0)])
    assert store.sms("s1").twilio_status == "delivered" and store.sms_by_sid("SM1").id == "s1"
    store.record_sms_status("SM2", "undelivered", 30006, 100.0)
    store.schedule_sms([sms_message("s2", ("a2",), sid="SM2", twilio_status="queued")], at=102.0)
    assert (store.sms("s2").twilio_status, store.sms("s2").error_code) == ("undelivered", 30006)
    # Given as high as the one recorded, or higher: as given.
    store.record_sms_status("SM3", "sent", None, 100.0)
    store.save_sms([sms_message("s3", status=SMS_SENT, sid="SM3", twilio_status="failed", error_code=30008)])
    assert (store.sms("s3").twilio_status, store.sms("s3").error_code) == ("failed", 30008)
    store.record_sms_status("SM4", "failed", 30003, 100.0)
    store.save_sms([sms_message("s4", status=SMS_SENT, sid="SM4", twilio_status="delivered")])
    assert (store.sms("s4").twilio_status, store.sms("s4").error_code) == ("delivered", None)
    # A message without a sid never takes a status (an empty sid is refused as no sid).
    assert store.record_sms_status("", "delivered", None, 100.0) is None
    store.save_sms([sms_message("no-sid", twilio_status="")])
    assert store.sms("no-sid").twilio_status == ""


def test_occurrences_seen_resolved_are_remembered_from_the_first_time(store):
    assert store.resolved_among(["a1"]) == set()
    store.mark_resolved(["a1", "a2"], at=100.0)
    store.mark_resolved(["a2", "a3", "a3"], at=200.0)
    assert store.resolved_among(["a1", "a3", "a4", "a1"]) == {"a1", "a3"} and store.resolved_among([]) == set()
    store.prune(updated_before=150.0, max_alerts=100, groups_finished_before=0.0)
    assert store.resolved_among(["a1", "a2", "a3"]) == {"a3"}  # a2 was first seen resolved at 100


def test_opt_outs_are_set_lifted_and_kept_by_prune(store):
    assert store.opt_outs() == {}
    store.set_opt_out(ALICE, 100.0)
    store.set_opt_out(BOB, 200.0)
    store.set_opt_out(ALICE, 300.0)  # refused again when tried after the wait: the wait starts anew
    assert store.opt_outs() == {ALICE: 300.0, BOB: 200.0}
    store.set_opt_out(ALICE, None)
    store.set_opt_out("+15559999999", None)  # not opted out: nothing to lift
    store.prune(updated_before=1e12, max_alerts=0, groups_finished_before=1e12)
    assert store.opt_outs() == {BOB: 200.0}


def test_prune_forgets_final_sms_by_age_and_beyond_max_alerts_but_never_open_ones(store):
    store.save_sms([
        sms_message("old-pending", at=10.0), sms_message("old-held", status=SMS_HELD, at=10.0),
        sms_message("old-sent", ("a-old",), status=SMS_SENT, at=10.0, sid="SM-old"),
        sms_message("edge", status=SMS_FAILED, at=200.0), sms_message("c", status=SMS_SENT, at=300.0),
        sms_message("b", status=SMS_CANCELLED, at=300.0), sms_message("newest", status=SMS_SENT, at=400.0,
                                                                       sid="SM-kept"),
    ])
    assert store.prune(updated_before=200.0, max_alerts=100, groups_finished_before=0.0) == 0  # alerts only
    assert sorted(m.id for m in store.recent_sms()) == ["b", "c", "edge", "newest", "old-held", "old-pending"]
    assert store.sms_for_alert("a-old") == [] and store.counts()["sms"] == 6
    store.prune(updated_before=0.0, max_alerts=2, groups_finished_before=0.0)  # b and c tie: the id decides
    assert sorted(m.id for m in store.recent_sms()) == ["c", "newest", "old-held", "old-pending"]
    store.prune(updated_before=1e12, max_alerts=0, groups_finished_before=0.0)
    assert sorted(m.id for m in store.recent_sms()) == ["old-held", "old-pending"]


def test_prune_forgets_paged_pairs_and_statuses_of_unknown_sids_by_age(store):
    store.schedule_sms([sms_message("s-old", ("a-old",))], at=100.0)
    store.schedule_sms([sms_message("s-new", ("a-new",))], at=200.0)
    store.record_sms_status("SM-unknown-old", "delivered", None, 100.0)
    store.record_sms_status("SM-unknown-new", "delivered", None, 200.0)
    store.save_sms([sms_message("known", status=SMS_SENT, sid="SM-known", twilio_status="queued", at=300.0)])
    store.record_sms_status("SM-known", "delivered", None, 100.0)
    store.prune(updated_before=200.0, max_alerts=100, groups_finished_before=0.0)
    added = store.schedule_sms([sms_message("again", ("a-old", "a-new"))], at=300.0)
    assert [alert_ids(m) for m in added] == [["a-old"]]
    store.save_sms([sms_message(f"late-{n}", status=SMS_SENT, sid=sid, twilio_status="queued", at=300.0)
                    for n, sid in enumerate(("SM-unknown-old", "SM-unknown-new"))])
    assert [store.sms(f"late-{n}").twilio_status for n in range(2)] == ["queued", "delivered"]
    # A known sid's status is kept however old: a stale copy saved again does not lower it.
    store.save_sms([sms_message("known", status=SMS_SENT, sid="SM-known", twilio_status="queued", at=310.0)])
    assert store.sms("known").twilio_status == "delivered"


def test_threads_scheduling_overlapping_occurrences_add_each_once(store):
    threads_count, rounds = 8, 30
    barrier, failures, added = threading.Barrier(threads_count), [], []

    def scheduler(number):
        try:
            barrier.wait(timeout=30)
            order = range(rounds) if number % 2 else reversed(range(rounds))
            for n in order:  # half the threads walk the other way: they meet in the middle
                messages = [sms_message(f"t{number}-{n}-{recipient}", [f"a{n + k}" for k in range(3)],
                                        recipient=recipient) for recipient in (ALICE, BOB)]
                added.extend(store.schedule_sms(messages, at=float(n)))
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=scheduler, args=(number,)) for number in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    stored = store.recent_sms(limit=10_000)
    assert sorted(stored, key=lambda m: m.id) == sorted(added, key=lambda m: m.id)
    pairs = [(m.recipient, alert.id) for m in stored for alert in m.alerts]
    expected = {(recipient, f"a{n}") for recipient in (ALICE, BOB) for n in range(rounds + 2)}
    assert len(pairs) == len(set(pairs)) and set(pairs) == expected


# What only the SQLite file must do.

def test_a_restart_sees_everything_written(tmp_path):
    path = str(tmp_path / "state.sqlite3")
    first = SQLiteStore(path)
    write(first, alerts=[seen(labels={"k": "v\ud800"})], deliveries=[delivery()], notifications=[notification()],
          groups=[group()])
    expected = (first.alerts(), first.notifications(), first.load_groups(0.0), first.counts())
    first.close()
    second = SQLiteStore(path)
    assert (second.alerts(), second.notifications(), second.load_groups(0.0), second.counts()) == expected
    second.close()


def test_the_file_is_in_wal_mode(tmp_path):
    SQLiteStore(str(tmp_path / "state.sqlite3")).close()
    with sqlite3.connect(tmp_path / "state.sqlite3") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("PRAGMA user_version").fetchone()[0] == 1


def test_readers_see_whole_batches_while_one_thread_writes(tmp_path):
    store = SQLiteStore(str(tmp_path / "state.sqlite3"))
    finished, failures, observed = threading.Event(), [], []

    def writer():
        try:
            for n in range(150):
                write(store, alerts=[seen(f"a{n}", n)], deliveries=[delivery(f"a{n}", n + 0.5)],
                      notifications=[notification(f"n{n}", n)])
        except BaseException as error:
            failures.append(error)
        finally:
            finished.set()

    def reader():
        try:
            counted = []
            while True:
                done = finished.is_set()
                assert all(len(record.deliveries) == 1 for record in store.alerts(limit=1000))
                counts = store.counts()
                assert counts["alerts"] == counts["notifications"]  # one snapshot: a batch is all in or all out
                counted.append(counts["alerts"])
                if done:
                    break
            assert counted == sorted(counted)
            observed.append(counted)
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=reader) for _ in range(2)] + [threading.Thread(target=writer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert failures == [] and len(observed) == 2 and all(counted[-1] == 150 for counted in observed)
    store.close()


def test_a_busy_file_fails_the_write_quickly_instead_of_hanging(tmp_path):
    path = tmp_path / "state.sqlite3"
    store = SQLiteStore(str(path))
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's writer holds the lock
    started = time.monotonic()
    with pytest.raises(StoreError, match="locked"):
        write(store, alerts=[seen()])
    assert 0.5 <= time.monotonic() - started < 3.0  # BUSY_TIMEOUT_SECONDS: it waits a moment, not forever
    other.execute("ROLLBACK")
    write(store, alerts=[seen()])
    assert store.counts()["alerts"] == 1
    other.close()
    store.close()


def test_a_missing_directory_is_an_error_naming_the_path(tmp_path):
    path = tmp_path / "missing" / "state.sqlite3"
    with pytest.raises(StoreError) as raised:
        SQLiteStore(str(path))
    assert str(raised.value) == f"sqlite:///{path}: unable to open database file"
    assert not (tmp_path / "missing").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to a read-only directory: see the two tests below")
def test_a_read_only_directory_is_an_error(tmp_path):
    directory = tmp_path / "ro"
    directory.mkdir(mode=0o500)
    try:
        with pytest.raises(StoreError, match=str(directory)):
            SQLiteStore(str(directory / "state.sqlite3"))
    finally:
        directory.chmod(0o700)


@pytest.mark.parametrize("where", ["a directory", "under /proc"])
def test_a_path_that_cannot_hold_a_database_is_an_error(tmp_path, where):
    path = str(tmp_path) if where == "a directory" else f"/proc/{os.getpid()}/state.sqlite3"
    with pytest.raises(StoreError, match=f"^sqlite:///{path}: "):
        SQLiteStore(path)


def test_a_file_that_is_not_a_database_is_an_error(tmp_path):
    path = tmp_path / "state.sqlite3"
    path.write_bytes(b"this is not SQLite\x00\xff" * 500)
    with pytest.raises(StoreError, match="file is not a database"):
        SQLiteStore(str(path))
    assert path.read_bytes() == b"this is not SQLite\x00\xff" * 500


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_database_file_deleted_or_replaced_under_the_store_fails_its_writes(tmp_path, how):
    path = tmp_path / "state.sqlite3"
    store = SQLiteStore(str(path))
    write(store, alerts=[seen()])
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"state.sqlite3{suffix}").unlink(missing_ok=True)
    if how == "replaced":
        SQLiteStore(str(path)).close()
    with pytest.raises(StoreError, match="was deleted or replaced"):
        write(store, alerts=[seen("a2")])
    failures = []  # a thread opening its first connection must not create (or use) a new file either
    thread = threading.Thread(target=lambda: failures.extend(_raised(store.counts)))
    thread.start()
    thread.join()
    assert [type(error) for error in failures] == [StoreError]
    assert path.exists() == (how == "replaced")
    store.close()


def _raised(call):
    try:
        call()
    except Exception as error:
        return [error]
    return []


def test_a_forked_process_opens_its_own_connection(tmp_path):
    store = SQLiteStore(str(tmp_path / "state.sqlite3"))
    write(store, alerts=[seen("parent")])
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports by its exit status only
        code = 1
        try:
            write(store, alerts=[seen("child")])
            code = 0 if store.counts()["alerts"] == 2 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    write(store, alerts=[seen("parent-again")])
    assert sorted(r.id for r in store.alerts()) == ["child", "parent", "parent-again"]
    store.close()


# SMS: what only the SQLite file must do.

def test_sms_state_survives_a_restart(tmp_path):
    path = str(tmp_path / "state.sqlite3")
    first = SQLiteStore(path)
    first.schedule_sms([sms_message("s1", ("a1", "a2"))], at=100.0)
    first.record_sms_status("SM-early", "delivered", None, 100.0)
    first.mark_resolved(["a1"], at=100.0)
    first.set_opt_out(ALICE, 100.0)
    first.close()
    second = SQLiteStore(path)
    assert second.sms("s1") == sms_message("s1", ("a1", "a2")) and second.opt_outs() == {ALICE: 100.0}
    assert second.resolved_among(["a1", "a2"]) == {"a1"} and [m.id for m in second.sms_for_alert("a2")] == ["s1"]
    assert second.schedule_sms([sms_message("s2", ("a2",))], at=110.0) == []  # paged before the restart
    second.save_sms([sms_message("s3", status=SMS_SENT, sid="SM-early", twilio_status="queued")])
    assert second.sms("s3").twilio_status == "delivered"
    second.close()


def test_a_state_file_from_before_sms_gains_its_tables_and_keeps_its_journal(tmp_path):
    path = tmp_path / "state.sqlite3"
    old = SQLiteStore(str(path))
    write(old, alerts=[seen("kept")], notifications=[notification()])
    old.close()
    with sqlite3.connect(path) as connection:  # the previous release's file: no SMS tables
        tables = [name for (name,) in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'sms%'")]
        assert len(tables) == 6
        for table in tables:
            connection.execute(f"DROP TABLE {table}")
    first, second = SQLiteStore(str(path)), SQLiteStore(str(path))  # opened twice, at once
    assert first.alert("kept") is not None and second.counts() == {
        "alerts": 1, "notifications": 1, "groups": 0, "threads": 0, "sms": 0}
    first.schedule_sms([sms_message("s1")], at=100.0)
    assert second.sms("s1") == sms_message("s1") and second.schedule_sms([sms_message("s2")], at=100.0) == []
    first.close()
    second.close()
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == 1
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_a_pruned_message_leaves_nothing_of_it_behind(tmp_path):
    store = SQLiteStore(str(tmp_path / "state.sqlite3"))
    store.save_sms([sms_message("gone", ("a1", "a2"), status=SMS_SENT, at=10.0),
                    sms_message("kept", ("a2",), status=SMS_SENT, at=300.0)])
    store.prune(updated_before=200.0, max_alerts=100, groups_finished_before=0.0)
    store.close()
    with sqlite3.connect(tmp_path / "state.sqlite3") as connection:
        assert connection.execute("SELECT alert_id, sms_id FROM sms_alerts").fetchall() == [("a2", "kept")]


def test_sms_writers_on_many_threads_share_one_connection(tmp_path):
    path = tmp_path / "state.sqlite3"
    store = SQLiteStore(str(path))
    threads_count = 20
    written, release, failures = threading.Barrier(threads_count + 1), threading.Barrier(threads_count + 1), []

    def writer(number):
        try:
            store.schedule_sms([sms_message(f"s{number}", (f"a{number}",))], at=100.0)
        except BaseException as error:
            failures.append(error)
        finally:  # alive until counted: a connection of its own would still be open
            written.wait(timeout=30)
            release.wait(timeout=30)

    threads = [threading.Thread(target=writer, args=(number,)) for number in range(threads_count)]
    for thread in threads:
        thread.start()
    written.wait(timeout=30)
    open_on_the_file = [fd for fd in os.listdir("/proc/self/fd")
                        if _readlink(f"/proc/self/fd/{fd}") == str(path)]
    release.wait(timeout=30)
    for thread in threads:
        thread.join(timeout=30)
    assert failures == [] and store.counts()["sms"] == threads_count
    assert len(open_on_the_file) <= 2  # the constructor's connection and the SMS writers' one
    store.close()


def _readlink(path):
    try:
        return os.readlink(path)
    except OSError:
        return None


def test_an_sms_write_waits_longer_for_the_lock_than_the_journal(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT_SECONDS", 0.2)
    monkeypatch.setattr(sqlite_module, "SMS_BUSY_TIMEOUT_SECONDS", 1.2)
    path = tmp_path / "state.sqlite3"
    store = SQLiteStore(str(path))
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's writer holds the lock
    started = time.monotonic()
    with pytest.raises(StoreError, match="locked"):
        write(store, alerts=[seen()])
    journal_waited = time.monotonic() - started
    started = time.monotonic()
    with pytest.raises(StoreError, match="locked"):
        store.schedule_sms([sms_message()], at=100.0)
    sms_waited = time.monotonic() - started
    assert journal_waited < 1.0 <= sms_waited < 5.0
    other.execute("ROLLBACK")
    assert [m.id for m in store.schedule_sms([sms_message()], at=100.0)] == ["s1"]  # the failed one kept nothing
    other.close()
    store.close()


# Opens the store, says so, waits for the word, then schedules overlapping occurrences for two recipients (walking
# them forwards or backwards) and prints how many pairs it added.
SCHEDULER = textwrap.dedent("""
    import sys
    from rcwebhook.store import SmsAlert, SmsMessage
    from rcwebhook.store.sqlite import SQLiteStore

    path, name, rounds, backwards = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "backwards"
    store = SQLiteStore(path)
    print("ready", flush=True)
    sys.stdin.readline()
    added = 0
    for n in reversed(range(rounds)) if backwards else range(rounds):
        messages = [SmsMessage(id=f"{name}-{n}-{recipient}", destination="oncall", recipient=recipient, kind="alert",
                               alerts=tuple(SmsAlert(f"a{n + k}", "fp", "DiskFull", {}, {}) for k in range(3)),
                               status="pending", created_at=n, due_at=n, next_attempt_at=n, updated_at=n)
                    for recipient in ("+15550000001", "+15550000002")]
        added += sum(len(message.alerts) for message in store.schedule_sms(messages, float(n)))
    store.close()
    print(added, flush=True)
""")


def test_two_processes_scheduling_the_same_occurrences_add_each_once(tmp_path):
    path, rounds = tmp_path / "state.sqlite3", 150
    SQLiteStore(str(path)).close()
    children = [subprocess.Popen([sys.executable, "-c", SCHEDULER, str(path), name, str(rounds), name], cwd=REPO,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for name in ("forwards", "backwards")]  # they meet in the middle
    try:
        for child in children:
            assert child.stdout.readline() == "ready\n", child.communicate(timeout=30)[1]
        for child in children:  # both have the file open: go at once
            child.stdin.write("go\n")
            child.stdin.flush()
        outputs = [child.communicate(timeout=60) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert [child.returncode for child in children] == [0, 0], [error for _, error in outputs]
    store = SQLiteStore(str(path))
    pairs = [(m.recipient, alert.id) for m in store.recent_sms(limit=10_000) for alert in m.alerts]
    store.close()
    assert len(pairs) == len(set(pairs)) == 2 * (rounds + 2)
    assert sum(int(out) for out, _ in outputs) == len(pairs)


def test_an_alert_in_an_sms_written_by_a_later_release_loses_only_what_this_one_does_not_know(tmp_path):
    path = tmp_path / "state.sqlite3"
    store = SQLiteStore(str(path))
    store.save_sms([sms_message("s1", ("a1",))])
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE sms SET alerts = json_set(alerts, '$[0].added_later', 'x')")
    assert store.sms("s1") == sms_message("s1", ("a1",))
    store.close()


# What only Redis must do.

def raw_client(server, db=0):
    import redis

    return redis.Redis(host="127.0.0.1", port=server.port, db=db, password=server.password, socket_timeout=10)


def dump(server) -> dict[str, list[str]]:
    """Every key of the server's database with everything its value holds, as text."""
    client = raw_client(server)
    found = {}
    try:
        for key in client.scan_iter(count=1000):
            kind = client.type(key).decode()
            if kind == "string":
                values = [client.get(key)]
            elif kind == "hash":
                values = [item for pair in client.hgetall(key).items() for item in pair]
            elif kind == "list":
                values = client.lrange(key, 0, -1)
            elif kind == "set":
                values = list(client.smembers(key))
            elif kind == "zset":
                values = [str(item) for pair in client.zrange(key, 0, -1, withscores=True) for item in pair]
            else:
                raise AssertionError(f"{key!r} is a {kind}")
            found[key.decode("utf-8", "surrogatepass")] = [
                value.decode("utf-8", "surrogatepass") if isinstance(value, bytes) else value for value in values]
    finally:
        client.close()
    return found


def fill(store, hook="hook-a"):
    """A record of every kind the store keeps."""
    store.write(WriteBatch(
        alerts=[seen("a1", 100.0), seen("a2", 110.0, status="resolved", severity="warning", integration="mail")],
        deliveries=[delivery("a1", 101.0, message_id="m-1")], notifications=[notification("n1", 100.0)],
        groups=[group(hook, b"\x00g1", 100.0)], threads=[ThreadMessage(hook, "a1", "msg-1", 100.0)]))
    store.schedule_sms([sms_message("s1", ("a1",))], at=100.0)
    store.save_sms([sms_message("s2", ("a2",), status=SMS_SENT, sid="SM-2", twilio_status="queued", sent_at=101.0)])
    store.record_sms_status("SM-2", "delivered", None, 102.0)
    store.record_sms_status("SM-unknown", "sent", None, 102.0)
    store.mark_resolved(["a2"], at=110.0)
    store.set_opt_out(BOB, 100.0)


def test_every_key_is_under_the_prefix_in_one_of_two_hash_tags(redis_servers):
    server = redis_servers()
    store = redis_store(server, prefix="relay-one:")
    fill(store)
    keys = dump(server)
    assert len(keys) > 20
    outside = [key for key in keys if not key.startswith(("relay-one:{journal}:", "relay-one:{sms}:"))]
    assert outside == []  # one write() (and one prune step) is one slot; every SMS call is the other
    store.prune(updated_before=1e12, max_alerts=0, groups_finished_before=1e12)
    left = set(dump(server))  # what prune never forgets: open messages (and what names them), opt-outs
    assert left == {"relay-one:{sms}:m:s1", "relay-one:{sms}:ma:s1", "relay-one:{sms}:alert:a1",
                    "relay-one:{sms}:sms:updated", "relay-one:{sms}:sms:open", "relay-one:{sms}:opt_outs"}
    store.close()


def test_two_prefixes_on_one_redis_do_not_see_each_other(redis_servers):
    server = redis_servers()
    one, two = redis_store(server, prefix="relay-one:"), redis_store(server, prefix="relay-two:")
    fill(one)
    assert two.counts() == {"alerts": 0, "notifications": 0, "groups": 0, "threads": 0, "sms": 0}
    assert (two.alerts(), two.notifications(), two.load_groups(0.0), two.load_threads(0.0)) == ([], [], [], [])
    assert (two.open_sms(), two.recent_sms(), two.sms_by_sid("SM-2"), two.opt_outs()) == ([], [], None, {})
    assert two.resolved_among(["a2"]) == set() and two.sms_sent_times(0.0) == []
    assert [m.id for m in two.schedule_sms([sms_message("s1", ("a1",))], at=200.0)] == ["s1"]  # not paged there
    write(two, alerts=[seen("a1", 500.0, status="resolved")])
    before = (one.alerts(), one.counts(), one.sms("s1"))
    two.prune(updated_before=1e12, max_alerts=0, groups_finished_before=1e12)
    assert (one.alerts(), one.counts(), one.sms("s1")) == before and one.alert("a1").status == "firing"
    one.close()
    two.close()


def test_no_key_or_value_holds_a_hook_url_or_its_token(redis_servers):
    from rcwebhook.dispatcher import hook_key

    url = "https://chat.example.com/hooks/6650c1d2e3f4a5b6/Zk9TOKENsecret8Qp2"
    server = redis_servers()
    store = redis_store(server)
    fill(store, hook=hook_key(url))
    store.write(WriteBatch(groups=[group(hook_key(url), b"g2", 120.0, state="refused", status=None)],
                           threads=[ThreadMessage(hook_key(url), "a2", "msg-2", 120.0)]))
    text = "\n".join(f"{key}\n" + "\n".join(map(str, values)) for key, values in dump(server).items())
    assert hook_key(url) in text  # the digest names the hook
    for secret in (url, "Zk9TOKENsecret8Qp2", "6650c1d2e3f4a5b6", "chat.example.com", "hooks/"):
        assert secret not in text
    store.close()


def test_a_hung_redis_costs_each_call_its_timeout_and_no_more(redis_servers):
    server = redis_servers()
    store = redis_store(server, timeout_seconds=0.5)
    fill(store)
    calls = {
        "counts": store.counts, "write": lambda: write(store, alerts=[seen("a3", 300.0)]),
        "status page": lambda: store.alerts(status="firing", limit=200), "alert": lambda: store.alert("a1"),
        "schedule_sms": lambda: store.schedule_sms([sms_message("s3", ("a3",))], at=300.0),
        "due_sms": lambda: store.due_sms(1e12), "mark_resolved": lambda: store.mark_resolved(["a1"], 300.0),
        "prune": lambda: store.prune(updated_before=0.0, max_alerts=100, groups_finished_before=0.0),
        "a new store's first call": lambda: redis_store(server, timeout_seconds=0.5).counts(),
    }
    server.freeze()  # SIGSTOP: the port still accepts connections, nothing answers
    timings = {}
    try:
        for name, call in calls.items():
            started = time.monotonic()
            with pytest.raises(StoreError, match=rf"^redis at 127\.0\.0\.1:{server.port}: no answer within 0\.5 s$"):
                call()
            timings[name] = time.monotonic() - started
    finally:
        server.thaw()
    print(f"calls to a frozen Redis raised after: { {name: f'{t:.3f} s' for name, t in timings.items()} }")
    assert all(0.45 <= elapsed < 1.0 for elapsed in timings.values()), timings
    # It answers again: the same store works without a restart (a call that timed out may have been applied).
    assert store.alert("a1").deliveries[0].message_id == "m-1"


def test_a_stopped_redis_fails_calls_at_once_and_a_new_one_is_used_when_it_comes(redis_servers):
    server = redis_servers()
    store = redis_store(server)
    fill(store)
    server.stop()
    started = time.monotonic()
    with pytest.raises(StoreError, match=rf"^redis at 127\.0\.0\.1:{server.port}: .*refused"):
        store.counts()
    with pytest.raises(StoreError):
        write(store, alerts=[seen("a3")])
    assert time.monotonic() - started < 0.5
    server.start()  # a new, empty Redis on the same port: no data, and none of the store's scripts cached
    write(store, alerts=[seen("a3", 300.0)])
    assert [r.id for r in store.alerts()] == ["a3"] and store.counts()["alerts"] == 1
    assert [m.id for m in store.schedule_sms([sms_message("s9", ("a3",))], at=300.0)] == ["s9"]
    store.close()


def test_a_password_in_the_url_works_and_is_never_shown(redis_servers):
    from urllib.parse import quote

    from rcwebhook.store.redis import RedisStore

    password = "s3cr#t/pa:ss@word"
    server = redis_servers(password=password)
    store = redis_store(server)
    fill(store)
    assert store.alert("a1").deliveries[0].message_id == "m-1" and store.counts()["sms"] == 2
    assert store.description == f"redis://:<redacted>@127.0.0.1:{server.port}/0"
    assert open_store(server.url).description == store.description
    messages = [store.description, repr(store.description)]
    for url in (server.url_with("wrong-" + password), server.url_with(None)):
        with pytest.raises(StoreError) as refused:
            RedisStore(url, prefix="x:").counts()
        messages.append(str(refused.value))
    assert "authentication refused: invalid username-password pair" in messages[2]
    assert "authentication refused: Authentication required" in messages[3]
    server.freeze()
    try:
        with pytest.raises(StoreError) as hung:
            store.counts()
        messages.append(str(hung.value))
    finally:
        server.thaw()
    server.stop()
    with pytest.raises(StoreError) as stopped:
        store.counts()
    messages.append(str(stopped.value))
    for message in messages:
        for shown in (password, quote(password, safe=""), "s3cr", "wrong-"):
            assert shown not in message, message
    store.close()


@pytest.mark.parametrize("url", [
    "redis://:hunter2@/0", "redis://:hunter2@cache:port/0", "redis://:hunter2@cache/db",
    "redis://:hunter2@cache/0?unknown_option=1", "redis://:hunter2@cache/0?socket_timeout=soon",
])
def test_a_redis_url_that_cannot_be_used_is_refused_without_showing_it(url):
    with pytest.raises(StoreError) as refused:
        open_store(url)
    assert "hunter2" not in str(refused.value)


def test_a_key_prefix_with_braces_is_refused():
    with pytest.raises(StoreError, match="braces"):
        open_store("redis://cache:6379/0", prefix="relay{1}:")


def test_the_url_cannot_turn_longer_timeouts_or_retrying_back_on():
    store = open_store("redis://cache:6379/0?socket_timeout=30&socket_connect_timeout=30&health_check_interval=5"
                       "&retry_on_timeout=yes", timeout_seconds=0.3)
    options = store._pool.connection_kwargs
    assert options["socket_timeout"] == options["socket_connect_timeout"] == 0.3
    assert options["health_check_interval"] == 0 and options["retry_on_timeout"] is False
    assert options["retry"].get_retries() == 0
    connection = store._pool.make_connection()
    assert connection.retry.get_retries() == 0 and connection.retry_on_error == []


# Twilio's statuses as a callback may bring them: every known one, none yet, and one Twilio could add later.
STATUS_VARIETY = (*TWILIO_STATUS_RANK, "", "scheduled-by-a-later-twilio")


def test_redis_ranks_twilio_statuses_exactly_as_the_memory_store(redis_server):
    """The ranking is ported into Lua: every pair of statuses, in both time orders and at the same time, before and
    after the message is saved, gives what memory.moves_forward/supersedes/with_recorded_status give."""
    stores = (MemoryStore(), redis_store(redis_server))
    case = 0
    for held in ("", "sent"):
        for first in STATUS_VARIETY:
            for second in STATUS_VARIETY:
                for later in (-1.0, 0.0, 1.0):
                    for saved_first in (True, False):
                        case += 1
                        message = sms_message(f"s{case}", status=SMS_SENT, sid=f"SM{case}", twilio_status=held,
                                              error_code=30001 if held else None)
                        outcomes = []
                        for store in stores:
                            if saved_first:
                                store.save_sms([message])
                            answers = (store.record_sms_status(f"SM{case}", first, 30003, 100.0),
                                       store.record_sms_status(f"SM{case}", second, None, 100.0 + later))
                            if not saved_first:
                                store.save_sms([message])
                            outcomes.append((answers, store.sms(message.id)))
                        assert outcomes[0] == outcomes[1], (held, first, second, later, saved_first)
    assert case == 2 * len(STATUS_VARIETY) ** 2 * 3 * 2
    stores[1].close()


def test_a_prune_longer_than_one_script_forgets_what_memory_forgets(redis_server, monkeypatch):
    from rcwebhook.store import redis as redis_module

    monkeypatch.setattr(redis_module, "PRUNE_BATCH", 3)
    stores = (MemoryStore(), redis_store(redis_server))
    seen_after = []
    for store in stores:
        write(store, alerts=[seen(f"a{n}", 100.0 + n, status="resolved" if n % 4 == 0 else "firing")
                             for n in range(20)],
              deliveries=[delivery(f"a{n}", 100.0 + n + (n % 5) * 7) for n in range(20)],
              notifications=[notification(f"n{n}", 100.0 + n) for n in range(20)],
              groups=[group("h", bytes([n]), 100.0 + n) for n in range(20)])
        store.write(WriteBatch(threads=[ThreadMessage("h", f"a{n}", f"m{n}", 100.0 + n) for n in range(20)]))
        store.save_sms([sms_message(f"s{n:02}", (f"a{n}",), status=SMS_PENDING if n % 3 == 0 else SMS_SENT,
                                    at=100.0 + n, sid=f"SM{n}") for n in range(20)])
        store.schedule_sms([sms_message(f"p{n}", (f"a{n}",), recipient=BOB) for n in range(20)], at=100.0)
        for n in range(20):
            store.record_sms_status(f"SM-gone-{n}", "delivered", None, 100.0 + n)
        store.mark_resolved([f"a{n}" for n in range(20)], at=105.0)
        gone = store.prune(updated_before=110.0, max_alerts=6, groups_finished_before=112.0)
        seen_after.append((
            gone, store.alerts(limit=100), store.notifications(), store.load_groups(0.0), store.load_threads(0.0),
            store.recent_sms(limit=100), store.counts(), store.resolved_among([f"a{n}" for n in range(20)]),
            [m.id for m in store.schedule_sms([sms_message("again", [f"a{n}" for n in range(20)])], at=200.0)],
        ))
    assert seen_after[0] == seen_after[1]
    assert seen_after[1][0] == 14 and seen_after[1][6]["alerts"] == 6
    stores[1].close()


# Opens the Redis store, says so, waits for the word, then schedules overlapping occurrences for two recipients
# (walking them forwards or backwards) and prints how many pairs it added.
REDIS_SCHEDULER = textwrap.dedent("""
    import sys
    from rcwebhook.store import SmsAlert, SmsMessage
    from rcwebhook.store.redis import RedisStore

    url, prefix, name, rounds, backwards = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "backwards"
    store = RedisStore(url, prefix=prefix, timeout_seconds=5)
    store.counts()
    print("ready", flush=True)
    sys.stdin.readline()
    added = 0
    for n in reversed(range(rounds)) if backwards else range(rounds):
        messages = [SmsMessage(id=f"{name}-{n}-{recipient}", destination="oncall", recipient=recipient, kind="alert",
                               alerts=tuple(SmsAlert(f"a{n + k}", "fp", "DiskFull", {}, {}) for k in range(3)),
                               status="pending", created_at=n, due_at=n, next_attempt_at=n, updated_at=n)
                    for recipient in ("+15550000001", "+15550000002")]
        added += sum(len(message.alerts) for message in store.schedule_sms(messages, float(n)))
    store.close()
    print(added, flush=True)
""")


def test_two_processes_scheduling_the_same_occurrences_on_redis_add_each_once(redis_server):
    prefix, rounds = f"test-{uuid.uuid4().hex[:12]}:", 300
    children = [subprocess.Popen([sys.executable, "-c", REDIS_SCHEDULER, redis_server.url, prefix, name, str(rounds),
                                  name], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
                for name in ("forwards", "backwards")]  # they meet in the middle
    try:
        for child in children:
            assert child.stdout.readline() == "ready\n", child.communicate(timeout=30)[1]
        for child in children:  # both are connected: go at once
            child.stdin.write("go\n")
            child.stdin.flush()
        outputs = [child.communicate(timeout=60) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert [child.returncode for child in children] == [0, 0], [error for _, error in outputs]
    store = redis_store(redis_server, prefix=prefix)
    pairs = [(m.recipient, alert.id) for m in store.recent_sms(limit=10_000) for alert in m.alerts]
    store.close()
    assert len(pairs) == len(set(pairs)) == 2 * (rounds + 2)
    assert sum(int(out) for out, _ in outputs) == len(pairs)
    assert all(int(out) > 0 for out, _ in outputs)  # both took part


def test_a_forked_process_opens_connections_of_its_own(redis_server):
    store = redis_store(redis_server)
    write(store, alerts=[seen("parent")])
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports by its exit status only
        code = 1
        try:
            write(store, alerts=[seen("child")])
            code = 0 if store.counts()["alerts"] == 2 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    write(store, alerts=[seen("parent-again")])
    assert sorted(r.id for r in store.alerts()) == ["child", "parent", "parent-again"]
    store.close()


def test_a_relay_without_redis_never_imports_redis_py(tmp_path):
    code = textwrap.dedent("""
        import sys
        import rcwebhook.app, rcwebhook.cli, rcwebhook.journal
        from rcwebhook.store import open_store
        open_store("memory://").close()
        open_store("sqlite:///" + sys.argv[1]).close()
        loaded = sorted(name for name in sys.modules if name == "redis" or name.startswith(("redis.", "rcwebhook.store.redis")))
        print(loaded)
    """)
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "state.sqlite3")], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_status_pages_queries_read_indexes_not_every_record(redis_server):
    """The status page asks for the firing alerts, the resolved ones and the latest notifications on every view."""
    store = redis_store(redis_server)
    for start in range(0, 20_000, 2000):
        write(store, alerts=[seen(f"a{n}", float(n), status="resolved" if n % 4 == 0 else "firing",
                                  severity=("critical", "warning", "info")[n % 3]) for n in range(start, start + 2000)],
              notifications=[notification(f"n{n}", float(n)) for n in range(start, start + 2000, 10)])
    assert store.counts()["alerts"] == 20_000

    def fastest(call):
        times = []
        for _ in range(5):
            started = time.monotonic()
            result = call()
            times.append(time.monotonic() - started)
        return min(times), result

    firing_time, firing = fastest(lambda: store.alerts(status="firing", limit=200))
    resolved_time, resolved = fastest(lambda: store.alerts(status="resolved", limit=50, newest_by="resolved_at"))
    notifications_time, notifications = fastest(lambda: store.notifications(limit=25))
    filtered_time, filtered = fastest(lambda: store.alerts(severity="info", status="firing", limit=100))
    assert [r.id for r in firing[:2]] == ["a19999", "a19998"] and len(firing) == 200
    assert [r.id for r in resolved[:2]] == ["a19996", "a19992"] and notifications[0].id == "n19990"
    assert len(filtered) == 100 and all(r.severity == "info" and r.status == "firing" for r in filtered)
    timings = {"firing": firing_time, "resolved": resolved_time, "notifications": notifications_time,
               "filtered": filtered_time}
    print(f"status page queries on 20,000 alerts: { {name: f'{t * 1000:.1f} ms' for name, t in timings.items()} }")
    assert max(timings.values()) < 0.2, timings
    store.close()


def test_check_asks_redis_now(redis_servers):
    server = redis_servers()
    store = redis_store(server, timeout_seconds=0.5)
    store.check()
    server.stop()
    with pytest.raises(StoreError, match=rf"^redis at 127\.0\.0\.1:{server.port}: "):
        store.check()


def test_a_full_redis_refuses_a_write_whole_and_still_answers_reads(redis_servers):
    """maxmemory with noeviction (what the README asks for): a script is refused before it starts, never half-way."""
    server = redis_servers(args=("--maxmemory", "4mb", "--maxmemory-policy", "noeviction"))
    store = redis_store(server)
    per_batch, refused = 100, None
    for number in range(500):
        try:
            write(store, alerts=[seen(f"a{number}-{n}", float(number), labels={"pad": "x" * 200})
                                 for n in range(per_batch)], notifications=[notification(f"n{number}", float(number))])
        except StoreError as error:
            refused = error
            break
    assert refused is not None and "Redis is full, nothing of the call was kept" in str(refused)
    counts = store.counts()  # reads still answer
    assert counts["alerts"] == counts["notifications"] * per_batch == number * per_batch
    with pytest.raises(StoreError, match="Redis is full"):
        store.schedule_sms([sms_message("s1")], at=100.0)
    assert store.prune(updated_before=1e12, max_alerts=0, groups_finished_before=0.0) == number * per_batch
    assert [m.id for m in store.schedule_sms([sms_message("s1")], at=100.0)] == ["s1"]  # room again
    store.close()


# Writes batches as fast as it can and prints the number of each batch once Redis has it.
REDIS_WRITER = textwrap.dedent("""
    import sys
    from rcwebhook.store import AlertSeen, NotificationRecord, WriteBatch
    from rcwebhook.store.redis import RedisStore

    url, prefix, per_batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = RedisStore(url, prefix=prefix, timeout_seconds=5)
    number = 0
    while True:
        ids = [f"{number}-{n}" for n in range(per_batch)]
        store.write(WriteBatch(
            alerts=[AlertSeen(id=i, fingerprint=i, starts_at="2024-05-01T10:00:00Z", ends_at="", alertname="Load",
                              status="firing", severity="warning", integration="rc",
                              labels={"instance": i, "pad": "x" * 200}, annotations={}, received_at=float(number))
                    for i in ids],
            notifications=[NotificationRecord(id=str(number), request_id="r", integration="rc", group_key="g",
                                              receiver="team", firing=per_batch, resolved=0, status_code=200, ms=1.0,
                                              received=float(number))],
        ))
        print(number, flush=True)
        number += 1
""")


def test_a_writer_killed_mid_write_leaves_every_batch_whole(redis_server):
    prefix, per_batch, committed = f"test-{uuid.uuid4().hex[:12]}:", 300, 0
    for round_number in range(3):
        child = subprocess.Popen([sys.executable, "-c", REDIS_WRITER, redis_server.url, prefix, str(per_batch)],
                                 cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            for _ in range(2 + 3 * round_number):  # a varying number of batches, then killed while sending one
                line = child.stdout.readline()
                assert line, child.communicate(timeout=10)[1]
            child.send_signal(signal.SIGKILL)
            child.communicate(timeout=10)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert child.returncode == -signal.SIGKILL
        store = redis_store(redis_server, prefix=prefix)
        counts = store.counts()
        store.close()
        # Every batch it reported is there (batch numbers restart each round: the same ids again are upserts); one
        # it was sending when killed is all in or all out.
        assert counts["alerts"] % per_batch == 0 and counts["alerts"] == counts["notifications"] * per_batch
        assert counts["alerts"] >= max(committed, (int(line) + 1) * per_batch)
        committed = counts["alerts"]


def test_rediss_speaks_tls_checks_the_certificate_and_keeps_its_timeout(redis_servers):
    from rcwebhook.store.redis import RedisStore

    server = redis_servers(tls=True, password="tls-pass")
    store = redis_store(server, timeout_seconds=0.5)
    fill(store)
    assert store.counts()["alerts"] == 2 and store.description.startswith("rediss://:<redacted>@127.0.0.1:")
    with pytest.raises(StoreError, match="certificate verify failed"):  # not the CA the URL names: refused
        RedisStore(f"rediss://:tls-pass@127.0.0.1:{server.port}/0", prefix="x:").counts()
    server.freeze()
    try:
        for call in (store.counts, lambda: redis_store(server, timeout_seconds=0.5).counts()):  # a new one: handshake
            started = time.monotonic()
            with pytest.raises(StoreError, match=r"no answer within 0\.5 s$"):
                call()
            assert time.monotonic() - started < 1.0
    finally:
        server.thaw()
    assert store.alert("a1") is not None
    store.close()
