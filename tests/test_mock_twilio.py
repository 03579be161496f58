"""Tests of mock_twilio.py, the Twilio Messages API stand-in served by mock_server.py, over real HTTP."""

import base64
import email.utils
import hashlib
import hmac
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mock_server  # noqa: E402
import mock_twilio  # noqa: E402
from mock_server import MockRocketChat  # noqa: E402

ACCOUNT_SID = mock_twilio.DEFAULT_TWILIO_ACCOUNT_SID
AUTH_TOKEN = mock_twilio.DEFAULT_TWILIO_AUTH_TOKEN
KEY_SID, KEY_SECRET = "SK" + "ab" * 16, "key-secret"
FROM = "+15005550006"
TO, OTHER = "+15551234567", "+447700900123"
SERVICE_SID = "MG" + "cd" * 16
FAST_STATUS_SECONDS = 0.01
START_EPOCH_SECONDS = 1_700_000_000.0
# Twilio's published signature example (its helper libraries' tests).
EXAMPLE_TOKEN = "12345"
EXAMPLE_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
EXAMPLE_PARAMS = {"CallSid": "CA1234567890ABCDE", "Caller": "+14158675309", "Digits": "1234",
                  "From": "+14158675309", "To": "+18005551212"}
EXAMPLE_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
CALLBACK_KEYS = {"AccountSid", "ApiVersion", "From", "MessageSid", "MessageStatus", "SmsSid", "SmsStatus", "To"}


class FakeClock:
    """A clock the tests move by hand."""

    def __init__(self, now: float = START_EPOCH_SECONDS):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def mock():
    with MockRocketChat(port=0, twilio_api_keys={KEY_SID: KEY_SECRET},
                        twilio_status_delay_seconds=FAST_STATUS_SECONDS) as server:
        yield server


@pytest.fixture
def session():
    with requests.Session() as http:
        http.trust_env = False  # straight to the local mock, whatever proxy the environment names
        yield http


def send(session, mock, auth=(ACCOUNT_SID, AUTH_TOKEN), **fields) -> requests.Response:
    """POST Messages.json form-encoded; From/To/Body default to a valid SMS (pass None to leave one out)."""
    fields = {"To": TO, "From": FROM, "Body": "FIRING: HighCPU on web-1", **fields}
    return session.post(mock.twilio_messages_url, data={k: v for k, v in fields.items() if v is not None},
                        auth=auth, timeout=5)


def error_body(status: int, code: int, message: str) -> dict:
    return {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status}


def independent_signature(token: str, url: str, pairs) -> str:
    """Twilio's algorithm written again from its documentation, to check the mock's against."""
    data = url + "".join(name + value for name, value in sorted(pairs))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


class CallbackReceiver:
    """A tiny status-callback endpoint: checks X-Twilio-Signature against a token (403 if wrong), records each."""

    def __init__(self, token: str = AUTH_TOKEN):
        self.token = token
        self.received: list[dict] = []
        self._arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                pairs = urllib.parse.parse_qsl(body, keep_blank_values=True)
                url = receiver.base_url + self.path  # the URL Twilio called, query included
                valid = hmac.compare_digest(independent_signature(receiver.token, url, pairs),
                                            self.headers.get("X-Twilio-Signature", ""))
                with receiver._arrived:
                    receiver.received.append({"path": self.path, "params": dict(pairs), "valid": valid,
                                              "content_type": self.headers.get("Content-Type")})
                    receiver._arrived.notify_all()
                self.send_response(204 if valid else 403)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._server.shutdown()
        self._server.server_close()

    def wait_for(self, count: int, timeout_seconds: float = 10.0) -> list[dict]:
        with self._arrived:
            assert self._arrived.wait_for(lambda: len(self.received) >= count, timeout_seconds), self.received
            return list(self.received)


@pytest.fixture
def receiver():
    with CallbackReceiver() as server:
        yield server


# -- sending --

def test_send_answers_201_with_twilios_message_resource(mock, session):
    before = time.time()
    response = send(session, mock, Body="FIRING: DiskFull")
    assert response.status_code == 201
    assert response.headers["Content-Type"].startswith("application/json")
    resource = response.json()
    sid = resource["sid"]
    assert re.fullmatch(r"SM[0-9a-f]{32}", sid)
    uri = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}.json"
    assert {key: resource[key] for key in (
        "account_sid", "to", "from", "messaging_service_sid", "body", "status", "num_segments", "num_media",
        "direction", "price", "error_code", "error_message", "uri", "api_version", "date_sent")} == {
        "account_sid": ACCOUNT_SID, "to": TO, "from": FROM, "messaging_service_sid": None, "body": "FIRING: DiskFull",
        "status": "queued", "num_segments": "1", "num_media": "0", "direction": "outbound-api", "price": None,
        "error_code": None, "error_message": None, "uri": uri, "api_version": "2010-04-01", "date_sent": None}
    # RFC 2822, as Twilio dates its resources ("Tue, 14 Nov 2023 22:13:20 +0000").
    assert re.fullmatch(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} \+0000", resource["date_created"])
    assert email.utils.parsedate_to_datetime(resource["date_created"]).timestamp() >= int(before)
    [record] = mock.twilio.messages()
    assert {key: record[key] for key in ("sid", "to", "from", "messaging_service_sid", "body", "segments",
                                         "status_callback")} == {
        "sid": sid, "to": TO, "from": FROM, "messaging_service_sid": None, "body": "FIRING: DiskFull", "segments": 1,
        "status_callback": None}
    assert record["at"] >= int(before)


def test_messaging_service_only_is_accepted_with_a_null_from(mock, session):
    response = send(session, mock, From=None, MessagingServiceSid=SERVICE_SID)
    assert response.status_code == 201
    resource = response.json()
    assert (resource["status"], resource["from"], resource["messaging_service_sid"]) == ("accepted", None, SERVICE_SID)
    assert mock.twilio.messages()[0]["messaging_service_sid"] == SERVICE_SID


def test_from_and_messaging_service_together_are_queued(mock, session):
    resource = send(session, mock, MessagingServiceSid=SERVICE_SID).json()
    assert (resource["status"], resource["from"], resource["messaging_service_sid"]) == ("queued", FROM, SERVICE_SID)


def test_sent_message_can_be_fetched_and_ends_delivered(mock, session):
    sid = send(session, mock).json()["sid"]
    mock.twilio.wait_for_status(sid, "delivered")
    response = session.get(f"{mock.base_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}.json",
                           auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=5)
    assert response.status_code == 200
    assert (response.json()["sid"], response.json()["status"]) == (sid, "delivered")
    assert response.json()["date_sent"] is not None
    missing = session.get(f"{mock.base_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/SM{'0' * 32}.json",
                          auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=5)
    assert missing.status_code == 404 and missing.json()["code"] == 20404


def test_other_paths_and_methods_answer_twilio_errors(mock, session):
    auth = (ACCOUNT_SID, AUTH_TOKEN)
    listing = session.get(mock.twilio_messages_url, auth=auth, timeout=5)
    assert (listing.status_code, listing.json()["code"]) == (405, 20004)
    unknown = session.get(f"{mock.base_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json", auth=auth, timeout=5)
    assert (unknown.status_code, unknown.json()["code"]) == (404, 20404)
    # Authentication comes first, whatever the path.
    assert session.get(f"{mock.base_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json", timeout=5).status_code == 401


# -- authentication --

def test_api_key_authenticates(mock, session):
    response = send(session, mock, auth=(KEY_SID, KEY_SECRET))
    assert response.status_code == 201
    assert mock.twilio.messages()[0]["username"] == KEY_SID


@pytest.mark.parametrize("auth, account", [
    ((ACCOUNT_SID, "wrong-token"), ACCOUNT_SID),
    ((KEY_SID, "wrong-secret"), ACCOUNT_SID),
    (("SK" + "ef" * 16, KEY_SECRET), ACCOUNT_SID),  # not a configured key
    ((KEY_SID, AUTH_TOKEN), ACCOUNT_SID),  # the account's token is not the key's secret
    (None, ACCOUNT_SID),
    ((ACCOUNT_SID, AUTH_TOKEN), "AC" + "f" * 32),  # good credentials, another account's path
    ((KEY_SID, KEY_SECRET), "AC" + "f" * 32),
])
def test_bad_credentials_answer_401_20003(mock, session, auth, account):
    url = f"{mock.base_url}/2010-04-01/Accounts/{account}/Messages.json"
    response = session.post(url, data={"To": TO, "From": FROM, "Body": "x"}, auth=auth, timeout=5)
    assert response.status_code == 401
    assert response.json() == error_body(401, 20003, "Authenticate")
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert mock.twilio.messages() == []
    assert [(r["status"], r["code"]) for r in mock.twilio.requests] == [(401, 20003)]


def test_malformed_authorization_headers_answer_401(mock, session):
    for header in ("Bearer abc", "Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode()):
        response = session.post(mock.twilio_messages_url, data={"To": TO, "From": FROM, "Body": "x"},
                                headers={"Authorization": header}, timeout=5)
        assert (response.status_code, response.json()["code"]) == (401, 20003)


# -- refusals --

@pytest.mark.parametrize("fields, code, message", [
    ({"To": None}, 21604, "A 'To' phone number is required."),
    ({"To": ""}, 21604, "A 'To' phone number is required."),
    ({"To": "12345"}, 21211, "The 'To' number 12345 is not a valid phone number."),
    ({"To": "15551234567"}, 21211, "The 'To' number 15551234567 is not a valid phone number."),
    ({"To": "+05551234567"}, 21211, "The 'To' number +05551234567 is not a valid phone number."),
    ({"To": "+1 555 123 4567"}, 21211, "The 'To' number +1 555 123 4567 is not a valid phone number."),
    ({"To": "+1234567890123456"}, 21211, "The 'To' number +1234567890123456 is not a valid phone number."),
    ({"From": None}, 21603, "A 'From' phone number is required."),
    ({"From": "Acme"}, 21212,
     "The 'From' number Acme is not a valid phone number, shortcode, or alphanumeric sender ID."),
    ({"From": None, "MessagingServiceSid": "MG123"}, 21705, "The Messaging Service is invalid"),
    ({"Body": None}, 21602, "Message body is required."),
    ({"Body": ""}, 21602, "Message body is required."),
    ({"Body": "x" * 1601}, 21617, "The concatenated message body exceeds the 1600 character limit."),
    ({"Body": "😀" * 801}, 21617, "The concatenated message body exceeds the 1600 character limit."),
    ({"ValidityPeriod": "0"}, 21624, "Validity period can only be set to integers between 1 and 36000 seconds"),
    ({"ValidityPeriod": "36001"}, 21624, "Validity period can only be set to integers between 1 and 36000 seconds"),
    ({"ValidityPeriod": "1.5"}, 21624, "Validity period can only be set to integers between 1 and 36000 seconds"),
    ({"StatusCallback": "ftp://relay.example/sms"}, 21609, "Invalid 'StatusCallback'"),
    ({"StatusCallback": "/sms/status"}, 21609, "Invalid 'StatusCallback'"),
    ({"StatusCallback": "http://relay_host/sms/status"}, 21609, "Invalid 'StatusCallback'"),
])
def test_invalid_fields_answer_400_with_twilios_code(mock, session, fields, code, message):
    response = send(session, mock, **fields)
    assert response.status_code == 400
    assert response.json() == error_body(400, code, message)
    assert mock.twilio.messages() == []
    assert mock.twilio.requests[-1]["code"] == code


@pytest.mark.parametrize("fields", [{"Body": "x" * 1600}, {"Body": "😀" * 800}, {"ValidityPeriod": "36000"},
                                    {"ValidityPeriod": "1"}, {"To": "+1234567"}, {"To": "+123456789012345"}])
def test_limits_themselves_are_accepted(mock, session, fields):
    assert send(session, mock, **fields).status_code == 201


def test_a_json_body_reads_as_no_fields(mock, session):
    # The trap: Twilio reads form fields only, so a JSON request is "missing" its To.
    response = session.post(mock.twilio_messages_url, json={"To": TO, "From": FROM, "Body": "x"},
                            auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=5)
    assert response.json() == error_body(400, 21604, "A 'To' phone number is required.")


def test_field_names_are_case_sensitive(mock, session):
    response = session.post(mock.twilio_messages_url, data={"to": TO, "from": FROM, "body": "x"},
                            auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=5)
    assert response.json()["code"] == 21604


# -- opted-out numbers --

def test_opted_out_number_answers_21610(mock, session):
    mock.twilio.set_opted_out([TO])
    response = send(session, mock)
    assert response.status_code == 400
    assert response.json() == error_body(400, 21610, "Attempt to send to unsubscribed recipient")
    assert send(session, mock, To=OTHER).status_code == 201
    mock.twilio.set_opted_out([])  # START lifts it
    assert send(session, mock).status_code == 201


def test_opted_out_through_the_control_api_and_the_constructor(session):
    with MockRocketChat(port=0, twilio_opted_out=[OTHER]) as server:
        assert send(session, server, To=OTHER).json()["code"] == 21610
        assert session.post(f"{server.base_url}/_mock/twilio/opted-out", json={"numbers": [TO]}, timeout=5).ok
        assert send(session, server).json()["code"] == 21610
        assert send(session, server, To=OTHER).status_code == 201  # replaced, not added
        server.reset()  # back to the configured list
        assert send(session, server, To=OTHER).json()["code"] == 21610
        assert send(session, server).status_code == 201
        for bad in ({"numbers": "+15551234567"}, {"numbers": ["5551234567"]}, {}):
            assert session.post(f"{server.base_url}/_mock/twilio/opted-out", json=bad, timeout=5).status_code == 400


# -- segments --

@pytest.mark.parametrize("body, segments", [
    ("a", 1), ("a" * 160, 1), ("a" * 161, 2), ("a" * 306, 2), ("a" * 307, 3),
    ("€" * 80, 1), ("€" * 81, 2),  # extension characters count twice
    ("{}" * 40 + "a", 2),
    ("a" * 152 + "€" + "a" * 152, 3),  # an escape pair is never split: the € opens the second part
    ("é" * 160, 1), ("ΔΦΓ" * 54, 2),  # still GSM-7
    ("ç" * 71, 2),  # not in GSM-7 (only Ç is): the body goes UCS-2
    ("ж" * 70, 1), ("ж" * 71, 2), ("ж" * 134, 2), ("ж" * 135, 3),
    ("a" * 69 + "😀", 2), ("a" * 68 + "😀", 1), ("😀" * 35, 1), ("😀" * 36, 2),  # an emoji is 2 UTF-16 units
    ("ж" * 66 + "😀" + "ж" * 66, 3),  # a surrogate pair is never split
    ("`" * 10, 1),  # a backtick is not GSM-7 either (UCS-2, still one segment)
])
def test_segments_are_counted_as_twilio_counts_them(body, segments):
    assert mock_twilio.count_segments(body) == segments


def test_encoding_follows_the_gsm7_tables():
    assert mock_twilio.segment_encoding("Hello @home: 50% off £5 ¥ Ñ ¿? ^{}[~]|\\ €\f") == "GSM-7"
    assert [mock_twilio.segment_encoding(text) for text in ("\t", "`", "ç", "ä", "Ä", "😀", "’")] == [
        "UCS-2", "UCS-2", "UCS-2", "GSM-7", "GSM-7", "UCS-2", "UCS-2"]


def test_num_segments_is_a_string_in_the_answer(mock, session):
    assert send(session, mock, Body="a" * 307).json()["num_segments"] == "3"
    assert send(session, mock, Body="ж" * 71).json()["num_segments"] == "2"
    assert [record["segments"] for record in mock.twilio.messages()] == [3, 2]


# -- faults --

def test_fault_by_count_then_normal_answers(mock, session):
    mock.twilio.set_fault(status=500, count=2)
    responses = [send(session, mock) for _ in range(3)]
    assert [response.status_code for response in responses] == [500, 500, 201]
    assert responses[0].json() == error_body(500, 20500, "An internal server error has occurred")
    assert len(mock.twilio.messages()) == 1
    assert [r["status"] for r in mock.twilio.requests] == [500, 500, 201]


def test_fault_429_is_twilios_too_many_requests(mock, session):
    mock.twilio.set_fault(status=429, count=1)
    response = send(session, mock)
    assert (response.status_code, response.json()) == (429, error_body(429, 20429, "Too Many Requests"))
    assert send(session, mock).status_code == 201


def test_fault_with_its_own_code_and_message(mock, session):
    mock.twilio.set_fault(status=400, code=21408, message="Permission to send an SMS has not been enabled")
    response = send(session, mock)
    assert response.json() == error_body(400, 21408, "Permission to send an SMS has not been enabled")
    assert send(session, mock).status_code == 400  # no count: until cleared
    mock.twilio.clear_fault()
    assert send(session, mock).status_code == 201


def test_fault_by_seconds_follows_the_clock(session):
    clock = FakeClock()
    with MockRocketChat(port=0, clock=clock) as server:
        server.twilio.set_fault(status=503, seconds=30)
        assert send(session, server).json() == error_body(503, 20503, "Service Unavailable")
        clock.advance(30)
        assert send(session, server).status_code == 201


def test_fault_is_not_spent_by_unauthenticated_requests(mock, session):
    mock.twilio.set_fault(status=500, count=1)
    assert send(session, mock, auth=(ACCOUNT_SID, "wrong")).status_code == 401
    assert send(session, mock).status_code == 500
    assert send(session, mock).status_code == 201


def test_delay_only_fault_is_a_slow_answer_then_a_normal_one(mock, session):
    delay_seconds = 0.3
    mock.twilio.set_fault(delay_seconds=delay_seconds, count=1)
    started = time.monotonic()
    response = send(session, mock)
    assert time.monotonic() - started >= delay_seconds
    assert response.status_code == 201
    started = time.monotonic()
    assert send(session, mock).status_code == 201
    assert time.monotonic() - started < delay_seconds


def test_a_slow_twilio_does_not_block_the_rocketchat_side(mock, session):
    mock.twilio.set_fault(status=500, delay_seconds=0.5, count=1)
    slow = threading.Thread(target=send, args=(requests.Session(), mock))
    slow.start()
    started = time.monotonic()
    assert session.post(mock.hook_url("critical"), json={"text": "fast"}, timeout=5).status_code == 200
    assert time.monotonic() - started < 0.4
    slow.join()


def test_drop_accepts_the_message_then_loses_the_answer(mock, session, receiver):
    mock.twilio.set_fault(drop=True, count=1)
    with pytest.raises(requests.ConnectionError):
        send(session, mock, StatusCallback=f"{receiver.base_url}/sms/status")
    [record] = mock.twilio.wait_for_sms(1)  # accepted all the same: a retry would send it twice
    assert [(r["status"], r["dropped"]) for r in mock.twilio.requests] == [(201, True)]
    assert [c["params"]["MessageSid"] for c in mock.twilio.wait_for_callbacks(2)] == [record["sid"]] * 2
    assert send(session, mock).status_code == 201


@pytest.mark.parametrize("kwargs", [{"status": 99}, {"status": "500"}, {"code": "20429"}, {"message": 3},
                                    {"delay_seconds": -1}, {"count": 0}, {"seconds": 0}, {"drop": "yes"},
                                    {"drop": True, "status": 500}])
def test_set_fault_rejects_bad_arguments(mock, kwargs):
    with pytest.raises(ValueError):
        mock.twilio.set_fault(**kwargs)


def test_faults_through_the_control_api(mock, session):
    base = f"{mock.base_url}/_mock/twilio/fault"
    assert session.post(base, json={"status": 429, "count": 1}, timeout=5).ok
    assert send(session, mock).json()["code"] == 20429
    assert session.post(base, json={"status": 500}, timeout=5).ok
    assert session.delete(base, timeout=5).ok
    assert send(session, mock).status_code == 201
    assert session.post(base, json={"drop": True, "count": 1}, timeout=5).ok
    with pytest.raises(requests.ConnectionError):
        send(session, mock)
    for bad in ({"stauts": 500}, {"status": "bad"}, {"drop": True, "status": 500}):
        response = session.post(base, json=bad, timeout=5)
        assert response.status_code == 400 and "error" in response.json()


# -- status callbacks --

def test_status_callbacks_are_sent_then_delivered_and_signed(mock, session, receiver):
    url = f"{receiver.base_url}/sms/status?alert=HighCPU&n=1"
    sid = send(session, mock, StatusCallback=url).json()["sid"]
    callbacks = mock.twilio.wait_for_callbacks(2)
    assert [c["params"]["MessageStatus"] for c in callbacks] == ["sent", "delivered"]
    assert [c["status"] for c in callbacks] == [204, 204]  # the receiver found each signature valid
    received = receiver.wait_for(2)
    assert all(item["valid"] for item in received)
    assert [item["path"] for item in received] == ["/sms/status?alert=HighCPU&n=1"] * 2  # exactly that URL
    assert received[0]["content_type"].startswith("application/x-www-form-urlencoded")
    assert set(received[1]["params"]) == CALLBACK_KEYS
    assert received[1]["params"] == {"AccountSid": ACCOUNT_SID, "ApiVersion": "2010-04-01", "From": FROM,
                                     "MessageSid": sid, "MessageStatus": "delivered", "SmsSid": sid,
                                     "SmsStatus": "delivered", "To": TO}
    assert callbacks[1]["signature"] == independent_signature(AUTH_TOKEN, url, received[1]["params"].items())
    assert mock.twilio.wait_for_status(sid, "delivered")["status_callback"] == url


def test_callbacks_of_an_api_key_send_are_signed_with_the_auth_token(mock, session, receiver):
    send(session, mock, auth=(KEY_SID, KEY_SECRET), StatusCallback=f"{receiver.base_url}/cb")
    assert [item["valid"] for item in receiver.wait_for(2)] == [True, True]


def test_a_receiver_with_another_token_refuses_the_callbacks(mock, session):
    with CallbackReceiver(token="not-the-token") as forged:
        send(session, mock, StatusCallback=f"{forged.base_url}/cb")
        assert [c["status"] for c in mock.twilio.wait_for_callbacks(2)] == [403, 403]
        assert [item["valid"] for item in forged.received] == [False, False]


def test_delivery_failure_ends_undelivered_with_its_error_code(mock, session, receiver):
    mock.twilio.set_delivery_failure(TO)
    sid = send(session, mock, StatusCallback=f"{receiver.base_url}/cb").json()["sid"]
    send(session, mock, To=OTHER, StatusCallback=f"{receiver.base_url}/cb")
    callbacks = mock.twilio.wait_for_callbacks(4)
    mine = [c["params"] for c in callbacks if c["params"]["To"] == TO]
    assert [(p["MessageStatus"], p.get("ErrorCode")) for p in mine] == [("sent", None), ("undelivered", "30003")]
    assert all(item["valid"] for item in receiver.wait_for(4))
    other = [c["params"]["MessageStatus"] for c in callbacks if c["params"]["To"] == OTHER]
    assert other == ["sent", "delivered"]
    fetched = session.get(f"{mock.base_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}.json",
                          auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=5).json()
    assert (fetched["status"], fetched["error_code"]) == ("undelivered", 30003)


def test_a_failed_message_is_never_sent(mock, session, receiver):
    mock.twilio.set_delivery_failure(TO, code=30008, status="failed")
    sid = send(session, mock, StatusCallback=f"{receiver.base_url}/cb").json()["sid"]
    mock.twilio.wait_for_status(sid, "failed")
    [callback] = mock.twilio.wait_for_callbacks(1)
    assert (callback["params"]["MessageStatus"], callback["params"]["ErrorCode"]) == ("failed", "30008")
    mock.twilio.set_delivery_failure(TO, None)  # delivered again
    sid = send(session, mock).json()["sid"]
    mock.twilio.wait_for_status(sid, "delivered")


def test_delivery_failure_through_the_control_api(mock, session, receiver):
    base = f"{mock.base_url}/_mock/twilio/delivery-failure"
    assert session.post(base, json={"number": TO, "code": 30006}, timeout=5).ok
    send(session, mock, StatusCallback=f"{receiver.base_url}/cb")
    assert mock.twilio.wait_for_callbacks(2)[1]["params"]["ErrorCode"] == "30006"
    for bad in ({"number": "555"}, {"code": 30003}, {"number": TO, "status": "lost"}, {"number": TO, "code": "x"}):
        assert session.post(base, json=bad, timeout=5).status_code == 400


def test_messaging_service_callbacks_name_the_pool_sender_and_the_service(mock, session, receiver):
    send(session, mock, From=None, MessagingServiceSid=SERVICE_SID, StatusCallback=f"{receiver.base_url}/cb")
    params = receiver.wait_for(2)[1]["params"]
    assert (params["From"], params["MessagingServiceSid"]) == (mock_twilio.MESSAGING_SERVICE_SENDER, SERVICE_SID)


def test_an_unreachable_callback_is_recorded_without_a_status(mock, session):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/cb"
    send(session, mock, StatusCallback=url)
    callbacks = mock.twilio.wait_for_callbacks(2)
    assert [(c["status"], bool(c["error"])) for c in callbacks] == [(None, True), (None, True)]


def test_status_delays_are_configurable(mock, session, receiver):
    assert session.post(f"{mock.base_url}/_mock/twilio/status-delays",
                        json={"sent_seconds": 0, "delivered_seconds": 0}, timeout=5).ok
    send(session, mock, StatusCallback=f"{receiver.base_url}/cb")
    assert len(mock.twilio.wait_for_callbacks(2)) == 2
    with pytest.raises(ValueError):
        mock.twilio.set_status_delays(-1, 0)


def test_the_published_signature_example():
    assert mock_twilio.twilio_signature(EXAMPLE_TOKEN, EXAMPLE_URL, EXAMPLE_PARAMS) == EXAMPLE_SIGNATURE
    assert independent_signature(EXAMPLE_TOKEN, EXAMPLE_URL, EXAMPLE_PARAMS.items()) == EXAMPLE_SIGNATURE


# -- inspection, reset, control API --

def test_wait_for_sms_returns_when_a_slow_send_lands(mock):
    mock.twilio.set_fault(delay_seconds=0.2, count=1)
    sender = threading.Thread(target=send, args=(requests.Session(), mock), kwargs={"To": OTHER})
    started = time.monotonic()
    sender.start()
    records = mock.twilio.wait_for_sms(1, timeout_seconds=10, to=OTHER)
    assert time.monotonic() - started < 5  # woken by the message, not by the timeout
    sender.join()
    assert [record["to"] for record in records] == [OTHER]


def test_wait_for_sms_raises_with_what_it_has(mock, session):
    send(session, mock, Body="only one")
    with pytest.raises(AssertionError, match="expected 2 SMS.*got 1.*only one"):
        mock.twilio.wait_for_sms(2, timeout_seconds=0.05)
    with pytest.raises(AssertionError, match=f"to {re.escape(OTHER)}.*got 0"):
        mock.twilio.wait_for_sms(1, timeout_seconds=0.05, to=OTHER)


def test_messages_filter_by_number_and_are_copies(mock, session):
    send(session, mock, Body="one")
    send(session, mock, To=OTHER, Body="two")
    assert [record["body"] for record in mock.twilio.messages(to=OTHER)] == ["two"]
    mock.twilio.messages()[0]["body"] = "changed"
    assert mock.twilio.messages()[0]["body"] == "one"


def test_reset_forgets_everything_and_stops_pending_callbacks(mock, session, receiver):
    mock.twilio.set_status_delays(0.3, 0.3)
    pending = send(session, mock, StatusCallback=f"{receiver.base_url}/old").json()["sid"]
    mock.twilio.set_fault(status=500)
    mock.twilio.set_opted_out([OTHER])
    mock.twilio.set_delivery_failure(TO)
    assert session.post(f"{mock.base_url}/_mock/reset", timeout=5).ok  # the whole mock's reset
    assert (mock.twilio.messages(), mock.twilio.requests, mock.twilio.callbacks) == ([], [], [])
    sid = send(session, mock, To=OTHER, StatusCallback=f"{receiver.base_url}/new").json()["sid"]  # fault gone
    assert [c["params"]["MessageStatus"] for c in mock.twilio.wait_for_callbacks(2)] == ["sent", "delivered"]
    (delivery,) = [thread for thread in threading.enumerate() if thread.name == f"mock-twilio-{pending}"] or [None]
    if delivery is not None:
        delivery.join(timeout=5)
        assert not delivery.is_alive()
    assert {item["path"] for item in receiver.received} == {"/new"}  # the pending message never called back
    assert mock.twilio.wait_for_status(sid, "delivered")["to"] == OTHER


def test_twilio_reset_alone_keeps_the_rocketchat_side(mock, session):
    session.post(mock.hook_url("critical"), json={"text": "kept"}, timeout=5)
    send(session, mock)
    assert session.post(f"{mock.base_url}/_mock/twilio/reset", timeout=5).ok
    assert mock.twilio.messages() == [] and len(mock.messages("critical")) == 1


def test_control_api_inspection(mock, session, receiver):
    send(session, mock, Body="to first", StatusCallback=f"{receiver.base_url}/cb")
    send(session, mock, To=OTHER, Body="to other")
    send(session, mock, To="bad")
    base = f"{mock.base_url}/_mock/twilio"
    assert [record["body"] for record in session.get(f"{base}/messages", timeout=5).json()] == ["to first",
                                                                                                "to other"]
    for number in (OTHER, urllib.parse.quote(OTHER)):
        assert [r["body"] for r in session.get(f"{base}/messages/{number}", timeout=5).json()] == ["to other"]
    assert [r["status"] for r in session.get(f"{base}/requests", timeout=5).json()] == [201, 201, 400]
    mock.twilio.wait_for_callbacks(2)
    assert len(session.get(f"{base}/callbacks", timeout=5).json()) == 2
    config = session.get(base, timeout=5).json()
    assert config == {"api_url": mock.base_url, "messages_url": mock.twilio_messages_url,
                      "account_sid": ACCOUNT_SID, "api_key_sids": [KEY_SID]}
    stats = session.get(f"{mock.base_url}/_mock/stats", timeout=5).json()["twilio"]
    assert stats == {"requests": 3, "statuses": {"201": 2, "400": 1}, "messages": 2, "callbacks": 2}
    assert session.delete(f"{base}/messages", timeout=5).ok and mock.twilio.messages() == []
    assert AUTH_TOKEN not in json.dumps([config, mock.twilio.requests, mock.twilio.callbacks])


# -- the page --

def test_page_lists_the_sms_each_number_received_newest_first(mock, session):
    page = session.get(f"{mock.base_url}/", timeout=5).text
    assert '<section class="sms" id="sms">' in page and "No SMS yet." in page
    mock.twilio.set_delivery_failure(OTHER)
    first = send(session, mock, Body="first <b>bold</b> & co").json()["sid"]
    other = send(session, mock, To=OTHER, Body="ж" * 71).json()["sid"]
    second = send(session, mock, Body="second").json()["sid"]
    mock.twilio.wait_for_status(other, "undelivered")
    mock.twilio.wait_for_status(second, "delivered")
    page = session.get(f"{mock.base_url}/", timeout=5).text
    assert "No SMS yet." not in page
    phones = re.findall(r'<section class="phone" id="phone-(\d+)"><h3>([^<]*) <small>([^<]*)</small>', page)
    assert phones == [("15551234567", TO, "2 SMS"), ("447700900123", OTHER, "1 SMS")]  # last texted first
    assert page.index(f'id="sms-{second}"') < page.index(f'id="sms-{first}"')
    assert "first &lt;b&gt;bold&lt;/b&gt; &amp; co" in page and "<b>bold" not in page
    assert '<span class="sms-status undelivered">undelivered (30003)</span>' in page
    assert "2 segments, UCS-2" in page and f"from {FROM}" in page
    assert AUTH_TOKEN not in page


# -- the command line and output --

def test_parse_args_twilio_defaults_and_values():
    args = mock_server.parse_args([])
    assert (args.twilio_account_sid, args.twilio_auth_token, args.twilio_api_keys, args.twilio_opted_out,
            args.twilio_delivery_failures, args.twilio_status_delay_seconds) == (
        ACCOUNT_SID, AUTH_TOKEN, [], [], [], 0.2)
    account = "AC" + "1" * 32
    args = mock_server.parse_args([
        "--twilio-account-sid", account, "--twilio-auth-token", "tok", "--twilio-api-key", f"{KEY_SID}:{KEY_SECRET}",
        "--twilio-opted-out", TO, "--twilio-opted-out", OTHER, "--twilio-delivery-failure", f"{OTHER}:30005",
        "--twilio-delivery-failure", TO, "--twilio-status-delay-seconds", "0"])
    assert (args.twilio_account_sid, args.twilio_auth_token, args.twilio_api_keys, args.twilio_opted_out,
            args.twilio_delivery_failures, args.twilio_status_delay_seconds) == (
        account, "tok", [(KEY_SID, KEY_SECRET)], [TO, OTHER], [(OTHER, 30005), (TO, 30003)], 0.0)
    for bad in (["--twilio-account-sid", "AC123"], ["--twilio-api-key", "nocolon"], ["--twilio-opted-out", "555"],
                ["--twilio-delivery-failure", f"{TO}:x"], ["--twilio-status-delay-seconds", "-1"]):
        with pytest.raises(SystemExit):
            mock_server.parse_args(bad)


@pytest.mark.parametrize("kwargs", [{"twilio_account_sid": "AC123"}, {"twilio_auth_token": ""},
                                    {"twilio_api_keys": {"key": "secret"}}, {"twilio_opted_out": "+15551234567"},
                                    {"twilio_opted_out": ["5551234567"]}])
def test_bad_twilio_configuration_is_refused(kwargs):
    with pytest.raises(ValueError):
        MockRocketChat(**kwargs)


def test_sms_are_printed_and_the_token_never_is(capsys):
    with MockRocketChat(quiet=False, twilio_status_delay_seconds=FAST_STATUS_SECONDS) as server, \
            requests.Session() as http:
        http.trust_env = False
        send(http, server, Body="FIRING: DiskFull on db1")
        send(http, server, auth=(ACCOUNT_SID, "wrong-token"))
        server.twilio.wait_for_status(server.twilio.messages()[0]["sid"], "delivered")
    out, err = capsys.readouterr()
    assert f"[sms {TO}] FIRING: DiskFull on db1 (1 segment)" in out
    assert f"POST /2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json" in err
    assert AUTH_TOKEN not in out + err and "wrong-token" not in out + err


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_main_serves_twilio_with_the_command_line_configuration():
    port, token = free_port(), "cli-token-not-printed"
    process = subprocess.Popen(
        [sys.executable, str(Path(mock_server.__file__)), "--port", str(port), "--twilio-auth-token", token,
         "--twilio-opted-out", OTHER],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        with requests.Session() as http:
            http.trust_env = False
            while True:  # readiness: poll health, bounded by the deadline
                try:
                    if http.get(f"{base_url}/_mock/health", timeout=1).ok:
                        break
                except requests.ConnectionError:
                    pass
                assert time.monotonic() < deadline and process.poll() is None, "mock_server did not become ready"
                time.sleep(0.02)
            url = f"{base_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
            fields = {"To": TO, "From": FROM, "Body": "cli"}
            assert http.post(url, data=fields, auth=(ACCOUNT_SID, token), timeout=5).status_code == 201
            assert http.post(url, data=fields, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=5).status_code == 401
            opted_out = http.post(url, data={**fields, "To": OTHER}, auth=(ACCOUNT_SID, token), timeout=5)
            assert opted_out.json()["code"] == 21610
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 0
    assert f"TWILIO_API_URL={base_url} TWILIO_ACCOUNT_SID={ACCOUNT_SID}" in out
    assert f"[sms {TO}] cli" in out
    assert token not in out + err
