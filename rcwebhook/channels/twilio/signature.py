"""Twilio's request signature (X-Twilio-Signature), computed and checked as Twilio documents it (pure).

Twilio signs each webhook it sends with HMAC-SHA1, keyed by the account's auth token (an API key's secret cannot
check it), over the full URL it called followed by every POST parameter's name and value, sorted by name, with no
separators; the header carries its base64 (twilio.com/docs/usage/security). Tested against the published vectors
of Twilio's helper libraries (twilio-python tests/unit/test_request_validator.py, twilio-csharp, twilio-php).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Iterable, Mapping, Union
from urllib.parse import urlsplit, urlunsplit

Params = Union[Mapping[str, str], Iterable[tuple[str, str]]]
DEFAULT_PORTS = {"https": "443", "http": "80"}


def _pairs(params: Params) -> list[tuple[str, str]]:
    if hasattr(params, "getlist"):  # Flask's request.form: its items() would give each name's first value only
        items = [(name, value) for name in params for value in params.getlist(name)]
    else:
        items = params.items() if isinstance(params, Mapping) else params
    return [(str(name), str(value)) for name, value in items]


def _signed_text(url: str, params: Params) -> str:
    # A name given several times signs each of its distinct values, sorted: what twilio-python (sorted(set(values)))
    # and twilio-php do; their published vector for Digits=5678&Digits=1234 pins it.
    return url + "".join(name + value for name, value in sorted(set(_pairs(params))))


def twilio_signature(auth_token: str, url: str, params: Params) -> str:
    """The X-Twilio-Signature Twilio sends for a POST of params to url (exactly as given: case and port kept)."""
    digest = hmac.new(auth_token.encode("utf-8"), _signed_text(url, params).encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _split_port(netloc: str) -> tuple[str, str, str]:
    """(userinfo with its "@", host, port) of a netloc, case kept (urlsplit's hostname would lower-case it)."""
    userinfo, at, hostport = netloc.rpartition("@")
    host, colon, port = hostport.rpartition(":")
    if not colon or not port.isdigit() or (host.startswith("[") and not host.endswith("]")):
        host, port = hostport, ""  # no port (an IPv6 literal's own colons are inside its brackets)
    return userinfo + at, host, port


def url_variants(url: str) -> tuple[str, ...]:
    """The URL without its port and with the scheme's default port added (when it has none): Twilio has signed
    either form, so its helper libraries accept both; so does signature_matches."""
    parts = urlsplit(url)
    userinfo, host, port = _split_port(parts.netloc)
    without_port = urlunsplit(parts._replace(netloc=userinfo + host))
    variants = [url, without_port]
    default_port = DEFAULT_PORTS.get(parts.scheme.lower())
    if not port and default_port:
        variants.append(urlunsplit(parts._replace(netloc=f"{userinfo}{host}:{default_port}")))
    return tuple(dict.fromkeys(variants))


def signature_matches(auth_token: str, url: str, params: Params, presented: str) -> bool:
    """True when presented is Twilio's signature of this request (compared in constant time); False for an empty
    token or signature, which nothing can be checked with."""
    if not auth_token or not presented:
        return False
    presented_bytes = presented.strip().encode("utf-8", "replace")
    matched = False
    for variant in url_variants(url):  # every variant is compared: the time taken does not tell which one matched
        expected = twilio_signature(auth_token, variant, params).encode("ascii")
        matched |= hmac.compare_digest(expected, presented_bytes)
    return matched
