"""SMS destinations: who is paged, when, how often and how (pure: parsed from the environment or a routes file).

An SMS destination pages its recipients in tiers: tier 0 is `recipients` after `delay_seconds` (SMS_RECIPIENTS after
SMS_DELAY_SECONDS without a routes file); each further tier of a routes file's `tiers:` is paged only if the alert
is still firing and unsilenced when its `after_seconds` have passed.
"""

from __future__ import annotations

import datetime
import os
import re
import threading
import zoneinfo
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from ..safetext import masked_number

# E.164: a plus, a country code that does not start with 0, at most 15 digits in all (ITU-T E.164 §6).
E164_PATTERN = re.compile(r"^\+[1-9]\d{6,14}$")
DEFAULT_SEVERITIES = ("critical",)
DEFAULT_MAX_PER_HOUR = 10
DEFAULT_MAX_PER_DAY = 200  # a cost ceiling for the whole relay
DEFAULT_MAX_SEGMENTS = 3  # Twilio advises at most 320 characters; three GSM-7 segments are 459
DEFAULT_GIVE_UP_SECONDS = 3600.0
DEFAULT_TIMEZONE = "UTC"
MINUTES_PER_DAY = 24 * 60


class SmsConfigError(ValueError):
    """An SMS setting that cannot be used; the message names the setting and never shows a full number."""


def parse_recipients(text: str, where: str) -> tuple[str, ...]:
    """Comma- or line-separated E.164 numbers (# starts a comment), each checked; duplicates once."""
    numbers: list[str] = []
    for line in text.splitlines():
        for item in line.split("#", 1)[0].split(","):
            number = item.strip().replace(" ", "")
            if not number:
                continue
            if not E164_PATTERN.match(number):
                raise SmsConfigError(f"{where}: {masked_number(number)!s} is not an E.164 number such as +15551234567 "
                                     "(a plus, the country code, the number; no spaces or dashes)")
            if number not in numbers:
                numbers.append(number)
    return tuple(numbers)


@dataclass(frozen=True)
class HoursWindow:
    """When SMS may go out, e.g. 08:00-18:00 in a timezone; a window whose end is before its start spans midnight."""

    start_minute: int
    end_minute: int
    timezone: str = DEFAULT_TIMEZONE

    def __str__(self) -> str:
        return f"{self.start_minute // 60:02d}:{self.start_minute % 60:02d}-" \
               f"{self.end_minute // 60:02d}:{self.end_minute % 60:02d} {self.timezone}"

    def _zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    def _open_at_minute(self, minute: int) -> bool:
        if self.start_minute <= self.end_minute:
            return self.start_minute <= minute < self.end_minute
        return minute >= self.start_minute or minute < self.end_minute

    def next_open(self, at: float) -> float:
        """`at` when the window is open then, else the epoch time at which it next opens."""
        local = datetime.datetime.fromtimestamp(at, self._zone())
        if self._open_at_minute(local.hour * 60 + local.minute):
            return at
        day = local.date()
        for _ in range(3):  # today's opening, else tomorrow's (a DST change can skip a wall-clock time)
            opening = datetime.datetime.combine(
                day, datetime.time(self.start_minute // 60, self.start_minute % 60), self._zone())
            if opening.timestamp() > at:
                return opening.timestamp()
            day += datetime.timedelta(days=1)
        return at  # unreachable for a valid window; never hold an SMS for ever


def parse_hours(text: str, timezone_name: str, where: str, timezone_where: str = "") -> HoursWindow | None:
    text = text.strip()
    if not text:
        return None
    match = re.fullmatch(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})", text)
    if not match:
        raise SmsConfigError(f"{where} must look like 08:00-18:00, got {text!r}")
    start_hour, start_minute, end_hour, end_minute = (int(group) for group in match.groups())
    if start_hour > 23 or end_hour > 24 or start_minute > 59 or end_minute > 59 or (end_hour == 24 and end_minute):
        raise SmsConfigError(f"{where}: {text!r} is not a time of day range")
    start, end = start_hour * 60 + start_minute, end_hour * 60 + end_minute
    if start == end % MINUTES_PER_DAY:
        raise SmsConfigError(f"{where}: {text!r} starts where it ends; leave it unset to send at any time")
    return HoursWindow(start, end, timezone(timezone_name, timezone_where or where))


def timezone(name: str, where: str) -> str:
    name = name.strip() or DEFAULT_TIMEZONE
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise SmsConfigError(f"{where}: unknown timezone {name!r} (an IANA name such as Europe/Berlin)") from None
    return name


class RecipientsFile:
    """A recipients file, re-read when it changes (so the on-call list rotates without a restart).

    A file that becomes unreadable or wrong keeps the last good list, with one ERROR: paging the old on-call
    beats paging nobody."""

    def __init__(self, path: str, where: str, on_error: Callable[[str], None] = lambda message: None):
        self.path, self.where, self.on_error = path, where, on_error
        self._lock = threading.Lock()
        self._signature: tuple | None = None
        self._numbers = self._read()  # SmsConfigError at start: a relay must not start paging nobody
        self._failing = False

    def _stat(self) -> tuple:
        status = os.stat(self.path)
        return (status.st_mtime_ns, status.st_size, status.st_ino)

    def _read(self) -> tuple[str, ...]:
        try:
            signature = self._stat()
            with open(self.path, encoding="utf-8") as handle:
                numbers = parse_recipients(handle.read(), f"{self.where} {self.path}")
        except OSError as error:
            raise SmsConfigError(f"{self.where}: cannot read {self.path!r}: {error.strerror}") from None
        except UnicodeDecodeError as error:
            raise SmsConfigError(f"{self.where}: {self.path!r} is not UTF-8 (byte {error.start})") from None
        if not numbers:
            raise SmsConfigError(f"{self.where}: {self.path!r} names no recipient")
        self._signature = signature
        return numbers

    def numbers(self) -> tuple[str, ...]:
        with self._lock:
            try:
                changed = self._stat() != self._signature
            except OSError:
                changed = True
            if changed:
                try:
                    self._numbers = self._read()
                    self._failing = False
                except SmsConfigError as error:
                    if not self._failing:
                        self.on_error(f"{error}; still paging the {len(self._numbers)} recipient(s) read before")
                    self._failing = True
            return self._numbers


@dataclass(frozen=True)
class SmsTier:
    after_seconds: float
    recipients: tuple[str, ...] = field(default=(), repr=False)
    recipients_file: RecipientsFile | None = field(default=None, compare=False, repr=False)

    def numbers(self) -> tuple[str, ...]:
        return self.recipients_file.numbers() if self.recipients_file is not None else self.recipients


@dataclass(frozen=True)
class SmsDestination:
    """A named SMS destination ("sms" for the environment's SMS_* settings)."""

    name: str
    tiers: tuple[SmsTier, ...]
    severities: tuple[str, ...] = DEFAULT_SEVERITIES  # the relay's normalised severities
    max_per_hour: int = DEFAULT_MAX_PER_HOUR
    hours: HoursWindow | None = None
    send_resolved: bool = False
    template: object | None = field(default=None, compare=False, repr=False)  # sms.render.SmsTemplate
    max_segments: int = DEFAULT_MAX_SEGMENTS
    give_up_seconds: float = DEFAULT_GIVE_UP_SECONDS

    @property
    def delay_seconds(self) -> float:
        return self.tiers[0].after_seconds

    def describe(self) -> str:
        tiers = "; ".join(
            f"tier {index}: {len(tier.numbers())} recipient(s) ({', '.join(masked_number(n) for n in tier.numbers())}) "
            f"after {tier.after_seconds:g} s" for index, tier in enumerate(self.tiers))
        extras = [f"severities {','.join(self.severities)}", f"at most {self.max_per_hour}/hour per recipient"]
        extras += [f"only {self.hours}"] if self.hours else []
        extras += ["resolved too"] if self.send_resolved else []
        return f"SMS destination {self.name}: {tiers}; {', '.join(extras)}"


def parse_tiers(specs: Sequence[Mapping], where: str, read_file: Callable[[str, str], RecipientsFile]) -> list[SmsTier]:
    tiers = []
    for index, spec in enumerate(specs):
        place = f"{where}[{index}]"
        if not isinstance(spec, Mapping):
            raise SmsConfigError(f"{place} must be a mapping with after_seconds: and recipients:")
        unknown = sorted(str(key) for key in spec if key not in ("after_seconds", "recipients", "recipients_file"))
        if unknown:
            raise SmsConfigError(f"{place}: unknown key(s) {', '.join(unknown)} (allowed: after_seconds, "
                                 "recipients, recipients_file)")
        tiers.append(tier_of(spec, lambda key, place=place: f"{place}.{key}", read_file, seconds_key="after_seconds"))
    return tiers


def tier_of(spec: Mapping, place: Callable[[str], str], read_file: Callable[[str, str], RecipientsFile], *,
            seconds_key: str) -> SmsTier:
    """One tier from its keys (place(key) names a key in messages: SMS_DELAY_SECONDS, or tiers[1].after_seconds)."""
    seconds = number(spec.get(seconds_key, 0), place(seconds_key), minimum=0)
    if "recipients" in spec and "recipients_file" in spec:
        raise SmsConfigError(f"{place('recipients')}: give recipients or recipients_file, not both")
    if "recipients_file" in spec:
        path = spec["recipients_file"]
        if not isinstance(path, str) or not path.strip():
            raise SmsConfigError(f"{place('recipients_file')} must be a path")
        return SmsTier(seconds, recipients_file=read_file(path.strip(), place("recipients_file")))
    raw = spec.get("recipients")
    if isinstance(raw, str):
        text = raw
    elif isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        text = ",".join(raw)
    elif isinstance(raw, list) and any(isinstance(item, int) and not isinstance(item, bool) for item in raw):
        # YAML reads +15551230001 unquoted as the integer 15551230001: the plus is gone before we see it.
        raise SmsConfigError(f"{place('recipients')}: quote each number (\"+15551230001\"): YAML reads an unquoted "
                             "+number as an integer and drops its plus")
    else:
        raise SmsConfigError(f"{place('recipients')} must be a list of E.164 numbers (or give recipients_file)")
    numbers = parse_recipients(text, place("recipients"))
    if not numbers:
        raise SmsConfigError(f"{place('recipients')} names no number")
    return SmsTier(seconds, numbers)


def number(value: object, where: str, *, minimum: float, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise SmsConfigError(f"{where} must be a number")
    try:
        result = int(str(value).strip()) if integer else float(str(value).strip())
    except ValueError:
        raise SmsConfigError(f"{where} must be {'a whole number' if integer else 'a number'}, got {value!r}") \
            from None
    if result != result or result < minimum or result == float("inf"):
        raise SmsConfigError(f"{where} must be at least {minimum:g}, got {value!r}")
    return result


# The keys of a routes file's sms: destination; SMS_<KEY> are the environment's equivalents (without tiers).
DESTINATION_KEYS = ("recipients", "recipients_file", "severities", "delay_seconds", "max_per_hour", "hours",
                    "timezone", "send_resolved", "template", "max_segments", "give_up_seconds", "tiers")
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _boolean(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS or text in FALSE_WORDS:
        return text in TRUE_WORDS
    raise SmsConfigError(f"{where} must be true or false")


def _severities(value: object, where: str) -> tuple[str, ...]:
    from ..formatting import SEVERITY_ALIASES
    from ..model import UNKNOWN_SEVERITY

    by_word = {alias: severity for severity, aliases in SEVERITY_ALIASES.items() for alias in aliases}
    by_word[UNKNOWN_SEVERITY] = UNKNOWN_SEVERITY
    words = value if isinstance(value, list) else str(value).split(",")
    severities = []
    for word in (str(item).strip().lower() for item in words):
        if not word:
            continue
        if word not in by_word:
            raise SmsConfigError(f"{where}: {word!r} is no severity (critical, warning, info, unknown or an alias)")
        severities.append(by_word[word])
    if not severities:
        raise SmsConfigError(f"{where} names no severity")
    return tuple(dict.fromkeys(severities))


def build_destination(name: str, values: Mapping[str, object], place: Callable[[str], str],
                      on_error: Callable[[str], None] = lambda message: None) -> SmsDestination:
    """A destination from its settings (lower-case keys of DESTINATION_KEYS; place(key) names one in messages)."""
    from ..templates import TemplateError
    from .render import SmsTemplate

    def read_file(path: str, where: str) -> RecipientsFile:
        return RecipientsFile(path, where, on_error)

    first = {key: values[key] for key in ("recipients", "recipients_file") if key in values}
    first["delay_seconds"] = values.get("delay_seconds", 0)
    tiers = []
    if "recipients" in first or "recipients_file" in first:
        tiers.append(tier_of(first, place, read_file, seconds_key="delay_seconds"))
    if values.get("tiers") not in (None, ""):
        if not isinstance(values["tiers"], list) or not values["tiers"]:
            raise SmsConfigError(f"{place('tiers')} must be a list of {{after_seconds, recipients}}")
        tiers += parse_tiers(values["tiers"], place("tiers"), read_file)
    if not tiers:
        raise SmsConfigError(f"{place('recipients')} is needed: the numbers to page")
    if any(later.after_seconds < earlier.after_seconds for earlier, later in zip(tiers, tiers[1:])):
        raise SmsConfigError(f"{place('tiers')}: each tier must come at or after the one before it")
    template = None
    if values.get("template") not in (None, ""):
        try:
            template = SmsTemplate(str(values["template"]), place("template"))
        except TemplateError as error:
            raise SmsConfigError(str(error)) from None
    hours = parse_hours(str(values.get("hours") or ""), str(values.get("timezone") or ""), place("hours"),
                        place("timezone"))
    if values.get("timezone") not in (None, "") and hours is None:
        timezone(str(values["timezone"]), place("timezone"))  # checked even when unused: a typo is a typo
    return SmsDestination(
        name=name,
        tiers=tuple(tiers),
        severities=_severities(values["severities"], place("severities")) if values.get("severities") not in
        (None, "") else DEFAULT_SEVERITIES,
        max_per_hour=int(number(values.get("max_per_hour", DEFAULT_MAX_PER_HOUR), place("max_per_hour"),
                                minimum=1, integer=True)),
        hours=hours,
        send_resolved=_boolean(values.get("send_resolved", False), place("send_resolved")),
        template=template,
        max_segments=int(number(values.get("max_segments", DEFAULT_MAX_SEGMENTS), place("max_segments"),
                                minimum=1, integer=True)),
        give_up_seconds=number(values.get("give_up_seconds", DEFAULT_GIVE_UP_SECONDS), place("give_up_seconds"),
                               minimum=1),
    )


ENVIRONMENT_KEYS = tuple(key for key in DESTINATION_KEYS if key not in ("tiers", "recipients_file"))


def environment_variable(key: str) -> str:
    return f"SMS_{key.upper()}"


def destination_from_environment(environ: Mapping[str, str], read_setting: Callable[[str], str]) -> \
        SmsDestination | None:
    """The environment's SMS destination, "sms"; None when SMS_RECIPIENTS is unset (no SMS, as before)."""
    recipients = read_setting("SMS_RECIPIENTS")
    if not recipients:
        stray = [environment_variable(key) for key in ENVIRONMENT_KEYS if key != "recipients"
                 and environ.get(environment_variable(key), "").strip()]
        if stray:
            raise SmsConfigError(f"{', '.join(stray)} set but SMS_RECIPIENTS is not: set the numbers to page, or "
                                 "unset them")
        return None
    values: dict[str, object] = {"recipients": recipients}
    for key in ENVIRONMENT_KEYS:
        raw = environ.get(environment_variable(key), "").strip()
        if raw and key != "recipients":
            values[key] = raw
    return build_destination("sms", values, environment_variable)
