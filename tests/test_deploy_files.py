"""The files users deploy with, each checked by the real tool that reads it: amtool for alertmanager.yml, promtool for
prometheus.yml and alerting-rules.yml, docker-compose (and the docker library it builds with) for docker-compose.yml,
the Dockerfile and .dockerignore, systemd-analyze for the systemd unit. No Docker engine runs here: the image is
checked by running its command and its HEALTHCHECK from exactly the files its build context holds.

A missing tool skips its tests with the command that installs it (`make test` installs them as root); under
REQUIRE_E2E=1 (CI) that skip is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from rcwebhook.config import DEFAULT_DELIVERY_DEADLINE_SECONDS, DEFAULT_MAX_BODY_BYTES, DEFAULT_PORT
from tests.e2e.tools import require_programs, skip_or_fail
from tests.helpers import PYTHON, REPO, ManagedProcess, Relay, free_port, relay_environ, run_to_exit

ALERTMANAGER_CONFIG = REPO / "alertmanager.yml"
PROMETHEUS_CONFIG = REPO / "prometheus.yml"
ALERTING_RULES = REPO / "alerting-rules.yml"
RULE_TESTS = REPO / "tests" / "e2e" / "data" / "alerting-rules.test.yml"
DOCKERFILE = REPO / "Dockerfile"
COMPOSE_FILE = REPO / "docker-compose.yml"
SYSTEMD_UNIT = REPO / "deploy" / "rocketchat-webhook.service"
TOOL_TIMEOUT_SECONDS = 60

SEVERITY_RECEIVER = {"critical": "rocketchat-critical", "warning": "rocketchat-warning", "info": "rocketchat-info"}
DEFAULT_RECEIVER = "rocketchat"
NULL_RECEIVER = "null"
RELAY_ALERTS_RECEIVER = "rocketchat-webhook-oncall"
RELAY_COMPONENT = {"component": "rocketchat-webhook"}
# The seed's timings: (group_wait, repeat_interval) per severity.
SEVERITY_TIMINGS = {"critical": ("0s", "30m"), "warning": ("10s", "1h"), "info": ("30s", "3h")}
# A generous alert as Alertmanager sends it (labels, annotations, URLs): max_alerts of them must fit MAX_BODY_BYTES.
LARGE_ALERT_BYTES = 16 * 1024
CONFIG_ERROR_EXIT_STATUS = 2  # rocketchat_webhook.py and gunicorn.conf.py exit 2 on a bad setting


def run(args, *, cwd: Path = REPO, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(arg) for arg in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=TOOL_TIMEOUT_SECONDS
    )


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def duration_seconds(text: str) -> float:
    """Go/systemd/compose durations such as 45s, 1m30s, 500ms, 3h."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text.strip())
    assert parts and "".join(f"{n}{u}" for n, u in parts) == text.strip(), f"unreadable duration {text!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def gunicorn_settings() -> dict:
    """graceful_timeout and timeout as the shipped gunicorn.conf.py sets them (read in a clean environment)."""
    code = ("import json, runpy; s = runpy.run_path('gunicorn.conf.py'); "
            "print(json.dumps({k: s[k] for k in ('graceful_timeout', 'timeout')}))")
    finished = run([PYTHON, "-c", code], env=relay_environ())
    assert finished.returncode == 0, finished.stderr
    return json.loads(finished.stdout)


def clean_copy(destination: Path) -> Path:
    """The working tree as a fresh clone has it: no .env, no venv, no caches, no .git."""
    ignore = shutil.ignore_patterns(".git", ".venv", ".env", "__pycache__", ".pytest_cache", ".benchmarks")
    shutil.copytree(REPO, destination, ignore=ignore)
    return destination


def example_alerts() -> list[tuple[dict[str, str], str]]:
    """(labels, intended receiver) for each shipped rule, the heartbeats and alerts without or with an unknown
    severity."""
    cases = []
    for group in load_yaml(ALERTING_RULES)["groups"]:
        for rule in group["rules"]:
            labels = {"alertname": rule["alert"], **rule.get("labels", {})}
            if rule["alert"].startswith("RocketChatWebhook"):
                cases.append((labels, RELAY_ALERTS_RECEIVER))
            else:
                cases.append((labels, SEVERITY_RECEIVER[labels["severity"]]))
    cases += [
        ({"alertname": "Watchdog", "severity": "none"}, NULL_RECEIVER),
        ({"alertname": "InfoInhibitor", "severity": "none"}, NULL_RECEIVER),
        ({"alertname": "SomethingWithoutSeverity"}, DEFAULT_RECEIVER),
        ({"alertname": "SomethingOdd", "severity": "p5"}, DEFAULT_RECEIVER),
        ({"alertname": "InfoExample", "severity": "info"}, SEVERITY_RECEIVER["info"]),
        # The relay's alerts leave by the second receiver whatever their severity says.
        ({"alertname": "RocketChatWebhookSomething", "severity": "warning", **RELAY_COMPONENT}, RELAY_ALERTS_RECEIVER),
    ]
    return cases


# -- alertmanager.yml --
@pytest.fixture(scope="module")
def amtool() -> str:
    return require_programs("amtool")["amtool"]


def test_alertmanager_config_passes_amtool_check_config(amtool):
    finished = run([amtool, "check-config", ALERTMANAGER_CONFIG])
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "SUCCESS" in finished.stdout


@pytest.mark.parametrize(("labels", "receiver"), [
    pytest.param(labels, receiver, id=f"{labels['alertname']}-{labels.get('severity', 'no-severity')}")
    for labels, receiver in example_alerts()
])
def test_alertmanager_routes_each_example_alert_to_its_receiver(amtool, labels, receiver):
    finished = run([
        amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}", f"--verify.receivers={receiver}",
        *(f"{name}={value}" for name, value in labels.items()),
    ])
    assert finished.returncode == 0, f"{labels} went to {finished.stdout.strip()!r}, not {receiver!r}"


def test_alertmanager_routes_keep_the_seed_timings_per_severity():
    routes = load_yaml(ALERTMANAGER_CONFIG)["route"]["routes"]
    by_matcher = {tuple(route["matchers"]): route for route in routes}
    for severity, (group_wait, repeat_interval) in SEVERITY_TIMINGS.items():
        route = by_matcher[(f'severity="{severity}"',)]
        assert (route["receiver"], route["group_wait"], route["repeat_interval"]) == (
            SEVERITY_RECEIVER[severity], group_wait, repeat_interval
        )


def test_every_relay_receiver_posts_to_webhook_with_resolved_a_bounded_group_and_a_token_file():
    receivers = {receiver["name"]: receiver for receiver in load_yaml(ALERTMANAGER_CONFIG)["receivers"]}
    relay_receivers = [DEFAULT_RECEIVER, *SEVERITY_RECEIVER.values()]
    assert set(receivers) == {*relay_receivers, NULL_RECEIVER, RELAY_ALERTS_RECEIVER}
    for name in relay_receivers:
        (webhook,) = receivers[name]["webhook_configs"]
        assert re.fullmatch(r"http://[^/]+:8093/webhook", webhook["url"]), webhook["url"]
        assert webhook["send_resolved"] is True
        assert 0 < webhook["max_alerts"] * LARGE_ALERT_BYTES <= DEFAULT_MAX_BODY_BYTES
        authorization = webhook["http_config"]["authorization"]
        assert authorization["type"] == "Bearer" and authorization["credentials_file"].startswith("/")
        assert "credentials" not in authorization, "the token belongs in a file, not in alertmanager.yml"
    assert set(receivers[NULL_RECEIVER]) == {"name"}, "the null receiver sends nothing"
    # A relay that is down cannot announce itself through itself.
    assert "webhook_configs" not in receivers[RELAY_ALERTS_RECEIVER]
    assert set(receivers[RELAY_ALERTS_RECEIVER]) - {"name"}, "the relay's alerts need a way out"


# -- prometheus.yml and alerting-rules.yml --
@pytest.fixture(scope="module")
def promtool() -> str:
    return require_programs("promtool")["promtool"]


def test_prometheus_config_passes_promtool_check_config(promtool):
    finished = run([promtool, "check", "config", PROMETHEUS_CONFIG])
    assert finished.returncode == 0, finished.stdout + finished.stderr


def test_alerting_rules_pass_promtool_check_rules(promtool):
    finished = run([promtool, "check", "rules", ALERTING_RULES])
    assert finished.returncode == 0, finished.stdout + finished.stderr


def test_alerting_rules_fire_on_their_condition_and_stay_silent_otherwise(promtool):
    """promtool's rule unit tests; each shipped rule is shown firing and silent there, so none fires always."""
    finished = run([promtool, "test", "rules", RULE_TESTS])
    assert finished.returncode == 0, finished.stdout + finished.stderr

    shipped = {rule["alert"] for group in load_yaml(ALERTING_RULES)["groups"] for rule in group["rules"]}
    checks = [check for case in load_yaml(RULE_TESTS)["tests"] for check in case["alert_rule_test"]]
    shown_firing = {check["alertname"] for check in checks if check["exp_alerts"]}
    shown_silent = {check["alertname"] for check in checks if not check["exp_alerts"]}
    assert shown_firing == shipped and shown_silent == shipped


def test_alerting_rules_carry_the_labels_alertmanager_routes_by():
    rules = {rule["alert"]: rule for group in load_yaml(ALERTING_RULES)["groups"] for rule in group["rules"]}
    assert {name: rules[name]["labels"]["severity"] for name in ("HighCPUUsage", "HighMemoryUsage", "DiskFull")} == {
        "HighCPUUsage": "critical", "HighMemoryUsage": "warning", "DiskFull": "critical"
    }
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in SEVERITY_RECEIVER, name
        is_relay_rule = rule["labels"].get("component") == RELAY_COMPONENT["component"]
        assert is_relay_rule == name.startswith("RocketChatWebhook"), name
        assert rule["annotations"]["summary"], name


def test_prometheus_loads_the_rules_sends_to_alertmanager_and_scrapes_the_relay():
    config = load_yaml(PROMETHEUS_CONFIG)
    assert config["rule_files"] == [ALERTING_RULES.name]
    targets = [target for manager in config["alerting"]["alertmanagers"]
               for static in manager["static_configs"] for target in static["targets"]]
    assert targets == ["alertmanager:9093"]
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "rocketchat-webhook"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [{"targets": [f"rocketchat-webhook:{DEFAULT_PORT}"]}]


# -- Dockerfile and .dockerignore --
def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    instructions = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, arguments = line.strip().partition(" ")
            instructions.append((keyword.upper(), " ".join(arguments.split())))
    return instructions


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list), f"use the exec form (a JSON list): {arguments}"
    return value


def dockerfile_env() -> dict[str, str]:
    environ = {}
    for keyword, arguments in dockerfile_instructions():
        if keyword == "ENV":
            environ.update(dict(pair.split("=", 1) for pair in shlex.split(arguments)))
    return environ


def test_dockerfile_builds_a_slim_non_root_image_with_a_dependency_layer_and_a_curl_free_healthcheck():
    instructions = dockerfile_instructions()
    keywords = [keyword for keyword, _ in instructions]
    arguments = dict(reversed(instructions))  # the first occurrence of each instruction

    assert re.fullmatch(r"python:[\d.]+-slim(-\w+)?", arguments["FROM"]), arguments["FROM"]
    # Dependencies in their own layer: requirements.txt alone, installed, before any code is copied.
    copies = [value for keyword, value in instructions if keyword == "COPY"]
    assert copies[0].split()[:-1] == ["requirements.txt"]
    install = keywords.index("RUN", keywords.index("COPY"))
    assert "pip install" in instructions[install][1] and "-r requirements.txt" in instructions[install][1]
    assert keywords.index("COPY") < install < keywords.index("COPY", install)
    # The user that runs the command is not root.
    user = [value for keyword, value in instructions if keyword == "USER"][-1]
    assert user.split(":")[0] not in ("root", "0") and keywords.index("USER") < keywords.index("CMD")
    assert arguments["EXPOSE"] == str(DEFAULT_PORT) and dockerfile_env()["PORT"] == str(DEFAULT_PORT)
    assert exec_form(arguments["CMD"]) == ["gunicorn", "-c", "gunicorn.conf.py", "rocketchat_webhook:app"]
    healthcheck = arguments["HEALTHCHECK"]
    assert not re.search(r"\b(curl|wget)\b", healthcheck), "slim images have neither curl nor wget"


@pytest.fixture(scope="module")
def build_context(tmp_path_factory) -> tuple[Path, list[str]]:
    """A developer's checkout (a .env holding a secret, a venv, bytecode caches) and the files docker-compose would
    send from it as the build context, computed by the docker library docker-compose builds with, reading
    .dockerignore as it does."""
    compose = require_programs("docker-compose")["docker-compose"]
    first_line = Path(compose).read_bytes().split(b"\n", 1)[0].decode("utf-8", errors="replace")
    if not first_line.startswith("#!"):
        skip_or_fail(f"{compose} is not Debian's Python docker-compose 1.x, whose build library computes the context")
    interpreter = first_line.removeprefix("#!")
    root = clean_copy(tmp_path_factory.mktemp("context") / "repo")
    (root / ".env").write_text("WEBHOOK_TOKEN=secret-that-must-stay-out\n", encoding="utf-8")
    for leftover in (".venv/pyvenv.cfg", "rcwebhook/__pycache__/app.cpython-311.pyc"):
        (root / leftover).parent.mkdir(parents=True, exist_ok=True)
        (root / leftover).write_bytes(b"")
    listing = (
        "import json, os, sys, tarfile\n"
        "from docker.utils.build import tar\n"
        "root = sys.argv[1]\n"
        "with open(os.path.join(root, '.dockerignore')) as f:\n"
        "    exclude = [l.strip() for l in f.read().splitlines() if l.strip() and l.strip()[0] != '#']\n"
        "members = tarfile.open(fileobj=tar(root, exclude=exclude)).getmembers()\n"
        "print(json.dumps(sorted(m.name for m in members if m.isfile())))\n"
    )
    finished = run([*shlex.split(interpreter), "-c", listing, root])
    assert finished.returncode == 0, finished.stderr
    return root, json.loads(finished.stdout)


def copied_sources() -> list[str]:
    sources = []
    for keyword, arguments in dockerfile_instructions():
        if keyword == "COPY":
            sources.extend(arguments.split()[:-1])
    return sources


def test_build_context_holds_what_the_dockerfile_copies_and_no_secret(build_context):
    _root, files = build_context
    for source in copied_sources():
        source = source.rstrip("/")
        assert any(name == source or name.startswith(f"{source}/") for name in files), f"{source} not in the context"
    assert ".env" not in files
    assert not [name for name in files if name.startswith(("tests/", ".git/", ".venv/")) or "__pycache__" in name]


def image_files(context_root: Path, context_files: list[str], destination: Path) -> Path:
    """Lay out under destination what the Dockerfile's COPY instructions put in the image; returns the WORKDIR there."""
    workdir = "/"
    for keyword, arguments in dockerfile_instructions():
        if keyword == "WORKDIR":
            workdir = str(Path(workdir, arguments))
        elif keyword == "COPY":
            *sources, target = arguments.split()
            target_path = Path(workdir, target)
            for source in sources:
                source = source.rstrip("/")
                if source in context_files:  # a file: into the target directory, or as the target
                    placed = {source: target_path / Path(source).name if target.endswith("/") else target_path}
                else:  # a directory: its contents into the target
                    placed = {name: target_path / Path(name).relative_to(source)
                              for name in context_files if name.startswith(f"{source}/")}
                for name, path in placed.items():
                    copy = destination / path.relative_to("/")
                    copy.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(context_root / name, copy)
    return destination / Path(workdir).relative_to("/")


@pytest.mark.slow
def test_image_command_serves_and_its_healthcheck_follows_the_relay(build_context, tmp_path):
    """The image's files only (as the build context holds them), its ENV, CMD and HEALTHCHECK command: the relay
    starts, and the health check says healthy, then unhealthy once the relay is gone."""
    image_root = tmp_path / "image"
    workdir = image_files(*build_context, image_root)
    instructions = dict(reversed(dockerfile_instructions()))
    command = exec_form(instructions["CMD"])
    healthcheck = exec_form(instructions["HEALTHCHECK"].split(" CMD ", 1)[1])
    # The image's python and gunicorn are this venv's; paths inside the image are under image_root here.
    programs = {"python": [PYTHON], "gunicorn": [PYTHON, "-m", "gunicorn"]}
    in_image = [str(image_root / arg.lstrip("/")) if arg.startswith("/") else arg for arg in healthcheck[1:]]
    health_argv = [*programs[healthcheck[0]], *in_image]
    port = free_port()
    environ = relay_environ({
        **dockerfile_env(), "HOST": "127.0.0.1", "PORT": str(port),
        "ROCKETCHAT_WEBHOOK_DEFAULT": "http://127.0.0.1:9/hooks/id/default-token",
    })

    process = ManagedProcess([*programs[command[0]], *command[1:]], env=environ, cwd=workdir, output_dir=tmp_path,
                             name="image-relay")
    relay = Relay(process, port, process.stderr_path)
    try:
        relay.wait_healthy()
        healthy = run_to_exit(health_argv, env=environ, cwd=workdir, output_dir=tmp_path, name="healthcheck",
                              timeout_seconds=10)
        assert healthy.returncode == 0, healthy.stderr
    finally:
        relay.stop()
    unhealthy = run_to_exit(health_argv, env=environ, cwd=workdir, output_dir=tmp_path, name="healthcheck-down",
                            timeout_seconds=10)
    assert unhealthy.returncode == 1 and "unhealthy" in unhealthy.stderr


# -- docker-compose.yml --
@pytest.fixture(scope="module")
def compose_config(tmp_path_factory) -> tuple[Path, dict, str]:
    """`docker-compose config` on a clean copy of the repository, where no .env exists yet."""
    compose = require_programs("docker-compose")["docker-compose"]
    root = clean_copy(tmp_path_factory.mktemp("compose") / "repo")
    environ = {name: value for name, value in os.environ.items() if not name.startswith(("COMPOSE_", "DOCKER_"))}
    finished = run([compose, "config"], cwd=root, env=environ)
    assert finished.returncode == 0, finished.stderr
    return root, yaml.safe_load(finished.stdout), finished.stderr


def test_compose_file_is_valid_on_a_clean_clone_without_warnings(compose_config):
    _root, config, stderr = compose_config
    assert not stderr.strip(), f"docker-compose config warned: {stderr}"
    assert set(config["services"]) == {"prometheus", "alertmanager", "rocketchat-webhook", "mock-rocketchat"}


def volume_map(service: dict) -> dict[str, str]:
    """container path -> host path of a service's bind mounts."""
    mapping = {}
    for volume in service.get("volumes", ()):
        if isinstance(volume, dict):  # the long form, as Compose v2 prints it
            mapping[volume["target"]] = volume["source"]
        else:
            source, target = volume.split(":")[:2]
            mapping[target] = source
    return mapping


def flag(service: dict, name: str) -> str:
    (value,) = [arg.split("=", 1)[1] for arg in service["command"] if arg.startswith(f"{name}=")]
    return value


def test_compose_wires_the_shipped_configs_together(compose_config):
    root, config, _stderr = compose_config
    services = config["services"]
    relay, manager, prometheus, mock = (services[name] for name in
                                        ("rocketchat-webhook", "alertmanager", "prometheus", "mock-rocketchat"))

    # The relay is built from the Dockerfile at the root and stops more slowly than it drains.
    assert Path(relay["build"]["context"]) == root and relay["build"].get("dockerfile", "Dockerfile") == "Dockerfile"
    grace = duration_seconds(relay["stop_grace_period"])
    assert grace > gunicorn_settings()["graceful_timeout"] > DEFAULT_DELIVERY_DEADLINE_SECONDS

    # Alertmanager runs the shipped alertmanager.yml, alone (no cluster port), and reaches the relay by its name.
    manager_volumes = volume_map(manager)
    assert Path(manager_volumes[flag(manager, "--config.file")]) == root / "alertmanager.yml"
    assert flag(manager, "--cluster.listen-address") == ""
    am_config = load_yaml(root / "alertmanager.yml")
    webhooks = [webhook for receiver in am_config["receivers"] for webhook in receiver.get("webhook_configs") or ()]
    assert {webhook["url"] for webhook in webhooks} == {f"http://rocketchat-webhook:{DEFAULT_PORT}/webhook"}
    # The token Alertmanager sends is the file the relay checks.
    (token_path,) = {webhook["http_config"]["authorization"]["credentials_file"] for webhook in webhooks}
    relay_token_path = relay["environment"]["WEBHOOK_TOKEN_FILE"]
    assert manager_volumes[token_path] == volume_map(relay)[relay_token_path]
    assert Path(manager_volumes[token_path]).read_text(encoding="utf-8").strip()

    # Prometheus runs the shipped prometheus.yml with the rules beside it, as its rule_files names them.
    prometheus_volumes = volume_map(prometheus)
    config_path = flag(prometheus, "--config.file")
    assert Path(prometheus_volumes[config_path]) == root / "prometheus.yml"
    for rule_file in load_yaml(root / "prometheus.yml")["rule_files"]:
        assert Path(prometheus_volumes[str(Path(config_path).parent / rule_file)]) == root / rule_file

    # The relay posts to the mock's hooks, on the port the mock listens on, with the mock_server.py of the repository.
    mock_port = mock["command"][mock["command"].index("--port") + 1]
    for severity in ("CRITICAL", "WARNING", "INFO"):
        url = relay["environment"][f"ROCKETCHAT_WEBHOOK_{severity}"]
        assert url.startswith(f"http://mock-rocketchat:{mock_port}/hooks/"), url
    assert root / "mock_server.py" in {Path(source) for source in volume_map(mock).values()}


# -- deploy/rocketchat-webhook.service --
def unit_settings() -> dict[str, list[str]]:
    """Each key of the unit's [Service] section with its values in order (systemd allows a key several times)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in SYSTEMD_UNIT.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    return require_programs("systemd-analyze")["systemd-analyze"]


@pytest.fixture(scope="module")
def unit_root(tmp_path_factory, systemd_analyze) -> Path:
    """A temporary root holding what the unit names: the standard units, the venv's gunicorn, the settings file."""
    root = tmp_path_factory.mktemp("systemd-root")
    units = next(path for path in (Path("/lib/systemd/system"), Path("/usr/lib/systemd/system")) if path.is_dir())
    shutil.copytree(units, root / "lib" / "systemd" / "system", symlinks=True)
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    settings = unit_settings()
    for path in (settings["ExecStart"][0].split()[0], settings["ExecReload"][0].split()[0]):
        executable = root / path.lstrip("/")
        executable.parent.mkdir(parents=True, exist_ok=True)
        executable.write_text("#!/bin/sh\n", encoding="utf-8")
        executable.chmod(0o755)
    for path in settings["EnvironmentFile"]:
        settings_file = root / path.lstrip("-/")
        settings_file.parent.mkdir(parents=True)
        settings_file.write_text("ROCKETCHAT_WEBHOOK_DEFAULT=https://chat.example.com/hooks/ID/TOKEN\n")
    return root


def verify_unit(systemd_analyze: str, root: Path, unit_text: str) -> subprocess.CompletedProcess:
    (root / "etc" / "systemd" / "system" / SYSTEMD_UNIT.name).write_text(unit_text, encoding="utf-8")
    return run([systemd_analyze, "verify", f"--root={root}", SYSTEMD_UNIT.name])


def test_systemd_unit_passes_systemd_analyze_verify_without_a_warning(systemd_analyze, unit_root):
    finished = verify_unit(systemd_analyze, unit_root, SYSTEMD_UNIT.read_text(encoding="utf-8"))
    assert finished.returncode == 0 and not (finished.stdout + finished.stderr).strip(), finished.stderr

    # The check is not blind: a misspelt key and a bad value are reported.
    broken = SYSTEMD_UNIT.read_text(encoding="utf-8").replace("RestartPreventExitStatus=2", "RestartPrevent=two")
    assert "Unknown key" in verify_unit(systemd_analyze, unit_root, broken).stderr


def test_systemd_unit_is_hardened_by_systemd_analyze_security(systemd_analyze, unit_root):
    verify_unit(systemd_analyze, unit_root, SYSTEMD_UNIT.read_text(encoding="utf-8"))
    # --threshold counts in tenths of the exposure it prints: 19 fails anything above 1.9 of 10 ("OK" or better).
    finished = run([systemd_analyze, "security", "--offline=true", f"--root={unit_root}", "--threshold=19",
                    SYSTEMD_UNIT.name])
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr


def test_systemd_unit_runs_gunicorn_from_a_venv_restarts_on_crashes_only_and_outlasts_the_drain():
    settings = unit_settings()
    (exec_start,) = settings["ExecStart"]
    program, *arguments = exec_start.split()
    assert program.endswith("/.venv/bin/gunicorn")
    assert arguments[0] == "-c" and arguments[1].endswith("/gunicorn.conf.py") and arguments[2:] == [
        "rocketchat_webhook:app"
    ]
    assert settings["EnvironmentFile"] and settings["User"][0] not in ("root", "0")
    assert settings["Restart"] == ["on-failure"]
    assert str(CONFIG_ERROR_EXIT_STATUS) in settings["RestartPreventExitStatus"][0].split()
    assert duration_seconds(settings["TimeoutStopSec"][0]) > gunicorn_settings()["graceful_timeout"]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                       "ProtectHome": "yes"}.items():
        assert settings[key] == [value], key
    assert settings["LogsDirectory"] == ["rocketchat-webhook"]
