"""parse_notification: what a webhook body means, however sloppy its sender."""

from __future__ import annotations

import json

import pytest

from rcwebhook.model import FIRING, RESOLVED, PayloadError, ProblemItem, SkippedAlert
from rcwebhook.payload import parse_notification


def refusal(document: object) -> PayloadError:
    with pytest.raises(PayloadError) as caught:
        parse_notification(document)
    return caught.value


def only_alert(alert: dict, **group):
    return parse_notification({**group, "alerts": [alert]}).alerts[0]


# --- the body as a whole ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("document", [[], [{"labels": {}}], "alerts", 42, None, True])
def test_a_body_that_is_not_an_object_is_a_400(document):
    error = refusal(document)
    assert error.status == 400
    assert error.message == "the body must be a JSON object (an Alertmanager webhook payload)"
    assert error.problems == ()


def test_a_body_without_alerts_is_a_422_naming_the_field():
    error = refusal({"status": "firing", "receiver": "x"})
    assert error.status == 422
    assert error.problems == (ProblemItem(("alerts",), "field required"),)
    assert error.problems[0].as_dict() == {"loc": ["alerts"], "msg": "field required"}


@pytest.mark.parametrize("alerts", [None, {}, {"labels": {}}, "[]", 3])
def test_alerts_that_are_not_a_list_are_a_422(alerts):
    error = refusal({"alerts": alerts})
    assert error.status == 422
    assert error.problems == (ProblemItem(("alerts",), "must be a list"),)


def test_an_empty_alerts_list_is_a_notification_without_alerts():
    notification = parse_notification({"alerts": []})
    assert notification.alerts == ()
    assert notification.skipped == ()


def test_a_minimal_body_gets_defaults_everywhere():
    notification = parse_notification({"alerts": [{"labels": {"alertname": "A"}}]})
    assert notification.status == FIRING
    assert (notification.receiver, notification.group_key, notification.external_url) == ("", "", "")
    assert notification.group_labels == notification.common_labels == notification.common_annotations == {}
    assert notification.truncated_alerts == 0
    assert notification.notification_reason == ""
    alert = notification.alerts[0]
    assert (alert.index, alert.status, alert.labels, alert.annotations) == (0, FIRING, {"alertname": "A"}, {})
    assert (alert.starts_at, alert.ends_at, alert.generator_url, alert.fingerprint) == ("", "", "", "")
    assert (alert.dashboard_url, alert.panel_url, alert.silence_url, alert.value_string) == ("", "", "", "")


def test_group_fields_that_are_null_or_numbers_become_strings():
    notification = parse_notification(
        {
            "alerts": [{"labels": {}}],
            "receiver": None,
            "groupKey": 43434343434343434343,
            "externalURL": 7,
            "version": 0,
            "notification_reason": 5,
        }
    )
    assert notification.receiver == ""
    assert notification.group_key == "43434343434343434343"
    assert notification.external_url == "7"
    assert notification.notification_reason == ""


def test_group_maps_that_are_null_or_not_objects_are_empty_and_values_are_normalised():
    notification = parse_notification(
        {
            "alerts": [{"labels": {}}],
            "groupLabels": None,
            "commonLabels": ["a"],
            "commonAnnotations": {"n": 1, "x": None},
        }
    )
    assert notification.group_labels == {}
    assert notification.common_labels == {}
    assert notification.common_annotations == {"n": "1"}


def test_notification_reason_is_kept_when_it_is_a_string():
    assert parse_notification({"alerts": [], "notification_reason": "repeat"}).notification_reason == "repeat"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(5, 5), (0, 0), ("7", 7), (" 12 ", 12), (3.0, 3), (-1, 0), ("-4", 0), ("x", 0), (None, 0), (True, 0), (2.5, 0),
     (float("nan"), 0), ("٣", 0), ("9" * 5000, 0)],
)
def test_truncated_alerts_is_a_non_negative_integer_or_zero(value, expected):
    assert parse_notification({"alerts": [], "truncatedAlerts": value}).truncated_alerts == expected


def test_unknown_fields_are_ignored():
    notification = parse_notification(
        {"alerts": [{"labels": {}, "values": {"B": 1.5}, "orgId": 1, "sendsAt": ""}], "orgId": 1, "routeLabels": {}}
    )
    assert len(notification.alerts) == 1


# --- status ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [("firing", FIRING), ("RESOLVED", RESOLVED), (" Resolved ", RESOLVED),
                                                 ("pending", FIRING), (None, FIRING), (1, FIRING)])
def test_group_status_is_firing_or_resolved_else_firing(value, expected):
    assert parse_notification({"alerts": [], "status": value}).status == expected


def test_an_alert_status_is_read_case_insensitively():
    assert only_alert({"labels": {}, "status": "Resolved"}, status="firing").status == RESOLVED
    assert only_alert({"labels": {}, "status": "FIRING"}, status="resolved").status == FIRING


@pytest.mark.parametrize("status", [None, "pending", 3, "", "ok"])
def test_a_missing_or_odd_alert_status_is_inherited_from_the_group(status):
    entry = {"labels": {}} if status is None else {"labels": {}, "status": status}
    assert only_alert(entry, status="resolved").status == RESOLVED
    assert only_alert(entry, status="firing").status == FIRING
    assert only_alert(entry, status="bogus").status == FIRING
    assert only_alert(entry).status == FIRING


# --- labels and annotations ------------------------------------------------------------------------------------


def test_scalar_label_values_become_strings():
    alert = only_alert({"labels": {"s": "x", "t": True, "f": False, "i": 3, "big": 10**30, "fl": 0.5, "whole": 2.0}})
    assert alert.labels == {
        "s": "x", "t": "true", "f": "false", "i": "3", "big": "1" + "0" * 30, "fl": "0.5", "whole": "2.0"
    }


def test_null_label_and_annotation_values_are_dropped():
    alert = only_alert({"labels": {"a": None, "b": "1"}, "annotations": {"summary": None, "x": ""}})
    assert alert.labels == {"b": "1"}
    assert alert.annotations == {"x": ""}


def test_nested_values_become_compact_json_text():
    alert = only_alert({"labels": {"group": ["system:authenticated", 1], "obj": {"k": "ü", "n": None}}})
    assert alert.labels == {"group": '["system:authenticated",1]', "obj": '{"k":"ü","n":null}'}


def test_nan_and_infinities_become_strings_never_floats():
    document = json.loads('{"alerts": [{"labels": {"n": NaN, "p": Infinity, "m": -Infinity, "l": [NaN]}}]}')
    labels = parse_notification(document).alerts[0].labels
    assert labels == {"n": "NaN", "p": "+Inf", "m": "-Inf", "l": "[NaN]"}
    assert all(isinstance(value, str) for value in labels.values())


def test_annotations_that_are_null_or_not_objects_are_empty():
    assert only_alert({"labels": {}, "annotations": None}).annotations == {}
    assert only_alert({"labels": {}, "annotations": ["summary"]}).annotations == {}
    assert only_alert({"labels": {}, "annotations": "summary"}).annotations == {}


def test_keys_and_values_keep_their_unicode_and_case():
    alert = only_alert({"labels": {"alertname": "服务异常告警"}, "annotations": {"SUMMARY": "Ünïcödé ❤️"}})
    assert alert.labels == {"alertname": "服务异常告警"}
    assert alert.annotations == {"SUMMARY": "Ünïcödé ❤️"}


def test_lone_surrogates_are_replaced_so_the_text_encodes_as_utf8():
    document = json.loads('{"alerts": [{"labels": {"a\\ud800": "x\\udfff", "ok": "\\ud83d\\ude00"}}]}')
    labels = parse_notification(document).alerts[0].labels
    assert labels == {"a\ufffd": "x\ufffd", "ok": "😀"}
    json.dumps(labels, ensure_ascii=False).encode("utf-8")


# --- per-alert strings -----------------------------------------------------------------------------------------


def test_alert_strings_are_kept_as_given():
    alert = only_alert(
        {
            "labels": {},
            "startsAt": "asdf",
            "endsAt": "2026-05-27 15:36:00.112013015 +0000 UTC m=+8560.285724134",
            "generatorURL": "my.prometheusserver.url",
            "fingerprint": "f1",
            "dashboardURL": "https://g/d",
            "panelURL": "https://g/p",
            "silenceURL": "https://g/s",
            "valueString": "[ var='A' value=1 ]",
        }
    )
    assert alert.starts_at == "asdf"
    assert alert.ends_at == "2026-05-27 15:36:00.112013015 +0000 UTC m=+8560.285724134"
    assert (alert.generator_url, alert.fingerprint) == ("my.prometheusserver.url", "f1")
    assert (alert.dashboard_url, alert.panel_url, alert.silence_url) == ("https://g/d", "https://g/p", "https://g/s")
    assert alert.value_string == "[ var='A' value=1 ]"


def test_alert_strings_that_are_null_become_empty_and_others_become_text():
    alert = only_alert({"labels": {}, "endsAt": None, "fingerprint": 12345, "generatorURL": False, "valueString": 1.5})
    assert (alert.ends_at, alert.fingerprint, alert.generator_url, alert.value_string) == ("", "12345", "false", "1.5")


# --- unusable entries ------------------------------------------------------------------------------------------


def test_each_entry_is_judged_alone_and_unusable_ones_are_skipped_with_a_reason():
    notification = parse_notification(
        {
            "alerts": [
                {"labels": {"alertname": "A"}},
                "not an alert",
                {"status": "firing"},
                {"labels": None},
                {"labels": ["a"]},
                {"labels": {}},
                None,
            ]
        }
    )
    assert [alert.index for alert in notification.alerts] == [0, 5]
    assert notification.skipped == (
        SkippedAlert(1, "is not an object"),
        SkippedAlert(2, "has no labels object"),
        SkippedAlert(3, "labels is null"),
        SkippedAlert(4, "labels is not an object"),
        SkippedAlert(6, "is not an object"),
    )


def test_no_usable_entry_is_a_422_with_one_problem_per_entry():
    error = refusal({"alerts": [{"status": "firing"}, 3, {"labels": None}, {"labels": "x"}]})
    assert error.status == 422
    assert error.message == "no usable alert in the body"
    assert [problem.as_dict() for problem in error.problems] == [
        {"loc": ["alerts", 0, "labels"], "msg": "has no labels object"},
        {"loc": ["alerts", 1], "msg": "is not an object"},
        {"loc": ["alerts", 2, "labels"], "msg": "labels is null"},
        {"loc": ["alerts", 3, "labels"], "msg": "labels is not an object"},
    ]


def test_empty_labels_are_a_usable_alert():
    assert len(parse_notification({"alerts": [{"labels": {}}]}).alerts) == 1
