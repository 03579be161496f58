"""What one attempt to deliver came to: the words a channel classifies its answers in, and the core acts on."""

from __future__ import annotations

import enum
from dataclasses import dataclass

# Rocket.Chat's "error-running-script": the hook's script failed, maybe on one alert of a merged post only.
SCRIPT_ERROR_MARKER = "error-running-script"


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

    @property
    def content_dependent(self) -> bool:
        """A refusal that a different content may avoid (a hook's script can fail on one alert of a merged post)."""
        return self.outcome is Outcome.CONTENT_REFUSED or SCRIPT_ERROR_MARKER in self.reason
