"""What one request's jobs came to, and the answer Alertmanager gets for it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from .hookqueue import Job, JobState

DEFAULT_RETRY_AFTER_SECONDS = 5
# Alertmanager is answered this long before DELIVERY_DEADLINE_SECONDS, so the answer itself is never late.
ANSWER_MARGIN_SECONDS = 0.2
STILL_QUEUED_REASON = "not accepted by Rocket.Chat within the delivery deadline; still queued, it goes out with the next post"


def answer_within_seconds(delivery_deadline_seconds: float) -> float:
    """How long after a request arrived its answer is due."""
    return max(0.1, delivery_deadline_seconds - ANSWER_MARGIN_SECONDS)


class DeliveryState:
    DELIVERED = "delivered"
    DELIVERED_PLAIN_TEXT = "delivered_plain_text"
    REFUSED = "refused"  # Rocket.Chat refused it for good: 502
    FAILED = "failed"  # not delivered within the deadline (transient failure or rate limit): 503


@dataclass(frozen=True)
class DeliveryReport:
    """How one hook's part of a request fared; reason never contains a URL or token."""

    destination: str
    alert_count: int
    state: str
    status: int | None
    reason: str

    @classmethod
    def of(cls, job: Job) -> "DeliveryReport":
        if job.finished:
            state = {JobState.REFUSED: DeliveryState.REFUSED,
                     JobState.DELIVERED_PLAIN_TEXT: DeliveryState.DELIVERED_PLAIN_TEXT}.get(
                job.state, DeliveryState.DELIVERED)
            reason = job.reason if state == DeliveryState.REFUSED else ""
        else:
            state = DeliveryState.FAILED
            reason = STILL_QUEUED_REASON + (f" (last answer: {job.reason})" if job.reason else "")
        return cls(job.destination.name, len(job.alerts), state, job.status, reason)

    @property
    def delivered(self) -> bool:
        return self.state in (DeliveryState.DELIVERED, DeliveryState.DELIVERED_PLAIN_TEXT)

    def as_dict(self) -> dict:
        answer = {"destination": self.destination, "outcome": self.state, "alerts": self.alert_count}
        if self.status is not None:
            answer["rocketchat_status"] = self.status
        if self.reason:
            answer["reason"] = self.reason
        return answer


def answer_status(reports: Sequence[DeliveryReport], retry_after_seconds: float = 0.0) -> tuple[int, int | None]:
    """The HTTP status for Alertmanager and, for a 503, the Retry-After seconds."""
    if any(report.state == DeliveryState.FAILED for report in reports):
        # 5xx makes Alertmanager retry; a 4xx would lose the alert until the next group_interval.
        return 503, max(1, math.ceil(retry_after_seconds)) if retry_after_seconds > 0 else DEFAULT_RETRY_AFTER_SECONDS
    if any(report.state == DeliveryState.REFUSED for report in reports):
        return 502, None
    return 200, None
