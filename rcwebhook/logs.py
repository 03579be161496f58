"""Logging set-up: one handler, every line redacted, libraries kept from logging hook URLs."""

from __future__ import annotations

import logging
import logging.handlers
import sys

from .config import Config
from .redact import Redactor, RedactingFormatter

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
HANDLER_NAME = "rcwebhook"


def quiet_library_loggers() -> None:
    """urllib3 logs each request's path, hook token included, at DEBUG: keep it at WARNING whatever LOG_LEVEL says."""
    logging.getLogger("urllib3").setLevel(logging.WARNING)


def configure_logging(config: Config, redactor: Redactor) -> None:
    """Send every log record through one redacting handler on the root logger, to LOG_FILE or standard error."""
    if config.log_file:
        # WatchedFileHandler re-opens the file when logrotate has moved it away.
        handler: logging.Handler = logging.handlers.WatchedFileHandler(config.log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(RedactingFormatter(LOG_FORMAT, redactor))
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == HANDLER_NAME:
            root.removeHandler(existing)
            existing.close()
    root.addHandler(handler)
    root.setLevel(config.log_level)
    quiet_library_loggers()
