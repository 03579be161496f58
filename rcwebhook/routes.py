"""The route table: integrations (endpoints with their secrets), routes (matchers → destinations), destinations
(named Rocket.Chat hooks and how their messages look). Pure: built from the config or a routes file, no I/O here.

Without a routes file the environment's settings are translated into the equivalent table, so a user who changes
nothing sees nothing change: one integration, "default", routing by severity to destinations named after the
severities, posting to hooks named as before (critical, warning+info, default).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from .config import Config, secret_parts_of_url
from .formatting import classify_severity
from .hookqueue import Part
from .matchers import Matcher, matches_all
from .model import SEVERITIES, UNKNOWN_SEVERITY, Alert, Notification
from .pacing import RateLimit
from .sms.destination import SmsDestination

DEFAULT_INTEGRATION = "default"


@dataclass(frozen=True)
class Hook:
    """One Rocket.Chat incoming-webhook URL: one queue, one pacing budget. Named by the destinations posting there."""

    name: str
    url: str = field(repr=False)  # holds the hook's secret token
    rate_limit: RateLimit | None = None  # None: ROCKETCHAT_RATE_LIMIT
    threads: bool = False  # resolved alerts and reminders reply in the thread of the message that announced them

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class RouteDestination:
    """A named destination: the hook it posts to and how its alerts are shown there."""

    name: str
    url: str = field(repr=False)
    mention: str = ""  # firing messages only
    rate_limit: RateLimit | None = None
    alias: str = ""
    emoji: str = ""
    avatar_url: str = ""
    template_name: str = ""
    template: object | None = field(default=None, compare=False, repr=False)  # templates.MessageTemplate
    threads: bool = False


@dataclass(frozen=True)
class AlertLook:
    """How one alert is shown on one hook: as the first destination its routes chose there, for the integration
    that received it, with the mentions of every destination that reached that hook (any of them may page)."""

    destination: RouteDestination
    integration: str
    severity_label: str
    mentions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Route:
    matchers: tuple[Matcher, ...] = ()
    severity: str | None = None  # the relay's normalised severity (critical, warning, info, unknown)
    destinations: tuple[str, ...] = ()
    continue_matching: bool = False
    where: str = ""  # e.g. integrations.default.routes[1], for messages

    def matches(self, labels: Mapping[str, str], severity: str) -> bool:
        return (self.severity is None or self.severity == severity) and matches_all(self.matchers, labels)

    def describe(self) -> str:
        conditions = [str(matcher) for matcher in self.matchers]
        if self.severity is not None:
            conditions.append(f"severity is {self.severity}")
        target = ", ".join(self.destinations)
        more = " (continue)" if self.continue_matching else ""
        return f"{' and '.join(conditions) or 'any alert'} → {target}{more}"


@dataclass(frozen=True)
class Integration:
    """An endpoint (POST /webhook/<name>) and its secret."""

    name: str
    token: str = field(default="", repr=False)
    token_file: str = ""
    token_file_setting: str = "WEBHOOK_TOKEN_FILE"  # what log lines about token_file call it
    previous_token: str = field(default="", repr=False)
    severity_label: str = "severity"
    routes: tuple[Route, ...] = ()


@dataclass(frozen=True)
class RouteTable:
    destinations: Mapping[str, RouteDestination]  # in file order
    integrations: Mapping[str, Integration]
    hooks: Mapping[str, Hook]  # by URL
    source: str = "environment"  # or the routes file's path
    sms_destinations: Mapping[str, SmsDestination] = field(default_factory=dict)  # SMS escalation (issue 11)

    @property
    def secrets(self) -> tuple[str, ...]:
        values = []
        for integration in self.integrations.values():
            values += [integration.token, integration.previous_token]
        for hook in self.hooks.values():
            values += secret_parts_of_url(hook.url)
        return tuple(sorted({value for value in values if value}, key=len, reverse=True))

    def route(self, integration_name: str, notification: Notification) -> list[Part]:
        """Each hook this notification's alerts reach, with its alerts once each, in the table's destination order.

        An alert that reaches several destinations sharing one hook is posted once there, shown as the first.
        """
        integration = self.integrations[integration_name]
        by_url: dict[str, tuple[list[Alert], list[AlertLook]]] = {
            destination.url: ([], []) for destination in self.destinations.values()
        }
        for alert in notification.alerts:
            reached_by_url: dict[str, list[RouteDestination]] = {}
            for name in destinations_for(integration, alert.labels):
                destination = self.destinations.get(name)
                if destination is None:  # an SMS destination: sms_route()
                    continue
                reached_by_url.setdefault(destination.url, []).append(destination)
            for url, reached in reached_by_url.items():
                alerts, looks = by_url[url]
                alerts.append(alert)
                mentions = tuple(dict.fromkeys(item.mention for item in reached if item.mention))
                looks.append(AlertLook(reached[0], integration.name, integration.severity_label, mentions))
        return [
            Part(self.hooks[url], tuple(alerts), tuple(looks)) for url, (alerts, looks) in by_url.items() if alerts
        ]

    def sms_route(self, integration_name: str, notification: Notification) -> list[tuple[SmsDestination, list[Alert]]]:
        """Each SMS destination this notification's alerts reach, with those alerts (severities are its to filter)."""
        if not self.sms_destinations:
            return []
        integration = self.integrations[integration_name]
        reached: dict[str, list[Alert]] = {}
        for alert in notification.alerts:
            for name in destinations_for(integration, alert.labels):
                if name in self.sms_destinations:
                    reached.setdefault(name, []).append(alert)
        return [(self.sms_destinations[name], alerts) for name, alerts in reached.items()]

    def describe(self) -> list[str]:
        """The table as --check-config prints it: URLs shown by host only."""
        lines = [f"routes from {self.source}"]
        for integration in self.integrations.values():
            endpoint = "/webhook" if integration.name == DEFAULT_INTEGRATION else f"/webhook/{integration.name}"
            secured = "token set" if integration.token else "OPEN (no token)"
            lines.append(f"integration {integration.name}: POST {endpoint}, {secured}, "
                         f"severity label {integration.severity_label!r}")
            lines += [f"  route {index}: {route.describe()}" for index, route in enumerate(integration.routes)]
        for destination in self.destinations.values():
            hook = self.hooks[destination.url]
            extras = [f"mention {destination.mention}"] if destination.mention else []
            extras += [f"template {destination.template_name}"] if destination.template_name else []
            extras += [f"rate limit {destination.rate_limit}"] if destination.rate_limit else []
            extras += ["threads"] if destination.threads else []
            lines.append(f"destination {destination.name}: {redacted_url(destination.url)} (hook {hook.name})"
                         + (f", {', '.join(extras)}" if extras else ""))
        lines += [sms.describe() for sms in self.sms_destinations.values()]
        return lines


def destinations_for(integration: Integration, labels: Mapping[str, str]) -> list[str]:
    """The destination names an alert with these labels reaches: first match wins unless continue is set."""
    severity = classify_severity(labels, integration.severity_label)
    reached: list[str] = []
    for route in integration.routes:
        if route.matches(labels, severity):
            reached += [name for name in route.destinations if name not in reached]
            if not route.continue_matching:
                break
    return reached


def redacted_url(url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.hostname}{port}/hooks/<redacted>"


def hooks_named_by_destinations(destinations: Sequence[RouteDestination]) -> dict[str, Hook]:
    """One hook per URL, named by the destinations posting there ("payments+oncall")."""
    names: dict[str, list[str]] = {}
    firsts: dict[str, RouteDestination] = {}
    for destination in destinations:
        names.setdefault(destination.url, []).append(destination.name)
        firsts.setdefault(destination.url, destination)
    return {url: Hook("+".join(parts), url, firsts[url].rate_limit, firsts[url].threads)
            for url, parts in names.items()}


def table_from_environment(config: Config) -> RouteTable:
    """Today's severity routing as a table: a user who sets no ROUTES_FILE sees exactly what they saw before."""
    options = {"alias": config.alias, "emoji": config.emoji, "avatar_url": config.avatar_url,
               "threads": config.rocketchat_threads}
    destinations: dict[str, RouteDestination] = {}
    for severity in SEVERITIES:
        destinations[severity] = RouteDestination(
            severity, config.routes[severity].url, mention=config.mentions.get(severity, ""), **options
        )
    # Alerts with no or an unknown severity: to ROCKETCHAT_WEBHOOK_DEFAULT (else the info hook), never mentioned.
    destinations["default"] = RouteDestination("default", config.routes[UNKNOWN_SEVERITY].url, **options)
    routes = tuple(
        Route(severity=severity, destinations=(severity,), where=f"severity {severity}") for severity in SEVERITIES
    ) + (Route(destinations=("default",), where="any other severity"),)
    sms_destinations = {}
    if config.sms_destination is not None:  # SMS_RECIPIENTS: every alert of SMS_SEVERITIES, beside Rocket.Chat
        sms_destinations[config.sms_destination.name] = config.sms_destination
        routes = (Route(destinations=(config.sms_destination.name,), continue_matching=True,
                        where="SMS_RECIPIENTS"),) + routes
    integration = Integration(
        DEFAULT_INTEGRATION, token=config.webhook_token, token_file=config.webhook_token_file,
        previous_token=config.webhook_token_previous, severity_label=config.severity_label, routes=routes,
    )
    # Hooks keep the names they had: by the severities posting there (config.routes), "default" for the default
    # hook alone.
    hooks = {destination.url: Hook(destination.name, destination.url, threads=config.rocketchat_threads)
             for destination in config.destinations}
    return RouteTable(destinations, {DEFAULT_INTEGRATION: integration}, hooks, "the environment", sms_destinations)
