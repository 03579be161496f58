"""A mock of Twilio's Messages API (spec: twilio-facts.md), served by mock_server.py on the mock's own port.

Independent of the relay on purpose: its segment counting and signing are written from Twilio's documentation, so
the relay's own code is checked against a second implementation rather than against itself.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import email.utils
import hashlib
import hmac
import html
import json
import re
import secrets
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

# Demo credentials (fake): an Account SID of Twilio's shape ("AC" + 32 lowercase hex digits) and a token.
DEFAULT_TWILIO_ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
DEFAULT_TWILIO_AUTH_TOKEN = "mock-twilio-auth-token"
API_VERSION = "2010-04-01"
API_PATH_PREFIX = f"/{API_VERSION}/"
ACCOUNT_IN_PATH = re.compile(r"/2010-04-01/Accounts/(?P<account>[^/]+?)(?:\.json)?(?:/.*)?")
MESSAGES_PATH = re.compile(r"/2010-04-01/Accounts/(?P<account>[^/]+)/Messages\.json")
MESSAGE_PATH = re.compile(r"/2010-04-01/Accounts/(?P<account>[^/]+)/Messages/(?P<sid>[^/]+)\.json")
ACCOUNT_SID = re.compile(r"AC[0-9a-f]{32}")
API_KEY_SID = re.compile(r"SK[0-9a-f]{32}")
MESSAGING_SERVICE_SID = re.compile(r"MG[0-9a-fA-F]{32}")
E164 = re.compile(r"\+[1-9]\d{6,14}")
# The Body limit is "1,600 characters"; the 21617 page adds that non-GSM-7 characters "use more space", so the mock
# takes the stricter reading and counts UTF-16 code units (an emoji outside the BMP counts 2).
MAX_BODY_UTF16_UNITS = 1600
# ValidityPeriod: whole seconds from 1 to 36,000 (10 hours), else 21624.
MAX_VALIDITY_PERIOD_SECONDS = 36000
# StatusCallback: an absolute http(s) URL of at most 4000 characters whose hostname has no underscore (21609).
MAX_STATUS_CALLBACK_CHARS = 4000
DEFAULT_STATUS_DELAY_SECONDS = 0.2  # before "sent", and again before "delivered"
CALLBACK_TIMEOUT_SECONDS = 5.0
# With only a MessagingServiceSid Twilio picks the sender from the service's pool after answering ("from" is null in
# the 201); the mock's pool is one number, the one of Twilio's documentation examples.
MESSAGING_SERVICE_SENDER = "+15017122661"
DELIVERY_FAILURE_STATUSES = ("undelivered", "failed")
DEFAULT_DELIVERY_FAILURE_CODE = 30003  # unreachable destination handset
PRINTED_BODY_MAX_CHARS = 60
SID_HEX_DIGITS = 32

# GSM 03.38 as Twilio's message segment calculator maps it (TwilioDevEd/message-segment-calculator, UnicodeToGSM):
# the basic table without ESC, and the extension table, whose characters take an escape septet (count 2); form
# feed is in the extension table too.
GSM7_BASIC = ("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
              "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM7_EXTENSION = "\f^{}\\[~]|€"
GSM7_CHARACTERS = frozenset(GSM7_BASIC + GSM7_EXTENSION)
# 140 octets per SMS: 160 septets or 70 UCS-2 units; a concatenated part loses 6 octets to its header: 153 / 67.
GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67

# Twilio's words for the answers the mock gives (error dictionary and API answers quoted in its helpers' issues).
MESSAGE_AUTHENTICATE = "Authenticate"
FAULT_DEFAULTS = {  # status -> (code, message) of an injected fault when the caller gives none
    401: (20003, MESSAGE_AUTHENTICATE),
    404: (20404, "The requested resource was not found"),
    429: (20429, "Too Many Requests"),
    500: (20500, "An internal server error has occurred"),
    503: (20503, "Service Unavailable"),
}


@dataclass
class Reply:
    """One HTTP answer of the mock Twilio; `drop` closes the connection without answering (the answer is lost)."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False


def json_reply(status: int, payload, headers: dict[str, str] | None = None) -> Reply:
    """A JSON answer, with a request id as Twilio's answers carry one."""
    request_id = "RQ" + secrets.token_hex(SID_HEX_DIGITS // 2)
    return Reply(status, json.dumps(payload).encode(), "application/json",
                 {"Twilio-Request-Id": request_id, **(headers or {})})


def twilio_error(status: int, code: int | None, message: str, headers: dict[str, str] | None = None) -> Reply:
    """Twilio's error answer: {"code", "message", "more_info", "status"}."""
    more_info = f"https://www.twilio.com/docs/errors/{code}" if code is not None else None
    return json_reply(status, {"code": code, "message": message, "more_info": more_info, "status": status}, headers)


def is_number(value, *, integer: bool = False) -> bool:
    """True for an int (or a float unless `integer`), never for a bool."""
    return not isinstance(value, bool) and isinstance(value, int if integer else (int, float))


def new_sid(prefix: str) -> str:
    """A Twilio SID: two letters and 32 lowercase hex digits."""
    return prefix + secrets.token_hex(SID_HEX_DIGITS // 2)


def rfc2822(timestamp: float) -> str:
    """A date as Twilio's resources give it ("Thu, 30 Jul 2015 20:12:31 +0000"), whatever the locale."""
    return email.utils.format_datetime(datetime.datetime.fromtimestamp(int(timestamp), datetime.timezone.utc))


def utf16_length(text: str) -> int:
    """Length in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def segment_encoding(body: str) -> str:
    """"GSM-7" when every character is in GSM-7's basic or extension table, else "UCS-2"."""
    return "GSM-7" if all(character in GSM7_CHARACTERS for character in body) else "UCS-2"


def count_segments(body: str) -> int:
    """How many SMS segments Twilio bills for this body.

    One segment up to 160 GSM-7 septets (70 UCS-2 units); beyond, parts of 153 (67), filled in order without
    splitting a character: an extension character's two septets, or a surrogate pair, stay in one part.
    (Twilio's calculator keeps a whole grapheme, e.g. an emoji sequence, in one part; the mock splits between code
    points, which differs only for multi-code-point graphemes at a part boundary.)
    """
    if segment_encoding(body) == "GSM-7":
        sizes = [2 if character in GSM7_EXTENSION else 1 for character in body]
        single, part = GSM7_SINGLE, GSM7_PART
    else:
        sizes = [2 if ord(character) > 0xFFFF else 1 for character in body]
        single, part = UCS2_SINGLE, UCS2_PART
    if sum(sizes) <= single:
        return 1
    segments, used = 1, 0
    for size in sizes:
        if used + size > part:
            segments, used = segments + 1, 0
        used += size
    return segments


def twilio_signature(auth_token: str, url: str, params) -> str:
    """X-Twilio-Signature: base64 HMAC-SHA1 keyed with the auth token over the URL, then each POST parameter's
    name and value sorted by name, with no separators (a dict, or (name, value) pairs for repeated names)."""
    pairs = sorted(params.items() if isinstance(params, dict) else params)
    data = url + "".join(name + value for name, value in pairs)
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def parse_form(content_type: str, body: bytes) -> dict[str, str]:
    """The form's fields (first value of each); anything but a form body reads as no fields at all, as at Twilio
    (a JSON body is then answered 21604: no 'To')."""
    if content_type.split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        return {}
    fields = urllib.parse.parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def valid_status_callback(url: str) -> bool:
    """An absolute http(s) URL with a hostname, no underscore in it, at most 4000 characters (else 21609)."""
    try:
        parts = urllib.parse.urlsplit(url)
        hostname = parts.hostname
    except ValueError:
        return False
    return (len(url) <= MAX_STATUS_CALLBACK_CHARS and parts.scheme in ("http", "https") and bool(hostname)
            and "_" not in hostname and not any(character.isspace() for character in url))


def validate_number(number) -> str:
    """An E.164 number, or ValueError."""
    if not isinstance(number, str) or not E164.fullmatch(number):
        raise ValueError(f"not an E.164 number: {number!r}")
    return number


@dataclass
class TwilioFault:
    """An injected answer for the next requests to send a message."""

    status: int | None
    code: int | None
    message: str | None
    delay_seconds: float
    remaining_count: int | None
    expires_at: float | None
    drop: bool

    def reply(self) -> Reply:
        """The injected error answer in Twilio's shape (a 429 is code 20429 "Too Many Requests")."""
        default_code, default_message = FAULT_DEFAULTS.get(self.status, (None, f"mock fault {self.status}"))
        code = self.code if self.code is not None else default_code
        return twilio_error(self.status, code, self.message if self.message is not None else default_message)


class MockTwilio:
    """Twilio's Messages API for one account: sending, fetching, status callbacks, faults and inspection."""

    def __init__(self, *, account_sid: str = DEFAULT_TWILIO_ACCOUNT_SID, auth_token: str = DEFAULT_TWILIO_AUTH_TOKEN,
                 api_keys: dict[str, str] | None = None, opted_out=(), delivery_failures: dict | None = None,
                 status_delay_seconds: float = DEFAULT_STATUS_DELAY_SECONDS, quiet: bool = True, clock=time.time):
        if not isinstance(account_sid, str) or not ACCOUNT_SID.fullmatch(account_sid):
            raise ValueError("the Twilio account SID must be AC followed by 32 lowercase hex digits")
        if not isinstance(auth_token, str) or not auth_token:
            raise ValueError("the Twilio auth token must be a non-empty string")
        api_keys = dict(api_keys or {})
        for key_sid, secret in api_keys.items():
            if not API_KEY_SID.fullmatch(key_sid) or not isinstance(secret, str) or not secret:
                raise ValueError(f"API key {key_sid!r}: SK and 32 lowercase hex digits, with a non-empty secret")
        self.account_sid, self.auth_token, self.api_keys = account_sid, auth_token, api_keys
        self.quiet, self.clock = quiet, clock
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)  # notified on every message, status, callback and reset
        self._messages: list[dict] = []
        self._requests: list[dict] = []
        self._callbacks: list[dict] = []
        self._fault: TwilioFault | None = None
        self._generation = 0  # bumped by reset and stop: deliveries of an older generation stop where they are
        # Configuration at start, restored by reset().
        self._initial_opted_out = [validate_number(number) for number in self._number_list(opted_out)]
        self._initial_failures = {}
        for number, failure in (delivery_failures or {}).items():
            code, status = failure if isinstance(failure, tuple) else (failure, "undelivered")
            self._initial_failures[validate_number(number)] = self._checked_failure(code, status)
        self._initial_delays = self._checked_delays(status_delay_seconds, status_delay_seconds)
        self.reset()

    # -- configuration --
    @staticmethod
    def _number_list(numbers) -> list:
        if isinstance(numbers, str) or not isinstance(numbers, (list, tuple, set, frozenset)):
            raise ValueError("numbers must be a list of E.164 numbers")
        return list(numbers)

    @staticmethod
    def _checked_failure(code, status) -> tuple[int, str]:
        if not (is_number(code, integer=True) and code > 0):
            raise ValueError("a delivery failure code must be a positive integer (e.g. 30003)")
        if status not in DELIVERY_FAILURE_STATUSES:
            raise ValueError(f"a delivery failure status must be one of {DELIVERY_FAILURE_STATUSES}")
        return code, status

    @staticmethod
    def _checked_delays(sent_seconds, delivered_seconds) -> tuple[float, float]:
        if not all(is_number(value) and value >= 0 for value in (sent_seconds, delivered_seconds)):
            raise ValueError("status delays must be numbers >= 0")
        return float(sent_seconds), float(delivered_seconds)

    def set_opted_out(self, numbers) -> None:
        """Numbers that replied STOP: sending to them answers 400 21610 (replaces the previous list)."""
        checked = {validate_number(number) for number in self._number_list(numbers)}
        with self._lock:
            self._opted_out = checked

    def set_delivery_failure(self, number: str, code: int | None = DEFAULT_DELIVERY_FAILURE_CODE,
                             status: str = "undelivered") -> None:
        """Messages to `number` are accepted, then end `status` (undelivered after sent, or failed) with ErrorCode
        `code`; code None delivers to it again."""
        validate_number(number)
        failure = None if code is None else self._checked_failure(code, status)
        with self._lock:
            if failure is None:
                self._delivery_failures.pop(number, None)
            else:
                self._delivery_failures[number] = failure

    def set_status_delays(self, sent_seconds: float = DEFAULT_STATUS_DELAY_SECONDS,
                          delivered_seconds: float = DEFAULT_STATUS_DELAY_SECONDS) -> None:
        """Seconds from acceptance to "sent" and from "sent" to the final status, for messages accepted from now."""
        delays = self._checked_delays(sent_seconds, delivered_seconds)
        with self._lock:
            self._status_delays = delays

    def set_fault(self, *, status=None, code=None, message=None, delay_seconds=0.0, count=None, seconds=None,
                  drop=False) -> None:
        """Answer the next `count` sends (or those for `seconds`) with `status` in Twilio's error shape after a delay;
        status None only delays; `drop` handles the send normally, then closes the connection unanswered."""
        if status is not None and not (is_number(status, integer=True) and 100 <= status <= 599):
            raise ValueError("status must be an HTTP status code")
        if code is not None and not is_number(code, integer=True):
            raise ValueError("code must be an integer")
        if message is not None and not isinstance(message, str):
            raise ValueError("message must be a string")
        if not (is_number(delay_seconds) and delay_seconds >= 0):
            raise ValueError("delay_seconds must be a number >= 0")
        if count is not None and not (is_number(count, integer=True) and count >= 1):
            raise ValueError("count must be an integer >= 1")
        if seconds is not None and not (is_number(seconds) and seconds > 0):
            raise ValueError("seconds must be a number > 0")
        if not isinstance(drop, bool) or (drop and status is not None):
            raise ValueError("drop must be a boolean, and cannot go with a status (the answer is lost, not changed)")
        with self._lock:
            expires_at = None if seconds is None else self.clock() + seconds
            self._fault = TwilioFault(status, code, message, float(delay_seconds), count, expires_at, drop)

    def clear_fault(self) -> None:
        """Remove the injected fault."""
        with self._lock:
            self._fault = None

    def clear_messages(self) -> None:
        """Forget accepted messages (their pending status changes go on)."""
        with self._lock:
            self._messages.clear()

    def reset(self) -> None:
        """Forget messages, requests, callbacks and the fault, stop pending deliveries, restore the configuration."""
        with self._changed:
            self._generation += 1
            self._messages.clear()
            self._requests.clear()
            self._callbacks.clear()
            self._fault = None
            self._opted_out = set(self._initial_opted_out)
            self._delivery_failures = dict(self._initial_failures)
            self._status_delays = self._initial_delays
            self._changed.notify_all()

    def stop(self) -> None:
        """Stop pending deliveries: no status change or callback happens after this returns."""
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    # -- inspection --
    def messages(self, to: str | None = None) -> list[dict]:
        """Copies of the accepted messages (to one number if given), oldest first."""
        with self._lock:
            return json.loads(json.dumps([record for record in self._messages if to is None or record["to"] == to]))

    @property
    def requests(self) -> list[dict]:
        """Every request to the API (refused, faulted and dropped ones too) with the status answered."""
        with self._lock:
            return json.loads(json.dumps(self._requests))

    @property
    def callbacks(self) -> list[dict]:
        """Every status callback sent: url, params, signature, and the receiver's HTTP status (None if unanswered)."""
        with self._lock:
            return json.loads(json.dumps(self._callbacks))

    def stats(self) -> dict:
        """Counters as the control API reports them."""
        with self._lock:
            statuses: dict[str, int] = {}
            for attempt in self._requests:
                statuses[str(attempt["status"])] = statuses.get(str(attempt["status"]), 0) + 1
            return {"requests": len(self._requests), "statuses": statuses, "messages": len(self._messages),
                    "callbacks": len(self._callbacks)}

    def wait_for_sms(self, count: int, timeout_seconds: float = 10.0, to: str | None = None) -> list[dict]:
        """Block until at least `count` messages were accepted (to one number if given); AssertionError on timeout."""
        def matching() -> list[dict]:
            return [record for record in self._messages if to is None or record["to"] == to]

        with self._changed:
            if not self._changed.wait_for(lambda: len(matching()) >= count, timeout_seconds):
                bodies = [(record["to"], record["body"]) for record in matching()]
                raise AssertionError(f"mock Twilio: expected {count} SMS{f' to {to}' if to else ''} within "
                                     f"{timeout_seconds} s, got {len(bodies)}: {bodies!r}")
            return self.messages(to)

    def wait_for_status(self, sid: str, status: str, timeout_seconds: float = 10.0) -> dict:
        """Block until message `sid` has `status` (e.g. "delivered"); return its record; AssertionError on timeout."""
        def record() -> dict | None:
            return next((r for r in self._messages if r["sid"] == sid), None)

        with self._changed:
            if not self._changed.wait_for(lambda: (record() or {}).get("status") == status, timeout_seconds):
                found = record()
                raise AssertionError(f"mock Twilio: message {sid} not {status} within {timeout_seconds} s: "
                                     f"{found['status'] if found else 'no such message'}")
            return json.loads(json.dumps(record()))

    def wait_for_callbacks(self, count: int, timeout_seconds: float = 10.0) -> list[dict]:
        """Block until at least `count` status callbacks were sent and answered; AssertionError on timeout."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._callbacks) >= count, timeout_seconds):
                sent = [(callback["params"]["MessageStatus"], callback["status"]) for callback in self._callbacks]
                raise AssertionError(f"mock Twilio: expected {count} status callback(s) within {timeout_seconds} s, "
                                     f"got {len(sent)}: {sent!r}")
            return self.callbacks

    # -- the API --
    def _username(self, authorization: str) -> tuple[str | None, str | None]:
        """(username, password) of an HTTP Basic Authorization header, or (None, None)."""
        scheme, _, encoded = authorization.strip().partition(" ")
        if scheme.lower() != "basic":
            return None, None
        try:
            username, colon, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return None, None
        return (username, password) if colon else (None, None)

    def _authenticated(self, username: str | None, password: str | None, path: str) -> bool:
        """The account's SID and token, or a configured API key, and the path's account is this one."""
        if username is None:
            return False
        if username == self.account_sid:
            expected = self.auth_token
        elif username in self.api_keys:
            expected = self.api_keys[username]
        else:
            return False
        match = ACCOUNT_IN_PATH.fullmatch(path)
        right_account = match is None or match["account"] == self.account_sid
        return hmac.compare_digest(password.encode(), expected.encode()) and right_account

    def handle_request(self, method: str, path: str, authorization: str, content_type: str, body: bytes) -> Reply:
        """Answer a request under /2010-04-01/ as Twilio does: authentication first, then the resource."""
        username, password = self._username(authorization)
        attempt = {"method": method, "path": path, "username": username, "at": self.clock(), "params": None,
                   "status": None, "code": None, "dropped": False}
        if not self._authenticated(username, password, path):
            return self._answered(attempt, twilio_error(401, 20003, MESSAGE_AUTHENTICATE,
                                                        {"WWW-Authenticate": 'Basic realm="Twilio API"'}))
        if MESSAGES_PATH.fullmatch(path):
            if method != "POST":  # listing messages is not emulated
                return self._answered(attempt, twilio_error(405, 20004, "Method not allowed"))
            return self._send(attempt, username, content_type, body)
        message_match = MESSAGE_PATH.fullmatch(path)
        if message_match and method == "GET":
            with self._lock:
                record = next((r for r in self._messages if r["sid"] == message_match["sid"]), None)
                if record is not None:
                    return self._answered(attempt, json_reply(200, self._resource(record)))
        return self._answered(attempt, twilio_error(404, 20404, f"The requested resource {path} was not found"))

    def _answered(self, attempt: dict, reply: Reply) -> Reply:
        """Record the attempt with its answer."""
        attempt["status"] = reply.status
        attempt["dropped"] = reply.drop
        if reply.status >= 400:
            attempt["code"] = json.loads(reply.body).get("code")
        with self._changed:
            self._requests.append(attempt)
            self._changed.notify_all()
        return reply

    def _take_fault(self) -> TwilioFault | None:
        """The fault that answers this send (spending one of its count), or None."""
        with self._lock:
            fault = self._fault
            if fault is not None and fault.expires_at is not None and self.clock() >= fault.expires_at:
                fault = self._fault = None
            if fault is not None and fault.remaining_count is not None:
                fault.remaining_count -= 1
                if fault.remaining_count == 0:
                    self._fault = None
            return fault

    def _send(self, attempt: dict, username: str, content_type: str, body: bytes) -> Reply:
        """POST Messages.json: the fault, the checks in Twilio's order, then 201 with the Message resource."""
        fault = self._take_fault()  # after authentication, as the Rocket.Chat side spends faults after the token
        if fault is not None:
            time.sleep(fault.delay_seconds)  # outside the lock: other requests go on meanwhile
            if fault.status is not None:
                return self._answered(attempt, fault.reply())
        params = attempt["params"] = parse_form(content_type, body)
        reply = self._refusal(params)
        if reply is None:
            record = self._accept(params, username)
            reply = json_reply(201, self._resource(record))
        reply.drop = fault is not None and fault.drop
        return self._answered(attempt, reply)

    def _refusal(self, params: dict[str, str]) -> Reply | None:
        """The 400 Twilio answers for these fields, or None."""
        to, sender = params.get("To", ""), params.get("From", "")
        service, body = params.get("MessagingServiceSid", ""), params.get("Body", "")
        validity, callback = params.get("ValidityPeriod", ""), params.get("StatusCallback", "")
        if not to:
            return twilio_error(400, 21604, "A 'To' phone number is required.")
        if not E164.fullmatch(to):
            return twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not sender and not service:
            return twilio_error(400, 21603, "A 'From' phone number is required.")
        if sender and not E164.fullmatch(sender):
            # Twilio also takes short codes and alphanumeric sender IDs where a country allows them; the relay
            # sends from a number, so the mock takes E.164 only.
            return twilio_error(400, 21212, f"The 'From' number {sender} is not a valid phone number, shortcode, "
                                            "or alphanumeric sender ID.")
        if service and not MESSAGING_SERVICE_SID.fullmatch(service):
            return twilio_error(400, 21705, "The Messaging Service is invalid")
        if not body:
            return twilio_error(400, 21602, "Message body is required.")
        if utf16_length(body) > MAX_BODY_UTF16_UNITS:
            return twilio_error(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        if validity and not (validity.isdigit() and 1 <= int(validity) <= MAX_VALIDITY_PERIOD_SECONDS):
            return twilio_error(400, 21624, "Validity period can only be set to integers between 1 and 36000 "
                                            "seconds")
        if callback and not valid_status_callback(callback):
            return twilio_error(400, 21609, "Invalid 'StatusCallback'")
        with self._lock:
            if to in self._opted_out:
                return twilio_error(400, 21610, "Attempt to send to unsubscribed recipient")
        return None

    def _accept(self, params: dict[str, str], username: str) -> dict:
        """Record an accepted message and start its delivery (status changes, callbacks) in the background."""
        body = params["Body"]
        now = self.clock()
        with self._changed:
            known = {record["sid"] for record in self._messages}
            while (sid := new_sid("SM")) in known:
                pass
            record = {
                "sid": sid, "account_sid": self.account_sid, "to": params["To"], "from": params.get("From") or None,
                "messaging_service_sid": params.get("MessagingServiceSid") or None, "body": body,
                "segments": count_segments(body), "encoding": segment_encoding(body),
                # Twilio: "accepted" when a Messaging Service will pick the sender, else "queued".
                "status": "queued" if params.get("From") else "accepted",
                "status_callback": params.get("StatusCallback") or None,
                "validity_period": int(params["ValidityPeriod"]) if params.get("ValidityPeriod") else None,
                "error_code": None, "username": username, "at": now, "updated_at": now, "sent_at": None,
            }
            self._messages.append(record)
            generation = self._generation
            self._changed.notify_all()
        if not self.quiet:
            text = " ".join(body.split())
            text = text if len(text) <= PRINTED_BODY_MAX_CHARS else text[:PRINTED_BODY_MAX_CHARS - 1] + "…"
            segments = f"{record['segments']} segment{'' if record['segments'] == 1 else 's'}"
            sys.stdout.write(f"[sms {record['to']}] {text} ({segments})\n")
            sys.stdout.flush()
        threading.Thread(target=self._deliver, args=(record, generation), name=f"mock-twilio-{sid}",
                         daemon=True).start()
        return record

    def _resource(self, record: dict) -> dict:
        """The Message resource as Twilio's JSON gives it (num_segments and num_media are strings there)."""
        uri = f"/{API_VERSION}/Accounts/{record['account_sid']}/Messages/{record['sid']}.json"
        return {
            "account_sid": record["account_sid"], "api_version": API_VERSION, "body": record["body"],
            "date_created": rfc2822(record["at"]), "date_updated": rfc2822(record["updated_at"]),
            "date_sent": rfc2822(record["sent_at"]) if record["sent_at"] is not None else None,
            "direction": "outbound-api", "error_code": record["error_code"], "error_message": None,
            "from": record["from"], "messaging_service_sid": record["messaging_service_sid"], "num_media": "0",
            "num_segments": str(record["segments"]), "price": None, "price_unit": "USD", "sid": record["sid"],
            "status": record["status"], "subresource_uris": {"media": uri[:-len(".json")] + "/Media.json"},
            "to": record["to"], "uri": uri,
        }

    # -- delivery and status callbacks --
    def _deliver(self, record: dict, generation: int) -> None:
        """Move the message through its statuses after the delays, POSTing each to its StatusCallback."""
        with self._lock:
            failure = self._delivery_failures.get(record["to"])
            sent_delay, final_delay = self._status_delays
        if failure is not None and failure[1] == "failed":
            steps = [(sent_delay, "failed", failure[0])]  # never left Twilio: no "sent" before
        else:
            final = ("delivered", None) if failure is None else ("undelivered", failure[0])
            steps = [(sent_delay, "sent", None), (final_delay, *final)]
        for delay_seconds, status, code in steps:
            with self._changed:
                if self._changed.wait_for(lambda: self._generation != generation, delay_seconds):
                    return  # reset or stopped meanwhile
                now = self.clock()
                record.update(status=status, error_code=code, updated_at=now)
                if status == "sent":
                    record["sent_at"] = now
                self._changed.notify_all()
                url = record["status_callback"]
                params = {
                    "AccountSid": record["account_sid"], "ApiVersion": API_VERSION,
                    "From": record["from"] or MESSAGING_SERVICE_SENDER, "MessageSid": record["sid"],
                    "MessageStatus": status, "SmsSid": record["sid"], "SmsStatus": status, "To": record["to"],
                }
                if record["messaging_service_sid"]:
                    params["MessagingServiceSid"] = record["messaging_service_sid"]
                if code is not None:
                    params["ErrorCode"] = str(code)
            if url:
                self._post_callback(url, params, generation)

    def _post_callback(self, url: str, params: dict[str, str], generation: int) -> None:
        """POST one status callback, signed with the account's auth token (even when the send used an API key)."""
        signature = twilio_signature(self.auth_token, url, params)
        request = urllib.request.Request(url, data=urllib.parse.urlencode(params).encode(), method="POST", headers={
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8", "X-Twilio-Signature": signature,
            "User-Agent": "TwilioProxy/1.1", "Accept": "*/*"})
        status, error = None, None
        # Straight to the URL: a proxy from the environment (http_proxy) must not carry a callback to localhost.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=CALLBACK_TIMEOUT_SECONDS) as response:
                response.read()
                status = response.status
        except urllib.error.HTTPError as http_error:
            status = http_error.code
            http_error.close()
        except (OSError, ValueError) as failure:  # URLError, timeouts, refused connections
            error = str(failure)
        with self._changed:
            if self._generation == generation:
                self._callbacks.append({"message_sid": params["MessageSid"], "url": url, "params": params,
                                        "signature": signature, "status": status, "error": error,
                                        "at": self.clock()})
                self._changed.notify_all()

    # -- the control API (under /_mock/twilio/) --
    def control_routes(self):
        """(method, path pattern, action(params, *path groups) -> JSON) for the mock's control endpoints."""
        ok = {"success": True}

        def set_fault(params):
            allowed = {"status", "code", "message", "delay_seconds", "count", "seconds", "drop"}
            if set(params) - allowed:
                raise ValueError(f"unknown fault keys: {sorted(set(params) - allowed)}")
            self.set_fault(**params)
            return ok

        def set_opted_out(params):
            if set(params) != {"numbers"}:
                raise ValueError('expected {"numbers": ["+1555...", ...]}')
            self.set_opted_out(params["numbers"])
            return ok

        def set_delivery_failure(params):
            if "number" not in params or set(params) - {"number", "code", "status"}:
                raise ValueError('expected {"number": "+1555...", "code": 30003 or null, "status": "undelivered"}')
            self.set_delivery_failure(params["number"], params.get("code", DEFAULT_DELIVERY_FAILURE_CODE),
                                      params.get("status", "undelivered"))
            return ok

        def set_status_delays(params):
            if set(params) - {"sent_seconds", "delivered_seconds"}:
                raise ValueError('expected {"sent_seconds": 0.2, "delivered_seconds": 0.2}')
            self.set_status_delays(**params)
            return ok

        return [
            ("GET", r"/_mock/twilio/messages", lambda params: self.messages()),
            ("GET", r"/_mock/twilio/messages/([^/]+)",
             lambda params, number: self.messages(urllib.parse.unquote(number))),
            ("DELETE", r"/_mock/twilio/messages", lambda params: self.clear_messages() or ok),
            ("GET", r"/_mock/twilio/requests", lambda params: self.requests),
            ("GET", r"/_mock/twilio/callbacks", lambda params: self.callbacks),
            ("GET", r"/_mock/twilio/stats", lambda params: self.stats()),
            ("POST", r"/_mock/twilio/fault", set_fault),
            ("DELETE", r"/_mock/twilio/fault", lambda params: self.clear_fault() or ok),
            ("POST", r"/_mock/twilio/opted-out", set_opted_out),
            ("POST", r"/_mock/twilio/delivery-failure", set_delivery_failure),
            ("POST", r"/_mock/twilio/status-delays", set_status_delays),
            ("POST", r"/_mock/twilio/reset", lambda params: self.reset() or ok),
        ]

    def page_records(self) -> list[dict]:
        """The accepted messages, for the page."""
        with self._lock:
            return [dict(record) for record in self._messages]


# -- the command line (added to mock_server.py's) --
def parse_api_key(text: str) -> tuple[str, str]:
    """Parse `SID:SECRET` of an API key."""
    key_sid, colon, secret = text.strip().partition(":")
    if not colon or not API_KEY_SID.fullmatch(key_sid) or not secret:
        raise argparse.ArgumentTypeError(f"expected SK<32 hex digits>:SECRET, got {key_sid or text!r}:***")
    return key_sid, secret


def parse_account_sid(text: str) -> str:
    """An Account SID: AC and 32 lowercase hex digits."""
    if not ACCOUNT_SID.fullmatch(text.strip()):
        raise argparse.ArgumentTypeError(f"expected AC followed by 32 lowercase hex digits, got {text!r}")
    return text.strip()


def parse_number(text: str) -> str:
    """An E.164 number."""
    if not E164.fullmatch(text.strip()):
        raise argparse.ArgumentTypeError(f"expected an E.164 number such as +15551234567, got {text!r}")
    return text.strip()


def parse_delivery_failure(text: str) -> tuple[str, int]:
    """`NUMBER` or `NUMBER:CODE` (default code 30003)."""
    number, colon, code = text.strip().partition(":")
    if not E164.fullmatch(number) or (colon and not code.isdigit()):
        raise argparse.ArgumentTypeError(f"expected NUMBER or NUMBER:CODE (e.g. +15551234567:30003), got {text!r}")
    return number, int(code) if colon else DEFAULT_DELIVERY_FAILURE_CODE


def parse_delay(text: str) -> float:
    """Seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The mock Twilio's options."""
    group = parser.add_argument_group("mock Twilio (Messages API on the same port)")
    group.add_argument("--twilio-account-sid", type=parse_account_sid, default=DEFAULT_TWILIO_ACCOUNT_SID,
                       help=f"the account (default {DEFAULT_TWILIO_ACCOUNT_SID})")
    group.add_argument("--twilio-auth-token", default=DEFAULT_TWILIO_AUTH_TOKEN,
                       help="the account's auth token; it also signs status callbacks (default: a demo token, "
                            "mock_twilio.DEFAULT_TWILIO_AUTH_TOKEN)")
    group.add_argument("--twilio-api-key", dest="twilio_api_keys", action="append", type=parse_api_key, default=[],
                       metavar="SID:SECRET", help="an API key also accepted for HTTP Basic (repeatable)")
    group.add_argument("--twilio-opted-out", action="append", type=parse_number, default=[], metavar="NUMBER",
                       help="a number that replied STOP: sends to it answer 400 21610 (repeatable)")
    group.add_argument("--twilio-delivery-failure", dest="twilio_delivery_failures", action="append",
                       type=parse_delivery_failure, default=[], metavar="NUMBER[:CODE]",
                       help="messages to NUMBER end undelivered with ErrorCode CODE (default 30003) (repeatable)")
    group.add_argument("--twilio-status-delay-seconds", type=parse_delay, default=DEFAULT_STATUS_DELAY_SECONDS,
                       metavar="SECONDS", help="before sent, and again before delivered (default 0.2)")


# -- the page: the SMS each number received, as a phone would list them --
SMS_PAGE_CSS = """
.sms { background: #fff; border: 1px solid #e4e7ea; border-radius: 4px; margin: 12px 0; }
.sms > h2 { margin: 0; padding: 10px 16px; font-size: 16px; border-bottom: 1px solid #e4e7ea; }
.sms h2 small, .phone h3 small { color: #6c727a; font-weight: normal; }
.phone { border-top: 1px solid #f2f3f5; padding: 6px 16px 10px; }
.phone:first-of-type { border-top: 0; }
.phone h3 { margin: 4px 0; font-size: 15px; font-variant-numeric: tabular-nums; }
.sms-message { background: #f7f8fa; border-radius: 12px; padding: 6px 12px; margin: 6px 0; max-width: 560px; }
.sms-message .meta { font-size: 12px; color: #6c727a; gap: 8px; }
.sms-status { border-radius: 2px; padding: 0 4px; background: #e4e7ea; color: #2f343d; }
.sms-status.delivered { background: #d4f7e9; }
.sms-status.undelivered, .sms-status.failed { background: #fbe0e3; color: #a94442; }
"""


def render_sms_message(record: dict) -> str:
    """One SMS: sender, time, status (with its error code), segments, body."""
    sender = record["from"] or f"via {record['messaging_service_sid']}"
    at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(record["at"]))
    status = record["status"] + (f" ({record['error_code']})" if record["error_code"] is not None else "")
    segments = f"{record['segments']} segment{'' if record['segments'] == 1 else 's'}, {record['encoding']}"
    return (f'<article class="sms-message" id="sms-{html.escape(record["sid"])}"><div class="meta">'
            f'<span class="sender">from {html.escape(sender)}</span><time class="time">{at}</time>'
            f'<span class="sms-status {html.escape(record["status"])}">{html.escape(status)}</span>'
            f'<span class="segments">{segments}</span></div>'
            f'<div class="text">{html.escape(record["body"])}</div></article>')


def render_sms_section(records: list[dict]) -> str:
    """The SMS section of the page: one block per number (the most recently texted first), newest SMS first."""
    by_number: dict[str, list[tuple[int, dict]]] = {}
    for position, record in enumerate(records):
        by_number.setdefault(record["to"], []).append((position, record))
    phones = []
    for number, received in sorted(by_number.items(), key=lambda item: item[1][-1][0], reverse=True):
        digits = re.sub(r"\D", "", number)
        items = "".join(render_sms_message(record) for _, record in reversed(received))
        phones.append(f'<section class="phone" id="phone-{digits}"><h3>{html.escape(number)} '
                      f"<small>{len(received)} SMS</small></h3>{items}</section>")
    content = "".join(phones) or '<p class="empty">No SMS yet.</p>'
    return (f'<section class="sms" id="sms"><h2>SMS <small>{len(records)} accepted by the mock Twilio</small></h2>'
            f"{content}</section>")
