"""The files for several replicas on Redis (issue 12), each checked by the real tool that reads it, as
tests/test_deploy_files.py does for the single relay: docker-compose for docker-compose.ha.yml, amtool and promtool
for its Alertmanager and Prometheus configurations, redis-server for its Redis settings, kubernetes-validate --strict
(offline, against the Kubernetes API schemas the PyPI package ships) for every manifest of deploy/kubernetes/, and
the relay's own configuration loader for the settings both give the relays.

A missing tool skips its tests with the command that installs it (`make test` installs them as root); under
REQUIRE_E2E=1 (CI) that skip is a failure. kubectl, which Debian does not package, only adds a check of the
kustomization's build: without it that one test skips, whatever REQUIRE_E2E says.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import pytest
import yaml

from rcwebhook.config import DEFAULT_DELIVERY_DEADLINE_SECONDS, DEFAULT_PORT, load_config
from rcwebhook.settings import SETTINGS
from tests.e2e.tools import require_programs, skip_or_fail
from tests.helpers import PYTHON, REPO, free_port, relay_environ, wait_until
from tests.redis_server import redis_server_program
from tests.test_deploy_files import (
    clean_copy, dockerfile_instructions, duration_seconds, example_alerts, exec_form, flag, gunicorn_settings,
    load_yaml, run, volume_map,
)

HA_COMPOSE_FILE = REPO / "docker-compose.ha.yml"
HA_ALERTMANAGER_CONFIG = REPO / "deploy" / "compose" / "alertmanager-ha.yml"
KUBERNETES = REPO / "deploy" / "kubernetes"
KUSTOMIZATION = KUBERNETES / "kustomization.yaml"
SECRET_EXAMPLE = KUBERNETES / "secret.example.yaml"
# The oldest Kubernetes the manifests are meant for, and the newest kubernetes-validate 1.37.0 ships schemas of.
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")

RELAYS = ("rocketchat-webhook-1", "rocketchat-webhook-2")
ALERTMANAGERS = ("alertmanager-1", "alertmanager-2")
RELAY_LABELS = {"app.kubernetes.io/name": "rocketchat-webhook", "app.kubernetes.io/component": "relay"}
REDIS_LABELS = {"app.kubernetes.io/name": "rocketchat-webhook", "app.kubernetes.io/component": "redis"}
# The relay's resident memory on Redis, master plus worker under gunicorn.conf.py (VmRSS from /proc/<pid>/status,
# MiB), as deployment.yaml's comment gives it: after a storm of 4,000 requests, and the worst case measured
# (100,000 alerts in bodies of 200, 64 requests at once).
MEASURED_STORM_RSS_MIB = 103
MEASURED_WORST_RSS_MIB = 504
# A 7.x Redis pinned to a patch release, not a floating tag.
REDIS_IMAGE = re.compile(r"redis:7\.\d+\.\d+(-[a-z0-9.]+)?")
FILE_SETTINGS = {setting.name for setting in SETTINGS if setting.file}
SETTING_NAMES = {setting.name for setting in SETTINGS}


def option(arguments: list[str], name: str) -> str:
    """The value after `name` in a redis-server command line."""
    assert arguments.count(name) == 1, f"{name} given {arguments.count(name)} times in {arguments}"
    return arguments[arguments.index(name) + 1]


def requirepass(conf_text: str) -> str:
    (password,) = re.findall(r"^requirepass (\S+)$", conf_text, flags=re.MULTILINE)
    return password


def redis_url_password(url: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(url).password or "")


def gunicorn_workers(workers_setting: str) -> int:
    """The worker processes gunicorn.conf.py asks gunicorn for with this WORKERS."""
    code = "import runpy; print(runpy.run_path('gunicorn.conf.py')['workers'])"
    finished = run([PYTHON, "-c", code], env=relay_environ({"WORKERS": workers_setting}))
    assert finished.returncode == 0, finished.stderr
    return int(finished.stdout)


def assert_the_relay_accepts(environ: dict[str, str]) -> None:
    """The relay's own loader takes these settings (exit 2 otherwise): state shared in Redis, every hook set."""
    unknown = {name.removesuffix("_FILE") for name in environ} - SETTING_NAMES
    assert not unknown, f"settings the relay does not know (ignored without a word): {sorted(unknown)}"
    for name in environ:
        if name.endswith("_FILE"):
            assert name.removesuffix("_FILE") in FILE_SETTINGS, f"{name}: that setting cannot come from a file"
    config = load_config(environ)
    assert config.state_is_shared, "the replicas would not share their state"
    assert config.webhook_token, "POST /webhook would need no token"
    # Each severity has a channel of its own.
    assert len({config.routes[severity].url for severity in ("critical", "warning", "info")}) == 3


class StartedRedis:
    """Debian's redis-server run with a deployment's own arguments (its files mapped to the checkout), on a free
    loopback port in a temporary directory."""

    def __init__(self, arguments: list[str], directory: Path):
        program = redis_server_program()
        self.port = free_port()
        assert arguments[0] == "redis-server"
        # Its own --dir if it names one (the image's working directory, /data, otherwise).
        own_directory = () if "--dir" in arguments else ("--dir", str(directory))
        self.process = subprocess.Popen(
            [program, *arguments[1:], "--port", str(self.port), "--bind", "127.0.0.1", *own_directory,
             "--daemonize", "no", "--logfile", ""],
            cwd=directory, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )

    def cli(self, *arguments: str, password: str | None) -> subprocess.CompletedProcess:
        environ = {**os.environ, "REDISCLI_AUTH": password} if password else {
            name: value for name, value in os.environ.items() if name != "REDISCLI_AUTH"}
        return run([shutil.which("redis-cli"), "-p", self.port, *arguments], env=environ)

    def wait_ready(self, password: str) -> None:
        def answers() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"redis-server exited {self.process.returncode}:\n{self.process.stdout.read()}")
            return self.cli("ping", password=password).stdout.strip() == "PONG"
        wait_until(answers, 15, "redis-server to answer PING")

    def config_get(self, name: str, password: str) -> str:
        lines = self.cli("config", "get", name, password=password).stdout.splitlines()
        assert lines[0] == name, lines
        return lines[1] if len(lines) > 1 else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def assert_redis_runs_as_deployed(arguments: list[str], password: str, directory: Path) -> StartedRedis:
    """Start redis-server with these arguments; it refuses anyone without the password and never evicts."""
    redis = StartedRedis(arguments, directory)
    try:
        redis.wait_ready(password)
        assert redis.config_get("maxmemory-policy", password) == "noeviction"
        assert int(redis.config_get("maxmemory", password)) > 0, "noeviction matters only with a memory limit"
        assert redis.config_get("appendonly", password) == "yes"
        assert redis.config_get("appendfsync", password) == "everysec"
        refused = redis.cli("ping", password=None)
        assert "NOAUTH" in refused.stdout + refused.stderr, "Redis answers without its password"
    except BaseException:
        redis.stop()
        raise
    return redis


# -- docker-compose.ha.yml --
@pytest.fixture(scope="module")
def ha_config(tmp_path_factory) -> tuple[Path, dict, str]:
    """`docker-compose -f docker-compose.ha.yml config` on a clean copy of the repository, where no .env exists."""
    compose = require_programs("docker-compose")["docker-compose"]
    root = clean_copy(tmp_path_factory.mktemp("compose-ha") / "repo")
    environ = {name: value for name, value in os.environ.items() if not name.startswith(("COMPOSE_", "DOCKER_"))}
    finished = run([compose, "-f", HA_COMPOSE_FILE.name, "config"], cwd=root, env=environ)
    assert finished.returncode == 0, finished.stderr
    return root, yaml.safe_load(finished.stdout), finished.stderr


def container_environ(service: dict) -> dict[str, str]:
    """A service's environment with each path into one of its bind mounts replaced by the host file."""
    mounts = volume_map(service)
    return {name: mounts.get(value, value) for name, value in service["environment"].items()}


def test_ha_compose_file_is_valid_on_a_clean_clone_without_warnings(ha_config):
    _root, config, stderr = ha_config
    assert not stderr.strip(), f"docker-compose config warned: {stderr}"
    assert set(config["services"]) == {*RELAYS, "redis", *ALERTMANAGERS, "prometheus", "mock-rocketchat"}


def test_ha_compose_runs_two_relays_from_the_dockerfile_sharing_redis_through_a_secret_file(ha_config):
    root, config, _stderr = ha_config
    services = config["services"]
    relays = [services[name] for name in RELAYS]
    graceful_timeout = gunicorn_settings()["graceful_timeout"]
    image_healthcheck = exec_form(dict(reversed(dockerfile_instructions()))["HEALTHCHECK"].split(" CMD ", 1)[1])
    mock_port = services["mock-rocketchat"]["command"][services["mock-rocketchat"]["command"].index("--port") + 1]

    for relay in relays:
        assert Path(relay["build"]["context"]) == root
        assert relay["build"].get("dockerfile", "Dockerfile") == "Dockerfile"
        environment = relay["environment"]
        # The Redis password is in a mounted file, never in the environment.
        assert "STATE_URL" not in environment
        state_url_file = Path(volume_map(relay)[environment["STATE_URL_FILE"]])
        assert state_url_file == root / "deploy" / "compose" / "state-url"
        # The relay's own loader accepts what the container gets; the URL names the redis service.
        assert_the_relay_accepts(container_environ(relay))
        state_url = urllib.parse.urlsplit(state_url_file.read_text(encoding="utf-8").strip())
        assert (state_url.scheme, state_url.hostname) == ("redis", "redis")
        for severity in ("CRITICAL", "WARNING", "INFO"):
            assert environment[f"ROCKETCHAT_WEBHOOK_{severity}"].startswith(f"http://mock-rocketchat:{mock_port}/")
        # It stops more slowly than it drains, and its health check is the image's own.
        assert duration_seconds(relay["stop_grace_period"]) > graceful_timeout > DEFAULT_DELIVERY_DEADLINE_SECONDS
        assert relay["healthcheck"]["test"] == ["CMD", *image_healthcheck]
        assert relay["depends_on"]["redis"]["condition"] == "service_healthy"

    # The same relay twice, on two host ports; together they are the processes EXPECTED_PROCESSES counts.
    first, second = relays
    assert first["environment"] == second["environment"] and volume_map(first) == volume_map(second)
    published = [port["published"] if isinstance(port, dict) else port.split(":")[1]
                 for relay in relays for port in relay["ports"]]
    assert len(set(published)) == 2
    workers = gunicorn_workers(first["environment"]["WORKERS"])
    assert int(first["environment"]["EXPECTED_PROCESSES"]) == len(relays) * workers


def test_ha_compose_redis_refuses_rather_than_evicts_and_takes_the_relays_password(ha_config, tmp_path):
    root, config, _stderr = ha_config
    redis = config["services"]["redis"]
    assert REDIS_IMAGE.fullmatch(redis["image"]), redis["image"]
    assert "ports" not in redis, "Redis must not be published on the host"
    arguments = [str(argument) for argument in redis["command"]]
    assert option(arguments, "--maxmemory-policy") == "noeviction"
    # The password is in a mounted configuration file, not on the command line; it is the one in STATE_URL.
    mounts = volume_map(redis)
    conf_file = arguments[1]
    assert conf_file in mounts and "--requirepass" not in arguments
    password = requirepass(Path(mounts[conf_file]).read_text(encoding="utf-8"))
    relay = config["services"][RELAYS[0]]
    state_url = Path(volume_map(relay)[relay["environment"]["STATE_URL_FILE"]]).read_text(encoding="utf-8").strip()
    assert redis_url_password(state_url) == password
    assert urllib.parse.urlsplit(state_url).port == 6379

    # Debian's redis-server runs the service's command as written, and the service's health check follows it.
    started = assert_redis_runs_as_deployed(
        [mounts.get(argument, argument) for argument in arguments], password, tmp_path)
    kind, check = redis["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    # As the container runs it: compose's $$ is a $, the file is the checkout's, redis-cli asks this server's port.
    check = check.replace("$$", "$").replace(conf_file, mounts[conf_file]).replace(
        "redis-cli", f"redis-cli -p {started.port}")
    environ = {name: value for name, value in os.environ.items() if name != "REDISCLI_AUTH"}
    try:
        assert run(["sh", "-c", check], env=environ).returncode == 0, "healthy Redis reported unhealthy"
    finally:
        started.stop()
    assert run(["sh", "-c", check], env=environ).returncode != 0, "the health check passes with Redis gone"


def test_ha_alertmanagers_are_one_cluster_and_each_sends_every_notification_to_both_relays(ha_config):
    root, config, _stderr = ha_config
    services = config["services"]
    cluster_ports = set()
    for name in ALERTMANAGERS:
        manager = services[name]
        config_file = Path(volume_map(manager)[flag(manager, "--config.file")])
        assert config_file == root / HA_ALERTMANAGER_CONFIG.relative_to(REPO)
        listen = flag(manager, "--cluster.listen-address")
        assert listen, f"{name} does not listen for its peer"
        cluster_ports.add(listen.rsplit(":", 1)[1])
        (other,) = set(ALERTMANAGERS) - {name}
        peer_host, peer_port = flag(manager, "--cluster.peer").rsplit(":", 1)
        assert peer_host == other
        cluster_ports.add(peer_port)
    assert len(cluster_ports) == 1, f"the peers listen and call on different ports: {cluster_ports}"

    am_config = load_yaml(root / HA_ALERTMANAGER_CONFIG.relative_to(REPO))
    # Every receiver that reaches the relays names both, on the port the relays listen on.
    relay_urls = {f"http://{name}:{DEFAULT_PORT}/webhook" for name in RELAYS}
    relay_receivers = [receiver for receiver in am_config["receivers"] if receiver.get("webhook_configs")]
    assert relay_receivers
    relay = services[RELAYS[0]]
    relay_token_file = volume_map(relay)[relay["environment"]["WEBHOOK_TOKEN_FILE"]]
    for receiver in relay_receivers:
        urls = [webhook["url"] for webhook in receiver["webhook_configs"]]
        assert sorted(urls) == sorted(relay_urls), f"{receiver['name']} sends to {urls}"
        for webhook in receiver["webhook_configs"]:
            assert webhook["send_resolved"] is True
            token_path = webhook["http_config"]["authorization"]["credentials_file"]
            for manager in ALERTMANAGERS:
                assert volume_map(services[manager])[token_path] == relay_token_file, (
                    "Alertmanager sends another token than the relays check")
    # The routes are the shipped alertmanager.yml's: the HA pair pages as the single Alertmanager does.
    assert am_config["route"] == load_yaml(REPO / "alertmanager.yml")["route"]


@pytest.fixture(scope="module")
def amtool() -> str:
    return require_programs("amtool")["amtool"]


def test_ha_alertmanager_config_passes_amtool_and_routes_each_example_alert_as_the_shipped_one(amtool):
    finished = run([amtool, "check-config", HA_ALERTMANAGER_CONFIG])
    assert finished.returncode == 0 and "SUCCESS" in finished.stdout, finished.stdout + finished.stderr
    for labels, receiver in example_alerts():
        routed = run([amtool, "config", "routes", "test", f"--config.file={HA_ALERTMANAGER_CONFIG}",
                      f"--verify.receivers={receiver}", *(f"{name}={value}" for name, value in labels.items())])
        assert routed.returncode == 0, f"{labels} went to {routed.stdout.strip()!r}, not {receiver!r}"


def test_ha_prometheus_sends_to_both_alertmanagers_scrapes_both_relays_and_passes_promtool(ha_config, tmp_path):
    promtool = require_programs("promtool")["promtool"]
    _root, config, _stderr = ha_config
    prometheus = config["services"]["prometheus"]
    # The files as the container sees them, laid out under tmp_path: promtool reads the rule files beside it.
    for container_path, host_path in volume_map(prometheus).items():
        copy = tmp_path / container_path.lstrip("/")
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(host_path, copy)
    config_file = tmp_path / flag(prometheus, "--config.file").lstrip("/")
    finished = run([promtool, "check", "config", config_file])
    assert finished.returncode == 0, finished.stdout + finished.stderr

    prometheus_config = load_yaml(config_file)
    targets = {target for manager in prometheus_config["alerting"]["alertmanagers"]
               for static in manager["static_configs"] for target in static["targets"]}
    assert targets == {f"{name}:9093" for name in ALERTMANAGERS}
    (job,) = [job for job in prometheus_config["scrape_configs"] if job["job_name"] == "rocketchat-webhook"]
    assert {target for static in job["static_configs"] for target in static["targets"]} == {
        f"{name}:{DEFAULT_PORT}" for name in RELAYS}


# -- deploy/kubernetes/ --
def manifest_files() -> list[Path]:
    """Every Kubernetes object file of deploy/kubernetes/ (the kustomization is kustomize's, not the API's)."""
    return sorted(path for path in KUBERNETES.glob("*.yaml") if path != KUSTOMIZATION)


def manifests() -> list[dict]:
    return [document for path in manifest_files()
            for document in yaml.safe_load_all(path.read_text(encoding="utf-8")) if document]


def one(kind: str, name: str) -> dict:
    (found,) = [document for document in manifests()
                if document["kind"] == kind and document["metadata"]["name"] == name]
    return found


def relay_deployment() -> dict:
    return one("Deployment", "rocketchat-webhook")


def relay_container() -> dict:
    (container,) = relay_deployment()["spec"]["template"]["spec"]["containers"]
    return container


def redis_container() -> dict:
    (container,) = one("Deployment", "rocketchat-webhook-redis")["spec"]["template"]["spec"]["containers"]
    return container


def example_secret(name: str) -> dict[str, str]:
    (secret,) = [document for document in yaml.safe_load_all(SECRET_EXAMPLE.read_text(encoding="utf-8"))
                 if document and document["metadata"]["name"] == name]
    return secret["stringData"]


def env_of(container: dict) -> dict[str, str]:
    return {variable["name"]: variable["value"] for variable in container.get("env", ())}


def mebibytes(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi)?", quantity).groups()
    return float(number) * {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, None: 1 / 2 ** 20}[unit]


def named_port(container: dict, port) -> int:
    if isinstance(port, int):
        return port
    (number,) = [entry["containerPort"] for entry in container["ports"] if entry["name"] == port]
    return number


@pytest.fixture(scope="module")
def kubernetes_validate() -> list[str]:
    finished = run([PYTHON, "-m", "kubernetes_validate", "--version"])
    if finished.returncode != 0:
        skip_or_fail("needs kubernetes-validate: `.venv/bin/pip install -r requirements-dev.txt` (`make test` does)")
    return [PYTHON, "-m", "kubernetes_validate"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_kubernetes_manifest_passes_kubernetes_validate_strict(kubernetes_validate, version):
    files = manifest_files()
    finished = run([*kubernetes_validate, "--strict", "-k", version, *files])
    assert finished.returncode == 0, finished.stdout + finished.stderr
    # A kind or apiVersion it has no schema for is only a WARN (and exit 0): here it must have checked each one.
    lines = finished.stdout.splitlines()
    assert not [line for line in lines if not line.startswith("INFO ")], finished.stdout
    passed = [line for line in lines if " passed for resource " in line]
    assert len(passed) == len(manifests()) >= 10, finished.stdout


def test_kubernetes_validate_strict_rejects_a_misspelt_field(kubernetes_validate, tmp_path):
    """The check above is not blind: a misspelt probe (which the API server would drop) fails it."""
    broken = tmp_path / "deployment.yaml"
    broken.write_text((KUBERNETES / "deployment.yaml").read_text(encoding="utf-8").replace(
        "readinessProbe:", "readinesProbe:"), encoding="utf-8")
    finished = run([*kubernetes_validate, "--strict", "-k", KUBERNETES_VERSIONS[0], broken])
    assert finished.returncode == 1 and "readinesProbe" in finished.stdout, finished.stdout


def test_kustomization_applies_every_manifest_but_the_example_secret_in_one_namespace():
    kustomization = load_yaml(KUSTOMIZATION)
    listed = kustomization["resources"]
    assert sorted(listed) == sorted(path.name for path in manifest_files() if path != SECRET_EXAMPLE)
    # Placeholders must never reach a cluster by `kubectl apply -k`.
    assert SECRET_EXAMPLE.name not in listed
    (namespace,) = [document for document in manifests() if document["kind"] == "Namespace"]
    assert kustomization["namespace"] == namespace["metadata"]["name"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for document in manifests():
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == kustomization["namespace"], document["metadata"]["name"]
    # `images:` names the relay's image as the Deployment does, so it replaces it.
    (image,) = [entry for entry in kustomization["images"] if entry["name"] == relay_container()["image"]]
    assert image["newName"] and image["newTag"]


def test_kustomize_builds_the_manifests_with_the_image_to_run(kubernetes_validate, tmp_path):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (Debian does not package it): the kustomization's build is not checked")
    finished = run([kubectl, "kustomize", KUBERNETES])
    assert finished.returncode == 0, finished.stderr
    built = [document for document in yaml.safe_load_all(finished.stdout) if document]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in built) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in manifests() if d["kind"] != "Secret")
    image = load_yaml(KUSTOMIZATION)["images"][0]
    (deployment,) = [d for d in built if d["kind"] == "Deployment" and d["metadata"]["name"] == "rocketchat-webhook"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"{image['newName']}:{image['newTag']}"
    output = tmp_path / "built.yaml"
    output.write_text(finished.stdout, encoding="utf-8")
    validated = run([*kubernetes_validate, "--strict", "-k", KUBERNETES_VERSIONS[0], output])
    assert validated.returncode == 0 and "WARN" not in validated.stdout, validated.stdout


def test_relay_deployment_runs_two_replicas_spread_over_nodes_probed_on_ready_and_health():
    deployment = relay_deployment()
    spec = deployment["spec"]
    pod = spec["template"]
    assert spec["replicas"] == 2
    assert spec["selector"]["matchLabels"] == RELAY_LABELS and pod["metadata"]["labels"] == RELAY_LABELS
    # A rollout never takes one away before its replacement is ready.
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    (term,) = pod["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == RELAY_LABELS

    container = relay_container()
    assert [entry["containerPort"] for entry in container["ports"]] == [DEFAULT_PORT]
    for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/health"), ("startupProbe", "/health")):
        get = container[probe]["httpGet"]
        assert (get["path"], named_port(container, get["port"])) == (path, DEFAULT_PORT), probe
    # The image's own command (gunicorn with gunicorn.conf.py) runs: neither is overridden.
    assert "command" not in container and "args" not in container


def test_relay_pods_are_given_longer_to_stop_than_they_take_to_drain():
    pod = relay_deployment()["spec"]["template"]["spec"]
    pre_stop = relay_container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    graceful_timeout = gunicorn_settings()["graceful_timeout"]
    assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + graceful_timeout
    assert graceful_timeout > DEFAULT_DELIVERY_DEADLINE_SECONDS


def test_relay_runs_as_the_image_user_on_a_read_only_root_with_only_tmp_writable():
    pod = relay_deployment()["spec"]["template"]["spec"]
    (user,) = [value for keyword, value in dockerfile_instructions() if keyword == "USER"]
    uid, gid = (int(part) for part in user.split(":"))
    context = pod["securityContext"]
    assert (context["runAsNonRoot"], context["runAsUser"], context["runAsGroup"]) == (True, uid, gid)
    assert context["seccompProfile"]["type"] == "RuntimeDefault"
    container = relay_container()
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    # gunicorn's heartbeat file needs a writable temporary directory; nothing else is written.
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    writable = [mount for mount in container["volumeMounts"] if not mount.get("readOnly")]
    assert [(mount["mountPath"], "emptyDir" in volumes[mount["name"]]) for mount in writable] == [("/tmp", True)]
    assert pod["automountServiceAccountToken"] is False


def test_relay_secrets_are_mounted_files_that_the_relay_accepts(tmp_path):
    pod = relay_deployment()["spec"]["template"]["spec"]
    container = relay_container()
    # No secret in the environment: no valueFrom, no envFrom.
    assert "envFrom" not in container and all("valueFrom" not in variable for variable in container["env"])
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    (secret_mount,) = [mount for mount in container["volumeMounts"] if "secret" in volumes[mount["name"]]]
    secret_volume = volumes[secret_mount["name"]]["secret"]
    assert secret_mount["readOnly"] is True and secret_volume["defaultMode"] == 0o440
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"], "uid 10001 cannot read them"

    # Each *_FILE names a key of the Secret; the example's values are placeholders, clearly not real.
    keys = example_secret(secret_volume["secretName"])
    assert all("PLACEHOLDER" in value for value in keys.values()), keys
    environ = env_of(container)
    mount_path = secret_mount["mountPath"].rstrip("/")
    files = {name: value for name, value in environ.items() if name.endswith("_FILE")}
    assert {"STATE_URL_FILE", "WEBHOOK_TOKEN_FILE"} <= set(files)
    for name, path in files.items():
        directory, _, key = path.rpartition("/")
        assert directory == mount_path and key in keys, f"{name}={path} is not a key of the Secret"
    # The relay's own loader accepts the pod's settings with the example's files in place of the Secret's.
    for key, value in keys.items():
        (tmp_path / key).write_text(value + "\n", encoding="utf-8")
    assert_the_relay_accepts({name: value.replace(mount_path, str(tmp_path)) for name, value in environ.items()})

    # The replicas' shared pacing while Redis is away counts every process.
    replicas = relay_deployment()["spec"]["replicas"]
    assert int(environ["EXPECTED_PROCESSES"]) == replicas * gunicorn_workers(environ["WORKERS"])


def test_relay_resources_are_requested_and_limited_from_the_measured_memory():
    resources = relay_container()["resources"]
    requests, limits = resources["requests"], resources["limits"]
    assert requests["cpu"] and requests["memory"]
    assert MEASURED_STORM_RSS_MIB < mebibytes(requests["memory"]) < MEASURED_WORST_RSS_MIB
    assert mebibytes(limits["memory"]) > MEASURED_WORST_RSS_MIB
    # The figures the test holds are the ones the manifest's comment gives.
    text = re.sub(r"\s*#\s*", " ", (KUBERNETES / "deployment.yaml").read_text(encoding="utf-8"))
    assert f"{MEASURED_STORM_RSS_MIB} MiB after 4,000" in text and f"{MEASURED_WORST_RSS_MIB} MiB at the worst" in text


def test_pod_disruption_budget_keeps_one_relay_through_drains():
    budget = one("PodDisruptionBudget", "rocketchat-webhook")["spec"]
    assert budget["minAvailable"] == 1 < relay_deployment()["spec"]["replicas"]
    assert budget["selector"]["matchLabels"] == RELAY_LABELS


def test_service_reaches_the_relays_on_their_port():
    service = one("Service", "rocketchat-webhook")["spec"]
    assert service["selector"] == RELAY_LABELS
    (port,) = service["ports"]
    assert port["port"] == DEFAULT_PORT and named_port(relay_container(), port["targetPort"]) == DEFAULT_PORT


def test_network_policies_let_only_alertmanager_and_prometheus_reach_the_relays_and_only_relays_reach_redis():
    policy = one("NetworkPolicy", "rocketchat-webhook")["spec"]
    assert policy["podSelector"]["matchLabels"] == RELAY_LABELS and policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": DEFAULT_PORT}]
    peers = {peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for peer in rule["from"]}
    assert peers == {"alertmanager", "prometheus"}
    for peer in rule["from"]:
        assert set(peer) == {"namespaceSelector", "podSelector"}, "a peer without both selectors lets in more"
        assert set(peer["podSelector"]["matchLabels"]) == {"app.kubernetes.io/name"}

    redis_policy = one("NetworkPolicy", "rocketchat-webhook-redis")["spec"]
    assert redis_policy["podSelector"]["matchLabels"] == REDIS_LABELS
    (redis_rule,) = redis_policy["ingress"]
    assert redis_rule["from"] == [{"podSelector": {"matchLabels": RELAY_LABELS}}]
    assert redis_rule["ports"] == [{"protocol": "TCP", "port": 6379}]


def test_kubernetes_redis_refuses_rather_than_evicts_with_the_password_of_the_relays_secret(tmp_path):
    container = redis_container()
    assert REDIS_IMAGE.fullmatch(container["image"]), container["image"]
    arguments = [str(argument) for argument in container["args"]]
    assert option(arguments, "--maxmemory-policy") == "noeviction" and "--requirepass" not in arguments
    # maxmemory leaves room under the container's limit for the append-only file's rewrite (a fork).
    maxmemory_mib = int(re.fullmatch(r"(\d+)mb", option(arguments, "--maxmemory")).group(1)) * 10 ** 6 / 2 ** 20
    assert maxmemory_mib <= mebibytes(container["resources"]["limits"]["memory"]) / 2
    pod = one("Deployment", "rocketchat-webhook-redis")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and container["securityContext"]["readOnlyRootFilesystem"]

    # Its configuration file is the redis-auth.conf key of its Secret, whose password the relays' state-url holds.
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    (auth_mount,) = [mount for mount in container["volumeMounts"] if "secret" in volumes[mount["name"]]]
    directory, _, key = arguments[1].rpartition("/")
    assert directory == auth_mount["mountPath"].rstrip("/")
    auth = example_secret(volumes[auth_mount["name"]]["secret"]["secretName"])
    password = requirepass(auth[key])
    state_url = urllib.parse.urlsplit(example_secret("rocketchat-webhook")["state-url"])
    assert redis_url_password(state_url.geturl()) == password
    (service,) = [document for document in manifests() if document["kind"] == "Service"
                  and document["spec"]["selector"] == REDIS_LABELS]
    assert (state_url.hostname, state_url.port) == (service["metadata"]["name"], service["spec"]["ports"][0]["port"])

    # Debian's redis-server runs these arguments (each volume a directory under tmp_path), and the pod's probe
    # command follows it.
    mounts = {mount["mountPath"].rstrip("/"): tmp_path / mount["name"] for mount in container["volumeMounts"]}
    for directory in mounts.values():
        directory.mkdir()
    (mounts[auth_mount["mountPath"].rstrip("/")] / key).write_text(auth[key], encoding="utf-8")

    def in_tmp(text: str) -> str:
        for mount_path, directory in mounts.items():
            text = re.sub(rf"(?<![\w/]){re.escape(mount_path)}(?=/|$|\")", str(directory), text)
        return text

    started = assert_redis_runs_as_deployed([in_tmp(argument) for argument in arguments], password, tmp_path)
    probe = container["readinessProbe"]["exec"]["command"]
    environ = {**{name: value for name, value in os.environ.items() if name != "REDISCLI_AUTH"},
               **{name: in_tmp(value) for name, value in env_of(container).items()}}
    probe = [*probe[:-1], probe[-1].replace("redis-cli", f"redis-cli -p {started.port}")]
    try:
        assert run(probe, env=environ).returncode == 0, "a healthy Redis is reported not ready"
    finally:
        started.stop()
    assert run(probe, env=environ).returncode != 0, "the probe passes with Redis gone"
