"""Starting and stopping the relay as an operator does: `python rocketchat_webhook.py`, gunicorn with the shipped
config, `import rocketchat_webhook`; good and bad configuration. Every process gets a clean environment
(tests/helpers.py: no inherited relay settings, no .env)."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import sys

import pytest
import requests

from tests.helpers import (
    DEV_SERVER_COMMAND, GUNICORN_COMMAND, PYTHON, REPO, Relay, direct_session, free_port, relay_environ,
    run_to_exit, wait_until,
)

sys.path.insert(0, str(REPO))
from mock_server import MockRocketChat  # noqa: E402

SERVICE_NAME = "rocketchat-webhook-adapter"
CONFIG_ERROR_STATUS = 2
EXIT_TIMEOUT_SECONDS = 15.0  # a hang fails the test (and the process group is killed)
PROMPT_EXIT_SECONDS = 5.0
COMMANDS = {"script": DEV_SERVER_COMMAND, "gunicorn": GUNICORN_COMMAND}


@pytest.fixture
def mock():
    with MockRocketChat(port=0, rate_limit_count=0) as server:
        yield server


def good_environ(mock: MockRocketChat, **extra) -> dict[str, str]:
    hooks = {f"ROCKETCHAT_WEBHOOK_{name.upper()}": mock.hook_url(name) for name in ("critical", "warning", "info")}
    return relay_environ({"HOST": "127.0.0.1", "PORT": str(free_port()), **hooks, **extra})


def offline_environ(**overrides) -> dict[str, str]:
    """Valid hook URLs nobody listens on, for tests that must not get as far as posting."""
    hooks = {f"ROCKETCHAT_WEBHOOK_{name}": f"http://127.0.0.1:9/hooks/{name.lower()}-id/{name.lower()}-token"
             for name in ("CRITICAL", "WARNING", "INFO")}
    return relay_environ({"HOST": "127.0.0.1", "PORT": str(free_port()), **hooks, **overrides})


def alert_body(name: str, severity: str) -> bytes:
    return json.dumps({"alerts": [{"status": "firing", "labels": {"alertname": name, "severity": severity},
                                   "annotations": {"summary": f"{name} summary"}}]}).encode()


# -- the development server --

@pytest.mark.parametrize(
    "debug_setting",
    [{}, {"LOG_LEVEL": "DEBUG"}, {"DEBUG": "true"}, {"FLASK_DEBUG": "1"}],
    ids=["default", "LOG_LEVEL=DEBUG", "DEBUG=true", "FLASK_DEBUG=1"],
)
def test_script_serves_health_and_never_the_werkzeug_debugger(tmp_path, mock, debug_setting):
    environ = good_environ(mock, **debug_setting)
    relay = Relay.start(DEV_SERVER_COMMAND, environ, output_dir=tmp_path)
    try:
        health = relay.http.get(f"{relay.base_url}/health", timeout=5)
        assert health.status_code == 200
        assert health.json()["service"] == SERVICE_NAME
        assert health.json()["status"] == "healthy"

        # Requests that fail inside the relay answer JSON, never an HTML debugger page.
        for bad_body in (b"{not json", b'{"alerts": [{"status": "firing"}]}'):
            failed = relay.post_webhook(bad_body)
            assert failed.status_code in (400, 422)
            assert failed.headers["Content-Type"].startswith("application/json")
            assert "Traceback" not in failed.text and "Werkzeug" not in failed.text

        console = relay.http.get(f"{relay.base_url}/console", timeout=5)
        assert console.status_code == 404
        assert console.headers["Content-Type"].startswith("application/json")
        assert "Werkzeug" not in console.text and "console" not in console.text.lower()
        # The debugger's middleware answers these on any path; the app answers them as plain health checks.
        resource = relay.http.get(f"{relay.base_url}/health?__debugger__=yes&cmd=resource&f=debugger.js", timeout=5)
        assert resource.headers["Content-Type"].startswith("application/json")
        assert resource.json()["service"] == SERVICE_NAME
    finally:
        relay.stop()
    output = relay.process.stdout() + relay.process.stderr()
    assert "Debugger is active" not in output and "Debugger PIN" not in output
    assert "Debug mode: on" not in output


# -- configuration errors --

def without(name: str) -> dict[str, None]:
    return {name: None}


CONFIG_ERRORS = {
    "missing ROCKETCHAT_WEBHOOK_INFO": (without("ROCKETCHAT_WEBHOOK_INFO"), "ROCKETCHAT_WEBHOOK_INFO"),
    "non-http ROCKETCHAT_WEBHOOK_CRITICAL": (
        {"ROCKETCHAT_WEBHOOK_CRITICAL": "ftp://chat.example.com/hooks/id/token"}, "ROCKETCHAT_WEBHOOK_CRITICAL"),
    "PORT=abc": ({"PORT": "abc"}, "PORT"),
    # A routes file is checked as a whole before anything starts: the line names the file and the place in it.
    "routes file naming an unknown destination": (
        {**{f"ROCKETCHAT_WEBHOOK_{name}": None for name in ("CRITICAL", "WARNING", "INFO")},
         "ROUTES_FILE": str(REPO / "tests" / "data" / "routes" / "unknown-destination.yml")},
        "integrations.default.routes[0]: no destination named 'on-call'"),
    "ROCKETCHAT_WEBHOOK_CRITICAL beside a routes file that does not use it": (
        {"ROCKETCHAT_WEBHOOK_WARNING": None, "ROCKETCHAT_WEBHOOK_INFO": None,
         "ROUTES_FILE": str(REPO / "routes.example.yml")},
        "ROCKETCHAT_WEBHOOK_CRITICAL is set in the environment but the routes file does not use it"),
}


GUNICORN_ONLY_ERRORS = {
    # Pacing and de-duplication live in one process's memory: a second worker would double the post rate.
    "-w 2": ({}, "worker processes"),
    "GUNICORN_CMD_ARGS=--workers 2": ({"GUNICORN_CMD_ARGS": "--workers 2"}, "worker processes"),
}
EXTRA_ARGUMENTS = {"-w 2": ("-w", "2")}


def config_error_cases():
    for command in COMMANDS:
        for case in CONFIG_ERRORS:
            marks = []
            yield pytest.param(command, case, marks=marks, id=f"{command}-{case}")
    for case in GUNICORN_ONLY_ERRORS:
        yield pytest.param("gunicorn", case, id=f"gunicorn-{case}")


def assert_one_config_error_line(finished, variable: str, *, only_line: bool) -> None:
    assert finished.returncode == CONFIG_ERROR_STATUS, finished.stderr
    assert "Traceback" not in finished.stderr, finished.stderr
    error_lines = [line for line in finished.stderr.splitlines() if "configuration error" in line]
    assert len(error_lines) == 1, finished.stderr
    assert variable in error_lines[0]
    assert error_lines[0].startswith("rocketchat-webhook: configuration error: ")
    if only_line:
        assert [line for line in finished.stderr.splitlines() if line.strip()] == error_lines


@pytest.mark.parametrize(("command", "case"), list(config_error_cases()))
def test_bad_configuration_exits_2_with_one_readable_line(tmp_path, command, case):
    overrides, variable = {**CONFIG_ERRORS, **GUNICORN_ONLY_ERRORS}[case]
    arguments = (*COMMANDS[command][:-1], *EXTRA_ARGUMENTS.get(case, ()), COMMANDS[command][-1])
    finished = run_to_exit(arguments, env=offline_environ(**overrides), cwd=REPO, output_dir=tmp_path,
                           name=command, timeout_seconds=EXIT_TIMEOUT_SECONDS)

    assert_one_config_error_line(finished, variable, only_line=command == "script")
    assert finished.elapsed_seconds < PROMPT_EXIT_SECONDS
    if command == "gunicorn":
        # The master stops before forking: no worker is booted, let alone respawned.
        assert "Booting worker" not in finished.stderr




@pytest.mark.parametrize("command", list(COMMANDS))
def test_unwritable_log_file_is_a_configuration_error(tmp_path, command):
    log_file = tmp_path / "no-such-directory" / "relay.log"
    finished = run_to_exit(COMMANDS[command], env=offline_environ(LOG_FILE=str(log_file)), cwd=REPO,
                           output_dir=tmp_path, name=command, timeout_seconds=EXIT_TIMEOUT_SECONDS)

    assert_one_config_error_line(finished, "LOG_FILE", only_line=command == "script")


SECRET_ID = "SecretIntegrationId9f2c"
SECRET_TOKEN = "SecretHookToken-4e7a1b"
SECRET_PASSWORD = "Pa55word-c0ffee"


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize(
    "bad_url",
    [
        f"ftp://alert:{SECRET_PASSWORD}@chat.example.com/hooks/{SECRET_ID}/{SECRET_TOKEN}",
        f"chat.example.com/hooks/{SECRET_ID}/{SECRET_TOKEN}",  # the scheme forgotten
        f"https:///hooks/{SECRET_ID}/{SECRET_TOKEN}",  # no host
    ],
    ids=["ftp-with-password", "no-scheme", "no-host"],
)
@pytest.mark.parametrize("through_file", [False, True], ids=["variable", "_FILE"])
def test_a_bad_hook_url_is_not_echoed_in_the_error(tmp_path, command, bad_url, through_file):
    if through_file:
        secret_file = tmp_path / "info-hook-url"
        secret_file.write_text(bad_url + "\n", encoding="utf-8")
        overrides = {"ROCKETCHAT_WEBHOOK_INFO": None, "ROCKETCHAT_WEBHOOK_INFO_FILE": str(secret_file)}
    else:
        overrides = {"ROCKETCHAT_WEBHOOK_INFO": bad_url}
    finished = run_to_exit(COMMANDS[command], env=offline_environ(**overrides), cwd=REPO, output_dir=tmp_path,
                           name=command, timeout_seconds=EXIT_TIMEOUT_SECONDS)

    assert_one_config_error_line(finished, "ROCKETCHAT_WEBHOOK_INFO", only_line=command == "script")
    output = finished.stdout + finished.stderr
    for secret in (bad_url, SECRET_TOKEN, SECRET_ID, SECRET_PASSWORD, f"/hooks/{SECRET_ID}"):
        assert secret not in output


# -- the command-line check --

def test_check_config_prints_destinations_without_secrets_or_network(tmp_path, mock):
    token = "InboundTokenForCheck-31f5"
    environ = good_environ(mock, WEBHOOK_TOKEN=token)
    finished = run_to_exit((*DEV_SERVER_COMMAND, "--check-config"), env=environ, cwd=REPO, output_dir=tmp_path,
                           name="check", timeout_seconds=EXIT_TIMEOUT_SECONDS)

    assert finished.returncode == 0, finished.stderr
    assert "configuration OK" in finished.stdout
    for name in ("critical", "warning", "info"):
        url = mock.hook_url(name)
        path = url.split(str(mock.port), 1)[1]
        for secret in (url, path, f"{name}-token"):
            assert secret not in finished.stdout + finished.stderr
    assert token not in finished.stdout + finished.stderr
    assert all(mock.stats(name)["requests"] == 0 for name in mock.hook_names)  # checked without posting

    bad = run_to_exit((*DEV_SERVER_COMMAND, "--check-config"), env={**environ, "PORT": "abc"}, cwd=REPO,
                      output_dir=tmp_path, name="check-bad", timeout_seconds=EXIT_TIMEOUT_SECONDS)
    assert_one_config_error_line(bad, "PORT", only_line=True)


# -- importing the module --

def test_import_builds_the_app_without_listening_or_posting(tmp_path, mock):
    environ = good_environ(mock, LOG_LEVEL="DEBUG")
    port = int(environ["PORT"])
    # After the import, this same process can still bind HOST:PORT: the import did not take it.
    probe = (
        "import socket, rocketchat_webhook\n"
        "assert rocketchat_webhook.app.name == 'rcwebhook.app'\n"
        f"with socket.create_server(('127.0.0.1', {port})) as taken:\n"
        "    print('port still free')\n"
    )
    finished = run_to_exit((PYTHON, "-c", probe), env=environ, cwd=REPO, output_dir=tmp_path, name="import",
                           timeout_seconds=EXIT_TIMEOUT_SECONDS)

    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == "port still free"
    assert finished.elapsed_seconds < PROMPT_EXIT_SECONDS
    assert "Traceback" not in finished.stderr
    with direct_session() as http:
        stats = http.get(f"{mock.base_url}/_mock/stats", timeout=5).json()
        assert all(hook["requests"] == 0 for hook in stats["hooks"].values())
        assert stats["unknown_hook_requests"] == 0
        with pytest.raises(requests.ConnectionError):
            http.get(f"http://127.0.0.1:{port}/health", timeout=2)


def test_gunicorn_answers_the_request_in_flight_when_told_to_stop(tmp_path, mock):
    relay = Relay.start(GUNICORN_COMMAND, good_environ(mock, DELIVERY_DEADLINE_SECONDS="2"), output_dir=tmp_path)
    try:
        mock.set_fault("critical", status=500)  # the request stays busy retrying until its deadline
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(relay.post_webhook, alert_body("InFlightAtStop", "critical"))
            wait_until(lambda: mock.stats("critical")["requests"] >= 1, 10, "the relay's first post")
            os.killpg(relay.process.pid, signal.SIGTERM)  # as systemd stops the unit: every process of it
            response = in_flight.result(timeout=30)
        assert response.status_code == 503  # answered, so Alertmanager retries; not a dropped connection
        assert relay.process.wait(EXIT_TIMEOUT_SECONDS) == 0
    finally:
        relay.stop()
    assert "Traceback" not in relay.process.stderr()
    assert "Shutting down: Master" in relay.process.stderr()
