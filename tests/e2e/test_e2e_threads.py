"""Threads through the real pipeline: Alertmanager with the shipped configuration, the relay under gunicorn with
ROCKETCHAT_THREADS=true, and mock_server.py answering separateResponse with the message's id. An alert resolved
through Alertmanager's API replies in the thread of the message that announced it firing."""

from __future__ import annotations

import pytest

from tests.e2e.stack import HTTP_TIMEOUT_SECONDS, alert, dump_json, resolving, unique_names
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e

ARRIVAL_SECONDS = 30.0  # group_wait 0 s and group_interval 1 s in the adapted configuration: far more than needed


def critical_records(mock) -> list[dict]:
    """The critical hook's records with their message id and tmid (MockProcess.messages() keeps only the message)."""
    answer = mock.http.get(f"{mock.base_url}/_mock/messages/critical", timeout=HTTP_TIMEOUT_SECONDS)
    answer.raise_for_status()
    return answer.json()["messages"]


def naming(records: list[dict], name: str) -> list[dict]:
    return [record for record in records if name in str(record["message"])]


def wait_for_records(mock, name: str, count: int) -> list[dict]:
    """Wait until `count` records of the critical hook name the alert; those records, oldest first."""
    def arrived():
        found = naming(critical_records(mock), name)
        return found if len(found) >= count else None

    try:
        return wait_until(arrived, ARRIVAL_SECONDS, f"{count} message(s) naming {name}")
    except AssertionError as error:
        raise AssertionError(f"{error}; the mock holds:\n{dump_json(critical_records(mock))}") from None


def test_an_alert_resolved_through_alertmanager_replies_in_its_firing_messages_thread(stack):
    mock = stack.start_mock()
    relay = stack.start_relay(stack.relay_settings(mock, ROCKETCHAT_THREADS="true"))
    manager = stack.start_alertmanager(relay)
    name = unique_names("E2EThread", "critical")["critical"]
    fired = [alert(name, "critical")]

    manager.post_alerts(fired)
    [firing] = wait_for_records(mock, name, 1)
    assert firing["message"].get("separateResponse") is True and firing["tmid"] is None

    manager.post_alerts(resolving(fired))
    first, reply = wait_for_records(mock, name, 2)
    assert first["message_id"] == firing["message_id"]
    assert reply["tmid"] == firing["message_id"], dump_json(critical_records(mock))
    assert "separateResponse" not in reply["message"]
    assert "RESOLVED" in str(reply["message"]).upper()
