"""The event bus between delivery and the journal / live feed: never blocks, never dies, keeps order."""

from __future__ import annotations

import logging
import threading

from rcwebhook.events import AlertsReceived, EventBus
from rcwebhook.model import Notification


def received(size_bytes: int) -> AlertsReceived:
    return AlertsReceived("r", "default", Notification(()), (), 0.0, size_bytes)


def test_subscribers_get_every_event_in_order_the_journal_before_the_live_feed():
    seen: list[tuple[str, object]] = []
    bus = EventBus()
    bus.subscribe(lambda batch: seen.extend(("journal", event) for event in batch))
    bus.subscribe(lambda batch: seen.extend(("live", event) for event in batch))
    bus.start()
    try:
        events = [received(10) for _ in range(5)]
        for event in events:
            bus.publish(event)
        assert bus.flush(5.0)
        assert [event for who, event in seen if who == "journal"] == events
        assert [event for who, event in seen if who == "live"] == events
        first_live = next(index for index, (who, _) in enumerate(seen) if who == "live")
        assert seen[first_live - 1][0] == "journal"  # a batch reaches the journal first
    finally:
        bus.stop()


def test_a_stuck_subscriber_never_blocks_publishing_and_the_bound_counts_body_bytes(caplog):
    release = threading.Event()
    dropped = []
    bus = EventBus(max_pending_bytes=1000, on_dropped=dropped.append)
    bus.subscribe(lambda batch: release.wait(10))  # a disk that hangs
    bus.start()
    try:
        bus.publish(received(10))
        assert not bus.flush(0.2)  # taken by the stuck subscriber
        with caplog.at_level(logging.ERROR, logger="rcwebhook.events"):
            for _ in range(5):
                bus.publish(received(300))  # three fit in 1000 bytes, two are dropped
        assert len(dropped) == 2
        assert [r.levelname for r in caplog.records] == ["ERROR"], "one ERROR, not one per dropped event"
    finally:
        release.set()
        bus.stop()


def test_a_subscriber_that_raises_does_not_stop_the_others_or_the_thread(caplog):
    got = []

    def broken(batch):
        raise RuntimeError("bug")

    bus = EventBus()
    bus.subscribe(broken)
    bus.subscribe(got.extend)
    bus.start()
    try:
        with caplog.at_level(logging.ERROR, logger="rcwebhook.events"):
            bus.publish(received(1))
            assert bus.flush(5.0)
            bus.publish(received(2))
            assert bus.flush(5.0)
        assert [event.size_bytes for event in got] == [1, 2]
        assert bus.thread.is_alive()
        assert "internal error in an event subscriber" in caplog.text
    finally:
        bus.stop()
