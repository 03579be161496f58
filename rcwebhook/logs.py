"""Logging set-up: one handler, every line redacted, a request id on each line, libraries kept from logging URLs."""

from __future__ import annotations

import contextvars
import json
import logging
import logging.handlers
import re
import sys
import threading
import time
import uuid
from typing import Callable

from .config import Config
from .redact import Redactor

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
HANDLER_NAME = "rcwebhook"
NO_REQUEST = "-"
# A caller's X-Request-ID is kept only when it is short and plain, so it cannot forge log lines.
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default=NO_REQUEST)


def new_request_id(header_value: str | None) -> str:
    """The caller's X-Request-ID when it is safe to log, else a fresh one."""
    if header_value and REQUEST_ID_PATTERN.match(header_value):
        return header_value
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every record (NO_REQUEST outside a request, e.g. in post workers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class RedactingFormatter(logging.Formatter):
    """A text formatter whose whole output, traceback included, passes through a Redactor."""

    def __init__(self, redactor: Redactor):
        super().__init__(TEXT_FORMAT)
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line (LOG_FORMAT=json); every string redacted before it is serialised."""

    converter = time.gmtime  # timestamps in UTC, as the "Z" says

    def __init__(self, redactor: Redactor):
        super().__init__()
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", NO_REQUEST),
            "message": self.redactor(record.getMessage()),
        }
        if record.exc_info:
            document["exception"] = self.redactor(self.formatException(record.exc_info))
        return json.dumps(document, ensure_ascii=False)


def quiet_library_loggers() -> None:
    """urllib3 logs request URLs, hook token included, at DEBUG and in WARNINGs (a header it cannot parse): keep it at
    ERROR whatever LOG_LEVEL says; the relay logs every failure itself, redacted."""
    logging.getLogger("urllib3").setLevel(logging.ERROR)


def configure_logging(config: Config, redactor: Redactor) -> None:
    """Send every log record through one redacting handler on the root logger, to LOG_FILE or standard error."""
    if config.log_file:
        # WatchedFileHandler re-opens the file when logrotate has moved it away.
        handler: logging.Handler = logging.handlers.WatchedFileHandler(config.log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.set_name(HANDLER_NAME)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter(redactor) if config.log_format == "json" else RedactingFormatter(redactor))
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == HANDLER_NAME:
            root.removeHandler(existing)
            existing.close()
    root.addHandler(handler)
    root.setLevel(config.log_level)
    quiet_library_loggers()


def install_exception_hooks(on_error: Callable[[], None] = lambda: None) -> None:
    """Errors nobody caught, in any thread, go to the log at ERROR: redacted, in the configured format.

    Python's defaults print them raw to standard error, past the redactor (a hook URL in a traceback) and the JSON
    format, and a dying thread then goes unnoticed.
    """
    error_logger = logging.getLogger("rcwebhook.errors")

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        on_error()
        name = args.thread.name if args.thread is not None else "unknown"
        error_logger.error(
            "uncaught error in thread %s", name, exc_info=(args.exc_type, args.exc_value, args.exc_traceback)
        )

    def process_hook(exc_type, exc_value, exc_traceback) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc_value, exc_traceback)
            return
        on_error()
        error_logger.error("uncaught error", exc_info=(exc_type, exc_value, exc_traceback))

    def unraisable_hook(unraisable) -> None:
        on_error()
        error_logger.error(
            "error nobody could catch (%s)", unraisable.err_msg or "exception ignored",
            exc_info=(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback),
        )

    threading.excepthook = thread_hook
    sys.excepthook = process_hook
    sys.unraisablehook = unraisable_hook
