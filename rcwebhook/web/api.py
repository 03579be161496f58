"""GET /api/v1/alerts, /api/v1/alerts/<id>, /api/v1/notifications: the journal as JSON (views only translate)."""

from __future__ import annotations

import re
from typing import Callable

from flask import Blueprint, Response, request

from ..journal import API_DEFAULT_LIMIT, API_MAX_LIMIT, Journal, JournalUnavailable
from ..model import FIRING, RESOLVED, SEVERITIES, UNKNOWN_SEVERITY
from ..relay import Answer, error_answer

STATUSES = (FIRING, RESOLVED)


def _limit() -> int | Answer:
    text = request.args.get("limit", "").strip()
    if not text:
        return API_DEFAULT_LIMIT
    # ASCII digits only: str.isdigit() also takes "²", and thousands of digits exceed int()'s limit (a 500).
    if not re.fullmatch(r"[0-9]{1,6}", text) or not 1 <= int(text) <= API_MAX_LIMIT:
        return error_answer(400, f"limit must be a whole number from 1 to {API_MAX_LIMIT}")
    return int(text)


def _choice(name: str, allowed: tuple[str, ...]) -> str | None | Answer:
    value = request.args.get(name, "").strip().lower()
    if not value:
        return None
    if value not in allowed:
        return error_answer(400, f"{name} must be one of {', '.join(allowed)}")
    return value


def api_blueprint(journal: Journal, authorize: Callable[[], Response | None],
                  answer: Callable[[Answer], Response]) -> Blueprint:
    api = Blueprint("api_v1", __name__, url_prefix="/api/v1")

    @api.before_request
    def check_access() -> Response | None:
        return authorize()

    def read(build: Callable[[], Answer]) -> Response:
        try:
            return answer(build())
        except JournalUnavailable as error:
            return answer(error_answer(503, f"the journal is unavailable: {error}", {"Retry-After": "10"}))

    @api.get("/alerts")
    def alerts() -> Response:
        limit = _limit()
        status = _choice("status", STATUSES)
        severity = _choice("severity", SEVERITIES + (UNKNOWN_SEVERITY,))
        for value in (limit, status, severity):
            if isinstance(value, Answer):
                return answer(value)
        integration = request.args.get("integration", "").strip() or None
        return read(lambda: Answer(200, {"alerts": journal.alerts(
            status=status, severity=severity, integration=integration, limit=limit)}))

    @api.get("/alerts/<alert_id>")
    def alert(alert_id: str) -> Response:
        def build() -> Answer:
            document = journal.alert(alert_id)
            return Answer(200, document) if document is not None else error_answer(404, "no such alert")
        return read(build)

    @api.get("/notifications")
    def notifications() -> Response:
        limit = _limit()
        if isinstance(limit, Answer):
            return answer(limit)
        return read(lambda: Answer(200, {"notifications": journal.notifications(limit=limit)}))

    @api.get("/sms")
    def sms() -> Response:
        limit = _limit()
        if isinstance(limit, Answer):
            return answer(limit)
        return read(lambda: Answer(200, journal.sms(limit=limit)))

    return api
