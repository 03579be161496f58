"""Body text made safe and bounded for Rocket.Chat: encoding, control characters, mentions, lengths, URLs."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

ELLIPSIS = "…"
ZERO_WIDTH_SPACE = "\u200b"

# json.loads turns an unpaired escape such as "\ud83d" into a lone surrogate, which UTF-8 cannot encode:
# left in place it would make json.dumps(...).encode("utf-8") fail on the paging path.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# C0/C1 control characters (NUL included) carry nothing a reader can use; tab and newline are kept.
_CONTROL_CHARACTER = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Rocket.Chat makes "@name" a mention when the "@" starts a word ("@all" and "@here" notify a whole room).
# An "@" after a letter, a digit or "." is part of an e-mail address or a URL and is left alone; "_" does
# not protect it, because Rocket.Chat also reads "_@here_" (italics) as a mention.
_MENTION_AT = re.compile(r"(?<![^\W_])(?<!\.)@(?=[\w.\-])")
_WHITESPACE_RUN = re.compile(r"\s+")
_LINE_BREAK_OR_TAB = re.compile(r"[^\S ]")  # any whitespace but the plain space
# Characters that would end or break a Markdown link target "[label](url)"; they are percent-encoded.
_MARKDOWN_URL_UNSAFE = re.compile(r"[\s()<>`\\\"]")


def replace_lone_surrogates(text: str) -> str:
    """Replace unpaired UTF-16 surrogates with U+FFFD so the text encodes as UTF-8."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def clean_text(text: str) -> str:
    """Text from a body, fit for display: lone surrogates replaced, control characters removed."""
    return _CONTROL_CHARACTER.sub("", replace_lone_surrogates(text))


def neutralise_mentions(text: str) -> str:
    """Turn every "@name" that Rocket.Chat would read as a mention into plain text (a zero-width space after "@")."""
    return _MENTION_AT.sub("@" + ZERO_WIDTH_SPACE, text)


def one_line(text: str) -> str:
    """Collapse every run of whitespace, line breaks included, into one space."""
    return _WHITESPACE_RUN.sub(" ", text).strip()


def display_text(text: str, max_chars: int, single_line: bool = False) -> str:
    """Text taken from a body as it may appear in a message: cleaned, mentions neutralised, cut to max_chars."""
    # Only a prefix can be shown: cleaning all of a megabyte annotation for a 500-character field is wasted work.
    # Cleaning only removes characters, so a window a few times longer than the limit keeps the result the same
    # except in pathological text (mostly control characters or whitespace), which then just shows less.
    window_chars = max_chars * 4 + 64
    shown = clean_text(text[:window_chars])
    shown = neutralise_mentions(one_line(shown) if single_line else shown.strip())
    if len(text) > window_chars and len(shown) < max_chars:
        return shown + ELLIPSIS  # the window cut something even though the cleaned prefix is short
    return cut_chars(shown, max_chars)


def cut_chars(text: str, max_chars: int) -> str:
    """Cut text to at most max_chars code points, ending with an ellipsis when something was cut."""
    if len(text) <= max_chars:
        return text
    if max_chars < 1:
        return ""
    return text[: max_chars - 1] + ELLIPSIS


def utf16_units(text: str) -> int:
    """Length in UTF-16 code units, the unit of Rocket.Chat's Message_MaxAllowedSize (JavaScript's length)."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def cut_utf16_units(text: str, max_units: int) -> str:
    """Cut text to at most max_units UTF-16 code units with an ellipsis, never splitting a surrogate pair."""
    if utf16_units(text) <= max_units:
        return text
    budget_units = max_units - utf16_units(ELLIPSIS)
    used_units = 0
    kept_chars = 0
    for character in text:
        # Iterating code points keeps an astral character (two UTF-16 units) whole.
        character_units = 2 if ord(character) > 0xFFFF else 1
        if used_units + character_units > budget_units:
            break
        used_units += character_units
        kept_chars += 1
    return text[:kept_chars] + ELLIPSIS if budget_units >= 0 else ""


def is_http_url(url: str) -> bool:
    """True for an absolute http:// or https:// URL with a host, the only links the relay sends."""
    if not url.startswith(("http://", "https://")):
        return False
    # Spaces occur in wiki links (browsers and markdown_link encode them); line breaks and controls do not belong.
    if _LINE_BREAK_OR_TAB.search(url) or _CONTROL_CHARACTER.search(url) or _LONE_SURROGATE.search(url):
        return False
    try:
        parts = urlsplit(url)
        return bool(parts.hostname) and not _WHITESPACE_RUN.search(parts.netloc)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return False


def markdown_link(label: str, url: str) -> str:
    """A Markdown link whose target cannot break out of its parentheses."""
    safe_url = _MARKDOWN_URL_UNSAFE.sub(lambda match: "".join(f"%{byte:02X}" for byte in match.group().encode()), url)
    return f"[{label}]({safe_url})"


def masked_number(number: str) -> str:
    """The only way a phone number may be shown: "…" and its last three digits ("+15551234567" → "…567")."""
    return "…" + re.sub(r"\D", "", number)[-3:]
