"""Faults with the real services: a Redis that stops and comes back, a PostgreSQL that goes
away and returns, a daphne process killed with sockets open and an execution running.

The shared services of the test run are never stopped: each test gives its daphne process
a Redis of its own (a real `redis-server` on a free port, stopped and started again) or
reaches PostgreSQL through a cuttable TCP proxy (every connection reset, new ones refused,
as during a restart), so the test run itself keeps its database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import threading
from datetime import timedelta
from pathlib import Path
from typing import Iterator

from django.utils import timezone

from accounts.models import User
from realtime.models import Connection
from realtime.presence import connections_sweep
from sessions_runtime.models import Execution, ExecutionStatus, RuntimeSession, SessionStatus
from sessions_runtime.runner import executions_sweep
from tests import factories
from tests.conftest import services_server_marks
from tests.live import database_env, running
from tests.redis_servers import RedisProcess
from tests.sockets import close_code_after_frames, connect_ready, refusal_code
from tests.waiting import wait_until

pytestmark = services_server_marks()


# --- tools -----------------------------------------------------------------------------------
class CuttableProxy:
    """A TCP proxy to PostgreSQL. `cut()` resets every connection and refuses new ones,
    which is what clients see while the server restarts; `restore()` accepts again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = threading.Event()
        self.open.set()
        self.sockets: set[socket.socket] = set()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open.is_set():
                self._reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, 5)
            except OSError:
                self._reset(client)
                continue
            with self.lock:
                self.sockets |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    @staticmethod
    def _reset(s: socket.socket) -> None:
        with contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()

    def cut(self) -> None:
        self.open.clear()
        with self.lock:
            doomed, self.sockets = self.sockets, set()
        for s in doomed:
            self._reset(s)

    def restore(self) -> None:
        self.open.set()

    def close(self) -> None:
        self.cut()
        self.listener.close()


def proxied_database_env(proxy: CuttableProxy) -> dict[str, str]:
    url = database_env()["DATABASE_URL"]
    head, _, tail = url.rpartition("@")
    _, _, db = tail.partition("/")
    return {"DATABASE_URL": f"{head}@127.0.0.1:{proxy.port}/{db}"}


@contextlib.contextmanager
def private_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of the test's own, on a port it keeps, so it can come back at the same address."""
    redis = RedisProcess(tmp_path, "redis").start()
    try:
        yield redis
    finally:
        redis.stop()


async def open_ready(server, body: dict):
    return (await connect_ready(server, body["access_token"]))[0]


# --- Redis -----------------------------------------------------------------------------------
def test_redis_stops_and_returns(tmp_path):
    """Sockets hear of ends through the event log in the database, so a Redis outage
    neither closes them nor stops their revocation; /ready reports it (workers need it)."""
    with private_redis(tmp_path) as redis, running(tmp_path, REDIS_URL=redis.url) as server:
        kept, ended, during = server.login(), server.login(), server.login()

        loop = asyncio.new_event_loop()
        try:
            open_ws = loop.run_until_complete(open_ready(server, kept))
            doomed_ws = loop.run_until_complete(open_ready(server, during))
            redis.stop()
            # While Redis is down: sockets open and stay open, REST works on the database,
            # and an end still closes its sockets.
            fresh_ws = loop.run_until_complete(open_ready(server, server.login()))
            assert server.request("GET", "/api/auth/me", token=kept["access_token"])[0] == 200
            status, health = server.request("GET", "/ready")
            assert status == 503 and health["checks"]["channel_layer"] == "unavailable"
            assert server.request("POST", "/api/auth/logout", token=during["access_token"])[0] == 204
            assert loop.run_until_complete(close_code_after_frames(doomed_ws, timeout=5)) == 4409
            assert server.request("DELETE", f"/api/session/{ended['session_id']}", token=ended["access_token"])[0] == 204

            # Redis back, same address, no restart of the service.
            redis.start()
            wait_until(lambda: server.request("GET", "/ready")[0] == 200, timeout=15, interval=0.2,
                       message="the service to see Redis come back")
            assert loop.run_until_complete(refusal_code(server, ended["access_token"])) == 4409
            for ws in (open_ws, fresh_ws):
                loop.run_until_complete(ws.send(json.dumps({"type": "ping"})))
                assert json.loads(loop.run_until_complete(asyncio.wait_for(ws.recv(), 5)))["type"] == "pong"
                loop.run_until_complete(ws.close())
        finally:
            loop.close()


# --- PostgreSQL ------------------------------------------------------------------------------
def test_postgres_goes_away_and_the_service_recovers_by_itself(tmp_path):
    from django.conf import settings

    db = settings.DATABASES["default"]
    proxy = CuttableProxy((db.get("HOST") or "127.0.0.1", int(db.get("PORT") or 5432)))
    try:
        with running(tmp_path, **proxied_database_env(proxy)) as server:
            user = factories.make_user()
            credentials = {"email": user.email, "password": factories.PASSWORD}
            status, body = server.request("POST", "/api/auth/login", credentials)
            assert status == 200
            sessions_before = RuntimeSession.objects.filter(user=user).count()

            proxy.cut()
            outage = [
                server.request("POST", "/api/auth/login", credentials),
                server.request("GET", "/api/auth/me", token=body["access_token"]),
                server.request("POST", "/api/session/create", {}, token=body["access_token"]),
                server.request("GET", "/ready"),
            ]
            for status, payload in outage:
                assert status == 503, (status, payload)
                assert payload.get("error") == "service_unavailable" or payload["checks"]["database"] == "unavailable", payload
            assert RuntimeSession.objects.filter(user=user).count() == sessions_before

            proxy.restore()
            wait_until(lambda: server.request("GET", "/api/auth/me", token=body["access_token"])[0] == 200, timeout=15,
                       interval=0.2, message="/api/auth/me to answer 200 after the database came back")
            status, again = server.request("POST", "/api/auth/login", credentials)
            assert status == 200
            # Every session that exists came with tokens: the failed logins left none behind.
            assert RuntimeSession.objects.filter(user=user).count() == sessions_before + 1
            assert RuntimeSession.objects.filter(pk=again["session_id"], status=SessionStatus.ACTIVE).exists()
    finally:
        proxy.close()


# --- a daphne process killed -----------------------------------------------------------------
def test_a_killed_process_leaves_records_that_the_sweeps_clean_and_resume(tmp_path):
    with running(tmp_path, BATCH_ITEM_DELAY_SECONDS="0.3") as doomed:
        body = doomed.login()

        async def open_two():
            return [await open_ready(doomed, body) for _ in range(2)]

        loop = asyncio.new_event_loop()
        try:
            sockets = loop.run_until_complete(open_two())
            status, accepted = doomed.request("POST", "/api/intent/submit", {
                "session_id": body["session_id"], "intent_type": "batch", "parameters": {"items": list(range(20))},
            }, token=body["access_token"])
            assert status == 202, accepted
            wait_until(lambda: Connection.objects.filter(session_id=body["session_id"]).count() == 2
                       and Execution.objects.filter(pk=accepted["execution_id"], status=ExecutionStatus.RUNNING).exists(),
                       message="the records and the running execution")
            os.killpg(doomed.process.pid, signal.SIGKILL)
            doomed.process.wait(10)
            for ws in sockets:
                loop.run_until_complete(ws.close())
        finally:
            loop.close()

    # The dead process's records stay until the sweep finds its heartbeat stale.
    assert Connection.objects.filter(session_id=body["session_id"]).count() == 2
    assert connections_sweep() == 0
    assert connections_sweep(now=timezone.now() + timedelta(minutes=5)) == 2
    assert not Connection.objects.filter(session_id=body["session_id"]).exists()

    execution = Execution.objects.get(pk=accepted["execution_id"])
    assert execution.status == ExecutionStatus.RUNNING and execution.progress["processed"] < 20
    with running(tmp_path, BATCH_ITEM_DELAY_SECONDS="0.01") as survivor:
        swept = executions_sweep(now=timezone.now() + timedelta(minutes=5))
        assert sum(swept.values()) >= 1, swept
        wait_until(lambda: Execution.objects.get(pk=execution.pk).status == ExecutionStatus.COMPLETED, timeout=30,
                   interval=0.1, message=lambda: f"the execution to complete ({Execution.objects.get(pk=execution.pk).status})")
        done = Execution.objects.get(pk=execution.pk)
        assert done.progress["processed"] == 20 and done.progress["succeeded"] == 20
        assert survivor.request("GET", f"/api/execution/{execution.pk}/status", token=body["access_token"])[1]["status"] == "completed"
    assert User.objects.filter(pk=body["user_id"]).exists()
