"""User message templates: validation, compile errors, variables, filters, bounded cost and hostile data."""

from __future__ import annotations

import re
import time
import tracemalloc
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rcwebhook.model import FIRING, RESOLVED, Alert, Notification
from rcwebhook.templates import (
    MAX_FIELD_VALUE_CHARS,
    MAX_HEADLINE_CHARS,
    MAX_TEXT_CHARS,
    MAX_TITLE_CHARS,
    MessageTemplate,
    RenderedAlertParts,
    TemplateError,
    TemplateRenderError,
    alert_context,
    compile_templates,
    notification_context,
)

# Well under a second on a slow CI machine; the budgets stop each bomb within milliseconds here.
FAST_SECONDS = 0.5
# Peak Python allocations of a refused bomb (the bombs would take gigabytes).
BOUNDED_BYTES = 20 * 1024 * 1024


def make_alert(**overrides) -> Alert:
    values = {
        "index": 0,
        "status": FIRING,
        "labels": {"alertname": "PaymentsDown", "severity": "crit", "instance": "pay-1:9100", "team": "payments"},
        "annotations": {"summary": "Payments are failing", "description": "5xx above 10%"},
        "starts_at": "2024-01-15T10:00:00Z",
        "ends_at": "0001-01-01T00:00:00Z",
        "generator_url": "http://prometheus.example/graph?g0.expr=up",
        "fingerprint": "a1b2c3d4e5f60718",
    }
    return Alert(**{**values, **overrides})


def make_notification(*alerts: Alert, **overrides) -> Notification:
    values = {
        "alerts": alerts or (make_alert(),),
        "status": FIRING,
        "receiver": "payments-team",
        "group_key": "{}:{alertname=\"PaymentsDown\"}",
        "group_labels": {"alertname": "PaymentsDown"},
        "common_labels": {"alertname": "PaymentsDown", "team": "payments"},
        "common_annotations": {"summary": "Payments are failing"},
        "external_url": "http://alertmanager.example:9093",
    }
    return Notification(**{**values, **overrides})


def compile_one(**parts) -> MessageTemplate:
    return compile_templates({"payments": parts})["payments"]


def render_alert(template: MessageTemplate, alert: Alert | None = None, notification: Notification | None = None):
    alert = alert or make_alert()
    notification = notification or make_notification(alert)
    context = alert_context(alert, notification, integration="payments-hook", severity_label="severity")
    return template.render_alert_parts(context)


def render_text(source: str, alert: Alert | None = None, notification: Notification | None = None) -> str:
    parts = render_alert(compile_one(text=source), alert, notification)
    assert parts.text is not None
    return parts.text


def with_labels(**labels: str) -> Alert:
    return make_alert(labels={"alertname": "PaymentsDown", **labels})


# ---------------------------------------------------------------- the routes file's example


def test_the_documented_example_renders_every_part():
    template = compile_templates(
        {
            "payments": {
                "headline": "{{ status | upper }}: {{ alerts | length }} payment alert(s)",
                "title": "{{ labels.alertname }} on {{ labels.instance }}",
                "text": "{{ annotations.summary }}",
                "fields": [{"title": "Team", "value": "{{ labels.team }}"}],
            }
        }
    )["payments"]
    notification = make_notification(make_alert(), make_alert(index=1, status=RESOLVED))
    headline_context = notification_context(
        notification, notification.alerts, integration="payments-hook", severity_label="severity"
    )

    assert template.render_headline(headline_context) == "FIRING: 2 payment alert(s)"
    assert render_alert(template, notification.alerts[0], notification) == RenderedAlertParts(
        title="PaymentsDown on pay-1:9100", text="Payments are failing", fields=(("Team", "payments"),)
    )


def test_parts_a_template_does_not_set_are_none():
    template = compile_one(title="{{ labels.alertname }}")
    notification = make_notification()
    context = notification_context(notification, notification.alerts, integration="i", severity_label="severity")

    assert template.render_headline(context) is None
    assert render_alert(template) == RenderedAlertParts(title="PaymentsDown", text=None, fields=())


def test_fields_with_an_empty_title_or_value_are_dropped():
    template = compile_one(
        fields=[
            {"title": "Team", "value": "{{ labels.team }}"},
            {"title": "{{ labels.nope }}", "value": "x"},
            {"title": "Owner", "value": "  {{ labels.owner }}  "},
        ]
    )

    assert render_alert(template).fields == (("Team", "payments"),)
    assert render_alert(template, with_labels(owner="ops")).fields == (("Owner", "ops"),)


# ---------------------------------------------------------------- validation and compile errors


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ({"title": "{{ labels.alertname "}, "templates.payments.title, line 1: unexpected end of template"),
        ({"text": "fine\n{{ labels.a | nosuch }}"}, "templates.payments.text, line 2: No filter named 'nosuch'"),
        ({"text": "a\nb\n{% if status %}"}, "templates.payments.text, line 3: Unexpected end of template"),
        ({"headline": "{% for %}"}, "templates.payments.headline, line 1: "),
        (
            {"fields": [{"title": "ok", "value": "ok"}, {"title": "ok", "value": "{{ 1 + }}"}]},
            "templates.payments.fields[1].value, line 1: unexpected",
        ),
    ],
)
def test_a_syntax_error_names_the_template_the_part_and_the_line(parts, message):
    with pytest.raises(TemplateError) as refused:
        compile_one(**parts)
    assert str(refused.value).startswith(message)


FIELD = "templates.payments.fields[0]"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"payments": {"titel": "x"}}, "templates.payments.titel: unknown key"),
        ({"payments": {"fields": [{"title": "t", "value": "v", "short": True}]}}, f"{FIELD}.short: unknown key"),
        ({"payments": {"fields": [{"title": "t"}]}}, "templates.payments.fields[0].value is missing"),
        ({"payments": {"fields": [{"title": "t", "value": 5}]}}, f"{FIELD}.value must be a non-empty string"),
        ({"payments": {"fields": [{"title": "t", "value": None}]}}, f"{FIELD}.value must be a non-empty string"),
        ({"payments": {"fields": ["x"]}}, "templates.payments.fields[0] must be a mapping"),
        ({"payments": {"fields": {"title": "t", "value": "v"}}}, "templates.payments.fields must be a list"),
        ({"payments": {"fields": [{"title": "t", "value": "v"}] * 21}}, "templates.payments.fields has 21 fields"),
        ({"payments": {"text": True}}, "templates.payments.text must be a non-empty string"),
        ({"payments": {"text": "   "}}, "templates.payments.text must be a non-empty string"),
        ({"payments": {"text": "x" * 10_001}}, "templates.payments.text is 10001 characters long"),
        ({"payments": {}}, "templates.payments sets no part"),
        ({"payments": "{{ labels.alertname }}"}, "templates.payments must be a mapping"),
        ({"pay ments": {"text": "x"}}, "templates: template name 'pay ments'"),
        (["payments"], "templates must be a mapping"),
    ],
)
def test_a_malformed_spec_is_refused_naming_the_path(spec, message):
    with pytest.raises(TemplateError) as refused:
        compile_templates(spec)
    assert str(refused.value).startswith(message)


def test_where_prefixes_every_path():
    with pytest.raises(TemplateError, match=r"^routes\.yml:templates\.payments\.text, line 1: "):
        compile_templates({"payments": {"text": "{{"}}, where="routes.yml:templates")


@pytest.mark.parametrize(
    "source",
    [
        "{{ labels.x | int(base=99) }}",  # x is undefined on the sample alert: int() of undefined fails
        "line one\n{{ 1 / 0 }}",
        "{{ labels | dictsort(by='nope') }}",
        "{{ labels.nope() }}",
        "{{ labels.update({'alertname': 'changed'}) }}",  # the sandbox refuses to change a dict
        "{% include 'other' %}",
        "{{ '{:>10}'.format(1) }}",
    ],
)
def test_a_template_that_fails_on_the_sample_alert_is_refused(source):
    with pytest.raises(TemplateError, match=r"^templates\.payments\.text, line \d: fails on a sample alert: "):
        compile_one(text=source)


def test_the_refusal_gives_the_failing_line():
    with pytest.raises(TemplateError) as refused:
        compile_one(text="fine\n{{ 1 / 0 }}")
    assert str(refused.value) == "templates.payments.text, line 2: fails on a sample alert: division by zero"


def test_a_failure_at_run_time_is_a_template_render_error_naming_template_part_and_line():
    template = compile_one(title="{{ labels.alertname }}", text="CPUs:\n{{ 100 / (labels.cpus | default(1) | int) }}")

    assert render_alert(template, with_labels(cpus="4")).text == "CPUs:\n25.0"
    with pytest.raises(TemplateRenderError) as failed:
        render_alert(template, with_labels(cpus="0"))
    assert str(failed.value) == "templates.payments.text, line 2: division by zero"
    assert (failed.value.template, failed.value.part, failed.value.line) == ("payments", "templates.payments.text", 2)


def test_a_render_error_names_the_template_whatever_the_prefix():
    spec = {"payments": {"text": "{{ 1 / (labels.d | default(1) | int) }}"}}
    template = compile_templates(spec, where="a.b.templates")
    with pytest.raises(TemplateRenderError) as failed:
        render_alert(template["payments"], with_labels(d="0"))
    assert (failed.value.template, failed.value.part) == ("payments", "a.b.templates.payments.text")


def test_a_failing_filter_at_run_time_is_a_template_render_error():
    # Compiles: the sample alert takes the default; an alert whose label is not a number fails.
    template = compile_one(text="{{ (labels.x | default('0')) | int(base=99) + labels.y | default(0) | float }}")
    assert render_alert(template).text == "0.0"
    with pytest.raises(TemplateRenderError):
        render_alert(compile_one(text="{{ labels.a | default(1) > 3 }}"), with_labels(a="text"))


def test_block_tags_on_their_own_lines_leave_no_blank_lines():
    # As a routes file writes a multi-line part (YAML "text: |"): trim_blocks and lstrip_blocks are on.
    source = "Labels:\n{% for key, value in labels | dictsort %}\n  - {{ key }}: {{ value }}\n{% endfor %}\nEnd\n"
    assert render_text(source, with_labels(team="payments")) == (
        "Labels:\n  - alertname: PaymentsDown\n  - team: payments\nEnd"
    )


# ---------------------------------------------------------------- undefined values


def test_undefined_variables_and_chains_through_them_render_empty():
    text = render_text(
        "[{{ annotations.nope }}|{{ labels.nope }}|{{ labels.nope.deeper }}|{{ labels.a.b['c'] }}"
        "|{{ alerts[7].labels.x }}|{{ labels.nope | upper }}|{{ labels.nope.deeper | default('fallback') }}"
        "|{{ labels.__class__ }}]"
    )
    assert text == "[||||||fallback|]"


@pytest.mark.parametrize("source", ["{{ lables.alertname }}", "{{ alert.labels.x }}", "{{ Labels.team }}"])
def test_a_misspelled_variable_is_refused_at_load_naming_it(source):
    # A missing label renders empty; a variable templates do not have would render empty for ever, unnoticed.
    with pytest.raises(TemplateError, match=r"^templates\.payments\.text: unknown variable\(s\) "):
        compile_one(text=source)


def test_a_loop_over_an_undefined_value_is_empty():
    assert render_text("a{% for x in labels.nope.deeper %}{{ x }}{% endfor %}b") == "ab"


# ---------------------------------------------------------------- the variables


def test_every_alert_variable_has_its_value():
    alert = make_alert(status=RESOLVED, ends_at="2024-01-15T11:05:00Z")
    names = ["status", "starts_at", "ends_at", "severity", "generator_url", "fingerprint"]
    source = "\n".join(f"{name}={{{{ {name} }}}}" for name in names)
    source += "\nlabels={{ labels | dictsort }}\nannotations={{ annotations.summary }}|{{ annotations.description }}"

    assert render_text(source, alert).splitlines() == [
        "status=resolved",
        "starts_at=2024-01-15T10:00:00Z",
        "ends_at=2024-01-15T11:05:00Z",
        "severity=critical",  # "crit" normalised by the relay's vocabulary
        "generator_url=http://prometheus.example/graph?g0.expr=up",
        "fingerprint=a1b2c3d4e5f60718",
        "labels=[('alertname', 'PaymentsDown'), ('instance', 'pay-1:9100'), ('severity', 'crit'),"
        " ('team', 'payments')]",
        "annotations=Payments are failing|5xx above 10%",
    ]


def test_every_notification_variable_is_there_in_headlines_and_alert_parts():
    first = make_alert()
    second = make_alert(index=1, status=RESOLVED, labels={"alertname": "Other", "severity": "warn"}, fingerprint="ff")
    notification = make_notification(first, second)
    source = (
        "{{ alerts | length }}|{{ alerts[1].labels.alertname }}|{{ alerts[1].severity }}|{{ alerts[1].status }}"
        "|{{ alerts | map(attribute='fingerprint') | join(',') }}|{{ group_labels.alertname }}"
        "|{{ common_labels.team }}|{{ common_annotations.summary }}|{{ external_url }}|{{ receiver }}|{{ integration }}"
    )
    expected = (
        "2|Other|warning|resolved|a1b2c3d4e5f60718,ff|PaymentsDown|payments|Payments are failing"
        "|http://alertmanager.example:9093|payments-team|payments-hook"
    )
    template = compile_one(headline=source + "|{{ status }}", text=source + "|{{ status }}")
    headline_context = notification_context(
        notification, notification.alerts, integration="payments-hook", severity_label="severity"
    )

    assert template.render_headline(headline_context) == expected + "|firing"
    # In an alert's parts, status is the alert's own.
    assert render_alert(template, second, notification).text == expected + "|resolved"


def test_each_of_alerts_carries_the_per_alert_variables():
    assert render_text("{{ alerts[0] | dictsort | map('first') | join(',') }}") == (
        "annotations,ends_at,fingerprint,generator_url,labels,severity,starts_at,status"
    )
    assert render_text("{{ alerts[0].starts_at | utc }} {{ alerts[0].annotations.summary }}") == (
        "2024-01-15 10:00:00 UTC Payments are failing"
    )


def test_alerts_are_the_messages_alerts_and_status_follows_them():
    firing, resolved = make_alert(), make_alert(index=1, status=RESOLVED, fingerprint="ff")
    notification = make_notification(firing, resolved)  # the group fires; this message carries the resolved one
    headline_context = notification_context(notification, [resolved], integration="i", severity_label="severity")
    template = compile_one(
        headline="{{ status }} {{ alerts | length }} {{ alerts[0].fingerprint }}", text="{{ alerts | length }}"
    )

    assert template.render_headline(headline_context) == "resolved 1 ff"
    shared = alert_context(
        resolved, notification, integration="i", severity_label="severity", base_context=headline_context
    )
    assert template.render_alert_parts(shared).text == "1"
    # Without a base context, alerts are all of the notification's.
    assert render_alert(template, resolved, notification).text == "2"


def test_the_severity_label_is_configurable():
    alert = make_alert(labels={"alertname": "A", "priority": "P2"})
    context = alert_context(alert, make_notification(alert), integration="i", severity_label="priority")
    assert compile_one(text="{{ severity }}").render_alert_parts(context).text == "warning"
    assert render_text("{{ severity }}", alert) == "unknown"


def test_labels_are_plain_string_dict_copies():
    alert = make_alert()
    context = alert_context(alert, make_notification(alert), integration="i", severity_label="severity")

    assert context["labels"] == dict(alert.labels) and context["labels"] is not alert.labels
    assert isinstance(context["labels"], dict) and all(isinstance(v, str) for v in context["labels"].values())
    assert context["alerts"][0]["labels"] is not alert.labels


def test_a_label_named_like_a_dict_method_is_the_label():
    assert render_text("{{ labels.values }}|{{ labels.items }}", with_labels(values="v", items="i")) == "v|i"


# ---------------------------------------------------------------- filters


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ starts_at | utc }}", "2024-01-15 10:00:00 UTC"),
        ("{{ '2024-01-15T12:00:00.123456789+02:00' | utc }}", "2024-01-15 10:00:00 UTC"),
        ("[{{ ends_at | utc }}]", "[]"),  # Go's zero time: not set
        ("[{{ labels.nope | utc }}]", "[]"),
        ("{{ 'yesterday' | utc }}", "yesterday"),  # shown as given when it does not parse
        ("{{ 3900 | duration }}", "1h 5m"),
        ("{{ '90' | duration }}", "1m 30s"),
        ("{{ 93784.9 | duration }}", "1d 2h 3m 4s"),
        ("{{ 0 | duration }}", "0s"),
        ("{{ starts_at | duration('2024-01-15T11:05:00Z') }}", "1h 5m"),
        ("{{ [starts_at, '2024-01-15T11:05:03Z'] | duration }}", "1h 5m 3s"),
        ("[{{ starts_at | duration(ends_at) }}]", "[]"),  # still firing
        ("[{{ labels.nope | duration }}|{{ 'soon' | duration }}|{{ 'inf' | duration }}]", "[||]"),
    ],
)
def test_the_utc_and_duration_filters(source, expected):
    assert render_text(source) == expected


def test_the_since_filter_counts_to_now():
    two_days_ago = (datetime.now(timezone.utc) - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert re.fullmatch(r"2d( \d+s)?", render_text("{{ starts_at | since }}", make_alert(starts_at=two_days_ago)))
    assert render_text("[{{ ends_at | since }}]") == "[]"


# ---------------------------------------------------------------- bounded cost


def render_refused(template: MessageTemplate, alert: Alert) -> TemplateRenderError:
    with pytest.raises(TemplateRenderError) as refused:
        render_alert(template, alert)
    return refused.value


# n is 0 and s is "ab" on the sample alert, so the templates compile; the alert under test sets n.
PREFIX = "{% set n = labels.n | default(0) | int %}{% set s = labels.s | default('ab') %}"
DOUBLING_MACRO = "{% macro m(n) %}{% if n > 0 %}{{ m(n - 1) }}{{ m(n - 1) }}{% endif %}{% endmacro %}"
VARARGS_MACRO = (
    "{% macro m(n) %}{% if n %}{{ m(n - 1, varargs, varargs) }}{% else %}{{ varargs }}{% endif %}{% endmacro %}"
)


@pytest.mark.parametrize(
    ("source", "n", "match"),
    [
        ("{{ 'x' * n }}", 50_000_000, "repeated value of 50000000 characters"),
        ("{{ 'x' ~ 'x' * n }}", 10**9, "repeated value"),
        ("{{ 'x' ~ 'x' * 10 ** n }}", 9, "repeated value"),
        ("{{ 10 ** (10 ** n) }}", 9, "power of"),
        ("{{ ['x'] * n }}", 10**9, "repeated value"),
        ("{% for i in range(n) %}{% for j in range(n) %}{% endfor %}{% endfor %}", 100_000, "loop iterations"),
        ("{% for a in s * n %}{% for b in s * n %}{% endfor %}{% endfor %}", 5_000, "loop iterations"),
        ("{{ range(n) | list | length }}", 10**9, "loop iterations"),
        ("{{ range(n) | reverse | join }}", 10**9, "loop iterations"),
        ("{% macro m(n) %}{% if n > 0 %}{{ m(n - 1) }}{% endif %}{% endmacro %}{{ m(n) }}", 100_000, "RecursionError"),
        (DOUBLING_MACRO + "{{ m(n) }}", 40, "calls"),
        ("{% for c in 'ab' recursive %}{{ loop(s * n) }}{% endfor %}", 5_000, "RecursionError|loop iterations"),
        ("{% set ns = namespace(s='x') %}{% for i in range(n) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", 64, "limit"),
        ("{% set a = ['x'] * n %}{% set b = [a] * n %}{{ b }}", 50_000, "structure printing"),
        (
            "{% set ns = namespace(l=[1]) %}{% for i in range(n) %}{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l }}",
            60,
            "structure printing",
        ),
        (VARARGS_MACRO + "{{ m(n) }}", 40, "arguments printing"),
        ("{% set x %}{% for i in range(n) %}{{ s * 1000 }}{% endfor %}{% endset %}", 10_000, "work|output"),
        ("{{ 'x'.ljust(n) }}", 10**9, "size argument"),
        ("{{ 'x' | center(n) }}", 10**9, "width"),
        ("{{ ('%' ~ n ~ 'd') | format(1) }}", 10**9, "format width"),
        ("{{ (s * n).replace('', s * n) }}", 1_000, "replacement"),
        ("{{ range(n) | join(s * 1000) }}", 10_000, "join"),
        ("{{ range(3) | slice(n + 1) | list }}", 10**9, "slices"),
        ("{{ (0).to_bytes(n, 'big') }}", 10**9, "size argument"),
    ],
)
def test_a_bomb_is_refused_fast_and_small(source, n, match):
    template = compile_one(text=PREFIX + source)
    alert = make_alert(labels={"alertname": "PaymentsDown", "n": str(n)})

    started = time.perf_counter()
    assert re.search(match, render_refused(template, alert).reason)
    assert time.perf_counter() - started < FAST_SECONDS

    tracemalloc.start()  # slows Python down: measured apart from the time
    try:
        render_refused(template, alert)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_bytes < BOUNDED_BYTES


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'x' * 50000000 }}",
        "{{ 'x' ~ 'x' * 10**9 }}",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
        "{% set a = [1] * 100000 %}{% set b = [a] * 100000 %}{{ b }}",
        "{{ lipsum(n=1000000) }}",
    ],
)
def test_a_literal_bomb_is_refused_at_compile_time_fast(source):
    started = time.perf_counter()
    with pytest.raises(TemplateError, match="fails on a sample alert|unknown variable"):
        compile_one(text=source)
    assert time.perf_counter() - started < FAST_SECONDS


def test_a_long_output_is_cut_not_refused():
    started = time.perf_counter()
    template = compile_one(
        headline="{% for i in range(9000) %}{{ alerts | length }}{% endfor %}",
        title="{% for i in range(9000) %}{{ labels.alertname }}{% endfor %}",
        text="{{ labels.big }}{{ labels.big }}",
        fields=[{"title": "Big", "value": "{% for i in range(5000) %}ab{% endfor %}"}],
    )
    parts = render_alert(template, with_labels(big="y" * 1_000_000))
    notification = make_notification()
    headline = template.render_headline(
        notification_context(notification, notification.alerts, integration="i", severity_label="severity")
    )

    assert len(parts.title) == MAX_TITLE_CHARS and parts.title.endswith("…")
    assert len(parts.text) == MAX_TEXT_CHARS and parts.text.startswith("yyy")
    assert len(parts.fields[0][1]) == MAX_FIELD_VALUE_CHARS
    assert len(headline) == MAX_HEADLINE_CHARS
    assert time.perf_counter() - started < FAST_SECONDS


def test_a_storm_renders_fast():
    alerts = [make_alert(index=i, fingerprint=f"{i:016x}", labels={"alertname": f"A{i % 7}"}) for i in range(5000)]
    notification = make_notification(*alerts)
    template = compile_one(
        headline="{{ alerts | length }}: {{ alerts | map(attribute='labels.alertname') | unique | sort | join(', ') }}",
        title="{{ labels.alertname }} ({{ alerts | selectattr('status', 'eq', 'firing') | list | length }} firing)",
    )
    started = time.perf_counter()
    headline_context = notification_context(notification, alerts, integration="i", severity_label="severity")
    headline = template.render_headline(headline_context)
    titles = {  # the relay shows the first 50 alerts in full (formatting.MAX_FULL_ALERTS)
        template.render_alert_parts(
            alert_context(
                alert, notification, integration="i", severity_label="severity", base_context=headline_context
            )
        ).title
        for alert in alerts[:50]
    }

    assert headline == "5000: A0, A1, A2, A3, A4, A5, A6"
    assert len(titles) == 7 and "A0 (5000 firing)" in titles
    assert time.perf_counter() - started < 5


# ---------------------------------------------------------------- hostile data


HOSTILE = [
    "{{ 7 * 7 }}",
    "{% for i in range(10**9) %}x{% endfor %}",
    "{{ ''.__class__.__mro__ }}",
    "<script>alert(1)</script>",
    "@all @here",
    "{# comment #}",
    "{% raw %}",
    "\x00\u202e\ud83d\ude00",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_label_contents_stay_literal(value):
    alert = make_alert(labels={"alertname": value, "x": value}, annotations={"summary": value})
    template = compile_one(
        title="{{ labels.alertname }}",
        text="{{ annotations.summary }}|{{ labels['x'] }}",
        fields=[{"title": "X", "value": "{{ labels.x }}"}],
    )
    assert render_alert(template, alert) == RenderedAlertParts(
        title=value.strip(), text=f"{value}|{value}".strip(), fields=(("X", value.strip()),)
    )


def test_a_huge_label_value_is_cut_for_templates():
    text = render_text("{{ labels.big | length }}", with_labels(big="z" * 5_000_000))
    assert text == "20000"


# ---------------------------------------------------------------- any data


PROPERTY_TEMPLATE = {
    "headline": "{{ status | upper }}: {{ alerts | length }} {{ alerts | map(attribute='labels.alertname') | join }}",
    "title": "{{ labels.alertname }} on {{ labels.instance | default('?') }} ({{ labels | length }})",
    "text": (
        "{% for k, v in labels | dictsort %}{{ k }}={{ v | truncate(40) }}\n{% endfor %}"
        "{{ annotations.summary | upper }} {{ annotations.when | utc }} {{ annotations.secs | duration }}"
        " {{ starts_at | duration(ends_at) }} {{ annotations.summary ~ labels.alertname }}"
    ),
    "fields": [
        {"title": "Count", "value": "{{ 'ab' * (labels.count | default('1') | int) }}"},
        {"title": "Ratio", "value": "{{ 1000 / (labels.count | default('1') | int) }}"},
        {"title": "{{ labels.alertname }}", "value": "{{ annotations.values() | join(' ') | wordwrap(30) }}"},
    ],
}
TEMPLATE = compile_templates({"property": PROPERTY_TEMPLATE})["property"]
texts = st.text(max_size=300)
label_values = st.one_of(texts, st.integers().map(str), st.floats().map(str), st.sampled_from(HOSTILE))
label_names = st.sampled_from(["alertname", "instance", "count"]) | st.text(max_size=20)
label_maps = st.dictionaries(label_names, label_values, max_size=8)
annotation_names = st.sampled_from(["summary", "when", "secs", "description"]) | texts
annotation_maps = st.dictionaries(annotation_names, label_values, max_size=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(labels=label_maps, annotations=annotation_maps, starts_at=label_values, ends_at=label_values)
def test_any_data_gives_bounded_strings_or_a_template_render_error(labels, annotations, starts_at, ends_at):
    alert = make_alert(labels=labels, annotations=annotations, starts_at=starts_at, ends_at=ends_at)
    notification = make_notification(alert, make_alert(index=1, labels=labels))
    shared = notification_context(notification, notification.alerts, integration="i", severity_label="severity")
    try:
        headline = TEMPLATE.render_headline(shared)
        parts = TEMPLATE.render_alert_parts(
            alert_context(alert, notification, integration="i", severity_label="severity", base_context=shared)
        )
    except TemplateRenderError:
        return
    assert isinstance(headline, str) and len(headline) <= MAX_HEADLINE_CHARS
    assert isinstance(parts.title, str) and len(parts.title) <= MAX_TITLE_CHARS
    assert isinstance(parts.text, str) and len(parts.text) <= MAX_TEXT_CHARS
    for title, value in parts.fields:
        assert isinstance(title, str) and isinstance(value, str) and title and value
        assert len(value) <= MAX_FIELD_VALUE_CHARS
