"""rocketchat-webhook: Prometheus Alertmanager → Rocket.Chat, by severity.

Run `python rocketchat_webhook.py` (development server on HOST:PORT) or
`gunicorn -c gunicorn.conf.py rocketchat_webhook:app` (production).
"""

from __future__ import annotations

import signal
import sys

from rcwebhook.cli import CONFIG_ERROR_EXIT_STATUS
from rcwebhook.config import ConfigError


def build_app_or_exit():
    """The app from .env and the environment; a bad setting ends the process with one readable line."""
    from rcwebhook.app import create_app

    try:
        return create_app()
    except ConfigError as error:
        print(f"rocketchat-webhook: configuration error: {error}", file=sys.stderr)
        raise SystemExit(CONFIG_ERROR_EXIT_STATUS) from None


def main(argv=None) -> int:
    """--check-config, --render BODY.json, or serve with the development server on HOST:PORT."""
    from rcwebhook.app import shutdown
    from rcwebhook.cli import run_command

    status = run_command(argv)
    if status is not None:
        return status
    application = build_app_or_exit()
    application.extensions["rcwebhook.reloader"].install_sighup_handler()  # kill -HUP re-reads ROUTES_FILE
    config = application.extensions["rcwebhook.config"]
    # SIGTERM (make run's stop, kill) ends the server as Ctrl-C does, so the journal's last events are written.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        # debug stays off whatever LOG_LEVEL says: the Werkzeug debugger would run code for anyone who reaches it.
        application.run(host=config.host, port=config.port, debug=False, use_reloader=False, threaded=True)
    except KeyboardInterrupt:
        pass
    finally:
        shutdown(application, drain_seconds=config.delivery_deadline_seconds)
    return 0


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


_application = None


def __getattr__(name: str):
    """`rocketchat_webhook:app` for gunicorn, built on first access: importing this module does no work."""
    global _application
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _application is None:
        _application = build_app_or_exit()
    return _application


if __name__ == "__main__":
    sys.exit(main())
