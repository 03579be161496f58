"""The one HTTP client to Twilio's Messages API: owns its session and timeouts, and classifies every answer.

Twilio's contract (twilio-facts.md, twilio.com/docs/sms/api/message-resource, /docs/api/errors): a form-encoded POST
to /2010-04-01/Accounts/{AccountSid}/Messages.json with HTTP Basic (AccountSid:AuthToken or ApiKeySid:ApiKeySecret)
creates one message and answers 201 with its JSON ({"sid": "SM…", "status": "queued", "num_segments": "1", …});
a refusal answers {"code": N, "message": "…", "more_info": "…", "status": S}. Twilio has no idempotency key for
this call, so the caller de-duplicates before the POST, and this client says when an answer was lost after the
request may have reached Twilio (lost_in_transit): a retry then may send a second SMS, which beats none.

Phone numbers leave this module only masked ("…567"), and the auth token or API key secret never.
"""

from __future__ import annotations

import base64
import email.utils
import enum
import math
import re
import time
from dataclasses import dataclass, field, replace
from typing import Mapping
from urllib.parse import quote, urlencode

import requests
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError

from ...bounded_http import AnswerTooLarge, DeadlineExceeded, WatchedAdapter, bounded_post
from ...client import describe_exception, parse_json
from ...redact import Redactor
from ...safetext import clean_text, cut_chars, masked_number, one_line
from .segments import MAX_BODY_CHARS, body_length

DEFAULT_API_URL = "https://api.twilio.com"
# A little above a multiple of 3 s, the TCP retransmission interval (requests' documented advice).
CONNECT_TIMEOUT_SECONDS = 3.05
# Connect to last byte: Twilio answers a create in well under a second; a hung edge cannot hold a worker longer.
TOTAL_TIMEOUT_SECONDS = 10.0
# A Message resource's JSON is about 1 KiB; an answer far larger is not Twilio's.
MAX_ANSWER_BYTES = 256 * 1024
REASON_MAX_CHARS = 300


class SmsOutcome(enum.Enum):
    SENT = "sent"  # Twilio created the message (queued/accepted); delivery is reported by status callbacks
    TRANSIENT = "transient"  # retry with backoff: 20429, 5xx, network errors, answers that are not Twilio's
    OPTED_OUT = "opted_out"  # 21610: the recipient replied STOP; START lifts it
    PERMANENT = "permanent"  # refused for this recipient or message: never retried
    AUTH_FAILED = "auth_failed"  # 20003 / HTTP 401: the credentials are wrong, every message fails
    CONFIG_ERROR = "config_error"  # the sender or the account is wrong: every message fails until someone fixes it


# Twilio's error codes (twilio.com/docs/api/errors/N). A code decides before the HTTP status does.
CODE_OUTCOMES = {
    20003: SmsOutcome.AUTH_FAILED,  # authentication failed
    20429: SmsOutcome.TRANSIENT,  # too many concurrent requests: "never processed and always safe to retry"
    21610: SmsOutcome.OPTED_OUT,  # attempt to send to an unsubscribed recipient
    21211: SmsOutcome.PERMANENT,  # invalid 'To' number
    21408: SmsOutcome.PERMANENT,  # no permission to send to that region
    21608: SmsOutcome.PERMANENT,  # trial account: the number is not verified
    21614: SmsOutcome.PERMANENT,  # 'To' is not a mobile number
    21602: SmsOutcome.PERMANENT,  # body missing (a bug of ours: send() refuses an empty body)
    21617: SmsOutcome.PERMANENT,  # body over 1600 characters (a bug of ours: send() refuses it)
    21604: SmsOutcome.PERMANENT,  # 'To' missing (a bug of ours)
    21212: SmsOutcome.CONFIG_ERROR,  # invalid 'From' number
    21603: SmsOutcome.CONFIG_ERROR,  # neither 'From' nor 'MessagingServiceSid'
    21606: SmsOutcome.CONFIG_ERROR,  # 'From' is not a message-capable Twilio number for this account
    21659: SmsOutcome.CONFIG_ERROR,  # 'From' is not a Twilio number, or a short code in another country
    21660: SmsOutcome.CONFIG_ERROR,  # 'From' belongs to another account than the credentials'
    21661: SmsOutcome.CONFIG_ERROR,  # 'From' is not SMS-capable
    # Account-level: nothing is sent until the account is active again.
    10001: SmsOutcome.CONFIG_ERROR,  # account is not active (suspended)
    20005: SmsOutcome.CONFIG_ERROR,  # account not active (no funds, trial not activated)
    20403: SmsOutcome.CONFIG_ERROR,  # 403: the account lacks permission to use the API (suspended or closed)
}
HINTS = {
    SmsOutcome.AUTH_FAILED: "check TWILIO_ACCOUNT_SID and the auth token or API key",
    SmsOutcome.OPTED_OUT: "the recipient replied STOP; replying START lets messages through again",
}
TRANSIT_NOTE = "the request may have reached Twilio"

# Phone numbers as they appear in free text (Twilio's messages quote the To number): E.164, a "+" and 7 to 15
# digits, maybe grouped by spaces, dots, dashes or parentheses; or a bare run of 7 to 15 digits standing alone (not
# inside a SID, a hex token or a decimal number).
_E164_IN_TEXT = re.compile(r"\+\d(?:[ .()-]{0,2}\d){6,14}(?!\d)")
_BARE_NUMBER_IN_TEXT = re.compile(r"(?<![\w+.])\d{7,15}(?![\w])")
# Twilio's SIDs are two letters and 32 hex digits; anything far from that is not a SID worth keeping.
_SID = re.compile(r"[A-Za-z]{2}[A-Za-z0-9]{1,62}")


def mask_numbers(text: str) -> str:
    """The text with every phone-number-like run replaced by its masked form."""
    text = _E164_IN_TEXT.sub(lambda match: masked_number(match.group()), text)
    return _BARE_NUMBER_IN_TEXT.sub(lambda match: masked_number(match.group()), text)


@dataclass(frozen=True)
class TwilioCredentials:
    """Who sends: the account, how it authenticates, and the sender (a From number or a Messaging Service)."""

    account_sid: str
    username: str  # the account SID, or an API key's SID (SK…)
    password: str = field(repr=False)  # the auth token, or the API key's secret
    from_number: str = field(default="", repr=False)  # a phone number: never in a repr or a log line
    messaging_service_sid: str = ""
    api_url: str = DEFAULT_API_URL
    # The account's auth token when known: only it checks status callbacks' signatures (an API key secret cannot).
    auth_token: str = field(default="", repr=False)

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(secret for secret in (self.password, self.auth_token) if secret))

    @property
    def messages_url(self) -> str:
        return f"{self.api_url.rstrip('/')}/2010-04-01/Accounts/{quote(self.account_sid, safe='')}/Messages.json"


@dataclass(frozen=True)
class SmsResult:
    """What one attempt to send an SMS came to; reason names no full phone number and no secret."""

    outcome: SmsOutcome
    http_status: int | None  # None when no answer arrived
    code: int | None  # Twilio's error code
    sid: str = ""
    twilio_status: str = ""  # queued (From) or accepted (MessagingServiceSid only), …
    segments: int | None = None  # Twilio's num_segments: what the message is billed as
    reason: str = ""
    # The request may have reached Twilio but its answer was lost (read timeout, reset after sending, a gateway's
    # 502/504, a 2xx that is not Twilio's JSON): the caller retries, and logs that a second SMS may result.
    lost_in_transit: bool = False
    retry_after_seconds: float | None = None  # from Retry-After on 429/503
    elapsed_ms: float = 0.0


def _int_or_none(value: object) -> int | None:
    """An integer from Twilio's JSON, which writes some as strings (num_segments: "1")."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def retry_after_seconds(headers: Mapping[str, str], now_epoch_seconds: float) -> float | None:
    """Seconds from a Retry-After header (a number of seconds or an HTTP date); None when absent or unusable."""
    value = str(headers.get("Retry-After", "")).strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - now_epoch_seconds
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        seconds = max(0.0, seconds)  # a date already past: retry now
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _outcome_by_status(status: int) -> SmsOutcome:
    """The outcome of an answer whose code (if any) the table does not know."""
    if status == 401:
        return SmsOutcome.AUTH_FAILED
    if status == 404:
        # Twilio's 20404 on the Messages URL itself: a wrong TWILIO_API_URL or account SID, for every message.
        return SmsOutcome.CONFIG_ERROR
    if status in (408, 429) or status >= 500 or 300 <= status < 400:
        # Not processed (408, 429), Twilio's side (5xx), or a redirect that is not followed (a POST would become a
        # GET): retried, as Rocket.Chat's are.
        return SmsOutcome.TRANSIENT
    if 400 <= status < 500:
        return SmsOutcome.PERMANENT
    return SmsOutcome.TRANSIENT


def _classify(status: int, headers: Mapping[str, str], body_text: str, now_epoch_seconds: float) -> SmsResult:
    """One answer classified; its reason is Twilio's raw text, which the client redacts and masks."""
    parsed = parse_json(body_text)
    is_twilio_json = isinstance(parsed, dict)  # Twilio answers every call with a JSON object
    document = parsed if isinstance(parsed, dict) else {}
    if 200 <= status < 300:
        sid = document.get("sid")
        if isinstance(sid, str) and _SID.fullmatch(sid):
            twilio_status = document.get("status") if isinstance(document.get("status"), str) else ""
            segments = _int_or_none(document.get("num_segments"))
            if twilio_status in ("failed", "undelivered"):
                # Created, but failed at once: another POST would create (and bill) another message.
                message = document.get("error_message") if isinstance(document.get("error_message"), str) else ""
                return SmsResult(
                    SmsOutcome.PERMANENT, status, _int_or_none(document.get("error_code")), sid, twilio_status,
                    segments, f"Twilio created the message as {twilio_status}: {message}".rstrip(": "),
                )
            return SmsResult(SmsOutcome.SENT, status, None, sid, twilio_status, segments)
        what = "JSON without a message sid" if is_twilio_json else "a body that is not JSON"
        # Something answered yes without Twilio's answer (a proxy?): Twilio may or may not have created the message.
        return SmsResult(
            SmsOutcome.TRANSIENT, status, _int_or_none(document.get("code")),
            reason=f"HTTP {status} with {what}: not Twilio's answer; {TRANSIT_NOTE}", lost_in_transit=True,
        )
    code = _int_or_none(document.get("code"))
    message = document.get("message") if isinstance(document.get("message"), str) else ""
    outcome = CODE_OUTCOMES.get(code) if code is not None else None
    outcome = outcome or _outcome_by_status(status)
    if code is not None:
        reason = f"Twilio error {code} (HTTP {status})" + (f": {message}" if message else "")
    elif is_twilio_json and message:
        reason = f"HTTP {status}: {message}"
    else:
        reason = f"HTTP {status}, an answer that is not Twilio's JSON (a proxy in front?)"
    if 300 <= status < 400:
        reason += "; redirects are not followed: if it lasts, check TWILIO_API_URL"
    elif outcome in HINTS:
        reason += f" ({HINTS[outcome]})"
    # A gateway's 502 or 504 says it lost Twilio's answer: the message may exist.
    lost = outcome is SmsOutcome.TRANSIENT and status in (502, 504)
    if lost:
        reason += f"; {TRANSIT_NOTE}"
    wait = retry_after_seconds(headers, now_epoch_seconds) if status in (429, 503) else None
    return SmsResult(outcome, status, code, reason=reason, lost_in_transit=lost, retry_after_seconds=wait)


def _transport_failure(error: requests.RequestException) -> tuple[SmsOutcome, str, bool]:
    """Outcome, reason and lost-in-transit of an exchange that got no answer.

    Only a failure to connect proves the request never left; after the connection, a reset or a silence may come
    after Twilio read the request, so it counts as lost in transit.
    """
    reason = describe_exception(error)  # names no URL: requests puts it, account SID included, in str(error)
    if isinstance(error, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                          requests.exceptions.InvalidSchema)):
        return SmsOutcome.CONFIG_ERROR, f"{reason}: check TWILIO_API_URL", False
    if isinstance(error, (requests.ConnectTimeout, requests.exceptions.SSLError, requests.exceptions.ProxyError)):
        return SmsOutcome.TRANSIENT, reason, False
    if isinstance(error, requests.Timeout):
        return SmsOutcome.TRANSIENT, f"{reason}; {TRANSIT_NOTE}", True
    if isinstance(error, requests.ConnectionError):
        cause = error.args[0] if error.args else None
        if isinstance(cause, MaxRetryError):
            cause = cause.reason
        if isinstance(cause, (NewConnectionError, ConnectTimeoutError)):  # refused, unresolvable, unreachable
            return SmsOutcome.TRANSIENT, reason, False
        return SmsOutcome.TRANSIENT, f"{reason}; {TRANSIT_NOTE}", True
    return SmsOutcome.TRANSIENT, reason, False  # refused by requests before anything was sent


def _well_formed(text: str) -> str:
    """A surrogate pair held as two code points joined, a lone surrogate replaced by U+FFFD: the form encodes as
    UTF-8 (a lone surrogate can come from JSON's "\\ud83d" escape)."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


class TwilioClient:
    """Sends SMS through Twilio's Messages API over one pooled session.

    Only one sender is named: From when credentials.from_number is set (the number the operator chose), else
    MessagingServiceSid (Twilio then picks a sender from the service's pool and answers "accepted"). Sending both
    would make Twilio require From to be in that pool (error 21660) for nothing gained.
    """

    def __init__(
        self,
        credentials: TwilioCredentials,
        *,
        redactor: Redactor | None = None,
        session: requests.Session | None = None,
        connect_timeout_seconds: float = CONNECT_TIMEOUT_SECONDS,
        total_timeout_seconds: float = TOTAL_TIMEOUT_SECONDS,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ):
        self.credentials = credentials
        # The secrets are added to a shared redactor too: whatever else it cleans is then clean of them.
        self.redactor = redactor or Redactor()
        basic = base64.b64encode(f"{credentials.username}:{credentials.password}".encode("utf-8")).decode("ascii")
        for secret in (*credentials.secrets, basic):
            self.redactor.add(secret)
        self._authorization = f"Basic {basic}"
        self.connect_timeout_seconds = connect_timeout_seconds
        self.total_timeout_seconds = total_timeout_seconds
        self.max_answer_bytes = max_answer_bytes
        self._owns_session = session is None
        if session is None:
            session = requests.Session()
            # SMS are few: a small pool; no retries inside urllib3, whose retry of a POST could send a second SMS.
            adapter = WatchedAdapter(pool_connections=2, pool_maxsize=4, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.headers["User-Agent"] = "rocketchat-webhook"
            session.headers["Accept"] = "application/json"
            # Answers are small; uncompressed leaves no decompression to bound (read_capped still would).
            session.headers["Accept-Encoding"] = "identity"
        self.session = session

    def send(self, to: str, body: str, *, status_callback: str = "") -> SmsResult:
        """POST one message; never raises for HTTP or network problems: every failure is a classified SmsResult.

        ValueError for an empty body or recipient, or a body over MAX_BODY_CHARS: a bug of the caller's, never sent.
        """
        body = _well_formed(body)
        if not body.strip():
            raise ValueError("an SMS body must not be empty")
        if body_length(body) > MAX_BODY_CHARS:
            raise ValueError(f"an SMS body is at most {MAX_BODY_CHARS} characters (UTF-16 units); fit it first")
        if not to.strip():
            raise ValueError("an SMS needs a recipient")
        started = time.monotonic()
        credentials = self.credentials
        if not credentials.from_number and not credentials.messaging_service_sid:
            return SmsResult(  # what Twilio would answer (21603), without asking it
                SmsOutcome.CONFIG_ERROR, None, 21603,
                reason="neither a From number nor a Messaging Service SID is configured",
            )
        try:
            result = self._send(to, body, status_callback)
        except Exception as error:  # noqa: BLE001 - anything unexpected is a transient failure, never a dead worker
            result = SmsResult(
                SmsOutcome.TRANSIENT, None, None,
                reason=f"request failed ({type(error).__name__}); {TRANSIT_NOTE}", lost_in_transit=True,
            )
        return replace(result, reason=self._clean(result.reason, to),
                       elapsed_ms=(time.monotonic() - started) * 1000)

    def _send(self, to: str, body: str, status_callback: str) -> SmsResult:
        credentials = self.credentials
        form = [("To", to)]
        if credentials.from_number:
            form.append(("From", credentials.from_number))
        else:
            form.append(("MessagingServiceSid", credentials.messaging_service_sid))
        form.append(("Body", body))
        if status_callback:
            form.append(("StatusCallback", status_callback))
        try:
            answer = bounded_post(
                self.session, credentials.messages_url, urlencode(form).encode("ascii"),
                headers={"Content-Type": "application/x-www-form-urlencoded", "Authorization": self._authorization},
                connect_timeout_seconds=self.connect_timeout_seconds,
                total_timeout_seconds=self.total_timeout_seconds, max_answer_bytes=self.max_answer_bytes,
            )
        except DeadlineExceeded as error:
            return self._no_answer(SmsOutcome.TRANSIENT, f"{error}; {TRANSIT_NOTE}", lost=True)
        except AnswerTooLarge:  # an answer came, so the request arrived somewhere
            # In KiB: a byte count of 7 digits would read as a phone number to mask_numbers.
            return self._no_answer(
                SmsOutcome.TRANSIENT,
                f"the answer is larger than {self.max_answer_bytes / 1024:g} KiB: not Twilio's; {TRANSIT_NOTE}",
                lost=True,
            )
        except requests.RequestException as error:
            outcome, reason, lost = _transport_failure(error)
            return self._no_answer(outcome, reason, lost=lost)
        except (ValueError, OSError) as error:  # a corrupt compressed body, a socket error outside requests
            return self._no_answer(
                SmsOutcome.TRANSIENT, f"unreadable answer ({type(error).__name__}); {TRANSIT_NOTE}", lost=True
            )
        return _classify(answer.status, answer.headers, answer.body_text, time.time())

    @staticmethod
    def _no_answer(outcome: SmsOutcome, reason: str, *, lost: bool) -> SmsResult:
        return SmsResult(outcome, None, None, reason=reason, lost_in_transit=lost)

    def _clean(self, reason: str, to: str) -> str:
        """A reason fit for logs: secrets redacted first (masking could break a secret that the redactor then no
        longer finds), then the recipient and every other number masked, on one line, short."""
        reason = self.redactor(one_line(clean_text(reason)))
        if to:
            reason = reason.replace(to, masked_number(to))
        return cut_chars(mask_numbers(reason), REASON_MAX_CHARS)

    def close(self) -> None:
        """Close the session when it is this client's own (a session passed in belongs to its owner)."""
        if self._owns_session:
            self.session.close()
