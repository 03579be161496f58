"""A mock Rocket.Chat incoming-webhook server for tests and demos (spec: rocketchat-contract.md).

It also plays Twilio's Messages API on the same port (mock_twilio.py, spec: twilio-facts.md), so one mock serves
both destinations of the relay.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
import math
import re
import secrets
import signal
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import mock_twilio
from mock_twilio import (DEFAULT_STATUS_DELAY_SECONDS, DEFAULT_TWILIO_ACCOUNT_SID, DEFAULT_TWILIO_AUTH_TOKEN,
                         MockTwilio)

DEFAULT_HOOK_NAMES = ("critical", "warning", "info")
# Rocket.Chat's API_Enable_Rate_Limiter_Limit_Calls_Default (10) and ..._Time_Default (60000 ms).
DEFAULT_RATE_LIMIT_COUNT = 10
DEFAULT_RATE_LIMIT_WINDOW_SECONDS = 60.0
# Message_MaxAllowedSize: 5000 UTF-16 code units after trimming, top-level text only.
MAX_TEXT_UTF16_UNITS = 5000
ATTACHMENT_STRING_KEYS = ("color", "text", "title", "author_name", "pretext")
ATTACHMENT_URL_KEYS = ("title_link", "author_link", "author_icon", "image_url", "thumb_url", "message_link")
ALLOWED_URL_PREFIXES = ("http://", "https://", "data:")
REJECT_MARKER = "MOCK-REJECT"  # stands in for an integration script that refuses the message
PRINTED_VALUE_MAX_CHARS = 60
PAGE_REFRESH_SECONDS = 5  # GET / reloads itself (a <meta> refresh: no script)
SERVE_POLL_INTERVAL_SECONDS = 0.02

HOOK_PATH = re.compile(r"/hooks/(?P<id>[^/]+)/(?:[^/]+/)?(?P<token>[^/]+)")
# Request log lines contain the URL; the last segment of a hook path is the token.
TOKEN_IN_LOG = re.compile(r"(/hooks/[^/\s]+/(?:[^/\s]+/)?)[^/\s?\"]+")

ERROR_BAD_TOKEN = "Invalid integration id or token provided."
ERROR_CHANNEL_OVERRIDE = "overriding destination channel is disabled for this integration"
ERROR_TEXT_SIZE = "error-message-size-exceeded"
ERROR_HREF = "Invalid href value provided"
ERROR_FIELD = "Invalid attachment field, title and value is required"
ERROR_SCRIPT = "error-running-script"
# Refused before any channel is tried (webhooks.ts: the script, then the override check), so answered
# {"success": false, "error": ...} even with separateResponse; the other refusals are the channel's own.
ERRORS_BEFORE_CHANNELS = (ERROR_CHANNEL_OVERRIDE, ERROR_SCRIPT)
# Meteor's Random.id(): 17 characters from its UNMISTAKABLE_CHARS (no 0, 1, I, O, U, V, l).
MESSAGE_ID_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTWXYZabcdefghijkmnopqrstuvwxyz"
MESSAGE_ID_LENGTH = 17


@dataclass
class Response:
    """One HTTP answer: status, content type, body bytes and extra headers."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, payload, headers: dict[str, str] | None = None) -> Response:
    """Build a JSON response from a dict."""
    body = json.dumps(payload, separators=(",", ":")).encode()  # compact, as Rocket.Chat answers
    return Response(status, body, "application/json", dict(headers or {}))


def failure(status: int, error: str, headers: dict[str, str] | None = None) -> Response:
    """Build Rocket.Chat's `{"success": false, "error": ...}` answer."""
    return json_response(status, {"success": False, "error": error}, headers)


def is_number(value, *, integer: bool = False) -> bool:
    """True for an int (or a float unless `integer`), never for a bool."""
    return not isinstance(value, bool) and isinstance(value, int if integer else (int, float))


def random_id() -> str:
    """A Rocket.Chat-style id (Meteor's Random.id())."""
    return "".join(secrets.choice(MESSAGE_ID_ALPHABET) for _ in range(MESSAGE_ID_LENGTH))


def utf16_length(text: str) -> int:
    """Length in UTF-16 code units, as JavaScript's String.length counts it."""
    return len(text.encode("utf-16-le")) // 2


def validate_attachment(attachment) -> str | None:
    """Return Rocket.Chat's error text for an invalid attachment, or None."""
    if not isinstance(attachment, dict):
        return "Invalid attachment: each attachment must be an object"
    for key in ATTACHMENT_STRING_KEYS:
        if key in attachment and not isinstance(attachment[key], str):
            return f"Invalid attachment: {key} must be a string"
    if "collapsed" in attachment and not isinstance(attachment["collapsed"], bool):
        return "Invalid attachment: collapsed must be a boolean"
    if "ts" in attachment and not (isinstance(attachment["ts"], str) or is_number(attachment["ts"])):
        return "Invalid attachment: ts must be a string or a number"
    urls = [attachment[key] for key in ATTACHMENT_URL_KEYS if key in attachment]
    actions = attachment.get("actions", [])
    if not isinstance(actions, list) or not all(isinstance(action, dict) for action in actions):
        return "Invalid attachment: actions must be a list of objects"
    urls += [action["url"] for action in actions if "url" in action]
    if any(not isinstance(url, str) or not url.startswith(ALLOWED_URL_PREFIXES) for url in urls):
        return ERROR_HREF
    fields = attachment.get("fields", [])
    if not isinstance(fields, list):
        return ERROR_FIELD
    for item in fields:
        # Stricter than the server, as the contract recommends: the server accepts numbers and booleans
        # and stringifies them, but senders should send strings (the web client calls string methods).
        if not isinstance(item, dict) or not all(isinstance(item.get(key), str) and item[key]
                                                 for key in ("title", "value")):
            return ERROR_FIELD
    return None


def validate_message(message: dict) -> str | None:
    """Return the 400 error text Rocket.Chat would answer for this message, or None."""
    if "channel" in message or "roomId" in message:
        return ERROR_CHANNEL_OVERRIDE  # "Override destination channel" is off by default
    text = message.get("text") or message.get("msg")  # msg is an alias of text
    if isinstance(text, str) and utf16_length(text.strip()) > MAX_TEXT_UTF16_UNITS:
        return ERROR_TEXT_SIZE
    tmid = message.get("tmid")
    if tmid is not None and not isinstance(tmid, str):  # sendMessage's check(tmid: String); null is skipped
        js_type = "boolean" if isinstance(tmid, bool) else "number" if is_number(tmid) else "object"
        return f"Match error: Expected string, got {js_type} in field tmid"  # Meteor's wording, approximately
    attachments = message.get("attachments")
    if isinstance(attachments, list):  # anything else is dropped by the server, not refused
        for attachment in attachments:
            error = validate_attachment(attachment)
            if error:
                return error
    if REJECT_MARKER in json.dumps(message, ensure_ascii=False):
        return ERROR_SCRIPT
    return None


def parse_hook_body(content_type: str, body: bytes) -> dict | None:
    """Return the posted message, or None when Rocket.Chat would answer 200 and post nothing."""
    try:
        if content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
            fields = urllib.parse.parse_qs(body.decode("utf-8"))
            message = json.loads(fields["payload"][0])  # Slack style: payload=<json>
        else:
            message = json.loads(body.decode("utf-8"))
    except (ValueError, KeyError, UnicodeDecodeError):
        return None
    # Trap: an array, a scalar or {} are all answered 200 {"success": true} with nothing posted.
    return message if isinstance(message, dict) and message else None


@dataclass
class Fault:
    """An injected answer for a hook's next requests."""

    status: int | None
    body: object
    delay_seconds: float
    remaining_count: int | None
    expires_at: float | None

    def response(self) -> Response:
        """Build the injected answer (a string body as text/plain, anything else as JSON)."""
        if isinstance(self.body, str):
            return Response(self.status, self.body.encode(), "text/plain; charset=utf-8")
        payload = self.body if self.body is not None else {"success": False, "error": f"mock fault {self.status}"}
        return json_response(self.status, payload)


@dataclass
class HookState:
    """Records and counters of one hook."""

    integration_id: str
    token: str
    room_id: str = field(default_factory=random_id)  # the room the hook posts to ("rid" of its messages)
    records: list[dict] = field(default_factory=list)
    requests: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    ignored: int = 0
    disabled: bool = False
    fault: Fault | None = None

    def reset(self) -> None:
        """Forget records, counters, the fault and the disabled flag (in place: waiters keep their object)."""
        self.records.clear()
        self.statuses.clear()
        self.requests = self.ignored = 0
        self.disabled, self.fault = False, None

    def take_fault(self, now: float) -> Fault | None:
        """The fault that answers this request (spending one of its count), or None."""
        fault = self.fault
        if fault is not None and fault.expires_at is not None and now >= fault.expires_at:
            fault = self.fault = None
        if fault is not None and fault.remaining_count is not None:
            fault.remaining_count -= 1
            if fault.remaining_count == 0:
                self.fault = None
        return fault

    def stats(self) -> dict:
        """Counters as the control API reports them."""
        return {"requests": self.requests, "statuses": dict(self.statuses), "ignored": self.ignored,
                "recorded": len(self.records)}


def default_hooks() -> dict[str, tuple[str, str]]:
    """Three hooks, critical/warning/info, with id = name and token = `<name>-token`."""
    return {name: (name, f"{name}-token") for name in DEFAULT_HOOK_NAMES}


class MockRocketChat:
    """A Rocket.Chat stand-in serving incoming-webhook URLs and a `/_mock/` control API."""

    def __init__(self, hooks: dict[str, tuple[str, str]] | None = None, *, host="127.0.0.1", port=0,
                 rate_limit_count: int = DEFAULT_RATE_LIMIT_COUNT,
                 rate_limit_window_seconds: float = DEFAULT_RATE_LIMIT_WINDOW_SECONDS,
                 legacy_404: bool = False, old_server: bool = False, quiet: bool = True, clock=time.time,
                 twilio_account_sid: str = DEFAULT_TWILIO_ACCOUNT_SID,
                 twilio_auth_token: str = DEFAULT_TWILIO_AUTH_TOKEN,
                 twilio_api_keys: dict[str, str] | None = None, twilio_opted_out=(),
                 twilio_delivery_failures: dict | None = None,
                 twilio_status_delay_seconds: float = DEFAULT_STATUS_DELAY_SECONDS):
        hooks = default_hooks() if hooks is None else hooks
        ids = [integration_id for integration_id, _ in hooks.values()]
        if not hooks or len(set(ids)) != len(ids):
            raise ValueError("hooks must be non-empty with distinct integration ids")
        for name, (integration_id, token) in hooks.items():
            if not all(part and "/" not in part for part in (name, integration_id, token)):
                raise ValueError(f"hook {name!r}: name, id and token must be non-empty and contain no '/'")
        self.host, self.port = host, port
        self.legacy_404, self.quiet, self.clock = legacy_404, quiet, clock
        # An older server (before mid-2025) ignores separateResponse: every success is a bare {"success": true}.
        self._old_server_at_start = self.old_server = bool(old_server)
        self._message_ids: set[str] = set()  # every id handed out, so none is handed out twice
        self._hooks = {name: HookState(integration_id, token) for name, (integration_id, token) in hooks.items()}
        self._lock = threading.RLock()
        self._recorded = threading.Condition(self._lock)  # notified on every recorded message
        self._windows: dict[tuple[str, str], list[float]] = {}  # (hook, client ip) -> [start, count]
        self._unknown_hook_requests = 0
        self.set_rate_limit(rate_limit_count, rate_limit_window_seconds)
        # Twilio's Messages API, served under /2010-04-01/ on the same port.
        self.twilio = MockTwilio(account_sid=twilio_account_sid, auth_token=twilio_auth_token,
                                 api_keys=twilio_api_keys, opted_out=twilio_opted_out,
                                 delivery_failures=twilio_delivery_failures,
                                 status_delay_seconds=twilio_status_delay_seconds, quiet=quiet, clock=clock)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --
    def start(self) -> "MockRocketChat":
        """Bind and serve in a daemon thread; connections are accepted as soon as this returns."""
        # The socket listens once the server is constructed, so a client connecting right away waits in the
        # backlog until serve_forever picks it up: no readiness sleep needed.
        self._server = _MockHTTPServer((self.host, self.port), _MockRequestHandler)
        self._server.mock = self
        self.port = self._server.server_address[1]
        # shutdown() waits for serve_forever's next poll: a short interval keeps stop() (and test teardown) fast.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(SERVE_POLL_INTERVAL_SECONDS,),
                                        name="mock-rocketchat", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the socket and join the server thread; pending SMS status callbacks are dropped."""
        self.twilio.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = self._thread = None

    def __enter__(self) -> "MockRocketChat":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """`http://host:port` of the running server."""
        if self._server is None:
            raise RuntimeError("MockRocketChat is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def twilio_api_url(self) -> str:
        """What TWILIO_API_URL should be for the relay: `http://host:port` (the API's paths start /2010-04-01/)."""
        return self.base_url

    @property
    def twilio_messages_url(self) -> str:
        """The account's Messages.json URL."""
        return f"{self.base_url}/{mock_twilio.API_VERSION}/Accounts/{self.twilio.account_sid}/Messages.json"

    def hook_url(self, name: str) -> str:
        """The full incoming-webhook URL of a hook, token included."""
        state = self._state(name)
        return f"{self.base_url}/hooks/{state.integration_id}/{state.token}"

    @property
    def hook_names(self) -> list[str]:
        """Names of the configured hooks."""
        return list(self._hooks)

    # -- inspection and control --
    def _state(self, name: str) -> HookState:
        """The state of a hook by name; KeyError naming the known hooks otherwise."""
        if name not in self._hooks:
            raise KeyError(f"unknown hook {name!r}; known: {', '.join(self._hooks)}")
        return self._hooks[name]

    def messages(self, name: str) -> list[dict]:
        """Copies of the records of a hook's posted messages."""
        with self._lock:
            return json.loads(json.dumps(self._state(name).records))

    def stats(self, name: str) -> dict:
        """Counters of a hook: requests, statuses, ignored trap bodies, recorded messages."""
        with self._lock:
            return self._state(name).stats()

    def wait_for_messages(self, name: str, count: int, timeout_seconds: float = 10.0) -> list[dict]:
        """Block until a hook has at least `count` records; raise AssertionError on timeout."""
        with self._recorded:
            state = self._state(name)
            if not self._recorded.wait_for(lambda: len(state.records) >= count, timeout_seconds):
                texts = [record["message"].get("text") for record in state.records]
                raise AssertionError(f"hook {name!r}: expected {count} message(s) within {timeout_seconds} s, "
                                     f"got {len(state.records)}: {texts!r}")
            return self.messages(name)

    def set_fault(self, name, *, status=None, body=None, delay_seconds=0.0, count=None, seconds=None) -> None:
        """Answer the hook's next `count` requests (or those for `seconds`) with `status`/`body` after a delay."""
        if status is not None and not (is_number(status, integer=True) and 100 <= status <= 599):
            raise ValueError("status must be an HTTP status code")
        if body is not None and not isinstance(body, (str, dict, list)):
            raise ValueError("body must be a string or a JSON object")
        if not (is_number(delay_seconds) and delay_seconds >= 0):
            raise ValueError("delay_seconds must be a number >= 0")
        if count is not None and not (is_number(count, integer=True) and count >= 1):
            raise ValueError("count must be an integer >= 1")
        if seconds is not None and not (is_number(seconds) and seconds > 0):
            raise ValueError("seconds must be a number > 0")
        with self._lock:
            expires_at = None if seconds is None else self.clock() + seconds
            self._state(name).fault = Fault(status, body, float(delay_seconds), count, expires_at)

    def clear_faults(self, name=None) -> None:
        """Remove the fault of one hook, or of all hooks."""
        with self._lock:
            for state in [self._state(name)] if name is not None else self._hooks.values():
                state.fault = None

    def set_disabled(self, name, disabled=True) -> None:
        """Mark a hook disabled (503) or enabled."""
        with self._lock:
            self._state(name).disabled = bool(disabled)

    def set_rate_limit(self, count, window_seconds=DEFAULT_RATE_LIMIT_WINDOW_SECONDS) -> None:
        """Allow `count` requests per window per hook and client IP; count 0 switches the limiter off."""
        if not (is_number(count, integer=True) and count >= 0):
            raise ValueError("rate limit count must be an integer >= 0")
        if not (is_number(window_seconds) and window_seconds > 0):
            raise ValueError("rate limit window_seconds must be a number > 0")
        with self._lock:
            self.rate_limit_count, self.rate_limit_window_seconds = count, float(window_seconds)
            self._windows.clear()

    def set_old_server(self, enabled=True) -> None:
        """Behave as a server older than separateResponse (it is ignored: no responses, no message ids answered)."""
        with self._lock:
            self.old_server = bool(enabled)

    def clear_messages(self) -> None:
        """Forget recorded messages, keep counters."""
        with self._lock:
            for state in self._hooks.values():
                state.records.clear()

    def reset(self) -> None:
        """Forget records, counters, limiter windows, faults and disabled flags; old_server as at start (off); the
        mock Twilio's reset too."""
        self.twilio.reset()
        with self._lock:
            for state in self._hooks.values():
                state.reset()
            self._windows.clear()
            self._unknown_hook_requests = 0
            self.old_server = self._old_server_at_start

    def _new_message_id(self) -> str:
        """A message id never handed out before by this mock (call with the lock held)."""
        while (message_id := random_id()) in self._message_ids:
            pass
        self._message_ids.add(message_id)
        return message_id

    # -- the webhook endpoint --
    def _count_in_window(self, hook_name: str, client_ip: str) -> tuple[int, dict[str, str]]:
        """Count a request in its fixed window; return seconds to wait (0 if allowed) and the limit headers."""
        if self.rate_limit_count == 0:
            return 0, {}  # limiter off: Rocket.Chat sends no X-RateLimit-* headers either
        # Keyed by hook and client IP; the short and the legacy URL of one hook share a window.
        now = self.clock()
        window = self._windows.get((hook_name, client_ip))
        if window is None or now >= window[0] + self.rate_limit_window_seconds:
            # Meteor's RateLimiter: a window opens with the first request after the previous one expired.
            window = self._windows[(hook_name, client_ip)] = [now, 0]
        window[1] += 1  # incremented before any other check: refused and failed requests spend budget too
        reset_at = window[0] + self.rate_limit_window_seconds
        headers = {"X-RateLimit-Limit": str(self.rate_limit_count),
                   "X-RateLimit-Remaining": str(max(0, self.rate_limit_count - window[1])),
                   "X-RateLimit-Reset": str(int(reset_at * 1000))}  # epoch milliseconds; no Retry-After
        wait_seconds = max(1, math.ceil(reset_at - now)) if window[1] > self.rate_limit_count else 0
        return wait_seconds, headers

    def _answer(self, state: HookState, response: Response, limit_headers: dict[str, str]) -> Response:
        """Count the answer's status for the hook and attach the rate-limit headers."""
        with self._lock:
            state.statuses[str(response.status)] = state.statuses.get(str(response.status), 0) + 1
        response.headers.update(limit_headers)
        return response

    def handle_hook_request(self, method: str, path: str, content_type: str, body: bytes, client_ip: str) -> Response:
        """Answer a GET/POST to a hook URL the way Rocket.Chat does: token, rate limit, disabled, the rest."""
        match = HOOK_PATH.fullmatch(path)
        integration_id, token = (urllib.parse.unquote(match[key]) for key in ("id", "token"))
        bad_token = (failure(404, ERROR_BAD_TOKEN) if self.legacy_404 else
                     Response(500, b"Internal Server Error", "text/plain; charset=utf-8"))  # current servers' bug
        with self._lock:
            name = next((n for n, s in self._hooks.items() if s.integration_id == integration_id), None)
            if name is None:
                self._unknown_hook_requests += 1
                return bad_token
            state = self._hooks[name]
            state.requests += 1
            if token != state.token:
                return self._answer(state, bad_token, {})
            wait_seconds, limit_headers = self._count_in_window(name, client_ip)
            if wait_seconds:
                return self._answer(state, failure(429, (
                    "Error, too many requests. Please slow down. You must wait "
                    f"{wait_seconds} seconds before trying this endpoint again. [error-too-many-requests]")),
                    limit_headers)
            if state.disabled:
                return self._answer(state, failure(503, "Service Unavailable"), limit_headers)
            fault = state.take_fault(self.clock())
        if fault is not None:
            time.sleep(fault.delay_seconds)  # outside the lock: other requests go on meanwhile
            if fault.status is not None:
                return self._answer(state, fault.response(), limit_headers)
        success = json_response(200, {"success": True})
        if method == "GET":  # accepted, posts nothing
            return self._answer(state, success, limit_headers)
        message = parse_hook_body(content_type, body)
        if message is None:  # the trap: answered as a success, nothing posted
            with self._lock:
                state.ignored += 1
            return self._answer(state, success, limit_headers)
        # Only a boolean true asks for per-channel results (webhooks.ts: `bodyParams.separateResponse === true`).
        with self._lock:
            separate = message.get("separateResponse") is True and not self.old_server
        channel = f"#{name}"  # the integration's one destination channel
        error = validate_message(message)
        if error:
            if separate and error not in ERRORS_BEFORE_CHANNELS:
                # The post failed in its only channel, so in every channel: 400 with the per-channel results.
                return self._answer(state, json_response(400, {
                    "success": False, "responses": [{"channel": channel, "error": error}]}), limit_headers)
            return self._answer(state, failure(400, error), limit_headers)
        tmid = message.get("tmid")
        with self._recorded:
            # The message is stored as posted; its id and thread (tmid, never checked by Rocket.Chat) beside it.
            record = {"hook": name, "message": message, "received_at": self.clock(), "client": client_ip,
                      "message_id": self._new_message_id(), "tmid": tmid if isinstance(tmid, str) and tmid else None}
            state.records.append(record)
            self._recorded.notify_all()
        if not self.quiet:
            # One write per message, so messages posted at once by two threads do not interleave.
            sys.stdout.write(describe_message(name, message) + "\n")
            sys.stdout.flush()
        if separate:
            return self._answer(state, json_response(200, {
                "success": True, "responses": [{"channel": channel, "message": sent_message(record, state.room_id)}]}),
                limit_headers)
        return self._answer(state, success, limit_headers)

    # -- the page --
    def handle_page_request(self) -> Response:
        """GET /: an HTML page of every hook's messages, newest first (no hook URL or token on it)."""
        with self._lock:
            page, csp = render_page({name: list(state.records) for name, state in self._hooks.items()},
                                    self.twilio.page_records())
        return Response(200, page.encode(), "text/html; charset=utf-8", {
            "Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer"})

    # -- the control API --
    def handle_control_request(self, method: str, path: str, body: bytes) -> Response:
        """Answer a request under /_mock/."""
        try:
            params = json.loads(body.decode("utf-8")) if body.strip() else {}
            if not isinstance(params, dict):
                raise ValueError("the request body must be a JSON object")
            for route_method, pattern, action in self._control_routes():
                match = re.fullmatch(pattern, path)
                if match and method == route_method:
                    return json_response(200, action(params, *match.groups()))
        except KeyError as error:
            return json_response(404, {"error": str(error.args[0])})
        except (ValueError, TypeError, UnicodeDecodeError) as error:
            return json_response(400, {"error": str(error)})
        return json_response(404, {"error": f"no route {method} {path}"})

    def _control_routes(self):
        """(method, path pattern, action(params, *path groups) -> JSON dict) for each control endpoint."""
        ok = {"success": True}

        def all_stats(params):
            with self._lock:
                return {"hooks": {name: state.stats() for name, state in self._hooks.items()},
                        "unknown_hook_requests": self._unknown_hook_requests, "twilio": self.twilio.stats()}

        def set_fault(params, name):
            self._state(name)  # 404 before 400 for an unknown hook
            allowed = {"status", "body", "delay_seconds", "count", "seconds"}
            if set(params) - allowed:
                raise ValueError(f"unknown fault keys: {sorted(set(params) - allowed)}")
            self.set_fault(name, **params)
            return ok

        def set_old_server(params):
            if not isinstance(params.get("enabled"), bool):
                raise ValueError('expected {"enabled": true|false}')
            self.set_old_server(params["enabled"])
            return ok

        def set_disabled(params, name):
            if not isinstance(params.get("disabled"), bool):
                raise ValueError('expected {"disabled": true|false}')
            self.set_disabled(name, params["disabled"])
            return ok

        return [
            ("GET", r"/_mock/health", lambda params: {"status": "ok"}),
            ("GET", r"/_mock/messages", lambda params: {"hooks": {n: self.messages(n) for n in self._hooks}}),
            ("GET", r"/_mock/messages/([^/]+)", lambda params, name: {"hook": name, "messages": self.messages(name)}),
            ("DELETE", r"/_mock/messages", lambda params: self.clear_messages() or ok),
            ("GET", r"/_mock/stats", all_stats),
            ("POST", r"/_mock/reset", lambda params: self.reset() or ok),
            ("POST", r"/_mock/faults/([^/]+)", set_fault),
            ("DELETE", r"/_mock/faults/([^/]+)", lambda params, name: self.clear_faults(name) or ok),
            ("POST", r"/_mock/hooks/([^/]+)/disabled", set_disabled),
            ("POST", r"/_mock/old-server", set_old_server),
            ("POST", r"/_mock/rate-limit", lambda params: self.set_rate_limit(
                params.get("limit"), params.get("window_seconds", self.rate_limit_window_seconds)) or ok),
            # Where the mock Twilio is and which account it serves (never the token).
            ("GET", r"/_mock/twilio", lambda params: {
                "api_url": self.twilio_api_url, "messages_url": self.twilio_messages_url,
                "account_sid": self.twilio.account_sid, "api_key_sids": sorted(self.twilio.api_keys)}),
            *self.twilio.control_routes(),
        ]


def sent_message(record: dict, room_id: str) -> dict:
    """The saved message as a current server answers it in `responses` (the fields a relay may use)."""
    message = record["message"]
    text = message.get("text") or message.get("msg")
    received = record["received_at"]
    sent = {"_id": record["message_id"], "rid": room_id, "msg": text.strip() if isinstance(text, str) else "",
            # A JavaScript Date in JSON: ISO 8601, milliseconds, UTC.
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(received)) + f".{int(received * 1000) % 1000:03d}Z"}
    if record["tmid"] is not None:
        sent["tmid"] = record["tmid"]
    return sent


def describe_message(hook_name: str, message: dict) -> str:
    """A readable summary of a posted message: hook, text, one line per attachment."""
    def short(value) -> str:
        text = " ".join(str(value).split())
        return text if len(text) <= PRINTED_VALUE_MAX_CHARS else text[:PRINTED_VALUE_MAX_CHARS - 1] + "…"

    lines = [f"[{hook_name}] {message.get('text') or message.get('msg') or ''}"]
    attachments = message.get("attachments")
    for attachment in attachments if isinstance(attachments, list) else []:
        fields = "; ".join(f"{short(item['title'])}: {short(item['value'])}" for item in attachment.get("fields", []))
        lines.append(f"  - color={attachment.get('color', '')} title={short(attachment.get('title', ''))} | {fields}")
    return "\n".join(lines)


# -- the page (GET /): each hook's messages drawn as Rocket.Chat's web client draws them --
# Everything posted is untrusted: every string is escaped, only http(s) URLs become links, nothing is loaded (images
# stay links), and the page runs no script. One <style> element, allowed by its hash in the Content-Security-Policy.
LINKABLE_URL = re.compile(r"https?://[^\s\"'<>`]+", re.IGNORECASE)
# What may stand in a CSS declaration as a colour: hex, a name (an unknown one is ignored by the browser, as
# Slack's "good" colours nothing in Rocket.Chat), or rgb()/hsl() with numbers only.
SAFE_COLOR = re.compile(r"#[0-9a-fA-F]{3,8}|[a-zA-Z]{1,40}|(?:rgb|hsl)a?\([0-9.,%\s/]{1,60}\)")
# Rocket.Chat's theme tokens, drawn in its palette's colours (Fuselage danger-500, warning-500, success-500).
THEME_COLORS = {"danger": "#ec0d2a", "warning": "#f3be08", "success": "#2de0a5"}
# Rocket.Chat's inline Markdown, the part alerts use: `code`, [label](url), *bold*, _italic_, ~strike~.
INLINE_MARKDOWN = re.compile(
    r"`(?P<code>[^`\n]+)`"
    r"|\[(?P<label>[^\]\n]+)\]\((?P<url>[^()\s]+)\)"
    r"|(?<![\w*])\*(?P<bold>[^*\n]+)\*(?![\w*])"
    r"|(?<![\w_])_(?P<italic>[^_\n]+)_(?![\w_])"
    r"|(?<![\w~])~(?P<strike>[^~\n]+)~(?![\w~])"
)
PAGE_CSS = """
:root { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #2f343d; }
body { margin: 0; background: #f2f3f5; }
header { background: #1f2329; color: #fff; padding: 12px 20px; }
header h1 { margin: 0; font-size: 18px; }
header p { margin: 2px 0 0; color: #cbced1; font-size: 13px; }
main { max-width: 1000px; margin: 0 auto; padding: 12px; }
.channel { background: #fff; border: 1px solid #e4e7ea; border-radius: 4px; margin: 12px 0; }
.channel > h2 { margin: 0; padding: 10px 16px; font-size: 16px; border-bottom: 1px solid #e4e7ea; }
.channel > h2 small { color: #6c727a; font-weight: normal; }
.empty { padding: 12px 16px; color: #6c727a; margin: 0; }
.message { display: flex; gap: 10px; padding: 10px 16px; border-top: 1px solid #f2f3f5; }
.message:first-of-type { border-top: 0; }
.avatar { flex: 0 0 36px; height: 36px; border-radius: 4px; background: #9ea2a8; color: #fff; font-weight: bold;
  display: flex; align-items: center; justify-content: center; }
.body { min-width: 0; flex: 1; }
.meta { display: flex; gap: 6px; align-items: baseline; flex-wrap: wrap; }
.alias { font-weight: bold; }
.tag { font-size: 11px; background: #e4e7ea; border-radius: 2px; padding: 0 4px; color: #2f343d; }
.time, .emoji { color: #6c727a; font-size: 12px; }
.text, .attachment-text, .field-value, .pretext { white-space: pre-wrap; overflow-wrap: anywhere; }
code { background: #f7f8fa; border: 1px solid #e4e7ea; border-radius: 2px; padding: 0 3px; font-size: 13px; }
a { color: #1d74f5; text-decoration: none; }
a:hover { text-decoration: underline; }
.attachment { border-left: 4px solid #cbced1; padding: 2px 0 2px 12px; margin: 6px 0; }
.attachment.quote { border-left-color: #e4e7ea; color: #6c727a; }
.author { font-size: 13px; color: #6c727a; }
.title { font-weight: bold; }
.fields { display: grid; grid-template-columns: 1fr 1fr; gap: 4px 16px; margin: 6px 0 0; }
.field { grid-column: 1 / -1; margin: 0; }
.field.short { grid-column: auto; }
.field dt { font-weight: bold; font-size: 13px; }
.field dd { margin: 0; }
.image { font-size: 13px; color: #6c727a; }
.thread { margin: 0 16px 8px 62px; border-left: 2px solid #e4e7ea; }
.thread .message { padding: 6px 12px; border-top: 0; }
.thread-note { font-size: 12px; color: #6c727a; }
.thread-note.unknown { color: #a94442; }
@media (max-width: 600px) { .thread { margin: 0 8px 6px 24px; } .thread .message { padding: 6px 8px; } }
details summary { cursor: pointer; color: #6c727a; font-size: 13px; }
@media (max-width: 600px) { main { padding: 4px; } .message { padding: 8px; } .fields { grid-template-columns: 1fr; } }
"""


def escape(value) -> str:
    """Any value as HTML text (quotes escaped too, so it is safe in an attribute)."""
    return html.escape(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))


def linkable(url) -> bool:
    """True for an http(s) URL, the only kind drawn as a link (javascript: and data: stay text)."""
    return isinstance(url, str) and LINKABLE_URL.fullmatch(url) is not None


def link(url: str, label_html: str) -> str:
    """An <a> opening url in a new tab; url must be linkable()."""
    return f'<a href="{html.escape(url)}" target="_blank" rel="noopener noreferrer">{label_html}</a>'


def render_markdown(text) -> str:
    """Rocket.Chat's inline Markdown as HTML; anything it does not know stays (escaped) text."""
    if not isinstance(text, str):
        return escape(text)
    parts, position = [], 0
    for match in INLINE_MARKDOWN.finditer(text):
        parts.append(html.escape(text[position:match.start()]))
        position = match.end()
        if match["code"] is not None:
            parts.append(f"<code>{html.escape(match['code'])}</code>")
        elif match["label"] is not None:
            parts.append(link(match["url"], html.escape(match["label"])) if linkable(match["url"])
                         else html.escape(match[0]))
        else:
            tag = "strong" if match["bold"] is not None else "em" if match["italic"] is not None else "del"
            parts.append(f"<{tag}>{render_markdown(match['bold'] or match['italic'] or match['strike'])}</{tag}>")
    parts.append(html.escape(text[position:]))
    return "".join(parts)


def css_color(value) -> str | None:
    """The attachment colour as a CSS value, or None when it cannot stand in a style sheet safely."""
    if not isinstance(value, str) or not SAFE_COLOR.fullmatch(value.strip()):
        return None
    return THEME_COLORS.get(value.strip().lower(), value.strip())


def render_attachment(attachment, color_classes: dict[str, str]) -> str:
    """One attachment: colour bar, pretext, author, title (a link if http(s)), text, fields, image as a link."""
    if not isinstance(attachment, dict):
        return ""
    parts = []
    if attachment.get("pretext"):
        parts.append(f'<div class="pretext">{render_markdown(attachment["pretext"])}</div>')
    if "message_link" in attachment:  # drawn as a quote: Rocket.Chat ignores colour and fields
        quoted = attachment.get("text", "")
        return "".join(parts) + f'<blockquote class="attachment quote">{render_markdown(quoted)}</blockquote>'
    body = []
    if attachment.get("author_name"):
        name = escape(attachment["author_name"])
        author_link = attachment.get("author_link")
        body.append(f'<div class="author">{link(author_link, name) if linkable(author_link) else name}</div>')
    if attachment.get("title"):
        title = escape(attachment["title"])
        title_link = attachment.get("title_link")
        body.append(f'<div class="title">{link(title_link, title) if linkable(title_link) else title}</div>')
    details = []
    if attachment.get("text"):
        details.append(f'<div class="attachment-text">{render_markdown(attachment["text"])}</div>')
    fields = attachment.get("fields")
    if isinstance(fields, list) and fields:
        items = "".join(
            f'<div class="field{" short" if item.get("short") is True else ""}">'
            f'<dt>{escape(item.get("title", ""))}</dt><dd class="field-value">{render_markdown(item.get("value", ""))}'
            f"</dd></div>"
            for item in fields if isinstance(item, dict))
        details.append(f'<dl class="fields">{items}</dl>')
    if attachment.get("image_url"):
        image_url = attachment["image_url"]
        label = escape(image_url)
        shown = link(image_url, label) if linkable(image_url) else label
        details.append(f'<div class="image">image (not loaded): {shown}</div>')
    if attachment.get("collapsed") is True and details:
        details = [f"<details><summary>collapsed</summary>{''.join(details)}</details>"]
    color = css_color(attachment.get("color"))
    classes = "attachment" + (f" {color_classes.setdefault(color, f'bar-{len(color_classes)}')}" if color else "")
    return "".join(parts) + f'<div class="{classes}">{"".join(body + details)}</div>'


def render_message(record: dict, color_classes: dict[str, str], *, reply: bool = False,
                   note_html: str = "") -> str:
    """One recorded message: avatar initial, alias, time, a thread note, text, attachments."""
    message = record["message"]
    alias = message.get("alias") if isinstance(message.get("alias"), str) and message["alias"].strip() else "bot"
    emoji = message.get("emoji") or message.get("icon_emoji")
    received = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(record["received_at"]))
    text = message.get("text") or message.get("msg")
    attachments = message.get("attachments")
    initial = html.escape(alias.strip()[0].upper())
    anchor = f' id="message-{html.escape(record["message_id"])}"' if record.get("message_id") else ""
    parts = [
        f'<article class="message{" reply" if reply else ""}"{anchor}>'
        f'<div class="avatar" aria-hidden="true">{initial}</div><div class="body">',
        f'<div class="meta"><span class="alias">{html.escape(alias)}</span><span class="tag">BOT</span>',
        f'<span class="emoji">{escape(emoji)}</span>' if emoji else "",
        f'<time class="time">{received}</time></div>',
        note_html,
        f'<div class="text">{render_markdown(text)}</div>' if text else "",
        *(render_attachment(attachment, color_classes) for attachment in
          (attachments if isinstance(attachments, list) else [])),
        "</div></article>",
    ]
    return "".join(parts)


def thread_layout(records: list[dict]) -> tuple[list[dict], dict[str, list[dict]]]:
    """Split a hook's records into top-level messages and replies by thread root id (both oldest first).

    A reply's parent is an earlier message of the same hook; a reply to a reply joins its thread's root, and a tmid
    naming no earlier message leaves the message top-level (Rocket.Chat posts it all the same).
    """
    position = {record["message_id"]: index for index, record in enumerate(records) if record.get("message_id")}
    roots: dict[str, str] = {}  # message id -> its thread root's id, for replies only
    top_level, replies = [], {}
    for index, record in enumerate(records):
        tmid = record.get("tmid")
        if tmid is not None and position.get(tmid, index) < index:
            root = roots.get(tmid, tmid)
            roots[record.get("message_id")] = root
            replies.setdefault(root, []).append(record)
        else:
            top_level.append(record)
    return top_level, replies


def render_channel(records: list[dict], color_classes: dict[str, str]) -> str:
    """A hook's messages, newest first, each followed by its thread's replies (oldest first, indented)."""
    top_level, replies = thread_layout(records)
    parts = []
    for record in reversed(top_level):
        note = ""
        if record.get("tmid") is not None:
            note = (f'<div class="thread-note unknown">reply to unknown message '
                    f'<code>{html.escape(record["tmid"])}</code></div>')
        parts.append(render_message(record, color_classes, note_html=note))
        thread = replies.get(record.get("message_id"), [])
        if thread:
            parts.append(f'<div class="thread" aria-label="{len(thread)} repl{"y" if len(thread) == 1 else "ies"}">'
                         + "".join(render_message(reply, color_classes, reply=True,
                                                  note_html='<div class="thread-note">↳ reply in thread</div>')
                                   for reply in thread) + "</div>")
    return "".join(parts)


def render_page(channels: dict[str, list[dict]], sms: list[dict] = ()) -> tuple[str, str]:
    """The page of every hook's messages and of the SMS each number received, newest first; returns (HTML, the CSP
    that allows its one <style>)."""
    color_classes: dict[str, str] = {}  # CSS colour -> class name, filled while drawing the messages
    sections = []
    for name, records in channels.items():
        messages = render_channel(records, color_classes)
        count = f"{len(records)} message{'' if len(records) == 1 else 's'}"
        messages = messages or '<p class="empty">No messages yet.</p>'
        sections.append(f'<section class="channel" id="channel-{html.escape(name)}"><h2>#{html.escape(name)} '
                        f"<small>{count}</small></h2>{messages}</section>")
    sections.append(mock_twilio.render_sms_section(list(sms)))
    bars = "".join(f".{class_name} {{ border-left-color: {color}; }}\n" for color, class_name in color_classes.items())
    css = PAGE_CSS + mock_twilio.SMS_PAGE_CSS + bars
    digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    csp = (f"default-src 'none'; style-src 'sha256-{digest}'; img-src 'none'; base-uri 'none'; "
           "form-action 'none'; frame-ancestors 'none'")
    page = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="refresh" content="{PAGE_REFRESH_SECONDS}">'
        f"<title>Mock Rocket.Chat</title><style>{css}</style></head><body>"
        f"<header><h1>Mock Rocket.Chat</h1><p>Messages posted to each hook, newest first, thread replies under "
        f"their parent, then the SMS each number received through the mock Twilio; this page reloads every "
        f"{PAGE_REFRESH_SECONDS} s.</p></header>"
        f"<main>{''.join(sections)}</main></body></html>\n"
    )
    return page, csp


class _MockHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    mock: MockRocketChat


class _MockRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response carries Content-Length
    disable_nagle_algorithm = True  # headers and body are written separately: avoid ~40 ms stalls per request
    server: _MockHTTPServer

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_DELETE = do_PUT = do_GET

    def _read_body(self) -> bytes:
        """Read the whole request body (Content-Length or chunked) so keep-alive stays in step."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _dispatch(self) -> None:
        """Route to the control API or a hook and write the response with its Content-Length."""
        mock = self.server.mock
        body = self._read_body()
        path = urllib.parse.urlsplit(self.path).path
        if path.startswith("/_mock/"):
            response = mock.handle_control_request(self.command, path, body)
        elif path.startswith(mock_twilio.API_PATH_PREFIX):
            response = mock.twilio.handle_request(self.command, path, self.headers.get("Authorization", ""),
                                                  self.headers.get("Content-Type", ""), body)
            if response.drop:  # handled, then the answer lost in transit: close without a status line
                self.close_connection = True
                return
        elif HOOK_PATH.fullmatch(path) and self.command in ("GET", "POST"):
            response = mock.handle_hook_request(self.command, path, self.headers.get("Content-Type", ""),
                                                body, self.client_address[0])
        elif path == "/" and self.command == "GET":
            response = mock.handle_page_request()
        else:
            response = json_response(404, {"success": False, "error": f"no route {self.command} {path}"})
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)

    def date_time_string(self, timestamp=None) -> str:
        # The Date header follows the mock's clock so X-RateLimit-Reset can be read against it.
        return super().date_time_string(self.server.mock.clock() if timestamp is None else timestamp)

    def log_message(self, format, *args) -> None:
        if not self.server.mock.quiet:
            sys.stderr.write(TOKEN_IN_LOG.sub(r"\1***", f"{self.address_string()} - {format % args}") + "\n")


def parse_rate_limit(text: str) -> tuple[int, float]:
    """Parse `<count>/<seconds>s` (e.g. `10/60s`, `10/0.5s`) or `off`/`0` into (count, window_seconds)."""
    if text.strip().lower() in ("off", "0"):
        return 0, DEFAULT_RATE_LIMIT_WINDOW_SECONDS
    match = re.fullmatch(r"(\d+)/(\d+(?:\.\d+)?|\.\d+)s", text.strip())
    if not match or float(match[2]) <= 0:
        raise argparse.ArgumentTypeError(f"expected <count>/<seconds>s (e.g. 10/60s) or off, got {text!r}")
    return int(match[1]), float(match[2])


def parse_hook(text: str) -> tuple[str, tuple[str, str]]:
    """Parse `NAME=ID/TOKEN` into (name, (id, token))."""
    match = re.fullmatch(r"([^=/\s]+)=([^/\s]+)/([^/\s]+)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"expected NAME=ID/TOKEN, got {text!r}")
    return match[1], (match[2], match[3])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description="Mock Rocket.Chat incoming webhooks for tests and demos.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9999)
    parser.add_argument("--hook", dest="hooks", action="append", type=parse_hook, metavar="NAME=ID/TOKEN",
                        help="a hook (repeatable); default: critical, warning, info with token <name>-token")
    parser.add_argument("--rate-limit", type=parse_rate_limit, metavar="N/Ss|off",
                        default=(DEFAULT_RATE_LIMIT_COUNT, DEFAULT_RATE_LIMIT_WINDOW_SECONDS),
                        help="requests per window per hook and client IP (default 10/60s, as Rocket.Chat)")
    parser.add_argument("--legacy-404", action="store_true",
                        help="answer a bad token 404 JSON like Rocket.Chat 6.x instead of 500 text")
    parser.add_argument("--old-server", action="store_true",
                        help="ignore separateResponse like Rocket.Chat before mid-2025 (answers carry no message id)")
    parser.add_argument("--quiet", action="store_true", help="do not print posted messages or requests")
    mock_twilio.add_arguments(parser)
    return parser.parse_args(argv)


STOP_POLL_SECONDS = 0.2


def main(argv: list[str] | None = None) -> None:
    """Run the mock in the foreground until SIGINT or SIGTERM."""
    args = parse_args(argv)
    mock = MockRocketChat(dict(args.hooks) if args.hooks else None, host=args.host, port=args.port,
                          rate_limit_count=args.rate_limit[0], rate_limit_window_seconds=args.rate_limit[1],
                          legacy_404=args.legacy_404, old_server=args.old_server, quiet=args.quiet,
                          twilio_account_sid=args.twilio_account_sid, twilio_auth_token=args.twilio_auth_token,
                          twilio_api_keys=dict(args.twilio_api_keys), twilio_opted_out=args.twilio_opted_out,
                          twilio_delivery_failures=dict(args.twilio_delivery_failures),
                          twilio_status_delay_seconds=args.twilio_status_delay_seconds)
    # A plain flag, polled: a signal handler that sets a threading.Event can deadlock on the Event's own lock when
    # it interrupts the main thread inside Event.wait() (Ctrl-C on `make run` sends SIGINT, then SIGTERM).
    stop_requested = []
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda *_: stop_requested.append(True))
    try:
        mock.start()
    except OSError as error:
        sys.exit(f"mock_server: cannot listen on {args.host}:{args.port}: {error}")
    hooks = " ".join(f"{name}={mock.hook_url(name)}" for name in mock.hook_names)
    print(f"mock Rocket.Chat on {mock.base_url} hooks: {hooks}", flush=True)
    # The token is not printed: it is the --twilio-auth-token given, or mock_twilio.DEFAULT_TWILIO_AUTH_TOKEN.
    print(f"mock Twilio on TWILIO_API_URL={mock.twilio_api_url} TWILIO_ACCOUNT_SID={mock.twilio.account_sid}",
          flush=True)
    while not stop_requested:
        time.sleep(STOP_POLL_SECONDS)
    mock.stop()


if __name__ == "__main__":
    main()
