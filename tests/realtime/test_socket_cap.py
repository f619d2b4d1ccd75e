"""The per-user socket cap over real daphne processes on PostgreSQL + Redis: a burst spread
over two processes leaves at most the cap open; a place is given back when a socket
closes, when a process is killed (once its heartbeat is stale) and when a handshake is
refused after it took one."""

from __future__ import annotations

import asyncio
import json
import os
import signal

from websockets.exceptions import ConnectionClosed

from tests.conftest import services_server_marks
from tests.live import running
from tests.sockets import connect, connect_ready, refusal_code
from tests.waiting import wait_until_async

pytestmark = services_server_marks()


async def first_answer(server, token: str) -> tuple[str, object]:
    """Open a socket: ("open", the socket) when session.ready came first, else ("closed", code)."""
    ws = await connect(server, token)
    try:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 20))
    except ConnectionClosed as closed:
        return "closed", closed.rcvd.code if closed.rcvd else None
    assert frame["type"] == "session.ready", frame
    return "open", ws


async def burst(servers, token: str, count: int) -> tuple[list, list]:
    """`count` handshakes at once, spread evenly over `servers`: (open sockets, close codes)."""
    answers = await asyncio.gather(*(first_answer(servers[i % len(servers)], token) for i in range(count)))
    return [ws for kind, ws in answers if kind == "open"], [code for kind, code in answers if kind == "closed"]


async def opens(server, token: str) -> bool:
    """Whether a socket opens now (closed again at once)."""
    kind, ws = await first_answer(server, token)
    if kind == "open":
        await ws.close()
    return kind == "open"


async def open_once_given_back(server, token: str, *, timeout: float = 2):
    """A socket opened as soon as a place is free (the closing process gives it back when
    the disconnect reaches it, a moment after the client saw the close)."""
    opened = []

    async def attempt() -> bool:
        kind, ws = await first_answer(server, token)
        if kind == "open":
            opened.append(ws)
        return kind == "open"

    await wait_until_async(attempt, timeout=timeout, message="a place given back")
    return opened[0]


async def close_all(sockets) -> None:
    await asyncio.gather(*(ws.close() for ws in sockets))


def test_sixty_handshakes_at_once_over_two_processes_leave_the_cap_open(tmp_path):
    with running(tmp_path) as a, running(tmp_path) as b:
        token = a.login()["access_token"]

        async def scenario():
            opened, refused = await burst([a, b], token, 60)
            try:
                assert len(opened) == 20, f"{len(opened)} open over two processes, the cap is 20"
                assert set(refused) == {4429}
            finally:
                await close_all(opened)

        asyncio.run(scenario())


def test_a_closed_socket_gives_its_place_back_on_the_other_process(tmp_path):
    with running(tmp_path, WS_MAX_SOCKETS_PER_USER="3") as a, running(tmp_path, WS_MAX_SOCKETS_PER_USER="3") as b:
        token = a.login()["access_token"]

        async def scenario():
            on_a = [(await connect_ready(a, token))[0] for _ in range(3)]
            assert await refusal_code(b, token) == 4429
            await on_a.pop().close()
            # Given back at once: not when the connection records are next written.
            replacement = await open_once_given_back(b, token)
            assert await refusal_code(b, token) == 4429
            assert await refusal_code(a, token) == 4429
            await close_all([*on_a, replacement])
            # And a connection that drops without a close handshake gives its place back too.
            held = [await open_once_given_back(b, token) for _ in range(3)]
            held[0].transport.abort()
            await wait_until_async(lambda: opens(a, token), message="the aborted socket's place back")
            await close_all(held[1:])

        asyncio.run(scenario())


def test_the_places_of_a_killed_process_come_back_once_its_heartbeat_is_stale(tmp_path):
    quick = {"WS_MAX_SOCKETS_PER_USER": "3", "SERVER_HEARTBEAT_INTERVAL_SECONDS": "1",
             "SERVER_STALE_AFTER_SECONDS": "4"}
    with running(tmp_path, **quick) as doomed, running(tmp_path, **quick) as survivor:
        token = survivor.login()["access_token"]

        async def scenario():
            held = [(await connect_ready(doomed, token))[0] for _ in range(3)]
            assert await refusal_code(survivor, token) == 4429
            os.killpg(doomed.process.pid, signal.SIGKILL)
            doomed.process.wait(timeout=10)
            # No close ever comes from the dead process: its places come back when its
            # heartbeat is older than SERVER_STALE_AFTER, and not before.
            assert await refusal_code(survivor, token) == 4429
            await wait_until_async(lambda: opens(survivor, token), timeout=30,
                                   message="the killed process's places back")
            sockets = [await open_once_given_back(survivor, token) for _ in range(3)]
            assert await refusal_code(survivor, token) == 4429
            await close_all(sockets)
            for ws in held:
                ws.transport.abort()

        asyncio.run(scenario())


def test_refused_handshakes_take_no_place(tmp_path):
    with running(tmp_path, WS_MAX_SOCKETS_PER_USER="4") as a, running(tmp_path, WS_MAX_SOCKETS_PER_USER="4") as b:
        body = a.login()
        token = body["access_token"]

        async def scenario():
            # Refused by the cap, on both processes, many times over.
            held = [(await connect_ready(server, token))[0] for server in (a, b, a, b)]
            _, refused = await burst([a, b], token, 20)
            assert refused == [4429] * 20
            await close_all(held)
            # Refused for another reason: a session of the user that has ended.
            status, other = await asyncio.to_thread(a.request, "POST", "/api/session/create", {}, token)
            assert status == 201, other
            status, _ = await asyncio.to_thread(a.request, "DELETE", f"/api/session/{other['session_id']}", None, token)
            assert status == 204
            for server in (a, b, a, b, a, b):
                assert await refusal_code(server, token, query=f"session_id={other['session_id']}") == 4409
            # None of them kept a place: the whole cap opens, over both processes (once the
            # closes of the first four have reached their processes).
            async def whole_cap_opens() -> bool:
                opened, _ = await burst([a, b], token, 4)
                await close_all(opened)
                return len(opened) == 4

            await wait_until_async(whole_cap_opens, timeout=5, message="the whole cap open")

        asyncio.run(scenario())

