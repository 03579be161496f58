"""Tests of the mock Rocket.Chat's message ids, separateResponse answers, tmid and threads on its page, over HTTP."""

import base64
import hashlib
import re
import sys
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mock_server  # noqa: E402
from mock_server import MockRocketChat  # noqa: E402

START_EPOCH_SECONDS = 1_700_000_000.0
START_AS_JSON_DATE = "2023-11-14T22:13:20.000Z"
MESSAGE_ID = re.compile(r"[23456789ABCDEFGHJKLMNPQRSTWXYZabcdefghijkmnopqrstuvwxyz]{17}")
HOSTILE = '<script>window.pwned=1</script>"&'


@pytest.fixture
def mock():
    with MockRocketChat(port=0, clock=lambda: START_EPOCH_SECONDS) as server:
        yield server


@pytest.fixture
def session():
    with requests.Session() as http:
        http.trust_env = False
        yield http


def post(session, mock, message, hook="critical"):
    return session.post(mock.hook_url(hook), json=message, timeout=5)


def posted_id(session, mock, message, hook="critical") -> str:
    """Post with separateResponse and return the message id the answer names."""
    response = post(session, mock, {**message, "separateResponse": True}, hook)
    assert response.status_code == 200, response.text
    return response.json()["responses"][0]["message"]["_id"]


def control(session, mock, path, body=None):
    return session.post(f"{mock.base_url}/_mock/{path}", json=body, timeout=5)


# -- separateResponse --

def test_separate_response_answers_the_saved_message_with_its_id(mock, session):
    response = post(session, mock, {"text": "  FIRING: HighCPU  ", "separateResponse": True})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"success", "responses"} and body["success"] is True
    [item] = body["responses"]
    assert set(item) == {"channel", "message"} and item["channel"] == "#critical"
    sent = item["message"]
    assert MESSAGE_ID.fullmatch(sent["_id"])
    assert MESSAGE_ID.fullmatch(sent["rid"]) and sent["rid"] != sent["_id"]
    assert (sent["msg"], sent["ts"]) == ("FIRING: HighCPU", START_AS_JSON_DATE)
    assert "tmid" not in sent
    [record] = mock.messages("critical")
    assert record["message_id"] == sent["_id"] and record["tmid"] is None
    assert record["message"] == {"text": "  FIRING: HighCPU  ", "separateResponse": True}  # stored as posted
    assert "X-RateLimit-Remaining" in response.headers


def test_message_ids_are_unique_across_posts_and_hooks(mock, session):
    ids = [posted_id(session, mock, {"text": f"n{n}"}, hook) for n in range(5) for hook in ("critical", "warning")]
    assert len(set(ids)) == len(ids) == 10
    recorded = [record["message_id"] for hook in ("critical", "warning") for record in mock.messages(hook)]
    assert sorted(recorded) == sorted(ids)
    channels = {post(session, mock, {"text": "x", "separateResponse": True}, "info").json()["responses"][0]["channel"]}
    assert channels == {"#info"}
    rooms = {post(session, mock, {"text": "x", "separateResponse": True}, hook).json()["responses"][0]["message"]["rid"]
             for hook in ("critical", "critical", "warning")}
    assert len(rooms) == 2  # one room per hook


def test_ids_stay_unique_after_a_reset(mock, session):
    before = posted_id(session, mock, {"text": "before"})
    mock.reset()
    after = [posted_id(session, mock, {"text": f"after {n}"}) for n in range(3)]
    assert before not in after and len(set(after)) == 3


@pytest.mark.parametrize("separate", [None, False, "true", 1, [True], {"x": True}])
def test_without_boolean_true_the_answer_is_plain_success(mock, session, separate):
    message = {"text": "plain"} if separate is None else {"text": "plain", "separateResponse": separate}
    response = post(session, mock, message)
    assert (response.status_code, response.json()) == (200, {"success": True})
    [record] = mock.messages("critical")
    assert MESSAGE_ID.fullmatch(record["message_id"]) and record["message"] == message  # an id all the same


def test_form_payload_with_separate_response(mock, session):
    response = session.post(mock.hook_url("critical"), data={"payload": '{"text": "slack", "separateResponse": true}'},
                            timeout=5)
    assert response.json()["responses"][0]["message"]["_id"] == mock.messages("critical")[0]["message_id"]


# -- failures with separateResponse --

@pytest.mark.parametrize("message, error", [
    ({"attachments": [{"title": "t", "title_link": "javascript:alert(1)"}]}, "Invalid href value provided"),
    ({"attachments": [{"fields": [{"title": "t", "value": ""}]}]}, mock_server.ERROR_FIELD),
    ({"text": "x" * 5001}, "error-message-size-exceeded"),
    ({"text": "x", "tmid": 42}, "Match error: Expected string, got number in field tmid"),
])
def test_a_post_failing_in_its_channel_answers_400_with_responses(mock, session, message, error):
    response = post(session, mock, {**message, "separateResponse": True})
    assert response.status_code == 400
    assert response.json() == {"success": False, "responses": [{"channel": "#critical", "error": error}]}
    assert mock.messages("critical") == []
    plain = post(session, mock, message)  # without separateResponse: the usual answer
    assert (plain.status_code, plain.json()) == (400, {"success": False, "error": error})


@pytest.mark.parametrize("message, error", [
    ({"text": "MOCK-REJECT"}, "error-running-script"),
    ({"text": "x", "channel": "#elsewhere"}, "overriding destination channel is disabled for this integration"),
])
def test_refusals_before_any_channel_keep_the_plain_answer(mock, session, message, error):
    response = post(session, mock, {**message, "separateResponse": True})
    assert (response.status_code, response.json()) == (400, {"success": False, "error": error})
    assert mock.messages("critical") == []


# -- an older server --

def test_old_server_ignores_separate_response(mock, session):
    mock.set_old_server()
    response = post(session, mock, {"text": "old", "separateResponse": True})
    assert (response.status_code, response.json()) == (200, {"success": True})
    failed = post(session, mock, {"text": "x" * 5001, "separateResponse": True})
    assert (failed.status_code, failed.json()) == (400, {"success": False, "error": "error-message-size-exceeded"})
    assert MESSAGE_ID.fullmatch(mock.messages("critical")[0]["message_id"])  # the message still has an id
    mock.set_old_server(False)
    assert "responses" in post(session, mock, {"text": "new", "separateResponse": True}).json()


def test_old_server_endpoint_and_reset(mock, session):
    assert (control(session, mock, "old-server", {"enabled": True}).json()) == {"success": True}
    assert post(session, mock, {"text": "a", "separateResponse": True}).json() == {"success": True}
    assert control(session, mock, "old-server", {"enabled": False}).status_code == 200
    assert "responses" in post(session, mock, {"text": "b", "separateResponse": True}).json()
    for body in ({"enabled": "yes"}, {}, {"disabled": True}):
        refused = control(session, mock, "old-server", body)
        assert refused.status_code == 400 and "enabled" in refused.json()["error"]
    mock.set_old_server()
    mock.reset()
    assert "responses" in post(session, mock, {"text": "c", "separateResponse": True}).json()
    control(session, mock, "old-server", {"enabled": True})
    assert control(session, mock, "reset").status_code == 200
    assert "responses" in post(session, mock, {"text": "d", "separateResponse": True}).json()


def test_an_old_server_from_the_start_stays_old_after_reset(session):
    with MockRocketChat(port=0, old_server=True) as server:
        server.reset()
        answer = session.post(server.hook_url("critical"), json={"text": "x", "separateResponse": True}, timeout=5)
        assert answer.json() == {"success": True}


def test_old_server_command_line_flag():
    assert mock_server.parse_args([]).old_server is False
    assert mock_server.parse_args(["--old-server"]).old_server is True


# -- tmid --

def test_tmid_is_recorded_and_not_checked(mock, session):
    parent = posted_id(session, mock, {"text": "parent"})
    reply = post(session, mock, {"text": "reply", "tmid": parent, "separateResponse": True})
    assert reply.json()["responses"][0]["message"]["tmid"] == parent
    unknown = post(session, mock, {"text": "orphan", "tmid": "NoSuchMessage1234"})
    assert (unknown.status_code, unknown.json()) == (200, {"success": True})  # Rocket.Chat posts it all the same
    records = mock.messages("critical")
    assert [record["tmid"] for record in records] == [None, parent, "NoSuchMessage1234"]
    assert records[1]["message"] == {"text": "reply", "tmid": parent, "separateResponse": True}


@pytest.mark.parametrize("tmid", [None, ""])
def test_a_null_or_empty_tmid_is_no_thread(mock, session, tmid):
    assert post(session, mock, {"text": "x", "tmid": tmid}).json() == {"success": True}
    assert mock.messages("critical")[0]["tmid"] is None


def test_control_api_messages_carry_id_and_tmid(mock, session):
    parent = posted_id(session, mock, {"text": "parent"})
    post(session, mock, {"text": "reply", "tmid": parent})
    records = session.get(f"{mock.base_url}/_mock/messages/critical", timeout=5).json()["messages"]
    assert [(record["message_id"] == parent, record["tmid"]) for record in records] == [(True, None), (False, parent)]


# -- the page --

def page_text(session, mock) -> str:
    response = session.get(f"{mock.base_url}/", timeout=5)
    assert response.status_code == 200
    css = re.search(r"<style>(.*?)</style>", response.text, re.DOTALL)[1]
    digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in response.headers["Content-Security-Policy"]
    return response.text


def thread_after(body: str, parent_id: str) -> str:
    """The thread block drawn right after the parent's article."""
    match = re.search(rf'<article class="message" id="message-{parent_id}">(?:(?!</article>).)*</article>'
                      r'(<div class="thread"[^>]*>.*?</article></div>)(?=<article|</section>)', body, re.DOTALL)
    assert match, f"no thread under {parent_id}"
    return match[1]


def test_page_draws_replies_under_their_parent(mock, session):
    parent = posted_id(session, mock, {"text": "FIRING: HighCPU"})
    first = posted_id(session, mock, {"text": "first reply", "tmid": parent})
    posted_id(session, mock, {"text": "later top-level"})
    posted_id(session, mock, {"text": "second reply", "tmid": parent})
    posted_id(session, mock, {"text": "reply to a reply", "tmid": first})
    posted_id(session, mock, {"text": "other hook", "tmid": parent}, "warning")  # another hook's id: unknown there
    body = page_text(session, mock)
    thread = thread_after(body, parent)
    assert thread.count('<article class="message reply"') == 3 and thread.count("↳ reply in thread") == 3
    assert thread.index("first reply") < thread.index("second reply") < thread.index("reply to a reply")
    assert body.index("later top-level") < body.index("FIRING: HighCPU")  # top level: newest first
    for text in ("first reply", "second reply", "reply to a reply"):
        assert body.count(text) == 1
    assert '<div class="thread"' not in body[body.index('id="channel-warning"'):]
    assert f"reply to unknown message <code>{parent}</code>" in body[body.index('id="channel-warning"'):]
    assert "<small>5 messages</small>" in body


def test_page_flags_a_reply_to_an_unknown_message(mock, session):
    post(session, mock, {"text": "orphan reply", "tmid": "NoSuchMessage1234"})
    body = page_text(session, mock)
    article = re.search(r'<article class="message" id="message-\w+">.*?</article>', body, re.DOTALL)[0]
    assert "orphan reply" in article
    assert '<div class="thread-note unknown">reply to unknown message <code>NoSuchMessage1234</code></div>' in article
    assert '<div class="thread"' not in body and "↳" not in body.split("</header>")[1]


def test_threads_on_the_page_stay_escaped(mock, session):
    parent = posted_id(session, mock, {"text": HOSTILE, "alias": HOSTILE})
    post(session, mock, {"text": HOSTILE, "alias": HOSTILE, "tmid": parent})
    post(session, mock, {"text": "orphan", "tmid": HOSTILE})
    body = page_text(session, mock)
    assert "<script" not in body and "window.pwned=1</script>" not in body
    escaped = "&lt;script&gt;window.pwned=1&lt;/script&gt;&quot;&amp;"
    assert escaped in thread_after(body, parent)
    assert f"reply to unknown message <code>{escaped}</code>" in body
