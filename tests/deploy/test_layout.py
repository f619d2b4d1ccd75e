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
from typing import Any, Iterator

import pytest
from django.conf import settings
from django.db import connection as db_connection

from core.models import AuditEvent
from realtime.models import Connection
from tests import factories
from tests.live import ROOT, child_env, free_port, wait_answering
from tests.sockets import close_code_after_frames, connect_ready, next_event
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
    gunicorn_log: Path
    daphne_logs: list[Path]


@contextlib.contextmanager
def layout(tmp_path: Path) -> Iterator[Site]:
    env = child_env(
        TRUSTED_PROXY_COUNT="1", LOG_FORMAT="json", EXECUTION_RUNNER="asyncio",
        BATCH_ITEM_DELAY_SECONDS="0.01", PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
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
            GUNICORN_BIND=f"127.0.0.1:{http_port}", GUNICORN_WORKERS="2",
        )
        daphnes = [
            start(f"daphne-{port}", [sys.executable, "-m", "symphainy.serve", "-b", "127.0.0.1", "-p", str(port), "--proxy-headers", "--access-log", "-"])
            for port in ws_ports
        ]
        prefix = tmp_path / "nginx"
        assert render.main([
            "--listen", f"127.0.0.1:{nginx_port}", "--http", f"127.0.0.1:{http_port}",
            *[arg for port in ws_ports for arg in ("--socket", f"127.0.0.1:{port}")], "--standalone", str(prefix),
        ]) == 0
        nginx, nginx_log = start("nginx", [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log"), "-g", "daemon off;"])
        wait_answering(f"http://127.0.0.1:{http_port}/health", gunicorn, gunicorn_log, timeout=40)
        for (process, log), port in zip(daphnes, ws_ports):
            wait_answering(f"http://127.0.0.1:{port}/health", process, log, timeout=40)
        wait_answering(f"http://127.0.0.1:{nginx_port}/health", nginx, prefix / "error.log", timeout=40)
        yield Site(http=f"http://127.0.0.1:{nginx_port}", ws=f"ws://127.0.0.1:{nginx_port}", gunicorn_log=gunicorn_log,
                   daphne_logs=[log for _, log in daphnes])
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
