"""Server restarts over real processes (docs/deployment.md#restarts-and-deploys): SIGTERM
drains under each start command (1012 for every socket, /ready 503 from the first moment,
no new connection taken, records gone, exit 0, a running execution handed over and run
again at once), and a SIGKILLed process is noticed by the others within 10 s."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
from websockets.exceptions import ConnectionClosed

from realtime.models import Connection, ServerInstance
from sessions_runtime.models import Execution, ExecutionStatus
from tests import factories
from tests.live import ROOT, database_env, process_stop, start_server
from tests.sockets import close_code_after_frames, connect_ready, next_event
from tests.waiting import wait_until, wait_until_async

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]
# Short enough for a test, long enough to watch the drain: the sockets close over 1 s, the
# work in flight gets 3 s (SHUTDOWN_TIMEOUT less the drain's reserve of 3 s).
DRAIN = {"SHUTDOWN_DRAIN_WINDOW_SECONDS": "1", "SHUTDOWN_TIMEOUT_SECONDS": "6"}
# A batch that runs for ~8 s: longer than the drain gives it.
LONG_BATCH = {"items": list(range(80)), "delay_s": 0.1}


async def until(check, *, timeout: float, message="the condition"):
    """Wait for `check()`, run off the loop (it may query the database)."""
    return await wait_until_async(lambda: asyncio.to_thread(check), timeout=timeout, message=message)


def sync(function, *args):
    return asyncio.to_thread(function, *args)


async def submit(ws, parameters: dict) -> str:
    await ws.send(json.dumps({"type": "intent.submit", "intent_type": "batch", "parameters": parameters}))
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert frame["type"] != "error", frame
        if frame["type"] == "intent.accepted":
            return frame["execution_id"]


def execution(execution_id: str) -> Execution:
    return Execution.objects.get(pk=execution_id)


def running_on(execution_id: str, instance: str) -> bool:
    found = execution(execution_id)
    return found.status == ExecutionStatus.RUNNING and found.worker.startswith(instance)


def records_of(instance: str) -> int:
    return Connection.objects.filter(server_instance__startswith=instance).count()


async def last_frame_and_close_code(ws, timeout: float) -> tuple[dict | None, int | None]:
    """The last frame a socket received before its close frame, and the close code."""
    last = None
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            last = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return last, closed.value.rcvd.code if closed.value.rcvd is not None else None


def ready_status(connection: http.client.HTTPConnection) -> int:
    connection.request("GET", "/ready")
    response = connection.getresponse()
    response.read()
    return response.status


def refuses_connections(port: int) -> bool:
    try:
        http.client.HTTPConnection("127.0.0.1", port, timeout=2).connect()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.parametrize(("command", "stop"), [("serve", signal.SIGTERM), ("daphne", signal.SIGTERM), ("serve", signal.SIGINT)])
def test_sigterm_drains_and_a_restart_in_place_runs_the_execution_again(tmp_path, command, stop):
    # An agent answer of ~8 s (40 words, 0.2 s a token): longer than the drain gives it.
    env = {**DRAIN, "AGENT_TOKEN_DELAY_SECONDS": "0.2"}
    first = start_server(tmp_path, command, SERVER_INSTANCE=f"first-{command}", **env)
    servers = [first]
    body = first.login()
    probe = http.client.HTTPConnection("127.0.0.1", first.port, timeout=10)  # kept alive across the signal
    assert ready_status(probe) == 200

    async def scenario():
        sockets = [await connect_ready(first, body["access_token"]) for _ in range(3)]
        execution_id = await submit(sockets[0][0], LONG_BATCH)
        await sockets[1][0].send(json.dumps({"type": "agent.message", "payload": {"text": " ".join(["word"] * 40)}}))
        await next_event(sockets[1][0], "agent.token")
        await until(lambda: running_on(execution_id, "first-") and records_of("first-") == 3, timeout=10)

        first.process.send_signal(stop)
        closes = asyncio.gather(*(last_frame_and_close_code(ws, 15) for ws, _ in sockets))
        # /ready says 503 from the first moment, and no new connection is taken.
        # Bounds for a busy machine, not the promise ("from the first moment"): the server's
        # log is in the message when one is passed.
        await until(lambda: ready_status(probe) == 503, timeout=15, message=lambda: "/ready 503:\n" + first.log())
        await until(lambda: refuses_connections(first.port), timeout=15, message=lambda: "refused:\n" + first.log())
        closes = await closes
        assert [code for _, code in closes] == [1012] * 3
        # Each 1012 follows the reconnect hint: a delay within the socket's share of the
        # drain window (1 s over three sockets).
        assert all(frame["type"] == "server.restart" for frame, _ in closes), closes
        assert all(0 <= frame["reconnect_after_ms"] <= 1000 / 3 for frame, _ in closes), closes
        assert "could not stop listening" not in first.log(), first.log()
        assert await sync(first.process.wait, 15) == 0, first.log()
        # Gone at once: the records (no ghost under another process's socket cap), the
        # lease; and the execution is back to `created` for another process.
        assert await sync(records_of, "first-") == 0
        assert not await sync(lambda: ServerInstance.objects.filter(pk__startswith="first-").exists())
        handed = await sync(execution, execution_id)
        assert (handed.status, handed.worker, handed.attempts) == (ExecutionStatus.CREATED, "", 0)
        assert "drained in" in first.log() and "handed over 1 running executions" in first.log()
        assert "1 answers interrupted" in first.log()

        # Restarted in place: the new process runs the execution at once, and the client
        # resumes where it was.
        second = await sync(lambda: start_server(tmp_path, command, SERVER_INSTANCE=f"second-{command}", **env))
        servers.append(second)
        await until(lambda: running_on(execution_id, "second-"), timeout=5,
                    message="the restarted process did not run the handed-over execution at once")
        last = sockets[0][1]
        ws, ready = await connect_ready(second, body["access_token"], query=f"since={last['seq']}&epoch={last['epoch']}")
        assert ready["recovered"] is True, ready
        # The answer cut off by the drain ended as `interrupted`, and the resume replays it.
        failed = await next_event(ws, "agent.failed")
        assert failed["data"]["reason"] == "interrupted", failed
        await ws.close()

    try:
        asyncio.run(scenario())
    finally:
        probe.close()
        for server in servers:
            server.stop()


def test_a_drained_process_hands_over_and_a_killed_one_is_noticed_within_10_s(tmp_path):
    """Two processes, then three: SIGTERM on one hands its execution to the other at once,
    and its clients, back on the other at once, are not refused by their own ghosts under
    the per-user cap; SIGKILL on that one has a third sweep its records and run the
    execution again."""
    servers = []

    def start(name: str):
        server = start_server(tmp_path, SERVER_INSTANCE=name, WS_MAX_SOCKETS_PER_USER="2", **DRAIN)
        servers.append(server)
        return server

    async def scenario():
        a, b = await sync(start, "a"), await sync(start, "b")
        body = await sync(a.login)
        on_a = [await connect_ready(a, body["access_token"]) for _ in range(2)]  # the user's whole cap
        execution_id = await submit(on_a[0][0], LONG_BATCH)
        await until(lambda: running_on(execution_id, "a:") and records_of("a:") == 2, timeout=10)

        async def back_on_b(ws):
            assert await close_code_after_frames(ws, 15) == 1012
            return await connect_ready(b, body["access_token"])  # at once: session.ready, not 4429

        a.process.send_signal(signal.SIGTERM)
        on_b = await asyncio.gather(*(back_on_b(ws) for ws, _ in on_a))
        assert await sync(a.process.wait, 15) == 0, a.log()
        assert await sync(records_of, "a:") == 0
        started = time.monotonic()
        await until(lambda: running_on(execution_id, "b:"), timeout=5,
                    message="the other process did not run the handed-over execution at once")
        handed_over_in = time.monotonic() - started

        # SIGKILL: no drain at all. A third process notices within 10 s.
        c = await sync(start, "c")
        await until(lambda: records_of("b:") == 2, timeout=5)
        os.killpg(b.process.pid, signal.SIGKILL)
        await sync(b.process.wait, 10)
        killed = time.monotonic()
        await until(lambda: records_of("b:") == 0 and running_on(execution_id, "c:"), timeout=10,
                    message="the killed process's records or execution were not picked up within 10 s")
        noticed_in = time.monotonic() - killed
        assert not await sync(lambda: ServerInstance.objects.filter(pk__startswith="b:").exists())
        assert (await sync(execution, execution_id)).attempts == 2  # the handed-over run did not count
        print(f"handed over in {handed_over_in:.2f} s; a kill noticed in {noticed_in:.2f} s")
        for socket, _ in on_b:
            await socket.close()
        assert c.process.poll() is None

    try:
        asyncio.run(scenario())
    finally:
        for server in servers:
            server.stop()


def test_the_example_client_comes_back_after_a_restart_in_place_and_misses_nothing(tmp_path):
    """`examples/client.py --listen` against a server restarted under it: closed with 1012,
    it reconnects on its own, resumes (`recovered: true`), and sees the batch that ran on the
    stopped process finish on the restarted one."""
    first = start_server(tmp_path, SERVER_INSTANCE="example-first", **DRAIN)
    servers = [first]
    output = tmp_path / "client.out"
    user = factories.make_user()
    with open(output, "wb") as out:
        client = subprocess.Popen(
            [sys.executable, "examples/client.py", "--listen", "--pings", "0", "--url", first.http,
             "--email", user.email, "--password", factories.PASSWORD],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_until(lambda: '"session.ready"' in output.read_text(), message=lambda: output.read_text())
        token = first.login(user)["access_token"]
        session_id = re.search(r"session ([0-9a-f-]{36})", output.read_text()).group(1)
        status, accepted = first.request("POST", "/api/intent/submit", {
            "session_id": session_id, "intent_type": "batch", "parameters": {"items": list(range(40)), "delay_s": 0.1},
        }, token)
        assert status == 202, accepted
        wait_until(lambda: "execution.progress" in output.read_text(), message=lambda: output.read_text())

        first.process.send_signal(signal.SIGTERM)
        # It honours the drain's hint (`server.restart`) instead of its own backoff.
        wait_until(lambda: re.search(r"closed 1012: reconnecting in 0\.\d\d s \(the server's hint\)", output.read_text()),
                   message=lambda: output.read_text())
        assert first.process.wait(timeout=15) == 0, first.log()
        servers.append(start_server(tmp_path, port=first.port, SERVER_INSTANCE="example-second", **DRAIN))
        wait_until(lambda: '"recovered": true' in output.read_text(), timeout=20, message=lambda: output.read_text())
        wait_until(lambda: "execution.completed" in output.read_text(), timeout=20, message=lambda: output.read_text())
        assert '"recovered": false' not in output.read_text()
    finally:
        process_stop(client)
        for server in servers:
            server.stop()


def test_a_client_slower_than_the_close_handshake_still_reads_1012(tmp_path):
    """A peer that has not answered the drain's close frame within autobahn's close-handshake
    timeout (1 s) is closed with a FIN after the frame, never reset: a reset can reach a
    slow client (a browser on a busy machine) before it has read the frame, and Chromium
    then reports 1006 instead of 1012 (tests/browser/test_restart.py freezes one)."""
    server = start_server(tmp_path, **DRAIN)
    try:
        token = server.login()["access_token"]
        # A client that reads nothing while the server drains and exits: a raw socket.
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=15)
        key = base64.b64encode(os.urandom(16)).decode()
        raw.sendall(
            f"GET /api/runtime/agent HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: {server.http}\r\nSec-WebSocket-Protocol: symphainy.v1, bearer.{token}\r\n\r\n".encode()
        )
        received = b""
        while b"session.ready" not in received:
            chunk = raw.recv(65536)
            assert chunk, received
            received += chunk
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=15) == 0, server.log()
        # Now read: the hint, the close frame (1012, no reason), then the end of the stream;
        # a reset raises ConnectionResetError here.
        rest = b""
        while chunk := raw.recv(65536):
            rest += chunk
        assert b"server.restart" in rest and rest.endswith(b"\x88\x02" + (1012).to_bytes(2, "big")), rest
        raw.close()
    finally:
        server.stop()


def test_the_drain_runs_in_a_context_of_its_own(monkeypatch):
    """SIGTERM can arrive while a handshake is inside a thread-sensitive database call; the
    drain then inherited that context, where asgiref refuses every further such call
    ("Single thread executor already being used, would deadlock"), and failed."""
    from asgiref.sync import SyncToAsync
    from twisted.internet.defer import Deferred

    from symphainy import serve

    seen = []

    async def drain(**kwargs):
        seen.append(SyncToAsync.deadlock_context.get(False))

    monkeypatch.setattr("realtime.drain.drain", drain)

    async def scenario():
        SyncToAsync.deadlock_context.set(True)  # as inside a handshake's database call
        server = type("Server", (), {"connections": {}})()
        await Deferred.asFuture(serve._drain_then_kill(server), asyncio.get_running_loop())

    asyncio.run(scenario())
    assert seen == [False]


@pytest.mark.django_db(transaction=True)
def test_a_draining_process_sweeps_nothing_back_into_itself(monkeypatch):
    """A draining process releases the executions it could not finish so that another runs
    them at once; its own heartbeat, still renewing its lease, swept one straight back to
    itself (dispatched 9 ms after the hand-over), then exited, leaving it `running` until
    EXECUTION_STALE_AFTER. Once draining, the heartbeat beats and sweeps nothing."""
    from datetime import timedelta

    from django.utils import timezone

    from core.conf import runtime_settings
    from core.process import server_instance_id
    from realtime import heartbeat
    from sessions_runtime.models import Intent

    session = factories.make_session(factories.make_user())
    released = timezone.now() - runtime_settings.EXECUTION_STALE_AFTER - timedelta(seconds=1)

    def waiting_execution() -> Execution:
        intent = Intent.objects.create(session=session, user_id=session.user_id, tenant_id=session.tenant_id,
                                       intent_type="batch", parameters={})
        return Execution.objects.create(intent=intent, session=session, user_id=session.user_id,
                                        tenant_id=session.tenant_id, intent_type="batch", updated_at=released)

    dispatched = []
    monkeypatch.setattr("sessions_runtime.runner.execution_dispatch", dispatched.append)
    monkeypatch.setattr(heartbeat, "_sweeping", True)
    first = waiting_execution()
    heartbeat._beat_and_sweep()
    assert dispatched == [first.pk]  # a serving process does pick one up

    heartbeat.sweeps_stop()
    waiting_execution()
    beat_before = ServerInstance.objects.get(pk=server_instance_id()).last_heartbeat_at
    heartbeat._beat_and_sweep()
    assert dispatched == [first.pk], "a draining process took work back"
    assert ServerInstance.objects.get(pk=server_instance_id()).last_heartbeat_at > beat_before  # the lease goes on


# --- The drain's bound: whatever the sockets and the loop, it returns by the deadline ------
class StuckClose:
    """A socket whose close, once started, never completes."""

    started = False

    async def close_with(self, code: int, reason: str) -> None:
        raise AssertionError("a drain closes with restart()")

    async def restart(self, *, reconnect_after_ms: int) -> None:
        self.started = True
        await asyncio.Event().wait()


class BusyClose(StuckClose):
    """A close that holds the event loop for 5 ms: a loop too busy to keep to the schedule."""

    async def restart(self, *, reconnect_after_ms: int) -> None:
        self.started = True
        time.sleep(0.005)


def drain_with(settings, monkeypatch, sockets: list, *, window: int = 1) -> tuple[float, list[int]]:
    """Run the drain on `sockets` with SHUTDOWN_TIMEOUT 5 s and a 1 s window (the deadline
    2 s after the signal, the reserve of 3 s after it); returns how long it took and how
    many sockets were still open at each cut."""
    from datetime import timedelta

    from realtime import drain, heartbeat

    settings.SYMPHAINY = {**settings.SYMPHAINY, "SHUTDOWN_TIMEOUT": timedelta(seconds=5),
                          "SHUTDOWN_DRAIN_WINDOW": timedelta(seconds=window)}
    monkeypatch.setattr(drain, "_sockets", set(sockets))
    monkeypatch.setattr(drain, "_draining", False)
    monkeypatch.setattr(heartbeat, "_sweeping", heartbeat._sweeping)  # given back after the test
    monkeypatch.setattr(drain, "_stop_loops", lambda: asyncio.sleep(0))  # the test run's loops stay
    cuts = []

    async def stop_accepting():
        pass

    async def scenario():
        begun = time.monotonic()
        # Past the timeout the drain failed (asyncio.TimeoutError), whatever it did next.
        await asyncio.wait_for(drain.drain(stop_accepting=stop_accepting, cut=lambda: cuts.append(len(drain._sockets)) or 0), 5)
        return time.monotonic() - begun

    return asyncio.run(scenario()), cuts


@pytest.mark.django_db(transaction=True)
def test_closes_that_never_complete_do_not_hold_the_drain_past_its_deadline(settings, monkeypatch):
    """Every close started, none waited for past half the time left after the window; the
    server then cuts what is still open. The closes were awaited without a bound: a drain
    whose closes fell behind on a saturated loop took 30 s of a 25 s SHUTDOWN_TIMEOUT."""
    sockets = [StuckClose() for _ in range(200)]
    took, cuts = drain_with(settings, monkeypatch, sockets)
    assert all(socket.started for socket in sockets)
    assert cuts == [0]  # every close was started; the cut found none left unstarted
    assert took < 5, took


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("window", [1, 0])
def test_a_loop_too_busy_for_the_schedule_still_drains_by_the_deadline(settings, monkeypatch, window):
    """1,200 closes of 5 ms each are 6 s of a loop's time, more than the 5 s timeout: the
    closes start while there is time for them, then the server cuts the rest at once. With
    no window every close is due at once; handed to the loop together, they all ran before
    the wait's own timeout could."""
    sockets = [BusyClose() for _ in range(1200)]
    took, cuts = drain_with(settings, monkeypatch, sockets, window=window)
    started = sum(socket.started for socket in sockets)
    assert 0 < started < 1200 and cuts == [1200 - started], (started, cuts)
    assert took < 5, took


@contextlib.contextmanager
def connection_records_locked():
    """The connection records' table locked from another connection for as long as this
    lasts: the server's writes to it wait (SQLite up to its 20 s busy timeout, PostgreSQL
    without end), as against a database that stops answering."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        import sqlite3

        holder = sqlite3.connect(db["NAME"], isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
    else:
        import psycopg

        holder = psycopg.connect(database_env()["DATABASE_URL"])
        holder.execute(f'LOCK TABLE "{Connection._meta.db_table}" IN ACCESS EXCLUSIVE MODE')
    try:
        yield
    finally:
        if not db["ENGINE"].endswith("sqlite3"):
            # The exited server's writes still wait on the lock in sessions of their own,
            # which would keep the test database in use when the run drops it.
            holder.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'")
        holder.rollback()
        holder.close()


def test_a_drain_stuck_on_its_database_still_gives_1012_and_exits_0_before_the_timeout(tmp_path):
    """Whatever the drain waits for, the process exits 0 before SHUTDOWN_TIMEOUT (6 s here),
    not at the hard kill; and the sockets still get their 1012 first. With the connection
    records' table locked elsewhere, the drain's first write (the records, before any close)
    waited for SQLite's 20 s busy timeout, or for ever on PostgreSQL."""
    server = start_server(tmp_path, SERVER_INSTANCE="stuck", **DRAIN)
    try:
        token = server.login()["access_token"]

        async def scenario():
            sockets = [ws for ws, _ in [await connect_ready(server, token) for _ in range(3)]]
            await until(lambda: records_of("stuck") == 3, timeout=10)
            with connection_records_locked():
                signalled = time.monotonic()
                server.process.send_signal(signal.SIGTERM)
                codes = await asyncio.gather(*(close_code_after_frames(ws, 15) for ws in sockets))
                status = await sync(server.process.wait, 15)
                took = time.monotonic() - signalled
            return codes, status, took

        codes, status, took = asyncio.run(scenario())
        assert codes == [1012] * 3, server.log()
        assert status == 0 and took < 6, (status, took, server.log())
        assert "exiting now" in server.log(), server.log()
    finally:
        server.stop()
