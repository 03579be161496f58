"""What one attempt to deliver came to: the words a channel classifies its answers in, and the core acts on."""

from __future__ import annotations

import enum
from dataclasses import dataclass

class Outcome(enum.Enum):
    DELIVERED = "delivered"
    CONTENT_REFUSED = "content_refused"  # a different content (the plain-text version) may be accepted
    PERMANENT = "permanent"  # no content change can fix it: wrong hook, channel, script, permissions
    TRANSIENT = "transient"  # trying again later may succeed: 5xx, 429, timeout, connection error


@dataclass(frozen=True)
class PostResult:
    """What one POST to a hook came to; reason never contains a URL or a token."""

    outcome: Outcome
    status: int | None  # HTTP status; None when no answer arrived
    reason: str
    elapsed_ms: float = 0.0
    wait_seconds: float | None = None  # how long Rocket.Chat asked us to wait (429)
    rate_limit_remaining: int | None = None  # X-RateLimit-Remaining
    rate_limit_reset_seconds: float | None = None  # X-RateLimit-Reset, as seconds from now
    # A refusal that a different content may avoid, so the core splits a merged post before giving up on it: every
    # content refusal, and what the channel says depends on content (a hook's script failing on one alert).
    content_dependent: bool = False
    message_id: str | None = None  # the posted message's id, when Rocket.Chat said it (separateResponse)

    def __post_init__(self) -> None:
        if self.outcome is Outcome.CONTENT_REFUSED:
            object.__setattr__(self, "content_dependent", True)
