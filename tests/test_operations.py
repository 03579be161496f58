"""Operating the relay: /metrics, /ready, token rotation, slowing failed logins, JSON logs, the CLI checks."""

import io
import json
import logging
import os
import subprocess
import sys

import pytest

from rcwebhook.app import create_app
from rcwebhook.auth import FailedAuthLimiter, TokenSource
from rcwebhook.client import Outcome, PostResult
from rcwebhook.config import load_config
from rcwebhook.logs import JsonFormatter, RequestIdFilter, request_id_var
from rcwebhook.redact import Redactor
from tests.conftest import BASE_ENVIRON, HOOK_URLS, REPO, RecordingClient
from tests.helpers import metric_value

TEST_ALERT = (REPO / "test-alert.json").read_text()


def test_metrics_count_requests_alerts_and_posts_by_destination_name(client, fake_rocketchat):
    client.post("/webhook", data=TEST_ALERT)
    text = client.get("/metrics").get_data(as_text=True)
    assert metric_value(text, "rocketchat_webhook_http_requests_total", route="/webhook", method="POST", status="200") == 1
    assert metric_value(text, "rocketchat_webhook_alerts_received_total", status="firing", severity="critical") == 1
    assert metric_value(text, "rocketchat_webhook_posts_total", destination="critical", outcome="delivered") == 1
    assert metric_value(text, "rocketchat_webhook_posts_total", destination="warning", outcome="delivered") == 1
    assert "secret-token" not in text and "rocketchat.test" not in text  # destinations by name, never by URL


def test_metrics_count_fallbacks_refusals_and_429s(client, fake_rocketchat):
    fake_rocketchat.answer(HOOK_URLS["critical"], PostResult(Outcome.CONTENT_REFUSED, 400, "error-message-size-exceeded"))
    fake_rocketchat.answer(HOOK_URLS["warning"], PostResult(Outcome.PERMANENT, 400, "invalid-channel"))
    client.post("/webhook", data=TEST_ALERT)
    text = client.get("/metrics").get_data(as_text=True)
    assert metric_value(text, "rocketchat_webhook_plain_text_fallbacks_total", destination="critical") == 1
    assert metric_value(text, "rocketchat_webhook_refusals_total", destination="warning") == 1
    assert metric_value(text, "rocketchat_webhook_rocketchat_responses_total", destination="warning", code="400") == 1


def test_metrics_series_exist_at_zero_before_anything_happens(client):
    text = client.get("/metrics").get_data(as_text=True)
    assert 'rocketchat_webhook_posts_total{destination="info",outcome="transient"} 0.0' in text
    assert "rocketchat_webhook_requests_waiting 0.0" in text


def test_too_large_bodies_are_counted(environ, fake_rocketchat):
    app = create_app({**environ, "MAX_BODY_BYTES": "2048"}, client=fake_rocketchat)
    app.test_client().post("/webhook", data="x" * 5000)
    text = app.test_client().get("/metrics").get_data(as_text=True)
    assert metric_value(text, "rocketchat_webhook_bodies_too_large_total") == 1


class TestMetricsToken:
    @pytest.fixture
    def environ(self, environ):
        return {**environ, "METRICS_TOKEN": "metrics-secret-42"}

    def test_metrics_need_the_bearer_token(self, client):
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        response = client.get("/metrics", headers={"Authorization": "Bearer metrics-secret-42"})
        assert response.status_code == 200
        assert "rocketchat_webhook_build_info" in response.get_data(as_text=True)

    def test_health_and_ready_stay_open(self, client):
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 200


def test_ready_turns_503_when_shutting_down(app, client):
    assert client.get("/ready").get_json() == {"status": "ready"}
    app.extensions["rcwebhook.dispatcher"].begin_shutdown()
    assert client.get("/ready").status_code == 503
    response = client.post("/webhook", data=TEST_ALERT)
    assert response.status_code == 503  # Alertmanager retries; a stopping relay takes no new work


class TestTokenRotation:
    def test_token_file_is_re_read_when_it_changes(self, tmp_path):
        token_file = tmp_path / "token"
        token_file.write_text("first-token-123\n")
        now = [0.0]
        redactor = Redactor()
        tokens = TokenSource("first-token-123", str(token_file), on_new_token=redactor.add, clock=lambda: now[0])
        assert tokens.accepts("first-token-123")
        token_file.write_text("second-token-456\n")
        os.utime(token_file, ns=(os.stat(token_file).st_atime_ns, os.stat(token_file).st_mtime_ns + 10**9))
        now[0] += 2  # past the once-a-second check
        assert tokens.accepts("second-token-456")
        assert not tokens.accepts("first-token-123")
        assert redactor("token second-token-456") == "token <redacted>"

    def test_previous_token_is_accepted_while_set(self, environ, fake_rocketchat):
        app = create_app({**environ, "WEBHOOK_TOKEN": "new-token-123", "WEBHOOK_TOKEN_PREVIOUS": "old-token-456"},
                         client=fake_rocketchat)
        client = app.test_client()
        for token in ("new-token-123", "old-token-456"):
            assert client.post("/webhook", data=TEST_ALERT, headers={"X-API-Key": token}).status_code == 200
        assert client.post("/webhook", data=TEST_ALERT, headers={"X-API-Key": "other"}).status_code == 401


def test_previous_token_alone_is_a_config_error():
    from rcwebhook.config import ConfigError

    with pytest.raises(ConfigError, match="WEBHOOK_TOKEN_PREVIOUS"):
        load_config({**BASE_ENVIRON, "WEBHOOK_TOKEN_PREVIOUS": "old"})


def test_failed_authentications_are_slowed_per_address_and_the_right_token_never_is(environ, fake_rocketchat):
    app = create_app({**environ, "WEBHOOK_TOKEN": "right-token-123"}, client=fake_rocketchat)
    client = app.test_client()
    attacker = {"REMOTE_ADDR": "203.0.113.9"}
    answers = [client.post("/webhook", data="{}", headers={"X-API-Key": "guess"}, environ_base=attacker).status_code
               for _ in range(21)]
    assert answers == [401] * 20 + [429]
    # Another address is not affected, and the attacker's own address still gets through with the right token.
    assert client.post("/webhook", data="{}", headers={"X-API-Key": "guess"},
                       environ_base={"REMOTE_ADDR": "198.51.100.7"}).status_code == 401
    assert client.post("/webhook", data=TEST_ALERT, headers={"X-API-Key": "right-token-123"},
                       environ_base=attacker).status_code == 200


def test_failure_window_expires():
    now = [0.0]
    limiter = FailedAuthLimiter(clock=lambda: now[0])
    assert not any(limiter.record_failure("a") for _ in range(20))
    assert limiter.record_failure("a")
    now[0] += 61
    assert not limiter.record_failure("a")


def test_json_log_lines_carry_the_request_id_and_are_redacted():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter(Redactor(["hook-token-789"])))
    logger = logging.getLogger("test.jsonlogs")
    logger.addHandler(handler)
    logger.propagate = False
    token = request_id_var.set("req-1")
    try:
        logger.warning("posting to http://rc/hooks/id/hook-token-789 failed\nsecond line")
    finally:
        request_id_var.reset(token)
        logger.removeHandler(handler)
    [line] = stream.getvalue().splitlines()  # one object per line, newlines escaped
    record = json.loads(line)
    assert record["request_id"] == "req-1"
    assert record["level"] == "WARNING"
    assert "hook-token-789" not in line and "http://rc" not in line


def test_request_id_is_taken_from_the_caller_or_made(client):
    assert client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    made = client.get("/health", headers={"X-Request-ID": "forged id [INFO] x"}).headers["X-Request-ID"]
    assert made != "forged id [INFO] x" and len(made) == 32


def run_cli(*arguments, environ=None, cwd=None):
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ROCKETCHAT_", "WEBHOOK_"))}
    env.update(environ or {})
    return subprocess.run([sys.executable, str(REPO / "rocketchat_webhook.py"), *arguments], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_check_config_prints_destinations_with_tokens_redacted(tmp_path):
    result = run_cli("--check-config", environ=BASE_ENVIRON, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "critical" in result.stdout and "rocketchat.test" in result.stdout
    assert "secret-token" not in result.stdout + result.stderr


def test_check_config_fails_with_the_variable_named(tmp_path):
    result = run_cli("--check-config", environ={"ROCKETCHAT_WEBHOOK_CRITICAL": HOOK_URLS["critical"]}, cwd=tmp_path)
    assert result.returncode == 2
    assert "ROCKETCHAT_WEBHOOK_WARNING" in result.stderr
    assert "Traceback" not in result.stderr


def test_render_prints_each_destinations_message_without_network(tmp_path):
    # The hook URLs point at a host that does not exist: rendering must not try to reach it.
    result = run_cli("--render", str(REPO / "test-alert.json"), environ=BASE_ENVIRON, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rendered = json.loads(result.stdout)
    assert [(item["destination"], item["message"]["text"]) for item in rendered] == [
        ("critical", "[FIRING:1] HighCPUUsage"), ("warning", "[FIRING:1] HighMemoryUsage")]
    assert rendered[0]["message"]["attachments"][0]["color"] == "#d9534f"


@pytest.mark.parametrize("content", ["not json", '{"alerts": [{"status": "firing"}]}'])
def test_render_fails_on_a_bad_body(tmp_path, content):
    body = tmp_path / "body.json"
    body.write_text(content)
    result = run_cli("--render", str(body), environ=BASE_ENVIRON, cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.startswith("rocketchat-webhook:")


def test_every_relay_metric_the_alert_rules_use_exists_in_the_relays_metrics():
    """A renamed metric must not leave a rule silently dead (with SMS on: its series exist only then)."""
    import re

    import yaml

    from rcwebhook.app import create_app, shutdown

    app = create_app({**BASE_ENVIRON, "SMS_RECIPIENTS": "+15551230001", "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
                      "TWILIO_AUTH_TOKEN": "token", "TWILIO_FROM_NUMBER": "+15017122661",
                      "TWILIO_API_URL": "http://127.0.0.1:9"}, client=RecordingClient())
    client = app.test_client()

    rules = yaml.safe_load((REPO / "alerting-rules.yml").read_text())
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    used = {name for expression in expressions for name in re.findall(r"\brocketchat_webhook_[a-z_]+", expression)}
    assert len(used) >= 6
    client.post("/webhook", data=TEST_ALERT)  # so that request histograms have their /webhook series
    exported = {line.split("{")[0].split(" ")[0]
                for line in client.get("/metrics").get_data(as_text=True).splitlines() if not line.startswith("#")}
    shutdown(app, 1)
    assert used <= exported, used - exported


def test_log_file_is_reopened_after_logrotate_moves_it(tmp_path):
    from rcwebhook.logs import HANDLER_NAME, configure_logging

    log_file = tmp_path / "relay.log"
    config = load_config({**BASE_ENVIRON, "LOG_FILE": str(log_file)})
    root = logging.getLogger()
    level = root.level
    configure_logging(config, Redactor(config.secrets))
    try:
        logging.getLogger("rcwebhook.test").warning("before rotation")
        log_file.rename(tmp_path / "relay.log.1")  # what logrotate does (without copytruncate)
        logging.getLogger("rcwebhook.test").warning("after rotation")
    finally:
        for handler in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)
    assert "before rotation" in (tmp_path / "relay.log.1").read_text()
    assert "after rotation" in log_file.read_text()
    assert "before rotation" not in log_file.read_text()
