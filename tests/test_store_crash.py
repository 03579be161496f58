"""A writer killed (SIGKILL) in the middle of its writes leaves a sound SQLite file that still holds every commit."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from rcwebhook.store.sqlite import SQLiteStore

REPO = Path(__file__).resolve().parent.parent
ALERTS_PER_BATCH = 200
ROUNDS = 5

# Writes batches as fast as it can and prints the number of each batch once it is committed.
WRITER = textwrap.dedent("""
    import sys
    from rcwebhook.store import AlertSeen, Delivery, NotificationRecord, WriteBatch
    from rcwebhook.store.sqlite import SQLiteStore

    path, round_name, per_batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = SQLiteStore(path)
    batch_number = 0
    while True:
        ids = [f"{round_name}-{batch_number}-{n}" for n in range(per_batch)]
        store.write(WriteBatch(
            alerts=[AlertSeen(id=i, fingerprint=i, starts_at="2024-05-01T10:00:00Z", ends_at="", alertname="Load",
                              status="firing", severity="warning", integration="rc",
                              labels={"instance": i, "pad": "x" * 200}, annotations={"summary": "high " * 20},
                              received_at=float(batch_number)) for i in ids],
            deliveries=[Delivery(alert_id=i, destination="ops", at=batch_number + 0.5, outcome="delivered",
                                 status=200) for i in ids],
            notifications=[NotificationRecord(id=f"{round_name}-{batch_number}", request_id="r", integration="rc",
                                              group_key="g", receiver="team", firing=per_batch, resolved=0,
                                              status_code=200, ms=1.0, received=float(batch_number))],
        ))
        print(batch_number, flush=True)
        batch_number += 1
""")


def test_a_writer_killed_mid_write_leaves_a_sound_file_with_every_commit(tmp_path):
    path = tmp_path / "state.sqlite3"
    committed_alerts = 0
    for round_number in range(ROUNDS):
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"r{round_number}", str(ALERTS_PER_BATCH)],
                                 cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # Wait for a varying number of commits, then kill it while it is writing the next batch.
            for _ in range(2 + 3 * round_number):
                line = child.stdout.readline()
                assert line, child.communicate(timeout=10)[1]
            child.send_signal(signal.SIGKILL)
            last_committed = int(line)
            child.communicate(timeout=10)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert child.returncode == -signal.SIGKILL
        committed_alerts += (last_committed + 1) * ALERTS_PER_BATCH

        with sqlite3.connect(path) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        store = SQLiteStore(str(path))
        counts = store.counts()
        store.close()
        # Every batch the child reported is there; a batch it was writing when killed is all in or all out.
        assert counts["alerts"] >= committed_alerts > 0
        assert counts["alerts"] % ALERTS_PER_BATCH == 0
        assert counts["alerts"] == counts["notifications"] * ALERTS_PER_BATCH
        committed_alerts = counts["alerts"]
