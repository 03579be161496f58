"""The SMS escalation core on a fake clock: delay, cancellation by resolve and by silence, tiers, the caps and the
digest, business hours, and what each of Twilio's answers leads to. Twilio and Alertmanager are stand-ins here; the
integration tests (test_sms_app.py) and the end-to-end test use the mock and the real Alertmanager."""

from __future__ import annotations

import datetime
import itertools
import logging

import pytest

from rcwebhook.channels.twilio import SmsOutcome, SmsResult
from rcwebhook.metrics import Metrics
from rcwebhook.model import Alert, Notification
from rcwebhook.sms.destination import HoursWindow, SmsDestination, SmsTier
from rcwebhook.sms.escalation import OPT_OUT_RETRY_SECONDS, Escalation
from rcwebhook.sms.silences import SilenceAnswer
from rcwebhook.store import SMS_CANCELLED, SMS_DIGESTED, SMS_FAILED, SMS_HELD, SMS_OPTED_OUT, SMS_SENT
from rcwebhook.store.memory import MemoryStore

ALICE, BOB, CAROL = "+15551230001", "+15551230002", "+15551230003"
# Monday 2026-11-30 12:00 UTC
NOON = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.timezone.utc).timestamp()


class Clock:
    def __init__(self, now: float = NOON):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeTwilio:
    """Answers with the scripted results in turn (then SENT), recording every send."""

    def __init__(self):
        self.sent: list[tuple[str, str, str]] = []
        self.script: list[SmsResult] = []
        self.count = 0

    def send(self, to: str, body: str, *, status_callback: str = "") -> SmsResult:
        self.sent.append((to, body, status_callback))
        self.count += 1
        if self.script:
            return self.script.pop(0)
        return SmsResult(SmsOutcome.SENT, 201, None, sid=f"SM{self.count:032x}", twilio_status="queued", segments=1)

    def to(self, recipient: str) -> list[str]:
        return [body for number, body, _ in self.sent if number == recipient]


class FakeAlertmanager:
    def __init__(self):
        self.silenced: set[str] = set()  # alertnames
        self.error = ""
        self.asked = 0

    def check(self, base_url, alerts):
        self.asked += 1
        if self.error:
            return SilenceAnswer(frozenset(), self.error)
        return SilenceAnswer(frozenset(alert.id for alert in alerts if alert.alertname in self.silenced))


def destination(*tiers: SmsTier, **options) -> SmsDestination:
    return SmsDestination("oncall-sms", tiers or (SmsTier(0.0, (ALICE,)),), **options)


def alert(name: str = "HighCPU", status: str = "firing", severity: str = "critical", starts_at: str =
          "2026-11-30T11:59:00Z", fingerprint: str | None = None) -> Alert:
    labels = {"alertname": name, "severity": severity, "instance": "host-1:9100", "job": "node"}
    return Alert(0, status, labels, {"summary": f"{name} summary"}, starts_at=starts_at,
                 fingerprint=fingerprint if fingerprint is not None else f"{abs(hash(name)):016x}"[:16])


def notification(*alerts: Alert, group_key: str = '{}:{alertname="HighCPU"}') -> Notification:
    status = "firing" if any(item.status == "firing" for item in alerts) else "resolved"
    return Notification(alerts=tuple(alerts), status=status, group_key=group_key,
                        external_url="http://alertmanager.example:9093")


class Harness:
    def __init__(self, target: SmsDestination | None = None, *, max_per_day: int = 200):
        self.clock = Clock()
        self.store = MemoryStore()
        self.twilio = FakeTwilio()
        self.alertmanager = FakeAlertmanager()
        self.metrics = Metrics()
        self.metrics.prime_sms()
        self.destination = target or destination()
        self.ids = itertools.count()
        self.escalation = Escalation(
            self.store, self.twilio, self.alertmanager, self.metrics,
            destinations=lambda: {self.destination.name: self.destination}, max_per_day=max_per_day,
            status_callback_url="https://relay.example/twilio/status", wall_clock=self.clock,
            new_id=lambda: f"{next(self.ids):08d}",  # ids in creation order: SMS due together go in that order
        )

    def notify(self, *alerts: Alert, **options) -> int:
        body = notification(*alerts, **options)
        return self.escalation.schedule(body, [(self.destination, list(body.alerts))], "severity")

    def run(self, after_seconds: float = 0.0) -> int:
        self.clock.advance(after_seconds)
        return self.escalation.process_due()

    def statuses(self) -> list[str]:
        return sorted(message.status for message in self.store.recent_sms(limit=1000))

    def outcome(self, name: str) -> float:
        return self.metrics.registry.get_sample_value("rocketchat_webhook_sms_total", {"outcome": name}) or 0.0


def test_an_alert_without_delay_is_sent_at_once_with_the_seeds_template():
    harness = Harness()
    assert harness.notify(alert()) == 1
    harness.run()
    assert harness.twilio.to(ALICE) == [
        "🚨 CRITICAL ALERT\nHighCPU\nService: node\nInstance: host-1:9100\nHighCPU summary"]
    assert harness.twilio.sent[0][2] == "https://relay.example/twilio/status"
    assert harness.statuses() == [SMS_SENT]
    assert harness.metrics.registry.get_sample_value("rocketchat_webhook_sms_segments_total") == 1


def test_alertmanagers_resends_page_once_per_occurrence_and_recipient():
    harness = Harness(destination(SmsTier(0.0, (ALICE, BOB))))
    assert harness.notify(alert()) == 2
    assert harness.notify(alert()) == 0  # a re-send, a retry, the HA peer's copy
    harness.run()
    assert harness.notify(alert()) == 0  # a reminder after it was sent
    harness.run(60)
    assert len(harness.twilio.to(ALICE)) == 1 and len(harness.twilio.to(BOB)) == 1


def test_an_alert_that_fires_again_after_it_resolved_is_a_new_occurrence():
    harness = Harness()
    harness.notify(alert())
    harness.run()
    harness.notify(alert(status="resolved"))
    assert harness.notify(alert(starts_at="2026-11-30T12:30:00Z")) == 1
    harness.run()
    assert len(harness.twilio.to(ALICE)) == 2


def test_a_hand_written_body_without_group_key_pages_every_time():
    harness = Harness()
    assert harness.notify(alert(), group_key="") == 1
    assert harness.notify(alert(), group_key="") == 1
    harness.run()
    assert len(harness.twilio.to(ALICE)) == 2


def test_only_the_destinations_severities_are_paged():
    harness = Harness()
    assert harness.notify(alert(severity="warning")) == 0
    harness.run()
    assert harness.twilio.sent == []


def test_a_delayed_sms_waits_for_its_time_then_asks_alertmanager():
    harness = Harness(destination(SmsTier(300.0, (ALICE,))))
    harness.notify(alert())
    harness.run(299)
    assert harness.twilio.sent == [] and harness.alertmanager.asked == 0
    harness.run(1)
    assert len(harness.twilio.to(ALICE)) == 1 and harness.alertmanager.asked == 1


def test_an_sms_without_delay_does_not_wait_for_alertmanager():
    harness = Harness()
    harness.alertmanager.silenced.add("HighCPU")
    harness.notify(alert())
    harness.run()
    assert len(harness.twilio.to(ALICE)) == 1 and harness.alertmanager.asked == 0


def test_resolved_before_it_is_due_cancels_the_sms():
    harness = Harness(destination(SmsTier(300.0, (ALICE,))))
    harness.notify(alert())
    harness.clock.advance(100)
    harness.notify(alert(status="resolved"))
    harness.run(200)
    assert harness.twilio.sent == [] and harness.statuses() == [SMS_CANCELLED]
    assert harness.outcome("cancelled") == 1


def test_a_silence_before_it_is_due_cancels_the_sms():
    harness = Harness(destination(SmsTier(300.0, (ALICE,))))
    harness.notify(alert())
    harness.alertmanager.silenced.add("HighCPU")
    harness.run(300)
    assert harness.twilio.sent == []
    assert [message.reason for message in harness.store.recent_sms()] == [
        "silenced or inhibited in Alertmanager (acknowledged)"]


def test_only_the_unacknowledged_alerts_of_a_notification_are_named(caplog):
    harness = Harness(destination(SmsTier(300.0, (ALICE,))))
    harness.notify(alert("HighCPU"), alert("DiskFull"))
    harness.alertmanager.silenced.add("HighCPU")
    harness.run(300)
    [body] = harness.twilio.to(ALICE)
    assert "DiskFull" in body and "HighCPU" not in body


def test_an_alertmanager_that_cannot_be_asked_does_not_stop_the_page(caplog):
    harness = Harness(destination(SmsTier(300.0, (ALICE,))))
    harness.alertmanager.error = "connection refused"
    harness.notify(alert())
    with caplog.at_level(logging.WARNING, logger="rcwebhook.sms"):
        harness.run(300)
    assert len(harness.twilio.to(ALICE)) == 1
    assert any("cannot ask Alertmanager" in record.getMessage() and "sending the SMS anyway" in record.getMessage()
               for record in caplog.records)


def test_a_later_tier_is_paged_only_if_still_unacknowledged():
    harness = Harness(destination(SmsTier(0.0, (ALICE,)), SmsTier(600.0, (BOB,)), SmsTier(1200.0, (CAROL,))))
    assert harness.notify(alert()) == 3
    harness.run()
    assert len(harness.twilio.to(ALICE)) == 1 and harness.twilio.to(BOB) == []
    harness.run(600)
    assert len(harness.twilio.to(BOB)) == 1  # nobody silenced it in ten minutes
    harness.alertmanager.silenced.add("HighCPU")  # Bob acknowledges
    harness.run(600)
    assert harness.twilio.to(CAROL) == []


def test_over_the_hourly_cap_alerts_wait_for_one_digest_never_a_flood():
    harness = Harness(destination(max_per_hour=2))
    for index in range(6):
        harness.notify(alert(f"Alert{index}"), group_key=f"group-{index}")
        harness.run(60)
    assert len(harness.twilio.to(ALICE)) == 2
    assert harness.statuses().count(SMS_HELD) == 4
    harness.run(3600 - 6 * 60 - 1)  # a second before the first SMS leaves the trailing hour
    assert len(harness.twilio.to(ALICE)) == 2
    harness.run(2 * 60)  # both sent SMS have left the trailing hour
    bodies = harness.twilio.to(ALICE)
    assert len(bodies) == 3
    assert bodies[2].startswith("🚨 4 more critical alerts: Alert2 (host-1:9100), Alert3")
    assert bodies[2].endswith("see Rocket.Chat")
    assert harness.statuses().count(SMS_DIGESTED) == 4


def test_held_alerts_that_resolved_are_left_out_of_the_digest():
    harness = Harness(destination(max_per_hour=1))
    harness.notify(alert("First"), group_key="a")
    harness.run()
    harness.notify(alert("Second"), group_key="b")
    harness.notify(alert("Third"), group_key="c")
    harness.run()
    harness.notify(alert("Second", status="resolved"), group_key="b")
    harness.run(3601)
    bodies = harness.twilio.to(ALICE)
    assert len(bodies) == 2 and "Third" in bodies[1] and "Second" not in bodies[1]
    assert bodies[1].startswith("🚨 CRITICAL ALERT\nThird")  # alone, it goes as itself


def test_the_day_cap_stops_every_sms_at_error_and_sets_the_gauge(caplog):
    harness = Harness(destination(SmsTier(0.0, (ALICE, BOB, CAROL))), max_per_day=2)
    harness.notify(alert())
    with caplog.at_level(logging.ERROR, logger="rcwebhook.sms"):
        harness.run()
        harness.run(3600)
    assert len(harness.twilio.sent) == 2
    assert harness.outcome("day_cap") == 1
    assert harness.metrics.registry.get_sample_value("rocketchat_webhook_sms_day_cap_reached") == 1
    assert any("SMS_MAX_PER_DAY (2) reached" in record.getMessage() and record.levelno == logging.ERROR
               for record in caplog.records)


def test_over_the_day_cap_an_sms_waits_for_the_next_utc_day_and_goes_only_if_still_unacknowledged():
    harness = Harness(destination(SmsTier(0.0, (ALICE,)), SmsTier(0.0, (BOB,)), SmsTier(0.0, (CAROL,))),
                      max_per_day=1)
    harness.notify(alert("Still"), group_key="a")
    harness.run()
    [waiting_bob, waiting_carol] = [m for m in harness.store.open_sms()]
    assert {waiting_bob.recipient, waiting_carol.recipient} == {BOB, CAROL}
    midnight = datetime.datetime(2026, 12, 1, 0, 0, tzinfo=datetime.timezone.utc).timestamp()
    harness.clock.now = midnight - 1
    harness.run()
    assert len(harness.twilio.sent) == 1  # nothing more that day
    harness.alertmanager.silenced.add("Still")  # Bob acknowledged overnight: nobody is woken for it
    harness.clock.now = midnight + 1
    harness.run()
    assert len(harness.twilio.sent) == 1 and harness.statuses().count(SMS_CANCELLED) == 2
    assert harness.metrics.registry.get_sample_value("rocketchat_webhook_sms_day_cap_reached") == 0


def test_the_day_cap_opens_again_the_next_utc_day():
    harness = Harness(max_per_day=1)
    harness.notify(alert("A"), group_key="a")
    harness.notify(alert("B"), group_key="b")
    harness.run()
    assert len(harness.twilio.sent) == 1
    harness.clock.now = datetime.datetime(2026, 12, 1, 0, 0, 1, tzinfo=datetime.timezone.utc).timestamp()
    harness.notify(alert("C"), group_key="c")
    harness.run()
    # B waited for the day and goes now (still firing); C is over the new day's cap of 1 and waits in turn.
    assert len(harness.twilio.sent) == 2 and "B" in harness.twilio.sent[1][1]


def test_an_alert_fired_at_night_is_sent_when_the_hours_begin_if_still_firing():
    hours = HoursWindow(8 * 60, 18 * 60, "Europe/Berlin")
    harness = Harness(destination(hours=hours))
    harness.clock.now = datetime.datetime(2026, 11, 30, 21, 0, tzinfo=datetime.timezone.utc).timestamp()  # 22:00
    harness.notify(alert("Overnight"), group_key="night")
    harness.notify(alert("Blip"), group_key="blip")
    harness.run(3600)
    harness.notify(alert("Blip", status="resolved"), group_key="blip")
    harness.clock.now = datetime.datetime(2026, 12, 1, 6, 59, tzinfo=datetime.timezone.utc).timestamp()  # 07:59
    harness.run()
    assert harness.twilio.sent == []
    harness.run(60)  # 08:00 in Berlin
    [body] = harness.twilio.to(ALICE)
    assert "Overnight" in body


def test_hours_that_span_midnight():
    hours = HoursWindow(22 * 60, 6 * 60, "UTC")
    at_noon = hours.next_open(NOON)
    assert datetime.datetime.fromtimestamp(at_noon, datetime.timezone.utc).hour == 22
    late = datetime.datetime(2026, 11, 30, 23, 30, tzinfo=datetime.timezone.utc).timestamp()
    assert hours.next_open(late) == late


def test_twilio_429_and_5xx_are_retried_with_backoff_then_sent(caplog):
    harness = Harness()
    harness.twilio.script = [SmsResult(SmsOutcome.TRANSIENT, 429, 20429, reason="Too Many Requests"),
                             SmsResult(SmsOutcome.TRANSIENT, 500, None, reason="HTTP 500")]
    harness.notify(alert())
    harness.run()
    harness.run(4)
    assert harness.twilio.count == 1  # the first retry waits 5 s
    harness.run(1)
    assert harness.twilio.count == 2
    harness.run(9)
    assert harness.twilio.count == 2  # the second waits 10 s
    harness.run(1)
    assert harness.statuses() == [SMS_SENT] and harness.outcome("retried") == 2


def test_an_answer_lost_in_transit_is_sent_again_and_logged(caplog):
    harness = Harness()
    harness.twilio.script = [SmsResult(SmsOutcome.TRANSIENT, None, None, reason="read timeout", lost_in_transit=True)]
    harness.notify(alert())
    with caplog.at_level(logging.WARNING, logger="rcwebhook.sms"):
        harness.run()
        harness.run(5)
    assert harness.twilio.count == 2 and harness.statuses() == [SMS_SENT]
    assert any("lost in transit" in record.getMessage() and "a second SMS beats none" in record.getMessage()
               for record in caplog.records)


def test_retries_stop_after_give_up_seconds_at_error(caplog):
    harness = Harness(destination(give_up_seconds=60))
    harness.twilio.script = [SmsResult(SmsOutcome.TRANSIENT, 503, None, reason="HTTP 503")] * 100
    harness.notify(alert())
    with caplog.at_level(logging.ERROR, logger="rcwebhook.sms"):
        for _ in range(30):
            harness.run(10)
    assert harness.statuses() == [SMS_FAILED]
    attempts = harness.twilio.count
    harness.run(600)
    assert harness.twilio.count == attempts
    assert harness.outcome("gave_up") == 1
    assert any("gave up after" in record.getMessage() for record in caplog.records)


def test_a_recipient_who_replied_stop_is_skipped_for_a_day_then_tried_again():
    harness = Harness(destination(SmsTier(0.0, (ALICE, BOB))))
    harness.twilio.script = [SmsResult(SmsOutcome.OPTED_OUT, 400, 21610, reason="unsubscribed recipient")]
    harness.notify(alert("First"), group_key="a")
    harness.run()
    assert ALICE in harness.store.opt_outs()
    assert harness.notify(alert("Second"), group_key="b") == 1  # Bob only: Alice is not counted
    harness.run()
    assert len(harness.twilio.to(ALICE)) == 1 and len(harness.twilio.to(BOB)) == 2
    harness.clock.advance(OPT_OUT_RETRY_SECONDS)
    assert harness.notify(alert("Third"), group_key="c") == 2
    harness.run()
    assert len(harness.twilio.to(ALICE)) == 2
    assert SMS_OPTED_OUT in harness.statuses()


def test_a_permanent_refusal_is_never_retried(caplog):
    harness = Harness()
    harness.twilio.script = [SmsResult(SmsOutcome.PERMANENT, 400, 21614, reason="'To' number …001 is not a mobile "
                                                                                 "number")]
    harness.notify(alert())
    with caplog.at_level(logging.ERROR, logger="rcwebhook.sms"):
        harness.run()
        harness.run(3600)
    assert harness.twilio.count == 1 and harness.statuses() == [SMS_FAILED]
    assert any("21614" in record.getMessage() for record in caplog.records)


def test_refused_credentials_page_through_the_gauge_and_are_retried(caplog):
    harness = Harness()
    harness.twilio.script = [SmsResult(SmsOutcome.AUTH_FAILED, 401, 20003, reason="Authenticate")]
    harness.notify(alert())
    with caplog.at_level(logging.ERROR, logger="rcwebhook.sms"):
        harness.run()
    assert harness.metrics.registry.get_sample_value("rocketchat_webhook_sms_auth_failing") == 1
    assert any("refused the credentials" in record.getMessage() for record in caplog.records)
    harness.run(5)
    assert harness.statuses() == [SMS_SENT]
    assert harness.metrics.registry.get_sample_value("rocketchat_webhook_sms_auth_failing") == 0


def test_send_resolved_tells_only_those_who_were_paged():
    harness = Harness(destination(SmsTier(0.0, (ALICE,)), SmsTier(600.0, (BOB,)), send_resolved=True))
    harness.notify(alert())
    harness.run()
    harness.clock.advance(120)
    harness.notify(alert(status="resolved"))
    harness.run()
    assert harness.twilio.to(ALICE)[-1] == "✅ RESOLVED: HighCPU (host-1:9100)"
    harness.run(600)
    assert harness.twilio.to(BOB) == []


def test_several_alerts_of_one_notification_make_one_sms_within_the_segment_cap():
    harness = Harness(destination(max_segments=2))
    harness.notify(*(alert(f"VeryLongAlertNameNumber{index}") for index in range(12)))
    harness.run()
    [body] = harness.twilio.to(ALICE)
    from rcwebhook.channels.twilio.segments import segment_count

    assert body.startswith("🚨 12 CRITICAL ALERTS firing:") and segment_count(body) <= 2


def test_no_full_number_appears_in_any_log_line(caplog):
    harness = Harness(destination(SmsTier(0.0, (ALICE,)), SmsTier(60.0, (BOB,)), max_per_hour=1), max_per_day=3)
    harness.twilio.script = [SmsResult(SmsOutcome.TRANSIENT, 500, None, reason="HTTP 500"),
                             SmsResult(SmsOutcome.OPTED_OUT, 400, 21610, reason="unsubscribed")]
    with caplog.at_level(logging.DEBUG):
        for index in range(4):
            harness.notify(alert(f"A{index}"), group_key=f"g{index}")
            harness.run(61)
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "…001" in text
    for number in (ALICE, BOB):
        assert number not in text and number[1:] not in text


def test_a_store_failure_at_scheduling_is_loud_and_schedules_nothing(caplog):
    harness = Harness()
    harness.store.close()
    with caplog.at_level(logging.ERROR, logger="rcwebhook.sms"):
        assert harness.notify(alert()) is None  # the relay answers 503 for it (test_sms_app.py)
    assert any("SMS NOT scheduled" in record.getMessage() for record in caplog.records)


def test_an_outcome_that_cannot_be_saved_is_not_sent_again_in_a_loop():
    """Twilio took it but the store refused the result: the claim saved before the send holds the next attempt
    SEND_CLAIM_SECONDS away, so one alert cannot become an SMS every few seconds."""
    from rcwebhook.sms.escalation import SEND_CLAIM_SECONDS
    from rcwebhook.store import StoreError

    harness = Harness()
    harness.notify(alert())
    saves = []
    original = harness.store.save_sms

    def save_claim_only(messages):
        saves.append(messages)
        if len(saves) > 1:
            raise StoreError("disk full")
        original(messages)

    harness.store.save_sms = save_claim_only
    with pytest.raises(StoreError):
        harness.run()
    harness.store.save_sms = original
    for _ in range(10):
        harness.run(5)
    assert harness.twilio.count == 1
    harness.run(SEND_CLAIM_SECONDS)
    assert harness.twilio.count == 2  # a second SMS after the claim ran out beats none


def test_a_held_sms_asks_alertmanager_before_it_goes_even_without_a_delay():
    harness = Harness(destination(max_per_hour=1))
    harness.notify(alert("First"), group_key="a")
    harness.run()
    harness.notify(alert("Second"), group_key="b")
    harness.run()
    harness.alertmanager.silenced.add("Second")  # acknowledged while it waited for the hourly cap
    harness.run(3601)
    assert len(harness.twilio.to(ALICE)) == 1 and harness.alertmanager.asked >= 1
