"""Alertmanager's label matchers (team="payments", severity=~"crit|page"), read and evaluated as Alertmanager does.

Sources: prometheus/alertmanager matcher/oldparse/parse.go (the classic grammar), matcher/parse (the UTF-8 grammar
of 0.27+), matcher/compat/parse.go (how the two combine) and matcher/matcher.go (the matching). Alertmanager's
default "fallback" mode keeps the classic reading of any text the classic grammar accepts, and uses the UTF-8
grammar only for the rest (label names that are double-quoted, or hold "." or non-ASCII letters); so does this.

Regexes are RE2 (Go's regexp is RE2's syntax and meaning), evaluated by Google's RE2 itself (google-re2), refused
at parse time when RE2 refuses them, and compiled once per matcher.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import re2

OPERATORS = ("=", "!=", "=~", "!~")
REGEX_OPERATORS = ("=~", "!~")


class MatcherError(ValueError):
    """A matcher text that Alertmanager would refuse, or that this module cannot evaluate as Alertmanager does."""

    def __init__(self, text: str, reason: str):
        super().__init__(f"{text}: {reason}")
        self.text = text
        self.reason = reason


@dataclass(frozen=True)
class Matcher:
    """One label matcher: the label's value (the empty string when the label is absent) against value."""

    name: str
    operator: str
    value: str
    _regex: object | None = field(init=False, default=None, repr=False, compare=False)  # an re2 pattern

    def __post_init__(self) -> None:
        if self.operator not in OPERATORS:
            raise MatcherError(str(self), f"unknown operator {self.operator!r}: expected one of =, !=, =~, !~")
        if not self.name:
            raise MatcherError(str(self), "the label name is empty")
        if not (_is_valid_utf8(self.name) and _is_valid_utf8(self.value)):
            raise MatcherError(str(self), "the label name or value is not valid UTF-8")
        if self.operator in REGEX_OPERATORS:
            try:
                object.__setattr__(self, "_regex", _compile_anchored_re2(self.value))
            except _Invalid as err:
                raise MatcherError(str(self), err.reason) from None

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether the alert with these labels satisfies this matcher."""
        # Alertmanager looks the label up in a map, so an absent label reads as "" (matcher.go, Matchers.Matches).
        value = labels.get(self.name, "")
        if self.operator == "=":
            return value == self.value
        if self.operator == "!=":
            return value != self.value
        found = self._regex.search(value) is not None
        return found if self.operator == "=~" else not found

    def __str__(self) -> str:
        """The canonical text, as Alertmanager's Matcher.String() writes it; parse_matcher reads it back."""
        if any(_is_reserved(char) for char in self.name):
            return f"{_go_quote(self.name)}{self.operator}{_go_quote(self.value)}"
        return f'{self.name}{self.operator}"{_openmetrics_escape(self.value)}"'


def parse_matcher(text: str) -> Matcher:
    """One matcher, as Alertmanager's compat.Matcher reads it (a route's list entries go through parse_matchers)."""
    if not text.strip(_GO_SPACE):
        raise MatcherError(repr(text), "the matcher is empty")
    # compat.FallbackMatcherParser refuses braces before trying either grammar.
    if text.startswith("{") or text.endswith("}"):
        raise MatcherError(text.strip(_GO_SPACE), "braces enclose a list of matchers; a single matcher has none")
    return _first_grammar_that_reads(text, _parse_classic, _parse_utf8_single)


def parse_matchers(texts: str | Sequence[str]) -> tuple[Matcher, ...]:
    """The matchers of a route: each entry is a list such as {a="1", b=~"x"} (braces and commas optional)."""
    # Alertmanager's config reads every entry of `matchers:` as a list (config.Matchers.UnmarshalYAML).
    entries = [texts] if isinstance(texts, str) else texts
    found: list[Matcher] = []
    for entry in entries:
        if not isinstance(entry, str):
            raise MatcherError(repr(entry), 'a matcher must be a string, such as team="payments"')
        found.extend(_first_grammar_that_reads(entry, _parse_classic_list, _parse_utf8_list))
    return tuple(found)


def matches_all(matchers: Sequence[Matcher], labels: Mapping[str, str]) -> bool:
    """Whether every matcher holds; no matchers at all match every alert."""
    return all(matcher.matches(labels) for matcher in matchers)


# --- Reading the two grammars -------------------------------------------------------------------------------

class _Invalid(Exception):
    """Why some text is not a matcher; `text` narrows it to the offending matcher, when known."""

    def __init__(self, reason: str, text: str | None = None, quoted_name: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.text = text
        self.quoted_name = quoted_name  # the classic grammar stopped at a double-quoted label name


def _first_grammar_that_reads(text, classic, utf8):
    """Alertmanager's fallback mode: the classic reading when there is one, else the UTF-8 reading."""
    try:
        return classic(text)
    except _Invalid as classic_error:
        try:
            return utf8(text)
        except _Invalid as utf8_error:
            # Quoted label names exist only in the UTF-8 grammar, so its complaint is the useful one for them.
            chosen = utf8_error if classic_error.quoted_name else classic_error
            raise MatcherError(chosen.text or text.strip(_GO_SPACE), chosen.reason) from None


# unicode.IsSpace in Go, used by the UTF-8 lexer and strings.TrimSpace: Unicode's White_Space property.
_GO_SPACE = ("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
             "\u2028\u2029\u202f\u205f\u3000")
_CLASSIC_SPACE = "\t\n\f\r "  # RE2's \s, which the classic grammar's pattern uses around each part
_CLASSIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_CLASSIC_OPERATOR = re.compile(r"=~|=|!=|!~")  # "=~" before "=", as in Alertmanager
_CLASSIC_ESCAPES = {"n": "\n", '"': '"', "\\": "\\"}  # the OpenMetrics escapes; any other "\x" stays as typed


def _parse_classic(text: str) -> Matcher:
    """oldparse.ParseMatcher: name, operator, then the rest of the text as the value, optionally double-quoted."""
    rest = text.lstrip(_CLASSIC_SPACE)
    name = _CLASSIC_NAME.match(rest)
    if name is None:
        if rest.startswith(("=", "!")):
            raise _Invalid("the label name is missing before the operator")
        raise _Invalid("a label name must match [a-zA-Z_:][a-zA-Z0-9_:]*, or be double-quoted",
                       quoted_name=rest.startswith('"'))
    rest = rest[name.end():].lstrip(_CLASSIC_SPACE)
    operator = _CLASSIC_OPERATOR.match(rest)
    if operator is None:
        raise _Invalid(f"expected an operator (=, !=, =~ or !~) after the label name {name.group()!r}")
    value = _unescape_classic_value(rest[operator.end():].strip(_CLASSIC_SPACE))
    return _matcher(name.group(), operator.group(), value)


def _unescape_classic_value(raw: str) -> str:
    quoted = raw.startswith('"')
    body = raw[1:] if quoted else raw
    chars: list[str] = []
    escaped = closed = False
    for index, char in enumerate(body):
        if escaped:
            escaped = False
            chars.append(_CLASSIC_ESCAPES.get(char, "\\" + char))
        elif char == "\\" and index < len(body) - 1:
            escaped = True
        elif char == '"':
            if not quoted:
                raise _Invalid('an unquoted value cannot contain a double quote; quote the value and write \\"')
            if index < len(body) - 1:
                raise _Invalid("unexpected text after the value's closing double quote")
            closed = True
        else:
            chars.append(char)
    if quoted and not closed:
        raise _Invalid("the value's closing double quote is missing")
    return "".join(chars)


def _parse_classic_list(text: str) -> list[Matcher]:
    """oldparse.ParseMatchers: an optional { and }, then matchers split at commas outside double quotes."""
    body = text.removeprefix("{").removesuffix("}")
    pieces: list[str] = []
    current: list[str] = []
    inside_quotes = escaped = False
    for char in body:  # Alertmanager's loop, quirks included (a comma neither sets nor clears `escaped`)
        if char == ",":
            if not inside_quotes:
                pieces.append("".join(current))
                current = []
                continue
        elif char == '"':
            if escaped:
                escaped = False
            else:
                inside_quotes = not inside_quotes
        elif char == "\\":
            escaped = not escaped
        else:
            escaped = False
        current.append(char)
    if last := "".join(current).strip(_GO_SPACE):  # so a trailing comma is allowed
        pieces.append(last)
    found = []
    for piece in pieces:
        if not piece.strip(_GO_SPACE):
            raise _Invalid("an empty matcher between two commas", text.strip(_GO_SPACE))
        try:
            found.append(_parse_classic(piece))
        except _Invalid as err:
            raise _Invalid(err.reason, piece.strip(_GO_SPACE), err.quoted_name) from None
    return found


_RESERVED = frozenset('{}!=~,\\"\'`')


def _is_reserved(char: str) -> bool:
    """Characters that end an unquoted name or value in the UTF-8 grammar (lexer.go, isReserved)."""
    return char in _RESERVED or char in _GO_SPACE


def _utf8_tokens(text: str) -> list[tuple[str, str, int]]:
    """The UTF-8 grammar's tokens (matcher/parse/lexer.go) as (kind, text, offset)."""
    tokens = []
    index = 0
    while index < len(text):
        char = text[index]
        if char in _GO_SPACE:
            index += 1
            continue
        start = index
        if char in "{},":
            kind, index = char, index + 1
        elif char == "=":
            kind, index = "operator", index + (2 if text.startswith("=~", index) else 1)
        elif char == "!":
            if text[index + 1:index + 2] not in ("=", "~"):
                raise _Invalid(f"at column {start + 1}: '!' must be followed by '=' or '~'")
            kind, index = "operator", index + 2
        elif char == '"':
            index += 1
            escaped = False
            while index < len(text) and (escaped or text[index] != '"'):
                escaped = not escaped and text[index] == "\\"
                index += 1
            if index == len(text):
                raise _Invalid(f"at column {start + 1}: the double-quoted text has no closing quote")
            kind, index = "quoted", index + 1
        elif not _is_reserved(char):
            while index < len(text) and not _is_reserved(text[index]):
                index += 1
            kind = "unquoted"
        else:
            raise _Invalid(f"at column {start + 1}: unexpected {char!r}")
        tokens.append((kind, text[start:index], start))
    return tokens


def _parse_utf8_list(text: str) -> list[Matcher]:
    """matcher/parse.Matchers: {name op value, ...} where names and values are double-quoted or unquoted."""
    tokens = _utf8_tokens(text)
    position = 0

    def take(kinds: tuple[str, ...], wanted: str) -> tuple[str, str, int]:
        nonlocal position
        if position == len(tokens):
            raise _Invalid(f"the text ended where {wanted} was expected")
        kind, token, offset = tokens[position]
        if kind not in kinds:
            raise _Invalid(f"at column {offset + 1}: expected {wanted}, found {token!r}")
        position += 1
        return tokens[position - 1]

    def next_kind() -> str | None:
        return tokens[position][0] if position < len(tokens) else None

    braced = next_kind() == "{"
    position += braced
    found = []
    while next_kind() not in (None, "}"):
        name = take(("quoted", "unquoted"), "a label name")
        operator = take(("operator",), "an operator (=, !=, =~ or !~)")
        value = take(("quoted", "unquoted"), "a value")
        source = text[name[2]:value[2] + len(value[1])]
        try:
            found.append(_matcher(_utf8_unquote(name), operator[1], _utf8_unquote(value)))
        except _Invalid as err:
            raise _Invalid(err.reason, source) from None
        if next_kind() != ",":
            break
        position += 1
    if braced:
        take(("}",), "the closing brace }")
    elif next_kind() == "}":
        raise _Invalid("a closing brace } without an opening brace {")
    if position < len(tokens):
        kind, token, offset = tokens[position]
        raise _Invalid(f"at column {offset + 1}: expected a comma or the end, found {token!r}")
    return found


def _parse_utf8_single(text: str) -> Matcher:
    found = _parse_utf8_list(text)
    if len(found) != 1:
        raise _Invalid(f"expected one matcher, found {len(found)}")
    return found[0]


def _utf8_unquote(token: tuple[str, str, int]) -> str:
    kind, text, _ = token
    return _go_unquote(text) if kind == "quoted" else text


def _matcher(name: str, operator: str, value: str) -> Matcher:
    try:
        return Matcher(name, operator, value)
    except MatcherError as err:
        raise _Invalid(err.reason) from None


def _is_valid_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")  # fails only on lone surrogates
    except UnicodeEncodeError:
        return False
    return True


# --- Go string quoting (strconv.Quote / strconv.Unquote), used for double-quoted names --------------------

_GO_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\", '"': '"'}
_GO_QUOTE = {char: "\\" + letter for letter, char in _GO_ESCAPES.items()}
_HEX_WIDTH = {"x": 2, "u": 4, "U": 8}


def _go_unquote(quoted: str) -> str:
    body = quoted[1:-1]
    decoded = bytearray()
    index = 0
    while index < len(body):
        char = body[index]
        if char == "\n":
            raise _Invalid("double-quoted text cannot contain a raw line break; write \\n")
        if char != "\\":
            decoded += char.encode("utf-8", "surrogatepass")
            index += 1
            continue
        letter = body[index + 1]  # the lexer never ends quoted text with a lone backslash
        if letter in _GO_ESCAPES:
            decoded += _GO_ESCAPES[letter].encode()
            index += 2
        elif letter in _HEX_WIDTH:
            width = _HEX_WIDTH[letter]
            digits = body[index + 2:index + 2 + width]
            if not re.fullmatch(f"[0-9A-Fa-f]{{{width}}}", digits):
                raise _Invalid(f"invalid escape \\{letter}{digits}: expected {width} hex digits")
            code = int(digits, 16)
            if letter == "x":
                decoded.append(code)
            elif code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise _Invalid(f"\\{letter}{digits} is not a Unicode code point")
            else:
                decoded += chr(code).encode()
            index += 2 + width
        elif re.fullmatch("[0-3][0-7][0-7]", body[index + 1:index + 4]):
            decoded.append(int(body[index + 1:index + 4], 8))
            index += 4
        else:
            raise _Invalid(f"invalid escape \\{letter} in double-quoted text, which takes Go's escapes here "
                           f"(write \\\\{letter} for a backslash and {letter})")
    try:
        return decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise _Invalid("the double-quoted text is not valid UTF-8") from None


def _go_quote(text: str) -> str:
    parts = ['"']
    for char in text:
        code = ord(char)
        if char in _GO_QUOTE:
            parts.append(_GO_QUOTE[char])
        elif char.isprintable():
            parts.append(char)
        else:
            parts.append(f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(parts) + '"'


def _openmetrics_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


# -- RE2 ---------------------------------------------------------------------------------------------------------

# Google's RE2, the engine whose syntax and meaning Go's regexp (Alertmanager's) follows: a route means the same here
# as in amtool, and matching takes time linear in the label's length (Python's re can take exponential time on a
# pattern such as (a+)+b, which on the delivery path would stall a channel). Errors are raised, never printed.
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
# What RE2 says, and what an operator reading the refusal should hear.
_RE2_REFUSALS = (
    ("invalid perl operator: (?=", "lookahead (?=...)"),
    ("invalid perl operator: (?!", "negative lookahead (?!...)"),
    ("invalid perl operator: (?<=", "lookbehind (?<=...)"),
    ("invalid perl operator: (?<!", "negative lookbehind (?<!...)"),
    ("invalid perl operator: (?>", "atomic group (?>...)"),
    ("invalid perl operator: (?(", "conditional group (?(1)...|...)"),
    ("invalid perl operator: (?#", "comment (?#...)"),
    ("invalid perl operator: (?P=", "backreference (?P=name)"),
    ("invalid named capture group: (?P=", "backreference (?P=name)"),
    ("invalid escape sequence: \\1", "backreference \\1"),
    ("invalid repetition size", "a repeat count above 1000"),
    ("bad repetition operator: *+", "possessive quantifier"),
    ("bad repetition operator: ++", "possessive quantifier"),
    ("bad repetition operator: ?+", "possessive quantifier"),
)


# Escapes Google's RE2 reads but Go's regexp refuses: a route amtool would refuse is refused here too.
_GO_LACKS_ESCAPES = {"C": "\\C (any byte)", "u": "\\u", "U": "\\U"}


def _refuse_what_go_lacks(value: str) -> None:
    index = 0
    while index < len(value) - 1:
        if value[index] == "\\":
            construct = _GO_LACKS_ESCAPES.get(value[index + 1])
            if construct is not None:
                raise _Invalid(f"{construct} is not supported by Go's RE2, Alertmanager's regex engine")
            index += 2
        else:
            index += 1


def _compile_anchored_re2(value: str):
    """matcher.NewMatcher compiles "^(?:" + value + ")$", quirk included: "a)|(b" closes the group early."""
    _refuse_what_go_lacks(value)
    try:
        return re2.compile("^(?:" + value + ")$", _RE2_OPTIONS)
    except re2.error as error:
        reason = error.args[0].decode("utf-8", "replace") if error.args and isinstance(error.args[0], bytes) \
            else str(error)
        named = next((construct for marker, construct in _RE2_REFUSALS if marker in reason), None)
        if named is not None:
            raise _Invalid(f"{named} is not supported by RE2, Alertmanager's regex engine ({reason})") from None
        raise _Invalid(f"not a regular expression RE2, Alertmanager's regex engine, accepts: {reason}") from None
    except (RecursionError, MemoryError):
        raise _Invalid("the regular expression is too large or nests too deeply for RE2") from None
