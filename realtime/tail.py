"""This process's tail of the session event log, and its index of the sockets it holds.

One tail per event loop (one per daphne process) reads the log once per wake-up, never
once per socket, and hands each event to the sockets that care (`realtime.subscribers`,
whose index it is). It wakes on a commit of
its process, on what `realtime.wakeups` hears, and every EVENT_POLL_INTERVAL at the
latest; `realtime.cursor` keeps its place. Live frames (an agent's tokens) are not
logged: they go to this process's sockets and, on PostgreSQL, to the other processes.
How it all fits: docs/architecture.md#the-tail.

Written here, not taken from a library: channels has no log tailing and Centrifugo's
broker is a separate server; this is a loop around one indexed query.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from channels.db import database_sync_to_async
from django.db import connections

from core.conf import runtime_settings
from core.events import (
    LoggedEvent,
    log_epoch,
    log_last_id,
    log_read,
    on_live_event,
    on_local_commit,
)
from core.exceptions import DEPENDENCY_ERRORS
from core.metrics import EVENT_TAIL_LAG, EVENT_TAIL_READS
from core.tasks import tasks_stop
from realtime.catchup import AnswersInFlight
from realtime.cursor import LogCursor
from realtime.subscribers import SocketIndex
from realtime.wakeups import RETRY_PAUSE_S, LiveForwarder, SqliteWatcher, pg_listen
from sessions_runtime.answers import agent_answers_sessions

logger = logging.getLogger(__name__)
READ_LIMIT = 1000
MAX_POSITIONS = 100_000


class EventTail(SocketIndex):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.cursor: LogCursor | None = None  # where it stands, once started
        self.epoch = ""
        # The newest position read for each session (bounded): with the snapshot's own,
        # what a fresh socket's `session.ready` says without asking the database.
        self.positions: dict[uuid.UUID, int] = {}
        self.answering = AnswersInFlight()
        # Reads begun, and the number of the last one done: a read begun after a socket
        # subscribed has handed it, or told `answering` of, every event committed before.
        self.reads = 0
        self.read_done = 0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._starting: asyncio.Future | None = None
        self._forwarder: LiveForwarder | None = None
        self._watcher: SqliteWatcher | None = None
        self._closed = False

    # --- Life -------------------------------------------------------------------------
    async def start(self) -> None:
        """Start reading from the log's current end (once; later calls wait for that)."""
        if self._starting is None:
            self._starting = self.loop.create_future()
            try:
                high, self.epoch, answering = await database_sync_to_async(_start_position)()
                self.cursor = LogCursor(high)
                self.answering.load(answering)
            except BaseException as exc:
                self._starting.set_exception(exc)
                self._starting.exception()  # retrieved here: the caller sees it raised
                self._starting = None
                raise
            self._starting.set_result(None)
            if self._closed:
                return
            self._tasks.append(self.loop.create_task(self._run()))
            if connections["default"].vendor == "postgresql":
                self._tasks.append(self.loop.create_task(pg_listen(self)))
            else:
                self._watcher = SqliteWatcher.start_for(self)
        elif not self._starting.done():
            await asyncio.shield(self._starting)

    async def close(self, *, timeout: float = 5.0) -> None:
        """Stop reading and wait (at most `timeout`) for its tasks and watcher to end."""
        self._closed = True
        if _tails.get(id(self.loop)) is self:
            del _tails[id(self.loop)]
        tasks, self._tasks = self._tasks, []
        for task in await tasks_stop(tasks, timeout=timeout):
            logger.error("event tail task %r did not end when cancelled", task)
        if self._watcher is not None:
            await self._watcher.stop(timeout)

    def wake(self) -> None:
        """Read now (callable from any thread)."""
        try:
            self.loop.call_soon_threadsafe(self._wake.set)
        except RuntimeError:  # the loop closed meanwhile: nothing left to wake
            pass

    async def _run(self) -> None:
        # Not `wait_for` around the event: on Python 3.11 it returns the event's result
        # when that and a cancel() arrive together, and the loop would go on for ever
        # (CPython gh-86296). `asyncio.timeout` never turns a cancel() into a timeout.
        while True:
            try:
                async with asyncio.timeout(runtime_settings.EVENT_POLL_INTERVAL.total_seconds()):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.read_once()
            except Exception as exc:  # noqa: BLE001 - the tail must outlive any one bad read
                outage = isinstance(exc, DEPENDENCY_ERRORS)
                logger.log(logging.WARNING if outage else logging.ERROR, "could not read the session event log; "
                           "retrying", exc_info=True)
                await asyncio.sleep(RETRY_PAUSE_S)

    def forward_live(self, session_id: uuid.UUID, frame: dict[str, Any]) -> None:
        """Hand an ephemeral frame to the other processes (PostgreSQL only), in order."""
        if self._closed:
            return
        if self._forwarder is None:
            self._forwarder = LiveForwarder(self.loop)
            self._tasks.append(self._forwarder.task)
        self._forwarder.forward(session_id, frame)

    # --- Reading ----------------------------------------------------------------------
    async def read_once(self) -> int:
        """One read of the log, delivered. Returns how many rows were new."""
        if self.cursor is None:
            return 0
        now = time.monotonic()
        after, also, ranges = self.cursor.pending(now)
        self.reads += 1
        number = self.reads
        rows, epoch = await database_sync_to_async(_read)(after, also, ranges)
        EVENT_TAIL_READS.inc()
        if epoch:
            self.epoch = epoch
        fresh = self.cursor.take(rows, now)
        for row in fresh:
            self.answering.note(row)
            if row.seq > self.positions.get(row.session_id, 0):
                self.positions[row.session_id] = row.seq
        if len(self.positions) > MAX_POSITIONS:
            self.positions.clear()  # a socket then takes its snapshot's position, never a later one
        if fresh:
            EVENT_TAIL_LAG.observe(max(0.0, time.time() - fresh[-1].at.timestamp()))
            self.deliver(fresh, self.epoch)
        if len(rows) < READ_LIMIT:  # a full read leaves more: not yet all it would see
            self.read_done = number
        else:
            self._wake.set()
        return len(fresh)


def _start_position() -> tuple[int, str, list[tuple[uuid.UUID, str]]]:
    high = log_last_id()  # first: an answer that starts after it is read from the log
    return high, log_epoch(), agent_answers_sessions()


def _read(after: int, also: list[int], ranges: list[tuple[int, int]]) -> tuple[list[LoggedEvent], str]:
    # The epoch too, every time (a primary-key read): a log recreated under a running
    # process (a flush, a restore) is noticed within one poll.
    return log_read(after=after, also=also, ranges=ranges, limit=READ_LIMIT), log_epoch()


_tails: dict[int, EventTail] = {}


def tail() -> EventTail:
    """This event loop's tail (created on first use; `start()` it before subscribing)."""
    loop = asyncio.get_running_loop()
    current = _tails.get(id(loop))
    if current is None or current.loop is not loop:
        for key in [key for key, old in _tails.items() if old.loop.is_closed()]:
            del _tails[key]
        current = _tails[id(loop)] = EventTail(loop)
    return current


def _wake_all() -> None:
    for current in list(_tails.values()):
        current.wake()


def _live(session_id: uuid.UUID, frame: dict[str, Any]) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    current = _tails.get(id(loop))
    if current is not None and current.loop is loop:
        current.live(session_id, frame)
        if connections["default"].vendor == "postgresql":
            current.forward_live(session_id, frame)


on_local_commit(_wake_all)
on_live_event(_live)
