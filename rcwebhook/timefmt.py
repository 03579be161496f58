"""Alertmanager and Grafana timestamps: the forms seen in bodies, shown in UTC, and durations."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

# RFC 3339 as Go marshals a time.Time: any fractional precision (Alertmanager sends nanoseconds), "Z" or an offset.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})"
)
# Go's time.Time.String(), sent by Grafana's test notifications:
# "2026-05-27 15:36:00.112013015 +0000 UTC m=+8560.285724134" (zone name and monotonic reading optional).
_GO_TIME_STRING = re.compile(
    r"(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d+))? ([+-]\d{4})(?: [A-Za-z0-9+\-]+)?(?: m=[+-][\d.]+)?"
)
# Go's zero time.Time; Alertmanager sends it as endsAt while an alert fires, meaning "not set".
ZERO_TIME_UTC = datetime(1, 1, 1, tzinfo=timezone.utc)


def parse_timestamp(text: str) -> datetime | None:
    """The UTC instant an RFC 3339 or Go time.String() timestamp names; None when it does not parse."""
    stripped = text.strip()
    match = _RFC3339.fullmatch(stripped) or _GO_TIME_STRING.fullmatch(stripped)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    # datetime keeps microseconds; finer digits are dropped (the display shows whole seconds anyway).
    microseconds = int((fraction or "")[:6].ljust(6, "0"))
    try:
        zone = timezone(_offset(offset))
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), microseconds, zone)
        return moment.astimezone(timezone.utc)
    except (ValueError, OverflowError):  # day 31 of February, second 60, an offset past 24 h, year 0 after shifting
        return None


def _offset(text: str) -> timedelta:
    """The offset of "Z", "+08:00" or "-0500"."""
    if text in ("Z", "z"):
        return timedelta(0)
    digits = text[1:].replace(":", "")
    magnitude = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return -magnitude if text[0] == "-" else magnitude


def is_unset(text: str) -> bool:
    """True for an empty timestamp or Go's zero time (in any of its spellings)."""
    return not text.strip() or parse_timestamp(text) == ZERO_TIME_UTC


def display_timestamp(text: str) -> str:
    """A timestamp as "2024-01-15 10:30:00 UTC"; "" when unset; exactly as given when it does not parse."""
    if is_unset(text):
        return ""
    moment = parse_timestamp(text)
    if moment is None:
        return text
    # Formatted by hand: strftime("%Y") drops the zero padding of years below 1000 on glibc.
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d} "
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} UTC"
    )


def duration_between(starts_at: str, ends_at: str) -> str:
    """How long an alert lasted, e.g. "1h 5m 3s"; "" unless both timestamps are set, parse, and are in order."""
    if is_unset(starts_at) or is_unset(ends_at):
        return ""
    start, end = parse_timestamp(starts_at), parse_timestamp(ends_at)
    if start is None or end is None or end < start:
        return ""
    return format_duration(int((end - start).total_seconds()))


def format_duration(total_seconds: int) -> str:
    """Whole seconds as "2d 3h 5s": days, hours, minutes, seconds, zero parts left out ("0s" for zero)."""
    minutes, seconds = divmod(max(total_seconds, 0), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    amounts = ((days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s"))
    parts = [f"{amount}{unit}" for amount, unit in amounts if amount]
    return " ".join(parts) or "0s"


def normalised_timestamp(text: str) -> str:
    """An alert's startsAt/endsAt in RFC 3339 UTC ("" when unset, as sent when it does not parse)."""
    if is_unset(text):
        return ""
    moment = parse_timestamp(text)
    if moment is None:
        return text.strip()
    fraction = f".{moment.microsecond:06d}".rstrip("0") if moment.microsecond else ""
    # By hand: strftime("%Y") drops the zero padding of years below 1000 on glibc.
    return (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:{moment.minute:02d}:"
            f"{moment.second:02d}{fraction}Z")
