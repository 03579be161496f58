"""Who may see the status page, /api/v1/* and /ws: alert contents name hosts and services.

With STATUS_TOKEN: a Bearer token or the password of HTTP Basic (any user name), so a browser can log in.
Without it: only clients on the loopback interface (so `make run` shows them), 403 with a hint elsewhere.
"""

from __future__ import annotations

import hmac
import ipaddress

from flask import Response, request

from ..relay import error_answer

STATUS_REALM = "rocketchat-webhook status"
LOOPBACK_HINT = (
    "the status page, /api/v1 and /ws answer only on the loopback interface unless STATUS_TOKEN is set: set it, "
    "then log in with any user name and the token as password (or send 'Authorization: Bearer <token>')"
)


def is_loopback(address: str | None) -> bool:
    try:
        parsed = ipaddress.ip_address((address or "").split("%")[0])
    except ValueError:
        return False
    mapped = getattr(parsed, "ipv4_mapped", None)
    return (mapped or parsed).is_loopback


def authorization_secrets() -> list[str]:
    """The secrets the Authorization header offers: a Bearer token, or the password of HTTP Basic (any user)."""
    presented = []
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        presented.append(credentials.strip())
    if request.authorization is not None and request.authorization.type == "basic":
        presented.append(request.authorization.password or "")
    return presented


class StatusAccess:
    """authorize() is None when the request may see status data, else the refusal (a Flask Response)."""

    def __init__(self, token: str, answer):
        self.token = token
        self.answer = answer  # relay Answer → Flask Response

    def authorize(self) -> Response | None:
        if not self.token:
            if is_loopback(request.remote_addr):
                return None
            return self.answer(error_answer(403, LOOPBACK_HINT))
        matched = False
        for candidate in authorization_secrets() or [""]:
            matched |= hmac.compare_digest(candidate.encode("utf-8"), self.token.encode("utf-8"))
        if matched:
            return None
        return self.answer(error_answer(
            401, "missing or wrong STATUS_TOKEN: log in with any user name and the token as password, or send "
                 "'Authorization: Bearer <token>'",
            {"WWW-Authenticate": f'Basic realm="{STATUS_REALM}", charset="UTF-8"'},
        ))
