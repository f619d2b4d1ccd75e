"""The production layout of deploy/, started on loopback: nginx (Debian's package, its
config rendered from the repository's template) in front of gunicorn (HTTP) and two
daphne processes (the socket path), all on this run's database and Redis.

Every cross-process path is checked, on the embedded SQLite (the processes share the
database file) as on PostgreSQL + Redis: events and revocation reach a socket on daphne
from a request served by gunicorn, through the session event log.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from django.conf import settings
from websockets.exceptions import InvalidStatus
from django.db import connection as db_connection

from core.models import AuditEvent
from realtime.models import Connection
from tests import factories
from tests.live import ROOT, child_env, free_port, wait_answering
from tests.sockets import PATH, close_code_after_frames, connect, connect_ready, next_event
from tests.waiting import wait_until_async

sys.path.insert(0, str(ROOT / "deploy"))
import render  # noqa: E402

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
pytestmark = [
    pytest.mark.server,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(NGINX is None and not settings.REQUIRE_SERVICES, reason="nginx is not installed (.ci/run installs it)"),
]
SPOOFED = "203.0.113.77"


@dataclass
class Site:
    """The layout's front door (nginx) and the logs of the processes behind it."""

    http: str
    ws: str
    port: int
    gunicorn_log: Path
    daphne_logs: list[Path]
    nginx_access_log: Path
    nginx_error_log: Path
    # Restart the n-th daphne as an operator would (SIGTERM, then start it again on its
    # port); returns the stopped process's exit status once the new one is ready.
    restart_daphne: Callable[[int], int] | None = None


@contextlib.contextmanager
def layout(tmp_path: Path, *, trusted_lb: list[str] = (), workers: int = 2, **settings_env: str) -> Iterator[Site]:
    """`trusted_lb`: load balancers in front of nginx (render.py --trusted-lb);
    `settings_env`: the service's settings for every process."""
    env = child_env(
        TRUSTED_PROXY_COUNT="1", LOG_FORMAT="json", EXECUTION_RUNNER="asyncio",
        BATCH_ITEM_DELAY_SECONDS="0.01", PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"), **settings_env,
    )
    (tmp_path / "metrics").mkdir()
    processes: list[subprocess.Popen] = []

    def start(name: str, argv: list[str], **extra: str) -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"{name}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(argv, cwd=ROOT, env={**env, **extra}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        processes.append(process)
        return process, log

    # A deploy step, as on a real machine: whitenoise serves the collected files.
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, env=env, check=True, timeout=120)
    try:
        http_port, ws_ports, nginx_port = free_port(), [free_port(), free_port()], free_port()
        gunicorn, gunicorn_log = start(
            "gunicorn", [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py"],
            GUNICORN_BIND=f"127.0.0.1:{http_port}", GUNICORN_WORKERS=str(workers),
        )
        def daphne_argv(port: int) -> list[str]:
            return [sys.executable, "-m", "symphainy.serve", "-b", "127.0.0.1", "-p", str(port), "--proxy-headers", "--access-log", "-"]

        daphnes = [start(f"daphne-{port}", daphne_argv(port)) for port in ws_ports]

        def restart_daphne(index: int) -> int:
            process, _ = daphnes[index]
            process.send_signal(signal.SIGTERM)
            status = process.wait(timeout=30)
            port = ws_ports[index]
            daphnes[index] = start(f"daphne-{port}-{len(processes)}", daphne_argv(port))
            wait_answering(f"http://127.0.0.1:{port}/ready", *daphnes[index], timeout=40)
            return status

        prefix = tmp_path / "nginx"
        assert render.main([
            "--listen", f"127.0.0.1:{nginx_port}", "--http", f"127.0.0.1:{http_port}",
            *[arg for port in ws_ports for arg in ("--socket", f"127.0.0.1:{port}")],
            *[arg for network in trusted_lb for arg in ("--trusted-lb", network)], "--standalone", str(prefix),
        ]) == 0
        nginx, nginx_log = start("nginx", [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log"), "-g", "daemon off;"])
        wait_answering(f"http://127.0.0.1:{http_port}/health", gunicorn, gunicorn_log, timeout=40)
        for (process, log), port in zip(daphnes, ws_ports):
            wait_answering(f"http://127.0.0.1:{port}/health", process, log, timeout=40)
        wait_answering(f"http://127.0.0.1:{nginx_port}/health", nginx, prefix / "error.log", timeout=40)
        yield Site(http=f"http://127.0.0.1:{nginx_port}", ws=f"ws://127.0.0.1:{nginx_port}", port=nginx_port,
                   gunicorn_log=gunicorn_log, daphne_logs=[log for _, log in daphnes],
                   nginx_access_log=prefix / "access.log", nginx_error_log=prefix / "error.log",
                   restart_daphne=restart_daphne)
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def call(base: str, method: str, path: str, body: Any = None, token: str | None = None, headers: dict | None = None) -> tuple[int, Any, dict]:
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, headers=all_headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            raw = response.read()
            kind = response.headers.get("Content-Type", "")
            return response.status, json.loads(raw) if raw and "json" in kind else raw, dict(response.headers)
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, json.loads(raw) if raw else None, dict(error.headers)


def connection_addresses(session_id: str) -> list[str]:
    """Read in a worker thread; its database connection is closed before it returns, or
    PostgreSQL would refuse to drop the test database."""
    try:
        return list(Connection.objects.filter(session_id=session_id).values_list("client_address", flat=True))
    finally:
        db_connection.close()


def test_the_layout_serves_login_sockets_state_executions_and_revocation_through_nginx(tmp_path):
    user = factories.make_user()
    with layout(tmp_path) as site:
        base = site.http
        # Login through nginx to gunicorn, with a client-chosen X-Forwarded-For.
        status, body, _ = call(base, "POST", "/api/auth/login", {"email": user.email, "password": factories.PASSWORD},
                               headers={"X-Forwarded-For": SPOOFED, "X-Real-IP": SPOOFED})
        assert status == 200, body
        token, session_id = body["access_token"], body["session_id"]
        login_event = AuditEvent.objects.filter(kind=AuditEvent.Kind.LOGIN_SUCCEEDED, user_id=user.pk).get()
        assert login_event.client_address == "127.0.0.1"

        async def scenario() -> None:
            ws, _ = await connect_ready(site, token, additional_headers={"X-Forwarded-For": SPOOFED}, open_timeout=15)
            assert ws.subprotocol == "symphainy.v1"
            # The connection record, written by the daphne process, has nginx's view of the client.
            addresses = await wait_until_async(lambda: asyncio.to_thread(connection_addresses, session_id),
                                               interval=0.1, message="the connection record")
            assert addresses == ["127.0.0.1"]

            # A state change served by gunicorn.
            status, state, _ = await asyncio.to_thread(call, base, "PUT", f"/api/session/{session_id}/state", {"data": {"step": 1}}, token, {"If-Match": "0"})
            assert (status, state["version"]) == (200, 1)
            # Heard on daphne through the event log, on SQLite as on PostgreSQL.
            changed = await next_event(ws, "session.state_changed")
            assert changed["data"]["version"] == 1

            # An execution started from a WSGI request runs on gunicorn's background loop.
            status, accepted, _ = await asyncio.to_thread(
                call, base, "POST", "/api/intent/submit",
                {"session_id": session_id, "intent_type": "batch", "parameters": {"items": [1, 2, 3]}}, token,
            )
            assert status == 202, accepted

            async def completed() -> dict | None:
                status, execution, _ = await asyncio.to_thread(call, base, "GET", f"/api/execution/{accepted['execution_id']}/status", None, token)
                assert execution["status"] in ("created", "running", "completed"), execution
                return execution if execution["status"] == "completed" else None

            execution = await wait_until_async(completed, timeout=20, interval=0.1, message="the execution to complete")
            assert execution["result"]["processed"] == 3
            await next_event(ws, "execution.completed")

            # /metrics through gunicorn sees the socket held by a daphne process.
            status, metrics, _ = await asyncio.to_thread(call, base, "GET", "/metrics")
            assert status == 200
            assert "symphainy_open_sockets 1.0" in metrics.decode()

            # The legacy transport: the token in the query string, which nginx's access log
            # must not keep (the service takes it out of the scope before anything logs).
            legacy, _ = await connect_ready(site, query=f"access_token={token}", open_timeout=15)
            await legacy.close()
            # The page's origin is nginx's scheme, host and port (the Host passed with its
            # port): another port on the same host is refused before the handshake.
            with pytest.raises(InvalidStatus) as refused:
                await connect(site, token, origin="http://127.0.0.1:1")
            assert refused.value.response.status_code == 403

            # Revocation: the end is served by gunicorn, the socket lives on daphne.
            status, _, _ = await asyncio.to_thread(call, base, "DELETE", f"/api/session/{session_id}", None, token)
            assert status == 204
            ended = time.monotonic()
            assert await close_code_after_frames(ws) == 4409
            assert time.monotonic() - ended < 2.0  # the contract's second, a busy machine's slack; not the 30 s re-check

        asyncio.run(scenario())
        assert call(base, "GET", "/api/auth/me", token=token)[0] == 401

        # The admin and its static files (whitenoise) are served by gunicorn too.
        status, page, _ = call(base, "GET", "/admin/login/")
        assert status == 200 and b"csrfmiddlewaretoken" in page
        assert call(base, "GET", "/static/admin/css/base.css")[0] == 200

        # The spoofed address was recorded nowhere; every line of every process is JSON.
        assert not AuditEvent.objects.filter(client_address=SPOOFED).exists()
        for log in [site.gunicorn_log, *site.daphne_logs]:
            lines = [line for line in log.read_text().splitlines() if line.strip()]
            assert lines, log
            for line in lines:
                record = json.loads(line)
                assert "message" in record and "level" in record, line
        access = [json.loads(line) for line in site.gunicorn_log.read_text().splitlines() if '"gunicorn.access"' in line]
        assert any("/api/auth/login" in record["message"] for record in access)
        assert SPOOFED not in site.gunicorn_log.read_text()

        # nginx's access log has a line for each socket, without its query string. Every
        # log of the layout is free of the token (and of the refresh token).
        access_log = site.nginx_access_log.read_text()
        assert access_log.count(f'"GET {PATH} HTTP/1.1" 101') == 2, access_log
        for log in [site.nginx_access_log, site.nginx_error_log, site.gunicorn_log, *site.daphne_logs]:
            text = log.read_text()
            assert token not in text and body["refresh_token"] not in text, log
            assert token.split(".")[2] not in text, log


BALANCER = "127.0.0.2"  # a load balancer's address in front of nginx: loopback, another source
CLIENT_A, CLIENT_B, CLIENT_C, CLIENT_D = "198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"


def login_from(site: dict[str, Any], source: str, email: str, password: str, forwarded_for: str) -> tuple[int, str]:
    """A login through nginx over a connection from `source` (a loopback address), with
    the X-Forwarded-For a balancer would append."""
    connection = http.client.HTTPConnection("127.0.0.1", site.port, timeout=20, source_address=(source, 0))
    try:
        connection.request("POST", "/api/auth/login", json.dumps({"email": email, "password": password}),
                           {"Content-Type": "application/json", "X-Forwarded-For": forwarded_for})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_behind_a_trusted_balancer_throttles_and_the_lockout_see_each_clients_address(tmp_path):
    """nginx rendered with --trusted-lb: requests from the balancer are counted under the
    client address it forwarded, two clients separately; a peer that is not the balancer
    is counted under its own address whatever X-Forwarded-For it sends."""
    user = factories.make_user()
    with layout(
        tmp_path, trusted_lb=[BALANCER], workers=1,  # one worker: its throttle cache is the only one on SQLite
        THROTTLE_LOGIN_ADDRESS="3/min", LOGIN_LOCKOUT_AFTER_FAILURES="2", LOGIN_LOCKOUT_SECONDS="300",
    ) as site:
        def unknown(n: int) -> str:
            return f"nobody-{n}@example.com"  # an unknown account: a failure the lockout keys apart

        # Throttle: client A's three attempts use its budget, client B's are its own.
        assert [login_from(site, BALANCER, unknown(n), "x", CLIENT_A)[0] for n in range(3)] == [401, 401, 401]
        assert login_from(site, BALANCER, unknown(3), "x", CLIENT_A)[0] == 429
        assert login_from(site, BALANCER, unknown(4), "x", CLIENT_B)[0] == 401
        # A client's own X-Forwarded-For entry, left of the one the balancer appended, is not believed.
        assert login_from(site, BALANCER, unknown(5), "x", f"{CLIENT_B}, {CLIENT_A}")[0] == 429

        # An untrusted peer (127.0.0.1, not the balancer) cannot choose its address: each
        # attempt counts against 127.0.0.1, whatever it forwards.
        spoofed = [login_from(site, "127.0.0.1", unknown(10 + n), "x", f"203.0.113.{n}")[0] for n in range(4)]
        assert spoofed == [401, 401, 401, 429]

        # Lockout, per account and client address: C locks the account for C only.
        assert [login_from(site, BALANCER, user.email, "wrong", CLIENT_C)[0] for _ in range(2)] == [401, 401]
        status, text = login_from(site, BALANCER, user.email, factories.PASSWORD, CLIENT_C)
        assert status == 429 and "failed logins" in text, text
        assert login_from(site, BALANCER, user.email, factories.PASSWORD, CLIENT_D)[0] == 200

    recorded = set(AuditEvent.objects.exclude(client_address=None).values_list("client_address", flat=True))
    assert recorded == {CLIENT_A, CLIENT_B, CLIENT_C, CLIENT_D, "127.0.0.1"}
    assert AuditEvent.objects.get(kind=AuditEvent.Kind.LOGIN_SUCCEEDED, user_id=user.pk).client_address == CLIENT_D
