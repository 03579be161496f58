"""The delivery machinery: one worker thread per hook URL posts what its queue says, when its queue says."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from .config import Config
from .delivery import answer_within_seconds
from .events import PostFinished, post_alerts
from .hookqueue import Batch, FinishedGroup, Hook, HookQueue, Job, JobState, Part, dedup_key, is_reminder
from .metrics import Metrics
from .model import FIRING, Notification
from .outcome import Outcome, PostResult
from .pacing import RateLimit
from .shared import LocalCoordination, Unavailable
from .store import GroupMemory
from .threads import ThreadIndex, ThreadMessage, occurrence_ids, parts_of, split_layout

logger = logging.getLogger("rcwebhook.delivery")

# A worker's waits are cut into slices no longer than this: it re-reads its queue after each, and no wait, however
# far ahead a due time lies, can overflow threading's timeout (an OverflowError once killed a hook's worker).
MAX_WAIT_SLICE_SECONDS = 30.0
# A post's whole exchange gets at least this long (and a third of the delivery deadline), whatever the waiting
# requests have left.
MIN_EXCHANGE_SECONDS = 0.5
# After an internal error a worker pauses (doubling, up to the cap) and carries on with its queue intact; this many
# in a row without a clean round marks it unhealthy, so /health turns 503 and a liveness probe restarts the process.
INTERNAL_ERROR_PAUSE_SECONDS = 0.1
INTERNAL_ERROR_PAUSE_CAP_SECONDS = 5.0
UNHEALTHY_AFTER_INTERNAL_ERRORS = 5


# Replicas: how often the claims other processes hold are looked at (a copy's answer waits at most this long more),
# and how soon a hook's lease held by another process is asked for again.
CLAIM_POLL_SECONDS = 0.1
LEASE_POLL_SECONDS = 0.1
THREADS_FOLLOW_SECONDS = 2.0
GATE = object()  # _next_batch: a post is due, but the lease and the shared budget must be asked for first


def hook_key(url: str) -> str:
    """What the store knows a hook by: a digest of its URL (the URL holds the hook's token)."""
    return hashlib.blake2b(url.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


class RoundFailed(Exception):
    """A post round hit an internal error that was logged and handled where it happened."""


class Overloaded(Exception):
    """Too many bytes held, or shutting down: answer 503 at once. kind labels the metric."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


@dataclass
class Submission:
    """One request's jobs (one per hook it reaches) and whether each joined an equal one."""

    jobs: list[Job]
    joined: list[bool]


class Dispatcher:
    """Owns the hook queues and their worker threads; requests submit jobs and wait for them with a deadline.

    It knows no channel: the channel renders each batch and sends it, and its classified answer drives the queue.
    """

    def __init__(
        self,
        channel,
        hooks: Sequence[Hook],
        config: Config,
        *,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
        publish: Callable[[object], None] = lambda event: None,
        wall_clock: Callable[[], float] = time.time,
        remembered_groups: Callable[[], Iterable[GroupMemory]] = lambda: (),
        remembered_threads: Callable[[], Iterable[ThreadMessage]] = lambda: (),
        coordination=None,
        threads_since: Callable[[float], Iterable[ThreadMessage]] = lambda since: (),
    ):
        # Replicas: the thread messages other processes announced since a time (read from the shared Store).
        self.threads_since = threads_since
        self.threads_read_at = 0.0
        self.channel = channel
        # Replicas (shared.py): the shared budget, the hook's lease and claims on notifications; alone, a no-op.
        self.coordination = coordination if coordination is not None else LocalCoordination()
        self.remote_waits: list[tuple[HookQueue, Job]] = []  # jobs another process posts, waited for here
        self.next_claim_renewal_at = 0.0
        self.publish = publish  # events for the journal and the live feed; never blocks
        self.wall_clock = wall_clock
        # The de-duplication memory in the Store, read back each time the workers start in a new process (gunicorn
        # --preload builds the app in the master; a worker respawned later must see what was written since).
        self.remembered_groups = remembered_groups
        self.restored_groups = 0
        self.thread_index = ThreadIndex()  # what announced each occurrence, on hooks with threads
        self.remembered_threads = remembered_threads
        self.threads_restored_in_pid = 0  # read back once per process, and only once a hook has threads
        self.threads_unsupported_warned: set[str] = set()  # hook URLs whose Rocket.Chat gave no message id
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.config = config
        self.max_queued_bytes = config.max_queued_bytes
        self.condition = threading.Condition()
        self.delivery_deadline_seconds = config.delivery_deadline_seconds
        self.queues: dict[str, HookQueue] = {}
        self.workers: dict[str, threading.Thread] = {}  # by hook URL
        self.internal_errors_in_a_row: dict[str, int] = {}
        self.queued_bytes = 0
        self.running = False
        self.stopping = False
        self.started_in_pid = 0
        self.ensure_hooks(hooks)

    def ensure_hooks(self, hooks: Sequence[Hook]) -> None:
        """A queue (and, once started, a worker) for every hook; existing ones keep their pacing, queue and memory.

        A hook no longer routed to keeps its queue: what is queued there still goes out, and it idles afterwards.
        """
        with self.condition:
            for hook in hooks:
                queue = self.queues.get(hook.url)
                rate_limit = getattr(hook, "rate_limit", None) or self.config.rate_limit
                if queue is not None:
                    # After a reload: maybe a new name or rate limit; the same URL keeps its queue, attempts and
                    # memory.
                    queue.destination = hook
                    queue.full_rate_limit = rate_limit
                    queue.budget.limit = self._local_limit(rate_limit)
                    queue.on_group_forgotten = self.metrics.groups_forgotten.labels(hook.name).inc
                    continue
                self.queues[hook.url] = HookQueue(
                    hook, self._local_limit(rate_limit), self.config.dedup_window_seconds,
                    max_tracked_groups=self.config.max_tracked_groups,
                    on_group_forgotten=self.metrics.groups_forgotten.labels(hook.name).inc,
                )
                self.queues[hook.url].full_rate_limit = rate_limit
                self.internal_errors_in_a_row[hook.url] = 0
                if self.running and self.started_in_pid == os.getpid():
                    self._start_worker(hook.url)
            if self.running and self.started_in_pid == os.getpid():
                self._restore_threads()  # a reload may have turned threads on

    def _restore_threads(self) -> None:
        """The threads' message ids from the Store, read only when some hook has threads (STATE_MAX_ALERTS rows at
        most: not worth reading at every start of a relay that never replies in threads)."""
        if self.threads_restored_in_pid == os.getpid():
            return
        if any(getattr(queue.destination, "threads", False) for queue in self.queues.values()):
            self.threads_restored_in_pid = os.getpid()
            self.thread_index.restore(self.remembered_threads())

    def restore_groups(self, memories: Iterable[GroupMemory]) -> int:
        """Put the de-duplication memory read back at start into the queues (oldest first, before any traffic), so
        an HA peer's copy arriving just after a restart is still recognised. Returns how many were restored."""
        by_key = {hook_key(url): queue for url, queue in self.queues.items()}
        restored = 0
        with self.condition:
            now, wall_now = self.clock(), self.wall_clock()
            for memory in memories:
                queue = by_key.get(memory.hook_key)
                if queue is None or memory.group_id in queue.latest_by_group:
                    continue
                finished_at = now - max(0.0, wall_now - memory.finished_at)
                queue.latest_by_group[memory.group_id] = FinishedGroup(
                    memory.dedup_key, memory.state, memory.status, memory.reason, finished_at, finished_at
                )
                restored += 1
        return restored

    def _group_memories(self, queue: HookQueue, finished: Sequence[Job]) -> tuple[GroupMemory, ...]:
        key, wall_now, now = hook_key(queue.destination.url), self.wall_clock(), self.clock()
        memories = []
        for job in finished:
            if job.group_id is None or job.dedup_key is None or job.finished_at is None:
                continue
            memories.append(GroupMemory(key, job.group_id, job.dedup_key, job.state, job.status, job.reason,
                                        wall_now - (now - job.finished_at)))
        return tuple(memories)

    # -- life cycle ---------------------------------------------------------------------------------------------

    def start(self) -> "Dispatcher":
        with self.condition:
            if self.running and self.started_in_pid == os.getpid():
                return self
            # Threads do not survive a fork (gunicorn --preload imports the app in the master): start them anew.
            self.running, self.started_in_pid, self.workers = True, os.getpid(), {}
            self.restored_groups = self.restore_groups(self.remembered_groups())
            self.threads_restored_in_pid = 0
            self._restore_threads()
            for url in self.queues:
                self._start_worker(url)
            if self.coordination.shared:
                self.coordination.start()
                threading.Thread(target=self._watch_claims, name="claims", daemon=True).start()
        return self

    def _start_worker(self, url: str) -> None:
        queue = self.queues[url]
        thread = threading.Thread(target=self._work, args=(queue,), name=f"post-{queue.destination.name}", daemon=True)
        thread.start()
        self.workers[url] = thread

    @property
    def threads(self) -> list[threading.Thread]:
        return list(self.workers.values())

    def check_workers(self) -> list[str]:
        """Restart any hook worker that is gone (its queue is intact); the names of those still not healthy."""
        if self.started_in_pid != os.getpid():
            self.start()
        with self.condition:
            if not self.running:
                return [queue.destination.name for queue in self.queues.values()]
            for url, thread in self.workers.items():
                if not thread.is_alive():
                    logger.error("the post worker for %s had stopped; restarted it", self.queues[url].destination)
                    self.queues[url].requeue_in_flight(self.clock())  # what it was posting goes first again
                    self._start_worker(url)
            return [
                self.queues[url].destination.name for url, thread in self.workers.items()
                if not thread.is_alive() or self.internal_errors_in_a_row[url] >= UNHEALTHY_AFTER_INTERNAL_ERRORS
            ]

    @property
    def ready(self) -> bool:
        return self.running and not self.stopping and not self.check_workers()

    def begin_shutdown(self) -> None:
        """Stop taking new work (GET /ready turns 503); the queues keep draining."""
        with self.condition:
            if not self.stopping:
                logger.info("shutting down: no new notifications taken; delivering what is queued")
            self.stopping = True
            self.condition.notify_all()

    def stop(self, drain_seconds: float) -> None:
        """Deliver what fits within drain_seconds, then stop the workers and log what was not delivered."""
        self.begin_shutdown()
        deadline = self.clock() + drain_seconds
        with self.condition:
            while not all(queue.idle for queue in self.queues.values()):
                remaining = deadline - self.clock()
                if remaining <= 0:
                    break
                self.condition.wait(remaining)
            undelivered = [job for queue in self.queues.values() for job in queue.pending_jobs()]
            self.running = False
            self.condition.notify_all()
        for job in undelivered:
            logger.error(
                "not delivered at shutdown: %d alert(s) for %s (group %r)",
                len(job.alerts), job.destination, job.notification.group_key[:200],
            )
        for thread in self.threads:
            thread.join(timeout=1.0)
        self.channel.close()

    # -- requests -----------------------------------------------------------------------------------------------

    def submit(self, notification: Notification, parts: Sequence[Part], body_bytes: int) -> Submission:
        """Queue one notification's alerts, one job per hook; raises Overloaded when memory is at its bound."""
        if self.started_in_pid != os.getpid():
            self.start()
        now = self.clock()
        answer_by = now + answer_within_seconds(self.delivery_deadline_seconds)
        with self.condition:
            if self.stopping or not self.running:
                raise Overloaded("the relay is shutting down", "shutting_down")
            if self.queued_bytes + body_bytes > self.max_queued_bytes:
                raise Overloaded("too many bytes of notifications held (MAX_QUEUED_BYTES)", "queued_bytes")
            submission = Submission([], [])
            parts = [piece for part in parts for piece in self._threaded(notification, part, now)]
            # The body's bytes are shared among its jobs, so the bound counts each body once.
            share_bytes = body_bytes // max(1, len(parts))
            for part in parts:
                job = Job(
                    part.hook, notification, part.alerts, dedup_key(notification, part.alerts), share_bytes,
                    answer_by, looks=part.looks, reply_to=part.reply_to,
                )
                queue = self.queues[part.hook.url]
                queued, joined = queue.submit(job, now)
                elsewhere = not joined and queued is job and self._claim_elsewhere(queue, job, now)
                if joined or elsewhere:
                    self.metrics.deduplicated.labels(queue.destination.name).inc()
                if not joined and not job.finished:  # queued here, or waiting for another process's outcome
                    self.queued_bytes += share_bytes
                joined = joined or elsewhere
                self.metrics.queued.labels(queue.destination.name).set(queue.pending_count)
                submission.jobs.append(queued)
                submission.joined.append(joined)
            self.condition.notify_all()
        return submission

    # -- replicas ------------------------------------------------------------------------------------------------

    def _local_limit(self, rate_limit):
        """The budget this process paces at alone: all of it, unless Redis is gone and the processes that share it
        must each keep to their share (EXPECTED_PROCESSES) to stay under Rocket.Chat's limit together."""
        if not self.coordination.shared or self.coordination.up or not rate_limit.enabled:
            return rate_limit
        return RateLimit(max(1, rate_limit.count // self.config.expected_processes), rate_limit.window_seconds)

    def on_shared_state(self, up: bool) -> None:
        """Redis went or came back: each hook's local budget follows; on its return, the posts this process made
        alone meanwhile are counted in the shared window, so together the processes do not spend the budget twice."""
        now = self.clock()
        with self.condition:
            spent = {}
            for url, queue in self.queues.items():
                queue.budget.limit = self._local_limit(queue.full_rate_limit)
                queue.shared_gate_open = False
                window = queue.full_rate_limit.window_seconds
                if up and queue.full_rate_limit.enabled:
                    spent[url] = (window, [now - at for at in queue.budget.attempt_times if now - at < window])
            self.condition.notify_all()
        for url, (window, ages) in spent.items():
            try:
                self.coordination.seed_window(hook_key(url), window, ages)
            except Unavailable:
                return

    @staticmethod
    def _claim_key(job: Job) -> tuple[str, bytes, bytes]:
        return hook_key(job.destination.url), job.group_id, job.dedup_key

    def _claim_elsewhere(self, queue: HookQueue, job: Job, now: float) -> bool:
        """With replicas: True when another process already has this notification (the job then waits for its
        outcome, or carries it); False when this process posts it. Without Redis: False."""
        if not self.coordination.shared or not self.coordination.up or job.dedup_key is None or job.group_id is None:
            return False
        try:
            [claim] = self.coordination.claim([self._claim_key(job)], self._claim_seconds,
                                              reminders=[is_reminder(job.notification)])
        except Unavailable:
            return False  # alone for now: at worst one copy is posted twice, as at-least-once allows
        if claim.ours:
            return False
        queue.withdraw(job)
        if claim.finished:
            queue.finish_elsewhere(job, claim.state, claim.status, claim.reason, now)
        else:
            self.remote_waits.append((queue, job))
        return True

    @property
    def _claim_seconds(self) -> float:
        return self.config.state_lease_seconds

    def _watch_claims(self) -> None:
        """Follow the notifications other processes post (their outcome answers our copies), take over those whose
        holder died (its claim expired), and renew our own claims while they wait in our queues."""
        while self.running:
            try:
                self._watch_claims_once()
            except Unavailable:
                pass
            except Exception:  # noqa: BLE001 - the watcher must outlive a bug of ours
                logger.exception("internal error following other processes' notifications; it goes on")
            time.sleep(CLAIM_POLL_SECONDS)

    def _watch_claims_once(self) -> None:
        coordination = self.coordination
        if not coordination.up:
            with self.condition:  # Redis is gone: post what we waited for ourselves (at-least-once)
                for queue, job in self.remote_waits:
                    if not job.finished:
                        queue.waiting.append(job)
                self.remote_waits = []
                self.condition.notify_all()
            return
        with self.condition:
            waits = [(queue, job) for queue, job in self.remote_waits if not job.finished]
        if waits:
            claims = coordination.look([self._claim_key(job) for _, job in waits])
            gone = [(queue, job) for (queue, job), claim in zip(waits, claims) if claim is None]
            retaken = coordination.claim([self._claim_key(job) for _, job in gone], self._claim_seconds)
            now = self.clock()
            with self.condition:
                for (queue, job), claim in zip(waits, claims):
                    if claim is not None and claim.finished:
                        queue.finish_elsewhere(job, claim.state, claim.status, claim.reason, now)
                        self.queued_bytes -= job.size_bytes
                for (queue, job), claim in zip(gone, retaken):
                    if claim.ours:  # its holder died: post it here (its bytes are counted already)
                        logger.warning("a notification another process had taken (group %r) is posted here: that "
                                       "process stopped renewing its claim", job.notification.group_key[:200])
                        queue.waiting.append(job)
                    elif claim.finished:
                        queue.finish_elsewhere(job, claim.state, claim.status, claim.reason, now)
                        self.queued_bytes -= job.size_bytes
                self.remote_waits = [(queue, job) for queue, job in self.remote_waits
                                     if not job.finished and job not in queue.waiting]
                self.condition.notify_all()
        self._follow_threads()
        now = self.clock()
        if now >= self.next_claim_renewal_at:
            self.next_claim_renewal_at = now + self._claim_seconds / 3
            with self.condition:
                ours = [self._claim_key(job) for queue in self.queues.values() for job in queue.pending_jobs()
                        if job.group_id is not None and job.dedup_key is not None]
                posting = [hook_key(url) for url, queue in self.queues.items() if queue.in_flight is not None]
            coordination.renew_claims(ours, self._claim_seconds)
            for key in posting:  # renewed while posting: a slow post never lets another process in beside it
                coordination.take_lease(key, self.config.state_lease_seconds)

    def _follow_threads(self) -> None:
        """With replicas and threads: the threads other processes announced, every THREADS_FOLLOW_SECONDS (the
        journal writes them a moment behind their post), so a resolved alert replies in them here too."""
        wall_now = self.wall_clock()
        if wall_now - self.threads_read_at < THREADS_FOLLOW_SECONDS:
            return
        if not any(getattr(queue.destination, "threads", False) for queue in self.queues.values()):
            return
        since, self.threads_read_at = self.threads_read_at - THREADS_FOLLOW_SECONDS, wall_now
        fresh = list(self.threads_since(since if since > 0 else wall_now - 60.0))
        with self.condition:
            for thread in fresh:
                self.thread_index.remember(thread.hook_key, thread.alert_id, thread.message_id)

    def _finish_claims(self, finished: Sequence[Job]) -> None:
        """Our outcome, for copies that reach other processes within the de-duplication window."""
        if not self.coordination.shared or not self.coordination.up:
            return
        done = [(self._claim_key(job), job.state, job.status, job.reason) for job in finished
                if job.group_id is not None and job.dedup_key is not None]
        try:
            self.coordination.finish_claims(done, self.config.dedup_window_seconds)
        except Unavailable:
            pass

    def _pass_gate(self, queue: HookQueue) -> float:
        """With replicas, before a post: this process takes the hook's lease and one slot of the shared budget.
        0.0 when both are ours; else how long to wait before asking again."""
        coordination, key = self.coordination, hook_key(queue.destination.url)
        try:
            left = coordination.take_lease(key, self.config.state_lease_seconds)
            if left > 0:
                return min(left, LEASE_POLL_SECONDS)
            limit = queue.full_rate_limit
            if limit.enabled:
                wait = coordination.reserve_post(key, limit.count, limit.window_seconds)
                if wait > 0:
                    coordination.release_lease(key)
                    return wait
        except Unavailable:
            return 0.0  # on our own share of the budget until Redis answers again
        return 0.0

    def _release_gate(self, queue: HookQueue) -> None:
        if self.coordination.shared and self.coordination.up:
            key = hook_key(queue.destination.url)
            try:
                if queue.full_rate_limit.enabled:
                    self.coordination.posted(key, queue.full_rate_limit.window_seconds)
                self.coordination.release_lease(key)
            except Unavailable:
                pass

    def _threaded(self, notification: Notification, part: Part, now: float) -> list[Part]:
        """On a hook with threads, the part split into a channel part and replies (threads.py); else the part.

        A copy of the group's latest notification (an HA peer's, or Alertmanager's retry after a partial failure) is
        split as that one was, so each part joins its own and nothing is posted twice."""
        if not getattr(part.hook, "threads", False):
            return [part]
        queue = self.queues[part.hook.url]
        whole_key = dedup_key(notification, part.alerts)
        if not is_reminder(notification):
            layout = queue.split_remembered(notification, whole_key, now)
            if layout is not None:
                return parts_of(part, layout)
            if queue.repeats_latest(notification, whole_key, now):
                return [part]  # an HA peer's copy of an unsplit notification: whole, it joins what it repeats
        key = hook_key(part.hook.url)
        threads_of = {
            index: self.thread_index.message_for(key, alert_id, firing=alert.status == FIRING)
            for index, (alert, alert_id) in enumerate(zip(part.alerts, occurrence_ids(part.alerts)))
        }
        layout = split_layout(part.alerts, threads_of, self._reply_capacity(queue, now),
                              notification_reason=notification.notification_reason)
        if len(layout) == 1 and layout[0][0] is None:
            return [part]
        queue.remember_split(notification, whole_key, layout)
        return parts_of(part, layout)

    def _reply_capacity(self, queue: HookQueue, now: float) -> int:
        """Replies pacing can post before this request is answered: the posts it allows (from any backoff on), less
        those already queued (each thread waiting is a post of its own) and this notification's channel post."""
        queued_posts = (len(queue.alone_batches) + len({job.reply_to for job in queue.waiting})
                        + (queue.in_flight is not None))
        start = max(now, queue.retry_at)
        horizon = answer_within_seconds(self.delivery_deadline_seconds) - (start - now)
        possible = queue.budget.posts_possible(start, queue.last_post_at, horizon) if horizon > 0 else 0
        return max(0, possible - queued_posts - 1)

    def wait(self, submission: Submission, timeout_seconds: float) -> bool:
        """Wait until every job of the submission finished; False when the timeout came first."""
        deadline = self.clock() + timeout_seconds
        for job in submission.jobs:
            if not job.done.wait(max(0.0, deadline - self.clock())):
                return False
        return True

    def retry_after_seconds(self, jobs: Sequence[Job]) -> float:
        """How long until the unfinished jobs' hooks may post again."""
        now = self.clock()
        with self.condition:
            waits = [self.queues[job.destination.url].seconds_until_post(now) for job in jobs if not job.finished]
        return max(waits, default=0.0)

    def pacing(self) -> list[dict]:
        """Each hook's pacing now, by destination name (the status page): posts in the window against the budget,
        what is queued, and when the next post may go (None with nothing queued)."""
        now = self.clock()
        with self.condition:
            rows = []
            for queue in self.queues.values():
                limit = queue.budget.limit
                due = queue.due_at(now)
                rows.append({
                    "destination": queue.destination.name,
                    "posts_in_window": queue.budget.used(now) if limit.enabled else 0,
                    "budget": limit.count if limit.enabled else None,
                    "window_seconds": limit.window_seconds if limit.enabled else None,
                    "queued": queue.pending_count,
                    "next_post_in_seconds": None if due is None else round(max(0.0, due - now), 1),
                })
        return rows

    # -- workers ------------------------------------------------------------------------------------------------

    def _next_batch(self, queue: HookQueue) -> Batch | None:
        with self.condition:
            held_since = None
            while self.running:
                now = self.clock()
                due = queue.due_at(now)
                if due is None:
                    self.internal_errors_in_a_row[queue.destination.url] = 0  # nothing to do, and nothing failing
                if due is not None and due <= now:
                    if self.coordination.shared and self.coordination.up and not queue.shared_gate_open:
                        return GATE  # the lease and the shared budget are asked outside the lock
                    queue.shared_gate_open = False
                    if held_since is not None:
                        self.metrics.rate_limit_wait.labels(queue.destination.name).inc(now - held_since)
                    return queue.take_batch(now)
                if due is not None and held_since is None and queue.retry_at <= now:
                    held_since = now  # held by pacing or Rocket.Chat's limit, not by a failure's backoff
                self.condition.wait(MAX_WAIT_SLICE_SECONDS if due is None else min(due - now, MAX_WAIT_SLICE_SECONDS))
        return None

    def _work(self, queue: HookQueue) -> None:
        """The hook's worker: posts round after round; an internal error is logged and the work goes on."""
        url = queue.destination.url
        while self.running:
            try:
                if not self._work_one_round(queue):
                    return
                self.internal_errors_in_a_row[url] = 0  # a whole round went well
            except RoundFailed:
                # Logged where it happened and its batch already handled: only counted here.
                self.internal_errors_in_a_row[url] += 1
                self.metrics.internal_errors.labels("post_worker").inc()
            except Exception:  # noqa: BLE001 - a worker that dies would silently stop a channel's alerts
                errors = self.internal_errors_in_a_row[url] = self.internal_errors_in_a_row[url] + 1
                self.metrics.internal_errors.labels("post_worker").inc()
                logger.exception(
                    "internal error in the post worker for %s (%d in a row); its queue is kept and it carries on",
                    queue.destination, errors,
                )
                with self.condition:
                    try:
                        queue.requeue_in_flight(self.clock())
                    except Exception:  # noqa: BLE001
                        logger.exception("could not put the notifications in flight for %s back", queue.destination)
                    pause = min(INTERNAL_ERROR_PAUSE_CAP_SECONDS, INTERNAL_ERROR_PAUSE_SECONDS * 2 ** min(errors, 16))
                    self.condition.wait(pause)

    def _remember_threads(self, queue: HookQueue, batch: Batch,
                          result: PostResult | None) -> tuple[ThreadMessage, ...]:
        """A delivered channel post on a hook with threads becomes the thread of each firing occurrence it showed
        first (called under the condition, so a resolved notification arriving next finds it)."""
        hook = batch.jobs[0].destination if batch.jobs else queue.destination  # the hook render() saw
        if result is None or result.outcome is not Outcome.DELIVERED or not getattr(hook, "threads", False):
            return ()
        key = hook_key(hook.url)
        for _, alerts in batch.parts:
            for alert_id in occurrence_ids([alert for alert in alerts if alert.status != FIRING]):
                self.thread_index.mark_resolved(key, alert_id)  # its thread takes no firing reply from now on
        if any(job.reply_to for job in batch.jobs):
            return ()
        if result.message_id is None:
            if hook.url not in self.threads_unsupported_warned:
                self.threads_unsupported_warned.add(hook.url)
                logger.warning(
                    "threads are on for %s, but Rocket.Chat answered without one message id (\"separateResponse\" "
                    "needs a Rocket.Chat from mid-2025 or later; a hook posting to several channels gives several): "
                    "its alerts are posted to the channel as before", hook,
                )
            return ()
        wall_now, announced = self.wall_clock(), []
        firing = [alert for _, alerts in batch.parts for alert in alerts if alert.status == FIRING]
        for alert_id in occurrence_ids(firing):
            if self.thread_index.remember(key, alert_id, result.message_id):
                announced.append(ThreadMessage(key, alert_id, result.message_id, wall_now))
        return tuple(announced)

    def _exchange_seconds(self, batch: Batch) -> float:
        """The time a post may take: what its waiting requests have left, and never less than a third of the
        delivery deadline (2.7 s at 8 s), which the client caps at its own bound (5 s).

        The floor matters: a post cut after Rocket.Chat took it is posted again, so a slow Rocket.Chat must get the
        time to answer even when the request that waits for it is nearly out of time (its answer is enforced where
        it waits). A request arriving meanwhile is held at most that long behind an attempt hanging on a broken
        server.
        """
        now = self.clock()
        left = max((job.answer_by - now for job in batch.jobs if job.answer_by is not None), default=0.0)
        return max(MIN_EXCHANGE_SECONDS, self.delivery_deadline_seconds / 3, left)

    def _work_one_round(self, queue: HookQueue) -> bool:
        """Post one batch and apply the answer; False once the dispatcher stopped."""
        batch = self._next_batch(queue)
        if batch is None:
            return False
        if batch is GATE:
            wait = self._pass_gate(queue)
            with self.condition:
                if wait > 0:  # another process posts, or the shared budget is spent
                    queue.gate_retry_at = self.clock() + wait
                else:
                    queue.shared_gate_open = True
            return True
        result = None
        started = self.clock()
        is_retry = queue.consecutive_failures > 0
        internal_error = False
        if batch.parts:
            try:
                message = self.channel.render(batch)
            except Exception:  # noqa: BLE001 - one notification that cannot be rendered must not block the others
                logger.exception("internal error while rendering for %s; the post is split to isolate it",
                                 queue.destination)
                internal_error = True
                # As a content refusal: the batch is halved down to the notification that fails, which is then
                # tried as plain text and, failing that, answered 502; never retried for ever as a whole.
                result = PostResult(Outcome.CONTENT_REFUSED, None, "internal error in the relay while rendering")
            else:
                try:
                    result = self.channel.send(
                        queue.destination, message, timeout_seconds=self._exchange_seconds(batch)
                    )
                except Exception:  # noqa: BLE001 - a channel that raises is a transient failure of this post
                    logger.exception("internal error while posting to %s", queue.destination)
                    internal_error = True
                    result = PostResult(Outcome.TRANSIENT, None, "internal error in the relay")
        elapsed_seconds = self.clock() - started
        try:
            return self._after_post(queue, batch, result, elapsed_seconds, is_retry, internal_error)
        finally:  # whatever went wrong above: the hook's lease goes, and our outcome reaches the other processes
            self._release_gate(queue)
            self._finish_claims([job for job in batch.jobs if job.finished])

    def _after_post(self, queue: HookQueue, batch: Batch, result: PostResult | None, elapsed_seconds: float,
                    is_retry: bool, internal_error: bool) -> bool:
        name = queue.destination.name
        with self.condition:
            try:
                finished = queue.finish(batch, result, self.clock())
            except Exception:  # noqa: BLE001 - the batch goes back to the queue rather than vanish with it
                logger.exception("internal error after posting to %s; the notifications stay queued", name)
                internal_error = True
                queue.requeue_in_flight(self.clock(), batch)
                finished = [job for job in batch.jobs if job.finished]  # their bytes are released below
            for job in finished:
                self.queued_bytes -= job.size_bytes
            announced = self._remember_threads(queue, batch, result)
            self.metrics.queued.labels(name).set(queue.pending_count)
            self.condition.notify_all()
        if result is not None:
            self._count_post(name, batch, result, elapsed_seconds, is_retry, finished)
            self.publish(PostFinished(
                name, result.outcome.value, result.status, result.message_id,
                post_alerts([alert for _, alerts in batch.parts for alert in alerts]), round(elapsed_seconds * 1000, 1),
                self.wall_clock(), self._group_memories(queue, finished), announced,
            ))
        log_post(queue.destination, batch, result, elapsed_seconds * 1000)
        if internal_error:
            raise RoundFailed(queue.destination.name)  # counted by _work: no clean round
        return True

    def _count_post(
        self, name: str, batch: Batch, result: PostResult, elapsed_seconds: float, is_retry: bool, finished: list[Job]
    ) -> None:
        metrics = self.metrics
        metrics.posts.labels(name, result.outcome.value).inc()
        metrics.post_duration.labels(name).observe(elapsed_seconds)
        metrics.rocketchat_responses.labels(name, str(result.status) if result.status else "none").inc()
        if is_retry:
            metrics.retries.labels(name).inc()
        if result.status == 429:
            metrics.rate_limited.labels(name).inc()
        if len(batch.jobs) > 1 and result.outcome is Outcome.DELIVERED:
            metrics.merged.labels(name).inc(len(batch.jobs))
        for job in finished:
            if job.state == JobState.DELIVERED_PLAIN_TEXT:
                metrics.fallbacks.labels(name).inc()
            elif job.state == JobState.REFUSED:
                metrics.refusals.labels(name).inc()


def log_post(destination: Hook, batch: Batch, result: PostResult | None, elapsed_ms: float) -> None:
    if result is None:
        logger.info("post destination=%s skipped: every alert was already shown in a newer state", destination)
        return
    level = logging.INFO if result.outcome is Outcome.DELIVERED else logging.WARNING
    logger.log(
        level,
        "post destination=%s groups=%d alerts=%d outcome=%s status=%s ms=%.0f%s%s",
        destination, len(batch.jobs), batch.alert_count, result.outcome.value, result.status, elapsed_ms,
        " plain_text=true" if batch.plain_text else "",
        f" reason={result.reason!r}" if result.reason else "",
    )

