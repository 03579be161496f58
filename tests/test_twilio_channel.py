"""Twilio's side of SMS paging: what a body costs and how it is cut, webhook signatures against Twilio's published
vectors, and the client against a real local HTTP server answering as Twilio does (twilio-facts.md)."""

from __future__ import annotations

import base64
import collections
import email.utils
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from requests.adapters import HTTPAdapter
from werkzeug.datastructures import ImmutableMultiDict

from rcwebhook.channels.twilio import (
    MAX_BODY_CHARS,
    SmsOutcome,
    TwilioClient,
    TwilioCredentials,
    body_length,
    encoding,
    fit_to_segments,
    is_gsm7,
    mask_numbers,
    masked_number,
    segment_count,
    signature_matches,
    twilio_signature,
)
from rcwebhook.redact import Redactor
from tests.helpers import closed_port

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8"
RECIPIENT = "+15551234567"
SENDER = "+15557654321"
MESSAGE_SID = "SM" + "abcdef0123456789" * 2
EMOJI = "🚨"  # outside the BMP: two UTF-16 units


# --- segments ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("length, segments", [(160, 1), (161, 2), (306, 2), (307, 3)])
def test_gsm7_bodies_hold_160_characters_alone_and_153_per_segment_concatenated(length, segments):
    body = "a" * length
    assert encoding(body) == "GSM-7"
    assert segment_count(body) == segments


def test_gsm7_extension_characters_count_twice():
    assert is_gsm7("^{}\\[~]|€\f")
    assert segment_count("€" * 80) == 1  # 160 septets
    assert segment_count("€" * 81) == 2
    assert segment_count("a" * 159 + "[") == 2  # 161 septets, though 160 characters


def test_an_extension_characters_escape_is_never_split_across_segments():
    # 306 septets would fill two concatenated segments exactly, but the "€" (escape + code) cannot straddle the
    # first boundary: it moves whole into the second segment, and the last septet spills into a third.
    body = "a" * 152 + "€" + "a" * 152
    assert segment_count(body) == 3
    assert segment_count("a" * 151 + "€" + "a" * 153) == 2  # the same septets, the escape pair inside segment one


@pytest.mark.parametrize("others, segments", [(68, 1), (69, 2), (132, 2), (133, 3)])
def test_one_emoji_makes_the_whole_body_ucs2_of_70_then_67_units(others, segments):
    body = EMOJI + "a" * others  # 2 units + others
    assert encoding(body) == "UCS-2"
    assert segment_count(body) == segments


def test_a_surrogate_pair_is_never_split_across_segments():
    # 134 units would fill two UCS-2 segments exactly, but an emoji at units 67-68 moves whole to the second one.
    assert segment_count("a" * 66 + EMOJI + "a" * 66) == 3
    assert segment_count("a" * 65 + EMOJI + "a" * 67) == 2
    # The same emoji held as two surrogate code points (a str can) costs the same.
    assert segment_count("a" * 66 + "\ud83d\udea8" + "a" * 66) == 3


def test_non_latin_scripts_and_look_alike_punctuation_are_ucs2():
    assert segment_count("д" * 70) == 1
    assert segment_count("д" * 71) == 2
    for character in ("…", "`", "ç", "\x1b", "’"):
        assert not is_gsm7(character), character
    for character in ("Ç", "é", "Δ", "ß", "¿", "\n", "\r", "@", "$", "£"):
        assert is_gsm7(character), character


def test_an_empty_body_is_one_gsm7_segment():
    assert segment_count("") == 1
    assert encoding("") == "GSM-7"


def test_body_length_counts_utf16_units_as_the_1600_limit_is_measured():
    assert body_length("a" * 10) == 10
    assert body_length(EMOJI * 10) == 20


# --- fit_to_segments -----------------------------------------------------------------------------------------------

def test_a_body_that_fits_is_sent_unchanged():
    for body in ("a" * 160, "a" * 306, EMOJI + "a" * 132, "short"):
        assert fit_to_segments(body, segment_count(body)) == body


def test_a_long_gsm7_body_is_cut_at_a_word_with_three_dots_and_stays_gsm7():
    body = "Disk almost full on host db-1, please look at it " * 20
    fitted = fit_to_segments(body, 2)
    assert fitted.endswith("...") and not fitted.endswith("....")
    assert encoding(fitted) == "GSM-7"  # "…" would have made it UCS-2: 67 units a segment instead of 153
    assert segment_count(fitted) == 2
    kept = fitted[:-3]
    assert body.startswith(kept) and body[len(kept)] == " "  # a whole word ends the text
    assert len(fitted) > 290  # nearly all of two GSM-7 segments used


def test_the_default_template_is_cut_at_a_line_with_an_ellipsis():
    lines = [f"{EMOJI} CRITICAL ALERT", "HighDiskUsage", "Service: db", "Instance: db-1:9100"]
    lines += [f"Summary line {number}: the disk is filling up fast" for number in range(10)]
    body = "\n".join(lines)
    fitted = fit_to_segments(body, 3)
    assert fitted.endswith("…")
    assert segment_count(fitted) <= 3
    kept = fitted[:-1]
    assert body.startswith(kept) and body[len(kept)] == "\n"  # whole lines only
    assert kept.count("\n") >= 3  # the name, service and instance survive


def test_a_gsm7_prefix_stays_cheap_when_the_only_emoji_falls_beyond_the_cut():
    body = "Disk full on host db-1. " * 20 + EMOJI
    fitted = fit_to_segments(body, 2)
    assert encoding(fitted) == "GSM-7" and segment_count(fitted) == 2
    assert len(fitted) > 2 * 67  # more than two UCS-2 segments could carry


def test_a_body_within_the_segments_but_over_1600_characters_is_cut_to_1600():
    body = "word " * 500  # 2500 characters, 17 GSM-7 segments
    fitted = fit_to_segments(body, 20)
    assert body_length(fitted) <= MAX_BODY_CHARS
    assert segment_count(fitted) <= 20
    assert len(fitted) > MAX_BODY_CHARS - 20


def test_one_unbroken_word_is_cut_hard_rather_than_lost():
    fitted = fit_to_segments("x" * 500, 1)
    assert fitted == "x" * 157 + "..."


def test_a_cut_never_splits_a_surrogate_pair():
    for body in (EMOJI * 200, "\ud83d\udea8" * 200, "a" + EMOJI * 200):
        for max_segments in (1, 2, 3):
            fitted = fit_to_segments(body, max_segments)
            assert segment_count(fitted) <= max_segments
            fitted.encode("utf-16-le", "surrogatepass").decode("utf-16-le")  # no lone surrogate: this would raise
            assert fitted.endswith("…")


_ALPHABET = st.sampled_from(list("abc xyz\n.,-€[]^") + ["д", "é", "…", EMOJI, "👍🏽", "\u0301", "\ud83d\ude00"])


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.lists(_ALPHABET, max_size=900).map("".join), st.integers(min_value=1, max_value=12))
def test_a_fitted_body_never_exceeds_its_segments_and_keeps_a_prefix(body, max_segments):
    fitted = fit_to_segments(body, max_segments)
    assert segment_count(fitted) <= max_segments
    assert body_length(fitted) <= MAX_BODY_CHARS
    if fitted != body:
        kept = fitted[:-3] if fitted.endswith("...") and encoding(fitted) == "GSM-7" else fitted[:-1]
        assert body.startswith(kept)
        assert kept  # something of the alert is always left
        assert not kept.endswith(tuple(chr(code) for code in range(0xD800, 0xDC00)))  # no half of a pair


# --- signatures ----------------------------------------------------------------------------------------------------

# Twilio's published example (twilio.com/docs/usage/security; the helper libraries' tests).
SIGNED_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
SIGNED_PARAMS = {
    "CallSid": "CA1234567890ABCDE", "Caller": "+14158675309", "Digits": "1234",
    "From": "+14158675309", "To": "+18005551212",
}
SIGNED = "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_the_published_example_signature():
    assert twilio_signature("12345", SIGNED_URL, SIGNED_PARAMS) == SIGNED
    shuffled = list(reversed(list(SIGNED_PARAMS.items())))  # the order they arrive in does not matter
    assert twilio_signature("12345", SIGNED_URL, shuffled) == SIGNED
    assert signature_matches("12345", SIGNED_URL, SIGNED_PARAMS, SIGNED)


def test_repeated_parameters_sign_each_distinct_value_sorted_as_the_helper_libraries_do():
    # twilio-python's and twilio-php's published vector for a repeated name.
    expected = "IK+Dwps556ElfBT0I3Rgjkr1wJU="
    pairs = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234")]
    assert twilio_signature("12345", SIGNED_URL, pairs) == expected
    assert twilio_signature("12345", SIGNED_URL, pairs + [("Digits", "1234")]) == expected  # twilio-php's
    # Flask's request.form, whose items() alone would drop the second Digits.
    assert signature_matches("12345", SIGNED_URL, ImmutableMultiDict(pairs), expected)


@pytest.mark.parametrize("url, signature", [
    # twilio-python's published vectors: Twilio may have signed the URL with or without the port.
    ("https://mycompany.com:1234/myapp.php?foo=1&bar=2", SIGNED),  # signed without the port
    ("https://mycompany.com/myapp.php?foo=1&bar=2", "kvajT1Ptam85bY51eRf/AJRuM3w="),  # signed with :443
    ("http://mycompany.com/myapp.php?foo=1&bar=2", "0ZXoZLH/DfblKGATFgpif+LLRf4="),  # signed with :80
    ("http://mycompany.com:1234/myapp.php?foo=1&bar=2", "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="),
    # twilio-csharp's: the host's case and a URL's credentials are signed as they are.
    ("https://MyCompany.com/myapp.php?foo=1&bar=2", "g9IN/x4Cft2g517EjYvEvM/W7LU="),
    ("http://username:password@MyCompany.com/myapp.php?foo=1&bar=2", "PJ08CxXr7KLPjEQCTc8LkUSMwSM="),
])
def test_the_helper_libraries_published_vectors_match(url, signature):
    assert signature_matches("12345", url, SIGNED_PARAMS, signature)


@pytest.mark.parametrize("token, url, params, presented", [
    ("12345", SIGNED_URL, SIGNED_PARAMS, "NOT" + SIGNED),
    ("12345", SIGNED_URL, SIGNED_PARAMS, SIGNED[:-2] + "A="),
    ("12345", SIGNED_URL, {**SIGNED_PARAMS, "Digits": "9999"}, SIGNED),  # a tampered parameter
    ("12345", SIGNED_URL, {**SIGNED_PARAMS, "MessageStatus": "delivered"}, SIGNED),  # an added one
    ("12345", SIGNED_URL + "&extra=1", SIGNED_PARAMS, SIGNED),
    ("12345", "https://MyCompany.com/myapp.php?foo=1&bar=2", SIGNED_PARAMS, SIGNED),  # case is signed
    ("wrong-token", SIGNED_URL, SIGNED_PARAMS, SIGNED),
    ("12345", SIGNED_URL, SIGNED_PARAMS, ""),
    ("", SIGNED_URL, SIGNED_PARAMS, twilio_signature("", SIGNED_URL, SIGNED_PARAMS)),
    ("12345", SIGNED_URL, SIGNED_PARAMS, "invalid 王"),
])
def test_a_forged_or_tampered_signature_is_refused(token, url, params, presented):
    assert not signature_matches(token, url, params, presented)


# --- a Twilio of the tests' own -------------------------------------------------------------------------------------

Canned = collections.namedtuple("Canned", "status body headers mode", defaults=((), "answer"))


class FakeTwilio:
    """A local HTTP server answering Messages API posts from a script (default: 201 with a queued message), and
    recording each request. Modes: "answer", "hang" (read the request, answer nothing until closed), "reset" (read
    the request, close the connection without a word)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.script: collections.deque[Canned] = collections.deque()
        self.released = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # style.md: http.server's split writes stall a keep-alive client

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                fake.requests.append({
                    "path": self.path, "headers": dict(self.headers), "raw": raw,
                    "form": parse_qs(raw.decode("utf-8"), keep_blank_values=True),
                })
                canned = fake.script.popleft() if fake.script else Canned(201, queued_message())
                if canned.mode == "hang":
                    fake.released.wait(30)
                    self.close_connection = True
                    return
                if canned.mode == "reset":
                    self.close_connection = True
                    return
                body = canned.body if isinstance(canned.body, bytes) else (
                    canned.body.encode("utf-8") if isinstance(canned.body, str) else json.dumps(canned.body).encode()
                )
                self.send_response(canned.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in canned.headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *arguments):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a client that gave up on a hung answer: nothing to report

        # Listening as soon as it is built: a connection waits in the backlog until serve_forever takes it.
        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        # A short poll: shutdown() waits for serve_forever to look at its flag (0.5 s by default, at every teardown).
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), name="fake-twilio",
                                       daemon=True)
        self.thread.start()

    def answer(self, *canned: Canned) -> None:
        self.script.extend(canned)

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def queued_message(**fields) -> dict:
    """The 201 answer of a create, as Twilio gives it (num_segments is a string)."""
    return {
        "sid": MESSAGE_SID, "account_sid": ACCOUNT_SID, "status": "queued", "to": RECIPIENT, "from": SENDER,
        "body": "x", "num_segments": "1", "error_code": None, "error_message": None, **fields,
    }


def twilio_error(code: int, message: str, status: int) -> dict:
    return {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status}


@pytest.fixture(autouse=True)
def no_proxy_for_the_fake(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def twilio():
    server = FakeTwilio()
    yield server
    server.close()


def credentials_for(url: str, **overrides) -> TwilioCredentials:
    fields = dict(account_sid=ACCOUNT_SID, username=ACCOUNT_SID, password=AUTH_TOKEN, from_number=SENDER,
                  api_url=url, auth_token=AUTH_TOKEN)
    fields.update(overrides)
    return TwilioCredentials(**fields)


@pytest.fixture
def make_client():
    clients = []

    def make(url: str, **options) -> TwilioClient:
        credential_fields = {name: options.pop(name) for name in list(options) if name in TwilioCredentials.__annotations__}
        client = TwilioClient(credentials_for(url, **credential_fields), **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


# --- what is sent --------------------------------------------------------------------------------------------------

def test_a_message_is_the_documented_form_post_with_basic_auth(twilio, make_client):
    result = make_client(twilio.url).send(RECIPIENT, "🚨 CRITICAL ALERT\nHighCPU")
    assert result.outcome is SmsOutcome.SENT
    assert (result.http_status, result.sid, result.twilio_status, result.segments) == (201, MESSAGE_SID, "queued", 1)
    assert result.code is None and not result.lost_in_transit and result.elapsed_ms > 0
    (request,) = twilio.requests
    assert request["path"] == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert request["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    scheme, _, encoded = request["headers"]["Authorization"].partition(" ")
    assert scheme == "Basic" and base64.b64decode(encoded).decode() == f"{ACCOUNT_SID}:{AUTH_TOKEN}"
    assert request["form"] == {"To": [RECIPIENT], "From": [SENDER], "Body": ["🚨 CRITICAL ALERT\nHighCPU"]}


def test_a_messaging_service_sends_when_no_from_number_is_set_and_a_status_callback_is_asked_for(twilio, make_client):
    twilio.answer(Canned(201, queued_message(status="accepted", **{"from": None}, num_segments=2)))
    client = make_client(twilio.url, from_number="", messaging_service_sid="MG" + "1" * 32)
    result = client.send(RECIPIENT, "x", status_callback="https://relay.example/twilio/status")
    assert (result.outcome, result.twilio_status, result.segments) == (SmsOutcome.SENT, "accepted", 2)
    assert twilio.requests[0]["form"] == {
        "To": [RECIPIENT], "MessagingServiceSid": ["MG" + "1" * 32], "Body": ["x"],
        "StatusCallback": ["https://relay.example/twilio/status"],
    }


def test_the_from_number_wins_over_a_messaging_service(twilio, make_client):
    make_client(twilio.url, messaging_service_sid="MG" + "1" * 32).send(RECIPIENT, "x")
    form = twilio.requests[0]["form"]
    assert form["From"] == [SENDER] and "MessagingServiceSid" not in form


def test_an_api_key_authenticates_as_itself_under_the_accounts_url(twilio, make_client):
    make_client(twilio.url, username="SK" + "2" * 32, password="api-key-secret-9c8b").send(RECIPIENT, "x")
    request = twilio.requests[0]
    assert ACCOUNT_SID in request["path"]
    encoded = request["headers"]["Authorization"].partition(" ")[2]
    assert base64.b64decode(encoded).decode() == "SK" + "2" * 32 + ":api-key-secret-9c8b"


@pytest.mark.parametrize("body", ["", "   \n", "a" * (MAX_BODY_CHARS + 1), EMOJI * 801],
                         ids=["empty", "blank", "1601 characters", "801 emoji"])
def test_an_empty_or_overlong_body_is_a_bug_never_sent(twilio, make_client, body):
    with pytest.raises(ValueError):
        make_client(twilio.url).send(RECIPIENT, body)
    assert twilio.requests == []


def test_without_a_sender_nothing_is_sent_and_the_configuration_is_blamed(twilio, make_client):
    result = make_client(twilio.url, from_number="", messaging_service_sid="").send(RECIPIENT, "x")
    assert (result.outcome, result.code) == (SmsOutcome.CONFIG_ERROR, 21603)
    assert twilio.requests == []


def test_a_lone_surrogate_from_an_alerts_text_still_pages(twilio, make_client):
    assert make_client(twilio.url).send(RECIPIENT, "disk \ud83d full").outcome is SmsOutcome.SENT
    assert twilio.requests[0]["form"]["Body"] == ["disk \ufffd full"]


# --- how Twilio's answers are classified -----------------------------------------------------------------------------

@pytest.mark.parametrize("status, code, outcome", [
    (401, 20003, SmsOutcome.AUTH_FAILED),
    (429, 20429, SmsOutcome.TRANSIENT),
    (400, 21211, SmsOutcome.PERMANENT),
    (400, 21408, SmsOutcome.PERMANENT),
    (400, 21608, SmsOutcome.PERMANENT),
    (400, 21614, SmsOutcome.PERMANENT),
    (400, 21602, SmsOutcome.PERMANENT),
    (400, 21617, SmsOutcome.PERMANENT),
    (400, 21604, SmsOutcome.PERMANENT),
    (400, 21610, SmsOutcome.OPTED_OUT),
    (400, 21212, SmsOutcome.CONFIG_ERROR),
    (400, 21603, SmsOutcome.CONFIG_ERROR),
    (400, 21606, SmsOutcome.CONFIG_ERROR),
    (400, 21659, SmsOutcome.CONFIG_ERROR),
    (400, 21660, SmsOutcome.CONFIG_ERROR),
    (403, 20403, SmsOutcome.CONFIG_ERROR),  # the account is suspended or closed
    (401, 20005, SmsOutcome.CONFIG_ERROR),  # the account is not active
    (404, 20404, SmsOutcome.CONFIG_ERROR),  # a wrong API URL or account SID: every message
    (400, 21999, SmsOutcome.PERMANENT),  # a code we do not know: a 4xx is never retried
    (403, 21999, SmsOutcome.PERMANENT),
    (500, 20500, SmsOutcome.TRANSIENT),
    (503, 20503, SmsOutcome.TRANSIENT),
])
def test_each_documented_error_is_classified(twilio, make_client, status, code, outcome):
    twilio.answer(Canned(status, twilio_error(code, "Twilio says no", status)))
    result = make_client(twilio.url).send(RECIPIENT, "x")
    assert (result.outcome, result.http_status, result.code) == (outcome, status, code)
    assert f"Twilio error {code}" in result.reason and "Twilio says no" in result.reason
    assert not result.lost_in_transit and result.sid == ""


@pytest.mark.parametrize("status, body, outcome, lost", [
    (401, "Unauthorized", SmsOutcome.AUTH_FAILED, False),
    (502, "<html>Bad Gateway</html>", SmsOutcome.TRANSIENT, True),  # the gateway lost Twilio's answer
    (504, "", SmsOutcome.TRANSIENT, True),
    (503, "<html>down for maintenance</html>", SmsOutcome.TRANSIENT, False),
    (301, "", SmsOutcome.TRANSIENT, False),
    (418, "teapot", SmsOutcome.PERMANENT, False),
])
def test_answers_that_are_not_twilios_json_are_classified_by_status(twilio, make_client, status, body, outcome, lost):
    twilio.answer(Canned(status, body))
    result = make_client(twilio.url).send(RECIPIENT, "x")
    assert (result.outcome, result.code, result.lost_in_transit) == (outcome, None, lost)
    assert f"HTTP {status}" in result.reason


def test_a_rate_limit_says_how_long_to_wait(twilio, make_client):
    client = make_client(twilio.url)
    later = email.utils.formatdate(time.time() + 120, usegmt=True)
    twilio.answer(
        Canned(429, twilio_error(20429, "Too Many Requests", 429), (("Retry-After", "7"),)),
        Canned(503, "busy", (("Retry-After", later),)),
        Canned(429, twilio_error(20429, "Too Many Requests", 429), (("Retry-After", "soon"),)),
    )
    assert client.send(RECIPIENT, "x").retry_after_seconds == 7.0
    assert 100 < client.send(RECIPIENT, "x").retry_after_seconds <= 120
    result = client.send(RECIPIENT, "x")
    assert result.outcome is SmsOutcome.TRANSIENT and result.retry_after_seconds is None


@pytest.mark.parametrize("segments, expected", [("3", 3), (2, 2), (None, None), ("many", None)])
def test_num_segments_is_read_as_twilio_writes_it(twilio, make_client, segments, expected):
    twilio.answer(Canned(201, queued_message(num_segments=segments)))
    assert make_client(twilio.url).send(RECIPIENT, "x").segments == expected


@pytest.mark.parametrize("body", ["OK", {"status": "queued"}, [MESSAGE_SID], {"sid": ""}])
def test_a_success_without_twilios_answer_may_have_sent_and_is_retried(twilio, make_client, body):
    twilio.answer(Canned(200, body))
    result = make_client(twilio.url).send(RECIPIENT, "x")
    assert result.outcome is SmsOutcome.TRANSIENT and result.lost_in_transit
    assert "may have reached Twilio" in result.reason


def test_a_message_created_as_failed_is_not_sent_again(twilio, make_client):
    twilio.answer(Canned(201, queued_message(status="failed", error_code=30007, error_message="Carrier filtered")))
    result = make_client(twilio.url).send(RECIPIENT, "x")
    assert (result.outcome, result.code, result.sid) == (SmsOutcome.PERMANENT, 30007, MESSAGE_SID)
    assert "Carrier filtered" in result.reason


def test_an_oversized_answer_is_not_read_and_may_have_sent(twilio, make_client):
    twilio.answer(Canned(201, queued_message(body="x" * 5000)))
    result = make_client(twilio.url, max_answer_bytes=2000).send(RECIPIENT, "x")
    assert result.outcome is SmsOutcome.TRANSIENT and result.lost_in_transit
    assert "larger than" in result.reason


# --- when no answer comes ------------------------------------------------------------------------------------------

def test_a_hanging_twilio_is_given_up_on_at_the_total_timeout_as_lost_in_transit(twilio, make_client):
    twilio.answer(Canned(0, b"", mode="hang"))
    client = make_client(twilio.url, connect_timeout_seconds=0.5, total_timeout_seconds=0.5)
    started = time.monotonic()
    result = client.send(RECIPIENT, "x")
    assert time.monotonic() - started < 3
    assert (result.outcome, result.http_status, result.lost_in_transit) == (SmsOutcome.TRANSIENT, None, True)
    assert len(twilio.requests) == 1  # it did reach Twilio: a retry may page twice, which beats not at all


def test_a_connection_closed_after_the_request_was_read_is_lost_in_transit(twilio, make_client):
    twilio.answer(Canned(0, b"", mode="reset"))
    result = make_client(twilio.url).send(RECIPIENT, "x")
    assert (result.outcome, result.lost_in_transit) == (SmsOutcome.TRANSIENT, True)
    assert len(twilio.requests) == 1


def test_a_refused_connection_never_sent_anything(make_client):
    result = make_client(f"http://127.0.0.1:{closed_port()}").send(RECIPIENT, "x")
    assert (result.outcome, result.http_status, result.lost_in_transit) == (SmsOutcome.TRANSIENT, None, False)
    assert "connection refused" in result.reason


class RaisingAdapter(HTTPAdapter):
    """An adapter whose every request fails with the given error, before anything is written."""

    def __init__(self, error: Exception):
        super().__init__()
        self.error = error

    def send(self, request, **kwargs):
        raise self.error


def test_a_connect_timeout_never_sent_anything(make_client):
    session = requests.Session()
    session.mount("https://", RaisingAdapter(requests.ConnectTimeout("connect timed out to https://api.twilio.com")))
    result = make_client("https://api.twilio.com", session=session).send(RECIPIENT, "x")
    assert (result.outcome, result.lost_in_transit, result.reason) == (SmsOutcome.TRANSIENT, False, "connect timeout")


# --- what people see -----------------------------------------------------------------------------------------------

def test_masked_numbers_show_only_the_last_three_digits():
    assert masked_number("+15551234567") == "…567"
    assert mask_numbers("The 'To' number +15551234567 is not a valid phone number.") == (
        "The 'To' number …567 is not a valid phone number."
    )
    assert mask_numbers("call +1 (555) 123-4567 or 5557654321, not 5551234") == "call …567 or …321, not …234"
    untouched = f"error 21211, message {MESSAGE_SID}, 1600 characters, at 12:00:00, v3.1415926535"
    assert mask_numbers(untouched) == untouched


def test_twilios_messages_reach_people_with_the_numbers_masked(twilio, make_client):
    twilio.answer(
        Canned(400, twilio_error(21211, f"The 'To' number {RECIPIENT} is not a valid phone number.", 400)),
        Canned(400, twilio_error(21610, "Attempt to send to unsubscribed recipient 15551234567", 400)),
    )
    client = make_client(twilio.url)
    for _ in range(2):
        reason = client.send(RECIPIENT, "x").reason
        assert "…567" in reason
        assert "5551234567" not in reason and "1234567" not in reason


def test_no_secret_ever_reaches_a_reason(twilio, make_client):
    basic = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    twilio.answer(
        Canned(401, twilio_error(20003, f"Authenticate with {AUTH_TOKEN} (Basic {basic}) failed", 401)),
        Canned(400, twilio_error(21999, f"echo {AUTH_TOKEN}", 400)),
    )
    redactor = Redactor()
    client = make_client(twilio.url, redactor=redactor)
    for _ in range(2):
        reason = client.send(RECIPIENT, "x").reason
        assert AUTH_TOKEN not in reason and basic not in reason
    assert AUTH_TOKEN not in repr(client.credentials)
    # The shared redactor now knows the token: the relay's other log lines are clean of it too.
    assert AUTH_TOKEN not in redactor(f"token={AUTH_TOKEN}")


def test_a_reason_stays_short_whatever_twilio_writes(twilio, make_client):
    twilio.answer(Canned(400, twilio_error(21211, "blah " * 1000, 400)))
    assert len(make_client(twilio.url).send(RECIPIENT, "x").reason) <= 300
