"""Delivering one notification's messages within the deadline, and what the answer to Alertmanager is."""

from __future__ import annotations

import concurrent.futures
import logging
import math
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from .client import Outcome, PostResult, RocketChatClient
from .config import Destination
from .formatting import validate_message
from .model import Alert

logger = logging.getLogger("rcwebhook.delivery")

# Capped exponential backoff with ±50 % jitter between attempts on a transient failure.
BACKOFF_FIRST_SECONDS = 0.25
BACKOFF_CAP_SECONDS = 2.0
# Answer Alertmanager this much before the deadline so the answer itself is never late.
DEADLINE_MARGIN_SECONDS = 0.2
DEFAULT_RETRY_AFTER_SECONDS = 5


class DeliveryState:
    DELIVERED = "delivered"
    DELIVERED_PLAIN_TEXT = "delivered_plain_text"
    REFUSED = "refused"  # Rocket.Chat refused it for good: 502
    FAILED = "failed"  # transient failure not overcome within the deadline: 503


@dataclass(frozen=True)
class PlannedMessage:
    """One hook's message for one notification, with its plain-text fallback."""

    destination: Destination
    alerts: tuple[Alert, ...]
    message: dict
    plain_text_message: dict


@dataclass(frozen=True)
class DeliveryReport:
    """How one hook's message fared; reason never contains a URL or token."""

    destination: str
    alert_count: int
    state: str
    status: int | None
    reason: str
    attempts: int
    elapsed_ms: float
    retry_after_seconds: float | None = None

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


class Deliverer:
    """Posts planned messages with retries inside a deadline; the request thread never waits past it."""

    def __init__(
        self,
        client: RocketChatClient,
        *,
        deadline_seconds: float,
        max_parallel_posts: int = 32,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        jitter: Callable[[], float] | None = None,
    ):
        self.client = client
        self.deadline_seconds = deadline_seconds
        self.clock = clock
        self._stopping = threading.Event()
        # Waiting on the event rather than time.sleep lets shutdown cut a backoff short.
        self.sleep = sleep or (lambda seconds: self._stopping.wait(seconds))
        self.jitter = jitter or (lambda: random.uniform(0.5, 1.5))
        self.executor = concurrent.futures.ThreadPoolExecutor(max_parallel_posts, thread_name_prefix="post")

    def deliver(self, planned: Sequence[PlannedMessage]) -> list[DeliveryReport]:
        """Deliver every hook's message in parallel; a hook not done by the deadline is reported as failed."""
        deadline = self.clock() + self.deadline_seconds - DEADLINE_MARGIN_SECONDS
        futures = [self.executor.submit(self.deliver_one, item, deadline) for item in planned]
        # The deadline is enforced here, where the request waits, whatever the outbound call is doing (a hung
        # DNS lookup is not bounded by requests' timeouts).
        concurrent.futures.wait(futures, timeout=max(0.0, deadline - self.clock()))
        reports = []
        for item, future in zip(planned, futures):
            if future.done():
                reports.append(future.result())
            else:
                report = DeliveryReport(
                    item.destination.name, len(item.alerts), DeliveryState.FAILED, None,
                    "no answer from Rocket.Chat within the delivery deadline", 0, self.deadline_seconds * 1000,
                )
                log_delivery(report)
                reports.append(report)
        return reports

    def deliver_one(self, item: PlannedMessage, deadline: float) -> DeliveryReport:
        """Post the rich message, falling back to plain text when Rocket.Chat refuses the content."""
        started = self.clock()
        attempts = 0
        message = item.message
        problems = validate_message(message)
        plain_text = False
        if problems:
            # Our own bug, caught before Rocket.Chat could silently drop or refuse it.
            logger.error(
                "message for %s breaks the Rocket.Chat contract (%s); sending the plain-text version",
                item.destination, "; ".join(problems[:3]),
            )
            message, plain_text = item.plain_text_message, True
        while True:
            result, tries = self._post_until_not_transient(item.destination, message, deadline)
            attempts += tries
            if result.outcome is Outcome.DELIVERED:
                state = DeliveryState.DELIVERED_PLAIN_TEXT if plain_text else DeliveryState.DELIVERED
                reason = ""
            elif result.outcome is Outcome.CONTENT_REFUSED and not plain_text:
                logger.error(
                    "Rocket.Chat refused the message for %s (HTTP %s: %s); sending the plain-text version",
                    item.destination, result.status, result.reason,
                )
                message, plain_text = item.plain_text_message, True
                continue
            elif result.outcome is Outcome.TRANSIENT:
                state, reason = DeliveryState.FAILED, result.reason
            else:
                state, reason = DeliveryState.REFUSED, result.reason
            report = DeliveryReport(
                item.destination.name, len(item.alerts), state, result.status, reason, attempts,
                (self.clock() - started) * 1000,
                retry_after_seconds=result.wait_seconds if state == DeliveryState.FAILED else None,
            )
            log_delivery(report)
            return report

    def _post_until_not_transient(
        self, destination: Destination, message: dict, deadline: float
    ) -> tuple[PostResult, int]:
        attempt = 0
        while True:
            attempt += 1
            result = self.client.post(destination.url, message, timeout_seconds=deadline - self.clock())
            if result.outcome is not Outcome.TRANSIENT:
                return result, attempt
            if result.wait_seconds is not None:
                wait = result.wait_seconds  # a 429: wait until the window reopens
            else:
                wait = min(BACKOFF_CAP_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** (attempt - 1)) * self.jitter()
            logger.warning(
                "post to %s failed (attempt %d, HTTP %s: %s)", destination, attempt, result.status, result.reason
            )
            if self._stopping.is_set() or self.clock() + wait >= deadline:
                return result, attempt
            self.sleep(wait)

    def close(self) -> None:
        self._stopping.set()
        self.executor.shutdown(wait=False, cancel_futures=True)


def log_delivery(report: DeliveryReport) -> None:
    level = logging.INFO if report.delivered else logging.ERROR
    if report.state == DeliveryState.DELIVERED_PLAIN_TEXT:
        level = logging.WARNING
    logger.log(
        level,
        "delivery destination=%s outcome=%s status=%s alerts=%d attempts=%d ms=%.0f%s",
        report.destination, report.state, report.status, report.alert_count, report.attempts, report.elapsed_ms,
        f" reason={report.reason!r}" if report.reason else "",
    )


def answer_status(reports: Sequence[DeliveryReport]) -> tuple[int, int | None]:
    """The HTTP status for Alertmanager and, for a 503, the Retry-After seconds."""
    failed = [report for report in reports if report.state == DeliveryState.FAILED]
    if failed:
        # 5xx makes Alertmanager retry; a 4xx would lose the alert until the next group_interval.
        waits = [report.retry_after_seconds for report in failed if report.retry_after_seconds is not None]
        return 503, max(1, math.ceil(max(waits))) if waits else DEFAULT_RETRY_AFTER_SECONDS
    if any(report.state == DeliveryState.REFUSED for report in reports):
        return 502, None
    return 200, None
