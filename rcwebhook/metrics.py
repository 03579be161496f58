"""The relay's Prometheus metrics, in a registry of its own per app (so tests can build many apps)."""

from __future__ import annotations

from typing import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics

from . import __version__

PREFIX = "rocketchat_webhook"
# Request latency buckets up to past the 8 s delivery deadline; a storm makes answers wait for the rate limit.
REQUEST_DURATION_BUCKETS_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 6, 8, 10, 15)
# What came of an SMS (rocketchat_webhook_sms_total): sent; retried (20429, 5xx, no answer); cancelled (resolved,
# silenced or inhibited before it went); held (over SMS_MAX_PER_HOUR); digested (went in a digest); opted_out
# (21610, or skipped while opted out); refused (a permanent refusal: 21211, 21614…); gave_up (SMS_GIVE_UP_SECONDS);
# day_cap (SMS_MAX_PER_DAY); auth_failed (20003, and 21212/21603: a sender Twilio refuses).
SMS_OUTCOMES = ("sent", "retried", "cancelled", "held", "digested", "opted_out", "refused", "gave_up", "day_cap",
                "auth_failed")
POST_DURATION_BUCKETS_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10)


class Metrics:
    """Every metric the relay exports. Labels name destinations by severity, never by URL."""

    def __init__(self) -> None:
        # The *_created series double every counter's output and no rule of ours reads them.
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        Info(f"{PREFIX}_build", "Version of the relay.", registry=registry).info({"version": __version__})
        self.requests = Counter(
            f"{PREFIX}_http_requests_total", "HTTP requests answered, by route and status.",
            ["route", "method", "status"], registry=registry,
        )
        self.request_duration = Histogram(
            f"{PREFIX}_http_request_duration_seconds", "Time to answer an HTTP request.", ["route"],
            buckets=REQUEST_DURATION_BUCKETS_SECONDS, registry=registry,
        )
        self.requests_waiting = Gauge(
            f"{PREFIX}_requests_waiting", "POST /webhook requests waiting for Rocket.Chat now.", registry=registry
        )
        self.bodies_too_large = Counter(
            f"{PREFIX}_bodies_too_large_total", "Bodies refused with 413 for exceeding MAX_BODY_BYTES.",
            registry=registry,
        )
        self.overloaded = Counter(
            f"{PREFIX}_overloaded_total", "Requests answered 503 at once because the relay was at a bound.",
            ["reason"], registry=registry,
        )
        self.alerts_received = Counter(
            f"{PREFIX}_alerts_received_total", "Usable alerts received, by status and severity.",
            ["status", "severity"], registry=registry,
        )
        self.alerts_skipped = Counter(
            f"{PREFIX}_alerts_skipped_total", "Entries of alerts that carried no usable alert.", registry=registry
        )
        self.posts = Counter(
            f"{PREFIX}_posts_total", "Posts to Rocket.Chat, by destination and outcome "
            "(delivered, content_refused, permanent, transient).", ["destination", "outcome"], registry=registry,
        )
        self.post_duration = Histogram(
            f"{PREFIX}_post_duration_seconds", "Time one post to Rocket.Chat took.", ["destination"],
            buckets=POST_DURATION_BUCKETS_SECONDS, registry=registry,
        )
        self.rocketchat_responses = Counter(
            f"{PREFIX}_rocketchat_responses_total", "Rocket.Chat's HTTP answers by code (none: no answer).",
            ["destination", "code"], registry=registry,
        )
        self.retries = Counter(
            f"{PREFIX}_post_retries_total", "Posts that repeat one that failed transiently.", ["destination"],
            registry=registry,
        )
        self.rate_limited = Counter(
            f"{PREFIX}_rate_limited_total", "429 answers from Rocket.Chat.", ["destination"], registry=registry
        )
        self.rate_limit_wait = Counter(
            f"{PREFIX}_rate_limit_wait_seconds_total",
            "Seconds notifications were held back by pacing or Rocket.Chat's rate limit.", ["destination"],
            registry=registry,
        )
        self.fallbacks = Counter(
            f"{PREFIX}_plain_text_fallbacks_total",
            "Notifications delivered as plain text after Rocket.Chat refused the rich message.", ["destination"],
            registry=registry,
        )
        self.refusals = Counter(
            f"{PREFIX}_refusals_total", "Notifications Rocket.Chat refused for good (answered 502).",
            ["destination"], registry=registry,
        )
        self.merged = Counter(
            f"{PREFIX}_notifications_merged_total", "Notifications that shared a post with others.",
            ["destination"], registry=registry,
        )
        self.deduplicated = Counter(
            f"{PREFIX}_notifications_deduplicated_total",
            "Notifications that repeated one delivered, queued or in flight, and joined it.", ["destination"],
            registry=registry,
        )
        self.queued = Gauge(
            f"{PREFIX}_notifications_queued", "Notifications waiting for a post or in flight.", ["destination"],
            registry=registry,
        )
        self.groups_forgotten = Counter(
            f"{PREFIX}_tracked_groups_forgotten_total",
            "Groups forgotten by de-duplication before their window ended, because MAX_TRACKED_GROUPS was reached.",
            ["destination"], registry=registry,
        )
        self.internal_errors = Counter(
            f"{PREFIX}_internal_errors_total",
            "Failures inside the relay's own threads, logged at ERROR; the work went on.", ["where"],
            registry=registry,
        )
        self.auth_failures = Counter(
            f"{PREFIX}_auth_failures_total", "Requests refused for a missing or wrong token, by integration.",
            ["integration"], registry=registry,
        )
        self.notifications_received = Counter(
            f"{PREFIX}_notifications_received_total",
            "Webhook bodies handled, by integration and the status answered.", ["integration", "status"],
            registry=registry,
        )
        self.template_failures = Counter(
            f"{PREFIX}_template_failures_total",
            "Template renders that failed (that alert, or that headline, was shown in the built-in layout); a retried "
            "post renders again.", ["template"],
            registry=registry,
        )
        self.config_last_reload_successful = Gauge(
            f"{PREFIX}_config_last_reload_successful",
            "Whether the last reload of the routes file (SIGHUP) succeeded (1) or was refused (0).", registry=registry,
        )
        self.config_last_reload_success_timestamp = Gauge(
            f"{PREFIX}_config_last_reload_success_timestamp_seconds",
            "When the route table in force was loaded (start or SIGHUP), in Unix seconds.", registry=registry,
        )

        self.journal_up = Gauge(
            f"{PREFIX}_journal_up",
            "Whether the journal's store (STATE_URL) took its last write (1) or not (0); delivery goes on either way.",
            registry=registry,
        )
        self.journal_write_failures = Counter(
            f"{PREFIX}_journal_write_failures_total", "Batches of journal records the store could not write.",
            registry=registry,
        )
        self.journal_records_pruned = Counter(
            f"{PREFIX}_journal_records_pruned_total",
            "Alert records forgotten by retention (STATE_RETENTION_DAYS, STATE_MAX_ALERTS).", registry=registry,
        )
        self.events_dropped = Counter(
            f"{PREFIX}_events_dropped_total",
            "Events for the journal and the live feed dropped because their queue was full.", registry=registry,
        )
        self.live_clients = Gauge(
            f"{PREFIX}_live_clients", "WebSocket clients following GET /ws now.", registry=registry,
        )
        self.live_clients_closed = Counter(
            f"{PREFIX}_live_clients_closed_total",
            "WebSocket clients closed by the relay, by reason (slow, full, shutdown).", ["reason"], registry=registry,
        )

        self.state_backend_up = Gauge(
            f"{PREFIX}_state_backend_up",
            "Whether the shared state store (STATE_URL=redis://…) answers (1) or each process works on its own memory "
            "(0); memory:// and SQLite are always 1.", registry=registry,
        )
        self.state_backend_up.set(1)
        # SMS escalation (issue 11). Recipients are never a label: a phone number is personal data.
        self.sms = Counter(
            f"{PREFIX}_sms_total", "SMS decisions and Twilio's answers, by outcome: " + ", ".join(SMS_OUTCOMES) + ".",
            ["outcome"], registry=registry,
        )
        self.sms_scheduled = Counter(
            f"{PREFIX}_sms_scheduled_total", "SMS scheduled (one per recipient and notification's new alerts).",
            registry=registry,
        )
        self.sms_segments = Counter(
            f"{PREFIX}_sms_segments_total", "SMS segments Twilio took: what the SMS cost.", registry=registry,
        )
        self.sms_status_callbacks = Counter(
            f"{PREFIX}_sms_status_callbacks_total",
            "Twilio status callbacks received, by status (forged: a bad X-Twilio-Signature, answered 403).",
            ["status"], registry=registry,
        )
        self.sms_open = Gauge(
            f"{PREFIX}_sms_pending", "SMS waiting to be sent: delayed, held for the hourly cap, or retrying.",
            registry=registry,
        )
        self.sms_day_cap_reached = Gauge(
            f"{PREFIX}_sms_day_cap_reached",
            "1 while SMS_MAX_PER_DAY is spent for the day (nothing more is sent until the next UTC day), else 0.",
            registry=registry,
        )
        self.sms_auth_failing = Gauge(
            f"{PREFIX}_sms_auth_failing",
            "1 after Twilio refused the credentials (20003) or the sender (21212, 21603) until an SMS goes out.",
            registry=registry,
        )

    def prime_sms(self) -> None:
        for outcome in SMS_OUTCOMES:
            self.sms.labels(outcome)
        for status in ("queued", "sent", "delivered", "undelivered", "failed", "forged"):
            self.sms_status_callbacks.labels(status)
        self.sms_day_cap_reached.set(0)
        self.sms_auth_failing.set(0)

    def prime(self, destination_names: Iterable[str]) -> None:
        """Create every destination's series at zero, so alert rules see 0 rather than nothing before a failure."""
        for name in destination_names:
            for outcome in ("delivered", "content_refused", "permanent", "transient"):
                self.posts.labels(name, outcome)
            for counter in (self.retries, self.rate_limited, self.rate_limit_wait, self.fallbacks, self.refusals,
                            self.merged, self.deduplicated, self.groups_forgotten):
                counter.labels(name)
            self.queued.labels(name).set(0)
        for where in ("post_worker", "thread"):
            self.internal_errors.labels(where)
        for reason in ("slow", "full", "shutdown"):
            self.live_clients_closed.labels(reason)
        for reason in ("waiting_requests", "intake", "queued_bytes", "shutting_down"):
            self.overloaded.labels(reason)

    def prime_integrations(self, integration_names: Iterable[str]) -> None:
        for name in integration_names:
            self.auth_failures.labels(name)
            for status in ("200", "502", "503"):
                self.notifications_received.labels(name, status)
