"""The one list of settings: what config.py reads, .env.example, the README's table and --check-config agree."""

import re

from rcwebhook.sms.destination import ENVIRONMENT_KEYS as SMS_ENVIRONMENT_KEYS, environment_variable
from rcwebhook.settings import SETTING_NAMES, SETTINGS, describe_settings, env_example, markdown_table
from tests.conftest import REPO


def names_read_by_config() -> set[str]:
    source = (REPO / "rcwebhook" / "config.py").read_text()
    names = set(re.findall(r'environ\.get\("([A-Z_]+)"', source))
    names |= set(re.findall(r'(?:_read_setting|_number|_boolean)\(\s*environ, "([A-Z_]+)"', source))
    names |= set(re.findall(r'"((?:ROCKETCHAT_WEBHOOK|ROCKETCHAT_MENTION|TWILIO)_[A-Z_]+)"', source))
    names |= set(re.findall(r'_http_url\(environ, "([A-Z_]+)"', source))
    # The environment's SMS destination is read by rcwebhook/sms/destination.py, key by key.
    names |= {environment_variable(key) for key in SMS_ENVIRONMENT_KEYS}
    names.discard("DEBUG")  # the seed's older switch, explained under LOG_LEVEL
    # NAME_FILE is the file form of a setting marked file (WEBHOOK_TOKEN_FILE is also watched for rotation).
    file_forms = {f"{setting.name}_FILE" for setting in SETTINGS if setting.file}
    return names - file_forms


def test_every_setting_config_reads_is_in_the_one_list_and_every_listed_one_is_read():
    read = names_read_by_config()
    assert {"ROCKETCHAT_WEBHOOK_CRITICAL", "WEBHOOK_TOKEN", "ROUTES_FILE", "MAX_TRACKED_GROUPS"} <= read
    assert sorted(read - set(SETTING_NAMES)) == []
    relay_settings = {setting.name for setting in SETTINGS if setting.read_by == "the relay"}
    assert sorted(relay_settings - read) == []


def test_env_example_is_generated_from_the_list():
    assert (REPO / ".env.example").read_text() == env_example(), "run: python -m rcwebhook.settings env-example"


def test_the_readme_table_is_generated_from_the_list():
    assert markdown_table() in (REPO / "README.md").read_text(), "run: python -m rcwebhook.settings readme"


def test_check_config_lists_every_setting_and_shows_no_secret():
    environ = {"WEBHOOK_TOKEN": "very-secret-token", "ROCKETCHAT_WEBHOOK_INFO": "http://rc/hooks/id/hook-secret",
               "PORT": "9000"}
    lines = describe_settings(environ)
    assert [line.split(" = ")[0] for line in lines] == list(SETTING_NAMES)
    text = "\n".join(lines)
    assert "very-secret-token" not in text and "hook-secret" not in text
    assert "WEBHOOK_TOKEN = set" in text and "PORT = 9000" in text and "LOG_LEVEL = INFO (default)" in text


def test_the_defaults_the_list_shows_are_the_ones_config_applies():
    from rcwebhook.config import load_config

    config = load_config({"ROCKETCHAT_WEBHOOK_DEFAULT": "http://rc/hooks/id/token"})
    attributes = {"ROCKETCHAT_RATE_LIMIT": "rate_limit"}
    checked = 0
    for setting in SETTINGS:
        attribute = attributes.get(setting.name, setting.name.lower())
        # A default said in words ("standard error") describes an absence, STATE_URL's a rule (test_journal.py).
        if setting.default and hasattr(config, attribute) and setting.name != "STATE_URL" and \
                not setting.default_is_description:
            value = getattr(config, attribute)
            shown = f"{value:g}" if isinstance(value, float) else str(value).lower() if isinstance(value, bool) \
                else str(value)
            assert shown == setting.default, setting.name
            checked += 1
    assert checked >= 12


def test_the_sms_defaults_the_list_shows_are_the_ones_an_sms_destination_gets():
    from rcwebhook.config import load_config

    config = load_config({"ROCKETCHAT_WEBHOOK_DEFAULT": "http://rc/hooks/id/token", "SMS_RECIPIENTS": "+15551230001",
                          "TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": "token",
                          "TWILIO_FROM_NUMBER": "+15017122661"})
    destination = config.sms_destination
    defaults = {setting.name: setting.default for setting in SETTINGS}
    assert ",".join(destination.severities) == defaults["SMS_SEVERITIES"]
    assert f"{destination.delay_seconds:g}" == defaults["SMS_DELAY_SECONDS"]
    assert str(destination.max_per_hour) == defaults["SMS_MAX_PER_HOUR"]
    assert str(destination.max_segments) == defaults["SMS_MAX_SEGMENTS"]
    assert f"{destination.give_up_seconds:g}" == defaults["SMS_GIVE_UP_SECONDS"]
    assert str(destination.send_resolved).lower() == defaults["SMS_SEND_RESOLVED"]
    assert destination.hours is None and defaults["SMS_HOURS"] == ""
    assert config.twilio.api_url == defaults["TWILIO_API_URL"]
