"""The one HTTP client to Rocket.Chat: owns the session and timeouts, and classifies every answer."""

from __future__ import annotations

import enum
import email.utils
import json
import math
import re
import time
from dataclasses import dataclass
from typing import Callable, Mapping

import requests
from requests.adapters import HTTPAdapter

from .redact import Redactor

# A little above a multiple of 3 s, the TCP retransmission interval (requests' documented advice).
CONNECT_TIMEOUT_SECONDS = 3.05
READ_TIMEOUT_SECONDS = 5.0
REASON_MAX_CHARS = 300
# Errors that no change of content can fix (rocketchat-contract.md): they need an operator, so no fallback is tried.
SCRIPT_ERROR_MARKER = "error-running-script"
PERMANENT_ERROR_MARKERS = (
    "invalid-channel",
    "error-not-allowed",
    "overriding destination channel is disabled",
    SCRIPT_ERROR_MARKER,
)
WAIT_SECONDS_PATTERN = re.compile(r"wait (\d+(?:\.\d+)?) seconds")
WRONG_TOKEN_HINT = (
    "current Rocket.Chat servers answer a wrong hook id or token with a plain-text 500: check the webhook URL"
)


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


def _header_number(headers: Mapping[str, str], name: str) -> float | None:
    try:
        value = float(headers.get(name, ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def rate_limit_wait_seconds(headers: Mapping[str, str], body_text: str, now_epoch_seconds: float) -> float | None:
    """Seconds until Rocket.Chat's rate-limit window reopens, from X-RateLimit-Reset or the body's text."""
    reset_ms = _header_number(headers, "X-RateLimit-Reset")
    if reset_ms is not None:
        # Reset is the server's clock in epoch milliseconds: read it against the answer's Date, not our clock.
        server_now = now_epoch_seconds
        date_header = headers.get("Date")
        if date_header:
            try:
                server_now = email.utils.parsedate_to_datetime(date_header).timestamp()
            except (TypeError, ValueError):
                pass
        return max(0.0, reset_ms / 1000.0 - server_now)
    match = WAIT_SECONDS_PATTERN.search(body_text)
    return float(match.group(1)) if match else None


_NOT_JSON = object()


def _parse_json(body_text: str) -> object:
    """The answer's JSON, or _NOT_JSON (a deeply nested answer is no answer we understand either)."""
    try:
        return json.loads(body_text)
    except (ValueError, RecursionError):
        return _NOT_JSON


def _error_text(document: object, body_text: str) -> str:
    """Rocket.Chat's error text: the JSON "error" (or "message"), else the body itself."""
    if isinstance(document, dict):
        error = document.get("error") or document.get("message") or ""
        return error if isinstance(error, str) else json.dumps(error)
    return body_text.strip()


def classify_response(
    status: int, headers: Mapping[str, str], body_text: str, now_epoch_seconds: float
) -> tuple[Outcome, str, float | None]:
    """Outcome, reason and requested wait for one HTTP answer from a Rocket.Chat hook (pure)."""
    document = _parse_json(body_text)
    is_json = document is not _NOT_JSON
    error_text = _error_text(document, body_text)
    if 200 <= status < 300:
        if isinstance(document, dict) and document.get("success") is True:
            return Outcome.DELIVERED, "", None
        # Rocket.Chat answers 200 {"success": true} for everything it posts; anything else was not posted.
        return Outcome.CONTENT_REFUSED, f"answered {status} without \"success\": true", None
    if status == 429:
        wait = rate_limit_wait_seconds(headers, body_text, now_epoch_seconds)
        return Outcome.TRANSIENT, error_text or "rate limited", wait
    if status == 404:
        return Outcome.PERMANENT, f"{error_text or 'not found'} (a 404 means a wrong hook id or token)", None
    if status in (401, 403):
        return Outcome.PERMANENT, f"{error_text or 'forbidden'} (refused by Rocket.Chat or a proxy in front)", None
    if status == 400:
        if any(marker in error_text for marker in PERMANENT_ERROR_MARKERS):
            return Outcome.PERMANENT, error_text, None
        return Outcome.CONTENT_REFUSED, error_text or "bad request", None
    if status == 413:  # a proxy's body limit: a smaller message may pass
        return Outcome.CONTENT_REFUSED, error_text or "request entity too large", None
    if 300 <= status < 400:
        # Redirects are not followed (a POST would turn into a GET): often a maintenance page, sometimes a hook
        # URL that needs https:// or another host.
        return Outcome.TRANSIENT, f"redirected (HTTP {status}); if it lasts, check the hook URL", None
    if status == 408 or status >= 500:
        reason = error_text or f"HTTP {status}"
        if status == 500 and not is_json:
            reason = f"{reason} ({WRONG_TOKEN_HINT})"
        if status == 503 and "Service Unavailable" in error_text:
            reason = f"{reason} (the integration may be disabled in Rocket.Chat)"
        return Outcome.TRANSIENT, reason, None
    return Outcome.PERMANENT, error_text or f"HTTP {status}", None


def describe_exception(error: requests.RequestException) -> str:
    """A URL-free description of a transport failure (requests puts the URL, token included, in str(error))."""
    if isinstance(error, requests.ConnectTimeout):
        return "connect timeout"
    if isinstance(error, requests.Timeout):
        return "read timeout: no answer in time"
    if isinstance(error, requests.ConnectionError):
        text = str(error).lower()
        if "refused" in text:
            return "connection refused"
        if "name or service not known" in text or "nodename nor servname" in text or "resolve" in text:
            return "host name lookup failed"
        if "certificate" in text or "ssl" in text:
            return "TLS error (see REQUESTS_CA_BUNDLE for a private CA)"
        return "connection failed"
    return f"request failed ({type(error).__name__})"


class RocketChatClient:
    """Posts messages to Rocket.Chat hooks over one pooled session."""

    def __init__(
        self,
        redactor: Redactor | None = None,
        *,
        connect_timeout_seconds: float = CONNECT_TIMEOUT_SECONDS,
        read_timeout_seconds: float = READ_TIMEOUT_SECONDS,
        pool_size: int = 32,
        wall_clock: Callable[[], float] = time.time,
    ):
        self.redactor = redactor or Redactor()
        self.connect_timeout_seconds = connect_timeout_seconds
        self.read_timeout_seconds = read_timeout_seconds
        self.wall_clock = wall_clock
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = "rocketchat-webhook"

    def post(self, url: str, message: dict, *, timeout_seconds: float | None = None) -> PostResult:
        """POST one message; never raises for HTTP or transport failures."""
        # ASCII-only JSON: a lone surrogate from the input stays valid JSON, and Rocket.Chat silently drops
        # any body it cannot parse while answering 200 (rocketchat-contract.md).
        body = json.dumps(message, ensure_ascii=True, allow_nan=False).encode("ascii")
        read_timeout = self.read_timeout_seconds
        if timeout_seconds is not None:
            read_timeout = max(0.1, min(read_timeout, timeout_seconds))
        connect_timeout = min(self.connect_timeout_seconds, read_timeout)
        started = time.monotonic()
        try:
            response = self.session.post(
                url,
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=(connect_timeout, read_timeout),
                allow_redirects=False,
            )
            body_text = response.text
        except requests.RequestException as error:
            elapsed_ms = (time.monotonic() - started) * 1000
            return PostResult(Outcome.TRANSIENT, None, describe_exception(error), elapsed_ms)
        elapsed_ms = (time.monotonic() - started) * 1000
        outcome, reason, wait = classify_response(
            response.status_code, response.headers, body_text, self.wall_clock()
        )
        remaining = _header_number(response.headers, "X-RateLimit-Remaining")
        reset_seconds = None
        if "X-RateLimit-Reset" in response.headers:
            reset_seconds = rate_limit_wait_seconds(response.headers, "", self.wall_clock())
        return PostResult(
            outcome,
            response.status_code,
            self.redactor(reason)[:REASON_MAX_CHARS],
            elapsed_ms,
            wait,
            int(remaining) if remaining is not None else None,
            reset_seconds,
        )

    def close(self) -> None:
        self.session.close()
