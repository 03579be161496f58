"""Property: whatever the labels and whatever a template makes of them, the message Rocket.Chat gets is one the
contract accepts, rich, and pings nobody but the destination's own mention."""

from __future__ import annotations

import json
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rcwebhook.app import create_app
from tests.conftest import RecordingClient
from tests.test_properties import message_problems

HOOK = "http://rocketchat.test/hooks/prop-id/prop-secret-token"
# Templates that hand label contents straight to every part they may set, and one that makes text of its own.
ROUTES = textwrap.dedent("""
    destinations:
      team: {rocketchat: {url: %s}, template: echo}
    integrations:
      default:
        routes: [{destination: team}]
    templates:
      echo:
        headline: "{{ common_labels.headline }} {{ alerts[0].labels.x }}"
        title: "{{ labels.title }}"
        text: "{{ annotations.text }} {{ labels.text }}{{ labels.text }}{{ labels.text }}"
        fields:
          - {title: "{{ labels.field_title }}", value: "{{ labels.field_value }}"}
          - {title: "Count", value: "{{ alerts | length }} {{ '@here' }}"}
""" % HOOK)

label_text = st.text(st.characters(codec="utf-8"), max_size=300) | st.sampled_from(
    ["@here", "@all please", "<!here>", "{{ 7*7 }}", "{% raw %}", "x" * 6000, "", " ", "\n\n", "[a](javascript:x)"]
)


@pytest.fixture(scope="module")
def routed_app(tmp_path_factory):
    path = tmp_path_factory.mktemp("routes") / "routes.yml"
    path.write_text(ROUTES)
    fake = RecordingClient()
    application = create_app({"ROUTES_FILE": str(path), "DELIVERY_DEADLINE_SECONDS": "2", "ROCKETCHAT_RATE_LIMIT": "0"},
                             client=fake)
    yield application, fake
    application.extensions["rcwebhook.dispatcher"].stop(drain_seconds=0)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(labels=st.fixed_dictionaries({key: label_text for key in ("x", "title", "text", "field_title", "field_value")}),
       annotation=label_text, headline=label_text, alert_count=st.integers(1, 3))
def test_any_labels_through_a_template_give_a_rich_contract_message_that_pings_nobody(
    routed_app, labels, annotation, headline, alert_count
):
    application, fake = routed_app
    fake.posts.clear()
    alerts = [{"status": "firing", "labels": {"alertname": f"A{index}", **labels, "headline": headline},
               "annotations": {"text": annotation}, "startsAt": "2026-12-01T07:00:00Z"} for index in range(alert_count)]
    body = json.dumps({"status": "firing", "alerts": alerts, "commonLabels": {"headline": headline}})
    answer = application.test_client().post("/webhook", data=body)
    assert answer.status_code == 200, answer.get_json()
    [(_, message)] = fake.posts
    assert message_problems(message) == []
