"""The Store contract (rcwebhook/store/__init__.py) on every backend, then what only the SQLite file must do."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import threading
import time

import pytest

from rcwebhook.store import (
    MAX_DELIVERIES_PER_ALERT, AlertSeen, Delivery, GroupMemory, NotificationRecord, StoreError, ThreadMessage,
    WriteBatch,
    open_store,
)
from rcwebhook.store.memory import MemoryStore
from rcwebhook.store.sqlite import SQLiteStore


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
    assert store.counts() == {"alerts": 0, "notifications": 1, "groups": 0, "threads": 0}
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
    assert store.counts() == {"alerts": 0, "notifications": 0, "groups": 0, "threads": 0}


def test_counts(store):
    assert store.counts() == {"alerts": 0, "notifications": 0, "groups": 0, "threads": 0}
    write(store, alerts=[seen("a"), seen("b"), seen("a", 101.0)], notifications=[notification("n1")],
          groups=[group("h", b"1"), group("h", b"2"), group("h", b"1")])
    assert store.counts() == {"alerts": 2, "notifications": 1, "groups": 2, "threads": 0}


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
