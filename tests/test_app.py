"""POST /webhook and GET /health through Flask's test client, with a recording fake Rocket.Chat."""

import io
import json
import logging

import pytest

from rcwebhook.client import Outcome, PostResult
from tests.conftest import HOOK_URLS, REPO, load_json

TEST_ALERT = load_json(REPO / "test-alert.json")


def alert(name="HighCPUUsage", severity="critical", status="firing", **labels):
    labels = {"alertname": name, **({"severity": severity} if severity is not None else {}), **labels}
    return {"status": status, "labels": labels, "annotations": {"summary": f"{name} summary"}}


def post(client, body, **kwargs):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    kwargs.setdefault("content_type", "application/json")
    return client.post("/webhook", data=data, **kwargs)


def test_seed_test_alert_answer_and_one_message_per_channel(client, fake_rocketchat):
    response = post(client, TEST_ALERT)
    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ok", "processed": 2, "alerts": ["HighCPUUsage", "HighMemoryUsage"], "messages": 2, "skipped": 0,
        "integration": "default",
    }
    assert [message["text"] for message in fake_rocketchat.messages_to("critical")] == ["[FIRING:1] HighCPUUsage"]
    assert [message["text"] for message in fake_rocketchat.messages_to("warning")] == ["[FIRING:1] HighMemoryUsage"]
    assert fake_rocketchat.messages_to("info") == []


def test_body_is_read_as_json_whatever_the_content_type_says(client, fake_rocketchat):
    # curl -d without -H sends application/x-www-form-urlencoded.
    response = post(client, json.dumps(TEST_ALERT), content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200
    assert response.get_json()["processed"] == 2
    assert len(fake_rocketchat.posts) == 2


def test_sending_the_test_alert_twice_posts_twice(client, fake_rocketchat):
    post(client, TEST_ALERT)
    post(client, TEST_ALERT)
    assert len(fake_rocketchat.messages_to("critical")) == 2


def test_shared_hook_gets_one_message_with_each_alerts_colour(environ, fake_rocketchat):
    from rcwebhook.app import create_app

    environ["ROCKETCHAT_WEBHOOK_WARNING"] = HOOK_URLS["critical"]
    app = create_app(environ, client=fake_rocketchat)
    response = post(app.test_client(), TEST_ALERT)
    assert response.get_json()["messages"] == 1
    [message] = fake_rocketchat.messages_to("critical")
    assert [attachment["color"] for attachment in message["attachments"]] == ["#d9534f", "#f0ad4e"]


@pytest.mark.parametrize(
    ("severity", "hook"),
    [("critical", "critical"), ("CRIT", "critical"), ("p1", "critical"), ("Warning", "warning"), ("p2", "warning"),
     ("info", "info"), ("none", "info"), (None, "info"), ("disaster", "info")],
)
def test_each_alert_reaches_its_severitys_hook(client, fake_rocketchat, severity, hook):
    assert post(client, {"alerts": [alert(severity=severity)]}).status_code == 200
    assert len(fake_rocketchat.messages_to(hook)) == 1
    assert len(fake_rocketchat.posts) == 1


def test_unknown_severity_goes_to_default_hook_when_set(environ, fake_rocketchat):
    from rcwebhook.app import create_app

    default_url = "http://rocketchat.test/hooks/default-id/default-secret-token"
    environ["ROCKETCHAT_WEBHOOK_DEFAULT"] = default_url
    app = create_app(environ, client=fake_rocketchat)
    post(app.test_client(), {"alerts": [alert(severity="bogus"), alert(severity=None)]})
    assert [url for url, _ in fake_rocketchat.posts] == [default_url]


def test_severity_label_setting(environ, fake_rocketchat):
    from rcwebhook.app import create_app

    environ["SEVERITY_LABEL"] = "priority"
    app = create_app(environ, client=fake_rocketchat)
    post(app.test_client(), {"alerts": [alert(severity=None, priority="P1")]})
    assert len(fake_rocketchat.messages_to("critical")) == 1


def test_empty_alert_list_is_answered_200_without_posting(client, fake_rocketchat):
    response = post(client, {"alerts": []})
    assert response.status_code == 200
    assert response.get_json()["processed"] == 0
    assert fake_rocketchat.posts == []


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"", 400, "empty"),
        (b"{not json", 400, "not valid JSON"),
        (b"\xff\xfe\x00garbage", 400, "not UTF-8"),
        (b"[1, 2]", 400, "JSON object"),
        (b'"alerts"', 400, "JSON object"),
        (b"[" * 100000 + b"]" * 100000, 400, "nested"),
        (b"{}", 422, "alerts"),
        (b'{"alerts": {"a": 1}}', 422, "alerts"),
        (b'{"alerts": [{"status": "firing"}]}', 422, "usable"),
    ],
)
def test_bad_input_gets_a_clear_json_error_and_posts_nothing(client, fake_rocketchat, body, status, words):
    response = post(client, body)
    assert response.status_code == status
    document = response.get_json()
    assert document["status"] == "error"
    assert words in json.dumps(document)
    assert fake_rocketchat.posts == []


def test_no_usable_alert_lists_each_problem_with_its_location(client):
    document = post(client, {"alerts": [{"status": "firing"}, "text", {"labels": None}]}).get_json()
    assert [item["loc"] for item in document["detail"]] == [["alerts", 0, "labels"], ["alerts", 1], ["alerts", 2, "labels"]]
    assert all(item["msg"] for item in document["detail"])


def test_unusable_alerts_beside_usable_ones_are_skipped_loudly(client, fake_rocketchat, caplog):
    with caplog.at_level(logging.ERROR):
        response = post(client, {"alerts": [alert(), {"annotations": {"summary": "no labels"}}]})
    assert response.status_code == 200
    assert response.get_json()["skipped"] == 1
    assert "alerts[1]" in fake_rocketchat.messages_to("critical")[0]["text"]
    assert any("alerts[1]" in record.getMessage() for record in caplog.records if record.levelno == logging.ERROR)


def test_too_large_body_is_refused_from_its_length_before_reading(environ, fake_rocketchat):
    from rcwebhook.app import create_app

    environ["MAX_BODY_BYTES"] = "2048"
    app = create_app(environ, client=fake_rocketchat)
    response = post(app.test_client(), json.dumps({"alerts": [alert(description="x" * 5000)]}))
    assert response.status_code == 413
    assert "MAX_BODY_BYTES" in response.get_json()["error"]
    assert fake_rocketchat.posts == []


def test_too_large_body_without_a_length_is_read_only_up_to_the_limit(environ, fake_rocketchat):
    from rcwebhook.app import create_app

    environ["MAX_BODY_BYTES"] = "2048"
    app = create_app(environ, client=fake_rocketchat)
    body = json.dumps({"alerts": [alert(description="x" * 5000)]}).encode()
    # A chunked body has no Content-Length; servers such as gunicorn mark its end with wsgi.input_terminated.
    response = app.test_client().post(
        "/webhook", input_stream=io.BytesIO(body), headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413
    assert fake_rocketchat.posts == []


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_get_405_json(client, method):
    response = client.open("/webhook", method=method)
    assert response.status_code == 405
    assert response.get_json()["status"] == "error"
    assert "POST" in response.headers["Allow"]


def test_unknown_path_gets_404_json(client):
    response = client.get("/nowhere")
    assert response.status_code == 404
    assert response.get_json()["status"] == "error"


def test_health_makes_no_downstream_call(client, fake_rocketchat):
    from rcwebhook import __version__

    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json() == {"service": "rocketchat-webhook-adapter", "status": "healthy", "version": __version__}
    assert fake_rocketchat.posts == []


class TestAuthentication:
    TOKEN = "relay-secret-0123456789"

    @pytest.fixture
    def environ(self, environ):
        return {**environ, "WEBHOOK_TOKEN": self.TOKEN}

    def test_bearer_token_accepted(self, client, fake_rocketchat):
        response = post(client, TEST_ALERT, headers={"Authorization": f"Bearer {self.TOKEN}"})
        assert response.status_code == 200
        assert len(fake_rocketchat.posts) == 2

    def test_api_key_header_accepted(self, client):
        assert post(client, TEST_ALERT, headers={"X-API-Key": self.TOKEN}).status_code == 200

    @pytest.mark.parametrize(
        "headers",
        [{}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}, {"Authorization": f"Basic {TOKEN}"},
         {"Authorization": f"Bearer {TOKEN}x"}],
    )
    def test_missing_or_wrong_token_is_401_before_anything_else(self, client, fake_rocketchat, headers):
        response = post(client, b"{not even json", headers=headers)
        assert response.status_code == 401
        assert response.get_json()["status"] == "error"
        assert self.TOKEN not in response.get_data(as_text=True)
        assert fake_rocketchat.posts == []

    def test_health_stays_open(self, client):
        assert client.get("/health").status_code == 200


def test_open_endpoint_warns_once_at_start(environ, fake_rocketchat, caplog):
    from rcwebhook.app import create_app

    with caplog.at_level(logging.WARNING):
        create_app(environ, client=fake_rocketchat)
    assert sum("no token for integration(s) default" in record.getMessage() for record in caplog.records) == 1


class TestAnswersToAlertmanager:
    """Each row of the README's answer table."""

    def test_content_refused_then_plain_text_accepted_is_200(self, client, fake_rocketchat, caplog):
        url = HOOK_URLS["critical"]
        fake_rocketchat.answer(url, PostResult(Outcome.CONTENT_REFUSED, 400, "error-message-size-exceeded"))
        with caplog.at_level(logging.ERROR):
            response = post(client, {"alerts": [alert()]})
        assert response.status_code == 200
        rich, plain = fake_rocketchat.messages_to("critical")
        assert "attachments" in rich and "attachments" not in plain
        assert "HighCPUUsage" in plain["text"]
        assert any("error-message-size-exceeded" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)

    def test_plain_text_refused_too_is_502(self, client, fake_rocketchat):
        refused = PostResult(Outcome.CONTENT_REFUSED, 400, "Invalid attachment field, title and value is required")
        fake_rocketchat.answer(HOOK_URLS["critical"], refused, refused)
        response = post(client, {"alerts": [alert()]})
        assert response.status_code == 502
        [destination] = response.get_json()["destinations"]
        assert destination == {"destination": "critical", "outcome": "refused", "alerts": 1, "rocketchat_status": 400,
                               "reason": "Invalid attachment field, title and value is required"}

    def test_permanent_refusal_is_502_at_once_without_fallback(self, client, fake_rocketchat):
        fake_rocketchat.answer(HOOK_URLS["critical"], PostResult(Outcome.PERMANENT, 400, "invalid-channel"))
        response = post(client, {"alerts": [alert()]})
        assert response.status_code == 502
        assert len(fake_rocketchat.posts) == 1

    def test_transient_failure_overcome_inside_the_deadline_is_200(self, client, fake_rocketchat):
        fake_rocketchat.answer(HOOK_URLS["critical"], PostResult(Outcome.TRANSIENT, 500, "HTTP 500"))
        assert post(client, {"alerts": [alert()]}).status_code == 200
        assert len(fake_rocketchat.posts) == 2

    def test_transient_failure_past_the_deadline_is_503_with_retry_after(self, client, fake_rocketchat):
        fake_rocketchat.answer(HOOK_URLS["critical"], PostResult(Outcome.TRANSIENT, 429, "too many", wait_seconds=30))
        response = post(client, {"alerts": [alert()]})
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "30"
        assert response.get_json()["destinations"][0]["outcome"] == "failed"

    def test_one_hook_failing_does_not_stop_the_others(self, client, fake_rocketchat):
        fake_rocketchat.answer(HOOK_URLS["critical"], PostResult(Outcome.PERMANENT, 404, "wrong hook id or token"))
        response = post(client, TEST_ALERT)
        assert response.status_code == 502
        assert len(fake_rocketchat.messages_to("warning")) == 1
        outcomes = {d["destination"]: d["outcome"] for d in response.get_json()["destinations"]}
        assert outcomes == {"critical": "refused", "warning": "delivered"}


def test_each_alert_is_logged_at_a_level_that_follows_severity(client, caplog):
    with caplog.at_level(logging.INFO, logger="rcwebhook.alerts"):
        post(client, {"alerts": [alert("A", "critical", instance="web-1"), alert("B", "warning"), alert("C", "info"),
                                 alert("D", "critical", status="resolved")]})
    lines = {record.getMessage(): record.levelno for record in caplog.records if record.name == "rcwebhook.alerts"}
    assert lines == {
        "[ALERT FIRING] A (critical) integration=default instance=web-1: A summary": logging.ERROR,
        "[ALERT FIRING] B (warning) integration=default: B summary": logging.WARNING,
        "[ALERT FIRING] C (info) integration=default: C summary": logging.INFO,
        "[ALERT RESOLVED] D (critical) integration=default: D summary": logging.INFO,
    }
