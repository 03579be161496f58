"""Who may post: the webhook token (rotatable without a restart) and the slowing of failed authentications."""

from __future__ import annotations

import collections
import hmac
import logging
import os
import threading
import time
from typing import Callable

logger = logging.getLogger("rcwebhook.auth")

# Failed authentications allowed per client address in the trailing window before 429.
MAX_FAILURES_PER_WINDOW = 20
# ... and from all addresses together: guesses spread over many addresses (a botnet, a /64 of IPv6) are slowed too.
MAX_FAILURES_PER_WINDOW_ALL_ADDRESSES = 200
FAILURE_WINDOW_SECONDS = 60.0
# Bounds the memory of the failure counter under a spray of source addresses.
MAX_TRACKED_ADDRESSES = 10_000
# How often the token file's modification time is looked at.
TOKEN_FILE_CHECK_SECONDS = 1.0


class TokenSource:
    """The accepted tokens: WEBHOOK_TOKEN or the file in WEBHOOK_TOKEN_FILE (re-read when it changes), and
    WEBHOOK_TOKEN_PREVIOUS while it is set."""

    def __init__(
        self,
        token: str,
        token_file: str = "",
        previous_token: str = "",
        on_new_token: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        setting_name: str = "WEBHOOK_TOKEN_FILE",
    ):
        self.setting_name = setting_name  # what log lines call the file: the variable, or the routes file's key
        self._missing_logged = False
        self.token = token
        self.token_file = token_file
        self.previous_token = previous_token
        self.on_new_token = on_new_token or (lambda token: None)
        self.clock = clock
        self._lock = threading.Lock()
        self._file_mtime_ns = self._mtime_ns()
        self._next_check = clock() + TOKEN_FILE_CHECK_SECONDS

    @property
    def enabled(self) -> bool:
        return bool(self.token)

    def _mtime_ns(self) -> int | None:
        if not self.token_file:
            return None
        try:
            return os.stat(self.token_file).st_mtime_ns
        except OSError:
            return None

    def _refresh(self) -> None:
        """Re-read the token file when its modification time changed (a rotation without a restart)."""
        if not self.token_file or self.clock() < self._next_check:
            return
        with self._lock:
            self._next_check = self.clock() + TOKEN_FILE_CHECK_SECONDS
            mtime_ns = self._mtime_ns()
            if mtime_ns is None:
                if not self._missing_logged:  # once: the check runs every second
                    self._missing_logged = True
                    logger.error("%s cannot be read any more; keeping the current token", self.setting_name)
                return
            self._missing_logged = False
            if mtime_ns == self._file_mtime_ns:
                return
            try:
                with open(self.token_file, encoding="utf-8") as handle:
                    new_token = handle.read().strip()
            except OSError as error:
                logger.error("cannot re-read %s (%s); keeping the current token", self.setting_name, error.strerror)
                return
            self._file_mtime_ns = mtime_ns
            if not new_token:
                logger.error("%s is empty; keeping the current token", self.setting_name)
                return
            if new_token != self.token:
                self.on_new_token(new_token)  # registered as a secret before it can appear anywhere
                self.token = new_token
                logger.warning("%s changed: the new token is in force", self.setting_name)

    def accepts(self, presented: str) -> bool:
        """Constant-time comparison against every accepted token (all are compared, whatever matches)."""
        self._refresh()
        presented_bytes = presented.encode("utf-8")
        matched = False
        for token in (self.token, self.previous_token):
            if token:
                matched |= hmac.compare_digest(presented_bytes, token.encode("utf-8"))
        return matched


class FailedAuthLimiter:
    """Counts failed authentications per client address and in total; only failures are ever slowed.

    A request with the right token is never counted here, so no volume of wrong guesses can lock Alertmanager out.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_per_address: int = MAX_FAILURES_PER_WINDOW,
        max_all_addresses: int = MAX_FAILURES_PER_WINDOW_ALL_ADDRESSES,
    ):
        self.clock = clock
        self.max_per_address = max_per_address
        self.max_all_addresses = max_all_addresses
        self._lock = threading.Lock()
        self._failures: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()
        # Only the latest max_all_addresses + 1 times are needed to know whether the total is over.
        self._all_failures: collections.deque[float] = collections.deque(maxlen=max_all_addresses + 1)

    def record_failure(self, address: str) -> str | None:
        """Count one failure; when a limit is now exceeded, which one ("address" or "all"), else None."""
        now = self.clock()
        with self._lock:
            times = self._failures.pop(address, None) or collections.deque()
            while times and times[0] <= now - FAILURE_WINDOW_SECONDS:
                times.popleft()
            times.append(now)
            self._failures[address] = times  # most recent last
            while len(self._failures) > MAX_TRACKED_ADDRESSES:
                self._failures.popitem(last=False)
            self._all_failures.append(now)
            if len(times) > self.max_per_address:
                return "address"
            all_full = len(self._all_failures) > self.max_all_addresses
            if all_full and self._all_failures[0] > now - FAILURE_WINDOW_SECONDS:
                return "all"
            return None
