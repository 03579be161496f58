"""Keeping secrets (hook URL tokens, the relay's own token) out of every log line, answer and error."""

from __future__ import annotations

import re
from typing import Iterable

REDACTED = "<redacted>"
# requests and urllib3 put the full URL, token included, into their exception texts.
URL_PATTERN = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>)]+")
HOOK_PATH_PATTERN = re.compile(r"/hooks/[^\s'\"<>)]+")


class Redactor:
    """Removes known secret values and any /hooks/... path from a text, and with strip_urls any URL too."""

    def __init__(self, secrets: Iterable[str] = (), *, strip_urls: bool = True):
        # Longest first, so a URL is removed whole before its pieces are looked for.
        self.secrets = tuple(sorted({secret for secret in secrets if secret}, key=len, reverse=True))
        self.strip_urls = strip_urls

    def add(self, secret: str) -> None:
        """Redact one more value from now on (a rotated token)."""
        if secret and secret not in self.secrets:
            self.secrets = tuple(sorted({*self.secrets, secret}, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        if self.strip_urls:
            text = URL_PATTERN.sub("<url>", text)
        return HOOK_PATH_PATTERN.sub("/hooks/" + REDACTED, text)

