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
from typing import Iterable

from .fingerprint import alert_occurrence
from .hookqueue import Part
from .model import FIRING, RESOLVED
from .store import ThreadMessage

# Thread ids remembered per hook; past it the oldest are forgotten (their alerts then go to the channel, as today).
MAX_TRACKED_THREADS = 100_000


class ThreadIndex:
    """Occurrence → the id of the message that announced it, per hook, oldest forgotten first past the bound."""

    def __init__(self, max_threads: int = MAX_TRACKED_THREADS):
        self.max_threads = max_threads
        self.messages: collections.OrderedDict[tuple[str, str], str] = collections.OrderedDict()

    def message_for(self, hook_key: str, alert_id: str) -> str | None:
        return self.messages.get((hook_key, alert_id))

    def remember(self, hook_key: str, alert_id: str, message_id: str) -> bool:
        """True when this is the occurrence's first message (its thread); a later one never replaces it."""
        key = (hook_key, alert_id)
        if key in self.messages:
            return False
        self.messages[key] = message_id
        while len(self.messages) > self.max_threads:
            self.messages.popitem(last=False)
        return True

    def restore(self, records: Iterable[ThreadMessage]) -> int:
        restored = 0
        for record in records:
            restored += self.remember(record.hook_key, record.alert_id, record.message_id)
        return restored


def split_for_threads(part: Part, threads_of: dict[int, str | None], reply_capacity: int, *,
                      notification_reason: str) -> list[Part]:
    """The part as one channel part (alerts with no thread, or new firing ones) and one reply part per thread.

    threads_of gives, per index into part.alerts, the thread (message id) its occurrence has, or None. Beyond
    reply_capacity threads (what pacing can post within the delivery deadline), the alerts of the rest go to the
    channel part too, so a storm resolving at once does not wait for, or spend the budget on, replies. The caller
    keeps a repeat of the group's latest notification (an HA peer's copy) whole, so it joins what it repeats.
    """
    alerts, looks = part.alerts, part.looks or (None,) * len(part.alerts)
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
        return [part]

    def subset(indexes: list[int], reply_to: str | None) -> Part:
        kept_looks = tuple(looks[index] for index in indexes) if part.looks else ()
        return replace(part, alerts=tuple(alerts[index] for index in indexes), looks=kept_looks, reply_to=reply_to)

    split = [subset(channel, None)] if channel else []
    return split + [subset(indexes, thread) for thread, indexes in replies]


def occurrence_ids(part: Part) -> list[str]:
    return [alert_occurrence(alert.fingerprint, alert.labels, alert.starts_at)[0] for alert in part.alerts]
