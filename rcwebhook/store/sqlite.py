"""The sqlite:///<path> store: one file on one machine (standard library sqlite3, WAL mode).

The journal's writer (one thread) has its own connection, readers share a small pool, and the SMS writers (any thread:
requests, the SMS worker, status callbacks) share one connection under a lock.

The file must stay the one opened: a write checks that the path still names it (SQLite on Linux would otherwise go on
writing to a deleted file's inode and lose everything at the next start) and raises StoreError when it was deleted or
replaced. Text columns cannot hold lone surrogates (sqlite3 binds UTF-8): they are stored as U+FFFD, while labels,
annotations and destinations, stored as JSON, keep them exactly (escaped as \\udXXX when present).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import sqlite3
import threading
import weakref
from typing import Iterable, Iterator, Mapping, Sequence
from urllib.parse import quote

from ..safetext import replace_lone_surrogates
from . import (
    MAX_DELIVERIES_PER_ALERT, OPEN_SMS_STATES, SMS_SENT, AlertRecord, AlertSeen, Delivery, GroupMemory,
    NotificationRecord, SmsAlert, SmsMessage, StoreError, ThreadMessage, WriteBatch,
)
# The SMS rules that are not a query (Twilio's status ranks) are the memory store's, so both backends apply the same.
from .memory import RecordedStatus, moves_forward, supersedes, with_recorded_status

SCHEMA_VERSION = 1  # PRAGMA user_version
# How long a write waits for another process's lock (gunicorn workers share the file) before StoreError: the journal
# is never on an alert's critical path, so its writer gives up quickly rather than hang.
BUSY_TIMEOUT_SECONDS = 1.0
# An SMS write decides what is sent (a schedule that fails is a page lost): it waits longer for the journal's writer,
# or another process's, to finish its transaction.
SMS_BUSY_TIMEOUT_SECONDS = 5.0
# Every connection that writes: WAL with synchronous=NORMAL is crash-durable (a power cut may lose the last commits).
_WRITER_PRAGMAS = ("PRAGMA synchronous = NORMAL",)
# Read connections shared by all request threads, each with a small page cache (SQLite's default is 2 MiB).
MAX_READERS = 4
READER_CACHE_KIB = 1024
ORDERS = {
    "first_received": "first_received DESC, id DESC",
    "resolved_at": "resolved_at DESC, id DESC",  # NULLs (never resolved) sort last in SQLite's DESC
}
_IDS_PER_QUERY = 500  # well under SQLite's 32766 bound parameters per statement

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS alerts (
        id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, alertname TEXT NOT NULL, status TEXT NOT NULL,
        severity TEXT NOT NULL, integration TEXT NOT NULL, labels TEXT NOT NULL, annotations TEXT NOT NULL,
        starts_at TEXT NOT NULL, ends_at TEXT NOT NULL, first_received REAL NOT NULL, last_received REAL NOT NULL,
        resolved_at REAL, updated_at REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS alerts_first_received ON alerts (first_received)",
    "CREATE INDEX IF NOT EXISTS alerts_updated_at ON alerts (updated_at)",
    "CREATE INDEX IF NOT EXISTS alerts_status ON alerts (status)",
    # What the status page and the API ask most: by status, newest first; resolved ones by when they resolved.
    "CREATE INDEX IF NOT EXISTS alerts_status_first ON alerts (status, first_received DESC, id DESC)",
    "CREATE INDEX IF NOT EXISTS alerts_status_resolved ON alerts (status, resolved_at DESC, id DESC)",
    # Retention's "beyond STATE_MAX_ALERTS" walks it without a temporary B-tree.
    "CREATE INDEX IF NOT EXISTS alerts_updated_id ON alerts (updated_at DESC, id DESC)",
    """CREATE TABLE IF NOT EXISTS deliveries (
        seq INTEGER PRIMARY KEY, alert_id TEXT NOT NULL, destination TEXT NOT NULL, at REAL NOT NULL,
        outcome TEXT NOT NULL, status INTEGER, message_id TEXT)""",
    "CREATE INDEX IF NOT EXISTS deliveries_alert_id ON deliveries (alert_id)",
    """CREATE TABLE IF NOT EXISTS notifications (
        id TEXT PRIMARY KEY, request_id TEXT NOT NULL, integration TEXT NOT NULL, group_key TEXT NOT NULL,
        receiver TEXT NOT NULL, firing INTEGER NOT NULL, resolved INTEGER NOT NULL, status_code INTEGER NOT NULL,
        ms REAL NOT NULL, received REAL NOT NULL, destinations TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS notifications_received ON notifications (received)",
    "CREATE INDEX IF NOT EXISTS notifications_received_id ON notifications (received DESC, id DESC)",
    """CREATE TABLE IF NOT EXISTS groups (
        hook_key TEXT NOT NULL, group_id BLOB NOT NULL, dedup_key BLOB NOT NULL, state TEXT NOT NULL,
        status INTEGER, reason TEXT NOT NULL, finished_at REAL NOT NULL, PRIMARY KEY (hook_key, group_id))""",
    "CREATE INDEX IF NOT EXISTS groups_finished_at ON groups (finished_at)",
    """CREATE TABLE IF NOT EXISTS threads (
        hook_key TEXT NOT NULL, alert_id TEXT NOT NULL, message_id TEXT NOT NULL, at REAL NOT NULL,
        PRIMARY KEY (hook_key, alert_id))""",
    "CREATE INDEX IF NOT EXISTS threads_at ON threads (at)",
    # SMS (issue 11). A state file from before it gains these tables when opened: nothing else changes, so the
    # schema version stays 1 and the previous release can still open the file (it ignores them).
    """CREATE TABLE IF NOT EXISTS sms (
        id TEXT PRIMARY KEY, destination TEXT NOT NULL, recipient TEXT NOT NULL, kind TEXT NOT NULL,
        alerts TEXT NOT NULL, status TEXT NOT NULL, created_at REAL NOT NULL, due_at REAL NOT NULL,
        next_attempt_at REAL NOT NULL, updated_at REAL NOT NULL, tier INTEGER NOT NULL, attempts INTEGER NOT NULL,
        check_silences INTEGER NOT NULL, alertmanager_url TEXT NOT NULL, body TEXT NOT NULL,
        segments INTEGER NOT NULL, sid TEXT NOT NULL, twilio_status TEXT NOT NULL, error_code INTEGER,
        reason TEXT NOT NULL, sent_at REAL, digest_id TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS sms_due ON sms (status, next_attempt_at, id)",  # due_sms, open_sms
    "CREATE INDEX IF NOT EXISTS sms_sid ON sms (sid)",
    "CREATE INDEX IF NOT EXISTS sms_updated_id ON sms (updated_at DESC, id DESC)",  # recent_sms, prune
    "CREATE INDEX IF NOT EXISTS sms_sent ON sms (status, sent_at)",  # sms_sent_times: the hourly and daily caps
    # Which occurrences each message names (sms_for_alert), kept with the message.
    """CREATE TABLE IF NOT EXISTS sms_alerts (
        alert_id TEXT NOT NULL, sms_id TEXT NOT NULL, PRIMARY KEY (alert_id, sms_id)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS sms_alerts_sms_id ON sms_alerts (sms_id)",
    # The occurrences paged to each recipient per kind: the key is what makes schedule_sms add a pair once.
    """CREATE TABLE IF NOT EXISTS sms_paged (
        recipient TEXT NOT NULL, kind TEXT NOT NULL, alert_id TEXT NOT NULL, at REAL NOT NULL,
        PRIMARY KEY (recipient, kind, alert_id)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS sms_paged_at ON sms_paged (at)",
    "CREATE TABLE IF NOT EXISTS sms_resolved (alert_id TEXT PRIMARY KEY, at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS sms_resolved_at ON sms_resolved (at)",
    # Twilio's latest status callback per sid, whether or not a message has the sid yet (a callback can beat the
    # send's answer); its time decides between statuses of the same rank.
    """CREATE TABLE IF NOT EXISTS sms_statuses (
        sid TEXT PRIMARY KEY, status TEXT NOT NULL, error_code INTEGER, at REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS sms_statuses_at ON sms_statuses (at)",
    "CREATE TABLE IF NOT EXISTS sms_opt_outs (recipient TEXT PRIMARY KEY, at REAL NOT NULL)",
)

# An AlertSeen received at or after the record's last_received sets these; an older copy changes none of them.
_LATEST_WINS = ("alertname", "status", "severity", "integration", "labels", "annotations", "ends_at")
_UPSERT = f"""
    INSERT INTO alerts (id, fingerprint, alertname, status, severity, integration, labels, annotations, starts_at,
                        ends_at, first_received, last_received, resolved_at, updated_at)
    VALUES (:id, :fingerprint, :alertname, :status, :severity, :integration, :labels, :annotations, :starts_at,
            :ends_at, :received, :received, CASE WHEN :status = 'resolved' THEN :received END, :received)
    ON CONFLICT (id) DO UPDATE SET
        {", ".join(f"{column} = CASE WHEN :received >= last_received THEN excluded.{column} ELSE {column} END"
                   for column in _LATEST_WINS)},
        resolved_at = CASE WHEN :received < last_received THEN resolved_at
                           WHEN :status = 'resolved' THEN coalesce(resolved_at, :received) END,
        first_received = min(first_received, :received),
        last_received = max(last_received, :received),
        updated_at = max(updated_at, :received)"""
_ALERT_COLUMNS = ("id, fingerprint, alertname, status, severity, integration, labels, annotations, starts_at, ends_at, "
                  "first_received, last_received, resolved_at, updated_at")
_NOTIFICATION_COLUMNS = ("id, request_id, integration, group_key, receiver, firing, resolved, status_code, ms, "
                         "received, destinations")
_SMS_COLUMNS = tuple(field.name for field in dataclasses.fields(SmsMessage))  # the table's columns, in its order
_SMS_ALERT_FIELDS = tuple(field.name for field in dataclasses.fields(SmsAlert))  # an alerts column item's keys
_SMS_SELECT = f"SELECT {', '.join(f'sms.{column}' for column in _SMS_COLUMNS)} FROM sms"
_SMS_INSERT = f"INTO sms ({', '.join(_SMS_COLUMNS)}) VALUES ({', '.join(f':{column}' for column in _SMS_COLUMNS)})"
_OPEN_SMS = "sms.status IN ({})".format(", ".join(f"'{state}'" for state in OPEN_SMS_STATES))


def _text(value):
    """The value as SQLite can bind it: lone surrogates (from a hostile body) become U+FFFD."""
    return replace_lone_surrogates(value) if isinstance(value, str) else value


def _json(value: Mapping | list) -> str:
    """Readable JSON, or ASCII-escaped JSON when the text holds lone surrogates (kept exactly either way)."""
    value = dict(value) if isinstance(value, Mapping) else value
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text


def _cause(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


class _Connection(sqlite3.Connection):
    """A connection that remembers the process that opened it (and can be weakly referenced)."""

    pid: int


class SQLiteStore:
    """One SQLite file; each thread (and each process after a fork) uses its own connection, opened lazily."""

    def __init__(self, path: str):
        self.path = path
        self.description = f"sqlite:///{path}"
        if path in ("", ":memory:") or path.startswith("file:"):
            raise StoreError(f"{self.description}: not a file path (use memory:// for a store in the process)")
        self._local = threading.local()
        self._connections: weakref.WeakSet[_Connection] = weakref.WeakSet()  # every thread's, for close()
        self._connections_lock = threading.Lock()
        self._inherited: list[_Connection] = []  # opened before a fork: never used, nor closed, in the child
        self._readers: list[_Connection] = []  # idle pooled read connections
        self._readers_lock = threading.Lock()
        self._reader_slots = threading.BoundedSemaphore(MAX_READERS)
        self._writer: _Connection | None = None  # the SMS writers' shared connection, opened at first use
        self._writer_lock = threading.Lock()
        # A thread of the parent may hold the lock when another forks: the child (which has no such thread) would
        # wait for it forever.
        os.register_at_fork(after_in_child=functools.partial(_renew_writer_lock, weakref.ref(self)))
        self._closed = False
        with self._errors():
            connection = self._open(create=True)
            try:
                stat = os.stat(path)
                self._identity = (stat.st_dev, stat.st_ino)
                mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise StoreError(f"{self.description}: journal_mode is {mode}, not wal")
                self._create_schema(connection)
            except BaseException:
                self._forget(connection)
                raise

    def _open(self, *, create: bool) -> _Connection:
        """This thread's new connection; only the constructor may create the file (mode=rwc)."""
        connection = self._connect(create=create, pragmas=_WRITER_PRAGMAS)
        self._local.connection = connection
        return connection

    def _connect(self, *, create: bool = False, shared: bool = False, pragmas: tuple[str, ...] = (),
                 busy_timeout: float | None = None) -> _Connection:
        """A new connection with the busy timeout (default BUSY_TIMEOUT_SECONDS) and the pragmas given, known to
        close(); shared: usable from any thread (the pooled readers and the SMS writer, one thread at a time)."""
        busy_timeout = BUSY_TIMEOUT_SECONDS if busy_timeout is None else busy_timeout
        uri = f"file:{quote(self.path)}?mode={'rwc' if create else 'rw'}"
        connection = sqlite3.connect(uri, uri=True, timeout=busy_timeout, isolation_level=None,
                                     factory=_Connection, check_same_thread=not shared)
        try:
            connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            for pragma in pragmas:
                connection.execute(pragma)
        except BaseException:
            connection.close()
            raise
        connection.pid = os.getpid()
        with self._connections_lock:
            self._connections.add(connection)
        return connection

    def _forget(self, connection: _Connection) -> None:
        self._local.connection = None
        with contextlib.suppress(sqlite3.Error):
            connection.close()

    def _create_schema(self, connection: _Connection) -> None:
        connection.execute("BEGIN IMMEDIATE")  # also proves the file (and its directory, for the WAL) is writable
        try:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.description}: schema version {version} is newer than this relay's "
                                 f"{SCHEMA_VERSION}")
            for statement in _SCHEMA:
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")  # a real write, even when all existed
            connection.execute("COMMIT")
        except BaseException:
            self._rollback(connection)
            raise

    @staticmethod
    def _rollback(connection: _Connection) -> None:
        if connection.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")

    def _connection(self) -> _Connection:
        connection = getattr(self._local, "connection", None)
        if self._closed:
            if connection is not None and connection.pid == os.getpid():
                self._forget(connection)  # another thread's close() could not close it
            raise StoreError(f"{self.description}: the store is closed")
        if connection is not None and connection.pid == os.getpid():
            return connection
        if connection is not None:
            self._inherited.append(connection)  # SQLite connections must not cross a fork: leave it be
        self._check_identity()
        return self._open(create=False)

    def _check_identity(self) -> None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            stat = None
        if stat is None or (stat.st_dev, stat.st_ino) != self._identity:
            raise StoreError(f"{self.description}: the database file was deleted or replaced")

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OSError) as error:
            raise StoreError(f"{self.description}: {_cause(error)}") from error

    @contextlib.contextmanager
    def _storable(self) -> Iterator[None]:
        """A value JSON or SQLite cannot hold (a label that is no string, NaN) is a StoreError too."""
        try:
            yield
        except (TypeError, ValueError) as error:
            raise StoreError(f"{self.description}: a record cannot be stored: {error}") from error

    @contextlib.contextmanager
    def _immediate(self, connection: _Connection) -> Iterator[_Connection]:
        """A write transaction on the connection (BEGIN IMMEDIATE: the lock is taken before any read, so what the
        transaction reads stays true until it commits); rolled back unless the block completes."""
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
            connection.execute("COMMIT")
        finally:
            self._rollback(connection)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[_Connection]:
        """A write transaction on this thread's connection (the journal's writer)."""
        with self._errors():
            connection = self._connection()
            self._check_identity()
            with self._immediate(connection):
                yield connection

    @contextlib.contextmanager
    def _sms_transaction(self) -> Iterator[_Connection]:
        """A write transaction on the connection the SMS writers share.

        They write from any thread, and a connection per request thread would keep ~200 open (with their file
        descriptors and caches) in a gunicorn worker. The lock orders this process's writers without SQLite's
        sleep-and-retry; the busy timeout waits for other processes and for the journal's writer."""
        if not self._writer_lock.acquire(timeout=SMS_BUSY_TIMEOUT_SECONDS):
            raise StoreError(f"{self.description}: another thread's SMS write took too long")
        try:
            with self._storable(), self._errors():
                connection = self._shared_writer()
                self._check_identity()
                with self._immediate(connection):
                    yield connection
        finally:
            self._writer_lock.release()

    def _shared_writer(self) -> _Connection:
        """The SMS writers' connection (the caller holds the writer lock); a new one after a fork."""
        if self._closed:
            raise StoreError(f"{self.description}: the store is closed")
        writer = self._writer
        if writer is not None and writer.pid == os.getpid():
            return writer
        if writer is not None:
            self._inherited.append(writer)  # SQLite connections must not cross a fork: leave it be
        self._check_identity()
        self._writer = self._connect(shared=True, pragmas=_WRITER_PRAGMAS, busy_timeout=SMS_BUSY_TIMEOUT_SECONDS)
        return self._writer

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[_Connection]:
        """A read transaction on a pooled reader connection: every query in it sees the same committed state.

        Readers are pooled, not per thread: gunicorn runs ~200 threads, and a connection each (with its page cache)
        held hundreds of MiB once the status page had been served by most of them."""
        with self._errors():
            if self._closed:
                raise StoreError(f"{self.description}: the store is closed")
            with self._reader_slots:
                connection = self._take_reader()
                healthy = False
                try:
                    connection.execute("BEGIN")
                    try:
                        yield connection
                    finally:
                        self._rollback(connection)
                    healthy = True
                finally:
                    self._give_back_reader(connection, healthy)

    def _take_reader(self) -> _Connection:
        with self._readers_lock:
            while self._readers:
                connection = self._readers.pop()
                if connection.pid == os.getpid():
                    return connection
                self._inherited.append(connection)  # opened before a fork: left alone in the child
        self._check_identity()
        return self._connect(shared=True, pragmas=(f"PRAGMA cache_size = {-READER_CACHE_KIB}",))

    def _give_back_reader(self, connection: _Connection, healthy: bool) -> None:
        if healthy and not self._closed:
            with self._readers_lock:
                if len(self._readers) < MAX_READERS:
                    self._readers.append(connection)
                    return
        with contextlib.suppress(sqlite3.Error):
            connection.close()

    def write(self, batch: WriteBatch) -> None:
        with self._storable(), self._transaction() as connection:
            self._write(connection, batch)

    @staticmethod
    def _write(connection: _Connection, batch: WriteBatch) -> None:
        connection.executemany(_UPSERT, (_alert_parameters(seen) for seen in batch.alerts))
        delivered: set[str] = set()
        for delivery in batch.deliveries:
            alert_id = _text(delivery.alert_id)
            known = connection.execute(
                "UPDATE alerts SET updated_at = max(updated_at, ?) WHERE id = ?", (delivery.at, alert_id),
            ).rowcount
            if not known:
                continue  # its record was pruned (or never written): nothing to attach it to
            connection.execute(
                "INSERT INTO deliveries (alert_id, destination, at, outcome, status, message_id)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (alert_id, _text(delivery.destination), delivery.at, _text(delivery.outcome), delivery.status,
                 _text(delivery.message_id)),
            )
            delivered.add(alert_id)
        connection.executemany(
            "DELETE FROM deliveries WHERE alert_id = ?1 AND seq < (SELECT seq FROM deliveries WHERE alert_id = ?1"
            " ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
            ((alert_id, MAX_DELIVERIES_PER_ALERT - 1) for alert_id in delivered),
        )
        connection.executemany(
            f"INSERT OR REPLACE INTO notifications ({_NOTIFICATION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ((_text(n.id), _text(n.request_id), _text(n.integration), _text(n.group_key), _text(n.receiver),
              n.firing, n.resolved, n.status_code, n.ms, n.received, _json(n.destinations))
             for n in batch.notifications),
        )
        connection.executemany(
            "INSERT OR REPLACE INTO groups (hook_key, group_id, dedup_key, state, status, reason, finished_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            ((_text(g.hook_key), bytes(g.group_id), bytes(g.dedup_key), _text(g.state), g.status, _text(g.reason),
              g.finished_at) for g in batch.groups),
        )
        connection.executemany(  # the first message is the thread: a later one never replaces it
            "INSERT OR IGNORE INTO threads (hook_key, alert_id, message_id, at) VALUES (?, ?, ?, ?)",
            ((_text(t.hook_key), _text(t.alert_id), _text(t.message_id), t.at) for t in batch.threads),
        )

    def load_threads(self, since: float) -> list[ThreadMessage]:
        with self._snapshot() as connection:
            rows = connection.execute(
                "SELECT hook_key, alert_id, message_id, at FROM threads WHERE at >= ? ORDER BY at, hook_key, alert_id",
                (since,),
            ).fetchall()
        return [ThreadMessage(*row) for row in rows]

    def load_groups(self, finished_since: float) -> list[GroupMemory]:
        with self._snapshot() as connection:
            rows = connection.execute(
                "SELECT hook_key, group_id, dedup_key, state, status, reason, finished_at FROM groups"
                " WHERE finished_at >= ? ORDER BY finished_at, hook_key, group_id", (finished_since,),
            ).fetchall()
        return [GroupMemory(hook_key, bytes(group_id), bytes(dedup_key), state, status, reason, finished_at)
                for hook_key, group_id, dedup_key, state, status, reason, finished_at in rows]

    def alerts(
        self, *, status: str | None = None, severity: str | None = None, integration: str | None = None,
        limit: int = 100, newest_by: str = "first_received",
    ) -> list[AlertRecord]:
        if limit <= 0:
            return []
        if newest_by not in ORDERS:
            raise StoreError(f"cannot order alerts by {newest_by!r}")
        conditions, parameters = [], []
        for column, value in (("status", status), ("severity", severity), ("integration", integration)):
            if value is not None:
                conditions.append(f"{column} = ?")
                parameters.append(_text(value))
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        with self._snapshot() as connection:
            rows = connection.execute(
                f"SELECT {_ALERT_COLUMNS} FROM alerts {where} ORDER BY {ORDERS[newest_by]} LIMIT ?",
                (*parameters, limit),
            ).fetchall()
            return self._records(connection, rows)

    def alert(self, alert_id: str) -> AlertRecord | None:
        with self._snapshot() as connection:
            rows = connection.execute(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id = ?",
                                      (_text(alert_id),)).fetchall()
            records = self._records(connection, rows)
        return records[0] if records else None

    @staticmethod
    def _records(connection: _Connection, rows: list[tuple]) -> list[AlertRecord]:
        deliveries: dict[str, list[Delivery]] = {row[0]: [] for row in rows}
        ids = list(deliveries)
        for start in range(0, len(ids), _IDS_PER_QUERY):
            chunk = ids[start:start + _IDS_PER_QUERY]
            for row in connection.execute(
                "SELECT alert_id, destination, at, outcome, status, message_id FROM deliveries"
                f" WHERE alert_id IN ({', '.join('?' * len(chunk))}) ORDER BY seq", chunk,
            ):
                deliveries[row[0]].append(Delivery(*row))
        return [
            AlertRecord(id=row[0], fingerprint=row[1], alertname=row[2], status=row[3], severity=row[4],
                        integration=row[5], labels=json.loads(row[6]), annotations=json.loads(row[7]),
                        starts_at=row[8], ends_at=row[9], first_received=row[10], last_received=row[11],
                        resolved_at=row[12], updated_at=row[13], deliveries=tuple(deliveries[row[0]]))
            for row in rows
        ]

    def notifications(self, *, limit: int = 100) -> list[NotificationRecord]:
        if limit <= 0:
            return []
        with self._snapshot() as connection:
            rows = connection.execute(
                f"SELECT {_NOTIFICATION_COLUMNS} FROM notifications ORDER BY received DESC, id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [NotificationRecord(*row[:10], destinations=json.loads(row[10])) for row in rows]

    def prune(self, *, updated_before: float, max_alerts: int, groups_finished_before: float) -> int:
        keep = max(max_alerts, 0)
        stale = "SELECT id FROM alerts WHERE updated_at < ?"
        beyond = "SELECT id FROM alerts ORDER BY updated_at DESC, id DESC LIMIT -1 OFFSET ?"
        with self._transaction() as connection:
            connection.execute(f"DELETE FROM deliveries WHERE alert_id IN ({stale})", (updated_before,))
            gone = connection.execute(f"DELETE FROM alerts WHERE id IN ({stale})", (updated_before,)).rowcount
            # Only past the bound: walking the whole table every minute to find nothing held the write lock ~0.3 s.
            if connection.execute("SELECT count(*) FROM alerts").fetchone()[0] > keep:
                connection.execute(f"DELETE FROM deliveries WHERE alert_id IN ({beyond})", (keep,))
                gone += connection.execute(f"DELETE FROM alerts WHERE id IN ({beyond})", (keep,)).rowcount
            connection.execute("DELETE FROM notifications WHERE received < ?", (updated_before,))
            if connection.execute("SELECT count(*) FROM notifications").fetchone()[0] > keep:
                connection.execute("DELETE FROM notifications WHERE id IN (SELECT id FROM notifications"
                                   " ORDER BY received DESC, id DESC LIMIT -1 OFFSET ?)", (keep,))
            connection.execute("DELETE FROM groups WHERE finished_at < ?", (groups_finished_before,))
            connection.execute("DELETE FROM threads WHERE at < ?", (updated_before,))
            if connection.execute("SELECT count(*) FROM threads").fetchone()[0] > keep:
                connection.execute("DELETE FROM threads WHERE rowid IN (SELECT rowid FROM threads"
                                   " ORDER BY at DESC LIMIT -1 OFFSET ?)", (keep,))
            self._prune_sms(connection, updated_before, keep)
        return gone

    @staticmethod
    def _prune_sms(connection: _Connection, updated_before: float, keep: int) -> None:
        final = f"SELECT id FROM sms WHERE NOT {_OPEN_SMS}"  # open messages are still to be sent: never pruned
        _delete_sms(connection, f"{final} AND updated_at < ?", (updated_before,))
        if connection.execute(f"SELECT count(*) FROM ({final})").fetchone()[0] > keep:  # as for alerts: only past it
            _delete_sms(connection, f"{final} ORDER BY updated_at DESC, id DESC LIMIT -1 OFFSET ?", (keep,))
        for table in ("sms_paged", "sms_resolved"):
            connection.execute(f"DELETE FROM {table} WHERE at < ?", (updated_before,))
        connection.execute("DELETE FROM sms_statuses WHERE at < ? AND sid NOT IN (SELECT sid FROM sms)",
                           (updated_before,))

    def counts(self) -> Mapping[str, int]:
        with self._snapshot() as connection:
            return {table: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                    for table in ("alerts", "notifications", "groups", "threads", "sms")}

    # -- SMS

    def schedule_sms(self, messages: Sequence[SmsMessage], at: float) -> list[SmsMessage]:
        added = []
        with self._sms_transaction() as connection:
            for message in messages:
                # The pair's key does the de-duplication: one insert wins, in this call or among concurrent ones.
                fresh = tuple(alert for alert in message.alerts if connection.execute(
                    "INSERT OR IGNORE INTO sms_paged (recipient, kind, alert_id, at) VALUES (?, ?, ?, ?)",
                    (_text(message.recipient), _text(message.kind), _text(alert.id), at)).rowcount)
                if fresh:  # a plain INSERT: a message id already stored is an error, not a replacement
                    added.append(self._put_sms(connection, dataclasses.replace(message, alerts=fresh), "INSERT"))
        return added

    def save_sms(self, messages: Sequence[SmsMessage]) -> None:
        with self._sms_transaction() as connection:
            for message in messages:
                self._put_sms(connection, message, "INSERT OR REPLACE")

    def _put_sms(self, connection: _Connection, message: SmsMessage, verb: str) -> SmsMessage:
        """Store the message (with the recorded status when it ranks higher) and the occurrences it names."""
        stored = with_recorded_status(message, self._recorded_status(connection, message.sid))
        connection.execute(f"{verb} {_SMS_INSERT}", _sms_parameters(stored))
        connection.execute("DELETE FROM sms_alerts WHERE sms_id = ?", (_text(stored.id),))
        connection.executemany("INSERT OR IGNORE INTO sms_alerts (alert_id, sms_id) VALUES (?, ?)",
                               ((_text(alert.id), _text(stored.id)) for alert in stored.alerts))
        return stored

    @staticmethod
    def _recorded_status(connection: _Connection, sid: str) -> RecordedStatus | None:
        if not sid:
            return None  # no sid yet: "" is not Twilio's
        row = connection.execute("SELECT status, error_code, at FROM sms_statuses WHERE sid = ?",
                                 (_text(sid),)).fetchone()
        return None if row is None else RecordedStatus(*row)

    def _read_sms(self, where: str, parameters: Iterable = ()) -> list[SmsMessage]:
        with self._snapshot() as connection:
            return _selected_sms(connection, where, parameters)

    def due_sms(self, now: float, *, limit: int = 100) -> list[SmsMessage]:
        if limit <= 0:
            return []
        return self._read_sms(f"WHERE {_OPEN_SMS} AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?",
                              (now, limit))

    def open_sms(self, *, recipient: str | None = None) -> list[SmsMessage]:
        if recipient is None:
            return self._read_sms(f"WHERE {_OPEN_SMS} ORDER BY next_attempt_at, id")
        return self._read_sms(f"WHERE {_OPEN_SMS} AND recipient = ? ORDER BY next_attempt_at, id",
                              (_text(recipient),))

    def sms(self, sms_id: str) -> SmsMessage | None:
        found = self._read_sms("WHERE id = ?", (_text(sms_id),))
        return found[0] if found else None

    def sms_by_sid(self, sid: str) -> SmsMessage | None:
        with self._snapshot() as connection:
            return _first_with_sid(connection, sid)

    def sms_for_alert(self, alert_id: str) -> list[SmsMessage]:
        return self._read_sms("JOIN sms_alerts ON sms_alerts.sms_id = sms.id WHERE sms_alerts.alert_id = ?"
                              " ORDER BY sms.created_at, sms.id", (_text(alert_id),))

    def recent_sms(self, *, limit: int = 100) -> list[SmsMessage]:
        if limit <= 0:
            return []
        return self._read_sms("ORDER BY updated_at DESC, id DESC LIMIT ?", (limit,))

    def sms_sent_times(self, since: float, *, recipient: str | None = None) -> list[float]:
        where, parameters = "status = ? AND sent_at >= ?", [SMS_SENT, since]
        if recipient is not None:
            where, parameters = f"{where} AND recipient = ?", [*parameters, _text(recipient)]
        with self._snapshot() as connection:
            return [row[0] for row in connection.execute(
                f"SELECT sent_at FROM sms WHERE {where} ORDER BY sent_at", parameters)]

    def record_sms_status(self, sid: str, status: str, error_code: int | None, at: float) -> SmsMessage | None:
        with self._sms_transaction() as connection:
            if sid and supersedes(status, at, self._recorded_status(connection, sid)):
                connection.execute("INSERT OR REPLACE INTO sms_statuses (sid, status, error_code, at)"
                                   " VALUES (?, ?, ?, ?)", (_text(sid), _text(status), error_code, at))
                for sms_id, held in connection.execute("SELECT id, twilio_status FROM sms WHERE sid = ?",
                                                       (_text(sid),)).fetchall():
                    if moves_forward(status, held):  # never moves a message back
                        connection.execute(
                            "UPDATE sms SET twilio_status = ?, error_code = ?, updated_at = max(updated_at, ?)"
                            " WHERE id = ?", (_text(status), error_code, at, sms_id))
            return _first_with_sid(connection, sid)

    def mark_resolved(self, alert_ids: Sequence[str], at: float) -> None:
        with self._sms_transaction() as connection:  # the first time is kept
            connection.executemany("INSERT OR IGNORE INTO sms_resolved (alert_id, at) VALUES (?, ?)",
                                   ((_text(alert_id), at) for alert_id in alert_ids))

    def resolved_among(self, alert_ids: Sequence[str]) -> set[str]:
        ids = list(dict.fromkeys(_text(alert_id) for alert_id in alert_ids))
        found: set[str] = set()
        with self._snapshot() as connection:
            for start in range(0, len(ids), _IDS_PER_QUERY):
                chunk = ids[start:start + _IDS_PER_QUERY]
                found.update(row[0] for row in connection.execute(
                    f"SELECT alert_id FROM sms_resolved WHERE alert_id IN ({', '.join('?' * len(chunk))})", chunk))
        return found

    def set_opt_out(self, recipient: str, at: float | None) -> None:
        with self._sms_transaction() as connection:
            if at is None:
                connection.execute("DELETE FROM sms_opt_outs WHERE recipient = ?", (_text(recipient),))
            else:  # a later STOP (a retry refused again) replaces the earlier: the wait starts anew from it
                connection.execute("INSERT OR REPLACE INTO sms_opt_outs (recipient, at) VALUES (?, ?)",
                                   (_text(recipient), at))

    def opt_outs(self) -> Mapping[str, float]:
        with self._snapshot() as connection:
            return dict(connection.execute("SELECT recipient, at FROM sms_opt_outs").fetchall())

    def close(self) -> None:
        """Close this thread's connection and those it may; the others close at their thread's next use or end."""
        self._closed = True
        with self._connections_lock:
            connections = [connection for connection in self._connections if connection.pid == os.getpid()]
        for connection in connections:
            with contextlib.suppress(sqlite3.Error):  # ProgrammingError: another thread's
                connection.close()
        self._local.connection = None
        self._writer = None


def _alert_parameters(seen: AlertSeen) -> dict:
    return {
        "id": _text(seen.id), "fingerprint": _text(seen.fingerprint), "alertname": _text(seen.alertname),
        "status": _text(seen.status), "severity": _text(seen.severity), "integration": _text(seen.integration),
        "labels": _json(seen.labels), "annotations": _json(seen.annotations), "starts_at": _text(seen.starts_at),
        "ends_at": _text(seen.ends_at), "received": seen.received_at,
    }


def _sms_parameters(message: SmsMessage) -> dict:
    parameters = {column: _text(getattr(message, column)) for column in _SMS_COLUMNS}
    parameters["alerts"] = _json([{name: _plain(getattr(alert, name)) for name in _SMS_ALERT_FIELDS}
                                  for alert in message.alerts])
    return parameters


def _plain(value):
    return dict(value) if isinstance(value, Mapping) else value


def _sms_alert(item: dict) -> SmsAlert:
    """An alerts column item; a key this release does not know (written by a later one) is left out."""
    return SmsAlert(**{name: value for name, value in item.items() if name in _SMS_ALERT_FIELDS})


def _selected_sms(connection: _Connection, where: str, parameters: Iterable = ()) -> list[SmsMessage]:
    """The messages the clause (joins, WHERE, ORDER BY, LIMIT after FROM sms) selects."""
    messages = []
    for row in connection.execute(f"{_SMS_SELECT} {where}", tuple(parameters)):
        values = dict(zip(_SMS_COLUMNS, row))
        values["alerts"] = tuple(_sms_alert(item) for item in json.loads(values["alerts"]))
        values["check_silences"] = bool(values["check_silences"])
        messages.append(SmsMessage(**values))
    return messages


def _delete_sms(connection: _Connection, ids: str, parameters: tuple) -> None:
    """Forget the messages the query's ids name, with the occurrences they name."""
    connection.execute(f"DELETE FROM sms_alerts WHERE sms_id IN ({ids})", parameters)
    connection.execute(f"DELETE FROM sms WHERE id IN ({ids})", parameters)


def _first_with_sid(connection: _Connection, sid: str) -> SmsMessage | None:
    """The oldest message with the sid (a sid is Twilio's, so one at most; "" is no sid)."""
    found = _selected_sms(connection, "WHERE sid = ? ORDER BY created_at, id LIMIT 1", (_text(sid),)) if sid else []
    return found[0] if found else None


def _renew_writer_lock(store_ref: weakref.ref) -> None:
    """In a forked child: the SMS writer lock anew (a thread of the parent that held it is not in the child)."""
    store = store_ref()
    if store is not None:
        store._writer_lock = threading.Lock()
