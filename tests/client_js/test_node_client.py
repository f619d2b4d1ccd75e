"""The JavaScript client in Node against real servers: `node --test` runs
clients/js/test/integration/ (Node's own test runner) on the committed bundle
(console/static/console/symphainy-client.js), against daphne processes started here on this
test run's database and Redis, so it runs on the embedded SQLite in CI's first run and on
PostgreSQL + Redis in its second.

What the Node tests need from Python they ask a small control server in this process for
(a hand-written stdlib HTTP server: three routes, no dependency worth adding): a new user
(made with tests/factories), a restart of a server in place (SIGTERM, then the same port
again), and a session's event log as recorded, to tell "no event lost" against. The servers'
URLs and the control server's come in the environment (clients/js/test/integration/live.mjs
reads them).

No npm install: Node 20's own WebSocket (undici, behind `--experimental-websocket` in 20.x,
global from 22 on) sends the `Origin` the server requires through its `headers` option, and
the bundle has no dependencies. Without Node (≥ 20) the test skips, except with
SYMPHAINY_REQUIRE_SERVICES=1, where that fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
from django.conf import settings
from django.db import connection

from core.models import SessionEvent
from tests import factories
from tests.live import ROOT, LiveServer, start_server

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]

NODE_TESTS = ROOT / "clients" / "js" / "test" / "integration"
# Fast agent tokens and batch items, yet slow enough to cancel an answer midway; the
# throttles are for real clients, not for a test run logging in over and over.
BASE_ENV = {
    "AGENT_TOKEN_DELAY_SECONDS": "0.05",
    "THROTTLE_LOGIN_ADDRESS": "1000/min",
    "THROTTLE_REFRESH_ADDRESS": "1000/min",
    "THROTTLE_REGISTER_ADDRESS": "1000/min",
}
SERVERS = {
    # The refresh cookie on: restore() after a "reload" (without it, a login is as before).
    "main": {**BASE_ENV, "AUTH_REFRESH_COOKIE": "1"},
    # Access tokens that live 3 s: a client that misses its refresh meets 4401 soon.
    "short_token": {**BASE_ENV, "ACCESS_TOKEN_LIFETIME_SECONDS": "3"},
    # Restarted in place by a Node test: a short drain window, and 5 s for work in flight
    # (the timeout less the drain's 3 s reserve), so the restart takes seconds.
    "restartable": {**BASE_ENV, "SHUTDOWN_DRAIN_WINDOW_SECONDS": "1", "SHUTDOWN_TIMEOUT_SECONDS": "8"},
}
NODE_RUN_TIMEOUT_S = 180


def _node_command() -> tuple[list[str] | None, str]:
    """`node --test` with the flags that give it a global WebSocket, or None and why not."""
    node = shutil.which("node")
    if node is None:
        return None, "node is not installed (Node 20 or later: apt-get install nodejs)"
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    match = re.match(r"v(\d+)\.", version)
    if not match or int(match.group(1)) < 20:
        return None, f"node {version or '?'} is too old: the tests need Node 20 or later"
    # A test file whose test timed out can keep handles open (a client still retrying):
    # end it with its tests where Node can (20.14 on) instead of at the run's timeout.
    helped = subprocess.run([node, "--help"], capture_output=True, text=True, timeout=30).stdout
    run = ["--test-force-exit"] if "--test-force-exit" in helped else []
    probe = "process.exit(typeof WebSocket === 'function' ? 0 : 1)"
    for flags in ([], ["--experimental-websocket"]):
        if subprocess.run([node, *flags, "-e", probe], capture_output=True, timeout=30).returncode == 0:
            return [node, *flags, "--test", *run], ""
    return None, f"node {version} has no WebSocket"


def _node_required(*, require: bool) -> list[str]:
    """The `node --test` command; without a fit Node, skip, or fail when `require`d."""
    command, problem = _node_command()
    if command is None and require:
        pytest.fail(f"SYMPHAINY_REQUIRE_SERVICES=1 but {problem}")
    if command is None:
        pytest.skip(problem)
    return command


@pytest.fixture(scope="module")
def node() -> list[str]:
    return _node_required(require=settings.REQUIRE_SERVICES)


def test_without_node_the_tests_skip_and_fail_where_services_are_required(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(pytest.skip.Exception, match="node is not installed"):
        _node_required(require=False)
    with pytest.raises(pytest.fail.Exception, match="SYMPHAINY_REQUIRE_SERVICES=1 but node is not installed"):
        _node_required(require=True)


class _Control(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, servers: dict[str, LiveServer], log_dir: Path) -> None:
        super().__init__(("127.0.0.1", 0), _ControlHandler)
        self.servers = servers
        self.log_dir = log_dir
        self.restarting = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def user_make(self) -> dict[str, Any]:
        try:
            user = factories.make_user()
        finally:
            connection.close()  # this thread's own connection
        return {"email": user.email, "password": factories.PASSWORD, "user_id": str(user.pk)}

    def session_events(self, session_id: str) -> list[dict[str, Any]]:
        try:
            rows = SessionEvent.objects.filter(session_id=session_id).order_by("seq").values_list("seq", "kind")
            return [{"seq": seq, "kind": kind} for seq, kind in rows]
        finally:
            connection.close()

    def server_restart(self, name: str) -> dict[str, Any]:
        """SIGTERM the server (its sockets close with 1012 over the drain window), wait for
        it to exit, and start it again on the same port."""
        with self.restarting:
            old = self.servers[name]
            old.process.send_signal(signal.SIGTERM)
            code = old.process.wait(timeout=30)
            if code != 0:
                raise RuntimeError(f"{name} exited with {code}:\n{old.log()}")
            self.servers[name] = start_server(self.log_dir, port=old.port, **SERVERS[name])
            self.servers[f"{name}-{old.process.pid}"] = old  # its log, for a failure's report
            return {"url": self.servers[name].http, "exit_code": code}


class _ControlHandler(BaseHTTPRequestHandler):
    server: _Control

    def _answer(self, status: int, body: Any) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _route(self, method: str) -> None:
        path = self.path.rstrip("/")
        try:
            if method == "POST" and path == "/users":
                return self._answer(201, self.server.user_make())
            if method == "POST" and (match := re.fullmatch(r"/servers/(\w+)/restart", path)):
                return self._answer(200, self.server.server_restart(match.group(1)))
            if method == "GET" and (match := re.fullmatch(r"/sessions/([0-9a-f-]{36})/events", path)):
                return self._answer(200, self.server.session_events(match.group(1)))
            return self._answer(404, {"error": f"no route {method} {path}"})
        except Exception as error:  # noqa: BLE001 - reported to the Node test that asked
            return self._answer(500, {"error": f"{type(error).__name__}: {error}"})

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass


@pytest.fixture
def servers(django_db_setup, tmp_path) -> Iterator[dict[str, LiveServer]]:
    """The servers the Node tests use, started side by side."""
    started: dict[str, LiveServer] = {}
    with ThreadPoolExecutor(len(SERVERS)) as pool:
        futures = {name: pool.submit(start_server, tmp_path, **env) for name, env in SERVERS.items()}
        errors = []
        for name, future in futures.items():
            try:
                started[name] = future.result()
            except Exception as error:  # noqa: BLE001 - the others are stopped, then it is raised
                errors.append(error)
    try:
        if errors:
            raise errors[0]
        yield started
    finally:
        for server in started.values():
            server.stop()


def _logs(servers: dict[str, LiveServer], tail: int = 4000) -> str:
    return "\n".join(f"--- server {name} (port {s.port}), last of {s.log_path}:\n{s.log()[-tail:]}"
                     for name, s in servers.items())


@pytest.mark.timeout(NODE_RUN_TIMEOUT_S + 60)
def test_the_node_client_against_real_servers(node, servers, tmp_path):
    control = _Control(servers, tmp_path)
    thread = threading.Thread(target=control.serve_forever, name="node-test-control", daemon=True)
    thread.start()
    env = {
        **os.environ,
        "SYMPHAINY_TEST_SERVERS": json.dumps({name: s.http for name, s in servers.items()}),
        "SYMPHAINY_TEST_CONTROL": control.url,
        "NO_COLOR": "1",
    }
    # A process group of its own: on a timeout the test files' processes go too (the runner
    # alone would leave them, and a client in them retrying for good).
    runner = subprocess.Popen(
        [*node, "--test-reporter=spec", os.environ.get("SYMPHAINY_NODE_TESTS", str(NODE_TESTS))],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    timed_out = False
    try:
        stdout, stderr = runner.communicate(timeout=NODE_RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            stdout, stderr = runner.communicate()
        control.shutdown()
        control.server_close()
    output = f"{stdout}\n{stderr}"
    assert not timed_out, f"node --test did not end within {NODE_RUN_TIMEOUT_S} s:\n{output}\n{_logs(servers)}"
    assert runner.returncode == 0, f"node --test failed ({runner.returncode}):\n{output}\n{_logs(servers)}"
    # The run really ran tests (a directory without any passes too), and skipped none.
    counts = {name: int(n) for name, n in re.findall(r"^ℹ (\w+) (\d+)$", stdout, re.MULTILINE)}
    assert counts.get("pass", 0) > 0, output
    assert all(counts.get(name) == 0 for name in ("fail", "cancelled", "skipped", "todo")), output
