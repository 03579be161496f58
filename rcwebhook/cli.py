"""Command-line checks that need no network: --check-config and --render."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from .config import ConfigError, describe_config, load_config, load_dotenv_from_working_directory
from .dispatcher import compose
from .hookqueue import Batch
from .model import PayloadError
from .payload import parse_notification
from .routing import format_options, route_alerts

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
    return parser.parse_args(argv)


def load_environment_config():
    load_dotenv_from_working_directory()
    return load_config(os.environ)


def check_config() -> int:
    config = load_environment_config()
    print("configuration OK")
    for line in describe_config(config):
        print(f"  {line}")
    print(f"  webhook token: {'set' if config.webhook_token else 'NOT SET (POST /webhook is open)'}")
    print(f"  metrics token: {'set' if config.metrics_token else 'not set (/metrics is open)'}")
    print(f"  pacing: {config.rate_limit} per hook; de-duplication window: {config.dedup_window_seconds:g}s")
    print(f"  delivery deadline: {config.delivery_deadline_seconds:g}s; max body: {config.max_body_bytes} bytes")
    print(f"  listen: {config.host}:{config.port}; log level {config.log_level}, format {config.log_format}")
    return 0


def render(path: str) -> int:
    config = load_environment_config()
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
    options = format_options(config)
    rendered = []
    for destination, alerts in route_alerts(notification, config):
        batch = Batch(jobs=(), parts=[(notification, list(alerts))])
        rendered.append({"destination": destination.name, "alerts": len(alerts), "message": compose(batch, options)})
    print(json.dumps(rendered, ensure_ascii=False, indent=2))
    return 0


def run_command(argv: Sequence[str] | None = None) -> int | None:
    """Run --check-config or --render and return the exit status; None when the server should start."""
    arguments = parse_arguments(argv)
    try:
        if arguments.check_config:
            return check_config()
        if arguments.render:
            return render(arguments.render)
    except ConfigError as error:
        print(f"rocketchat-webhook: configuration error: {error}", file=sys.stderr)
        return CONFIG_ERROR_EXIT_STATUS
    return None
