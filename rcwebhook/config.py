"""One validated, frozen configuration object built from a mapping (os.environ in production, a dict in tests)."""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:  # the channels package imports the delivery core, which imports this module
    from .channels.twilio import TwilioCredentials

from .model import SEVERITIES, UNKNOWN_SEVERITY
from .sms.destination import (DEFAULT_MAX_PER_DAY, E164_PATTERN, SmsConfigError, SmsDestination,
                              destination_from_environment)
from .pacing import DEFAULT_RATE_LIMIT_TEXT, RateLimit, parse_rate_limit

DEFAULT_HOST = "0.0.0.0"
DEFAULT_PORT = 8093
# Below Alertmanager's shortest flush deadline, max(group_interval, 10 s): the relay answers before Alertmanager
# cancels the attempt, so it never gives up on a request we are still working on.
DEFAULT_DELIVERY_DEADLINE_SECONDS = 8.0
DEFAULT_MAX_BODY_BYTES = 5 * 1024 * 1024
DEFAULT_SEVERITY_LABEL = "severity"
# How long a delivered or refused notification is remembered, counted from delivery; it must stay below the
# shortest repeat_interval, or an intended reminder would be taken for a duplicate.
DEFAULT_DEDUP_WINDOW_SECONDS = 300.0
DEFAULT_MAX_WAITING_REQUESTS = 128
DEFAULT_MAX_QUEUED_BYTES = 64 * 1024 * 1024
# A connection that has not sent its whole request this long after it began is closed, so a slow or idle client
# (a port scanner, a misconfigured load balancer) cannot hold the threads Alertmanager needs.
DEFAULT_REQUEST_READ_TIMEOUT_SECONDS = 10.0
# Groups remembered for de-duplication, per hook; past it the oldest are forgotten first (about 200 bytes each).
DEFAULT_MAX_TRACKED_GROUPS = 50_000
# The journal and state (issue 10). Stale after twice the longest shipped repeat_interval (3 h): a firing alert not
# notified again for that long may have lost its resolved upstream.
DEFAULT_STALE_AFTER_HOURS = 6.0
DEFAULT_STATE_RETENTION_DAYS = 7.0
DEFAULT_STATE_MAX_ALERTS = 100_000
DEFAULT_MAX_LIVE_CLIENTS = 32
DEFAULT_STATE_PREFIX = "rcwebhook:"
DEFAULT_STATE_LEASE_SECONDS = 10.0  # a dead holder's hook is taken over this long after its last renewal
DEFAULT_STATE_TIMEOUT_SECONDS = 0.5  # each Store call to Redis, at most: a hung Redis costs a request no more
DEFAULT_EXPECTED_PROCESSES = 2  # replicas × workers: each paces at the budget divided by this while Redis is gone
DEFAULT_STATE_FILE_NAME = "rocketchat-webhook.sqlite3"  # in the working directory, without STATE_DIRECTORY
STATE_DIRECTORY_FILE_NAME = "state.sqlite3"

WEBHOOK_VARIABLE = {
    "critical": "ROCKETCHAT_WEBHOOK_CRITICAL",
    "warning": "ROCKETCHAT_WEBHOOK_WARNING",
    "info": "ROCKETCHAT_WEBHOOK_INFO",
}
DEFAULT_WEBHOOK_VARIABLE = "ROCKETCHAT_WEBHOOK_DEFAULT"
MENTION_VARIABLE = {
    "critical": "ROCKETCHAT_MENTION_CRITICAL",
    "warning": "ROCKETCHAT_MENTION_WARNING",
    "info": "ROCKETCHAT_MENTION_INFO",
}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TRUE_WORDS = ("1", "true", "yes", "on")


# A URL's path or last segment shorter than this is not redacted on its own (the whole URL always is).
MIN_SECRET_CHARS = 6


class ConfigError(Exception):
    """A setting is missing or wrong; the message names the variable and never repeats a secret value."""


@dataclass(frozen=True)
class Destination:
    """A Rocket.Chat incoming-webhook URL and the name logs and answers use for it (never the URL)."""

    name: str  # the severities that post here, e.g. "critical" or "warning+info"
    url: str = field(repr=False)  # holds the hook's secret token

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Config:
    """Everything the relay reads from its environment, validated once at start-up."""

    routes: Mapping[str, Destination]  # every key of SEVERITIES plus UNKNOWN_SEVERITY
    severity_label: str = DEFAULT_SEVERITY_LABEL
    webhook_token: str = field(default="", repr=False)
    metrics_token: str = field(default="", repr=False)
    webhook_token_file: str = ""  # re-read when it changes, so the token rotates without a restart
    webhook_token_previous: str = field(default="", repr=False)  # also accepted while set, during a rotation
    mentions: Mapping[str, str] = field(default_factory=dict)
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    log_level: str = "INFO"
    log_file: str = ""
    log_format: str = "text"  # or "json": one object per line
    alias: str = ""
    emoji: str = ""
    avatar_url: str = ""
    delivery_deadline_seconds: float = DEFAULT_DELIVERY_DEADLINE_SECONDS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    rate_limit: RateLimit = parse_rate_limit(DEFAULT_RATE_LIMIT_TEXT)
    dedup_window_seconds: float = DEFAULT_DEDUP_WINDOW_SECONDS
    max_waiting_requests: int = DEFAULT_MAX_WAITING_REQUESTS
    max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES
    request_read_timeout_seconds: float = DEFAULT_REQUEST_READ_TIMEOUT_SECONDS
    max_tracked_groups: int = DEFAULT_MAX_TRACKED_GROUPS
    routes_file: str = ""  # ROUTES_FILE: when set, the whole routing configuration (routes_file.py reads it)
    state_url: str = "memory://"  # STATE_URL, or the default SQLite file (store.open_store reads it)
    state_url_is_default: bool = False  # unusable: fall back to memory:// with a WARNING (else exit 2)
    stale_after_seconds: float = DEFAULT_STALE_AFTER_HOURS * 3600
    state_retention_seconds: float = DEFAULT_STATE_RETENTION_DAYS * 86400
    state_max_alerts: int = DEFAULT_STATE_MAX_ALERTS
    status_token: str = field(default="", repr=False)
    max_live_clients: int = DEFAULT_MAX_LIVE_CLIENTS
    # Replicas on Redis (issue 12): key prefix, hook lease, per-call timeout, processes sharing the budget.
    state_prefix: str = DEFAULT_STATE_PREFIX
    state_lease_seconds: float = DEFAULT_STATE_LEASE_SECONDS
    state_timeout_seconds: float = DEFAULT_STATE_TIMEOUT_SECONDS
    expected_processes: int = DEFAULT_EXPECTED_PROCESSES

    @property
    def state_is_shared(self) -> bool:
        """State in Redis: several processes (replicas, gunicorn workers) may share it."""
        return self.state_url.startswith(("redis://", "rediss://"))
    rocketchat_threads: bool = False  # ROCKETCHAT_THREADS: resolved alerts and reminders reply in threads
    # SMS escalation (issue 11): Twilio's credentials, and the environment's SMS destination (without a routes file)
    twilio: TwilioCredentials | None = field(default=None, repr=False)
    sms_destination: SmsDestination | None = field(default=None, repr=False)
    sms_max_per_day: int = DEFAULT_MAX_PER_DAY
    public_url: str = ""  # PUBLIC_URL, without a trailing slash
    alertmanager_url: str = ""
    alertmanager_token: str = field(default="", repr=False)

    @property
    def sms_status_callback_url(self) -> str:
        """Where Twilio reports deliveries: only when PUBLIC_URL is set and the auth token can check signatures."""
        if not self.public_url or self.twilio is None or not self.twilio.auth_token:
            return ""
        return self.public_url + "/twilio/status"

    @property
    def destinations(self) -> tuple[Destination, ...]:
        """Each distinct hook once, in severity order."""
        unique: dict[str, Destination] = {}
        for destination in self.routes.values():
            unique.setdefault(destination.url, destination)
        return tuple(unique.values())

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in a log line, an answer or an error."""
        values = [self.webhook_token, self.metrics_token, self.webhook_token_previous, self.status_token,
                  *(secret_parts_of_url(self.state_url) if self.state_is_shared else ()),
                  self.alertmanager_token, *(self.twilio.secrets if self.twilio else ())]
        for destination in self.destinations:
            values.extend(secret_parts_of_url(destination.url))
        return tuple(sorted({value for value in values if value}, key=len, reverse=True))


def secret_parts_of_url(url: str) -> list[str]:
    """The URL itself and the pieces that grant posting: its path and the token (the path's last segment)."""
    parsed = urllib.parse.urlsplit(url)
    parts = [url]
    segments = [segment for segment in parsed.path.split("/") if segment]
    # /hooks/<integrationId>/<token> (or the legacy /hooks/<id>/<userId>/<token>): the token grants posting.
    # The integration id alone does not, and stays readable in logs. A path or segment too short to be a token
    # ("/", "/x") is not taken as one: redacting it would blank every slash or letter x of every log line.
    if len(parsed.path) >= MIN_SECRET_CHARS:
        parts.append(parsed.path)
    if len(segments) >= 2 and len(segments[-1]) >= MIN_SECRET_CHARS:
        parts.append(segments[-1])
    if parsed.password:
        parts.append(parsed.password)
    if parsed.query:
        parts.append(parsed.query)
    return parts


def _read_setting(environ: Mapping[str, str], name: str) -> str:
    """A variable's value, or the stripped contents of the file named by NAME_FILE."""
    direct = environ.get(name, "").strip()
    file_name = environ.get(f"{name}_FILE", "").strip()
    if direct and file_name:
        raise ConfigError(f"{name} and {name}_FILE are both set; set only one")
    if not file_name:
        return direct
    try:
        with open(file_name, encoding="utf-8") as handle:
            value = handle.read().strip()
    except OSError as error:
        raise ConfigError(f"{name}_FILE: cannot read {file_name!r}: {error.strerror}") from None
    if not value:
        raise ConfigError(f"{name}_FILE: {file_name!r} is empty")
    return value


def _webhook_url(environ: Mapping[str, str], name: str) -> str:
    url = _read_setting(environ, name)
    if not url:
        return ""
    try:
        parsed = urllib.parse.urlsplit(url)
    except ValueError:  # e.g. an unclosed [ of an IPv6 address
        raise ConfigError(f"{name} is not a URL that can be read (value not shown: it holds a token)") from None
    # The value is not repeated in the error: it carries the hook's token.
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"{name} must be an http:// or https:// URL with a host (value not shown: it holds a token)")
    try:
        parsed.port  # noqa: B018 - urllib checks the port only when asked
    except ValueError:
        raise ConfigError(f"{name} has an invalid port (value not shown: it holds a token)") from None
    return url


def _number(environ: Mapping[str, str], name: str, default: float, *, integer: bool, minimum: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise ConfigError(f"{name} must be {kind}, got {raw!r}") from None
    if value < minimum or value != value:  # value != value catches NaN
        raise ConfigError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def _port(environ: Mapping[str, str]) -> int:
    port = int(_number(environ, "PORT", DEFAULT_PORT, integer=True, minimum=0))
    if port > 65535:
        raise ConfigError(f"PORT must be at most 65535, got {port}")
    return port


def _routes(environ: Mapping[str, str]) -> dict[str, Destination]:
    own_urls = {severity: _webhook_url(environ, WEBHOOK_VARIABLE[severity]) for severity in SEVERITIES}
    default_url = _webhook_url(environ, DEFAULT_WEBHOOK_VARIABLE)
    url_for = {severity: own_urls[severity] or default_url for severity in SEVERITIES}
    # Alerts with no or an unknown severity go to the default hook, or to the info hook when there is none.
    url_for[UNKNOWN_SEVERITY] = default_url or url_for["info"]
    missing = [WEBHOOK_VARIABLE[severity] for severity in SEVERITIES if not url_for[severity]]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} not set and no {DEFAULT_WEBHOOK_VARIABLE}: "
            "these severities would have no Rocket.Chat destination"
        )
    names_by_url: dict[str, list[str]] = {}
    for severity in (*SEVERITIES, UNKNOWN_SEVERITY):
        names_by_url.setdefault(url_for[severity], []).append(severity)
    names = {}
    for url, severities in names_by_url.items():
        known = [severity for severity in severities if severity != UNKNOWN_SEVERITY]
        # A hook reached only by unknown severities is the default hook.
        names[url] = "+".join(known) if known else "default"
    return {severity: Destination(names[url], url) for severity, url in url_for.items()}


def _log_level(environ: Mapping[str, str]) -> str:
    raw = environ.get("LOG_LEVEL", "").strip().upper()
    if not raw:
        # The seed's DEBUG=true still means debug logging.
        return "DEBUG" if environ.get("DEBUG", "").strip().lower() in TRUE_WORDS else "INFO"
    if raw == "WARN":
        raw = "WARNING"
    if raw not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {raw!r}")
    return raw


def _rate_limit(environ: Mapping[str, str]) -> RateLimit:
    raw = environ.get("ROCKETCHAT_RATE_LIMIT", "").strip() or DEFAULT_RATE_LIMIT_TEXT
    try:
        return parse_rate_limit(raw)
    except ValueError as error:
        raise ConfigError(f"ROCKETCHAT_RATE_LIMIT={raw!r}: {error}") from None


def _log_file(environ: Mapping[str, str]) -> str:
    path = environ.get("LOG_FILE", "").strip()
    if not path:
        return ""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ConfigError(f"LOG_FILE={path!r} is a directory; name a file")
    writable = os.access(path, os.W_OK) if os.path.exists(path) else os.access(directory, os.W_OK | os.X_OK)
    if not writable:
        raise ConfigError(f"LOG_FILE={path!r} cannot be written (check the directory exists and its permissions)")
    return path


def _log_format(environ: Mapping[str, str]) -> str:
    raw = environ.get("LOG_FORMAT", "").strip().lower() or "text"
    if raw not in ("text", "json"):
        raise ConfigError(f"LOG_FORMAT must be text or json, got {raw!r}")
    return raw


def load_dotenv_from_working_directory() -> None:
    """Read .env from the working directory, as documented; the real environment wins over it."""
    from dotenv import load_dotenv

    load_dotenv(os.path.join(os.getcwd(), ".env"), override=False)


def load_config(environ: Mapping[str, str]) -> Config:
    """Build and validate the configuration; raises ConfigError naming the first bad variable."""
    if environ.get("WEBHOOK_TOKEN_PREVIOUS", "").strip() and not _read_setting(environ, "WEBHOOK_TOKEN"):
        raise ConfigError("WEBHOOK_TOKEN_PREVIOUS is set but WEBHOOK_TOKEN is not: set the current token too")
    avatar_url = environ.get("ROCKETCHAT_AVATAR_URL", "").strip()
    if avatar_url and not avatar_url.startswith(("http://", "https://")):
        raise ConfigError("ROCKETCHAT_AVATAR_URL must be an http:// or https:// URL")
    severity_label = environ.get("SEVERITY_LABEL", "").strip() or DEFAULT_SEVERITY_LABEL
    if environ.get("ROUTES_FILE", "").strip() and not os.path.isfile(environ["ROUTES_FILE"].strip()):
        raise ConfigError(f"ROUTES_FILE={environ['ROUTES_FILE'].strip()!r} is not a readable file")
    mentions = {
        severity: environ.get(MENTION_VARIABLE[severity], "").strip()
        for severity in SEVERITIES
        if environ.get(MENTION_VARIABLE[severity], "").strip()
    }
    routes_file = environ.get("ROUTES_FILE", "").strip()
    config = Config(
        # With a routes file the hooks come from it (routes_file.py), and ROCKETCHAT_WEBHOOK_* may not be set.
        routes={} if routes_file else _routes(environ),
        routes_file=routes_file,
        severity_label=severity_label,
        webhook_token=_read_setting(environ, "WEBHOOK_TOKEN"),
        metrics_token=_read_setting(environ, "METRICS_TOKEN"),
        webhook_token_file=environ.get("WEBHOOK_TOKEN_FILE", "").strip(),
        webhook_token_previous=_read_setting(environ, "WEBHOOK_TOKEN_PREVIOUS"),
        mentions=mentions,
        host=environ.get("HOST", "").strip() or DEFAULT_HOST,
        port=_port(environ),
        log_level=_log_level(environ),
        log_file=_log_file(environ),
        log_format=_log_format(environ),
        alias=environ.get("ROCKETCHAT_ALIAS", "").strip(),
        emoji=environ.get("ROCKETCHAT_EMOJI", "").strip(),
        avatar_url=avatar_url,
        delivery_deadline_seconds=_number(
            environ, "DELIVERY_DEADLINE_SECONDS", DEFAULT_DELIVERY_DEADLINE_SECONDS, integer=False, minimum=0.5
        ),
        max_body_bytes=int(_number(environ, "MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, integer=True, minimum=1024)),
        rate_limit=_rate_limit(environ),
        dedup_window_seconds=_number(
            environ, "DEDUP_WINDOW_SECONDS", DEFAULT_DEDUP_WINDOW_SECONDS, integer=False, minimum=0
        ),
        max_waiting_requests=int(
            _number(environ, "MAX_WAITING_REQUESTS", DEFAULT_MAX_WAITING_REQUESTS, integer=True, minimum=1)
        ),
        max_queued_bytes=int(
            _number(environ, "MAX_QUEUED_BYTES", DEFAULT_MAX_QUEUED_BYTES, integer=True, minimum=1024)
        ),
        request_read_timeout_seconds=_number(
            environ, "REQUEST_READ_TIMEOUT_SECONDS", DEFAULT_REQUEST_READ_TIMEOUT_SECONDS, integer=False, minimum=0.5
        ),
        max_tracked_groups=int(
            _number(environ, "MAX_TRACKED_GROUPS", DEFAULT_MAX_TRACKED_GROUPS, integer=True, minimum=1)
        ),
        **_state_settings(environ),
        rocketchat_threads=_boolean(environ, "ROCKETCHAT_THREADS"),
        **_sms_settings(environ, routes_file),
    )
    if config.max_queued_bytes < config.max_body_bytes:
        raise ConfigError(
            f"MAX_QUEUED_BYTES ({config.max_queued_bytes}) is below MAX_BODY_BYTES ({config.max_body_bytes}): "
            "a large body could never be queued"
        )
    return config


def describe_config(config: Config) -> list[str]:
    """Start-up lines: each destination by name with its host only, never the path that holds the token."""
    lines = []
    for destination in config.destinations:
        parsed = urllib.parse.urlsplit(destination.url)
        severities = [name for name, routed in config.routes.items() if routed.url == destination.url]
        port = f":{parsed.port}" if parsed.port else ""
        lines.append(
            f"destination {destination.name}: {parsed.scheme}://{parsed.hostname}{port}/hooks/<redacted>"
            f" for {', '.join(severities)}"
        )
    return lines



def default_state_url(environ: Mapping[str, str]) -> str:
    """SQLite in $STATE_DIRECTORY (systemd's StateDirectory=, the image's volume), else in the working directory.

    systemd may list several directories separated by colons; the first is the relay's."""
    directory = environ.get("STATE_DIRECTORY", "").strip().split(":")[0].strip()
    if directory:
        return f"sqlite:///{os.path.join(directory, STATE_DIRECTORY_FILE_NAME)}"
    return f"sqlite:///{DEFAULT_STATE_FILE_NAME}"


def _state_url(environ: Mapping[str, str]) -> tuple[str, bool]:
    url = _read_setting(environ, "STATE_URL")
    if not url:
        return default_state_url(environ), True
    if url in ("memory://", "memory:"):
        return "memory://", False
    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        return url, False
    if url.startswith(("redis://", "rediss://")):
        _check_redis_url(url)
        return url, False
    raise ConfigError(
        "STATE_URL must be sqlite:///<path> (sqlite:////var/lib/x/state.sqlite3 for an absolute path), "
        "redis://[:password@]host[:port][/db] (rediss:// for TLS) or memory://"
    )


def _check_redis_url(url: str) -> None:
    """A redis:// URL redis-py can use; the message never shows it (it may hold a password)."""
    try:
        parsed = urllib.parse.urlsplit(url)
        parsed.port  # noqa: B018 - urllib checks the port only when asked
    except ValueError:
        raise ConfigError("STATE_URL is not a redis:// URL that can be read (value not shown: it may hold a "
                          "password)") from None
    if not parsed.hostname:
        raise ConfigError("STATE_URL needs a host: redis://host:6379/0 (value not shown: it may hold a password)")
    database = parsed.path.strip("/")
    if database and not database.isdigit():
        raise ConfigError("STATE_URL's path must be a database number such as /0 (value not shown)")


def redacted_state_url(url: str) -> str:
    """The state URL as logs, --check-config and the status page show it: a redis:// password replaced."""
    if not url.startswith(("redis://", "rediss://")):
        return url
    parsed = urllib.parse.urlsplit(url)
    host = parsed.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    credentials = ""
    if parsed.username or parsed.password:
        credentials = (parsed.username or "") + (":<redacted>" if parsed.password else "") + "@"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{credentials}{host}{port}{parsed.path}"


def _state_settings(environ: Mapping[str, str]) -> dict:
    state_url, is_default = _state_url(environ)
    return dict(
        state_url=state_url,
        state_url_is_default=is_default,
        stale_after_seconds=3600 * _number(
            environ, "STALE_AFTER_HOURS", DEFAULT_STALE_AFTER_HOURS, integer=False, minimum=0.01
        ),
        state_retention_seconds=86400 * _number(
            environ, "STATE_RETENTION_DAYS", DEFAULT_STATE_RETENTION_DAYS, integer=False, minimum=0.001
        ),
        state_max_alerts=int(_number(environ, "STATE_MAX_ALERTS", DEFAULT_STATE_MAX_ALERTS, integer=True, minimum=1)),
        status_token=_read_setting(environ, "STATUS_TOKEN"),
        state_prefix=_state_prefix(environ),
        state_lease_seconds=_number(environ, "STATE_LEASE_SECONDS", DEFAULT_STATE_LEASE_SECONDS, integer=False,
                                    minimum=1),
        state_timeout_seconds=_number(environ, "STATE_TIMEOUT_SECONDS", DEFAULT_STATE_TIMEOUT_SECONDS,
                                      integer=False, minimum=0.05),
        expected_processes=int(_number(environ, "EXPECTED_PROCESSES", DEFAULT_EXPECTED_PROCESSES, integer=True,
                                       minimum=1)),
        max_live_clients=int(
            _number(environ, "MAX_LIVE_CLIENTS", DEFAULT_MAX_LIVE_CLIENTS, integer=True, minimum=0)
        ),
    )


def _state_prefix(environ: Mapping[str, str]) -> str:
    prefix = environ.get("STATE_PREFIX", "").strip() or DEFAULT_STATE_PREFIX
    # Keys carry {…} hash tags of their own (Redis Cluster): a brace in the prefix would break them.
    if len(prefix) > 64 or any(character in prefix for character in "{} \t\n"):
        raise ConfigError("STATE_PREFIX must be at most 64 characters without braces or spaces, e.g. rcwebhook:")
    return prefix


def _boolean(environ: Mapping[str, str], name: str) -> bool:
    text = environ.get(name, "").strip().lower()
    if not text:
        return False
    if text in TRUE_WORDS:
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false")


TWILIO_SID_PATTERN = {"TWILIO_ACCOUNT_SID": r"AC[0-9a-fA-F]{32}", "TWILIO_API_KEY_SID": r"SK[0-9a-fA-F]{32}",
                      "TWILIO_MESSAGING_SERVICE_SID": r"MG[0-9a-fA-F]{32}"}
# Twilio also sends from alphanumeric sender ids (up to 11 letters, digits and spaces) where carriers allow them.
ALPHANUMERIC_SENDER = r"(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}"


def _http_url(environ: Mapping[str, str], name: str, value: str | None = None) -> str:
    url = (environ.get(name, "") if value is None else value).strip().rstrip("/")
    if not url:
        return ""
    try:
        parsed = urllib.parse.urlsplit(url)
        parsed.port  # noqa: B018 - urllib checks the port only when asked
    except ValueError:
        raise ConfigError(f"{name} is not a URL that can be read") from None
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"{name} must be an http:// or https:// URL with a host")
    return url


def _twilio(environ: Mapping[str, str]) -> TwilioCredentials | None:
    """Twilio's credentials, or None when none is set; a partial or malformed set is a ConfigError."""
    import re

    from .channels.twilio import TwilioCredentials

    values = {name: _read_setting(environ, name) for name in (
        "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_API_KEY_SID", "TWILIO_API_KEY_SECRET")}
    values["TWILIO_FROM_NUMBER"] = environ.get("TWILIO_FROM_NUMBER", "").strip()
    values["TWILIO_MESSAGING_SERVICE_SID"] = environ.get("TWILIO_MESSAGING_SERVICE_SID", "").strip()
    if not any(values.values()):
        return None
    for name, pattern in TWILIO_SID_PATTERN.items():
        if values[name] and not re.fullmatch(pattern, values[name]):
            raise ConfigError(f"{name} must be {pattern[:2]} followed by 32 hexadecimal digits (see Twilio's console)")
    if not values["TWILIO_ACCOUNT_SID"]:
        raise ConfigError("TWILIO_ACCOUNT_SID is not set: it is needed with any other TWILIO_ setting")
    if bool(values["TWILIO_API_KEY_SID"]) != bool(values["TWILIO_API_KEY_SECRET"]):
        raise ConfigError("TWILIO_API_KEY_SID and TWILIO_API_KEY_SECRET go together: set both or neither")
    if not values["TWILIO_AUTH_TOKEN"] and not values["TWILIO_API_KEY_SID"]:
        raise ConfigError("Twilio needs TWILIO_AUTH_TOKEN, or TWILIO_API_KEY_SID and TWILIO_API_KEY_SECRET")
    sender = values["TWILIO_FROM_NUMBER"]
    if sender and not (E164_PATTERN.match(sender) or re.fullmatch(ALPHANUMERIC_SENDER, sender)):
        raise ConfigError("TWILIO_FROM_NUMBER must be a Twilio number in E.164 (+15017122661) or an alphanumeric "
                          "sender id (value not shown)")
    if not sender and not values["TWILIO_MESSAGING_SERVICE_SID"]:
        raise ConfigError("Twilio needs TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID: where SMS come from")
    api_url = _http_url(environ, "TWILIO_API_URL") or "https://api.twilio.com"
    username, password = ((values["TWILIO_API_KEY_SID"], values["TWILIO_API_KEY_SECRET"])
                          if values["TWILIO_API_KEY_SID"] else (values["TWILIO_ACCOUNT_SID"], values["TWILIO_AUTH_TOKEN"]))
    return TwilioCredentials(
        account_sid=values["TWILIO_ACCOUNT_SID"], username=username, password=password, from_number=sender,
        messaging_service_sid=values["TWILIO_MESSAGING_SERVICE_SID"], api_url=api_url,
        auth_token=values["TWILIO_AUTH_TOKEN"],
    )


def _sms_settings(environ: Mapping[str, str], routes_file: str) -> dict:
    try:
        # With a routes file its sms: destinations hold these; routes_file.py refuses SMS_* left in the environment.
        destination = None if routes_file else destination_from_environment(
            environ, lambda name: _read_setting(environ, name))
    except SmsConfigError as error:
        raise ConfigError(str(error)) from None
    twilio = _twilio(environ)
    if destination is not None and twilio is None:
        raise ConfigError("SMS_RECIPIENTS is set but Twilio is not: set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN (or an "
                          "API key) and TWILIO_FROM_NUMBER (or TWILIO_MESSAGING_SERVICE_SID)")
    return dict(
        twilio=twilio,
        sms_destination=destination,
        sms_max_per_day=int(_number(environ, "SMS_MAX_PER_DAY", DEFAULT_MAX_PER_DAY, integer=True, minimum=1))
        if twilio else DEFAULT_MAX_PER_DAY,
        # Read only with Twilio: a relay without SMS must start as before whatever these names hold.
        public_url=_http_url(environ, "PUBLIC_URL") if twilio else "",
        alertmanager_url=_http_url(environ, "ALERTMANAGER_URL") if twilio else "",
        alertmanager_token=_read_setting(environ, "ALERTMANAGER_TOKEN") if twilio else "",
    )
