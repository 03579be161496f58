"""Threads, pure parts: which alerts reply where, how many replies pacing allows, one post per thread."""

from __future__ import annotations

from rcwebhook.hookqueue import HookQueue, Job, Part
from rcwebhook.model import Alert, Notification
from rcwebhook.pacing import PostBudget, parse_rate_limit
from rcwebhook.routes import Hook
from rcwebhook.threads import ThreadIndex, parts_of, split_layout

HOOK = Hook("critical", "http://rc.test/hooks/id/token-123456", threads=True)


def alert(name: str, status: str = "firing") -> Alert:
    return Alert(0, status, {"alertname": name}, {}, starts_at="2026-12-01T10:00:00Z", fingerprint=name)


def split(alerts, threads, *, capacity=10, reason=""):
    threads_of = {index: threads.get(a.labels["alertname"]) for index, a in enumerate(alerts)}
    layout = split_layout(alerts, threads_of, capacity, notification_reason=reason)
    parts = parts_of(Part(HOOK, tuple(alerts)), layout)
    return [(part.reply_to, [a.labels["alertname"] for a in part.alerts]) for part in parts]


def test_resolved_alerts_reply_in_their_threads_and_the_rest_goes_to_the_channel():
    alerts = [alert("A", "resolved"), alert("B", "resolved"), alert("C"), alert("D", "resolved")]
    assert split(alerts, {"A": "m1", "B": "m2", "D": "m1"}) == [
        (None, ["C"]), ("m1", ["A", "D"]), ("m2", ["B"]),
    ]


def test_a_notification_with_a_new_firing_alert_keeps_its_firing_alerts_in_the_channel():
    alerts = [alert("A"), alert("NEW"), alert("B", "resolved")]
    assert split(alerts, {"A": "m1", "B": "m2"}) == [(None, ["A", "NEW"]), ("m2", ["B"])]


def test_a_reminder_replies_in_the_thread_of_each_firing_alert():
    alerts = [alert("A"), alert("B")]
    assert split(alerts, {"A": "m1", "B": "m1"}, reason="repeat_interval elapsed") == [("m1", ["A", "B"])]
    # Alertmanager before 0.32 says nothing: a re-send of announced alerts only is a reminder.
    assert split(alerts, {"A": "m1", "B": "m2"}) == [("m1", ["A"]), ("m2", ["B"])]
    # 0.32+ says why: a group updated for another reason shows its firing alerts in the channel, as today.
    assert split([alert("A"), alert("B", "resolved")], {"A": "m1", "B": "m1"}, reason="updated") == [
        (None, ["A"]), ("m1", ["B"])]


def test_alerts_without_a_known_thread_go_to_the_channel_as_today():
    alerts = [alert("A", "resolved"), alert("B")]
    assert split(alerts, {}) == [(None, ["A", "B"])]


def test_replies_beyond_what_pacing_can_carry_go_as_one_channel_message():
    alerts = [alert(name, "resolved") for name in "ABCDE"]
    threads = {name: f"m-{name}" for name in "ABCDE"}
    assert split(alerts, threads, capacity=2) == [(None, ["C", "D", "E"]), ("m-A", ["A"]), ("m-B", ["B"])]
    assert split(alerts, threads, capacity=0) == [(None, list("ABCDE"))]


def test_pacing_allows_the_burst_within_the_deadline_and_no_more():
    budget = PostBudget(parse_rate_limit("10/60s"))
    # Rocket.Chat's 10/60s: three posts half a second apart, then one every 7.5 s.
    assert budget.posts_possible(0.0, None, 7.8) == 3
    assert budget.posts_possible(0.0, None, 9.0) == 4
    for at in (0.0, 0.5, 1.0):
        budget.record_attempt(at)
    assert budget.posts_possible(1.0, 1.0, 7.8) == 1  # the burst is spent: the next spaced post, at 8.5 s
    assert budget.attempt_times == type(budget.attempt_times)([0.0, 0.5, 1.0]), "the real budget is untouched"
    assert PostBudget(parse_rate_limit("0")).posts_possible(0.0, None, 7.8) == 64


def test_one_post_carries_one_thread_and_channel_jobs_still_merge():
    queue = HookQueue(HOOK, parse_rate_limit("0"), 300.0)
    notification = Notification((alert("A"),), group_key="g")

    def job(reply_to):
        return Job(HOOK, notification, notification.alerts, None, 10, reply_to=reply_to)

    jobs = [job(None), job("m1"), job(None), job("m2"), job("m1")]
    for item in jobs:
        queue.submit(item, 0.0)
    batches = []
    while queue.due_at(1.0) is not None:
        batch = queue.take_batch(1.0)
        batches.append([item.reply_to for item in batch.jobs])
        queue.finish(batch, None, 1.0)
    assert batches == [[None, None], ["m1", "m1"], ["m2"]]


def test_the_first_message_of_an_occurrence_stays_its_thread_and_old_ones_are_forgotten_past_the_bound():
    index = ThreadIndex(max_threads=2)
    assert index.remember("h", "a", "m1") and not index.remember("h", "a", "m2")
    assert index.message_for("h", "a") == "m1" and index.message_for("other-hook", "a") is None
    index.remember("h", "b", "m3")
    index.remember("h", "c", "m4")
    assert index.message_for("h", "a") is None and index.message_for("h", "c") == "m4"


def routes_file(tmp_path, destinations: str) -> str:
    path = tmp_path / "routes.yml"
    path.write_text("destinations:\n" + destinations + "integrations:\n  default:\n    routes:\n"
                    "      - destinations: [a]\n")
    return str(path)


def test_a_routes_file_turns_threads_on_per_destination_and_shared_urls_must_agree(tmp_path):
    import pytest

    from rcwebhook.config import ConfigError, load_config
    from rcwebhook.routes_file import load_route_table

    def table(destinations: str, **environ):
        path = routes_file(tmp_path, destinations)
        return load_route_table(load_config({"ROUTES_FILE": path, **environ}), {"ROUTES_FILE": path, **environ})

    url = "http://rc.test/hooks/id/token-123456"
    on = table(f"  a:\n    rocketchat: {{url: {url}}}\n    threads: true\n")
    assert [hook.threads for hook in on.hooks.values()] == [True]
    default_on = table(f"  a:\n    rocketchat: {{url: {url}}}\n", ROCKETCHAT_THREADS="true")
    assert [hook.threads for hook in default_on.hooks.values()] == [True]
    with pytest.raises(ConfigError, match=r"destinations\.a\.threads: must be true or false"):
        table(f"  a:\n    rocketchat: {{url: {url}}}\n    threads: 'yes'\n")
    with pytest.raises(ConfigError, match=r"destinations\.b\.threads: differs from that of destinations\.a"):
        table(f"  a:\n    rocketchat: {{url: {url}}}\n    threads: true\n  b:\n    rocketchat: {{url: {url}}}\n")
    with pytest.raises(ConfigError, match="ROCKETCHAT_THREADS must be true or false"):
        load_config({"ROCKETCHAT_WEBHOOK_DEFAULT": url, "ROCKETCHAT_THREADS": "maybe"})


def test_only_one_rooms_well_formed_message_id_is_taken_from_the_answer():
    import json

    from rcwebhook.client import message_id_of

    def answer(*responses):
        return json.dumps({"success": True, "responses": list(responses)})

    room = {"channel": "#a", "message": {"_id": "Zq4mNY8bVWkXGvT2r"}}
    assert message_id_of(answer(room)) == "Zq4mNY8bVWkXGvT2r"
    assert message_id_of(answer(room, {"channel": "#b", "message": {"_id": "other1234567890ab"}})) is None
    assert message_id_of(answer({"channel": "#a", "error": "no such room"})) is None
    assert message_id_of(answer({"channel": "#a", "message": {"_id": "has space"}})) is None
    assert message_id_of('{"success":true}') is None and message_id_of("not json") is None
