"""Reloading the routes file without a restart, as Alertmanager does on SIGHUP.

A valid file replaces the route table at once, in the running process: queues, pacing and de-duplication memory are
kept, and work already queued keeps its destinations. An invalid one is refused with one ERROR line and the old
table stays. Neither restarts anything, and nothing here can stop the process.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Mapping

from .config import Config, ConfigError
from .metrics import Metrics
from .relay import Relay
from .routes_file import load_route_table

logger = logging.getLogger("rcwebhook.reload")


class RouteReloader:
    def __init__(self, relay: Relay, config: Config, environ: Mapping[str, str], metrics: Metrics):
        self.relay = relay
        self.config = config
        self.environ = environ
        self.metrics = metrics
        self._lock = threading.Lock()  # one reload at a time; a second HUP meanwhile waits for the first
        metrics.config_last_reload_successful.set(1)
        metrics.config_last_reload_success_timestamp.set(time.time())

    def reload(self) -> bool:
        """Re-read ROUTES_FILE and the files it names; True when the new table is in force."""
        with self._lock:
            if not self.config.routes_file:
                logger.info("reload asked (SIGHUP): no ROUTES_FILE is set, so there is nothing to re-read")
                return True
            try:
                table = load_route_table(self.config, self.environ)
            except ConfigError as error:
                self.metrics.config_last_reload_successful.set(0)
                logger.error("reload refused, the routes in force stay: %s", error)
                return False
            except Exception:  # noqa: BLE001 - a reload must never take the relay down
                self.metrics.config_last_reload_successful.set(0)
                logger.exception("reload failed on an internal error; the routes in force stay")
                return False
            self.relay.use_table(table)
            self.metrics.config_last_reload_successful.set(1)
            self.metrics.config_last_reload_success_timestamp.set(time.time())
            logger.info(
                "reloaded %s: %d integration(s), %d destination(s)", self.config.routes_file,
                len(table.integrations), len(table.destinations),
            )
            self.relay.announce()
            return True

    def reload_in_background(self) -> None:
        """For a signal handler: it must return at once, so the reading happens in a thread of its own."""
        threading.Thread(target=self.reload, name="reload-routes", daemon=True).start()

    def install_sighup_handler(self) -> None:
        """SIGHUP re-reads the routes (main thread only, as Python's signal module requires)."""
        signal.signal(signal.SIGHUP, lambda signum, frame: self.reload_in_background())
