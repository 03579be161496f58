"""A shared store (Redis) that the paging path never depends on: while it does not answer, this process's own
memory stands in, and the shared one is used again once it answers (what was remembered alone meanwhile is not
merged back: at worst one copy is posted, or one SMS sent, twice, as at-least-once allows).

Every call first asks the shared store unless it is known to be down; the first failure marks it down (one ERROR,
logged by whoever follows `on_change`) so later calls cost nothing until the probe (shared.py) says it is back.
"""

from __future__ import annotations

import threading
from typing import Callable

from . import StoreError
from .memory import MemoryStore

# The Store's methods, each forwarded as it is (see the Protocol in __init__.py).
FORWARDED = (
    "write", "load_groups", "load_threads", "alerts", "alert", "notifications", "prune", "counts",
    "schedule_sms", "save_sms", "due_sms", "open_sms", "sms", "sms_by_sid", "sms_for_alert", "recent_sms",
    "sms_sent_times", "record_sms_status", "mark_resolved", "resolved_among", "set_opt_out", "opt_outs",
)


class FallbackStore:
    def __init__(self, shared, on_down: Callable[[str], None] = lambda detail: None):
        self.shared = shared
        self.local = MemoryStore()
        self.on_down = on_down
        self._up = True
        self._lock = threading.Lock()
        self.description = shared.description
        for name in FORWARDED:
            setattr(self, name, self._forwarding(name))

    @property
    def up(self) -> bool:
        return self._up

    def set_up(self, up: bool) -> None:
        """The probe's word: Redis answers again (or not). On its return, the SMS still open here (a delayed tier,
        a retry) and the opt-outs learnt meanwhile go to Redis, so none is forgotten there; the rest of what this
        process remembered alone is not merged back."""
        if up and not self._up:
            try:
                self._hand_over()
            except StoreError as error:
                self.on_down(str(error))
                return
        self._up = up

    def _hand_over(self) -> None:
        waiting = self.local.open_sms()
        if waiting:
            self.shared.save_sms(waiting)
        for recipient, at in self.local.opt_outs().items():
            self.shared.set_opt_out(recipient, at)
        self.local = MemoryStore()  # handed over: never decided, nor handed over, twice

    def _forwarding(self, name: str):
        def call(*args, **kwargs):
            if self._up:
                try:
                    return getattr(self.shared, name)(*args, **kwargs)
                except StoreError as error:
                    with self._lock:
                        was_up, self._up = self._up, False
                    if was_up:
                        self.on_down(str(error))
            return getattr(self.local, name)(*args, **kwargs)
        call.__name__ = name
        return call

    def close(self) -> None:
        try:
            self.shared.close()
        finally:
            self.local.close()
