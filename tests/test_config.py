"""Configuration: every setting read, validated once, with errors that name the variable and hide secrets."""

import pytest

from rcwebhook.config import ConfigError, describe_config, load_config

CRITICAL_URL = "https://chat.example.com/hooks/crit-integration/crit-secret-token"
WARNING_URL = "https://chat.example.com/hooks/warn-integration/warn-secret-token"
INFO_URL = "https://chat.example.com/hooks/info-integration/info-secret-token"
DEFAULT_URL = "https://chat.example.com/hooks/dflt-integration/dflt-secret-token"
THREE_HOOKS = {
    "ROCKETCHAT_WEBHOOK_CRITICAL": CRITICAL_URL,
    "ROCKETCHAT_WEBHOOK_WARNING": WARNING_URL,
    "ROCKETCHAT_WEBHOOK_INFO": INFO_URL,
}


def test_defaults():
    config = load_config(THREE_HOOKS)
    assert (config.host, config.port) == ("0.0.0.0", 8093)
    assert config.delivery_deadline_seconds == 8
    assert config.max_body_bytes == 5 * 1024 * 1024
    assert config.severity_label == "severity"
    assert config.log_level == "INFO"
    assert config.webhook_token == ""


def test_unknown_severity_goes_to_info_hook_without_default():
    config = load_config(THREE_HOOKS)
    assert config.routes["unknown"].url == INFO_URL
    assert [destination.name for destination in config.destinations] == ["critical", "warning", "info"]


def test_default_hook_takes_unknown_and_missing_severities():
    config = load_config({"ROCKETCHAT_WEBHOOK_CRITICAL": CRITICAL_URL, "ROCKETCHAT_WEBHOOK_DEFAULT": DEFAULT_URL})
    assert config.routes["critical"].url == CRITICAL_URL
    assert config.routes["warning"].url == DEFAULT_URL
    assert config.routes["info"].url == DEFAULT_URL
    assert config.routes["unknown"].url == DEFAULT_URL
    assert config.routes["warning"].name == "warning+info"


def test_default_hook_alone_is_named_default():
    config = load_config({**THREE_HOOKS, "ROCKETCHAT_WEBHOOK_DEFAULT": DEFAULT_URL})
    assert config.routes["unknown"].name == "default"
    assert len(config.destinations) == 4


def test_shared_url_is_one_destination():
    config = load_config({**THREE_HOOKS, "ROCKETCHAT_WEBHOOK_WARNING": CRITICAL_URL})
    assert config.routes["warning"] == config.routes["critical"]
    assert config.routes["critical"].name == "critical+warning"
    assert len(config.destinations) == 2


def test_missing_destination_is_refused_naming_the_variable():
    with pytest.raises(ConfigError, match="ROCKETCHAT_WEBHOOK_INFO"):
        load_config({"ROCKETCHAT_WEBHOOK_CRITICAL": CRITICAL_URL, "ROCKETCHAT_WEBHOOK_WARNING": WARNING_URL})


@pytest.mark.parametrize("bad_url", ["ftp://chat.example.com/hooks/a/secret-abc", "chat.example.com/hooks/a/b", "http:///hooks/a/no-host-secret"])
def test_non_http_url_is_refused_without_echoing_it(bad_url):
    with pytest.raises(ConfigError) as raised:
        load_config({**THREE_HOOKS, "ROCKETCHAT_WEBHOOK_WARNING": bad_url})
    assert "ROCKETCHAT_WEBHOOK_WARNING" in str(raised.value)
    assert bad_url not in str(raised.value)


def test_url_from_file(tmp_path):
    url_file = tmp_path / "critical-url"
    url_file.write_text(CRITICAL_URL + "\n")
    environ = {**THREE_HOOKS, "ROCKETCHAT_WEBHOOK_CRITICAL_FILE": str(url_file)}
    del environ["ROCKETCHAT_WEBHOOK_CRITICAL"]
    assert load_config(environ).routes["critical"].url == CRITICAL_URL


def test_token_from_file_and_both_set_refused(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    assert load_config({**THREE_HOOKS, "WEBHOOK_TOKEN_FILE": str(token_file)}).webhook_token == "s3cret-token"
    with pytest.raises(ConfigError, match="WEBHOOK_TOKEN and WEBHOOK_TOKEN_FILE"):
        load_config({**THREE_HOOKS, "WEBHOOK_TOKEN_FILE": str(token_file), "WEBHOOK_TOKEN": "x"})


def test_unreadable_file_names_the_variable(tmp_path):
    with pytest.raises(ConfigError, match="WEBHOOK_TOKEN_FILE"):
        load_config({**THREE_HOOKS, "WEBHOOK_TOKEN_FILE": str(tmp_path / "missing")})


@pytest.mark.parametrize(
    ("name", "value"),
    [("PORT", "eighty"), ("PORT", "70000"), ("DELIVERY_DEADLINE_SECONDS", "soon"), ("DELIVERY_DEADLINE_SECONDS", "0"),
     ("MAX_BODY_BYTES", "-1"), ("LOG_LEVEL", "LOUD"), ("ROCKETCHAT_AVATAR_URL", "avatar.png")],
)
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        load_config({**THREE_HOOKS, name: value})


def test_seed_debug_switch_means_debug_level_unless_log_level_set():
    assert load_config({**THREE_HOOKS, "DEBUG": "true"}).log_level == "DEBUG"
    assert load_config({**THREE_HOOKS, "DEBUG": "true", "LOG_LEVEL": "warning"}).log_level == "WARNING"


def test_mentions_and_signature():
    config = load_config(
        {**THREE_HOOKS, "ROCKETCHAT_MENTION_CRITICAL": "@here", "ROCKETCHAT_ALIAS": "Alertmanager",
         "ROCKETCHAT_EMOJI": ":fire:", "SEVERITY_LABEL": "priority"}
    )
    assert config.mentions == {"critical": "@here"}
    assert (config.alias, config.emoji, config.severity_label) == ("Alertmanager", ":fire:", "priority")


def test_secrets_cover_urls_tokens_and_webhook_token():
    config = load_config({**THREE_HOOKS, "WEBHOOK_TOKEN": "relay-token-123"})
    for secret in ("crit-secret-token", "warn-secret-token", "info-secret-token", "relay-token-123", CRITICAL_URL):
        assert secret in config.secrets


def test_description_shows_host_never_token():
    lines = describe_config(load_config(THREE_HOOKS))
    assert len(lines) == 3
    assert all("chat.example.com" in line for line in lines)
    assert not any("secret-token" in line or "integration" in line for line in lines)
