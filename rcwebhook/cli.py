"""Command-line checks: --check-config, --render and --routes-test need no network; --send-test-sms calls Twilio."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Sequence

from .channels.rocketchat import RocketChatChannel, format_options
from .config import ConfigError, load_config, load_dotenv_from_working_directory
from .hookqueue import Batch, Job, dedup_key
from .journal import open_state
from .model import PayloadError
from .payload import parse_notification
from .routes import DEFAULT_INTEGRATION, destinations_for
from .routes_file import load_route_table
from .settings import describe_settings

CONFIG_ERROR_EXIT_STATUS = 2  # systemd's RestartPreventExitStatus=2: a configuration error is not retried
INPUT_ERROR_EXIT_STATUS = 1


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rocketchat_webhook.py",
        description="Relay Prometheus Alertmanager notifications to Rocket.Chat. Without options: serve on HOST:PORT "
        "with the development server (use gunicorn -c gunicorn.conf.py rocketchat_webhook:app in production).",
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--check-config", action="store_true",
                        help="validate the environment (and .env), print each destination with its token redacted")
    action.add_argument("--render", metavar="BODY.json",
                        help="print the Rocket.Chat messages a webhook body would become, and where; no network")
    action.add_argument("--routes-test", action="store_true",
                        help="print the destinations an alert with the labels given (LABEL=VALUE ...) reaches, like "
                        "amtool config routes test; no network")
    action.add_argument("--send-test-sms", metavar="NUMBER",
                        help="send one test SMS to NUMBER (E.164) through Twilio with the configured credentials and "
                        "print Twilio's answer (the number shown by its last three digits)")
    parser.add_argument("--integration", default=None,
                        help="the integration whose routes --render and --routes-test use (default: default)")
    parser.add_argument("labels", nargs="*", metavar="LABEL=VALUE", help="the alert's labels, for --routes-test")
    arguments = parser.parse_intermixed_args(argv)  # label=value before or after --integration
    if arguments.labels and not arguments.routes_test:
        parser.error("LABEL=VALUE arguments go with --routes-test")
    if arguments.integration is not None and not (arguments.render or arguments.routes_test):
        parser.error("--integration goes with --render or --routes-test")
    arguments.integration = arguments.integration or DEFAULT_INTEGRATION
    return arguments


def load_environment_config():
    """The config and the route table, from .env, the environment and ROUTES_FILE."""
    load_dotenv_from_working_directory()
    config = load_config(os.environ)
    return config, load_route_table(config, os.environ)


def _integration(table, name: str):
    if name not in table.integrations:
        raise ConfigError(f"no integration named {name!r} (known: {', '.join(table.integrations)})")
    return table.integrations[name]


def _can_create_in(directory: str) -> bool:
    """Whether a file can be made there now (a probe file, removed at once: os.access says yes to root on /proc)."""
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".rocketchat-webhook-check-"):
            return True
    except OSError:
        return False


def describe_state(config) -> str:
    """Where state will live: a STATE_URL someone set must open now (ConfigError otherwise, as at start); the
    default is only looked at, not created, and a fallback to memory:// is said."""
    if not config.state_url_is_default:
        open_state(config)[0].close()
        return f"state: {config.state_url}"
    path = config.state_url.removeprefix("sqlite:///")
    directory = os.path.dirname(os.path.abspath(path))
    usable = os.path.isfile(path) and os.access(path, os.W_OK) or (
        not os.path.exists(path) and _can_create_in(directory))
    if usable:
        return f"state: {config.state_url} (the default)"
    return (f"state: memory:// (lost at restart): the default {config.state_url} cannot be used here; set STATE_URL "
            "or STATE_DIRECTORY to a writable place")


def describe_redis(config) -> tuple[str, bool]:
    """Whether the Redis of STATE_URL answers now (its password never shown)."""
    from .config import redacted_state_url
    from .store import StoreError, open_store

    shown = redacted_state_url(config.state_url)
    try:
        store = open_store(config.state_url, prefix=config.state_prefix, timeout_seconds=config.state_timeout_seconds)
        try:
            store.counts()
        finally:
            store.close()
    except StoreError as error:
        return (f"state: {shown} does NOT answer ({error}): the relay would start, each process on its own memory, "
                "until it does"), False
    return f"state: {shown} answers (prefix {config.state_prefix!r}, shared by every process using it)", True


def check_config() -> int:
    config, table = load_environment_config()
    state, redis_answers = describe_redis(config) if config.state_is_shared else (describe_state(config), True)
    print("configuration OK" if redis_answers else "configuration OK, but Redis does not answer")
    for line in table.describe():
        print(f"  {line}")
    print("settings:")
    for line in describe_settings(os.environ):
        print(f"  {line}")
    print(f"  metrics token: {'set' if config.metrics_token else 'not set (/metrics is open)'}")
    print(f"  pacing: {config.rate_limit} per hook; de-duplication window: {config.dedup_window_seconds:g}s")
    print(f"  delivery deadline: {config.delivery_deadline_seconds:g}s; max body: {config.max_body_bytes} bytes")
    print(f"  listen: {config.host}:{config.port}; log level {config.log_level}, format {config.log_format}")
    print(f"  {state}")
    print(f"  {describe_sms(config, table)}")
    return 0 if redis_answers else INPUT_ERROR_EXIT_STATUS  # 1: not a configuration error (2), Redis is down


def describe_sms(config, table) -> str:
    """Whether SMS escalation is on, through which Twilio, with callbacks or not; never a number or a secret."""
    if config.twilio is None:
        return "SMS: off (no TWILIO_ACCOUNT_SID)"
    sender = "a Messaging Service" if not config.twilio.from_number else "TWILIO_FROM_NUMBER"
    callbacks = (f"status callbacks to {config.sms_status_callback_url}" if config.sms_status_callback_url else
                 "no status callbacks (PUBLIC_URL and TWILIO_AUTH_TOKEN needed)")
    where = f"{len(table.sms_destinations)} SMS destination(s)" if table.sms_destinations else "no SMS destination"
    return (f"SMS: Twilio at {config.twilio.api_url} from {sender}; {where}; at most {config.sms_max_per_day} per "
            f"UTC day; {callbacks}")


def routes_test(label_texts: Sequence[str], integration_name: str) -> int:
    config, table = load_environment_config()
    integration = _integration(table, integration_name)
    labels = {}
    for text in label_texts:
        name, separator, value = text.partition("=")
        if not separator or not name:
            print(f"rocketchat-webhook: {text!r} is not label=value", file=sys.stderr)
            return INPUT_ERROR_EXIT_STATUS
        labels[name] = value.strip('"')
    print(",".join(destinations_for(integration, labels)))
    return 0


def render(path: str, integration_name: str = DEFAULT_INTEGRATION) -> int:
    config, table = load_environment_config()
    _integration(table, integration_name)
    try:
        with open(path, "rb") as handle:
            document = json.loads(handle.read().decode("utf-8-sig"))
    except (OSError, ValueError) as error:
        print(f"rocketchat-webhook: cannot read {path}: {error}", file=sys.stderr)
        return INPUT_ERROR_EXIT_STATUS
    try:
        notification = parse_notification(document)
    except PayloadError as error:
        problems = "; ".join(f"{'.'.join(map(str, item.loc))}: {item.msg}" for item in error.problems)
        print(f"rocketchat-webhook: {error.message}" + (f" ({problems})" if problems else ""), file=sys.stderr)
        return INPUT_ERROR_EXIT_STATUS
    channel = RocketChatChannel(client=None, default_options=format_options(config))
    rendered = []
    for part in table.route(integration_name, notification):
        job = Job(part.hook, notification, part.alerts, dedup_key(notification, part.alerts), 0, looks=part.looks)
        batch = Batch(jobs=(job,), parts=[(notification, list(part.alerts))])
        rendered.append({"destination": part.hook.name, "alerts": len(part.alerts), "message": channel.render(batch)})
    print(json.dumps(rendered, ensure_ascii=False, indent=2))
    return 0


def send_test_sms(number: str) -> int:
    """One SMS now, outside the caps and the Store, so a user can check Twilio before an incident."""
    from .channels.twilio import TwilioClient, masked_number
    from .redact import Redactor
    from .sms.destination import E164_PATTERN
    from .sms.render import test_body

    config, _table = load_environment_config()
    if config.twilio is None:
        raise ConfigError("Twilio is not configured: set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN (or an API key) and "
                          "TWILIO_FROM_NUMBER (or TWILIO_MESSAGING_SERVICE_SID)")
    number = number.strip().replace(" ", "")
    if not E164_PATTERN.match(number):
        print(f"rocketchat-webhook: {masked_number(number)} is not an E.164 number such as +15551234567",
              file=sys.stderr)
        return INPUT_ERROR_EXIT_STATUS
    client = TwilioClient(config.twilio, redactor=Redactor(config.secrets))
    result = client.send(number, test_body(), status_callback=config.sms_status_callback_url)
    answer = {"to": masked_number(number), "outcome": result.outcome.value, "http_status": result.http_status,
              "code": result.code, "sid": result.sid, "status": result.twilio_status, "segments": result.segments,
              "reason": result.reason}
    print(json.dumps({key: value for key, value in answer.items() if value not in (None, "")}, ensure_ascii=False))
    return 0 if result.outcome.value == "sent" else INPUT_ERROR_EXIT_STATUS


def run_command(argv: Sequence[str] | None = None) -> int | None:
    """Run --check-config, --render, --routes-test or --send-test-sms and return the exit status; None when the
    server should start."""
    arguments = parse_arguments(argv)
    try:
        if arguments.check_config:
            return check_config()
        if arguments.render:
            return render(arguments.render, arguments.integration)
        if arguments.routes_test:
            return routes_test(arguments.labels, arguments.integration)
        if arguments.send_test_sms:
            return send_test_sms(arguments.send_test_sms)
    except ConfigError as error:
        print(f"rocketchat-webhook: configuration error: {error}", file=sys.stderr)
        return CONFIG_ERROR_EXIT_STATUS
    return None
