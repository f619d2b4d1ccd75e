"""The README's quick start, followed literally: `make examples` installs what the examples
import beyond the runtime, `make manage` runs operator commands against the local run, and
`make run` serves a demo whose console keeps its session over a reload."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from tests.live import ROOT, LiveServer, free_port, process_stop, wait_answering

BIN = Path(sys.executable).parent


def requirement_names(path: Path) -> dict[str, str]:
    """name (normalised) -> the line's pin, of a requirements file and the files it includes."""
    names: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            names.update(requirement_names(path.parent / line[3:].strip()))
        elif line:
            name = re.split(r"[=<>!~\[; ]", line, maxsplit=1)[0]
            names[re.sub(r"[-_.]+", "-", name).lower()] = line
    return names


def test_every_package_an_example_imports_is_installed_by_make_run_or_make_examples():
    runtime, examples = requirement_names(ROOT / "requirements.txt"), requirement_names(ROOT / "examples" / "requirements.txt")
    dev = requirement_names(ROOT / "requirements-dev.txt")
    # One pin per package: examples/requirements.txt says what requirements-dev.txt says.
    assert {name: dev.get(name) for name in examples} == examples
    providers = packages_distributions()
    missing = []
    for script in sorted((ROOT / "examples").glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text())):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top == "__future__":
                    continue
                distributions = {re.sub(r"[-_.]+", "-", d).lower() for d in providers.get(top, [top])}
                if not distributions & (set(runtime) | set(examples)):
                    missing.append(f"{script.name}: {top}")
    assert missing == []


def _make(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """`make` on this run's interpreter, its venv taken as made (-o: never re-created by a
    test), and a new shell's environment on an embedded database of its own."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("SYMPHAINY_INSECURE_DEV_KEY", "DEBUG", "SECRET_KEY", "DATABASE_URL", "REDIS_URL",
                        "SYMPHAINY_REQUIRE_SERVICES", "DJANGO_SETTINGS_MODULE", "MAKEFLAGS", "MAKELEVEL",
                        "AUTH_REFRESH_COOKIE")}
    env["SQLITE_PATH"] = str(tmp_path / "db.sqlite3")
    return ["make", "-s", "-C", str(ROOT), f"BIN={BIN}", "-o", f"{BIN}/.installed"], env


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_manage_runs_an_operator_command_against_the_local_run(tmp_path):
    """Without SYMPHAINY_INSECURE_DEV_KEY in the environment, as after `make run` in a new shell."""
    make, env = _make(tmp_path)

    plain = subprocess.run([sys.executable, "manage.py", "sessions", "list"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert plain.returncode != 0 and "core.E001" in plain.stderr  # what a new user hit

    for args in ("migrate --noinput -v 0", "seed_demo", "users list"):
        result = subprocess.run([*make, "manage", f"ARGS={args}"], env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
    assert "demo@symphainy.local" in result.stdout


@pytest.mark.server
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_offers_the_refresh_cookie_so_a_reload_keeps_the_demo_session(tmp_path):
    """What someone trying the demo expects of the console: a reload keeps the session
    (AUTH_REFRESH_COOKIE on, docs/client.md#the-console-page); the demo user logs in and
    gets the cookie."""
    from core.conf import runtime_settings

    make, env = _make(tmp_path)
    port = free_port()
    log_path = tmp_path / "make-run.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([*make, "run", f"PORT={port}"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    server = LiveServer(process, port, log_path)
    try:
        wait_answering(f"{server.http}/health", process, log_path, timeout=180)
        status, body = server.request("POST", "/api/auth/login", {
            "email": runtime_settings.DEMO_EMAIL, "password": runtime_settings.DEMO_PASSWORD, "refresh_cookie": True})
        assert status == 200, body
        assert body["refresh_cookie"] is True and "refresh_token" not in body
        with urllib.request.urlopen(server.http + "/", timeout=15) as page:
            assert 'data-refresh-cookie="on"' in page.read().decode()
    finally:
        process_stop(process)
