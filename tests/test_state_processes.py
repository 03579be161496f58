"""State under the real server: a kill -9 mid-storm leaves a database that opens, an unusable default state file
falls back to memory:// with a WARNING, and an unusable STATE_URL someone set stops the relay (exit 2)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import threading
from pathlib import Path

import pytest
import requests

from helpers import (DEV_SERVER_COMMAND, GUNICORN_COMMAND, REPO, Relay, direct_session, free_port, relay_environ, run_to_exit,
                     wait_until)

sys.path.insert(0, str(REPO))
from mock_server import MockRocketChat  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mock():
    with MockRocketChat(port=0, rate_limit_count=0) as server:
        yield server


def environ_for(mock: MockRocketChat, **extra: str | None) -> dict[str, str]:
    hooks = {f"ROCKETCHAT_WEBHOOK_{name.upper()}": mock.hook_url(name) for name in ("critical", "warning", "info")}
    return relay_environ({"HOST": "127.0.0.1", "PORT": str(free_port()), "ROCKETCHAT_RATE_LIMIT": "0", **hooks,
                          **extra})


def body(index: int) -> bytes:
    return json.dumps({"groupKey": f"storm-{index}", "receiver": "rocketchat", "alerts": [
        {"status": "firing", "labels": {"alertname": f"Storm{index}", "severity": "warning", "instance": f"i{index}"},
         "annotations": {"summary": "storm " * 20}, "startsAt": "2026-12-01T10:00:00Z",
         "fingerprint": f"{index:016x}"}]}).encode()


def worker_pids(master_pid: int) -> list[int]:
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


def alert_rows(path: Path) -> int:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as connection:
            return connection.execute("SELECT count(*) FROM alerts").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_a_worker_killed_mid_storm_leaves_a_database_that_opens(tmp_path, mock):
    database = tmp_path / "state.sqlite3"
    relay = Relay.start(GUNICORN_COMMAND, environ_for(mock, STATE_URL=f"sqlite:///{database}"), output_dir=tmp_path)
    stop_storm = threading.Event()
    sent = [0]

    def storm(offset: int) -> None:
        session = direct_session()
        index = offset
        while not stop_storm.is_set():
            try:
                session.post(f"{relay.base_url}/webhook", data=body(index), timeout=5,
                             headers={"Content-Type": "application/json"})
                sent[0] += 1
            except requests.RequestException:
                pass  # the worker is being killed and replaced: the storm goes on
            index += 4

    threads = [threading.Thread(target=storm, args=(offset,), daemon=True) for offset in range(4)]
    try:
        for thread in threads:
            thread.start()
        for round_number in range(3):
            rows_before = alert_rows(database)
            wait_until(lambda: alert_rows(database) >= rows_before + 50, 30, "the journal to fill during the storm")
            [worker] = wait_until(lambda: worker_pids(relay.process.pid) or None, 10, "a worker")
            os.kill(worker, signal.SIGKILL)  # mid-write: the storm is running
            with sqlite3.connect(database, timeout=5) as connection:
                assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok", round_number
            wait_until(lambda: [pid for pid in worker_pids(relay.process.pid) if pid != worker] or None, 20,
                       "gunicorn to start a new worker")
            relay.wait_healthy()
        stop_storm.set()
        for thread in threads:
            thread.join(timeout=10)
        alerts = relay.http.get(f"{relay.base_url}/api/v1/alerts?limit=5", timeout=5).json()["alerts"]
        assert len(alerts) == 5 and sent[0] > 150
    finally:
        stop_storm.set()
        relay.stop()
    with sqlite3.connect(database) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_an_unusable_default_state_file_falls_back_to_memory_and_keeps_delivering(tmp_path, mock):
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")  # STATE_DIRECTORY names a file: the default database cannot be created there
    relay = Relay.start(GUNICORN_COMMAND, environ_for(mock, STATE_URL=None, STATE_DIRECTORY=str(not_a_directory)),
                        output_dir=tmp_path)
    try:
        answer = relay.post_webhook(body(1))
        assert answer.status_code == 200
        log = relay.log()
        warnings = [line for line in log.splitlines() if "state is kept in memory" in line]
        assert len(warnings) == 1 and "WARNING" in warnings[0], log
        assert "Traceback" not in log
        # The journal writes behind delivery (a post's events a moment later): wait for it, as a reader would.
        wait_until(lambda: relay.http.get(f"{relay.base_url}/api/v1/alerts", timeout=5).json()["alerts"], 10,
                   "the journal (in memory) to list the alert")
    finally:
        relay.stop()


def test_an_unusable_state_url_someone_set_is_a_configuration_error(tmp_path, mock):
    environ = environ_for(mock, STATE_URL=f"sqlite:///{tmp_path}/missing/state.sqlite3")
    finished = run_to_exit(GUNICORN_COMMAND, env=environ, cwd=REPO, output_dir=tmp_path, name="gunicorn",
                           timeout_seconds=15)
    assert finished.returncode == 2, finished.stderr
    lines = [line for line in finished.stderr.splitlines() if "configuration error" in line]
    assert len(lines) == 1 and "STATE_URL=" in lines[0], finished.stderr
    assert "Traceback" not in finished.stderr and "Booting worker" not in finished.stderr


def test_check_config_opens_a_state_url_someone_set_and_says_when_the_default_falls_back(tmp_path, mock):
    bad = environ_for(mock, STATE_URL=f"sqlite:///{tmp_path}/missing/state.sqlite3")
    finished = run_to_exit((*DEV_SERVER_COMMAND, "--check-config"), env=bad, cwd=REPO, output_dir=tmp_path,
                           name="check-bad", timeout_seconds=15)
    assert finished.returncode == 2 and "STATE_URL=" in finished.stderr, finished.stderr
    fallback = environ_for(mock, STATE_URL=None, STATE_DIRECTORY="/proc")
    finished = run_to_exit((*DEV_SERVER_COMMAND, "--check-config"), env=fallback, cwd=REPO,
                           output_dir=tmp_path, name="check-fallback", timeout_seconds=15)
    assert finished.returncode == 0, finished.stderr
    assert "state: memory:// (lost at restart)" in finished.stdout
    assert list(Path("/proc").glob(".rocketchat-webhook-check-*")) == []


def test_the_development_server_writes_the_journal_before_it_stops_on_sigterm(tmp_path, mock):
    database = tmp_path / "state.sqlite3"
    relay = Relay.start(DEV_SERVER_COMMAND, environ_for(mock, STATE_URL=f"sqlite:///{database}"),
                        output_dir=tmp_path)
    try:
        assert relay.post_webhook(body(7)).status_code == 200
        relay.begin_stop()  # at once, as make run's Ctrl-C or kill does: no time for the writer's batch to pass
        assert relay.process.wait(15) is not None
    finally:
        relay.stop()
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT count(*) FROM notifications").fetchone()[0] == 1
        assert connection.execute("SELECT count(*) FROM deliveries").fetchone()[0] == 1
        assert connection.execute("SELECT count(*) FROM groups").fetchone()[0] == 1
