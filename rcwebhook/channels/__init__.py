"""Channels: each knows one destination kind's contract (render a batch, send it, classify the answer).

The delivery core (hookqueue, dispatcher) calls a channel through this shape only and never imports one:

    render(batch) -> dict          the message one post carries (plain text when batch.plain_text)
    send(hook, message, *, timeout_seconds) -> PostResult   never raises; the answer classified
    close() -> None
"""

from __future__ import annotations

from typing import Protocol

from ..hookqueue import Batch, Hook
from ..outcome import PostResult


class Channel(Protocol):
    def render(self, batch: Batch) -> dict: ...

    def send(self, hook: Hook, message: dict, *, timeout_seconds: float) -> PostResult: ...

    def close(self) -> None: ...
