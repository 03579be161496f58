"""Threads (ROCKETCHAT_THREADS): which alerts of a notification reply in the thread of the message that announced
them, and the memory of those messages (pure: no I/O; the dispatcher feeds it and the Store keeps it).

A firing post's message is the thread of every alert occurrence it carried (the first one wins). Later, a resolved
alert, and a firing one re-sent unchanged (a reminder: notification_reason says the repeat interval elapsed, or,
from an Alertmanager before 0.32, the group re-sent with nothing new), reply there. A notification that adds a new
firing alert goes to the channel as Alertmanager sent it; only its resolved alerts reply.
"""

from __future__ import annotations

import collections
from dataclasses import replace
from typing import Iterable, Sequence

from .fingerprint import alert_occurrence
from .hookqueue import Part
from .model import FIRING, RESOLVED, Alert
from .store import ThreadMessage

# Thread ids remembered, all hooks together; past it the oldest are forgotten (their alerts then go to the channel,
# as before threads); about 350 bytes each.
MAX_TRACKED_THREADS = 100_000


class ThreadIndex:
    """(hook, occurrence) → the id of the message that announced it, oldest forgotten first past the bound."""

    def __init__(self, max_threads: int = MAX_TRACKED_THREADS):
        self.max_threads = max_threads
        self.messages: collections.OrderedDict[tuple[str, str], str] = collections.OrderedDict()
        self.resolved: set[tuple[str, str]] = set()  # shown resolved since: no firing reply goes there

    def message_for(self, hook_key: str, alert_id: str, *, firing: bool = False) -> str | None:
        """The occurrence's thread; for a firing alert, only while it has not been shown resolved (a re-fire after
        a resolve is a new page for the channel, never a reply in an old thread)."""
        if firing and (hook_key, alert_id) in self.resolved:
            return None
        return self.messages.get((hook_key, alert_id))

    def mark_resolved(self, hook_key: str, alert_id: str) -> None:
        if (hook_key, alert_id) in self.messages:
            self.resolved.add((hook_key, alert_id))

    def remember(self, hook_key: str, alert_id: str, message_id: str) -> bool:
        """True when this is the occurrence's first message (its thread), or its first since it was shown resolved;
        a later one never replaces it."""
        key = (hook_key, alert_id)
        if key in self.messages and key not in self.resolved:
            return False
        self.resolved.discard(key)
        self.messages.pop(key, None)
        self.messages[key] = message_id
        while len(self.messages) > self.max_threads:
            forgotten, _ = self.messages.popitem(last=False)
            self.resolved.discard(forgotten)
        return True

    def restore(self, records: Iterable[ThreadMessage]) -> int:
        restored = 0
        for record in records:
            restored += self.remember(record.hook_key, record.alert_id, record.message_id)
        return restored


def parts_of(part: Part, layout) -> list[Part]:
    """The part split as layout says: (reply_to, alert indexes) per piece, in order."""
    looks = part.looks

    def piece(reply_to, indexes) -> Part:
        return replace(part, alerts=tuple(part.alerts[index] for index in indexes),
                       looks=tuple(looks[index] for index in indexes) if looks else (), reply_to=reply_to)

    return [piece(reply_to, indexes) for reply_to, indexes in layout]


def split_layout(alerts: Sequence[Alert], threads_of: dict[int, str | None], reply_capacity: int, *,
                 notification_reason: str) -> list[tuple[str | None, tuple[int, ...]]]:
    """How a hook's alerts are posted: (reply_to, alert indexes) per post, the channel's (reply_to None) first; one
    channel post of all the alerts when nothing replies. parts_of() makes the parts; a copy of the notification
    reuses the layout.

    Alerts with no thread, and new firing ones, go to the channel; the others reply, one post per thread.
    threads_of gives, per index into alerts, the thread (message id) its occurrence has, or None. Beyond
    reply_capacity threads (what pacing can post within the delivery deadline), the alerts of the rest go to the
    channel post too, so a storm resolving at once does not wait for, or spend the budget on, replies.
    """
    firing = [index for index, alert in enumerate(alerts) if alert.status == FIRING]
    # A reminder re-sends only alerts already announced; one new firing alert makes it an update for the channel.
    # Alertmanager 0.32+ says why it sends: then only "repeat" is a reminder; before, an unchanged re-send is one.
    if notification_reason.strip():
        says_reminder = "repeat" in notification_reason.lower()
    else:  # unchanged: nothing resolved since (a resolved alert makes it an update)
        says_reminder = len(firing) == len(alerts)
    reminder = says_reminder and bool(firing) and all(threads_of.get(index) for index in firing)
    reply_indexes: dict[str, list[int]] = {}
    channel: list[int] = []
    for index, alert in enumerate(alerts):
        thread = threads_of.get(index)
        if thread and (alert.status == RESOLVED or reminder):
            reply_indexes.setdefault(thread, []).append(index)
        else:
            channel.append(index)
    replies = list(reply_indexes.items())
    if len(replies) > reply_capacity:
        for _, indexes in replies[reply_capacity:]:
            channel.extend(indexes)
        replies = replies[:reply_capacity]
        channel.sort()
    if not replies:
        return [(None, tuple(range(len(alerts))))]
    layout = [(None, tuple(channel))] if channel else []
    return layout + [(thread, tuple(indexes)) for thread, indexes in replies]


def occurrence_ids(alerts: Sequence[Alert]) -> list[str]:
    return [alert_occurrence(alert.fingerprint, alert.labels, alert.starts_at)[0] for alert in alerts]
