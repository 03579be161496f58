"""Alertmanager's label matchers: the grammar, the matching, and RE2's regex meaning (rcwebhook.matchers).

Expected values come from Alertmanager's sources and documentation (matcher/oldparse, matcher/parse,
matcher/compat, matcher/matcher.go) and Go's regexp/syntax documentation, not from this module's code.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rcwebhook.matchers import Matcher, MatcherError, matches_all, parse_matcher, parse_matchers

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, database=None)


def matches(text: str, **labels: str) -> bool:
    return parse_matcher(text).matches(labels)


def refusal(text: str) -> str:
    with pytest.raises(MatcherError) as raised:
        parse_matcher(text)
    return str(raised.value)


# --- Operators, anchoring, absent labels ---------------------------------------------------------------------

@pytest.mark.parametrize(("text", "value", "expected"), [
    ('team="payments"', "payments", True),
    ('team="payments"', "payment", False),
    ('team!="payments"', "payments", False),
    ('team!="payments"', "search", True),
    ('severity=~"crit|page"', "page", True),
    ('severity=~"crit|page"', "warning", False),
    ('severity!~"crit|page"', "crit", False),
    ('severity!~"crit|page"', "warning", True),
])
def test_each_operator(text, value, expected):
    assert matches(text, team=value, severity=value) is expected


def test_regexes_are_anchored_at_both_ends():
    assert not matches('team=~"pay"', team="payments")
    assert not matches('team=~"ments"', team="payments")
    assert matches('team=~"pay.*"', team="payments")
    assert matches('team!~"pay"', team="payments")
    # Each alternative is anchored, as in ^(?:crit|page)$.
    assert not matches('severity=~"crit|page"', severity="critical")


def test_the_end_anchor_does_not_match_before_a_final_newline():
    # Python's $ also matches before a trailing "\n"; RE2's does not, unless (?m).
    assert not matches('team=~"pay"', team="pay\n")
    assert not matches(r'team=~"pay$\n"', team="pay\n")
    assert matches(r'team=~"(?m)pay$\n"', team="pay\n")


def test_a_value_that_closes_the_group_escapes_the_anchors_as_in_alertmanager():
    # Alertmanager compiles "^(?:" + value + ")$", so "a)|(b" reads ^(?:a)|(b)$: starts with a, or ends with b.
    matcher = parse_matcher('team=~"a)|(b"')
    assert matcher.matches({"team": "a-anything"})
    assert matcher.matches({"team": "anything-b"})
    assert not matcher.matches({"team": "neither"})


def test_an_absent_label_reads_as_the_empty_string():
    assert matches('team!="x"')
    assert matches('team=""')
    assert matches('team=~".*"')
    assert matches('team!~".+"')
    assert not matches('team="x"')
    assert not matches('team=~".+"')


def test_all_matchers_must_hold_and_none_match_everything():
    route = parse_matchers(['team="payments"', 'severity=~"crit|page"'])
    assert matches_all(route, {"team": "payments", "severity": "page"})
    assert not matches_all(route, {"team": "payments", "severity": "info"})
    assert not matches_all(route, {"severity": "page"})
    assert matches_all((), {"anything": "at all"})
    assert matches_all((), {})


# --- Names, values, quoting ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "name", "operator", "value"), [
    ('team="payments"', "team", "=", "payments"),
    ("team=payments", "team", "=", "payments"),
    ('  team  =~  "pay.*"  ', "team", "=~", "pay.*"),
    ("team=~pay.*", "team", "=~", "pay.*"),
    ("team = pay ments ", "team", "=", "pay ments"),  # the classic grammar takes the rest of the text
    ("team=", "team", "=", ""),
    ('team=""', "team", "=", ""),
    ('team="say \\"hi\\""', "team", "=", 'say "hi"'),
    ('team="C:\\\\temp"', "team", "=", "C:\\temp"),
    ('team="two\\nlines"', "team", "=", "two\nlines"),
    ('team="a,b"', "team", "=", "a,b"),
    ('team=~"\\d+"', "team", "=~", "\\d+"),  # an escape other than \" \\ \n stays as typed
    ('team=~"\\\\d+"', "team", "=~", "\\d+"),
    ("_private:name!=x", "_private:name", "!=", "x"),  # Alertmanager's classic names also allow ":"
    ('"service.name"="api"', "service.name", "=", "api"),  # UTF-8 names (Alertmanager 0.27+)
    ('"team 🙂"!="a\\tb"', "team 🙂", "!=", "a\tb"),  # with a quoted name, the value takes Go's escapes
    ('"\\u00e9quipe"="x"', "équipe", "=", "x"),
    ('service.name="api"', "service.name", "=", "api"),  # the UTF-8 grammar takes it unquoted, too
])
def test_parse_matcher_reads_names_operators_and_values(text, name, operator, value):
    matcher = parse_matcher(text)
    assert (matcher.name, matcher.operator, matcher.value) == (name, operator, value)


def test_a_quoted_regex_with_single_or_double_backslashes_matches_digits():
    assert matches('team=~"\\d+"', team="42")
    assert matches('team=~"\\\\d+"', team="42")


@pytest.mark.parametrize(("text", "reason"), [
    ("", "the matcher is empty"),
    ("team", "expected an operator (=, !=, =~ or !~) after the label name 'team'"),
    ('team "payments"', "expected an operator"),
    ('="payments"', "the label name is missing before the operator"),
    ('~team="x"', "a label name must match [a-zA-Z_:][a-zA-Z0-9_:]*, or be double-quoted"),
    ('te am="x"', "expected an operator (=, !=, =~ or !~) after the label name 'te'"),
    ('team="payments', "the value's closing double quote is missing"),
    ('team="pay" ments', "unexpected text after the value's closing double quote"),
    ('team=pay"ments', "an unquoted value cannot contain a double quote"),
    ('"team="x"', "at column 9: the double-quoted text has no closing quote"),
    ('"team', "the double-quoted text has no closing quote"),
    ('"team"="x" y', "expected a comma or the end"),
    ('"team"=~"\\d"', "invalid escape \\d in double-quoted text"),
    ('{team="x"}', "braces enclose a list of matchers"),
    ('team=~"(pay"', "accepts: missing )"),
    ('team=~"[pay"', "accepts: missing ]"),
    ('team=~"pay\\"', "the value's closing double quote is missing"),
])
def test_invalid_matchers_are_refused_with_the_reason(text, reason):
    message = refusal(text)
    assert reason in message
    assert message.startswith(f"{text.strip()}: " if text.strip() else "''")


def test_matcher_error_is_a_value_error_carrying_text_and_reason():
    with pytest.raises(ValueError) as raised:
        parse_matcher("team")
    assert isinstance(raised.value, MatcherError)
    assert raised.value.text == "team"
    assert raised.value.reason.startswith("expected an operator")


def test_constructing_a_matcher_validates_it_too():
    with pytest.raises(MatcherError, match="unknown operator '=='"):
        Matcher("team", "==", "x")
    with pytest.raises(MatcherError, match="the label name is empty"):
        Matcher("", "=", "x")
    with pytest.raises(MatcherError, match="lookahead"):
        Matcher("team", "=~", "(?=x)")


# --- Lists -------------------------------------------------------------------------------------------------

def as_tuples(matchers):
    return [(m.name, m.operator, m.value) for m in matchers]


@pytest.mark.parametrize(("entry", "expected"), [
    ('{a="1", b=~"x"}', [("a", "=", "1"), ("b", "=~", "x")]),
    ('{a="1",}', [("a", "=", "1")]),
    ("a=1,b!=2", [("a", "=", "1"), ("b", "!=", "2")]),
    ('{ a = "1" , b !~ "x|y" }', [("a", "=", "1"), ("b", "!~", "x|y")]),
    ('{a="x,y", b="say \\"hi, you\\""}', [("a", "=", "x,y"), ("b", "=", 'say "hi, you"')]),
    ('{"a.b"="1", c="2"}', [("a.b", "=", "1"), ("c", "=", "2")]),
    ("{}", []),
    ("", []),
])
def test_parse_matchers_reads_alertmanagers_list_syntax(entry, expected):
    assert as_tuples(parse_matchers(entry)) == expected
    assert as_tuples(parse_matchers([entry])) == expected


def test_parse_matchers_joins_the_entries_of_a_route():
    found = parse_matchers(['team="payments"', '{severity=~"crit|page", env!="dev"}'])
    assert as_tuples(found) == [("team", "=", "payments"), ("severity", "=~", "crit|page"), ("env", "!=", "dev")]


@pytest.mark.parametrize(("entries", "shown", "reason"), [
    (['a="1",,b="2"'], 'a="1",,b="2"', "an empty matcher between two commas"),
    (['{a="1", b=~"(?=x)"}'], 'b=~"(?=x)"', "lookahead (?=...)"),
    (['{"a"="1"'], '{"a"="1"', "the text ended where the closing brace } was expected"),
    (['"a"="1"}'], '"a"="1"}', "a closing brace } without an opening brace {"),
    ([{"team": "payments"}], "{'team': 'payments'}", "a matcher must be a string"),
])
def test_parse_matchers_names_the_offending_text(entries, shown, reason):
    with pytest.raises(MatcherError) as raised:
        parse_matchers(entries)
    assert raised.value.text == shown
    assert reason in raised.value.reason


# --- RE2: what it refuses, what it means ---------------------------------------------------------------------

def test_lookahead_is_refused_with_a_message_an_operator_can_act_on():
    assert refusal('team=~"(?=x)"') == (
        'team=~"(?=x)": lookahead (?=...) is not supported by RE2, Alertmanager\'s regex engine '
        '(invalid perl operator: (?=)')


@pytest.mark.parametrize(("regex", "construct"), [
    ("(?=x).*", "lookahead (?=...)"),
    ("(?!x).*", "negative lookahead (?!...)"),
    (".*(?<=x)", "lookbehind (?<=...)"),
    (".*(?<!x)", "negative lookbehind (?<!...)"),
    ("(a)\\\\1", "backreference \\1"),
    ("(?P<n>a)(?P=n)", "(?P"),
    ("(?>a+)", "atomic group (?>...)"),
    ("a*+", "possessive quantifier"),
    ("a++", "possessive quantifier"),
    ("a?+", "possessive quantifier"),
    ("a{2}+", "{2}+"),
    ("(?(1)a|b)", "conditional group"),
    ("(a)?(?(1)b|c)", "conditional group"),
    ("a\\\\Z", "\\Z"),
    ("(?#note)a", "comment (?#...)"),
    ("(?x) a b", "(?x"),
    ("(?u)a", "(?u"),
    ("a{1001}", "a repeat count above 1000"),
    ("(a{100}){11}", "a repeat count above 1000"),
    ("\\\\u0041", "\\u"),
    ("\\\\N{DIGIT ONE}", "\\N"),
    ("\\\\C", "\\C (any byte)"),
])
def test_constructs_re2_lacks_are_refused_by_name(regex, construct):
    message = refusal(f'team=~"{regex}"')
    assert construct in message
    assert "RE2, Alertmanager's regex engine" in message


@pytest.mark.parametrize(("regex", "value", "expected"), [
    ("\\\\pL+", "équipe", True),
    ("\\\\pL+", "team1", False),
    ("\\\\p{Greek}+", "αβγ", True),
    ("\\\\p{Greek}+", "abc", False),
])
def test_unicode_classes_mean_what_they_mean_in_re2(regex, value, expected):
    assert matches(f'v=~"{regex}"', v=value) is expected


def test_a_pathological_regex_takes_linear_time_not_exponential():
    # (a+)+b backtracks exponentially in Python's re (about 0.16 s at 22 "a"s, x4 with every 2 more); RE2 is linear.
    assert not matches('v=~"(a+)+b"', v="a" * 100_000)


def test_the_refusal_also_applies_to_negative_regex_matchers():
    assert "lookahead" in refusal('team!~"(?=x)"')


def test_classes_are_ascii_only_as_in_re2():
    assert matches('n=~"\\d+"', n="42")
    assert not matches('n=~"\\d+"', n="٤٢")  # Arabic-Indic digits
    assert not matches('n=~"\\w+"', n="équipe")
    assert matches('n=~"\\W"', n="é")
    assert not matches('n=~"\\s"', n="\u00a0")
    assert matches('n=~"[\\d\\s]+"', n="1 2")
    assert not matches('n=~"[\\d]"', n="٤")
    assert matches('n=~"[\\D]"', n="٤")
    assert matches('n=~"a\\bé"', n="aé")  # "é" is not a word character, so there is a boundary


def test_case_insensitive_matching_still_folds_non_ascii_letters():
    # RE2's (?i) folds all of Unicode, while its \d, \w and \s stay ASCII.
    assert matches('city=~"(?i)zürich"', city="ZÜRICH")
    assert matches('severity=~"(?i)crit"', severity="CRIT")


def test_inline_flags_hold_to_the_end_of_their_group():
    matcher = parse_matcher('v=~"a(?i)b|c"')  # RE2 reads a(?i:b)|(?i:c)
    assert matcher.matches({"v": "aB"})
    assert matcher.matches({"v": "C"})
    assert not matcher.matches({"v": "AB"})
    assert matches('v=~"(?i:a)b"', v="Ab")
    assert not matches('v=~"(?i:a)b"', v="AB")
    assert matches('v=~"(?i)a(?-i)b"', v="Ab")
    assert not matches('v=~"(?i)a(?-i)b"', v="AB")


def test_dot_matches_a_newline_only_with_the_s_flag():
    assert not matches('v=~"a.b"', v="a\nb")
    assert matches('v=~"(?s)a.b"', v="a\nb")


def test_lowercase_z_is_re2s_end_of_text():
    assert matches('team=~"pay\\z"', team="pay")
    assert not matches('team=~"pay\\z"', team="pay\n")
    assert not matches('team=~"pay\\zx"', team="payx")


@pytest.mark.parametrize(("regex", "value", "expected"), [
    ("a{,3}", "a{,3}", True),  # not a repeat in RE2: a literal
    ("a{,3}", "aa", False),
    ("a{2,3}", "aaa", True),
    ("[[:alpha:]]+", "abc", True),
    ("[[:alpha:]]+", "é", False),
    ("[[:^digit:]]", "x", True),
    ("[[:^digit:]]", "5", False),
    ("\\\\Q.*\\\\E", ".*", True),
    ("\\\\Q.*\\\\E", "ab", False),
    ("\\\\x{41}\\\\x42", "AB", True),
    ("\\\\101", "A", True),  # octal
    ("\\\\0", "\x00", True),
    ("(?U)a+", "aaa", True),  # ungreedy does not change what a whole value matches
    ("(?<name>a)b", "ab", True),
    ("(?P<name>a)b", "ab", True),
    ("[]a]+", "]a", True),
    ("[^]a]", "b", True),
    ("[a&&b]", "&", True),
    ("\\\\_", "_", True),
    ("a(?i)*", "aaa", True),  # a flag group is not an atom: the * repeats "a"
    ("a(?i)*", "A", False),
    ("^+a", "a", True),  # RE2 lets an assertion take a quantifier
    ("\\\\B", "", True),  # no word boundary in an empty value (Python 3.11's own \B never matches there)
    ("a\\\\B", "a", False),
])
def test_re2_syntax_keeps_its_meaning(regex, value, expected):
    assert matches(f'v=~"{regex}"', v=value) is expected


@PROPERTY_SETTINGS
@given(text=st.text(alphabet=st.sampled_from(list('ab_:=!~"\\,{}()[]|*+?.^$ \t\ndzQEpPbBxi<>#-0123é')), max_size=16))
def test_any_text_gives_a_matcher_or_a_matcher_error(text):
    for parse in (parse_matcher, parse_matchers, lambda t: parse_matcher(f'v=~"{t}"')):
        try:
            parse(text)
        except MatcherError:
            pass


def test_the_regex_is_compiled_once_at_parse_time(monkeypatch):
    import re2

    matcher = parse_matcher('team=~"pay.*"')

    def compile_forbidden(*args, **kwargs):
        raise AssertionError("matching must not compile")

    monkeypatch.setattr(re2, "compile", compile_forbidden)
    assert matcher.matches({"team": "payments"})
    assert not matcher.matches({"team": "search"})


# --- Canonical text ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "canonical"), [
    ("team=payments", 'team="payments"'),
    (' severity =~ crit|page ', 'severity=~"crit|page"'),
    ('team="say \\"hi\\"\\n"', 'team="say \\"hi\\"\\n"'),
    ('team=~"\\d+"', 'team=~"\\\\d+"'),
    ('"service.name"="api"', 'service.name="api"'),  # as Alertmanager writes it: quoted only if it must be
    ('"team name"="a\\tb"', '"team name"="a\\tb"'),
])
def test_str_is_alertmanagers_canonical_text(text, canonical):
    assert str(parse_matcher(text)) == canonical


names = st.text(min_size=1, max_size=12)
values = st.text(max_size=20)


@PROPERTY_SETTINGS
@given(name=names, operator=st.sampled_from(["=", "!="]), value=values)
def test_str_round_trips_through_the_parsers(name, operator, value):
    matcher = Matcher(name, operator, value)
    assert parse_matcher(str(matcher)) == matcher
    assert parse_matchers([str(matcher)]) == (matcher,)


@PROPERTY_SETTINGS
@given(name=names, value=values)
def test_str_round_trips_for_regex_matchers(name, value):
    matcher = Matcher(name, "=~", re.escape(value))
    assert parse_matcher(str(matcher)) == matcher


@PROPERTY_SETTINGS
@given(value=values, other=values, same=st.booleans())
def test_equal_and_not_equal_are_complements_and_an_escaped_regex_equals_equal(value, other, same):
    label_value = value if same else other
    labels = {"team": label_value}
    equal = Matcher("team", "=", value).matches(labels)
    assert equal is (label_value == value)
    assert Matcher("team", "!=", value).matches(labels) is not equal
    assert Matcher("team", "=~", re.escape(value)).matches(labels) is equal
    assert Matcher("team", "!~", re.escape(value)).matches(labels) is not equal
