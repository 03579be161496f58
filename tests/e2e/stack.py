"""The real pipeline on loopback ports: mock Rocket.Chat (mock_server.py), the relay under gunicorn with the shipped
gunicorn.conf.py, Debian's Alertmanager with the shipped alertmanager.yml and Prometheus with the shipped
prometheus.yml and alerting-rules.yml.

The shipped configurations stay the source: adapt_alertmanager_config() and adapt_prometheus_config() change only
addresses, ports, timings and file paths, and fail loudly on anything they do not know, so a change to a shipped
file is either tested here or stops these tests.
"""

from __future__ import annotations

import copy
import datetime
import json
import re
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Iterable, Mapping

import requests
import yaml

from tests.helpers import (
    GUNICORN_COMMAND, POLL_INTERVAL_SECONDS, PYTHON, REPO, ManagedProcess, Relay, free_port, relay_environ, wait_until,
)

SHIPPED_ALERTMANAGER_CONFIG = REPO / "alertmanager.yml"
SHIPPED_PROMETHEUS_CONFIG = REPO / "prometheus.yml"
MOCK_HOOKS = ("critical", "warning", "info", "default")
START_TIMEOUT_SECONDS = 20.0
HTTP_TIMEOUT_SECONDS = 5.0

# Timings of the adapted Alertmanager configuration: every group is sent at once, and a failed group is sent again a
# second after its flush gave up. Alertmanager's flush deadline stays max(group_interval, 10 s) = 10 s.
TEST_GROUP_WAIT = "0s"
TEST_GROUP_INTERVAL = "1s"
TEST_EVALUATION_INTERVAL = "1s"

# Colours the README promises: red critical, orange warning, blue info, grey unknown, green once resolved.
COLOURS = {"critical": "#d9534f", "warning": "#f0ad4e", "info": "#5bc0de", "unknown": "#9e9e9e"}
RESOLVED_COLOUR = "#5cb85c"


def holds_for(check, seconds: float) -> None:
    """Poll check (which asserts) for the whole of seconds: to see that something does not happen, e.g. a late
    duplicate, a test has to watch for a bounded time."""
    watch_until = time.monotonic() + seconds
    while time.monotonic() < watch_until:
        check()
        time.sleep(POLL_INTERVAL_SECONDS)
    check()


def utc_now_text() -> str:
    moment = datetime.datetime.now(datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def http_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # nothing between the tests and their loopback servers
    return session


# -- adapting the shipped configurations --
def _with_address(url: str, base_url: str) -> str:
    """url with the scheme, host and port of base_url; the path stays."""
    parts = urllib.parse.urlsplit(url)
    base = urllib.parse.urlsplit(base_url)
    return urllib.parse.urlunsplit((base.scheme, base.netloc, parts.path, parts.query, parts.fragment))


def _adapt_routes(route: dict) -> None:
    """Short group_wait and group_interval in a route and its children; repeat_interval stays as shipped."""
    if "group_wait" in route:
        route["group_wait"] = TEST_GROUP_WAIT
    if "group_interval" in route:
        route["group_interval"] = TEST_GROUP_INTERVAL
    for child in route.get("routes", ()):
        _adapt_routes(child)


def adapt_alertmanager_config(shipped: Mapping, *, relay_url: str, token_file: Path, smarthost: str) -> dict:
    """The shipped configuration with the relay's address, the token file and short timings; routes, matchers and
    receivers stay as shipped."""
    config = copy.deepcopy(dict(shipped))
    _adapt_routes(config["route"])
    config["route"]["group_interval"] = TEST_GROUP_INTERVAL  # the root's value is every route's default
    known = {"name", "webhook_configs", "email_configs"}
    for receiver in config["receivers"]:
        unknown = set(receiver) - known
        if unknown:
            raise AssertionError(f"receiver {receiver['name']!r}: the test helper does not know {sorted(unknown)}")
        for webhook in receiver.get("webhook_configs") or ():
            webhook["url"] = _with_address(webhook["url"], relay_url)
            webhook["http_config"]["authorization"]["credentials_file"] = str(token_file)
        for email in receiver.get("email_configs") or ():
            email["smarthost"] = smarthost  # a closed loopback port: nothing leaves this machine
    return config


def adapt_prometheus_config(
    shipped: Mapping, *, addresses: Mapping[str, str], alertmanager: str, rule_files: Iterable[Path]
) -> dict:
    """The shipped configuration with loopback targets per job, the given Alertmanager, absolute rule files and
    one-second intervals."""
    config = copy.deepcopy(dict(shipped))
    config["global"]["scrape_interval"] = TEST_EVALUATION_INTERVAL
    config["global"]["evaluation_interval"] = TEST_EVALUATION_INTERVAL
    for manager in config["alerting"]["alertmanagers"]:
        for static in manager["static_configs"]:
            static["targets"] = [alertmanager]
    config["rule_files"] = [str(path) for path in rule_files]
    for job in config["scrape_configs"]:
        if job["job_name"] not in addresses:
            raise AssertionError(f"scrape job {job['job_name']!r}: the test helper has no address for it")
        for static in job["static_configs"]:
            static["targets"] = [addresses[job["job_name"]]]
    return config


def shipped_rule_files() -> list[Path]:
    """The rule files prometheus.yml loads, relative to its own directory as Prometheus reads them."""
    shipped = yaml.safe_load(SHIPPED_PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    return [SHIPPED_PROMETHEUS_CONFIG.parent / name for name in shipped["rule_files"]]


def parse_metrics(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include the given ones (0 when there are none)."""
    total = 0.0
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if not match:
            continue
        sample_labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match[1] or ""))
        if all(sample_labels.get(key) == value for key, value in labels.items()):
            total += float(match[2])
    return total


# -- the processes --
class ServiceProcess:
    """A started program on a loopback port, ready once READY_PATH answers 200; stopped on any start failure."""

    NAME = "a service"
    READY_PATH = "/"

    def __init__(self, process: ManagedProcess, port: int):
        self.process = process
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.http = http_session()

    def _await_ready(self):
        try:
            wait_until(self._ready, START_TIMEOUT_SECONDS, f"{self.NAME} on :{self.port} to be ready")
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        if not self.process.running:
            raise AssertionError(f"{self.NAME} exited: {self.process.stderr()}")
        try:
            return self.http.get(f"{self.base_url}{self.READY_PATH}", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    def stop(self) -> None:
        self.http.close()
        self.process.stop()


class MockProcess(ServiceProcess):
    """mock_server.py as a process, with four hooks (critical, warning, info, default), read over /_mock/."""

    NAME = "the mock Rocket.Chat"
    READY_PATH = "/_mock/health"

    @classmethod
    def start(cls, workdir: Path, *, rate_limit: str = "off") -> "MockProcess":
        port = free_port()
        hooks = [arg for name in MOCK_HOOKS for arg in ("--hook", f"{name}={name}/{name}-token")]
        process = ManagedProcess(
            [PYTHON, "mock_server.py", "--host", "127.0.0.1", "--port", str(port), "--rate-limit", rate_limit, *hooks],
            env=relay_environ(), cwd=REPO, output_dir=workdir, name="mock",
        )
        return cls(process, port)._await_ready()

    def hook_url(self, name: str) -> str:
        return f"{self.base_url}/hooks/{name}/{name}-token"

    def relay_settings(self) -> dict[str, str]:
        """ROCKETCHAT_WEBHOOK_* for a relay posting to this mock: one hook per severity and a default one."""
        return {f"ROCKETCHAT_WEBHOOK_{name.upper()}": self.hook_url(name) for name in MOCK_HOOKS}

    def messages(self) -> dict[str, list[dict]]:
        """Each hook's posted messages, oldest first."""
        answer = self.http.get(f"{self.base_url}/_mock/messages", timeout=HTTP_TIMEOUT_SECONDS)
        answer.raise_for_status()
        return {name: [record["message"] for record in records] for name, records in answer.json()["hooks"].items()}

    def set_fault(self, hook: str, **fault) -> None:
        self.http.post(f"{self.base_url}/_mock/faults/{hook}", json=fault, timeout=HTTP_TIMEOUT_SECONDS).raise_for_status()


class AlertmanagerProcess(ServiceProcess):
    """Debian's Alertmanager on a loopback port with an adapted copy of the shipped alertmanager.yml."""

    NAME = "Alertmanager"
    READY_PATH = "/-/ready"

    def __init__(self, process: ManagedProcess, port: int, config_path: Path, amtool: str):
        super().__init__(process, port)
        self.config_path = config_path
        self.amtool = amtool

    @classmethod
    def start(cls, binary: str, amtool: str, workdir: Path, *, relay_url: str, token_file: Path) -> "AlertmanagerProcess":
        shipped = yaml.safe_load(SHIPPED_ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
        config = adapt_alertmanager_config(
            shipped, relay_url=relay_url, token_file=token_file, smarthost=f"127.0.0.1:{free_port()}"
        )
        config_path = workdir / "alertmanager.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        return cls.start_with_config(binary, amtool, workdir, config_path)

    @classmethod
    def start_with_config(cls, binary: str, amtool: str, workdir: Path, config_path: Path) -> "AlertmanagerProcess":
        """Alertmanager with the configuration in config_path, on a free loopback port."""
        port = free_port()
        storage = workdir / "alertmanager-data"
        storage.mkdir()
        process = ManagedProcess(
            [
                binary, f"--config.file={config_path}", f"--storage.path={storage}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",  # no HA peer: it would listen on 0.0.0.0:9094
                "--log.level=debug",  # "Notify success" lines per receiver
            ],
            env=relay_environ(), cwd=workdir, output_dir=workdir, name="alertmanager",
        )
        return cls(process, port, config_path, amtool)._await_ready()

    def post_alerts(self, alerts: list[dict]) -> None:
        """Fire (or, with endsAt set to now, resolve) alerts through the v2 API, as Prometheus does."""
        answer = self.http.post(f"{self.base_url}/api/v2/alerts", json=alerts, timeout=HTTP_TIMEOUT_SECONDS)
        assert answer.status_code == 200, answer.text

    def amtool_add(self, labels: Mapping[str, str], annotations: Mapping[str, str]) -> None:
        """Fire one alert with `amtool alert add`."""
        command = [
            self.amtool, f"--alertmanager.url={self.base_url}", "alert", "add",
            *(f"{name}={value}" for name, value in labels.items()),
            *(f"--annotation={name}={value}" for name, value in annotations.items()),
        ]
        finished = subprocess.run(command, capture_output=True, text=True, timeout=30, env=relay_environ())
        assert finished.returncode == 0, f"{command}: {finished.stderr}"

    def metric(self, name: str, **labels: str) -> float:
        answer = self.http.get(f"{self.base_url}/metrics", timeout=HTTP_TIMEOUT_SECONDS)
        answer.raise_for_status()
        return parse_metrics(answer.text, name, **labels)

    def webhook_failures(self) -> float:
        """Notifications to the relay that Alertmanager gave up on (a flush that failed)."""
        return self.metric("alertmanager_notifications_failed_total", integration="webhook")

    def log(self) -> str:
        return self.process.stderr()

    def succeeded_receivers(self) -> list[str]:
        """The receiver of each flush Alertmanager logged as a success, in order."""
        return re.findall(r'receiver=(\S+) integration=webhook\[\d+\] msg="Notify success"', self.log())


class PrometheusProcess(ServiceProcess):
    """Debian's Prometheus on a loopback port with an adapted copy of the shipped prometheus.yml."""

    NAME = "Prometheus"
    READY_PATH = "/-/ready"

    @classmethod
    def start(
        cls, binary: str, workdir: Path, *, relay_port: int, alertmanager_port: int, extra_rule_files: Iterable[Path]
    ) -> "PrometheusProcess":
        port = free_port()
        shipped = yaml.safe_load(SHIPPED_PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
        config = adapt_prometheus_config(
            shipped,
            addresses={
                "prometheus": f"127.0.0.1:{port}",
                "alertmanager": f"127.0.0.1:{alertmanager_port}",
                "rocketchat-webhook": f"127.0.0.1:{relay_port}",
            },
            alertmanager=f"127.0.0.1:{alertmanager_port}",
            rule_files=[*shipped_rule_files(), *extra_rule_files],
        )
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        storage = workdir / "prometheus-data"
        storage.mkdir()
        process = ManagedProcess(
            [
                binary, f"--config.file={config_path}", f"--storage.tsdb.path={storage}",
                f"--web.listen-address=127.0.0.1:{port}", "--log.level=info",
                # Alertmanager is discovered a few seconds after the first evaluation; an alert fired before that is
                # dropped and sent again only after the resend delay (1 minute by default).
                f"--rules.alert.resend-delay={TEST_EVALUATION_INTERVAL}",
            ],
            env=relay_environ(), cwd=workdir, output_dir=workdir, name="prometheus",
        )
        return cls(process, port)._await_ready()

    def api(self, path: str) -> dict:
        answer = self.http.get(f"{self.base_url}/api/v1/{path}", timeout=HTTP_TIMEOUT_SECONDS)
        answer.raise_for_status()
        return answer.json()["data"]


class Stack:
    """Starts the pipeline's processes for one test and stops every one of them in close()."""

    def __init__(self, workdir: Path, programs: Mapping[str, str]):
        self.workdir = workdir
        self.programs = programs
        self.token_file = workdir / "rocketchat-webhook-token"
        self.token_file.write_text("e2e-token\n", encoding="utf-8")
        self._running: list = []
        self._relay_starts = 0

    def start_mock(self, *, rate_limit: str = "off") -> MockProcess:
        return self._track(MockProcess.start(self.workdir, rate_limit=rate_limit))

    def relay_settings(self, mock: MockProcess, **extra: str) -> dict[str, str]:
        """The relay's environment: clean, on a free 127.0.0.1 port, posting to the mock."""
        return relay_environ({
            "HOST": "127.0.0.1", "PORT": str(free_port()), "LOG_LEVEL": "DEBUG",
            **mock.relay_settings(), **extra,
        })

    def start_relay(self, environ: Mapping[str, str]) -> Relay:
        """The relay under gunicorn with the shipped gunicorn.conf.py, once GET /health answers."""
        self._relay_starts += 1
        return self._track(Relay.start(GUNICORN_COMMAND, environ, output_dir=self.workdir,
                                       name=f"relay-{self._relay_starts}"))

    def start_alertmanager(self, relay: Relay) -> AlertmanagerProcess:
        """Alertmanager posting to the relay, with the token in self.token_file."""
        return self._track(AlertmanagerProcess.start(
            self.programs["alertmanager"], self.programs["amtool"], self.workdir,
            relay_url=relay.base_url, token_file=self.token_file,
        ))

    def start_prometheus(self, relay: Relay, alertmanager: AlertmanagerProcess, extra_rule_files) -> PrometheusProcess:
        return self._track(PrometheusProcess.start(
            self.programs["prometheus"], self.workdir, relay_port=relay.port,
            alertmanager_port=alertmanager.port, extra_rule_files=extra_rule_files,
        ))

    def stop(self, component) -> None:
        component.stop()
        if component in self._running:
            self._running.remove(component)

    def _track(self, component):
        self._running.append(component)
        return component

    def logs(self) -> str:
        """The end of every process's output, for a failed test's report."""
        sections = []
        for path in sorted(self.workdir.glob("*.std*")):
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            text = "\n".join(line for line in lines if "/_mock/" not in line)  # the tests' own polling
            sections.append(f"----- {path.name} (last 4000 characters) -----\n{text[-4000:]}")
        return "\n".join(sections)

    def close(self) -> None:
        while self._running:
            self._running.pop().stop()


# -- reading what reached Rocket.Chat --
def sightings(messages: Mapping[str, list[dict]], alertnames: Iterable[str]) -> list[tuple[str, str, str]]:
    """(hook, alertname, colour) for each attachment in the mock's messages whose title names one of alertnames."""
    patterns = {name: re.compile(rf"(?<![\w-]){re.escape(name)}(?![\w-])") for name in alertnames}
    found = []
    for hook, hook_messages in messages.items():
        for message in hook_messages:
            for attachment in message.get("attachments") or ():
                title = attachment.get("title", "")
                for name, pattern in patterns.items():
                    if pattern.search(title):
                        found.append((hook, name, attachment.get("color", "")))
    return found


def firing(sighted: Iterable[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    return [entry for entry in sighted if entry[2] != RESOLVED_COLOUR]


def resolved(sighted: Iterable[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    return [entry for entry in sighted if entry[2] == RESOLVED_COLOUR]


def alert(name: str, severity: str | None, **extra_labels: str) -> dict:
    """An alert for Alertmanager's v2 API, unique by its name."""
    labels = {"alertname": name, "instance": "e2e-host:9100", **extra_labels}
    if severity is not None:
        labels["severity"] = severity
    return {
        "labels": labels,
        "annotations": {"summary": f"{name} from the end-to-end test", "description": "Fired by tests/e2e."},
        "generatorURL": "http://prometheus.e2e.test/graph?g0.expr=up",
        "startsAt": utc_now_text(),
    }


def resolving(alerts: Iterable[dict]) -> list[dict]:
    """The same alerts, resolved as of now."""
    return [{**entry, "endsAt": utc_now_text()} for entry in alerts]


def unique_names(prefix: str, *kinds: str) -> dict[str, str]:
    """Alert names unique to this run: a name Alertmanager has never seen cannot be taken for an old group."""
    stamp = f"{int(time.time() * 1000) % 10**8:08d}"
    return {kind: f"{prefix}{kind.capitalize()}{stamp}" for kind in kinds}


def dump_json(value) -> str:
    return json.dumps(value, indent=1, ensure_ascii=False)[:6000]
