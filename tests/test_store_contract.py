"""The Store contract (rcwebhook/store/__init__.py) on every backend, then what only the SQLite file must do."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from rcwebhook.store import (
    MAX_DELIVERIES_PER_ALERT, SMS_CANCELLED, SMS_DIGESTED, SMS_FAILED, SMS_HELD, SMS_PENDING, SMS_SENT, AlertSeen,
    Delivery, GroupMemory, NotificationRecord, SmsAlert, SmsMessage, StoreError, ThreadMessage, WriteBatch,
    open_store,
)
from rcwebhook.store import sqlite as sqlite_module
from rcwebhook.store.memory import MemoryStore
from rcwebhook.store.sqlite import SQLiteStore

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


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    store = MemoryStore() if request.param == "memory" else SQLiteStore(str(tmp_path / "state.sqlite3"))
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
    # Plain text columns: kept as sent in the process, U+FFFD in SQLite (it binds UTF-8).
    exact = isinstance(store, MemoryStore)
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
    with pytest.raises(StoreError, match="redis://x"):
        open_store("redis://x")


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
