"""Every real body in tests/data/corpus (see its SOURCES.md) parses and formats into messages Rocket.Chat accepts."""

from __future__ import annotations

import json
import pathlib
import re

import pytest

from rcwebhook.formatting import (
    MAX_FULL_ALERTS,
    MAX_MESSAGE_BYTES,
    MAX_TEXT_UTF16_UNITS,
    FormatOptions,
    build_message,
    build_plain_text_message,
    sort_alerts,
    validate_message,
)
from rcwebhook.model import PayloadError, ProblemItem
from rcwebhook.payload import parse_notification

CORPUS = pathlib.Path(__file__).resolve().parent / "data" / "corpus"
OPTIONS = FormatOptions(mentions={"critical": "@here", "warning": "@here"})

# Usable alerts per body, counted by reading each file (an entry is usable when it has a labels object).
USABLE_ALERTS = {
    "bougou_alertmanager-webhook-adapter__alert.json": 4,
    "bougou_alertmanager-webhook-adapter__grafana-alert.json": 1,
    "feiyu563_PrometheusAlert__logged_payload.json": 1,
    "google_alertmanager-irc-relay__simple_alert.json": 2,
    "grafana_alerting__webhook_v1_default_payload.json": 1,
    "grafana_grafana__docs_webhook-notifier_example.json": 2,
    "idealista_prom2teams__all_ok.json": 1,
    "idealista_prom2teams__all_ok_extra_annotations.json": 1,
    "idealista_prom2teams__all_ok_multiple.json": 2,
    "idealista_prom2teams__with_common_items.json": 1,
    "idealista_prom2teams__without_fingerprint.json": 1,
    "idealista_prom2teams__without_mandatory_field.json": 1,
    "inCaller_prometheus_bot__big_output.json": 1,
    "inCaller_prometheus_bot__emptyValue.json": 1,
    "inCaller_prometheus_bot__noGenURL.json": 8,
    "inCaller_prometheus_bot__production_example.json": 11,
    "kubegems_alertproxy__readme_nulls.json": 1,
    "kubesphere_notification-manager__alert-auditing.json": 6,
    "kubesphere_notification-manager__alert15.json": 79,
    "kubesphere_notification-manager__alert3.json": 8,
    "kubesphere_notification-manager__alerts-without-namespace.json": 1,
    "matjaz99_alertmonitor__clear_resolved.json": 3,
    "metio_matrix-alertmanager-receiver__alerts_http.json": 1,
    "mr-karan_calert__mock_payload.json": 31,
    "prometheus-msteams_prometheus-msteams__card-grafana-inspired-payload.json": 3,
    "prometheus-msteams_prometheus-msteams__prom_post_request.json": 1,
    "spirilis_spitter__exampleAlert1.json": 2,
    "tiamxu_alertmanager-webhook__readme_cjk.json": 2,
    "zulip_zulip__alertmanager_alert.json": 2,
    "zulip_zulip__alertmanager_single_alert_no_url.json": 1,
    "zulip_zulip__grafana_alert-9-mixed.json": 3,
    "zulip_zulip__grafana_alert-9-resolved.json": 1,
    "zulip_zulip__grafana_alert_alerts_style_missing_fields.json": 0,  # its only alert holds nothing but "status"
    "zulip_zulip__grafana_alert_new_no_labels.json": 1,  # labels {} is usable
    "zulip_zulip__grafana_alert_no_alertname_v11.json": 1,
    "zulip_zulip__grafana_alert_v8_missing_field.json": 1,
}
DELIVERABLE = sorted(name for name, count in USABLE_ALERTS.items() if count)


def load(name: str) -> object:
    return json.loads((CORPUS / name).read_text(encoding="utf-8-sig"))


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def test_the_table_covers_exactly_the_corpus():
    assert sorted(path.name for path in CORPUS.glob("*.json")) == sorted(USABLE_ALERTS)
    assert len(USABLE_ALERTS) == 36


def test_the_body_without_a_usable_alert_is_a_422_naming_the_entry():
    with pytest.raises(PayloadError) as caught:
        parse_notification(load("zulip_zulip__grafana_alert_alerts_style_missing_fields.json"))
    assert caught.value.status == 422
    assert caught.value.problems == (ProblemItem(("alerts", 0, "labels"), "has no labels object"),)


@pytest.mark.parametrize("name", DELIVERABLE)
def test_each_body_parses_to_its_usable_alerts(name):
    notification = parse_notification(load(name))
    assert len(notification.alerts) == USABLE_ALERTS[name]
    assert notification.skipped == ()


@pytest.mark.parametrize("name", DELIVERABLE)
def test_each_body_gives_valid_messages_showing_every_alert(name):
    notification = parse_notification(load(name))
    rich = build_message(notification, notification.alerts, OPTIONS)
    plain = build_plain_text_message(notification, notification.alerts, OPTIONS)
    assert validate_message(rich) == []
    assert validate_message(plain) == []
    for message in (rich, plain):
        assert utf16_units(message["text"]) <= MAX_TEXT_UTF16_UNITS
        assert len(json.dumps(message, ensure_ascii=False).encode("utf-8")) <= MAX_MESSAGE_BYTES

    ordered = sort_alerts(notification.alerts, OPTIONS.severity_label)
    full, folded = ordered[:MAX_FULL_ALERTS], ordered[MAX_FULL_ALERTS:]
    attachments = rich["attachments"]
    assert len(attachments) >= len(full) + (1 if folded else 0)
    for alert, attachment in zip(full, attachments):
        title = attachment["title"]
        assert title.startswith(f"{alert.status.upper()}: ")
        assert alert.labels.get("alertname", "").strip() in title
        assert alert.labels.get("instance", "").strip() in title
    summaries = attachments[len(full):]
    folded_counts = [int(re.match(r"\+(\d+) more ", summary["title"]).group(1)) for summary in summaries]
    assert sum(folded_counts) == len(folded)
    summary_text = "\n".join(summary.get("text", "") for summary in summaries)
    for alert in folded:
        assert f"• {alert.labels['alertname']}" in summary_text


def test_the_79_alert_body_folds_past_50():
    notification = parse_notification(load("kubesphere_notification-manager__alert15.json"))
    attachments = build_message(notification, notification.alerts, OPTIONS)["attachments"]
    # 52 critical (critical or error: 1 + 13 + 13 + 13 + 12) fill the 50 full attachments; 27 warning follow.
    assert [attachment["title"] for attachment in attachments[MAX_FULL_ALERTS:]] == [
        "+2 more FIRING critical alerts",
        "+27 more FIRING warning alerts",
    ]


def test_a_few_corpus_details_an_on_call_engineer_relies_on():
    spitter = parse_notification(load("spirilis_spitter__exampleAlert1.json"))
    spitter_text = build_message(spitter, spitter.alerts, OPTIONS)["text"]
    assert spitter_text.endswith("⚠ Alertmanager left out 5 more alerts of this group (max_alerts)")

    go_times = parse_notification(load("zulip_zulip__grafana_alert_v8_missing_field.json"))
    fields = build_message(go_times, go_times.alerts, OPTIONS)["attachments"][0]["fields"]
    assert {"short": True, "title": "Started", "value": "2026-05-27 15:36:00 UTC"} in fields

    uppercase = parse_notification(load("google_alertmanager-irc-relay__simple_alert.json"))
    attachment = build_message(uppercase, uppercase.alerts, OPTIONS)["attachments"][0]
    assert attachment["text"] == (
        "*service /prometheus air down on instance1*\nservice /prometheus has irc gateway down on instance1"
    )

    grafana_11 = parse_notification(load("zulip_zulip__grafana_alert_no_alertname_v11.json"))
    assert build_message(grafana_11, grafana_11.alerts, OPTIONS)["text"] == "[FIRING:1] Memory (copy)"
