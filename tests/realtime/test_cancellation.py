"""Every long-running loop of the socket side ends when cancelled, whatever it is doing at
that moment: waiting for its wake-up as the wake-up comes, reading, or waiting to retry
after an error. A loop that swallows its cancel() keeps a server from stopping and hangs
the test loop's teardown (issue 21: the tail's `wait_for`, CPython gh-86296)."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import OperationalError

from realtime import heartbeat, tail as tail_module, wakeups
from realtime.cursor import LogCursor
from realtime.models import Connection
from realtime.presence import ConnectionRegistry
from realtime.tail import EventTail
from tests.cancelling import BOUND, assert_ends_cancelled, until

# No test here writes to the database, but `database_sync_to_async` looks at its thread's
# connection before each call, which needs database access allowed.
pytestmark = pytest.mark.django_db


@pytest.fixture
async def quiet_tail(settings) -> EventTail:
    """A tail whose poll is an hour away and whose reads are no-ops: only the test wakes it."""
    settings.SYMPHAINY = {**settings.SYMPHAINY, "EVENT_POLL_INTERVAL": timedelta(hours=1)}
    return EventTail(asyncio.get_running_loop())


def waiting_on(event: asyncio.Event) -> bool:
    return bool(event._waiters)


# --- The tail's read loop -----------------------------------------------------------------
async def test_the_tail_ends_when_cancelled_as_its_wake_up_comes(quiet_tail):
    """gh-86296: `wait_for` returns the event when it is set in the same loop iteration as
    the cancel(), and the loop went on for ever."""
    run = asyncio.get_running_loop().create_task(quiet_tail._run())
    await until(lambda: waiting_on(quiet_tail._wake))
    quiet_tail._wake.set()
    run.cancel()
    await assert_ends_cancelled(run)


async def test_the_tail_ends_when_cancelled_just_before_its_wake_up(quiet_tail):
    run = asyncio.get_running_loop().create_task(quiet_tail._run())
    await until(lambda: waiting_on(quiet_tail._wake))
    run.cancel()
    quiet_tail._wake.set()
    await assert_ends_cancelled(run)


@pytest.mark.parametrize("turns", range(8))
async def test_the_tail_ends_when_cancelled_as_its_poll_times_out(settings, turns):
    """A poll interval of zero: every turn of the loop is a timeout that fires as the test
    cancels, at each point of the turn in order."""
    settings.SYMPHAINY = {**settings.SYMPHAINY, "EVENT_POLL_INTERVAL": timedelta(0)}
    feed = EventTail(asyncio.get_running_loop())
    reads = 0

    async def read_once() -> int:
        nonlocal reads
        reads += 1
        return 0

    feed.read_once = read_once
    run = asyncio.get_running_loop().create_task(feed._run())
    await until(lambda: reads >= 3)
    for _ in range(turns):
        await asyncio.sleep(0)
    run.cancel()
    await assert_ends_cancelled(run)


@pytest.mark.parametrize("error", [OperationalError("database is locked"), RuntimeError("a bad row")])
async def test_the_tail_ends_when_cancelled_while_it_waits_to_retry_a_failed_read(quiet_tail, error):
    reads = 0

    async def read_once() -> int:
        nonlocal reads
        reads += 1
        raise error

    quiet_tail.read_once = read_once
    run = asyncio.get_running_loop().create_task(quiet_tail._run())
    quiet_tail._wake.set()
    await until(lambda: reads == 1)
    await asyncio.sleep(0)  # into the retry's sleep
    run.cancel()
    await assert_ends_cancelled(run)
    assert reads == 1


async def test_the_tail_ends_when_cancelled_during_a_read_of_the_log(quiet_tail, monkeypatch):
    """The read runs on a database thread, which cannot be interrupted: the loop ends at
    once all the same, and the thread finishes on its own."""
    entered, release = threading.Event(), threading.Event()

    def blocked_read(after: int, also: list[int], ranges: list) -> tuple[list, str]:
        entered.set()
        release.wait(BOUND)
        return [], ""

    monkeypatch.setattr(tail_module, "_read", blocked_read)
    quiet_tail.cursor = LogCursor(0)
    run = asyncio.get_running_loop().create_task(quiet_tail._run())
    try:
        quiet_tail._wake.set()
        await until(entered.is_set)
        run.cancel()
        await assert_ends_cancelled(run)
    finally:
        release.set()


# --- The tail's PostgreSQL connections (faked: these loops are the same on any database) -
class FakeConnection:
    """A psycopg AsyncConnection as far as the tail uses it; notifications from a queue."""

    def __init__(self, *, execute_blocks: bool = False) -> None:
        self.notifications: asyncio.Queue = asyncio.Queue()
        self.executed: list[str] = []
        self.closed = False
        self.listening = asyncio.Event()
        self.execute_blocks = execute_blocks

    async def __aenter__(self) -> "FakeConnection":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.closed = True

    async def execute(self, query: str, params: Any = None) -> None:
        self.executed.append(query)
        if self.execute_blocks:
            await asyncio.Event().wait()

    async def notifies(self):
        self.listening.set()
        while True:
            yield await self.notifications.get()


class Notify:
    def __init__(self, channel: str, payload: str = "") -> None:
        self.channel, self.payload = channel, payload


def fake_connect(monkeypatch, connection: FakeConnection | Exception) -> list[int]:
    attempts: list[int] = []

    async def connect() -> FakeConnection:
        attempts.append(1)
        if isinstance(connection, Exception):
            raise connection
        return connection

    monkeypatch.setattr(wakeups, "pg_connect", connect)
    return attempts


async def test_listen_ends_when_cancelled_while_waiting_for_a_notification(quiet_tail, monkeypatch):
    connection = FakeConnection()
    fake_connect(monkeypatch, connection)
    listen = asyncio.get_running_loop().create_task(wakeups.pg_listen(quiet_tail))
    await until(connection.listening.is_set)
    listen.cancel()
    await assert_ends_cancelled(listen)
    assert connection.closed


async def test_listen_ends_when_cancelled_as_a_notification_arrives(quiet_tail, monkeypatch):
    connection = FakeConnection()
    fake_connect(monkeypatch, connection)
    listen = asyncio.get_running_loop().create_task(wakeups.pg_listen(quiet_tail))
    await until(connection.listening.is_set)
    connection.notifications.put_nowait(Notify("anything"))
    listen.cancel()
    await assert_ends_cancelled(listen)


async def test_listen_ends_when_cancelled_while_waiting_to_reconnect(quiet_tail, monkeypatch):
    attempts = fake_connect(monkeypatch, OSError("connection refused"))
    listen = asyncio.get_running_loop().create_task(wakeups.pg_listen(quiet_tail))
    await until(lambda: attempts)
    await asyncio.sleep(0)
    listen.cancel()
    await assert_ends_cancelled(listen)
    assert len(attempts) == 1


async def test_the_live_sender_ends_when_cancelled_while_sending(quiet_tail, monkeypatch, settings):
    connection = FakeConnection(execute_blocks=True)
    fake_connect(monkeypatch, connection)
    quiet_tail.forward_live(uuid.uuid4(), {"type": "agent.token", "text": "a"})
    (send,) = quiet_tail._tasks
    await until(lambda: connection.executed)
    send.cancel()
    await assert_ends_cancelled(send)


async def test_the_live_sender_ends_when_cancelled_while_waiting_for_a_frame(quiet_tail, monkeypatch):
    connection = FakeConnection()
    fake_connect(monkeypatch, connection)
    quiet_tail.forward_live(uuid.uuid4(), {"type": "agent.token", "text": "a"})
    (send,) = quiet_tail._tasks
    await until(lambda: connection.executed)
    await asyncio.sleep(0)
    send.cancel()
    await assert_ends_cancelled(send)


async def test_the_live_sender_ends_when_cancelled_while_waiting_to_reconnect(quiet_tail, monkeypatch):
    attempts = fake_connect(monkeypatch, OSError("connection refused"))
    quiet_tail.forward_live(uuid.uuid4(), {"type": "agent.token", "text": "a"})
    (send,) = quiet_tail._tasks
    await until(lambda: attempts)
    await asyncio.sleep(0)
    send.cancel()
    await assert_ends_cancelled(send)
    assert len(attempts) == 1


# --- The tail as a whole, and its SQLite watcher thread -----------------------------------
def watchers() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "event-log-watch"]


@pytest.mark.django_db(transaction=True)
async def test_close_ends_the_tails_tasks_and_its_watcher_thread(settings):
    from django.db import connection

    settings.SYMPHAINY = {**settings.SYMPHAINY, "EVENT_WATCH_INTERVAL": timedelta(milliseconds=10)}
    before = set(watchers())
    feed = tail_module.tail()
    await feed.start()
    tasks = list(feed._tasks)
    assert tasks
    if connection.vendor == "sqlite":
        assert feed._watcher is not None and feed._watcher.thread.is_alive()
    await feed.close()
    assert all(task.cancelled() for task in tasks)
    assert set(watchers()) <= before, "the watcher thread outlived its tail"
    assert tail_module.tail() is not feed, "a closed tail stays this loop's tail"


async def test_close_stops_the_watcher_while_it_waits_to_retry(settings, tmp_path, caplog):
    """A file it cannot open: the watcher waits a second before each new try, and close()
    does not wait that second out."""
    feed = EventTail(asyncio.get_running_loop())
    missing = str(tmp_path / "no such directory" / "db.sqlite3")
    feed._watcher = wakeups.SqliteWatcher(feed, path=missing, newest="SELECT 1", interval=0.001)
    with caplog.at_level(logging.WARNING, logger="realtime.wakeups"):
        feed._watcher.thread.start()
        await until(lambda: any("watcher could not read" in r.getMessage() for r in caplog.records))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await feed.close(timeout=BOUND)
    assert not feed._watcher.thread.is_alive()
    assert loop.time() - started < 0.9, "close() waited out the watcher's retry pause"


# --- The heartbeat ------------------------------------------------------------------------
@pytest.fixture
def beats(monkeypatch) -> list[str]:
    """The heartbeat with no database: each beat is recorded; a beat of "block" waits."""
    record: list[str] = []
    monkeypatch.setattr(heartbeat, "_task", None)
    monkeypatch.setattr(heartbeat, "_beat_and_sweep", lambda: record.append("beat") or 0)
    return record


async def test_the_heartbeat_ends_when_cancelled_while_it_waits(beats):
    loop_task = asyncio.get_running_loop().create_task(heartbeat._loop())
    await asyncio.sleep(0)
    loop_task.cancel()
    await assert_ends_cancelled(loop_task)


@pytest.mark.parametrize("moment", ["during", "as_it_returns"])
async def test_the_heartbeat_ends_when_cancelled_during_a_beat(monkeypatch, settings, beats, moment):
    entered, release = threading.Event(), threading.Event()

    def blocked_beat() -> int:
        entered.set()
        release.wait(BOUND)
        return 0

    settings.SYMPHAINY = {**settings.SYMPHAINY, "SERVER_HEARTBEAT_INTERVAL": timedelta(0)}
    monkeypatch.setattr(heartbeat, "_beat_and_sweep", blocked_beat)
    loop_task = asyncio.get_running_loop().create_task(heartbeat._loop())
    try:
        await until(entered.is_set)
        if moment == "as_it_returns":
            release.set()
        loop_task.cancel()
        await assert_ends_cancelled(loop_task)
    finally:
        release.set()


async def test_a_failed_sweep_does_not_stop_the_heartbeat_and_a_cancel_still_does(monkeypatch, settings, beats):
    def beat() -> int:
        beats.append("beat")
        if len(beats) == 1:
            raise ValueError("a sweep's bug")
        return 0

    settings.SYMPHAINY = {**settings.SYMPHAINY, "SERVER_HEARTBEAT_INTERVAL": timedelta(0)}
    monkeypatch.setattr(heartbeat, "_beat_and_sweep", beat)
    loop_task = asyncio.get_running_loop().create_task(heartbeat._loop())
    await until(lambda: len(beats) >= 3 or loop_task.done())
    assert not loop_task.done(), f"the heartbeat stopped: {loop_task.exception()!r}"
    loop_task.cancel()
    await assert_ends_cancelled(loop_task)


async def test_stop_ends_this_loops_heartbeat(beats):
    await heartbeat.ensure_running()
    task = heartbeat._task
    assert task is not None and not task.done()
    await heartbeat.stop()
    assert task.cancelled()
    await heartbeat.ensure_running()  # and it can start again
    assert heartbeat._task is not task
    await heartbeat.stop()


# --- The connection-record flusher --------------------------------------------------------
@pytest.fixture
def writes(monkeypatch, settings) -> list[tuple[list[str], list[str]]]:
    """Connection-record writes, recorded instead of made; a quick flush interval."""
    settings.SYMPHAINY = {**settings.SYMPHAINY, "WS_CONNECTION_FLUSH_INTERVAL": timedelta(milliseconds=1)}
    record: list[tuple[list[str], list[str]]] = []
    monkeypatch.setattr(
        "realtime.presence._apply", lambda opened, closed: record.append(([c.channel_name for c in opened], closed))
    )
    return record


def record_of(name: str) -> Connection:
    return Connection(channel_name=name)


async def test_the_flusher_ends_when_cancelled_while_it_waits(writes, settings):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "WS_CONNECTION_FLUSH_INTERVAL": timedelta(hours=1)}
    registry = ConnectionRegistry(asyncio.get_running_loop())
    registry.opened(record_of("a"))
    flusher = registry._flusher
    await asyncio.sleep(0)
    flusher.cancel()
    await assert_ends_cancelled(flusher)
    await registry.close()
    assert writes == [(["a"], [])], "close() does not write what was pending"


async def test_the_flusher_ends_when_cancelled_during_a_write(monkeypatch, writes):
    entered, release = threading.Event(), threading.Event()

    def blocked_apply(opened: list, closed: list) -> None:
        entered.set()
        release.wait(BOUND)

    monkeypatch.setattr("realtime.presence._apply", blocked_apply)
    registry = ConnectionRegistry(asyncio.get_running_loop())
    registry.opened(record_of("a"))
    flusher = registry._flusher
    try:
        await until(entered.is_set)
        flusher.cancel()
        await assert_ends_cancelled(flusher)
    finally:
        release.set()


async def test_a_failed_write_is_retried_without_waiting_for_another_socket(monkeypatch, writes):
    failures = [OperationalError("database is locked")]

    def apply(opened: list, closed: list) -> None:
        if failures:
            raise failures.pop()
        writes.append(([c.channel_name for c in opened], closed))

    monkeypatch.setattr("realtime.presence._apply", apply)
    registry = ConnectionRegistry(asyncio.get_running_loop())
    registry.opened(record_of("a"))
    await until(lambda: writes, message="the failed write was never retried")
    assert writes == [(["a"], [])]
    await registry.close()


async def test_a_socket_that_opens_during_a_write_is_written_too(monkeypatch, writes):
    entered, release = threading.Event(), threading.Event()

    def apply(opened: list, closed: list) -> None:
        if not entered.is_set():
            entered.set()
            release.wait(BOUND)
        writes.append(([c.channel_name for c in opened], closed))

    monkeypatch.setattr("realtime.presence._apply", apply)
    registry = ConnectionRegistry(asyncio.get_running_loop())
    registry.opened(record_of("a"))
    try:
        await until(entered.is_set)
        registry.opened(record_of("b"))
    finally:
        release.set()
    await until(lambda: len(writes) == 2, message="the record opened during a write was left pending")
    assert writes == [(["a"], []), (["b"], [])]
    await registry.close()


# --- The agent answers' keeper ------------------------------------------------------------
async def test_the_answer_keeper_ends_on_a_cancel_swallowed_during_a_step(monkeypatch, settings):
    """A library may turn a cancel() into an error of its own (redis-py, a connection
    error), which the keeper takes for a failed step and retries: it must end all the same."""
    from sessions_runtime import agents

    settings.SYMPHAINY = {**settings.SYMPHAINY, "AGENT_SNAPSHOT_INTERVAL": timedelta(milliseconds=1)}
    loop = asyncio.get_running_loop()
    steps: list[str] = []

    async def step_swallowing_its_first_cancel(**_: Any) -> dict:
        steps.append("step")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if steps.count("swallowed"):
                raise
            steps.append("swallowed")
            raise ConnectionError("the cancel, as a library reports it") from None
        return {}

    monkeypatch.setattr(agents, "database_sync_to_async", lambda _: step_swallowing_its_first_cancel)
    agent = loop.create_task(asyncio.Event().wait())  # the answer's own task, running
    run = agents.RunningAnswer(answer_id=uuid.uuid4(), session_id=uuid.uuid4(), conversation_id="c", loop=loop,
                               tokens=["a "], task=agent)
    monkeypatch.setattr(agents, "_running", {run.answer_id: run})
    keeper = loop.create_task(agents._keep(loop))
    try:
        await until(lambda: steps == ["step"])
        keeper.cancel()
        await assert_ends_cancelled(keeper)
        assert steps == ["step", "swallowed"], "the keeper stepped again after its cancel()"
    finally:
        agent.cancel()
