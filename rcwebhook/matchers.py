"""Alertmanager's label matchers (team="payments", severity=~"crit|page"), read and evaluated as Alertmanager does.

Sources: prometheus/alertmanager matcher/oldparse/parse.go (the classic grammar), matcher/parse (the UTF-8 grammar
of 0.27+), matcher/compat/parse.go (how the two combine) and matcher/matcher.go (the matching). Alertmanager's
default "fallback" mode keeps the classic reading of any text the classic grammar accepts, and uses the UTF-8
grammar only for the rest (double-quoted or non-ASCII label names); this module does the same.

Regexes are RE2 (Go's regexp). Each one is translated into Python's syntax with RE2's meaning, refused at parse
time when RE2 would refuse it or Python cannot give it RE2's meaning, and compiled once per matcher.
"""

from __future__ import annotations

import re
import re._parser as sre_parser  # Python's own regex parser (sre_parse before 3.11)
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from re._constants import ASSERT, ASSERT_NOT, ATOMIC_GROUP, MAX_REPEAT, MAXREPEAT, MIN_REPEAT, POSSESSIVE_REPEAT

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
    _regex: re.Pattern[str] | None = field(init=False, default=None, repr=False, compare=False)

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
        raise MatcherError(text.strip(), "braces enclose a list of matchers; a single matcher has none")
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
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
            "\u2028\u2029\u202f\u205f\u3000"
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


# --- RE2 regexes, translated for Python's re ------------------------------------------------------------

_NOT_RE2 = "is not supported by RE2, Alertmanager's regex engine"
_NOT_HERE = "is valid in RE2 but Python's re, which this relay uses, has no equivalent"
_RE2_MAX_REPEAT = 1000  # regexp/syntax: a larger count, or nested counts whose product is larger, is refused

# RE2's classes are ASCII-only ("\d == [0-9]", regexp/syntax doc), as (first, last) code point ranges. They are
# written out rather than compiled with re.ASCII because re.ASCII would also make (?i) fold ASCII letters only,
# where RE2's (?i)ü matches Ü.
_PERL_CLASSES = {
    "d": ((0x30, 0x39),),
    "s": ((0x09, 0x0A), (0x0C, 0x0D), (0x20, 0x20)),
    "w": ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)),
}
_POSIX_CLASSES = {
    "alnum": ((0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)),
    "alpha": ((0x41, 0x5A), (0x61, 0x7A)),
    "ascii": ((0x00, 0x7F),),
    "blank": ((0x09, 0x09), (0x20, 0x20)),
    "cntrl": ((0x00, 0x1F), (0x7F, 0x7F)),
    "digit": ((0x30, 0x39),),
    "graph": ((0x21, 0x7E),),
    "lower": ((0x61, 0x7A),),
    "print": ((0x20, 0x7E),),
    "punct": ((0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)),
    "space": ((0x09, 0x0D), (0x20, 0x20)),
    "upper": ((0x41, 0x5A),),
    "word": _PERL_CLASSES["w"],
    "xdigit": ((0x30, 0x39), (0x41, 0x46), (0x61, 0x66)),
}
# Spellings Python's parser folds away or rejects before building any node, so the translator names them.
_REFUSED_GROUP_OPENERS = (
    ("(?P=", f"backreference (?P=name) {_NOT_RE2}"),
    ("(?P>", f"recursion (?P>name) {_NOT_RE2}"),
    ("(?(", f"conditional group (?(1)...|...) {_NOT_RE2}"),
    ("(?#", f"comment (?#...) {_NOT_RE2}"),
)
_LOOKAROUND = {
    (ASSERT, 1): "lookahead (?=...)",
    (ASSERT_NOT, 1): "negative lookahead (?!...)",
    (ASSERT, -1): "lookbehind (?<=...)",
    (ASSERT_NOT, -1): "negative lookbehind (?<!...)",
}
_GO_REPEAT = re.compile(r"\{[0-9]+(?:,[0-9]*)?\}")
_FLAG_GROUP = re.compile(r"\(\?([A-Za-z-]*)([:)])")
_OCTAL = re.compile("[0-7]{1,3}")
_HEX_BRACED = re.compile(r"\\x\{([0-9A-Fa-f]+)\}")
_HEX_PAIR = re.compile(r"\\x[0-9A-Fa-f]{2}")
_UNICODE_CLASS = re.compile(r"\\[pP](?:\{[^}]*\}|.)")


def _compile_anchored_re2(value: str) -> re.Pattern[str]:
    # matcher.NewMatcher compiles "^(?:" + value + ")$". Translating that whole text keeps its one quirk too:
    # a value such as "a)|(b" closes the group early and leaves its alternatives anchored at one end only.
    pattern = _translate_re2("^(?:" + value + ")$")
    with warnings.catch_warnings():
        # Python warns about "[[", "--", "&&" in classes being possible future set syntax; RE2 reads them
        # literally, and so does the Python of today.
        warnings.simplefilter("ignore", FutureWarning)
        try:
            _refuse_nodes_re2_lacks(sre_parser.parse(pattern), _RE2_MAX_REPEAT)
            return re.compile(pattern)
        except re.error as err:
            raise _Invalid(f"invalid regular expression: {err.msg}") from None
        except RecursionError:
            raise _Invalid("the regular expression nests too deeply") from None


def _refuse_nodes_re2_lacks(tree, repeat_budget: int | None) -> None:
    """Refuse lookaround, atomic groups and possessive quantifiers, and repeats beyond RE2's limit."""
    for op, av in tree:
        if op in (ASSERT, ASSERT_NOT):
            direction, _ = av
            raise _Invalid(f"{_LOOKAROUND[op, direction]} {_NOT_RE2}")
        if op == ATOMIC_GROUP:
            raise _Invalid(f"atomic group (?>...) {_NOT_RE2}")
        if op == POSSESSIVE_REPEAT:
            raise _Invalid(f"possessive quantifier (*+, ++, ?+, {{n}}+) {_NOT_RE2}")
        budget = repeat_budget
        if op in (MAX_REPEAT, MIN_REPEAT):
            low, high, _ = av
            count = low if high == MAXREPEAT else high  # as regexp/syntax's repeatIsValid counts
            if count > _RE2_MAX_REPEAT or (repeat_budget is not None and count > repeat_budget):
                raise _Invalid(f"a repeat count above {_RE2_MAX_REPEAT} (nested counts multiply) {_NOT_RE2}")
            # repeatIsValid stops at a {0}; elsewhere the inner repeats share what the outer count leaves.
            if high == 0 or repeat_budget is None:
                budget = None
            else:
                budget = repeat_budget // max(count, 1)
        for child in _subpatterns(av):
            _refuse_nodes_re2_lacks(child, budget)


def _subpatterns(av):
    if isinstance(av, sre_parser.SubPattern):
        yield av
    elif isinstance(av, (tuple, list)):
        for item in av:
            yield from _subpatterns(item)


@dataclass
class _Scope:
    """A group being translated: RE2's flags in force, and the Python flag groups opened for them so far."""

    flags: frozenset[str]
    opened: list[str] = field(default_factory=list)


def _translate_re2(pattern: str) -> str:
    """The same regex in Python's syntax; refuses what Python would fold away or read differently."""
    out: list[str] = []
    scopes = [_Scope(frozenset())]
    flag_openers_at: int | None = None  # where in `out` a run of (?i)-style openers began, if `out` ends with one
    index = 0
    while index < len(pattern):
        char = pattern[index]
        scope = scopes[-1]
        repeat = _GO_REPEAT.match(pattern, index) if char == "{" else None
        if char in "*+?" or repeat:
            quantifier = repeat.group() if repeat else char
            index += len(quantifier)
            # A flag group is not an atom in RE2: in x(?i)* the * repeats x, so it goes before the openers.
            if flag_openers_at is None:
                out.append(quantifier)
            else:
                out.insert(flag_openers_at, quantifier)
                flag_openers_at += 1
            continue
        if char == "(":
            text, index = _translate_group_opener(pattern, index, scopes)
            if pattern[index - 1] == ")":  # a flag switch such as (?i); every other opener ends inside its group
                flag_openers_at = len(out) if flag_openers_at is None else flag_openers_at
                out.append(text)
                continue
        elif char == "\\":
            text, index = _translate_escape(pattern, index, in_class=False)
        elif char == "[":
            text, index = _translate_class(pattern, index)
        elif char == ")":
            text, index = ")" * len(scope.opened) + ")", index + 1
            if len(scopes) > 1:
                scopes.pop()
        elif char == "|":
            # An RE2 flag such as (?i) holds to the end of its group, across "|": close and reopen around it.
            text, index = ")" * len(scope.opened) + "|" + "".join(scope.opened), index + 1
        elif char == "$":
            # RE2's $ is the end of the text unless (?m); Python's $ also matches before a final newline.
            text, index = _assertion("$" if "m" in scope.flags else r"\Z"), index + 1
        elif char == "^":
            text, index = _assertion("^"), index + 1
        elif char == "{":
            text, index = r"\{", index + 1  # not a repeat, so a literal in RE2 (Python would read "{,3}")
        else:
            text, index = char, index + 1
        flag_openers_at = None
        out.append(text)
    if len(scopes) == 1:  # otherwise a group is unclosed, and Python's parser says so
        out.append(")" * len(scopes[0].opened))
    return "".join(out)


def _translate_group_opener(pattern: str, index: int, scopes: list[_Scope]) -> tuple[str, int]:
    flags = scopes[-1].flags
    for spelling, reason in _REFUSED_GROUP_OPENERS:
        if pattern.startswith(spelling, index):
            raise _Invalid(reason)
    if pattern.startswith("(?<", index) and not pattern.startswith(("(?<=", "(?<!"), index):
        scopes.append(_Scope(flags))
        return "(?P<", index + 3  # RE2 (Go 1.22+) also writes a named group (?<name>...); Python 3.11 does not
    flag_group = _FLAG_GROUP.match(pattern, index)
    if flag_group:
        return _translate_flag_group(flag_group, scopes), flag_group.end()
    # "(", "(?P<name>" and the lookaround and atomic openers, which Python's parser reads and the tree check refuses.
    scopes.append(_Scope(flags))
    return ("(?", index + 2) if pattern.startswith("(?", index) else ("(", index + 1)


def _translate_flag_group(flag_group: re.Match[str], scopes: list[_Scope]) -> str:
    spelling, letters, end = flag_group.group(0, 1, 2)
    for letter in letters.replace("-", ""):
        if letter not in "imsU":
            raise _Invalid(f"flag {letter} in {spelling} {_NOT_RE2}, whose flags are i, m, s and U")
    if letters.count("-") > 1 or letters.endswith("-"):
        raise _Invalid(f"malformed flag group {spelling}")
    turned_on, _, turned_off = letters.partition("-")
    scope = scopes[-1]
    # U (ungreedy) swaps greedy and lazy repeats, which never changes whether a whole label value matches.
    flags = frozenset((scope.flags | set(turned_on)) - set(turned_off) - {"U"})
    python_on, python_off = "".join(sorted(flags - scope.flags)), "".join(sorted(scope.flags - flags))
    opener = f"(?{python_on}{'-' + python_off if python_off else ''}:"
    if end == ":":
        scopes.append(_Scope(flags))
        return opener
    if flags == scope.flags:
        return ""
    # Python 3.11 takes global flags only at the very start, so (?i) becomes (?i: up to the end of its group.
    scope.flags = flags
    scope.opened.append(opener)
    return opener


def _translate_escape(pattern: str, index: int, in_class: bool) -> tuple[str, int]:
    if index + 1 == len(pattern):
        raise _Invalid("the regular expression ends with a lone backslash")
    letter = pattern[index + 1]
    spelling = pattern[index:index + 2]
    if letter in "dswDSW":
        ranges = _PERL_CLASSES[letter.lower()]
        if in_class:
            return _class_items(_complement(ranges) if letter.isupper() else ranges), index + 2
        return ("[^" if letter.isupper() else "[") + _class_items(ranges) + "]", index + 2
    if letter in "aftnrv":
        return spelling, index + 2
    if letter == "x":
        return _translate_hex_escape(pattern, index)
    # Go reads \0, \0o and \ooo (but never a lone \1-\7) as octal; Python would read \12 as a backreference.
    if letter == "0" or (letter in "1234567" and pattern[index + 2:index + 3] in tuple("01234567")):
        digits = _OCTAL.match(pattern, index + 1)
        return _code_point(int(digits.group(), 8)), digits.end()
    if letter in "123456789":
        raise _Invalid(f"backreference {spelling} {_NOT_RE2}")
    if letter.isascii() and not letter.isalnum():
        return spelling, index + 2  # escaped punctuation is itself in both
    if letter in "pP":
        named = _UNICODE_CLASS.match(pattern, index)
        raise _Invalid(f"Unicode class {named.group() if named else spelling} {_NOT_HERE}; list the characters instead")
    if letter == "Z":
        raise _Invalid(f"\\Z {_NOT_RE2}; write \\z for the end of the text")
    if not in_class:
        if letter == "A":
            return _assertion(spelling), index + 2
        if letter == "b":
            return r"(?a:\b)", index + 2  # RE2's word boundary is between \w and \W, both ASCII
        if letter == "B":
            return r"(?:(?a:\B)|\A\Z)", index + 2  # Python 3.11's \B never matches in an empty string; RE2's does
        if letter == "z":
            return _assertion(r"\Z"), index + 2
        if letter == "Q":
            end = pattern.find(r"\E", index + 2)
            literal = pattern[index + 2:] if end < 0 else pattern[index + 2:end]
            return re.escape(literal), len(pattern) if end < 0 else end + 2
        if letter == "C":
            raise _Invalid(f"\\C (any byte) {_NOT_HERE}")
    if letter == "b":
        raise _Invalid(f"\\b inside a character class {_NOT_RE2} (Python would read a backspace); write \\x08")
    where = " inside a character class" if in_class else ""
    raise _Invalid(f"invalid escape {spelling}{where}: RE2 has no such escape")


def _translate_hex_escape(pattern: str, index: int) -> tuple[str, int]:
    braced = _HEX_BRACED.match(pattern, index)
    if braced and int(braced.group(1), 16) <= 0x10FFFF:
        return _code_point(int(braced.group(1), 16)), braced.end()
    pair = _HEX_PAIR.match(pattern, index)
    if pair:
        return pair.group(), pair.end()
    raise _Invalid(f"invalid escape {pattern[index:index + 4]}: write \\x41 or \\x{{41}}")


def _translate_class(pattern: str, index: int) -> tuple[str, int]:
    out = ["["]
    index += 1
    if pattern.startswith("^", index):
        out.append("^")
        index += 1
    first = True  # a "]" right after "[" or "[^" is a literal in both
    while index < len(pattern):
        char = pattern[index]
        if char == "]" and not first:
            return "".join(out) + "]", index + 1
        first = False
        end = pattern.find(":]", index + 2) if pattern.startswith("[:", index) else -1
        if end >= 0:  # a POSIX class such as [:alpha:], which Python would read as the characters "[:alph"
            name = pattern[index + 2:end]
            ranges = _POSIX_CLASSES.get(name.removeprefix("^"))
            if ranges is None:
                raise _Invalid(f"unknown character class [:{name}:]")
            out.append(_class_items(_complement(ranges) if name.startswith("^") else ranges))
            index = end + 2
        elif char == "\\":
            text, index = _translate_escape(pattern, index, in_class=True)
            out.append(text)
        else:
            out.append("\\" + char if char in "[]&|~" else char)
            index += 1
    raise _Invalid("a character class [...] has no closing ]")


def _assertion(python_spelling: str) -> str:
    # In a group, because RE2 takes a quantifier after an assertion (^+, \b*) where Python refuses it.
    return f"(?:{python_spelling})"


def _class_items(ranges) -> str:
    return "".join(_code_point(low) if low == high else f"{_code_point(low)}-{_code_point(high)}"
                   for low, high in ranges)


def _complement(ranges):
    complement, start = [], 0
    for low, high in ranges:
        if low > start:
            complement.append((start, low - 1))
        start = high + 1
    if start <= 0x10FFFF:
        complement.append((start, 0x10FFFF))
    return complement


def _code_point(code: int) -> str:
    char = chr(code)
    if char.isascii() and char.isalnum():
        return char
    return f"\\x{code:02x}" if code < 0x100 else f"\\U{code:08x}"
