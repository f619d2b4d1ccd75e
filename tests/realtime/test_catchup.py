"""`answers_read` shared by the sockets of one session opening together, under the rule of
realtime/catchup.py: a socket's rows come from a read begun after it subscribed.

Each test runs in a `ThreadSensitiveContext`, so its "database thread" is one of its own:
the process's shared one may still be busy with a call an earlier test's loop left behind
(seen on PostgreSQL after the live tests)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import deque
from types import SimpleNamespace
from typing import Any

import pytest
from asgiref.sync import ThreadSensitiveContext
from channels.db import database_sync_to_async

from realtime import catchup
from tests.waiting import wait_until_async


class _Transport:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    async def send_frame(self, frame: dict[str, Any]) -> None:
        self.frames.append(frame)


ANSWER = uuid.UUID(int=1)


def _opening(session_id: uuid.UUID) -> Any:
    """A socket that subscribed to a tail which has done no read since (answers possible),
    holding the live token that follows the row's text (so the row needs no second read)."""
    feed = SimpleNamespace(answering=set(), read_done=0, positions={}, epoch="e")
    token = {"event_type": "agent.token", "data": {"message_id": str(ANSWER), "index": 3}}
    return SimpleNamespace(grant=SimpleNamespace(session_id=session_id), outbox=deque([("live", token, None)]),
                           transport=_Transport(), feed=feed, read_mark=0)


class _Reads:
    """`agent_answers_in_flight` on the database thread: counted, each row naming its read,
    and each held until released (so that the test decides what overlaps)."""

    def __init__(self) -> None:
        self.count = 0
        self.released = threading.Event()

    def __call__(self, *, session_id: uuid.UUID) -> list[dict[str, Any]]:
        self.count += 1
        read = self.count
        self.released.wait(30)
        return [{"pk": ANSWER, "conversation_id": "c", "question": "q", "text": f"read {read}",
                 "next_index": 3, "writes": 1, "created_at": None}]


@pytest.fixture
def reads(monkeypatch):
    reads = _Reads()
    monkeypatch.setattr(catchup, "agent_answers_in_flight", reads)
    yield reads
    reads.released.set()


async def _thread_held() -> threading.Event:
    """Hold the one database thread until the returned event is set."""
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        entered.set()
        release.wait(30)

    asyncio.get_running_loop().create_task(database_sync_to_async(hold)())
    await wait_until_async(entered.is_set, message="the database thread held")
    return release


async def test_sockets_of_a_session_opening_together_share_one_read(reads):
    async with ThreadSensitiveContext():
        await _sockets_share_one_read(reads)


async def _sockets_share_one_read(reads: _Reads) -> None:
    session_id = uuid.uuid4()
    sockets = [_opening(session_id) for _ in range(20)]
    assert all(catchup.answers_possible(socket) for socket in sockets)
    asked = []

    async def ask(socket: Any) -> list[dict[str, Any]]:
        asked.append(socket)  # then asks, in the same step
        return await catchup.answers_read(socket)

    release = await _thread_held()  # the storm: the read waits behind other work
    tasks = [asyncio.get_running_loop().create_task(ask(socket)) for socket in sockets]
    await wait_until_async(lambda: len(asked) == len(sockets), message="every socket asking")
    release.set()
    reads.released.set()
    rows = await asyncio.gather(*tasks)
    assert reads.count == 1
    for socket, socket_rows in zip(sockets, rows):
        assert await catchup.answers_snapshot(socket, socket_rows) == {str(ANSWER): 3}
        assert [(f["event_type"], f["data"]["text"]) for f in socket.transport.frames] == [("agent.snapshot", "read 1")]


async def test_a_socket_that_subscribed_after_a_read_began_gets_a_read_begun_after_it(reads):
    async with ThreadSensitiveContext():
        await _a_later_socket_gets_a_later_read(reads)


async def _a_later_socket_gets_a_later_read(reads: _Reads) -> None:
    session_id = uuid.uuid4()
    first = asyncio.get_running_loop().create_task(catchup.answers_read(_opening(session_id)))
    await wait_until_async(lambda: reads.count == 1, message="the first read begun")
    later = asyncio.get_running_loop().create_task(catchup.answers_read(_opening(session_id)))  # subscribed now
    reads.released.set()
    assert [row["text"] for row in await first] == ["read 1"]
    assert [row["text"] for row in await later] == ["read 2"]
    assert reads.count == 2
