"""The one HTTP client to Rocket.Chat: owns the session and timeouts, and classifies every answer."""

from __future__ import annotations

import email.utils
import json
import math
import re
import time
from typing import Callable, Mapping

import requests

from .bounded_http import AnswerTooLarge, DeadlineExceeded, WatchedAdapter, bounded_post
from .outcome import Outcome, PostResult
from .redact import Redactor

# A little above a multiple of 3 s, the TCP retransmission interval (requests' documented advice).
CONNECT_TIMEOUT_SECONDS = 3.05
# The whole exchange, connect to last byte: a server that drips its answer cannot hold a hook's worker longer.
EXCHANGE_TIMEOUT_SECONDS = 5.0
# Rocket.Chat answers a webhook with well under 1 KiB of JSON; anything far larger is not its answer.
MAX_ANSWER_BYTES = 1024 * 1024
REASON_MAX_CHARS = 300
# Rocket.Chat's "error-running-script": the hook's script failed, maybe on one alert of a merged post only.
SCRIPT_ERROR_MARKER = "error-running-script"
# Errors that no change of content can fix (rocketchat-contract.md): they need an operator, so no fallback is tried.
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


def _header_number(headers: Mapping[str, str], name: str) -> float | None:
    """A finite number from a header, else None (garbage, NaN and infinities are no answer)."""
    try:
        value = float(str(headers.get(name, "")).strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _server_now(headers: Mapping[str, str], now_epoch_seconds: float) -> float:
    """The server's clock from its Date header, or ours when it sent none we can read."""
    date_header = headers.get("Date")
    if date_header:
        try:
            server_now = email.utils.parsedate_to_datetime(date_header).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return now_epoch_seconds
        if math.isfinite(server_now):
            return server_now
    return now_epoch_seconds


def rate_limit_wait_seconds(headers: Mapping[str, str], body_text: str, now_epoch_seconds: float) -> float | None:
    """Seconds until Rocket.Chat's rate-limit window reopens, from X-RateLimit-Reset or the body's text.

    None when neither says anything usable: a reset in the past, a negative or unreadable value. Waits that are
    merely long are returned as they are; the hook's queue caps them at its pacing window.
    """
    reset_ms = _header_number(headers, "X-RateLimit-Reset")
    if reset_ms is not None:
        # Reset is the server's clock in epoch milliseconds: read it against the answer's Date, not our clock.
        wait = reset_ms / 1000.0 - _server_now(headers, now_epoch_seconds)
        if wait >= 0 and math.isfinite(wait):
            return wait
    match = WAIT_SECONDS_PATTERN.search(body_text)
    if match:
        wait = float(match.group(1))
        return wait if math.isfinite(wait) else None
    return None


NOT_JSON = object()


def parse_json(body_text: str) -> object:
    """An answer's JSON, or NOT_JSON (a deeply nested answer is no answer we understand either); the Twilio client
    reads its answers with it too."""
    try:
        return json.loads(body_text)
    except (ValueError, RecursionError):
        return NOT_JSON


def _error_text(document: object, body_text: str) -> str:
    """Rocket.Chat's error text: the JSON "error" (or "message"), else the body itself."""
    if isinstance(document, dict):
        error = document.get("error") or document.get("message") or ""
        return error if isinstance(error, str) else json.dumps(error)
    return body_text.strip()


# Rocket.Chat's ids are 17 alphanumerics (Meteor's Random.id()); custom ones stay within this.
MESSAGE_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def message_id_of(body_text: str) -> str | None:
    """The posted message's id, which Rocket.Chat gives only with "separateResponse": true (servers since mid-2025):
    {"success":true,"responses":[{"channel":..,"message":{"_id":..}}]}; None otherwise (the pure webhook answer)."""
    document = parse_json(body_text)
    responses = document.get("responses") if isinstance(document, dict) else None
    # One room only: a hook posting to several channels would thread every room's replies into one room's message.
    if not isinstance(responses, list) or len(responses) != 1 or not isinstance(responses[0], dict):
        return None
    message = responses[0].get("message")
    message_id = message.get("_id") if isinstance(message, dict) else None
    if isinstance(message_id, str) and MESSAGE_ID_PATTERN.fullmatch(message_id):
        return message_id
    return None


def _is_rocketchat_refusal(document: object) -> bool:
    """Rocket.Chat's own refusal: a JSON object with "success": false (rocketchat-contract.md, every 4xx it sends)."""
    return isinstance(document, dict) and document.get("success") is False


def classify_response(
    status: int, headers: Mapping[str, str], body_text: str, now_epoch_seconds: float
) -> tuple[Outcome, str, float | None]:
    """Outcome, reason and requested wait for one HTTP answer from a Rocket.Chat hook (pure).

    Only Rocket.Chat's own refusals are refusals; anything unexpected (a proxy's page, a 200 that is not Rocket.Chat's
    JSON, a status the contract does not list) is transient: retried, and answered 503 so Alertmanager retries too,
    never remembered as a refusal that would drop the re-sends.
    """
    document = parse_json(body_text)
    is_json = document is not NOT_JSON
    error_text = _error_text(document, body_text)
    if 200 <= status < 300:
        if isinstance(document, dict) and document.get("success") is True:
            return Outcome.DELIVERED, "", None
        if _is_rocketchat_refusal(document):
            # Rocket.Chat answered but did not post: a different content (the plain-text version) may pass.
            return Outcome.CONTENT_REFUSED, f"answered {status} with \"success\": false: {error_text}".rstrip(": "), None
        what = "a JSON answer without \"success\"" if is_json else "a body that is not JSON"
        return Outcome.TRANSIENT, (
            f"answered {status} with {what}: not Rocket.Chat's answer (a proxy or a maintenance page?)"
        ), None
    if status == 429:
        wait = rate_limit_wait_seconds(headers, body_text, now_epoch_seconds)
        return Outcome.TRANSIENT, error_text or "rate limited", wait
    if status == 404 and _is_rocketchat_refusal(document):
        return Outcome.PERMANENT, f"{error_text or 'not found'} (a 404 means a wrong hook id or token)", None
    if status == 400 and _is_rocketchat_refusal(document):
        if any(marker in error_text for marker in PERMANENT_ERROR_MARKERS):
            return Outcome.PERMANENT, error_text, None
        return Outcome.CONTENT_REFUSED, error_text or "bad request", None
    if status == 413:  # a proxy's body limit: a smaller message (the plain-text version) may pass
        return Outcome.CONTENT_REFUSED, error_text or "request entity too large", None
    if 300 <= status < 400:
        # Redirects are not followed (a POST would turn into a GET): often a maintenance page, sometimes a hook
        # URL that needs https:// or another host.
        return Outcome.TRANSIENT, f"redirected (HTTP {status}); if it lasts, check the hook URL", None
    reason = error_text or f"HTTP {status}"
    if status == 500 and not is_json:
        reason = f"{reason} ({WRONG_TOKEN_HINT})"
    elif status == 503 and "Service Unavailable" in error_text:
        reason = f"{reason} (the integration may be disabled in Rocket.Chat)"
    elif status in (401, 403, 404):
        reason = f"{reason} (HTTP {status}, not Rocket.Chat's JSON: a proxy in front? check the hook URL)"
    elif not (status == 408 or status >= 500):
        reason = f"{reason} (HTTP {status}, an answer Rocket.Chat does not give: retried)"
    return Outcome.TRANSIENT, reason, None


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


def _no_answer(reason: str, started: float) -> PostResult:
    """An attempt that got no usable answer: transient, with the time it took (reason names no URL)."""
    return PostResult(Outcome.TRANSIENT, None, reason, (time.monotonic() - started) * 1000)


class RocketChatClient:
    """Posts messages to Rocket.Chat hooks over one pooled session."""

    def __init__(
        self,
        redactor: Redactor | None = None,
        *,
        connect_timeout_seconds: float = CONNECT_TIMEOUT_SECONDS,
        exchange_timeout_seconds: float = EXCHANGE_TIMEOUT_SECONDS,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        pool_size: int = 32,
        wall_clock: Callable[[], float] = time.time,
    ):
        self.redactor = redactor or Redactor()
        self.connect_timeout_seconds = connect_timeout_seconds
        self.exchange_timeout_seconds = exchange_timeout_seconds
        self.max_answer_bytes = max_answer_bytes
        self.wall_clock = wall_clock
        self.session = requests.Session()
        adapter = WatchedAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = "rocketchat-webhook"
        # Answers are tiny; asking for them uncompressed leaves no decompression to bound (read_capped still does).
        self.session.headers["Accept-Encoding"] = "identity"

    def post(self, url: str, message: dict, *, timeout_seconds: float | None = None) -> PostResult:
        """POST one message; never raises: every failure is a classified PostResult.

        timeout_seconds bounds the whole exchange (connect to last byte), at most exchange_timeout_seconds.
        """
        started = time.monotonic()
        try:
            return self._post(url, message, timeout_seconds, started)
        except Exception as error:  # noqa: BLE001 - anything unexpected is a transient failure, never a dead worker
            return _no_answer(f"request failed ({type(error).__name__})", started)

    def _post(self, url: str, message: dict, timeout_seconds: float | None, started: float) -> PostResult:
        # ASCII-only JSON: a lone surrogate from the input stays valid JSON, and Rocket.Chat silently drops
        # any body it cannot parse while answering 200 (rocketchat-contract.md).
        body = json.dumps(message, ensure_ascii=True, allow_nan=False).encode("ascii")
        total_timeout = self.exchange_timeout_seconds
        if timeout_seconds is not None:
            total_timeout = max(0.1, min(total_timeout, timeout_seconds))
        try:
            answer = bounded_post(
                self.session, url, body, headers={"Content-Type": "application/json"},
                connect_timeout_seconds=self.connect_timeout_seconds, total_timeout_seconds=total_timeout,
                max_answer_bytes=self.max_answer_bytes,
            )
        except DeadlineExceeded as error:
            return _no_answer(f"read timeout: {error}", started)
        except AnswerTooLarge as error:
            return _no_answer(str(error), started)
        except requests.RequestException as error:
            return _no_answer(describe_exception(error), started)
        except (ValueError, OSError) as error:  # a corrupt compressed body, a socket error outside requests
            return _no_answer(f"unreadable answer ({type(error).__name__})", started)
        elapsed_ms = (time.monotonic() - started) * 1000
        now = self.wall_clock()
        outcome, reason, wait = classify_response(answer.status, answer.headers, answer.body_text, now)
        remaining = _header_number(answer.headers, "X-RateLimit-Remaining")
        reset_seconds = None
        if "X-RateLimit-Reset" in answer.headers:
            reset_seconds = rate_limit_wait_seconds(answer.headers, "", now)
        return PostResult(
            outcome,
            answer.status,
            self.redactor(reason)[:REASON_MAX_CHARS],
            elapsed_ms,
            wait,
            int(remaining) if remaining is not None and 0 <= remaining < 2**31 else None,
            reset_seconds,
            content_dependent=SCRIPT_ERROR_MARKER in reason,  # a script may fail on one alert of a merged post
            message_id=message_id_of(answer.body_text) if outcome is Outcome.DELIVERED else None,
        )

    def close(self) -> None:
        self.session.close()
