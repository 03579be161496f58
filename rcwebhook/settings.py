"""The one list of the relay's settings: config.py reads these, and .env.example, the README's table and
--check-config are generated from it (tests/test_settings.py checks that each one is as generated).

    python -m rcwebhook.settings readme        # the README's table
    python -m rcwebhook.settings env-example   # .env.example
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class Setting:
    name: str
    default: str  # as shown to people ("" = none)
    help: str  # one line, Markdown (backticks) allowed
    section: str
    file: bool = False  # may be given as NAME_FILE=/path (Docker/Kubernetes secrets)
    secret: bool = False  # never shown: --check-config says only whether it is set
    example: str = ""  # the value .env.example shows
    active_in_example: bool = False  # .env.example sets it (uncommented)
    read_by: str = "the relay"  # or "requests", for the ones the HTTP library reads itself

    @property
    def default_is_description(self) -> bool:
        """A default said in words ("standard error"), not a value .env.example could set."""
        return self.default in DESCRIBED_DEFAULTS


HOOKS = "Rocket.Chat incoming webhooks (without ROUTES_FILE). They hold the hook's token: keep them secret."
ROUTING = "Routing and access."
LOOK = "How messages look."
SERVER = "Where the relay listens, and its log."
DELIVERY = "Delivery, pacing and bounds."
OUTBOUND = "Reaching a self-hosted Rocket.Chat."
STATE = "State, the alert journal and the status page."
TWILIO = "Twilio, for SMS escalation (secrets: keep them out of version control)."
SMS = "SMS escalation of alerts nobody acted on (without ROUTES_FILE; a routes file's `sms:` destinations hold these)."
DESCRIBED_DEFAULTS = ("standard error", "system CAs", "the seed's `system_alert`", "the notification's `externalURL`")
HOOK_EXAMPLE = "https://chat.example.com/hooks/INTEGRATION_ID/TOKEN"

SETTINGS: tuple[Setting, ...] = (
    Setting("ROCKETCHAT_WEBHOOK_CRITICAL", "", "incoming-webhook URL for critical alerts", HOOKS, file=True,
            secret=True, example=HOOK_EXAMPLE, active_in_example=True),
    Setting("ROCKETCHAT_WEBHOOK_WARNING", "", "incoming-webhook URL for warning alerts", HOOKS, file=True,
            secret=True, example=HOOK_EXAMPLE, active_in_example=True),
    Setting("ROCKETCHAT_WEBHOOK_INFO", "", "incoming-webhook URL for info alerts", HOOKS, file=True, secret=True,
            example=HOOK_EXAMPLE, active_in_example=True),
    Setting("ROCKETCHAT_WEBHOOK_DEFAULT", "", "for a severity without its own URL, and for alerts with no or an "
            "unknown severity (unset: those go to the info hook)", HOOKS, file=True, secret=True),
    Setting("ROCKETCHAT_MENTION_CRITICAL", "", "e.g. `@here`, `@oncall`: put in front of the headline of firing "
            "critical messages", HOOKS, example="@here"),
    Setting("ROCKETCHAT_MENTION_WARNING", "", "the same for warning messages", HOOKS),
    Setting("ROCKETCHAT_MENTION_INFO", "", "the same for info messages", HOOKS),
    Setting("ROCKETCHAT_THREADS", "false", "`true`: a resolved alert, and a reminder of a firing one, replies in "
            "the thread of the message that announced it (needs a Rocket.Chat that returns message ids, since "
            "mid-2025; a reply only in a thread is easy to miss). In a routes file: `threads: true` per destination",
            HOOKS),
    Setting("ROUTES_FILE", "", "a YAML file of named integrations, label routes, destinations and templates "
            "(see `routes.example.yml`); when set it is the whole routing configuration, and the settings above "
            "are a conflict unless it names them with `url_env:`. `kill -HUP` re-reads it", ROUTING,
            example="/etc/rocketchat-webhook/routes.yml"),
    Setting("SEVERITY_LABEL", "severity", "the label the severity is read from (matched case-insensitively, with "
            "aliases such as `crit`, `p1`, `warn`, `p3`)", ROUTING),
    Setting("WEBHOOK_TOKEN", "", "when set, `POST /webhook` needs it as `Authorization: Bearer`, `X-API-Key`, "
            "`X-Webhook-Secret` or the password of HTTP Basic (else 401). `WEBHOOK_TOKEN_FILE` is re-read when "
            "the file changes: rotate without a restart", ROUTING, file=True, secret=True),
    Setting("WEBHOOK_TOKEN_PREVIOUS", "", "also accepted while set, so Alertmanager can switch tokens after the "
            "relay", ROUTING, file=True, secret=True),
    Setting("METRICS_TOKEN", "", "when set, `GET /metrics` needs `Authorization: Bearer <token>`", ROUTING,
            file=True, secret=True),
    Setting("ROCKETCHAT_ALIAS", "", "display name of the messages (sent only when set)", LOOK,
            example="Alertmanager"),
    Setting("ROCKETCHAT_EMOJI", "", "the messages' icon as an emoji (sent only when set)", LOOK,
            example=":rotating_light:"),
    Setting("ROCKETCHAT_AVATAR_URL", "", "the messages' icon as an image URL (sent only when set; wins over the "
            "emoji)", LOOK, example="https://example.com/alertmanager.png"),
    Setting("HOST", "0.0.0.0", "the address the relay listens on (development server and `gunicorn.conf.py`)",
            SERVER),
    Setting("PORT", "8093", "the port the relay listens on", SERVER),
    Setting("WORKERS", "1", "`gunicorn.conf.py`'s worker processes: more than 1 only with `STATE_URL=redis://…` "
            "(with SQLite or memory, more than one is refused with exit 2, however it is asked for)", SERVER,
            read_by="gunicorn.conf.py"),
    Setting("LOG_LEVEL", "INFO", "`DEBUG`, `INFO`, `WARNING`, `ERROR`; the older `DEBUG=true` means `DEBUG` when "
            "`LOG_LEVEL` is unset", SERVER),
    Setting("LOG_FILE", "standard error", "a file to log to, re-opened when logrotate moves it", SERVER),
    Setting("LOG_FORMAT", "text", "`json`: one JSON object per line, with the request id (`X-Request-ID` when "
            "the caller sent a plain one)", SERVER),
    Setting("DELIVERY_DEADLINE_SECONDS", "8", "how long one Alertmanager request may take before the relay "
            "answers 503: below Alertmanager's shortest flush deadline of 10 s, so it never gives up on a request "
            "the relay is still working on", DELIVERY),
    Setting("MAX_BODY_BYTES", "5242880", "larger bodies (5 MiB) are refused with 413 before they are read",
            DELIVERY),
    Setting("ROCKETCHAT_RATE_LIMIT", "10/60s", "at most this many posts to one hook URL in any trailing window "
            "(Rocket.Chat's default limit; `0` switches pacing off). Raise it only together with Rocket.Chat's "
            "`API_Enable_Rate_Limiter_Limit_Calls_Default`", DELIVERY),
    Setting("DEDUP_WINDOW_SECONDS", "300", "how long a delivered (or refused) notification is remembered, counted "
            "from delivery, so a repeat of it is not posted again. **Keep it below your shortest "
            "`repeat_interval`** (30 m in the shipped routes), or a reminder would be taken for a duplicate",
            DELIVERY),
    Setting("MAX_WAITING_REQUESTS", "128", "requests waiting for Rocket.Chat at once; beyond, 503 at once "
            "(Alertmanager retries). `gunicorn.conf.py` runs this many threads plus 64", DELIVERY),
    Setting("MAX_QUEUED_BYTES", "67108864", "bodies held in the queues at once (64 MiB); beyond, 503 at once",
            DELIVERY),
    Setting("REQUEST_READ_TIMEOUT_SECONDS", "10", "a connection that has not sent its whole request (headers "
            "and body) this long after it began is closed: a slow or idle client never holds a thread (under "
            "gunicorn with the shipped `gunicorn.conf.py`)", DELIVERY),
    Setting("MAX_TRACKED_GROUPS", "50000", "notification groups remembered for de-duplication per hook; past it "
            "the oldest are forgotten first (counted in `rocketchat_webhook_tracked_groups_forgotten_total`)",
            DELIVERY),
    Setting("STATE_URL", "sqlite:///rocketchat-webhook.sqlite3",
            "where state lives (de-duplication memory, the alert journal, SMS): `sqlite:///<path>` (four slashes for "
            "an absolute path), `redis://[:password@]host[:port][/db]` (`rediss://` for TLS; for several replicas or "
            "`gunicorn -w N`; keep the password out of the environment with `STATE_URL_FILE`) or `memory://` (lost "
            "at restart). Unset: `sqlite:///$STATE_DIRECTORY/state.sqlite3` "
            "when `STATE_DIRECTORY` is set, else that file in the working directory; when the default cannot be "
            "used the relay runs on `memory://` with a WARNING, while a `STATE_URL` you set and that cannot be used "
            "stops it (exit 2)", STATE, file=True, secret=True,
            example="sqlite:////var/lib/rocketchat-webhook/state.sqlite3"),
    Setting("STATE_PREFIX", "rcwebhook:", "with Redis: the prefix of every key, so several relays can share one "
            "Redis", STATE),
    Setting("STATE_LEASE_SECONDS", "10", "with Redis: one process at a time posts to a hook, holding a lease it "
            "renews while posting; a holder that dies is taken over this long after its last renewal", STATE),
    Setting("STATE_TIMEOUT_SECONDS", "0.5", "with Redis: the longest one call to it may take; a Redis that does "
            "not answer in time is treated as gone (each process then works on its own memory)", STATE),
    Setting("EXPECTED_PROCESSES", "2", "with Redis: replicas × workers. While Redis is unreachable each process "
            "paces at the budget divided by this, so that together they stay under Rocket.Chat's limit", STATE),
    Setting("STATE_DIRECTORY", "", "the directory of the default state file (systemd sets it for "
            "`StateDirectory=`; the image sets `/var/lib/rocketchat-webhook`, a volume)", STATE),
    Setting("STALE_AFTER_HOURS", "6", "a firing alert not notified again this long is shown as stale (its "
            "resolved may have been lost upstream): twice the longest shipped `repeat_interval`", STATE),
    Setting("STATE_RETENTION_DAYS", "7", "journal records are forgotten this long after their last update",
            STATE),
    Setting("STATE_MAX_ALERTS", "100000", "at most this many alert occurrences (and notifications) in the "
            "journal; the least recently updated go first", STATE),
    Setting("STATUS_TOKEN", "", "when set, the status page `GET /`, `/api/v1/*` and `/ws` need it as "
            "`Authorization: Bearer` or the password of HTTP Basic (any user name). Unset: they answer only "
            "clients on the loopback interface (403 elsewhere)", STATE, file=True, secret=True),
    Setting("MAX_LIVE_CLIENTS", "32", "WebSocket clients of `GET /ws` at once (`0` switches the live feed off; "
            "the page then refreshes only when reloaded); `gunicorn.conf.py` adds this many threads", STATE),
    Setting("TWILIO_ACCOUNT_SID", "", "the Twilio account (`AC…`) SMS are sent from", TWILIO, file=True,
            secret=True),
    Setting("TWILIO_AUTH_TOKEN", "", "its auth token: sends SMS and checks the signatures of Twilio's status "
            "callbacks", TWILIO, file=True, secret=True),
    Setting("TWILIO_API_KEY_SID", "", "an API key (`SK…`) to send with instead of the auth token (status callbacks "
            "still need `TWILIO_AUTH_TOKEN` to be checked)", TWILIO, file=True, secret=True),
    Setting("TWILIO_API_KEY_SECRET", "", "the API key's secret", TWILIO, file=True, secret=True),
    Setting("TWILIO_FROM_NUMBER", "", "the Twilio number (E.164) SMS come from", TWILIO, secret=True,
            example="+15017122661"),
    Setting("TWILIO_MESSAGING_SERVICE_SID", "", "a Messaging Service (`MG…`) to send through instead of "
            "`TWILIO_FROM_NUMBER`", TWILIO),
    Setting("TWILIO_API_URL", "https://api.twilio.com", "Twilio's API (a regional edge such as "
            "`https://api.dublin.ie1.twilio.com`, or the mock)", TWILIO),
    Setting("PUBLIC_URL", "", "the relay's address as Twilio reaches it (e.g. `https://relay.example.com`): each "
            "SMS asks Twilio to report its delivery to `PUBLIC_URL/twilio/status`, signed (unset: no status "
            "callbacks)", TWILIO),
    Setting("SMS_RECIPIENTS", "", "comma-separated E.164 numbers paged by SMS for the alerts of `SMS_SEVERITIES` "
            "(without ROUTES_FILE; a routes file has `sms:` destinations instead). Unset: no SMS", SMS, file=True,
            secret=True, example="+15551230001,+15551230002"),
    Setting("SMS_SEVERITIES", "critical", "the severities paged by SMS", SMS),
    Setting("SMS_DELAY_SECONDS", "0", "how long after an alert fires its SMS waits: one still firing and not "
            "silenced (acknowledged) in Alertmanager then is sent; `300` sends SMS only for alerts nobody acted on "
            "in 5 minutes", SMS),
    Setting("SMS_MAX_PER_HOUR", "10", "SMS per recipient in any trailing hour; beyond, its alerts wait and go out "
            "in one digest SMS", SMS),
    Setting("SMS_MAX_PER_DAY", "200", "SMS for the whole relay per UTC day, a cost ceiling (also with a routes "
            "file); beyond, nothing is sent that day (ERROR, and the shipped alert rules page): what waits goes after "
            "midnight UTC if still firing and unsilenced", SMS),
    Setting("SMS_HOURS", "", "e.g. `08:00-18:00` (`22:00-06:00` spans midnight): SMS go only then; an alert that "
            "fired outside and still fires when they begin is sent then. Unset: at any time", SMS),
    Setting("SMS_TIMEZONE", "UTC", "the IANA timezone of `SMS_HOURS`, e.g. `Europe/Berlin`", SMS),
    Setting("SMS_SEND_RESOLVED", "false", "`true`: recipients paged for an alert get an SMS when it resolves", SMS),
    Setting("SMS_TEMPLATE", "the seed's `system_alert`", "a Jinja template of the SMS of one alert (`labels`, "
            "`annotations`, `alertname`, `severity`, `fingerprint`, `starts_at`); several alerts are named in one "
            "SMS", SMS),
    Setting("SMS_MAX_SEGMENTS", "3", "the body is cut to this many SMS segments, counted as Twilio bills them "
            "(GSM-7: 160, or 153 each when split; one emoji or non-Latin letter makes it UCS-2: 70, or 67)", SMS),
    Setting("SMS_GIVE_UP_SECONDS", "3600", "an SMS Twilio keeps refusing for a while (20429, 5xx, no answer) is "
            "retried with backoff this long, then given up at ERROR", SMS),
    Setting("ALERTMANAGER_URL", "the notification's `externalURL`", "where a delayed SMS asks whether its alert "
            "is silenced or inhibited (`GET /api/v2/alerts`); if Alertmanager cannot be asked, the SMS goes", SMS),
    Setting("ALERTMANAGER_TOKEN", "", "sent to `ALERTMANAGER_URL` as `Authorization: Bearer` (only there: never to a notification's "
            "`externalURL`)", SMS, file=True,
            secret=True),
    Setting("REQUESTS_CA_BUNDLE", "system CAs", "a CA bundle for a self-hosted Rocket.Chat with a private CA",
            OUTBOUND, example="/etc/ssl/certs/internal-ca.pem", read_by="requests"),
    Setting("HTTPS_PROXY", "", "an outbound proxy to Rocket.Chat (`HTTP_PROXY` and `NO_PROXY` likewise)", OUTBOUND,
            secret=True, example="http://proxy.internal:3128", read_by="requests"),
)
SETTING_NAMES = tuple(setting.name for setting in SETTINGS)


def markdown_table() -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for setting in SETTINGS:
        name = f"`{setting.name}`" + (" (*file*)" if setting.file else "")
        default = f"`{setting.default}`" if setting.default and not setting.default_is_description else (
            setting.default or "—")
        meaning = setting.help + (" (read by requests)" if setting.read_by == "requests" else "")
        lines.append(f"| {name} | {default} | {meaning} |")
    return "\n".join(lines) + "\n"


def env_example() -> str:
    lines = [
        "# rocketchat-webhook settings (generated by `python -m rcwebhook.settings env-example`). Copy to .env;",
        "# the real environment wins over .env. A setting marked (file) may instead be read from a file:",
        "# set NAME_FILE=/path instead of NAME.",
    ]
    section = None
    for setting in SETTINGS:
        if setting.section != section:
            section = setting.section
            lines += ["", f"# == {section}"]
        help_text = setting.help.replace("`", "").replace("**", "") + (" (file)" if setting.file else "")
        lines.append(f"# {help_text}")
        value = setting.example or ("" if setting.default_is_description else setting.default)
        lines.append(f"{'' if setting.active_in_example else '#'}{setting.name}={value}")
    return "\n".join(lines) + "\n"


def describe_settings(environ: Mapping[str, str]) -> list[str]:
    """Every setting and where its value comes from, secrets shown only as set or not (for --check-config)."""
    lines = []
    for setting in SETTINGS:
        raw = environ.get(setting.name, "").strip()
        from_file = environ.get(f"{setting.name}_FILE", "").strip() if setting.file else ""
        if setting.secret:
            shown = "set" if raw else (f"from file {from_file}" if from_file else "not set")
        elif raw:
            shown = raw
        else:
            shown = f"{setting.default or '(none)'} (default)"
        lines.append(f"{setting.name} = {shown}")
    return lines


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "readme":
        sys.stdout.write(markdown_table())
    elif what == "env-example":
        sys.stdout.write(env_example())
    else:
        sys.exit("usage: python -m rcwebhook.settings readme|env-example")
