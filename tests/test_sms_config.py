"""SMS escalation's configuration: SMS_* and TWILIO_* in the environment, a routes file's sms: destinations, the
recipients file, and the command line (--check-config, --send-test-sms) run as an operator runs it.

Every error names the setting (or the place in the routes file) and shows a phone number only by its last three
digits, and no secret at all.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import textwrap

import pytest

from rcwebhook.config import ConfigError, load_config
from rcwebhook.routes_file import load_route_table
from tests.conftest import BASE_ENVIRON, REPO
from tests.helpers import DEV_SERVER_COMMAND, relay_environ, run_to_exit

sys.path.insert(0, str(REPO))
from mock_server import MockRocketChat  # noqa: E402

ACCOUNT_SID = "AC" + "5e" * 16
AUTH_TOKEN = "TwilioAuthToken-7c1d9e"
API_KEY_SID = "SK" + "a1" * 16
API_KEY_SECRET = "TwilioKeySecret-42f0aa"
FROM_NUMBER = "+15005550006"
ALICE, BOB, CAROL = "+15551230001", "+15551230002", "+15551230009"
TWILIO = {"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_FROM_NUMBER": FROM_NUMBER}
CONFIG_ERROR_STATUS, INPUT_ERROR_STATUS = 2, 1
EXIT_TIMEOUT_SECONDS = 20.0
ONCALL_URL = "http://rocketchat.test/hooks/oncall-id/oncall-secret-token"


def digits(number: str) -> str:
    return number.lstrip("+")


def masked(number: str) -> str:
    """How the relay may show a number: its last three digits."""
    return "…" + "".join(character for character in number if character.isdigit())[-3:]


def environment(**settings: str | None) -> dict[str, str]:
    """The relay's hooks, Twilio, and settings (None removes one)."""
    environ = {**BASE_ENVIRON, **TWILIO, **settings}
    return {name: value for name, value in environ.items() if value is not None}


def load(environ: dict[str, str]):
    """What starting the relay checks: the settings, then the route table."""
    config = load_config(environ)
    return config, load_route_table(config, environ)


def config_error(environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as raised:
        load(environ)
    return str(raised.value)


def assert_shows_no_number(text: str, *numbers: str) -> None:
    for number in numbers:
        assert number not in text and digits(number) not in text, f"{masked(number)} shown in full: {text}"


# -- SMS_* without a routes file --

def test_sms_recipients_are_read_as_the_environments_sms_destination():
    config, table = load(environment(SMS_RECIPIENTS=f" {ALICE} , {BOB},{ALICE}", SMS_DELAY_SECONDS="300",
                                     SMS_SEVERITIES="critical,warning"))
    [destination] = table.sms_destinations.values()
    assert destination.tiers[0].numbers() == (ALICE, BOB)  # trimmed, each once
    assert destination.delay_seconds == 300 and destination.severities == ("critical", "warning")
    assert config.twilio.messages_url == f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"


@pytest.mark.parametrize("bad", ["5559876543", "+1 (555) 987-6543", "+1-555-987-6543", "0015559876543",
                                 "+1555987654321012", "+1555987654x"])
def test_a_recipient_that_is_not_e164_names_sms_recipients_and_only_its_last_three_digits(bad):
    message = config_error(environment(SMS_RECIPIENTS=f"{ALICE},{bad}"))

    assert "SMS_RECIPIENTS" in message and "E.164" in message
    assert masked(bad) in message
    assert bad not in message and bad.replace(" ", "") not in message
    assert "".join(character for character in bad if character.isdigit()) not in message
    assert_shows_no_number(message, ALICE)


def test_sms_recipients_without_twilio_is_refused():
    message = config_error(environment(SMS_RECIPIENTS=ALICE, TWILIO_ACCOUNT_SID=None, TWILIO_AUTH_TOKEN=None,
                                       TWILIO_FROM_NUMBER=None))
    assert "SMS_RECIPIENTS" in message and "TWILIO_ACCOUNT_SID" in message
    assert_shows_no_number(message, ALICE)


def test_an_unknown_sms_timezone_names_sms_timezone():
    message = config_error(environment(SMS_RECIPIENTS=ALICE, SMS_HOURS="08:00-18:00", SMS_TIMEZONE="Europe/Atlantis"))
    assert message.startswith("SMS_TIMEZONE") and "Europe/Atlantis" in message


def test_another_sms_setting_without_sms_recipients_is_refused_rather_than_ignored():
    message = config_error(environment(SMS_DELAY_SECONDS="300"))
    assert "SMS_DELAY_SECONDS" in message and "SMS_RECIPIENTS" in message


@pytest.mark.parametrize(("settings", "named"), [
    ({"TWILIO_AUTH_TOKEN": None}, "TWILIO_AUTH_TOKEN"),
    ({"TWILIO_ACCOUNT_SID": "AC-" + AUTH_TOKEN}, "TWILIO_ACCOUNT_SID"),
    ({"TWILIO_ACCOUNT_SID": "SK" + "5e" * 16}, "TWILIO_ACCOUNT_SID"),
    ({"TWILIO_ACCOUNT_SID": None}, "TWILIO_ACCOUNT_SID"),
    ({"TWILIO_AUTH_TOKEN": None, "TWILIO_API_KEY_SID": API_KEY_SID}, "TWILIO_API_KEY_SECRET"),
    ({"TWILIO_API_KEY_SECRET": API_KEY_SECRET}, "TWILIO_API_KEY_SID"),
    ({"TWILIO_API_KEY_SID": "SK-" + API_KEY_SECRET, "TWILIO_API_KEY_SECRET": API_KEY_SECRET}, "TWILIO_API_KEY_SID"),
    ({"TWILIO_FROM_NUMBER": None}, "TWILIO_FROM_NUMBER"),
    ({"TWILIO_FROM_NUMBER": None, "TWILIO_MESSAGING_SERVICE_SID": "MG-not-a-service"},
     "TWILIO_MESSAGING_SERVICE_SID"),
    ({"TWILIO_FROM_NUMBER": "15005550006-x"}, "TWILIO_FROM_NUMBER"),
    ({"TWILIO_API_URL": "ftp://api.twilio.com"}, "TWILIO_API_URL"),
], ids=["no token", "account sid not AC+hex", "api key sid as account sid", "no account sid",
        "api key sid without secret", "api key secret without sid", "api key sid not SK+hex", "no sender",
        "bad messaging service sid", "bad from number", "api url not http"])
def test_a_partial_or_malformed_twilio_setup_is_a_clear_error_showing_no_secret(settings, named):
    message = config_error(environment(SMS_RECIPIENTS=ALICE, **settings))

    assert named in message
    for secret in (AUTH_TOKEN, API_KEY_SECRET, ALICE, digits(ALICE)):
        assert secret not in message


def test_an_api_key_sends_from_a_file_and_the_auth_token_still_checks_callbacks(tmp_path):
    secret_file = tmp_path / "twilio-key-secret"
    secret_file.write_text(API_KEY_SECRET + "\n", encoding="utf-8")
    config, _table = load(environment(TWILIO_API_KEY_SID=API_KEY_SID, TWILIO_API_KEY_SECRET_FILE=str(secret_file),
                                      SMS_RECIPIENTS=ALICE, PUBLIC_URL="https://relay.example.com/"))
    assert (config.twilio.username, config.twilio.password) == (API_KEY_SID, API_KEY_SECRET)
    assert config.sms_status_callback_url == "https://relay.example.com/twilio/status"
    assert {API_KEY_SECRET, AUTH_TOKEN} <= set(config.secrets)  # redacted wherever they could turn up
    assert AUTH_TOKEN not in repr(config) and API_KEY_SECRET not in repr(config)


# -- with a routes file --

def routes_file(tmp_path, sms: str, *, extra_routes: str = "") -> str:
    path = tmp_path / "routes.yml"
    path.write_text(textwrap.dedent("""
        destinations:
          oncall: {rocketchat: {url_env: RC_ONCALL_URL}}
          oncall-sms:
            sms:
        %s
        integrations:
          default:
            routes:
              - severity: critical
                destinations: [oncall, oncall-sms]
              - destination: oncall
        """) % textwrap.indent(textwrap.dedent(sms).strip(), " " * 6) + extra_routes, encoding="utf-8")
    return str(path)


def routed_environment(path: str, **settings: str | None) -> dict[str, str]:
    environ = {**TWILIO, "ROUTES_FILE": path, "RC_ONCALL_URL": ONCALL_URL, **settings}
    return {name: value for name, value in environ.items() if value is not None}


def routed_error(path: str, environ: dict[str, str]) -> str:
    """The error about the routes file at path, after the "ROUTES_FILE <path>: " that starts it."""
    message = config_error(environ)
    assert message.startswith(f"ROUTES_FILE {path}: "), message
    return message[len(f"ROUTES_FILE {path}: "):]


def test_a_routes_files_sms_destination_with_tiers(tmp_path):
    path = routes_file(tmp_path, f"""
        recipients: ["{ALICE}", "{BOB}"]
        delay_seconds: 300
        tiers:
          - {{after_seconds: 900, recipients: ["{CAROL}"]}}
        hours: "07:00-23:00"
        timezone: Europe/Berlin
    """)
    config, table = load(routed_environment(path, SMS_MAX_PER_DAY="50"))

    destination = table.sms_destinations["oncall-sms"]
    assert [(tier.after_seconds, tier.numbers()) for tier in destination.tiers] == [
        (300, (ALICE, BOB)), (900, (CAROL,))]
    assert str(destination.hours) == "07:00-23:00 Europe/Berlin"
    assert config.sms_max_per_day == 50  # the relay's ceiling stays in the environment
    assert "oncall-sms" not in table.destinations  # not a Rocket.Chat destination


@pytest.mark.parametrize("variable", ["SMS_RECIPIENTS", "SMS_DELAY_SECONDS", "SMS_SEVERITIES", "SMS_HOURS",
                                      "SMS_TIMEZONE", "SMS_MAX_PER_HOUR", "SMS_SEND_RESOLVED"])
def test_sms_settings_in_the_environment_beside_a_routes_file_are_a_conflict_naming_the_fix(tmp_path, variable):
    path = routes_file(tmp_path, f'recipients: ["{ALICE}"]')
    value = {"SMS_RECIPIENTS": BOB, "SMS_SEVERITIES": "critical", "SMS_HOURS": "08:00-18:00",
             "SMS_TIMEZONE": "UTC", "SMS_SEND_RESOLVED": "true"}.get(variable, "5")
    message = routed_error(path, routed_environment(path, **{variable: value}))

    assert variable in message
    key = variable[len("SMS_"):].lower()
    assert f"{key}:" in message and "sms:" in message  # the fix: where it goes instead
    assert_shows_no_number(message, BOB)


def test_sms_recipients_file_in_the_environment_beside_a_routes_file_is_a_conflict(tmp_path):
    numbers = tmp_path / "numbers"
    numbers.write_text(BOB + "\n", encoding="utf-8")
    path = routes_file(tmp_path, f'recipients: ["{ALICE}"]')
    message = routed_error(path, routed_environment(path, SMS_RECIPIENTS_FILE=str(numbers)))
    assert "SMS_RECIPIENTS_FILE" in message
    assert_shows_no_number(message, BOB)


@pytest.mark.parametrize(("sms", "where", "says"), [
    (f'recipients: ["{ALICE}"]\nrecipient: ["{BOB}"]', "destinations.oncall-sms.sms", "recipient"),
    (f'recipients: ["{ALICE}"]\ndelay_seconds: 600\ntiers: [{{after_seconds: 300, recipients: ["{BOB}"]}}]',
     "destinations.oncall-sms.sms.tiers", "after"),
    (f'recipients: ["{ALICE}"]\ntiers: [{{after_seconds: 900, recipients: ["{BOB}"]}}, '
     f'{{after_seconds: 600, recipients: ["{CAROL}"]}}]', "destinations.oncall-sms.sms.tiers", "after"),
    (f'recipients: ["{ALICE}"]\nhours: "8-18"', "destinations.oncall-sms.sms.hours", "08:00-18:00"),
    (f'recipients: ["{ALICE}"]\nhours: "08:00-25:00"', "destinations.oncall-sms.sms.hours", "25:00"),
    (f'recipients: ["{ALICE}"]\nhours: "08:00-18:00"\ntimezone: Europe/Atlantis',
     "destinations.oncall-sms.sms.timezone", "Europe/Atlantis"),
    (f'recipients: ["{ALICE}"]\ntimezone: Mars/Olympus', "destinations.oncall-sms.sms.timezone", "Mars/Olympus"),
    (f'recipients: ["{ALICE}", "555-0100-42"]', "destinations.oncall-sms.sms.recipients", "…042"),
    (f'recipients: ["{ALICE}"]\ntiers: [{{after_seconds: 900, recipient: ["{BOB}"]}}]',
     "destinations.oncall-sms.sms.tiers[0]", "recipient"),
    ('delay_seconds: 60', "destinations.oncall-sms.sms.recipients", "needed"),
    (f'recipients: ["{ALICE}"]\nseverities: [critcal]', "destinations.oncall-sms.sms.severities", "critcal"),
], ids=["unknown key", "tier before the delay", "tiers out of order", "hours unreadable", "hours past midnight",
        "unknown timezone with hours", "unknown timezone", "bad recipient", "unknown tier key", "no recipients",
        "unknown severity"])
def test_a_bad_sms_destination_names_its_place_in_the_routes_file(tmp_path, sms, where, says):
    path = routes_file(tmp_path, sms)
    message = routed_error(path, routed_environment(path))

    assert where in message and says in message
    assert_shows_no_number(message, ALICE, BOB, CAROL, "555010042")
    assert "555-0100-42" not in message


def test_a_routes_file_whose_sms_destination_has_no_twilio_is_refused(tmp_path):
    path = routes_file(tmp_path, f'recipients: ["{ALICE}"]')
    message = routed_error(path, routed_environment(path, TWILIO_ACCOUNT_SID=None, TWILIO_AUTH_TOKEN=None,
                                                    TWILIO_FROM_NUMBER=None))
    assert "destinations.oncall-sms" in message and "TWILIO_ACCOUNT_SID" in message


def test_unquoted_numbers_in_a_routes_file_are_refused_with_the_fix(tmp_path):
    # YAML reads an unquoted +15551230001 as the integer 15551230001: the plus is gone before the relay sees it.
    path = routes_file(tmp_path, f"recipients: [{ALICE}]")
    message = routed_error(path, routed_environment(path))
    assert "destinations.oncall-sms.sms.recipients" in message
    assert "quote" in message.lower()
    assert_shows_no_number(message, ALICE)


def test_a_number_typed_as_a_key_of_an_sms_destination_is_not_shown_in_full(tmp_path):
    # A YAML slip: {+15551230002} is a mapping whose key is the number.
    path = routes_file(tmp_path, f'recipients: ["{ALICE}"]\n{BOB}: yes')
    message = routed_error(path, routed_environment(path))
    assert "destinations.oncall-sms.sms" in message
    assert_shows_no_number(message, BOB)


# -- the recipients file --

def write_atomically(path, text: str) -> None:
    """As an on-call rotation tool replaces a file: write aside, then rename over it."""
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def test_a_recipients_file_is_re_read_when_it_changes(tmp_path):
    numbers = tmp_path / "oncall-numbers"
    numbers.write_text(f"# this week\n{ALICE}\n", encoding="utf-8")
    path = routes_file(tmp_path, f"recipients_file: {numbers}")
    _config, table = load(routed_environment(path))
    [tier] = table.sms_destinations["oncall-sms"].tiers
    assert tier.numbers() == (ALICE,)

    write_atomically(numbers, f"# next week\n{BOB}, {CAROL}\n")
    assert tier.numbers() == (BOB, CAROL)

    numbers.write_text(f"{ALICE}\n", encoding="utf-8")  # rewritten in place
    assert tier.numbers() == (ALICE,)


def test_a_broken_recipients_file_keeps_the_last_good_list_with_one_error(tmp_path, caplog):
    numbers = tmp_path / "oncall-numbers"
    numbers.write_text(f"{ALICE}\n{BOB}\n", encoding="utf-8")
    path = routes_file(tmp_path, f"recipients_file: {numbers}")
    _config, table = load(routed_environment(path))
    [tier] = table.sms_destinations["oncall-sms"].tiers
    caplog.set_level(logging.INFO)

    write_atomically(numbers, f"{ALICE}\n555 987 6543 (the new guy)\n")
    assert tier.numbers() == (ALICE, BOB)
    assert tier.numbers() == (ALICE, BOB)  # asked again (every alert asks): still one ERROR
    numbers.unlink()
    assert tier.numbers() == (ALICE, BOB)

    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1, [record.getMessage() for record in errors]
    assert str(numbers) in errors[0].getMessage() and "2 recipient" in errors[0].getMessage()
    assert_shows_no_number(errors[0].getMessage(), ALICE, BOB, "5559876543")

    write_atomically(numbers, f"{CAROL}\n")
    assert tier.numbers() == (CAROL,)  # mended: read again


def test_a_recipients_file_that_cannot_be_used_at_start_is_a_configuration_error(tmp_path):
    numbers = tmp_path / "oncall-numbers"
    numbers.write_text("# nobody this week\n", encoding="utf-8")
    path = routes_file(tmp_path, f"recipients_file: {numbers}")
    assert "names no recipient" in routed_error(path, routed_environment(path))
    path = routes_file(tmp_path, f"recipients_file: {tmp_path / 'missing'}")
    assert "cannot read" in routed_error(path, routed_environment(path))


# -- the command line --

def cli_environ(**settings: str | None) -> dict[str, str]:
    hooks = {f"ROCKETCHAT_WEBHOOK_{name}": f"http://127.0.0.1:9/hooks/{name.lower()}-id/{name.lower()}-token"
             for name in ("CRITICAL", "WARNING", "INFO")}
    return relay_environ({**hooks, **TWILIO, **settings})


def run_cli(tmp_path, *arguments: str, environ: dict[str, str], name: str = "cli"):
    return run_to_exit((*DEV_SERVER_COMMAND, *arguments), env=environ, cwd=REPO, output_dir=tmp_path, name=name,
                       timeout_seconds=EXIT_TIMEOUT_SECONDS)


def test_check_config_lists_the_sms_destination_with_masked_numbers_and_no_secret(tmp_path):
    finished = run_cli(tmp_path, "--check-config",
                       environ=cli_environ(SMS_RECIPIENTS=f"{ALICE},{BOB}", SMS_DELAY_SECONDS="300",
                                           PUBLIC_URL="https://relay.example.com"))

    assert finished.returncode == 0, finished.stderr
    output = finished.stdout + finished.stderr
    sms_lines = [line for line in finished.stdout.splitlines() if line.strip().startswith("SMS destination")]
    assert len(sms_lines) == 1 and masked(ALICE) in sms_lines[0] and masked(BOB) in sms_lines[0]
    assert "after 300 s" in sms_lines[0]
    assert "status callbacks to https://relay.example.com/twilio/status" in output
    assert_shows_no_number(output, ALICE, BOB, FROM_NUMBER)
    assert AUTH_TOKEN not in output and ACCOUNT_SID not in output


def test_check_config_of_a_routes_file_lists_its_sms_destinations_masked(tmp_path):
    path = routes_file(tmp_path, f"""
        recipients: ["{ALICE}"]
        tiers: [{{after_seconds: 900, recipients: ["{CAROL}"]}}]
    """)
    finished = run_cli(tmp_path, "--check-config", environ=relay_environ({**routed_environment(path)}))

    assert finished.returncode == 0, finished.stderr
    [line] = [line for line in finished.stdout.splitlines() if "SMS destination oncall-sms" in line]
    assert masked(ALICE) in line and masked(CAROL) in line and "after 900 s" in line
    assert_shows_no_number(finished.stdout + finished.stderr, ALICE, CAROL, FROM_NUMBER)
    assert AUTH_TOKEN not in finished.stdout + finished.stderr


def test_check_config_refuses_a_bad_recipient_with_exit_2_and_one_masked_line(tmp_path):
    bad = "+1-555-987-6543"
    finished = run_cli(tmp_path, "--check-config", environ=cli_environ(SMS_RECIPIENTS=f"{ALICE},{bad}"))

    assert finished.returncode == CONFIG_ERROR_STATUS
    assert "Traceback" not in finished.stderr
    [line] = [line for line in finished.stderr.splitlines() if line.strip()]
    assert line.startswith("rocketchat-webhook: configuration error: ") and "SMS_RECIPIENTS" in line
    assert masked(bad) in line
    assert_shows_no_number(finished.stdout + finished.stderr, ALICE, "+15559876543")


@pytest.fixture
def mock():
    with MockRocketChat(port=0, rate_limit_count=0) as server:
        yield server


def mock_twilio_environ(mock: MockRocketChat, **settings: str | None) -> dict[str, str]:
    return cli_environ(**{"TWILIO_ACCOUNT_SID": mock.twilio.account_sid, "TWILIO_AUTH_TOKEN": mock.twilio.auth_token,
                          "TWILIO_API_URL": mock.twilio_api_url, **settings})


def printed_answer(finished) -> dict:
    lines = [line for line in finished.stdout.splitlines() if line.strip()]
    assert lines, finished.stderr
    return json.loads(lines[-1])


def test_send_test_sms_sends_one_and_prints_twilios_answer_masked(tmp_path, mock):
    finished = run_cli(tmp_path, "--send-test-sms", ALICE, environ=mock_twilio_environ(mock))

    assert finished.returncode == 0, finished.stderr
    answer = printed_answer(finished)
    [message] = mock.twilio.messages()
    assert (answer["to"], answer["outcome"], answer["sid"]) == (masked(ALICE), "sent", message["sid"])
    assert message["to"] == ALICE and message["from"] == FROM_NUMBER and "test SMS" in message["body"]
    assert_shows_no_number(finished.stdout + finished.stderr, ALICE, FROM_NUMBER)
    assert mock.twilio.auth_token not in finished.stdout + finished.stderr


def test_send_test_sms_refused_by_twilio_exits_1_with_the_code_and_the_number_masked(tmp_path, mock):
    mock.twilio.set_fault(status=400, code=21211, count=1,
                          message=f"The 'To' number {ALICE} is not a valid phone number.")
    finished = run_cli(tmp_path, "--send-test-sms", ALICE, environ=mock_twilio_environ(mock))

    assert finished.returncode == INPUT_ERROR_STATUS
    answer = printed_answer(finished)
    assert (answer["to"], answer["code"], answer["outcome"]) == (masked(ALICE), 21211, "permanent")
    assert "sid" not in answer
    assert_shows_no_number(finished.stdout + finished.stderr, ALICE)
    assert mock.twilio.messages() == []


def test_send_test_sms_with_a_wrong_token_exits_1_saying_so_without_the_token(tmp_path, mock):
    wrong = "WrongTwilioToken-0000aa"
    finished = run_cli(tmp_path, "--send-test-sms", ALICE, environ=mock_twilio_environ(mock, TWILIO_AUTH_TOKEN=wrong))

    assert finished.returncode == INPUT_ERROR_STATUS
    answer = printed_answer(finished)
    assert (answer["outcome"], answer["code"]) == ("auth_failed", 20003)
    assert wrong not in finished.stdout + finished.stderr


@pytest.mark.parametrize("bad", ["5551230001", "+1 555 123 0001x", "call me"])
def test_send_test_sms_to_a_malformed_number_exits_1_and_sends_nothing(tmp_path, mock, bad):
    finished = run_cli(tmp_path, "--send-test-sms", bad, environ=mock_twilio_environ(mock))

    assert finished.returncode == INPUT_ERROR_STATUS
    assert "E.164" in finished.stderr and "Traceback" not in finished.stderr
    assert_shows_no_number(finished.stdout + finished.stderr, "+15551230001")
    assert mock.twilio.requests == []


def test_send_test_sms_without_twilio_is_a_configuration_error(tmp_path):
    finished = run_cli(tmp_path, "--send-test-sms", ALICE,
                       environ=cli_environ(TWILIO_ACCOUNT_SID=None, TWILIO_AUTH_TOKEN=None, TWILIO_FROM_NUMBER=None))

    assert finished.returncode == CONFIG_ERROR_STATUS
    assert "configuration error" in finished.stderr and "TWILIO_ACCOUNT_SID" in finished.stderr
    assert_shows_no_number(finished.stdout + finished.stderr, ALICE)
