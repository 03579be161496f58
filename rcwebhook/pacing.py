"""Pacing posts to one hook URL so Rocket.Chat's rate limiter is never tripped (pure: the clock is passed in)."""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass

# Rocket.Chat's default: 10 requests per 60 s per hook URL per client (API_Enable_Rate_Limiter_Limit_Calls_Default,
# ..._Time_Default), counting refused and failed requests too.
DEFAULT_RATE_LIMIT_TEXT = "10/60s"
RATE_LIMIT_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*(s|m)?\s*$")
# While fewer than this share of the window's posts were made, a post goes at once (3 of Rocket.Chat's 10); past
# it, posts are spaced so that waiting notifications share them and the rest of the budget lasts the window.
BURST_SHARE = 0.3
# Within that burst, after the first post, a short hold lets notifications arriving together (a storm's groups come
# within a second) share the next post rather than spend the burst on one group each.
BURST_GAP_SECONDS = 0.5
# A wait Rocket.Chat asks for (429) is honoured up to its window plus this margin: its own limiter's window is
# a minute, so a longer wait is a skewed clock or a broken proxy, and obeying it would silence a channel.
WAIT_MARGIN_SECONDS = 5.0
# The window assumed for that cap when pacing is off: Rocket.Chat's default (API_Enable_Rate_Limiter_Limit_Time_Default).
ROCKETCHAT_WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class RateLimit:
    """At most `count` posts in any trailing `window_seconds`; count 0 switches pacing off."""

    count: int
    window_seconds: float

    @property
    def enabled(self) -> bool:
        return self.count > 0

    def __str__(self) -> str:
        return f"{self.count}/{self.window_seconds:g}s" if self.enabled else "off"

    @property
    def max_wait_seconds(self) -> float:
        """The longest wait Rocket.Chat may impose on us: its window plus a margin."""
        return (self.window_seconds if self.enabled else ROCKETCHAT_WINDOW_SECONDS) + WAIT_MARGIN_SECONDS


def parse_rate_limit(text: str) -> RateLimit:
    """ "10/60s" (or "10/60", "10/1m") → RateLimit; "0" or "off" → pacing off. ValueError when unreadable."""
    cleaned = text.strip().lower()
    if cleaned in ("0", "off"):
        return RateLimit(0, 0.0)
    match = RATE_LIMIT_PATTERN.match(cleaned)
    if not match:
        raise ValueError(f"expected <posts>/<seconds>s such as {DEFAULT_RATE_LIMIT_TEXT}, or 0 for off")
    count, window = int(match.group(1)), float(match.group(2))
    if match.group(3) == "m":
        window *= 60
    if count <= 0 or window <= 0:
        raise ValueError("posts and seconds must both be above 0 (use 0 alone to switch pacing off)")
    return RateLimit(count, window)


class PostBudget:
    """The attempts made to one hook URL in the trailing window, and when the next one may go."""

    def __init__(self, limit: RateLimit):
        self.limit = limit
        self.attempt_times: collections.deque[float] = collections.deque()
        # What Rocket.Chat's own X-RateLimit-* headers said: another client may share the budget.
        self.server_remaining: int | None = None
        self.server_reset_at: float = 0.0

    def _in_window(self, at: float) -> list[float]:
        """The attempts inside the window that ends at `at` (which may lie ahead: nothing is forgotten here)."""
        return [time for time in self.attempt_times if time > at - self.limit.window_seconds]

    def used(self, now: float) -> int:
        return len(self._in_window(now))

    def record_attempt(self, at: float) -> None:
        """Count one post. Rocket.Chat counts on arrival, which is no later than when its answer came back."""
        if self.limit.enabled:
            self.attempt_times.append(at)
            while self.attempt_times[0] <= at - self.limit.window_seconds:
                self.attempt_times.popleft()
        if self.server_remaining is not None and at < self.server_reset_at:
            self.server_remaining = max(0, self.server_remaining - 1)

    def observe_server(self, now: float, remaining: int | None, reset_in_seconds: float | None) -> None:
        """Follow Rocket.Chat's X-RateLimit-Remaining/-Reset when they leave less than our own count does."""
        if remaining is None or reset_in_seconds is None:
            return
        self.server_remaining = remaining
        self.server_reset_at = now + min(max(0.0, reset_in_seconds), self.limit.max_wait_seconds)

    def block_until(self, at: float) -> None:
        """Rocket.Chat answered 429: nothing more until its window reopens."""
        self.server_remaining = 0
        self.server_reset_at = max(self.server_reset_at, at)

    def earliest_post_at(self, now: float, last_post_at: float | None) -> float:
        """When the next post may go: the hard limit, Rocket.Chat's word, then spacing as the budget runs low."""
        server_knows = self.server_remaining is not None and now < self.server_reset_at
        if server_knows and self.server_remaining == 0:
            # Rocket.Chat's window is spent: nothing before it reopens; then a fresh window on its side, so from
            # there only our own count and spacing apply.
            return max(self.server_reset_at, self._own_earliest(self.server_reset_at, last_post_at, None))
        return self._own_earliest(now, last_post_at, self.server_remaining if server_knows else None)

    def _own_earliest(self, now: float, last_post_at: float | None, server_remaining: int | None) -> float:
        if not self.limit.enabled:
            return now
        recent = self._in_window(now)
        used = len(recent)
        count, window = self.limit.count, self.limit.window_seconds
        if used >= count:
            # The oldest attempt in the window must leave it first.
            return max(now, recent[used - count] + window)
        if server_remaining is not None:
            used = max(used, count - server_remaining)  # another client shares Rocket.Chat's count
        burst_posts = max(1, int(count * BURST_SHARE))
        if used == 0 or last_post_at is None:
            return now  # a lone alert after a quiet window goes at once
        if used < burst_posts:
            return max(now, last_post_at + min(BURST_GAP_SECONDS, window / count / 4))
        # The even gap that makes the posts left after the burst last the whole window: the first burst post
        # leaves the window just as the last spaced one is due, so a steady stream never meets an empty budget
        # (at 10/60s: 7.5 s between sends, so a request waits at most that plus one post's latency; past the
        # 8 s deadline it is answered 503 and its re-send joins the queued work).
        gap_seconds = window / (count - burst_posts + 1)
        return max(now, last_post_at + gap_seconds)

    def posts_possible(self, now: float, last_post_at: float | None, horizon_seconds: float, *,
                       at_most: int = 64) -> int:
        """How many posts pacing would let go from now until now + horizon_seconds (pure: a copy is spent)."""
        trial = PostBudget(self.limit)
        trial.attempt_times = collections.deque(self.attempt_times)
        trial.server_remaining, trial.server_reset_at = self.server_remaining, self.server_reset_at
        at, last, posts = now, last_post_at, 0
        while posts < at_most:
            at = trial.earliest_post_at(at, last)
            if at > now + horizon_seconds:
                break
            trial.record_attempt(at)
            last, posts = at, posts + 1
        return posts

    def seconds_until_post(self, now: float, last_post_at: float | None) -> float:
        return max(0.0, self.earliest_post_at(now, last_post_at) - now)
