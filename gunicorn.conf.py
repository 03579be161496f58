"""gunicorn settings for rocketchat-webhook: one process with threads (`gunicorn -c gunicorn.conf.py rocketchat_webhook:app`)."""

import os
import sys

from dotenv import load_dotenv

load_dotenv(override=False)  # the real environment wins over .env, as in the app

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8093')}"
workers = 1
worker_class = "gthread"
# Each waiting Alertmanager request holds a thread for up to DELIVERY_DEADLINE_SECONDS.
threads = 32
# Longer than the delivery deadline (8 s by default) so a request in flight is answered on a graceful stop.
graceful_timeout = 20
timeout = 30


def on_starting(server):
    """Check the configuration once in the master, so a bad setting exits 2 instead of respawning workers."""
    from rcwebhook.config import ConfigError, load_config

    try:
        load_config(os.environ)
    except ConfigError as error:
        print(f"rocketchat-webhook: configuration error: {error}", file=sys.stderr)
        sys.exit(2)
