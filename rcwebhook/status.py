"""What the status page shows, gathered from the journal, the delivery core and the live feed (no Flask here)."""

from __future__ import annotations

import time
from typing import Callable

from . import __version__
from .journal import Journal, JournalUnavailable, rfc3339
from .timefmt import parse_timestamp

FIRING_SHOWN = 200  # each is a card: a page of thousands would cost every viewer's refresh
RESOLVED_SHOWN = 25
NOTIFICATIONS_SHOWN = 25
SMS_SHOWN = 25


def _fired_for_seconds(alert: dict, now: float) -> int:
    started = parse_timestamp(alert["starts_at"]) if alert["starts_at"] else None
    since = started.timestamp() if started is not None else None
    if since is None or since > now:
        received = parse_timestamp(alert["first_received"] or "")
        since = received.timestamp() if received is not None else now
    return max(0, int(now - since))


class StatusView:
    def __init__(self, journal: Journal, pacing: Callable[[], list[dict]], live_clients: Callable[[], tuple[int, int]],
                 *, stale_after_seconds: float, wall_clock: Callable[[], float] = time.time,
                 sms_enabled: bool = False):
        self.journal = journal
        self.sms_enabled = sms_enabled
        self.stale_after_seconds = stale_after_seconds
        self.pacing = pacing
        self.live_clients = live_clients
        self.wall_clock = wall_clock

    def snapshot(self) -> dict:
        now = self.wall_clock()
        journal_state = self.journal.state()
        try:
            firing = self.journal.alerts(status="firing", limit=FIRING_SHOWN)
            resolved = self.journal.alerts(status="resolved", limit=RESOLVED_SHOWN, newest_by="resolved_at")
            notifications = self.journal.notifications(limit=NOTIFICATIONS_SHOWN)
        except JournalUnavailable as error:
            firing, resolved, notifications = [], [], []
            journal_state = {**journal_state, "available": False, "detail": f"cannot be read: {error}"}
        for alert in firing + resolved:
            alert["fired_for_seconds"] = _fired_for_seconds(alert, now)
        sms = None
        if self.sms_enabled:
            try:
                sms = self.journal.sms(limit=SMS_SHOWN)
            except JournalUnavailable as error:
                sms = {"sms": [], "pending": 0, "opted_out": [], "error": f"cannot be read: {error}"}
        clients, maximum = self.live_clients()
        return {
            "version": __version__,
            "now": rfc3339(now),
            "journal": journal_state,
            "firing": firing,
            "resolved": resolved,
            "notifications": notifications,
            "hooks": self.pacing(),
            "live": {"clients": clients, "max": maximum},
            "stale_after_hours": self.stale_after_seconds / 3600,
            "sms": sms,  # None when no Twilio is configured
        }
