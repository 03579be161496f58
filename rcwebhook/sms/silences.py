"""Asking Alertmanager whether alerts are silenced or inhibited: a silence is how on-call acknowledges an alert.

GET {alertmanager}/api/v2/alerts?filter=<label matchers> lists the alerts Alertmanager holds that match, each with
its fingerprint and status {state: active|suppressed|unprocessed, silencedBy: [...], inhibitedBy: [...]}
(Alertmanager's OpenAPI spec, api/v2/openapi.yaml). The alert is found by its fingerprint among them.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass
from typing import Sequence

import requests

from ..bounded_http import AnswerTooLarge, read_capped
from ..client import describe_exception
from ..store import SmsAlert

CONNECT_TIMEOUT_SECONDS = 3.05
READ_TIMEOUT_SECONDS = 5.0
MAX_ANSWER_BYTES = 4 * 1024 * 1024  # a filtered list: a few alerts, far below this
# Alertmanager's filter takes label matchers; names outside Prometheus' label syntax cannot be written in one.
LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class SilenceAnswer:
    """Which of the alerts Alertmanager says are silenced or inhibited; error is set when it could not be asked."""

    suppressed: frozenset[str]  # alert (occurrence) ids
    error: str = ""


def _matcher(name: str, value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'{name}="{escaped}"'


class AlertmanagerSilences:
    """Looks alerts up in Alertmanager's API with our timeouts, size cap and optional Bearer token."""

    def __init__(self, token: str = "", session: requests.Session | None = None, *, token_url: str = ""):
        # The token goes only to ALERTMANAGER_URL: a notification's externalURL comes from whoever can post to the
        # relay (or is Grafana's own address), and must not receive it.
        self._token = token if token_url else ""
        self._token_url = token_url.rstrip("/")
        self._session = session or requests.Session()

    def check(self, base_url: str, alerts: Sequence[SmsAlert]) -> SilenceAnswer:
        if not base_url.startswith(("http://", "https://")):
            return SilenceAnswer(frozenset(), "no Alertmanager URL (set ALERTMANAGER_URL, or externalURL in "
                                              "Alertmanager's --web.external-url)")
        suppressed = set()
        for alert in alerts:
            try:
                if self._suppressed(base_url, alert):
                    suppressed.add(alert.id)
            except (requests.RequestException, AnswerTooLarge, ValueError) as error:
                reason = describe_exception(error) if isinstance(error, requests.RequestException) else str(error)
                return SilenceAnswer(frozenset(suppressed), f"Alertmanager at {_origin(base_url)} could not be "
                                                            f"asked: {reason}")
        return SilenceAnswer(frozenset(suppressed))

    def _suppressed(self, base_url: str, alert: SmsAlert) -> bool:
        matchers = [_matcher(name, value) for name, value in sorted(alert.labels.items()) if LABEL_NAME.match(name)]
        headers = {"Accept": "application/json"}
        if self._token and base_url.rstrip("/") == self._token_url:
            headers["Authorization"] = f"Bearer {self._token}"
        response = self._session.get(
            base_url.rstrip("/") + "/api/v2/alerts",
            params=[("filter", matcher) for matcher in matchers] + [
                ("active", "true"), ("silenced", "true"), ("inhibited", "true")],
            headers=headers, timeout=(CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS), stream=True,
            allow_redirects=False,
        )
        try:
            body = read_capped(response, MAX_ANSWER_BYTES)
        finally:
            response.close()
        if response.status_code != 200:
            raise ValueError(f"HTTP {response.status_code}" + (
                " (ALERTMANAGER_TOKEN missing or wrong?)" if response.status_code in (401, 403) else ""))
        try:
            listed = json.loads(body)
        except (ValueError, RecursionError):
            raise ValueError("the answer is not JSON (is ALERTMANAGER_URL Alertmanager's?)") from None
        if not isinstance(listed, list):
            raise ValueError("the answer is not a list of alerts (is ALERTMANAGER_URL Alertmanager's?)")
        for entry in listed:
            if isinstance(entry, dict) and entry.get("fingerprint") == alert.fingerprint:
                status = entry.get("status") if isinstance(entry.get("status"), dict) else {}
                return bool(status.get("state") == "suppressed" or status.get("silencedBy")
                            or status.get("inhibitedBy"))
        return False  # not held (any more): nothing says it was acknowledged, so the phone is paged


def _origin(url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    return f"{parsed.scheme}://{parsed.hostname}" + (f":{parsed.port}" if parsed.port else "")
