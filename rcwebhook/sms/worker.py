"""The SMS worker: one thread that decides due SMS, woken when one is scheduled and otherwise when the next is due."""

from __future__ import annotations

import logging
import os
import threading

from ..store import StoreError
from .escalation import DUE_BATCH, Escalation

logger = logging.getLogger("rcwebhook.sms")

# Longest sleep between looks at the Store: an SMS scheduled by another process sharing the Store (or resumed
# after a restart) is picked up within this.
MAX_SLEEP_SECONDS = 5.0


class SmsWorker:
    def __init__(self, escalation: Escalation, *, max_sleep_seconds: float = MAX_SLEEP_SECONDS):
        self.escalation = escalation
        self.max_sleep_seconds = max_sleep_seconds
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._store_failing = False
        self._start_lock = threading.Lock()
        self._started_in_pid = 0

    def start(self) -> None:
        with self._start_lock:
            if self._stopping.is_set() or (self.alive and self._started_in_pid == os.getpid()):
                return
            # Threads do not survive a fork (gunicorn --preload builds the app in the master): start anew there.
            self._started_in_pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="sms-worker", daemon=True)
            self._thread.start()

    def ensure_running(self) -> None:
        """Start the thread in this process if it is not running here (after a fork, or if it died)."""
        if not (self.alive and self._started_in_pid == os.getpid()):
            if self._thread is not None and self._started_in_pid == os.getpid():
                logger.error("the SMS worker had stopped; restarted it")
            self.start()

    def wake(self) -> None:
        self.ensure_running()
        self._wake.set()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout_seconds: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_seconds)

    def _run(self) -> None:
        while not self._stopping.is_set():
            sleep = self.max_sleep_seconds
            try:
                decided = self.escalation.process_due()
                sleep = 0.0 if decided >= DUE_BATCH else self.escalation.next_due_in_seconds(self.max_sleep_seconds)
                if self._store_failing:
                    logger.info("the state store answers again: pending SMS are being sent")
                self._store_failing = False
            except StoreError as error:
                if not self._store_failing:
                    logger.error("pending SMS cannot be read or updated: the state store failed: %s (retrying every "
                                 "%.0f s)", error, self.max_sleep_seconds)
                self._store_failing = True
            except Exception:  # noqa: BLE001 - the worker must outlive a bug of ours
                logger.exception("internal error in the SMS worker; it goes on")
            if sleep > 0:
                self._wake.wait(sleep)
            self._wake.clear()
