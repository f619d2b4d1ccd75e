"""Resumes over a real daphne process: a user resuming big replays on several sockets does
not hold up another user's handshake, and a client that reads its replay slowly but keeps
reading gets all of it instead of being dropped by the send-buffer guard."""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import time
import uuid

import pytest
import websockets

from core.events import Event, events_record, log_epoch
from tests import factories
from tests.live import ORIGIN, running

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]
PATH = "/api/runtime/agent"
MEGABYTE_OF_TEXT = "m" * 1_000_000


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, tmp_path_factory):
    # Replays up to 32 MiB, so that big ones are read and sent rather than refused; a small
    # send buffer, so that a replay written all at once would be cut off; every handshake
    # asks the database (no access snapshot), as a first handshake does.
    with running(tmp_path_factory.mktemp("daphne"), REPLAY_MAX_BYTES=str(32 * 1024 * 1024),
                 WS_MAX_SEND_BUFFER_BYTES=str(64 * 1024), ACCESS_CACHE_TTL_SECONDS="0") as live:
        yield live


def login(server) -> dict:
    user = factories.make_user()
    status, body = server.request("POST", "/api/auth/login", {"email": user.email, "password": factories.PASSWORD})
    assert status == 200, body
    return body


def record(session_id: str, count: int, text: str) -> None:
    events_record(Event(session_id=uuid.UUID(session_id), kind="session.state_changed", data={"i": i, "text": text})
                  for i in range(count))


def url(server, token: str, query: str = "") -> tuple[str, dict]:
    return f"{server.ws}{PATH}{'?' + query if query else ''}", {
        "origin": ORIGIN, "subprotocols": ["symphainy.v1", f"bearer.{token}"], "open_timeout": 60, "max_size": None,
    }


async def handshake_seconds(server, token: str) -> float:
    """From connecting to `session.ready`."""
    address, options = url(server, token)
    began = time.monotonic()
    async with websockets.connect(address, **options) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 60))["type"] == "session.ready"
        return time.monotonic() - began


def test_a_big_resume_does_not_hold_up_another_users_handshake(server):
    resuming, other = login(server), login(server)
    record(resuming["session_id"], 8, MEGABYTE_OF_TEXT)  # ~8 MB a replay
    epoch = log_epoch()
    sockets = 10

    async def scenario() -> tuple[float, float, list[float], float]:
        baseline = max([await handshake_seconds(server, other["access_token"]) for _ in range(3)])
        ready_at: list[float] = []
        first_ready = asyncio.Event()

        async def resume() -> int:
            address, options = url(server, resuming["access_token"], f"since=0&epoch={epoch}")
            async with websockets.connect(address, **options) as ws:
                ready = json.loads(await asyncio.wait_for(ws.recv(), 120))
                assert ready["recovered"] is True, ready
                ready_at.append(time.monotonic())
                first_ready.set()
                got = [json.loads(await asyncio.wait_for(ws.recv(), 120))["seq"] for _ in range(8)]
                assert got == list(range(1, 9))
                return len(got)

        resumes = [asyncio.ensure_future(resume()) for _ in range(sockets)]
        # One replay has been read: the others are being read now.
        await asyncio.wait_for(first_ready.wait(), 120)
        loaded = await handshake_seconds(server, other["access_token"])
        other_ready = time.monotonic()
        assert await asyncio.gather(*resumes) == [8] * sockets
        return baseline, loaded, ready_at, other_ready

    baseline, loaded, ready_at, other_ready = asyncio.run(scenario())
    spread = max(ready_at) - min(ready_at)
    detail = f"idle {baseline:.3f} s, under the resumes {loaded:.3f} s, resumes ready over {spread:.3f} s"
    # The other user's handshake finished while the resumes' replays were still being read,
    assert other_ready < max(ready_at), detail
    # and took no more than a loaded machine's handful of idle handshakes.
    assert loaded < 10 * baseline, detail
    print(detail)


def test_a_slow_reader_that_keeps_reading_gets_its_whole_replay(server):
    body = login(server)
    record(body["session_id"], 50, "s" * 15_000)  # ~750 KB, twelve times the send buffer
    epoch = log_epoch()

    async def scenario() -> list[int]:
        address, options = url(server, body["access_token"], f"since=0&epoch={epoch}")
        # A small receive window and a pause per frame: a client on a slow link.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        sock.connect(("127.0.0.1", server.port))
        async with websockets.connect(address, sock=sock, max_queue=1, **options) as ws:
            ready = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert ready["recovered"] is True and ready["seq"] == 50
            seqs = []
            for _ in range(50):
                seqs.append(json.loads(await asyncio.wait_for(ws.recv(), 30))["seq"])
                await asyncio.sleep(0.01)  # the client's own pace, not a wait for the server
            await ws.send(json.dumps({"type": "ping"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 30)) == {"type": "pong"}
            return seqs

    assert asyncio.run(scenario()) == list(range(1, 51))
    assert "stopped reading" not in server.log()
