"""The status page at GET /: what fires, what was sent, each hook's pacing; server-rendered, refreshed by /ws."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Callable, Mapping, Sequence

import flask

from ..attachments import FIRING_COLORS, alert_color, annotation
from ..model import RESOLVED, UNKNOWN_SEVERITY
from ..safetext import clean_text, cut_chars, one_line
from ..timefmt import display_timestamp, duration_between, format_duration, parse_timestamp

_HERE = os.path.dirname(os.path.abspath(__file__))

# The page runs only its own script and stylesheet and talks only to its origin (the fragment and /ws).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HTML_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# GET /?fragment=live answers only the live part (the element with id "live"), which status.js swaps in.
LIVE_FRAGMENT = "live"

SEVERITY_ORDER: Sequence[str] = ("critical", "warning", "info", UNKNOWN_SEVERITY)
# Labels that tell where an alert fires, shown on its card in this order; the rest fold into "all labels".
KEY_LABELS: Sequence[str] = ("instance", "job", "service", "namespace", "pod", "container", "cluster", "node")
# Labels the card already shows as its name and colour.
SHOWN_ELSEWHERE = frozenset({"alertname", "severity"})
# Outcome of a post → the CSS class of its badge; an outcome not listed gets "outcome-other".
OUTCOME_CLASSES: Mapping[str, str] = {
    "delivered": "outcome-ok",
    "queued": "outcome-pending",
    "transient": "outcome-warn",
    "permanent": "outcome-bad",
    "content_refused": "outcome-bad",
}
# Alert values are untrusted and unbounded; a card shows a prefix of each (code points).
MAX_NAME_CHARS = 200
MAX_VALUE_CHARS = 300
MAX_DESCRIPTION_CHARS = 1000


def status_page_blueprint(
    snapshot: Callable[[], dict], authorize: Callable[[], flask.Response | None]
) -> flask.Blueprint:
    """GET / (the page) and GET /?fragment=live (its live part), both behind authorize(); static files open."""
    blueprint = flask.Blueprint(
        "status_page",
        __name__,
        template_folder=os.path.join(_HERE, "templates"),
        static_folder=os.path.join(_HERE, "static"),
        static_url_path="/static/status",
    )

    @blueprint.get("/")
    def status() -> flask.Response:
        refusal = authorize()
        if refusal is not None:
            return refusal  # as authorize made it: its status and WWW-Authenticate are its own
        fragment = flask.request.args.get("fragment")
        if fragment not in (None, LIVE_FRAGMENT):
            return _with_headers(flask.Response("unknown fragment\n", 400, mimetype="text/plain"))
        page = status_view(snapshot())
        template = "_live.html" if fragment == LIVE_FRAGMENT else "status.html"
        html = flask.render_template(
            template,
            page=page,
            fragment_url=flask.url_for("status_page.status", fragment=LIVE_FRAGMENT),
            ws_path=flask.request.script_root + "/ws",
        )
        return _with_headers(flask.Response(html, 200, mimetype="text/html"))

    @blueprint.after_request
    def static_headers(response: flask.Response) -> flask.Response:
        if flask.request.endpoint == "status_page.static":
            response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    return blueprint


def _with_headers(response: flask.Response) -> flask.Response:
    response.headers.update(HTML_HEADERS)
    return response


def color_class(status: str, severity: str) -> str:
    """The CSS class of alert_color(status, severity): status.css gives each the message's hex colour."""
    if status == RESOLVED:
        return "sev-resolved"
    return f"sev-{severity}" if severity in FIRING_COLORS else f"sev-{UNKNOWN_SEVERITY}"


def color_classes() -> dict[str, str]:
    """Every colour class with the hex colour alert_color gives it (what status.css must define)."""
    classes = {color_class("firing", severity): alert_color("firing", severity) for severity in FIRING_COLORS}
    classes[color_class(RESOLVED, UNKNOWN_SEVERITY)] = alert_color(RESOLVED, UNKNOWN_SEVERITY)
    return classes


def status_view(snapshot: Mapping) -> dict:
    """The snapshot as the templates show it: grouped, formatted and cut; every value still plain text."""
    now = parse_timestamp(str(snapshot.get("now", "")))
    firing = [_alert_view(alert, now) for alert in snapshot.get("firing", [])]
    groups = []
    for severity in SEVERITY_ORDER:
        members = [alert for alert in firing if alert["severity_group"] == severity]
        groups.append({"severity": severity, "css": color_class("firing", severity), "alerts": members})
    stale_after_hours = snapshot.get("stale_after_hours")
    return {
        "version": str(snapshot.get("version", "")),
        "now": display_timestamp(str(snapshot.get("now", ""))),
        "now_raw": str(snapshot.get("now", "")),
        "journal": _journal_view(snapshot.get("journal") or {}),
        "firing_count": len(firing),
        "firing_groups": groups,
        "stale_title": (
            f"No notification for {stale_after_hours:g} h (STALE_AFTER_HOURS); "
            "its resolved may have been lost upstream."
            if isinstance(stale_after_hours, (int, float))
            else "No notification for STALE_AFTER_HOURS; its resolved may have been lost upstream."
        ),
        "resolved": [_alert_view(alert, now) for alert in snapshot.get("resolved", [])],
        "notifications": [_notification_view(notification, now) for notification in snapshot.get("notifications", [])],
        "hooks": [_hook_view(hook) for hook in snapshot.get("hooks", [])],
        "live": dict(snapshot.get("live") or {}),
        "sms": _sms_view(snapshot.get("sms"), now),
    }


# SMS state → badge class: sent and waiting look fine, cancelled is neutral, the rest need a look.
SMS_STATUS_CLASSES = {"sent": "outcome-delivered", "pending": "outcome-transient", "held": "outcome-transient",
                      "digested": "outcome-delivered", "cancelled": "outcome-other", "opted_out": "outcome-permanent",
                      "failed": "outcome-permanent"}


def _sms_view(sms: Mapping | None, now: datetime | None) -> dict | None:
    """The SMS section (None when no Twilio is configured): the latest SMS, the waiting count, the opt-outs."""
    if not sms:
        return None
    messages = []
    for message in sms.get("sms") or []:
        status = str(message.get("status", ""))
        twilio_status = str(message.get("twilio_status") or "")
        code = message.get("error_code")
        messages.append({
            "recipient": _shown(message.get("recipient", "")),
            "kind": _shown(message.get("kind", "")),
            "alerts": _shown(", ".join(str(alert.get("alertname", "")) for alert in message.get("alerts") or []), 200),
            "status": _shown(status.replace("_", " ")),
            "status_css": SMS_STATUS_CLASSES.get(status, "outcome-other"),
            "twilio_status": _shown(twilio_status + (f" ({code})" if code else "")),
            "segments": int(message.get("segments") or 0),
            "reason": _shown(message.get("reason", ""), MAX_DESCRIPTION_CHARS),
            "when": _ago(now, str(message.get("sent_at") or message.get("due") or "")),
        })
    return {
        "messages": messages,
        "pending": int(sms.get("pending") or 0),
        "opted_out": [{"recipient": _shown(entry.get("recipient", "")), "since": _ago(now, str(entry.get("since", "")))}
                      for entry in sms.get("opted_out") or []],
        "error": _shown(sms.get("error", ""), MAX_DESCRIPTION_CHARS),
    }


def _shown(value: object, max_chars: int = MAX_VALUE_CHARS, single_line: bool = True) -> str:
    """An untrusted value as text to show: controls removed, whitespace folded (if single_line), cut."""
    text = clean_text(str(value)[: max_chars * 4 + 64])  # only a prefix can show; see safetext.display_text
    return cut_chars(one_line(text) if single_line else text.strip(), max_chars)


def coarse_duration(total_seconds: int) -> str:
    """A duration to a precision that suits its size: "2d 3h", "3h 12m", "5m 3s"."""
    seconds = max(int(total_seconds), 0)
    if seconds >= 86400:
        seconds -= seconds % 3600
    elif seconds >= 3600:
        seconds -= seconds % 60
    return format_duration(seconds)


def _ago(now: datetime | None, timestamp: str) -> str:
    """How long before now a timestamp was, e.g. "3m 5s ago"; "" when either does not parse."""
    moment = parse_timestamp(timestamp or "")
    if now is None or moment is None:
        return ""
    return coarse_duration(int((now - moment).total_seconds())) + " ago"


def _alert_view(alert: Mapping, now: datetime | None) -> dict:
    labels = {str(key): str(value) for key, value in (alert.get("labels") or {}).items()}
    annotations = {str(key): str(value) for key, value in (alert.get("annotations") or {}).items()}
    status = str(alert.get("status", ""))
    severity = str(alert.get("severity", UNKNOWN_SEVERITY))
    severity_group = severity if severity in SEVERITY_ORDER else UNKNOWN_SEVERITY
    summary_key, summary = annotation(annotations, "summary")
    description_key, description = annotation(annotations, "description")
    if not description:
        description_key, description = annotation(annotations, "message")
    key_labels = [(key, _shown(labels[key])) for key in KEY_LABELS if labels.get(key, "").strip()]
    shown_keys = SHOWN_ELSEWHERE | set(KEY_LABELS)
    other_labels = [(_shown(key), _shown(labels[key])) for key in sorted(labels) if key not in shown_keys]
    other_annotations = [
        (_shown(key), _shown(annotations[key]))
        for key in sorted(annotations)
        if key not in (summary_key, description_key) and annotations[key].strip()
    ]
    starts_at, ends_at = str(alert.get("starts_at", "")), str(alert.get("ends_at", ""))
    # When the relay learnt of the resolve; Alertmanager's endsAt is when it says the alert ended.
    resolved_at = str(alert.get("resolved_at") or "") or ends_at
    return {
        "id": str(alert.get("id", "")),
        "name": _shown(alert.get("alertname") or labels.get("alertname") or "(no alertname)", MAX_NAME_CHARS),
        "status": status,
        "severity": _shown(severity, MAX_NAME_CHARS),
        "severity_group": severity_group,
        "css": color_class(status, severity_group),
        "summary": _shown(summary),
        "description": _shown(description, MAX_DESCRIPTION_CHARS, single_line=False),
        "key_labels": key_labels,
        "other_labels": other_labels,
        "other_annotations": other_annotations,
        "integration": _shown(alert.get("integration", "")),
        "fired_for": coarse_duration(int(alert.get("fired_for_seconds") or 0)),
        "stale": bool(alert.get("stale")),
        "started": display_timestamp(starts_at),
        "ended": display_timestamp(ends_at) or display_timestamp(resolved_at),
        "ended_ago": _ago(now, resolved_at),
        "lasted": duration_between(starts_at, ends_at),
        "last_received_ago": _ago(now, str(alert.get("last_received", ""))),
        "deliveries": _last_deliveries(alert.get("deliveries") or [], now),
    }


def _last_deliveries(deliveries: Sequence[Mapping], now: datetime | None) -> list[dict]:
    """The latest delivery to each destination, in the order destinations first appear."""
    latest: dict[str, Mapping] = {}
    for delivery in deliveries:
        destination = str(delivery.get("destination", ""))
        moment = parse_timestamp(str(delivery.get("at", "")))
        previous = latest.get(destination)
        previous_moment = parse_timestamp(str(previous.get("at", ""))) if previous else None
        if previous is None or moment is None or previous_moment is None or moment >= previous_moment:
            latest[destination] = delivery
    return [
        {
            "destination": _shown(destination),
            **_outcome_view(str(delivery.get("outcome", ""))),
            "status": delivery.get("status") if isinstance(delivery.get("status"), int) else None,
            "at": display_timestamp(str(delivery.get("at", ""))),
            "ago": _ago(now, str(delivery.get("at", ""))),
        }
        for destination, delivery in latest.items()
    ]


def _outcome_view(outcome: str) -> dict:
    return {"outcome": _shown(outcome.replace("_", " ")), "outcome_css": OUTCOME_CLASSES.get(outcome, "outcome-other")}


def _notification_view(notification: Mapping, now: datetime | None) -> dict:
    counts = notification.get("alerts") or {}
    ms = notification.get("ms")
    return {
        "id": str(notification.get("id", "")),
        "request_id": _shown(notification.get("request_id", "")),
        "integration": _shown(notification.get("integration", "")),
        "receiver": _shown(notification.get("receiver", "")),
        "group_key": _shown(notification.get("group_key", ""), 120),
        "firing": int(counts.get("firing") or 0),
        "resolved": int(counts.get("resolved") or 0),
        "status_code": notification.get("status_code"),
        "ms": f"{ms:.0f} ms" if isinstance(ms, (int, float)) else "",
        "received": display_timestamp(str(notification.get("received", ""))),
        "received_ago": _ago(now, str(notification.get("received", ""))),
        "destinations": [
            {"destination": _shown(destination), **_outcome_view(str(outcome))}
            for destination, outcome in (notification.get("destinations") or {}).items()
        ],
    }


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 10 and value != int(value) else f"{value:.0f} s"


def _hook_view(hook: Mapping) -> dict:
    budget, window = hook.get("budget"), hook.get("window_seconds")
    posts = int(hook.get("posts_in_window") or 0)
    next_post = hook.get("next_post_in_seconds")
    return {
        "destination": _shown(hook.get("destination", "")),
        "posts_in_window": posts,
        "budget": budget,
        "window": _seconds(window) if isinstance(window, (int, float)) else "",
        "paced": budget is not None,
        "at_budget": budget is not None and posts >= budget,
        "queued": int(hook.get("queued") or 0),
        "next_post": "—" if next_post is None else ("now" if next_post <= 0 else "in " + _seconds(next_post)),
    }


def _journal_view(journal: Mapping) -> dict:
    available, fallback = bool(journal.get("available")), bool(journal.get("fallback"))
    return {
        "available": available,
        "fallback": fallback,
        "store": _shown(journal.get("store", "")),
        "detail": _shown(journal.get("detail", ""), MAX_DESCRIPTION_CHARS),
        "state": "unavailable" if not available else ("fallback" if fallback else "ok"),
    }
