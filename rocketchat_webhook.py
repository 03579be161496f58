"""rocketchat-webhook: Prometheus Alertmanager → Rocket.Chat, by severity.

Run `python rocketchat_webhook.py` (development server on HOST:PORT) or
`gunicorn -c gunicorn.conf.py rocketchat_webhook:app` (production).
"""

from __future__ import annotations

import sys

from rcwebhook.config import ConfigError

CONFIG_ERROR_EXIT_STATUS = 2  # systemd's RestartPreventExitStatus=2: a configuration error is not retried


def build_app_or_exit():
    """The app from .env and the environment; a bad setting ends the process with one readable line."""
    from rcwebhook.app import create_app

    try:
        return create_app()
    except ConfigError as error:
        print(f"rocketchat-webhook: configuration error: {error}", file=sys.stderr)
        raise SystemExit(CONFIG_ERROR_EXIT_STATUS) from None


def main() -> int:
    """Serve with the development server on HOST:PORT."""
    application = build_app_or_exit()
    config = application.extensions["rcwebhook.config"]
    # debug stays off whatever LOG_LEVEL says: the Werkzeug debugger would run code for anyone who reaches it.
    application.run(host=config.host, port=config.port, debug=False, use_reloader=False, threaded=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

app = build_app_or_exit()
