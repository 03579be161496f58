"""The relay against a hostile Rocket.Chat (tests/hostile_rocketchat.py), driven as Alertmanager drives it.

While Rocket.Chat misbehaves (a 429 asking for an absurd wait, a connection cut anywhere in the answer, a body that
is not JSON, huge, dripped, or never sent) Alertmanager must get 503 within the delivery deadline with a sane
Retry-After, never a 502 (final for the flush, and remembered); once Rocket.Chat answers correctly again, the alert
reaches it and Alertmanager's re-send gets 200. The hook keeps working afterwards (GET /ready and /health 200, every
post thread alive, a later alert delivered) and no secret and no raw traceback reaches the log or standard error.
Only Rocket.Chat's own refusals may end in 502 (the last tests and refusal_may_be_final say which).
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import itertools
import json
import logging
import re
import threading
import time
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rcwebhook.app import create_app
from rcwebhook.logs import HANDLER_NAME
from tests.helpers import call_within, wait_until
from tests.hostile_rocketchat import OK, OK_BODY, Behaviour, HostileRocketChat, answer, cut_after

DEADLINE_SECONDS = 1.0  # DELIVERY_DEADLINE_SECONDS: the relay answers within it
HOLD_DEADLINE_SECONDS = 3.0  # the same where a later alert must get through while the first attempt hangs
RATE_LIMIT = "10/1s"  # ROCKETCHAT_RATE_LIMIT: a short window, so a capped wait is short too
WINDOW_SECONDS = 1.0
# A Retry-After above this is not sane here: the window plus a margin that also covers the relay's own backoff
# between failed attempts (at most 4 s ± 50 %). The bugs give 3600, 86400 or 10^17.
SANE_RETRY_AFTER_SECONDS = 10
ANSWER_SLACK_SECONDS = 0.5  # "within the deadline": the deadline plus this
RECOVERY_SECONDS = 12.0  # how long the hook may take to deliver once Rocket.Chat answers correctly again
HANG_SECONDS = 15.0  # a request not answered in this time is a hang: the test fails instead of waiting
# Each example costs about 0.5 s, mostly the relay's own backoff before it retries a failed post.
PROPERTY_EXAMPLES = 30
HUGE_BODY_BYTES = 300 * 1024 * 1024
READ_CAP_BYTES = 1024 * 1024
# What a relay that stops at READ_CAP_BYTES may still have let the server write: its socket buffers on 127.0.0.1.
SOCKET_BUFFER_ALLOWANCE_BYTES = 32 * 1024 * 1024
RATE_LIMITED_ERROR = ("Error, too many requests. Please slow down. You must wait {} seconds before trying this "
                      "endpoint again. [error-too-many-requests]")  # rocketchat-contract.md
MAINTENANCE_PAGE = "<html><body><h1>Rocket.Chat is under maintenance</h1>Back soon.</body></html>"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \S+ \[[^\]]*\]: ")
NAMES = (f"HostileCase{number}" for number in itertools.count(1))  # each notification is a group of its own


# -- driving the relay as Alertmanager does ---------------------------------------------------------------------------

def notification(name: str) -> bytes:
    alert = {
        "status": "firing", "labels": {"alertname": name, "severity": "critical", "instance": "db-1:9100"},
        "annotations": {"summary": f"{name} is down"}, "startsAt": "2024-01-15T10:30:00Z",
        "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
        "fingerprint": f"{abs(hash(name)):016x}"[:16],
    }
    return json.dumps({
        "version": "4", "groupKey": f'{{}}:{{alertname="{name}"}}', "truncatedAlerts": 0, "status": "firing",
        "receiver": "rocketchat", "groupLabels": {"alertname": name}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093", "alerts": [alert],
    }).encode()


def within(seconds: float, call, what: str):
    return call_within(seconds, call, what)


@dataclass(frozen=True)
class Answer:
    """What Alertmanager got back."""

    status: int
    retry_after: str | None
    seconds: float
    document: dict

    def __str__(self) -> str:
        return (f"{self.status} after {self.seconds * 1000:.0f} ms (Retry-After: {self.retry_after}) "
                f"{json.dumps(self.document)[:400]}")


class Relay:
    """The app under test, posted to as Alertmanager would."""

    def __init__(self, app):
        self.app = app
        self.http = app.test_client()
        self.dispatcher = app.extensions["rcwebhook.dispatcher"]

    def post(self, name: str) -> Answer:
        started = time.monotonic()
        response = within(HANG_SECONDS, lambda: self.http.post(
            "/webhook", data=notification(name),
            headers={"Content-Type": "application/json", "User-Agent": "Alertmanager/0.25.0"},
        ), "POST /webhook")
        return Answer(response.status_code, response.headers.get("Retry-After"), time.monotonic() - started,
                      response.get_json(silent=True) or {})

    def get_status(self, path: str) -> int:
        return within(HANG_SECONDS, lambda: self.http.get(path), f"GET {path}").status_code

    def dead_threads(self) -> list[str]:
        return [thread.name for thread in self.dispatcher.threads if not thread.is_alive()]


def relay_environ(hook_url: str, deadline_seconds: float = DEADLINE_SECONDS, **extra: str) -> dict[str, str]:
    return {"ROCKETCHAT_WEBHOOK_DEFAULT": hook_url, "DELIVERY_DEADLINE_SECONDS": str(deadline_seconds),
            "ROCKETCHAT_RATE_LIMIT": RATE_LIMIT, **extra}


# -- fixtures -----------------------------------------------------------------------------------------------------

@pytest.fixture
def thread_deaths(monkeypatch):
    """Threads that died of an uncaught exception, each as "name: Type: message"; printed as Python would."""
    deaths: list[str] = []

    def record(args):
        deaths.append(f"{args.thread.name if args.thread else '?'}: {args.exc_type.__name__}: {args.exc_value}")
        threading.__excepthook__(args)  # what production does with it: the raw traceback to standard error

    monkeypatch.setattr(threading, "excepthook", record)
    return deaths


@pytest.fixture
def hostile():
    with HostileRocketChat() as server:
        yield server


@pytest.fixture
def restore_logging():
    """Undo what create_app(setup_logging=True) does to the root logger: its handler and level."""
    root = logging.getLogger()
    level = root.level
    yield
    for handler in [handler for handler in root.handlers if handler.get_name() == HANDLER_NAME]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)


@pytest.fixture
def start_relay(hostile, caplog, restore_logging):
    """Start the relay wired to the hostile server; stopped afterwards."""
    caplog.set_level(logging.INFO)
    apps = []

    def start(deadline_seconds: float = DEADLINE_SECONDS, setup_logging: bool = False) -> Relay:
        app = create_app(relay_environ(hostile.hook_url, deadline_seconds), setup_logging=setup_logging)
        apps.append(app)
        return Relay(app)

    yield start
    for app in apps:
        app.extensions["rcwebhook.dispatcher"].stop(drain_seconds=0)


# -- what a user must see -----------------------------------------------------------------------------------------

def assert_sane_retry_after(answer: Answer) -> None:
    assert answer.retry_after is not None and answer.retry_after.isdigit(), f"no usable Retry-After: {answer}"
    assert 1 <= int(answer.retry_after) <= SANE_RETRY_AFTER_SECONDS, (
        f"Retry-After: {answer.retry_after} s, expected at most {SANE_RETRY_AFTER_SECONDS} s (the {WINDOW_SECONDS:g} s "
        f"pacing window plus a margin): {answer}"
    )


def assert_retry_later(answer: Answer, deadline_seconds: float = DEADLINE_SECONDS) -> None:
    """503 within the deadline with a sane Retry-After: Alertmanager retries, nothing is lost."""
    assert answer.status == 503, (
        f"expected 503 (Alertmanager retries it; a 502 is final for the flush), got {answer}"
    )
    assert answer.seconds <= deadline_seconds + ANSWER_SLACK_SECONDS, (
        f"answered after {answer.seconds:.2f} s, past the {deadline_seconds:g} s delivery deadline: {answer}"
    )
    assert_sane_retry_after(answer)


def assert_hook_healthy(relay: Relay, deaths: list[str]) -> None:
    assert not deaths, f"a relay thread died: {deaths}"
    assert not relay.dead_threads(), f"post thread(s) dead: {relay.dead_threads()}"
    assert relay.get_status("/ready") == 200, "GET /ready is not 200 after Rocket.Chat recovered"
    assert relay.get_status("/health") == 200, "GET /health is not 200 after Rocket.Chat recovered"


def wait_for_delivery(cases: list[tuple[Relay, HostileRocketChat, str]], deaths: list[str]) -> None:
    """Wait, at most RECOVERY_SECONDS in all, until each alert reached its Rocket.Chat or its relay's worker died."""
    def settled() -> bool:
        return bool(deaths) or all(server.delivered(name) or relay.dead_threads() for relay, server, name in cases)

    try:
        wait_until(settled, RECOVERY_SECONDS, "the alerts to reach Rocket.Chat")
    except AssertionError:
        pass  # said by assert_recovered, with what Alertmanager's re-send gets


def assert_recovered(relay: Relay, hostile: HostileRocketChat, name: str, deaths: list[str]) -> None:
    """After the wait: the alert reached Rocket.Chat, the re-send gets 200, a later alert gets through."""
    assert not deaths, f"a relay thread died: {deaths}"
    assert not relay.dead_threads(), f"post thread(s) dead: {relay.dead_threads()}"
    resend = relay.post(name)
    assert hostile.delivered(name), (
        f"{name} did not reach Rocket.Chat within {RECOVERY_SECONDS:g} s of its recovery (the hook is held, or the "
        f"alert was dropped as refused); Alertmanager's re-send got {resend}"
    )
    assert resend.status == 200, f"expected 200 for Alertmanager's re-send once Rocket.Chat recovered, got {resend}"
    later = relay.post(f"{name}Later")
    assert later.status == 200 and hostile.delivered(f"{name}Later"), f"a later alert was not delivered: {later}"
    assert_hook_healthy(relay, deaths)


def assert_recovers(relay: Relay, hostile: HostileRocketChat, name: str, deaths: list[str]) -> None:
    """Rocket.Chat answers correctly again: the alert reaches it, the re-send gets 200, a later alert gets through."""
    wait_for_delivery([(relay, hostile, name)], deaths)
    assert_recovered(relay, hostile, name, deaths)


def assert_no_secret_logged(caplog, hostile: HostileRocketChat) -> None:
    """No log record, the relay's or a library's, carries the token: a handler other than the relay's redacting one
    (gunicorn's, an error tracker's) would write it out."""
    leaks = [f"{record.name}: {record.getMessage()}" for record in caplog.records
             if hostile.token in record.getMessage()]
    assert not leaks, f"the hook's token is in a log record: {leaks[:3]}"


def assert_stderr_clean(stderr: str, hostile: HostileRocketChat) -> None:
    """What the production handler wrote: no token, and every traceback part of a (redacted) log line."""
    lines = stderr.splitlines()
    raw = [index for index, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")
           and not (index > 0 and LOG_LINE.match(lines[index - 1]))]
    if raw:
        start = raw[0]
        end = next((index for index in range(start + 1, len(lines)) if not lines[index].startswith(" ")), start)
        shown = lines[max(0, start - 1):start + 1] + ["  ..."] + lines[end:end + 1]
        raise AssertionError("a raw traceback on standard error (not a log line):\n" + "\n".join(shown))
    assert "Exception in thread" not in stderr, stderr[-2000:]
    leaks = [line for line in lines if hostile.token in line]
    assert not leaks, f"the hook's token reached standard error: {leaks[:3]}"


# -- 429s asking for waits that must not be believed -------------------------------------------------------------------

def now_ms(offset_seconds: float = 0.0) -> str:
    return str(int((time.time() + offset_seconds) * 1000))


def rate_limited(headers: dict[str, str], wait_seconds: str | None = None) -> Behaviour:
    """A 429 as Rocket.Chat sends it, with these headers; the body's "wait N seconds" only when given."""
    error = RATE_LIMITED_ERROR.format(wait_seconds) if wait_seconds else "too many requests"
    return answer(429, {"success": False, "error": error}, headers)


# Built when the test runs: some are relative to the clock.
RATE_LIMITED = {
    "absurd reset 99999999999999999999": lambda: rate_limited({
        "X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "99999999999999999999",
        "Date": email.utils.formatdate(usegmt=True)}),
    "reset an hour ahead, no Date": lambda: rate_limited({"X-RateLimit-Remaining": "0",
                                                          "X-RateLimit-Reset": now_ms(3600)}),
    "reset read against a Date in year 1": lambda: rate_limited({"X-RateLimit-Reset": now_ms(1),
                                                                 "Date": "Mon, 01 Jan 0001 00:00:00 GMT"}),
    "body says wait 86400 seconds": lambda: rate_limited({}, "86400"),
    "negative reset": lambda: rate_limited({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "-1000"}),
    "NaN reset": lambda: rate_limited({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "NaN"}),
    "garbage reset and Date": lambda: rate_limited({"X-RateLimit-Remaining": "soon", "X-RateLimit-Reset": "soon",
                                                    "Date": "yesterday-ish"}),
}


def test_a_429_asking_for_an_odd_wait_holds_the_hook_no_longer_than_the_window(thread_deaths, caplog):
    """Every kind at once, each with a Rocket.Chat and a relay of its own, so their capped waits overlap.

    Each kind: Alertmanager gets 503 within the deadline with a sane Retry-After (or 200 after a retry); once the
    window reopened the alert reaches Rocket.Chat, the re-send gets 200 and the hook keeps working.
    """
    caplog.set_level(logging.INFO)
    problems: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        cases = []
        for case, make in RATE_LIMITED.items():
            server = stack.enter_context(HostileRocketChat())
            server.answer(make())  # once: then Rocket.Chat's window is open again
            relay = Relay(create_app(relay_environ(server.hook_url)))
            stack.callback(relay.dispatcher.stop, drain_seconds=0)
            cases.append((case, server, relay, next(NAMES)))
        firsts = within(HANG_SECONDS, lambda: all_at_once(
            [lambda relay=relay, name=name: relay.post(name) for _, _, relay, name in cases]
        ), "the first POSTs")
        for (case, server, relay, name), first in zip(cases, firsts):
            try:
                assert first.status in (200, 503), f"expected 503 (or 200 after a retry) for a 429, got {first}"
                if first.status == 503:
                    assert_retry_later(first)
            except AssertionError as error:
                problems[case] = str(error).split("\n")[0]
        wait_for_delivery([(relay, server, name) for _, server, relay, name in cases], [])
        for case, server, relay, name in cases:
            try:
                assert_recovered(relay, server, name, [])  # a death shows as this relay's dead thread
                assert_no_secret_logged(caplog, server)
            except AssertionError as error:
                problems.setdefault(case, str(error).split("\n")[0])
    assert not problems, "\n".join(f"{case}: {problem}" for case, problem in problems.items())
    assert not thread_deaths, f"relay threads died: {thread_deaths}"


def all_at_once(calls: list) -> list:
    """Each call's result, the calls run in parallel threads; the first error is raised."""
    results: list = [None] * len(calls)

    def run(index: int) -> None:
        try:
            results[index] = calls[index]()
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            results[index] = error

    threads = [threading.Thread(target=run, args=(index,), daemon=True) for index in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def test_an_absurd_reset_leaves_no_raw_traceback_and_no_secret_on_stderr(
    start_relay, hostile, thread_deaths, caplog, capfd
):
    hostile.answer(RATE_LIMITED["absurd reset 99999999999999999999"]())
    relay = start_relay(setup_logging=True)  # the production log handler: redacting, to standard error
    name = next(NAMES)

    first = relay.post(name)
    later = relay.post(f"{name}Later")  # the worker waits for the hook's next post (where a 10^17 s wait failed)

    assert_stderr_clean(capfd.readouterr().err, hostile)
    assert not thread_deaths, f"a relay thread died: {thread_deaths}"
    assert first.status in (200, 503) and later.status in (200, 503), (str(first), str(later))
    assert_hook_healthy(relay, thread_deaths)
    assert_no_secret_logged(caplog, hostile)


# -- transient faults: 503 within the deadline, never 502, nothing remembered ------------------------------------------

TRANSIENT_FAULTS = {
    "connection closed before any byte": dataclasses.replace(OK, cut_after_bytes=0),
    "cut inside the status code": cut_after(OK, b"HTTP/1.1 2"),
    "cut inside the reason phrase": cut_after(OK, b"HTTP/1.1 200 O"),
    "cut inside the headers": cut_after(OK, b"Content-Type: appl"),
    "cut inside a body with Content-Length": cut_after(OK, b'{"suc'),
    "cut inside a body ended by the close": cut_after(dataclasses.replace(OK, framing="close"), b'{"suc'),
    "200 with an HTML maintenance page": answer(200, MAINTENANCE_PAGE, {"Content-Type": "text/html"}),
    "200 with an empty body": answer(200, b"", {"Content-Type": "application/json"}),
}


@pytest.mark.parametrize("case", list(TRANSIENT_FAULTS))
def test_a_transient_fault_is_answered_503_and_not_remembered(start_relay, hostile, thread_deaths, caplog, case):
    hostile.fail_until_recovered(TRANSIENT_FAULTS[case])
    relay = start_relay()
    name = next(NAMES)

    first = relay.post(name)

    assert_retry_later(first)
    hostile.recover()
    assert_recovers(relay, hostile, name, thread_deaths)
    assert_no_secret_logged(caplog, hostile)


def test_a_300_mb_answer_is_read_no_further_than_the_cap(start_relay, hostile, thread_deaths, caplog):
    huge = Behaviour(body=b"", endless_bytes=HUGE_BODY_BYTES)  # 200, Content-Type: application/json
    hostile.fail_until_recovered(huge)
    relay = start_relay()
    name = next(NAMES)

    first = relay.post(name)

    assert_retry_later(first)
    hostile.recover()

    def huge_answers() -> list:
        return [request for request in hostile.requests if request.behaviour == huge]

    wait_until(lambda: all(request.finished for request in huge_answers()), RECOVERY_SECONDS,
               "the relay to hang up on every 300 MB answer")
    read = max(request.bytes_sent for request in huge_answers())
    assert read <= READ_CAP_BYTES + SOCKET_BUFFER_ALLOWANCE_BYTES, (
        f"the relay read {read / 2**20:.0f} MiB of a {HUGE_BODY_BYTES >> 20} MiB answer; expected it to stop near "
        f"{READ_CAP_BYTES >> 20} MiB"
    )
    assert_recovers(relay, hostile, name, thread_deaths)
    assert_no_secret_logged(caplog, hostile)


HOLDING_FAULTS = {
    "a body dripped a byte every 0.5 s": dataclasses.replace(OK, drip_seconds=0.5),  # 16 bytes: 8 s
    "a server that never answers": Behaviour(silent=True),
}


@pytest.mark.parametrize("case", list(HOLDING_FAULTS))
def test_a_hanging_answer_holds_the_hook_no_longer_than_the_deadline(
    start_relay, hostile, thread_deaths, caplog, case
):
    hostile.fail_until_recovered(HOLDING_FAULTS[case])
    relay = start_relay(HOLD_DEADLINE_SECONDS)
    name = next(NAMES)

    first = relay.post(name)
    assert_retry_later(first, HOLD_DEADLINE_SECONDS)
    hostile.recover()
    later = relay.post(f"{name}Next")

    assert later.status == 200, (
        f"expected 200: an alert posted after the first one's 503, with Rocket.Chat answering again, must not wait "
        f"behind the attempt still hanging on {case}; got {later}"
    )
    assert hostile.delivered(f"{name}Next"), f"{name}Next was answered 200 but never reached Rocket.Chat"
    assert_recovers(relay, hostile, name, thread_deaths)
    assert_no_secret_logged(caplog, hostile)


# -- Rocket.Chat's own refusal: plain-text fallback, then 502 ------------------------------------------------------

REFUSED = answer(200, {"success": False, "error": "Invalid attachment field, title and value is required"})


def test_a_200_refusal_is_retried_as_plain_text_then_answered_502(start_relay, hostile, thread_deaths, caplog):
    hostile.answer(REFUSED, REFUSED)
    relay = start_relay()
    name = next(NAMES)

    first = relay.post(name)

    assert first.status == 502, f"expected 502 for a refusal repeated for the plain-text version, got {first}"
    rich, plain = [request.json for request in hostile.requests]
    assert rich.get("attachments") and name in json.dumps(rich), rich
    assert not plain.get("attachments") and name in plain["text"], plain
    later = relay.post(f"{name}Later")
    assert later.status == 200 and hostile.delivered(f"{name}Later"), later
    assert_hook_healthy(relay, thread_deaths)
    assert_no_secret_logged(caplog, hostile)


def test_a_200_refusal_once_is_delivered_as_plain_text(start_relay, hostile, thread_deaths):
    hostile.answer(REFUSED)
    relay = start_relay()
    name = next(NAMES)

    first = relay.post(name)

    assert first.status == 200, first
    assert [report["outcome"] for report in first.document["destinations"]] == ["delivered_plain_text"], first
    assert not hostile.delivered(name)[0].json.get("attachments")
    assert_hook_healthy(relay, thread_deaths)


# -- property: whatever Rocket.Chat answers ------------------------------------------------------------------------

statuses = st.sampled_from([
    100, 101, 103, 199, 200, 201, 202, 204, 205, 299, 301, 302, 304, 307, 399, 400, 401, 403, 404, 405, 408, 409,
    413, 418, 422, 429, 499, 500, 502, 503, 504, 599, 600, 700, 999,
]) | st.integers(100, 999)
header_names = st.sampled_from([
    "X-RateLimit-Reset", "X-RateLimit-Reset", "X-RateLimit-Remaining", "X-RateLimit-Limit", "Date", "Retry-After",
    "Content-Type", "Location", "X-Powered-By",
])
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=30)
header_values = (
    st.sampled_from([
        "99999999999999999999", "-99999999999999999999", "1e19", "1e308", "1e400", "-1", "0", "NaN", "nan", "inf",
        "-inf", "", " ", "soon", "0x10", "1.5", "Mon, 01 Jan 0001 00:00:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT",
        "Tue, 15 Nov 1994 08:12:31 GMT", "Tue, 15 Nov 1994 08:12:31 +9999", "application/json", "text/html",
        "application/json; charset=latin-1", "text/plain; charset=utf-16",
    ])
    | st.integers(-10**9, 10**12).map(now_ms)  # reset times from 30 years ago to 30,000 years ahead
    | st.integers(-10**9, 10**11).map(lambda offset: email.utils.formatdate(time.time() + offset, usegmt=True))
    | st.integers().map(str) | st.floats().map(repr) | header_text
)
bodies = st.sampled_from([
    OK_BODY, b'{"success":false,"error":"invalid-channel"}', b'{"success":false,"error":"error-running-script"}',
    rate_limited({}, "86400").body,
    b'{"success":false}', b"{}", b"[]", b"null", b'"ok"', b'{"success":"true"}', b'{"success":true',
    MAINTENANCE_PAGE.encode(), b"", b"\xff\xfe\x00", b"Invalid integration id or token provided.",
]) | st.binary(max_size=200)
# How the body's end is told: a correct Content-Length, the close, a Content-Length that lies, chunked that lies.
framings = st.sampled_from(["length", "close", "long", "chunked"])


@st.composite
def rocketchat_answers(draw) -> tuple[Behaviour, int]:
    """An arbitrary answer and how many requests in a row get it (then Rocket.Chat answers correctly)."""
    status, body, framing = draw(statuses), draw(bodies), draw(framings)
    headers = draw(st.lists(st.tuples(header_names, header_values), max_size=4))
    if framing == "long":
        headers.append(("Content-Length", str(len(body) + 7)))
    elif framing == "chunked":
        headers.append(("Transfer-Encoding", "chunked"))
    behaviour = Behaviour(status=status, body=body, headers=tuple(headers),
                          framing="close" if framing == "close" else "length")
    cut = draw(st.none() | st.integers(0, len(behaviour.response_bytes()) - 1))
    return dataclasses.replace(behaviour, cut_after_bytes=cut), draw(st.sampled_from([1, 1, 1, 2]))


def _json_object(body: bytes) -> dict | None:
    for encoding in ("utf-8", "latin-1"):
        try:
            document = json.loads(body.decode(encoding))
        except (ValueError, RecursionError):
            continue
        if isinstance(document, dict):
            return document
    return None


def refusal_may_be_final(behaviour: Behaviour, times: int) -> bool:
    """Whether 502 is a right answer when Rocket.Chat answers so `times` times in a row, then correctly.

    Only Rocket.Chat's own refusals, as the contract lists them: (a) a 4xx other than 408 and 429 whose status line
    arrived up to the code (a proxy's 401/403 included); (b) a 2xx other than 204 whose body arrived whole (no cut,
    honest framing) and is a JSON object without "success": true, answered to the plain-text retry too (times 2).
    Never for a 1xx, 3xx, 408, 429, 5xx or 6xx-9xx, a cut before the status code, or a 2xx whose body is cut, lied
    about, empty, not JSON or not an object.
    """
    cut, status = behaviour.cut_after_bytes, behaviour.status
    if 400 <= status <= 499 and status not in (408, 429):
        return cut is None or cut >= len(f"HTTP/1.1 {status}")
    honest = not {name.lower() for name, _ in behaviour.headers} & {"content-length", "transfer-encoding"}
    whole = cut is None and honest
    if 200 <= status <= 299 and status != 204 and whole and times >= 2:
        document = _json_object(behaviour.body)
        return document is not None and document.get("success") is not True
    return False


@pytest.fixture(scope="module")
def shared_hostile():
    with HostileRocketChat() as server:
        yield server


PROPERTY_NAMES = (f"PropertyCase{number}" for number in itertools.count(1))


def check_answer(answer: Answer, behaviour: Behaviour, times: int) -> None:
    allowed = {200, 503} | ({502} if times and refusal_may_be_final(behaviour, times) else set())
    assert answer.status in allowed, f"expected one of {sorted(allowed)}, got {answer}"
    assert answer.seconds <= DEADLINE_SECONDS + ANSWER_SLACK_SECONDS, f"answered past the deadline: {answer}"
    if answer.status == 503:
        assert_sane_retry_after(answer)


@settings(max_examples=PROPERTY_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(scripted=rocketchat_answers())
def test_any_answer_gives_200_502_or_503_and_no_thread_dies(
    shared_hostile, thread_deaths, caplog, capfd, restore_logging, scripted
):
    behaviour, times = scripted
    event(f"Rocket.Chat answered {behaviour.status // 100}xx{' cut' if behaviour.cut_after_bytes is not None else ''}")
    shared_hostile.reset()
    shared_hostile.answer(*[behaviour] * times)
    thread_deaths.clear()
    caplog.clear()
    capfd.readouterr()
    environ = relay_environ(shared_hostile.hook_url, DEDUP_WINDOW_SECONDS="0")
    relay = Relay(create_app(environ, setup_logging=True))
    try:
        for attempt in ("first", "next"):  # the next alert may meet what is left of the scripted answers
            name = next(PROPERTY_NAMES)
            left = times if attempt == "first" else shared_hostile.scripted_left  # nothing is in flight here
            reply = relay.post(name)
            check_answer(reply, behaviour, left)
            event(f"{attempt} answered {reply.status}")
            if reply.status == 503:
                wait_until(lambda: shared_hostile.delivered(name) or thread_deaths or relay.dead_threads(),
                           SANE_RETRY_AFTER_SECONDS + RECOVERY_SECONDS, f"{name} delivered after the 503")
            assert not thread_deaths, f"a relay thread died: {thread_deaths}"
            assert not relay.dead_threads(), f"post thread(s) dead: {relay.dead_threads()}"
        assert_no_secret_logged(caplog, shared_hostile)
        assert_stderr_clean(capfd.readouterr().err, shared_hostile)
    finally:
        relay.dispatcher.stop(drain_seconds=0)
