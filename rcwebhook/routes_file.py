"""Reading ROUTES_FILE (YAML) into a validated route table; without one, the environment's table.

Nothing is silently ignored: an unknown key, an unknown name, a bad regex, an unreadable file, a destination setting
left in the environment that the file does not use: each is a ConfigError naming the file, the path inside it
(integrations.default.routes[1]) and the problem. See routes.example.yml for the reference.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Mapping

from .config import DEFAULT_WEBHOOK_VARIABLE, MENTION_VARIABLE, WEBHOOK_VARIABLE, Config, ConfigError
from .formatting import SEVERITY_ALIASES
from .matchers import MatcherError, parse_matchers
from .model import UNKNOWN_SEVERITY
from .pacing import parse_rate_limit
from .redact import Redactor
from .routes import (DEFAULT_INTEGRATION, Integration, Route, RouteDestination, RouteTable,
                     hooks_named_by_destinations, table_from_environment)

# Names appear in URLs (/webhook/<integration>), logs and metric labels: keep them plain.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
TOP_LEVEL_KEYS = {"destinations", "integrations", "templates"}
DESTINATION_KEYS = {"rocketchat", "mention", "rate_limit", "alias", "emoji", "avatar_url", "template", "threads",
                    "sms"}
URL_SOURCE_KEYS = {"url", "url_file", "url_env"}
INTEGRATION_KEYS = {
    "token", "token_file", "token_env", "previous_token", "previous_token_file", "previous_token_env",
    "severity_label", "routes",
}
ROUTE_KEYS = {"matchers", "severity", "destination", "destinations", "continue"}
SEVERITY_BY_WORD = {alias: severity for severity, aliases in SEVERITY_ALIASES.items() for alias in aliases}
SEVERITY_BY_WORD[UNKNOWN_SEVERITY] = UNKNOWN_SEVERITY
# The environment's destination settings, which a routes file replaces (a conflict unless it names them).
# SMS_MAX_PER_DAY is the whole relay's cost ceiling, not a destination's: it stays in the environment.
SMS_DESTINATION_VARIABLES = tuple(f"SMS_{key.upper()}" for key in (
    "recipients", "severities", "delay_seconds", "max_per_hour", "hours", "timezone", "send_resolved", "template",
    "max_segments", "give_up_seconds"))
ENVIRONMENT_DESTINATION_VARIABLES = (*WEBHOOK_VARIABLE.values(), DEFAULT_WEBHOOK_VARIABLE, *MENTION_VARIABLE.values(),
                                     *SMS_DESTINATION_VARIABLES)
TOKEN_VARIABLES = ("WEBHOOK_TOKEN", "WEBHOOK_TOKEN_FILE", "WEBHOOK_TOKEN_PREVIOUS", "WEBHOOK_TOKEN_PREVIOUS_FILE")


class _Problem(Exception):
    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}" if where else message)


def load_route_table(config: Config, environ: Mapping[str, str]) -> RouteTable:
    """The table in force: from ROUTES_FILE when set, else the environment's severity routing."""
    if not config.routes_file:
        return table_from_environment(config)
    path = config.routes_file
    try:
        return _load(path, config, environ)
    except _Problem as problem:
        raise ConfigError(f"ROUTES_FILE {path}: {problem}") from None


def _load(path: str, config: Config, environ: Mapping[str, str]) -> RouteTable:
    import yaml  # only a relay with a routes file needs PyYAML

    try:
        with open(path, encoding="utf-8") as handle:
            document = yaml.load(handle, Loader=_loader_refusing_duplicate_keys(yaml))  # noqa: S506 - SafeLoader
    except _DuplicateKey as duplicate:
        raise _Problem(duplicate.where, f"{duplicate.key!r} is given twice (YAML would keep only the last)") from None
    except OSError as error:
        raise _Problem("", f"cannot be read: {error.strerror}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark is not None else "YAML"
        raise _Problem(where, f"not valid YAML: {getattr(error, 'problem', None) or error}") from None
    if not isinstance(document, dict):
        raise _Problem("", "must be a YAML mapping with destinations: and integrations:")
    _no_unknown_keys(document, TOP_LEVEL_KEYS, "")
    # The conflicts first: a destination setting left in the environment is the likeliest mistake after an upgrade.
    _check_environment_conflicts(environ, _url_variables_named(document))
    referenced_env: set[str] = set()
    templates = _templates(document.get("templates") or {})
    section = _mapping(document, "destinations", "")
    sms_destinations = _sms_destinations(section)
    if sms_destinations and config.twilio is None:
        raise _Problem(f"destinations.{next(iter(sms_destinations))}", "is an SMS destination but Twilio is not "
                       "configured: set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN (or an API key) and TWILIO_FROM_NUMBER "
                       "(or TWILIO_MESSAGING_SERVICE_SID)")
    destinations = _destinations({name: spec for name, spec in section.items() if name not in sms_destinations},
                                 templates, config, environ, referenced_env)
    integrations = _integrations(_mapping(document, "integrations", ""), {**destinations, **sms_destinations},
                                 config, environ, referenced_env)
    ordered = list(destinations.values())
    _check_shared_hooks(ordered)
    if not ordered:
        raise _Problem("destinations", "needs at least one Rocket.Chat destination: SMS only escalate")
    return RouteTable(destinations, integrations, hooks_named_by_destinations(ordered), path, sms_destinations)


def _sms_destinations(section: Mapping) -> dict:
    """The destinations given as sms: {recipients, delay_seconds, tiers, ...} (see routes.example.yml)."""
    from .sms.destination import DESTINATION_KEYS as SMS_KEYS
    from .sms.destination import SmsConfigError, build_destination

    found = {}
    for raw_name, spec in section.items():
        if not isinstance(spec, dict) or "sms" not in spec:
            continue
        name = _name(raw_name, "destinations")
        where = f"destinations.{name}"
        _no_unknown_keys(spec, {"sms"}, where)  # an SMS destination has none of Rocket.Chat's keys
        settings = spec["sms"]
        if not isinstance(settings, dict):
            raise _Problem(f"{where}.sms", "must be a mapping with recipients: (or recipients_file:, tiers:)")
        _no_unknown_keys(settings, set(SMS_KEYS), f"{where}.sms")
        try:
            found[name] = build_destination(name, settings, lambda key, where=where: f"{where}.sms.{key}",
                                            on_error=_log_recipients_problem)
        except SmsConfigError as error:
            raise _Problem("", _redacted(str(error))) from None
    return found


def _log_recipients_problem(message: str) -> None:
    import logging

    logging.getLogger("rcwebhook").error("%s", message)


class _DuplicateKey(Exception):
    def __init__(self, key: str, where: str):
        super().__init__(key)
        self.key, self.where = key, where


def _loader_refusing_duplicate_keys(yaml):
    """PyYAML's SafeLoader, except that a key given twice in one mapping is an error: two destinations or two
    integrations of one name would otherwise load as the last one alone, silently."""

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag != "tag:yaml.org,2002:str":  # merge keys (<<), lists…: PyYAML's own rules apply
                    continue
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    mark = key_node.start_mark
                    raise _DuplicateKey(_redacted(key), f"line {mark.line + 1}")
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return Loader


def _redacted(text: str) -> str:
    """A text from the file as a message may show it: any URL (it may hold a hook's token) removed, and any phone
    number (a recipient typed where a key goes) shown by its last three digits."""
    from .channels.twilio import mask_numbers

    return mask_numbers(Redactor(strip_urls=True)(text))[:200]


def _url_variables_named(document: Mapping) -> set[str]:
    """The variables the file's destinations name with url_env: (read before anything is validated)."""
    named = set()
    destinations = document.get("destinations")
    for spec in destinations.values() if isinstance(destinations, dict) else ():
        rocketchat = spec.get("rocketchat") if isinstance(spec, dict) else None
        if isinstance(rocketchat, dict) and isinstance(rocketchat.get("url_env"), str):
            named.add(rocketchat["url_env"].strip())
        if isinstance(rocketchat, dict) and isinstance(rocketchat.get("url_file"), str):
            named.add(("file", rocketchat["url_file"].strip()))
    return named


def _mapping(parent: Mapping, key: str, where: str) -> dict:
    value = parent.get(key)
    place = f"{where}.{key}" if where else key
    if not isinstance(value, dict) or not value:
        raise _Problem(place, "must be a mapping with at least one entry")
    return value


def _no_unknown_keys(value: Mapping, allowed: set[str], where: str) -> None:
    # Shown without URLs: a mistyped "rocketchat: {https://chat/hooks/ID/TOKEN}" makes the URL a key.
    unknown = sorted(_redacted(str(key)) for key in value if key not in allowed)
    if unknown:
        raise _Problem(where or "top level", f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")


def _name(name: object, where: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        shown = _redacted(str(name))
        raise _Problem(where, f"{shown!r} is not a usable name (letters, digits, '.', '_', '-'; at most 64)")
    return name


def _named_entries(section: Mapping, kind: str, allowed: set[str]):
    """(name, its place in the file, its mapping) for each entry of destinations: or integrations:, checked."""
    for raw_name, spec in section.items():
        name = _name(raw_name, kind)
        where = f"{kind}.{name}"
        if not isinstance(spec, dict):
            raise _Problem(where, "must be a mapping")
        _no_unknown_keys(spec, allowed, where)
        yield name, where, spec


def _string(value: object, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _Problem(where, "must be a string")
    return str(value).strip()


def _secret(section: Mapping, prefix: str, where: str, environ: Mapping[str, str], referenced_env: set[str]) -> str:
    """A secret given as <prefix>: value, <prefix>_file: path or <prefix>_env: VARIABLE (at most one of them)."""
    present = [key for key in (prefix, f"{prefix}_file", f"{prefix}_env") if key in section]
    empty = [key for key in present if section[key] in (None, "") or not str(section[key]).strip()]
    if empty:
        # An empty token would leave an endpoint open without a word: that is never what was meant.
        raise _Problem(f"{where}.{empty[0]}", "is empty (remove the key to leave it unset)")
    given = present
    if len(given) > 1:
        raise _Problem(where, f"give only one of {', '.join(given)}")
    if not given:
        return ""
    key = given[0]
    value = _string(section[key], f"{where}.{key}")
    if key.endswith("_file"):
        try:
            with open(value, encoding="utf-8") as handle:
                secret = handle.read().strip()
        except OSError as error:
            raise _Problem(f"{where}.{key}", f"cannot read {value!r}: {error.strerror}") from None
        if not secret:
            raise _Problem(f"{where}.{key}", f"{value!r} is empty")
        return secret
    if key.endswith("_env"):
        referenced_env.add(value)
        secret = environ.get(value, "").strip()
        if not secret:
            raise _Problem(f"{where}.{key}", f"the environment variable {value} is not set or empty")
        return secret
    return value


def _destinations(section: Mapping, templates: Mapping, config: Config, environ: Mapping[str, str],
                  referenced_env: set[str]) -> dict[str, RouteDestination]:
    destinations = {}
    for name, where, spec in _named_entries(section, "destinations", DESTINATION_KEYS):
        rocketchat = spec.get("rocketchat")
        if not isinstance(rocketchat, dict):
            raise _Problem(f"{where}.rocketchat", "must be a mapping with url:, url_file: or url_env:")
        _no_unknown_keys(rocketchat, URL_SOURCE_KEYS, f"{where}.rocketchat")
        url = _secret(rocketchat, "url", f"{where}.rocketchat", environ, referenced_env)
        if not url:
            raise _Problem(f"{where}.rocketchat", "needs url:, url_file: or url_env:")
        _check_url(url, f"{where}.rocketchat")
        rate_limit = None
        if spec.get("rate_limit") not in (None, ""):
            try:
                rate_limit = parse_rate_limit(_string(spec["rate_limit"], f"{where}.rate_limit"))
            except ValueError as error:
                raise _Problem(f"{where}.rate_limit", str(error)) from None
        template_name = _string(spec.get("template") or "", f"{where}.template")
        if template_name and template_name not in templates:
            raise _Problem(f"{where}.template", f"no template named {template_name!r} under templates:")
        avatar_url = _string(spec.get("avatar_url") or config.avatar_url, f"{where}.avatar_url")
        if avatar_url and not avatar_url.startswith(("http://", "https://")):
            raise _Problem(f"{where}.avatar_url", "must be an http:// or https:// URL")
        threads = spec.get("threads", config.rocketchat_threads)
        if not isinstance(threads, bool):
            raise _Problem(f"{where}.threads", "must be true or false")
        destinations[name] = RouteDestination(
            name, url, threads=threads,
            mention=_string(spec.get("mention") or "", f"{where}.mention"),
            rate_limit=rate_limit,
            alias=_string(spec.get("alias") or config.alias, f"{where}.alias"),
            emoji=_string(spec.get("emoji") or config.emoji, f"{where}.emoji"),
            avatar_url=avatar_url,
            template_name=template_name,
            template=templates.get(template_name) if template_name else None,
        )
    return destinations


def _check_url(url: str, where: str) -> None:
    try:
        parsed = urllib.parse.urlsplit(url)
    except ValueError:  # e.g. an unclosed [ of an IPv6 address
        raise _Problem(where, "is not a URL that can be read (value not shown: it holds a token)") from None
    # The value is never repeated: it carries the hook's token.
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise _Problem(where, "must be an http:// or https:// URL with a host (value not shown: it holds a token)")
    try:
        parsed.port  # noqa: B018 - urllib checks the port only when asked
    except ValueError:
        raise _Problem(where, "has an invalid port (value not shown: it holds a token)") from None


def _check_shared_hooks(destinations: list[RouteDestination]) -> None:
    """Destinations on one Rocket.Chat URL share its queue and budget: they must agree on its rate limit and on
    threads (one hook's posts are one thread memory)."""
    first_by_url: dict[str, RouteDestination] = {}
    for destination in destinations:
        first = first_by_url.setdefault(destination.url, destination)
        for setting in ("rate_limit", "threads"):
            if getattr(first, setting) != getattr(destination, setting):
                raise _Problem(
                    f"destinations.{destination.name}.{setting}",
                    f"differs from that of destinations.{first.name}, which posts to the same Rocket.Chat URL",
                )


def _integrations(section: Mapping, destinations: Mapping[str, RouteDestination], config: Config,
                  environ: Mapping[str, str], referenced_env: set[str]) -> dict[str, Integration]:
    if DEFAULT_INTEGRATION not in section:
        raise _Problem("integrations", "needs a 'default' integration (it is also POST /webhook)")
    integrations = {}
    for name, where, spec in _named_entries(section, "integrations", INTEGRATION_KEYS):
        token = _secret(spec, "token", where, environ, referenced_env)
        previous = _secret(spec, "previous_token", where, environ, referenced_env)
        token_file = _string(spec.get("token_file") or "", f"{where}.token_file")
        token_file_setting = f"{where}.token_file"
        if name == DEFAULT_INTEGRATION and (config.webhook_token or config.webhook_token_previous):
            if token or previous:
                raise _Problem(where, "gives a token while WEBHOOK_TOKEN is set in the environment: keep one")
            token, previous, token_file = (config.webhook_token, config.webhook_token_previous,
                                           config.webhook_token_file)
            token_file_setting = "WEBHOOK_TOKEN_FILE"
        if previous and not token:
            raise _Problem(where, "has previous_token but no token")
        severity_label = _string(spec.get("severity_label") or config.severity_label, f"{where}.severity_label")
        integrations[name] = Integration(
            name, token=token, token_file=token_file, token_file_setting=token_file_setting, previous_token=previous,
            severity_label=severity_label,
            routes=_routes(spec.get("routes"), f"{where}.routes", destinations),
        )
    return integrations


def _routes(section: object, where: str, destinations: Mapping[str, RouteDestination]) -> tuple[Route, ...]:
    if not isinstance(section, list) or not section:
        raise _Problem(where, "must be a list with at least one route")
    routes = []
    for index, spec in enumerate(section):
        place = f"{where}[{index}]"
        if not isinstance(spec, dict):
            raise _Problem(place, "must be a mapping")
        _no_unknown_keys(spec, ROUTE_KEYS, place)
        raw_matchers = spec.get("matchers") or []
        if isinstance(raw_matchers, str):
            raw_matchers = [raw_matchers]
        if not isinstance(raw_matchers, list) or not all(isinstance(item, str) for item in raw_matchers):
            raise _Problem(f"{place}.matchers", "must be a list of matcher strings such as 'team=\"payments\"'")
        try:
            matchers = parse_matchers(raw_matchers)
        except MatcherError as error:
            raise _Problem(f"{place}.matchers", str(error)) from None
        severity = None
        if spec.get("severity") not in (None, ""):
            word = _string(spec["severity"], f"{place}.severity").lower()
            severity = SEVERITY_BY_WORD.get(word)
            if severity is None:
                raise _Problem(f"{place}.severity", f"{word!r} is no severity (critical, warning, info, unknown or "
                                                    "one of their aliases)")
        if "destination" in spec and "destinations" in spec:
            raise _Problem(place, "give destination: or destinations:, not both")
        names = spec.get("destinations") if "destinations" in spec else [spec.get("destination")]
        if not isinstance(names, list) or not names or not all(isinstance(item, str) for item in names):
            raise _Problem(place, "needs destination: NAME or destinations: [NAME, ...]")
        for name in names:
            if name not in destinations:
                raise _Problem(place, f"no destination named {name!r} under destinations:")
        continue_matching = spec.get("continue", False)
        if not isinstance(continue_matching, bool):
            raise _Problem(f"{place}.continue", "must be true or false")
        routes.append(Route(tuple(matchers), severity, tuple(dict.fromkeys(names)), continue_matching, place))
    last = routes[-1]
    if last.matchers or last.severity is not None:
        raise _Problem(f"{where}[{len(routes) - 1}]", "the last route must have no matchers and no severity, so "
                                                      "that every alert lands somewhere")
    return tuple(routes)


def _templates(section: object):
    if not isinstance(section, dict):
        raise _Problem("templates", "must be a mapping of named templates")
    if not section:
        return {}
    from .templates import TemplateError, compile_templates

    try:
        return compile_templates(section, where="templates")
    except TemplateError as error:
        raise _Problem("", str(error)) from None


def _check_environment_conflicts(environ: Mapping[str, str], referenced_env: set[str]) -> None:
    """Destination settings in the environment that the file does not use would be silently ignored: refuse."""
    for name in ENVIRONMENT_DESTINATION_VARIABLES:
        for variable in (name, f"{name}_FILE"):
            value = environ.get(variable, "").strip()
            used_as_file = variable.endswith("_FILE") and ("file", value) in referenced_env
            if value and variable not in referenced_env and not used_as_file:
                if name in MENTION_VARIABLE.values():
                    fix = "give the destination mention: instead, and unset it"
                elif name in SMS_DESTINATION_VARIABLES:
                    key = name[len("SMS_"):].lower()
                    fix = f"give it as {key}: of an sms: destination instead, and unset it"
                elif variable.endswith("_FILE"):
                    fix = f"refer to its file with url_file: {environ[variable].strip()}, or unset it"
                else:
                    fix = f"refer to it with url_env: {variable}, or unset it"
                raise _Problem("", f"{variable} is set in the environment but the routes file does not use it ({fix})")
