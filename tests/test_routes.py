"""Routes: the environment's table, routes files (validation, matching, continue, shared hooks), integrations and
their secrets, over the app with a recording Rocket.Chat."""

from __future__ import annotations

import base64
import json
import textwrap

import pytest

from rcwebhook.app import create_app
from rcwebhook.config import ConfigError, load_config
from rcwebhook.routes import table_from_environment
from rcwebhook.routes_file import load_route_table
from tests.conftest import BASE_ENVIRON, HOOK_URLS, REPO

ONCALL_URL = "http://rocketchat.test/hooks/oncall-id/oncall-secret-token"
PAYMENTS_URL = "http://rocketchat.test/hooks/payments-id/payments-secret-token"
STAGING_URL = "http://rocketchat.test/hooks/staging-id/staging-secret-token"
ROUTES = """
destinations:
  oncall: {rocketchat: {url: %(oncall)s}, mention: "@here"}
  payments: {rocketchat: {url_env: RC_PAYMENTS_URL}, template: payments}
  staging: {rocketchat: {url: %(staging)s}}
  oncall-copy: {rocketchat: {url: %(oncall)s}}
integrations:
  default:
    token: am-token-1
    routes:
      - matchers: ['env="staging"']
        destination: staging
      - matchers: ['team="payments"']
        destinations: [payments, oncall]
      - severity: p1
        destinations: [oncall, oncall-copy]
      - destination: staging
  grafana-prod:
    token: grafana-token-2
    routes: [{destination: payments}]
  open-one:
    routes: [{destination: staging}]
templates:
  payments:
    headline: "{{ status | upper }}: {{ alerts | length }} payment alert(s)"
    title: "{{ labels.alertname }} for {{ labels.team }}"
    text: "{{ annotations.summary }} ({{ labels.nope.deeper }})"
    fields: [{title: Team, value: "{{ labels.team }}"}]
""" % {"oncall": ONCALL_URL, "staging": STAGING_URL}
ENVIRON = {"RC_PAYMENTS_URL": PAYMENTS_URL, "DELIVERY_DEADLINE_SECONDS": "1"}


def write(tmp_path, text, name="routes.yml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def body(*alerts, **extra):
    return json.dumps({"status": "firing", "receiver": "rc", "alerts": list(alerts), **extra})


def alert(name, status="firing", **labels):
    return {"status": status, "labels": {"alertname": name, **labels}, "annotations": {"summary": f"{name} summary"},
            "startsAt": "2026-12-01T07:00:00Z"}


@pytest.fixture
def routed(tmp_path, fake_rocketchat):
    application = create_app({**ENVIRON, "ROUTES_FILE": write(tmp_path, ROUTES)}, client=fake_rocketchat)
    yield application
    application.extensions["rcwebhook.dispatcher"].stop(drain_seconds=0)


def posts_to(fake, url):
    return [message for posted_url, message in fake.posts if posted_url == url]


# -- the environment's table -------------------------------------------------------------------------------------


def test_without_a_routes_file_the_table_routes_by_severity_to_the_hooks_named_as_before():
    config = load_config({**BASE_ENVIRON, "ROCKETCHAT_WEBHOOK_INFO": HOOK_URLS["warning"]})
    table = table_from_environment(config)
    assert sorted(hook.name for hook in table.hooks.values()) == ["critical", "warning+info"]
    assert list(table.integrations) == ["default"]
    names = {hook.url: hook.name for hook in table.hooks.values()}
    from rcwebhook.payload import parse_notification

    parts = table.route("default", parse_notification(json.loads(body(
        alert("A", severity="p1"), alert("B", severity="warn"), alert("C", severity="notice"), alert("D")))))
    assert [(names[part.hook.url], [a.labels["alertname"] for a in part.alerts]) for part in parts] == [
        ("critical", ["A"]), ("warning+info", ["B", "C", "D"])]


# -- routing by a routes file ------------------------------------------------------------------------------------


def test_a_label_route_reaches_two_channels_and_the_first_match_wins(routed, fake_rocketchat):
    client = routed.test_client()
    answer = client.post("/webhook", data=body(alert("PayDown", team="payments", env="prod", severity="critical")),
                         headers={"Authorization": "Bearer am-token-1"})
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["integration"] == "default"
    [payments] = posts_to(fake_rocketchat, PAYMENTS_URL)
    [oncall] = posts_to(fake_rocketchat, ONCALL_URL)
    assert posts_to(fake_rocketchat, STAGING_URL) == []
    # The payments destination's template; the on-call one's built-in layout with its mention.
    assert payments["text"].startswith("FIRING: 1 payment alert(s)")
    assert payments["attachments"][0]["title"] == "PayDown for payments"
    assert payments["attachments"][0]["text"] == "PayDown summary ()"
    assert {"title": "Team", "value": "payments", "short": False} in payments["attachments"][0]["fields"]
    assert oncall["text"].startswith("@here [FIRING:1] PayDown")
    assert oncall["attachments"][0]["title"].startswith("FIRING: PayDown")


def test_two_destinations_sharing_one_url_get_one_post(routed, fake_rocketchat):
    answer = routed.test_client().post("/webhook", data=body(alert("Paged", severity="page")),
                                       headers={"X-API-Key": "am-token-1"})
    assert answer.status_code == 200
    assert len(posts_to(fake_rocketchat, ONCALL_URL)) == 1
    assert posts_to(fake_rocketchat, ONCALL_URL)[0]["text"].startswith("@here ")


def test_an_alert_matching_no_route_but_the_last_lands_there(routed, fake_rocketchat):
    routed.test_client().post("/webhook", data=body(alert("Quiet", severity="info")),
                              headers={"X-Webhook-Secret": "am-token-1"})
    assert len(posts_to(fake_rocketchat, STAGING_URL)) == 1


def test_continue_lets_later_routes_match_too(tmp_path, fake_rocketchat):
    routes = ROUTES.replace("        destination: staging\n      - matchers: ['team=\"payments\"']",
                            "        destination: staging\n        continue: true\n"
                            "      - matchers: ['team=\"payments\"']", 1)
    application = create_app({**ENVIRON, "ROUTES_FILE": write(tmp_path, routes)}, client=fake_rocketchat)
    try:
        application.test_client().post("/webhook", data=body(alert("Both", env="staging", team="payments")),
                                       headers={"Authorization": "Bearer am-token-1"})
        assert len(posts_to(fake_rocketchat, STAGING_URL)) == 1
        assert len(posts_to(fake_rocketchat, PAYMENTS_URL)) == 1
        assert len(posts_to(fake_rocketchat, ONCALL_URL)) == 1
    finally:
        application.extensions["rcwebhook.dispatcher"].stop(drain_seconds=0)


# -- integrations and their secrets ---------------------------------------------------------------------------------


def basic(password, user="alertmanager"):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer grafana-token-2"}, {"X-API-Key": "grafana-token-2"},
    {"X-Webhook-Secret": "grafana-token-2"}, {"Authorization": basic("grafana-token-2")},
])
def test_each_integration_accepts_its_token_in_every_supported_header(routed, fake_rocketchat, headers):
    answer = routed.test_client().post("/webhook/grafana-prod", data=body(alert("G")), headers=headers)
    assert answer.status_code == 200
    assert answer.get_json()["integration"] == "grafana-prod"
    assert len(posts_to(fake_rocketchat, PAYMENTS_URL)) == 1


@pytest.mark.parametrize(("path", "headers"), [
    ("/webhook/grafana-prod", {"Authorization": "Bearer am-token-1"}),  # another integration's token
    ("/webhook", {"Authorization": "Bearer grafana-token-2"}),
    ("/webhook", {"Authorization": basic("wrong")}),
    ("/webhook", {}),
])
def test_one_integrations_token_never_opens_another_endpoint(routed, fake_rocketchat, path, headers):
    answer = routed.test_client().post(path, data=body(alert("X")), headers=headers)
    assert answer.status_code == 401
    assert fake_rocketchat.posts == []


def test_an_unknown_integration_is_404_without_a_list_of_names(routed):
    answer = routed.test_client().post("/webhook/nope", data=body(alert("X")))
    assert answer.status_code == 404
    assert answer.get_json()["error"] == "unknown integration"
    assert "grafana" not in answer.get_data(as_text=True)


def test_an_integration_without_a_token_is_open_and_named_in_one_warning(tmp_path, fake_rocketchat, caplog):
    application = create_app({**ENVIRON, "ROUTES_FILE": write(tmp_path, ROUTES)}, client=fake_rocketchat)
    try:
        warnings = [record.getMessage() for record in caplog.records if "no token for integration" in
                    record.getMessage()]
        assert len(warnings) == 1 and "open-one" in warnings[0] and "grafana-prod" not in warnings[0]
        assert application.test_client().post("/webhook/open-one", data=body(alert("O"))).status_code == 200
    finally:
        application.extensions["rcwebhook.dispatcher"].stop(drain_seconds=0)


def test_metrics_count_notifications_and_auth_failures_by_integration(routed):
    client = routed.test_client()
    client.post("/webhook/grafana-prod", data=body(alert("G")), headers={"X-API-Key": "grafana-token-2"})
    client.post("/webhook/grafana-prod", data=body(alert("G")), headers={"X-API-Key": "wrong"})
    text = client.get("/metrics").get_data(as_text=True)
    assert 'rocketchat_webhook_notifications_received_total{integration="grafana-prod",status="200"} 1.0' in text
    assert 'rocketchat_webhook_auth_failures_total{integration="grafana-prod"} 1.0' in text
    assert "payments-secret-token" not in text


# -- validation ----------------------------------------------------------------------------------------------------


def load(tmp_path, text, **environ):
    return load_route_table(load_config({"ROUTES_FILE": write(tmp_path, text), **environ}),
                            {"ROUTES_FILE": str(tmp_path / "routes.yml"), **environ})


MINIMAL = """
destinations:
  a: {rocketchat: {url: http://rc/hooks/id/secret-a}}
integrations:
  default:
    routes: [{destination: a}]
"""


@pytest.mark.parametrize(("change", "message"), [
    (("routes: [{destination: a}]", "routes: [{destination: b}]"), "integrations.default.routes[0]: no destination named 'b'"),
    (("routes: [{destination: a}]", "routes: [{matchers: ['x=\"1\"'], destination: a}]"),
     "integrations.default.routes[0]: the last route must have no matchers"),
    (("routes: [{destination: a}]", "routes: [{matchers: ['x=~\"(?=y)\"'], destination: a}, {destination: a}]"),
     "integrations.default.routes[0].matchers"),
    (("routes: [{destination: a}]", "routes: [{destination: a, colour: red}]"),
     "integrations.default.routes[0]: unknown key(s) colour"),
    (("  default:", "  other:"), "integrations: needs a 'default' integration"),
    (("{url: http://rc/hooks/id/secret-a}", "{url: ftp://rc/hooks/id/secret-a}"),
     "destinations.a.rocketchat: must be an http:// or https:// URL"),
    (("{url: http://rc/hooks/id/secret-a}", "{url_file: /nonexistent/secret}"),
     "destinations.a.rocketchat.url_file: cannot read"),
    (("a: {rocketchat", "a: {template: nope, rocketchat"), "destinations.a.template: no template named 'nope'"),
    (("routes: [{destination: a}]", "routes: [{severity: sometimes, destination: a}]"),
     "integrations.default.routes[0].severity: 'sometimes' is no severity"),
    (("integrations:", "templates:\n  t: {title: '{{ labels.x '}\nintegrations:"), "templates.t"),
])
def test_a_bad_routes_file_is_refused_naming_the_place_and_never_the_url(tmp_path, change, message):
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, MINIMAL.replace(*change))
    assert message in str(refused.value)
    assert str(tmp_path / "routes.yml") in str(refused.value)
    assert "secret-a" not in str(refused.value)


def test_destination_settings_left_in_the_environment_are_a_conflict_unless_the_file_uses_them(tmp_path):
    with pytest.raises(ConfigError, match="ROCKETCHAT_WEBHOOK_CRITICAL is set in the environment"):
        load(tmp_path, MINIMAL, ROCKETCHAT_WEBHOOK_CRITICAL="http://rc/hooks/id/secret-c")
    used = MINIMAL.replace("{url: http://rc/hooks/id/secret-a}", "{url_env: ROCKETCHAT_WEBHOOK_CRITICAL}")
    table = load(tmp_path, used, ROCKETCHAT_WEBHOOK_CRITICAL="http://rc/hooks/id/secret-c")
    assert [destination.url for destination in table.destinations.values()] == ["http://rc/hooks/id/secret-c"]


def test_webhook_token_applies_to_the_default_integration_and_conflicts_with_a_token_in_the_file(tmp_path):
    table = load(tmp_path, MINIMAL, WEBHOOK_TOKEN="env-token")
    assert table.integrations["default"].token == "env-token"
    with pytest.raises(ConfigError, match="WEBHOOK_TOKEN is set"):
        load(tmp_path, MINIMAL.replace("  default:\n", "  default:\n    token: file-token\n"), WEBHOOK_TOKEN="e")


def test_the_shipped_example_loads_and_routes_as_its_comments_say(tmp_path):
    environ = {"ROUTES_FILE": str(REPO / "routes.example.yml"), "RC_ONCALL_URL": ONCALL_URL,
               "RC_PAYMENTS_URL": PAYMENTS_URL, "RC_STAGING_URL": STAGING_URL, "AM_WEBHOOK_TOKEN": "t1",
               "GRAFANA_WEBHOOK_SECRET": "t2"}
    table = load_route_table(load_config(environ), environ)
    from rcwebhook.routes import destinations_for

    default = table.integrations["default"]
    assert destinations_for(default, {"env": "staging", "team": "payments"}) == ["staging"]
    assert destinations_for(default, {"team": "payments"}) == ["payments", "oncall"]
    assert destinations_for(default, {"severity": "P1"}) == ["oncall"]
    assert destinations_for(default, {"severity": "warning"}) == ["staging"]
    assert destinations_for(table.integrations["grafana-prod"], {}) == ["payments"]
    described = "\n".join(table.describe())
    assert "oncall-secret-token" not in described and "rocketchat.test" in described


# A template that fails on an alert whose divisor label is 0, and only there.
RATIO_ROUTES = MINIMAL.replace("a: {rocketchat", "a: {template: ratio, rocketchat") + textwrap.dedent("""
    templates:
      ratio:
        title: "{{ labels.alertname }}: {{ 100 // (labels.divisor | default(1) | int) }} %"
""")


def test_a_template_that_fails_on_an_alert_costs_nothing_but_its_layout(tmp_path, fake_rocketchat, caplog):
    application = create_app({"ROUTES_FILE": write(tmp_path, RATIO_ROUTES)}, client=fake_rocketchat)
    try:
        client = application.test_client()
        assert client.post("/webhook", data=body(alert("Fine", divisor="4"))).status_code == 200
        assert client.post("/webhook", data=body(alert("Broken", divisor="0"))).status_code == 200
        fine, broken = (message["attachments"][0]["title"] for _, message in fake_rocketchat.posts)
        assert fine == "Fine: 25 %"
        assert broken.startswith("FIRING: Broken")  # the built-in layout
        errors = [record for record in caplog.records if "template 'ratio' failed" in record.getMessage()]
        assert len(errors) == 1 and errors[0].levelname == "ERROR"
        metrics = client.get("/metrics").get_data(as_text=True)
        assert 'rocketchat_webhook_template_failures_total{template="ratio"} 1.0' in metrics
    finally:
        application.extensions["rcwebhook.dispatcher"].stop(drain_seconds=0)


def test_a_wrong_token_is_logged_once_per_integration_at_a_time_with_the_count_left_out(routed, caplog):
    client = routed.test_client()
    for _ in range(3):
        answer = client.post("/webhook/grafana-prod", data=body(alert("X")), headers={"X-API-Key": "guess-123"})
        assert answer.status_code == 401
    lines = [record for record in caplog.records if "missing or wrong token (answered 401)" in record.getMessage()]
    assert len(lines) == 1 and lines[0].levelname == "WARNING" and "grafana-prod" in lines[0].getMessage()
    assert "guess-123" not in caplog.text  # what a client presented is never logged


# -- the command-line tools ------------------------------------------------------------------------------------------


def run_tool(tmp_path, *arguments):
    from tests.test_operations import run_cli

    return run_cli(*arguments, environ={**ENVIRON, "ROUTES_FILE": write(tmp_path, ROUTES)}, cwd=tmp_path)


def test_routes_test_prints_the_destinations_labels_reach_like_amtool(tmp_path):
    assert run_tool(tmp_path, "--routes-test", "team=payments").stdout.strip() == "payments,oncall"
    assert run_tool(tmp_path, "--routes-test", "severity=p1").stdout.strip() == "oncall,oncall-copy"
    assert run_tool(tmp_path, "--routes-test", "env=staging", "team=payments").stdout.strip() == "staging"
    result = run_tool(tmp_path, "--routes-test", "--integration", "grafana-prod", "team=anything")
    assert (result.returncode, result.stdout.strip()) == (0, "payments")
    unknown = run_tool(tmp_path, "--routes-test", "--integration", "nope", "a=b")
    assert unknown.returncode == 2 and "no integration named 'nope'" in unknown.stderr


def test_check_config_prints_the_route_table_with_urls_redacted(tmp_path):
    result = run_tool(tmp_path, "--check-config")
    assert result.returncode == 0, result.stderr
    for expected in ("integration grafana-prod: POST /webhook/grafana-prod, token set",
                     "integration open-one: POST /webhook/open-one, OPEN (no token)",
                     'route 1: team="payments" → payments, oncall',
                     "destination payments: http://rocketchat.test/hooks/<redacted> (hook payments)",
                     "destination oncall: http://rocketchat.test/hooks/<redacted> (hook oncall+oncall-copy), "
                     "mention @here"):
        assert expected in result.stdout
    for secret in ("oncall-secret-token", "payments-secret-token", "am-token-1", "grafana-token-2"):
        assert secret not in result.stdout + result.stderr


def test_render_uses_the_integrations_routes_and_templates(tmp_path):
    alert_file = tmp_path / "alert.json"
    alert_file.write_text(body(alert("PayDown", team="payments")))
    result = run_tool(tmp_path, "--render", str(alert_file))
    assert result.returncode == 0, result.stderr
    rendered = {entry["destination"]: entry["message"] for entry in json.loads(result.stdout)}
    assert set(rendered) == {"payments", "oncall+oncall-copy"}
    assert rendered["payments"]["attachments"][0]["title"] == "PayDown for payments"


def test_a_mention_of_any_destination_sharing_the_url_is_kept(tmp_path, fake_rocketchat):
    routes = textwrap.dedent(f"""
        destinations:
          payments: {{rocketchat: {{url: {ONCALL_URL}}}}}
          oncall: {{rocketchat: {{url: {ONCALL_URL}}}, mention: "@here"}}
        integrations:
          default:
            routes: [{{destinations: [payments, oncall]}}]
    """)
    application = create_app({"ROUTES_FILE": write(tmp_path, routes)}, client=fake_rocketchat)
    try:
        assert application.test_client().post("/webhook", data=body(alert("Paging"))).status_code == 200
        [(_, message)] = fake_rocketchat.posts
        assert message["text"].startswith("@here [FIRING:1] Paging")
    finally:
        application.extensions["rcwebhook.dispatcher"].stop(drain_seconds=0)


def test_each_alert_a_template_fails_on_is_counted_and_the_others_keep_the_template(tmp_path, fake_rocketchat):
    application = create_app({"ROUTES_FILE": write(tmp_path, RATIO_ROUTES)}, client=fake_rocketchat)
    try:
        client = application.test_client()
        answer = client.post("/webhook", data=body(alert("B1", divisor="0"), alert("Fine", divisor="2"),
                                                   alert("B2", divisor="0")))
        assert answer.status_code == 200
        [(_, message)] = fake_rocketchat.posts
        titles = sorted(attachment["title"] for attachment in message["attachments"])
        assert titles == ["FIRING: B1", "FIRING: B2", "Fine: 50 %"]
        metrics = client.get("/metrics").get_data(as_text=True)
        assert 'rocketchat_webhook_template_failures_total{template="ratio"} 2.0' in metrics
    finally:
        application.extensions["rcwebhook.dispatcher"].stop(drain_seconds=0)


@pytest.mark.parametrize(("text", "message"), [
    (MINIMAL.replace("destinations:\n", "destinations:\n  a: {rocketchat: {url: http://rc/hooks/id/secret-b}}\n"),
     "'a' is given twice"),
    (MINIMAL.replace("{url: http://rc/hooks/id/secret-a}", "{https://rc/hooks/id/secret-a}"),
     "destinations.a.rocketchat: unknown key(s) <url>"),
    (MINIMAL.replace("{url: http://rc/hooks/id/secret-a}", "{url: 'https://[rc/hooks/id/secret-a'}"),
     "destinations.a.rocketchat: is not a URL that can be read"),
])
def test_mistakes_that_would_be_silent_or_leak_are_refused_without_the_secret(tmp_path, text, message):
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, text)
    assert message in str(refused.value)
    assert "secret-a" not in str(refused.value) and "secret-b" not in str(refused.value)


def test_a_reload_applies_a_new_rate_limit_to_the_url_it_keeps(tmp_path, fake_rocketchat):
    path = write(tmp_path, MINIMAL)
    application = create_app({"ROUTES_FILE": path}, client=fake_rocketchat)
    try:
        dispatcher = application.extensions["rcwebhook.dispatcher"]
        [queue] = dispatcher.queues.values()
        assert str(queue.budget.limit) == "10/60s"
        (tmp_path / "routes.yml").write_text(MINIMAL.replace("a: {rocketchat", "a: {rate_limit: 30/60s, rocketchat"))
        assert application.extensions["rcwebhook.reloader"].reload() is True
        assert list(dispatcher.queues.values()) == [queue] and str(queue.budget.limit) == "30/60s"
    finally:
        application.extensions["rcwebhook.dispatcher"].stop(drain_seconds=0)


def test_the_default_integration_answers_at_its_own_name_too(routed, fake_rocketchat):
    answer = routed.test_client().post("/webhook/default", data=body(alert("Named")),
                                       headers={"Authorization": "Bearer am-token-1"})
    assert answer.status_code == 200  # not a redirect to /webhook, which many clients do not follow


@pytest.mark.parametrize("token_line", ["    token: ''\n", "    token:\n", "    token_env: ''\n"])
def test_an_empty_token_key_is_refused_rather_than_leaving_the_endpoint_open(tmp_path, token_line):
    with pytest.raises(ConfigError, match=r"integrations\.default\.token(_env)?: is empty"):
        load(tmp_path, MINIMAL.replace("  default:\n", "  default:\n" + token_line))


@pytest.mark.parametrize(("variable", "advice"), [
    ("ROCKETCHAT_MENTION_CRITICAL", "give the destination mention: instead"),
    ("ROCKETCHAT_WEBHOOK_INFO_FILE", "refer to its file with url_file: /run/secrets/rc-info"),
    ("ROCKETCHAT_WEBHOOK_DEFAULT", "refer to it with url_env: ROCKETCHAT_WEBHOOK_DEFAULT"),
])
def test_a_setting_left_in_the_environment_is_refused_with_the_fix_that_applies(tmp_path, variable, advice):
    value = "/run/secrets/rc-info" if variable.endswith("_FILE") else "@here"
    with pytest.raises(ConfigError, match=f"{variable} is set in the environment") as refused:
        load(tmp_path, MINIMAL, **{variable: value})
    assert advice in str(refused.value)


def test_integration_without_render_or_routes_test_is_refused(tmp_path):
    result = run_tool(tmp_path, "--integration", "grafana-prod")
    assert result.returncode == 2 and "--integration goes with --render or --routes-test" in result.stderr


def test_yaml_merge_keys_still_work_in_a_routes_file(tmp_path):
    table = load(tmp_path, textwrap.dedent("""
        destinations:
          a: &first {rocketchat: {url: http://rc/hooks/id/secret-a}, alias: Alertmanager, mention: "@here"}
          b: {<<: *first, mention: "@oncall"}
        integrations:
          default:
            routes: [{destinations: [a, b]}]
    """))
    assert (table.destinations["b"].alias, table.destinations["b"].mention) == ("Alertmanager", "@oncall")


def test_a_headline_that_names_an_alert_variable_is_refused(tmp_path):
    text = MINIMAL.replace("a: {rocketchat", "a: {template: t, rocketchat") + textwrap.dedent("""
        templates:
          t: {headline: "{{ labels.alertname }} firing"}
    """)
    with pytest.raises(ConfigError, match=r"templates\.t\.headline: unknown variable\(s\) labels"):
        load(tmp_path, text)


def test_a_destination_file_left_in_the_environment_is_fine_when_the_file_names_it(tmp_path):
    url_file = tmp_path / "rc-a"
    url_file.write_text("http://rc/hooks/id/secret-a\n")
    text = MINIMAL.replace("{url: http://rc/hooks/id/secret-a}", f"{{url_file: {url_file}}}")
    table = load(tmp_path, text, ROCKETCHAT_WEBHOOK_CRITICAL_FILE=str(url_file))
    assert table.destinations["a"].url == "http://rc/hooks/id/secret-a"


def test_routes_test_takes_labels_on_either_side_of_integration(tmp_path):
    result = run_tool(tmp_path, "--routes-test", "team=payments", "--integration", "default", "env=prod")
    assert (result.returncode, result.stdout.strip()) == (0, "payments,oncall"), result.stderr
