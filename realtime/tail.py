"""This process's tail of the session event log, and its index of the sockets it holds.

One tail per event loop (one per daphne process) reads the log once per wake-up, never
once per socket, and hands each event to the sockets that care:

- by the session a socket is on: every event (replayable ones become frames);
- by the session its token belongs to: the end of that session and access changes, so a
  socket opened on session X with a token of session S closes when S ends.

It wakes on PostgreSQL's NOTIFY, on a commit made in this process, on the embedded
SQLite when its watcher sees another process's commit add a row (every
EVENT_WATCH_INTERVAL), and every EVENT_POLL_INTERVAL at the latest (what covers a NOTIFY
lost with its connection on PostgreSQL, or a watcher that stopped). The channel layer
plays no part.

Ephemeral frames (an agent's tokens) are not logged: they go to this process's sockets of
the session and, on PostgreSQL, to the other processes by a NOTIFY of their own. On the
embedded SQLite (one serving process) there are no other processes to reach.

Ids are handed out when a row is inserted, not when it commits, so on PostgreSQL a row
can become visible after a higher id was read. Such a hole is read again on each wake-up
for up to EVENT_GAP_WAIT, then given up (it was a rolled-back insert).

Written here, not taken from a library: channels has no log tailing and Centrifugo's
broker is a separate server; this is a loop around one indexed query.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections import defaultdict
from typing import Any, Protocol

from channels.db import database_sync_to_async
from django.db import connections

from core.conf import runtime_settings
from core.events import (
    ACCESS_CHANGED,
    CONTROL_KINDS,
    NOTIFY_CHANNEL,
    SESSION_ENDED,
    LoggedEvent,
    log_epoch,
    log_last_id,
    log_read,
    on_live_event,
    on_local_commit,
)
from core.exceptions import DEPENDENCY_ERRORS, CloseCode
from core.metrics import EVENT_TAIL_DELIVERED, EVENT_TAIL_LAG, EVENT_TAIL_READS
from core.process import server_instance_id
from core.tasks import tasks_stop
from sessions_runtime.access import access_cache_drop_local

logger = logging.getLogger(__name__)
READ_LIMIT = 1000
# Ephemeral frames (agent tokens) for the other processes, on PostgreSQL: a NOTIFY each,
# never written to the log. PostgreSQL caps a payload below 8,000 bytes.
LIVE_CHANNEL = "symphainy_live_frames"
LIVE_PAYLOAD_MAX = 7900
# A hole wider than this is a jump of the id sequence (after a crash, PostgreSQL skips
# ahead), not rows in flight: it is not waited for.
MAX_GAP = 1000
MAX_POSITIONS = 100_000


class Subscriber(Protocol):
    def log_events(self, events: list[LoggedEvent], epoch: str) -> None: ...
    def log_ended(self, close_code: int, reason: str, ended_at: float) -> None: ...
    def log_access_changed(self, role: str) -> None: ...
    def live_frame(self, frame: dict[str, Any]) -> None: ...


class EventTail:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.high: int | None = None  # every id up to here was handed out or given up
        self.gaps: dict[int, float] = {}  # missing ids below `high`: when first missed
        self.epoch = ""
        # The newest position read for each session (bounded): with the snapshot's own,
        # what a fresh socket's `session.ready` says without asking the database.
        self.positions: dict[uuid.UUID, int] = {}
        self.by_session: dict[uuid.UUID, set[Subscriber]] = defaultdict(set)
        self.by_token_session: dict[uuid.UUID, set[Subscriber]] = defaultdict(set)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._starting: asyncio.Future | None = None
        self._live_out: asyncio.Queue | None = None
        self._watcher: threading.Thread | None = None
        self._stopping = threading.Event()  # ends the watcher thread
        self._closed = False

    # --- Life -------------------------------------------------------------------------
    async def start(self) -> None:
        """Start reading from the log's current end (once; later calls wait for that)."""
        if self._starting is None:
            self._starting = self.loop.create_future()
            try:
                self.high, self.epoch = await database_sync_to_async(_start_position)()
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
                self._tasks.append(self.loop.create_task(self._listen()))
            elif connections["default"].vendor == "sqlite":
                self._watch_sqlite()
        elif not self._starting.done():
            await asyncio.shield(self._starting)

    async def close(self, *, timeout: float = 5.0) -> None:
        """Stop reading: cancel the tail's tasks, stop its watcher thread and wait (at most
        `timeout` each) for them to end. This loop's next `tail()` is a new one."""
        self._closed = True
        if _tails.get(id(self.loop)) is self:
            del _tails[id(self.loop)]
        self._stopping.set()
        tasks, self._tasks = self._tasks, []
        for task in await tasks_stop(tasks, timeout=timeout):
            logger.error("event tail task %r did not end when cancelled", task)
        if self._watcher is not None:
            await asyncio.to_thread(self._watcher.join, timeout)

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
            except DEPENDENCY_ERRORS:
                logger.warning("could not read the session event log; retrying", exc_info=True)
                await asyncio.sleep(1.0)
            except Exception:  # noqa: BLE001 - the tail must outlive any one bad read
                logger.exception("session event tail failed a read; retrying")
                await asyncio.sleep(1.0)

    async def _listen(self) -> None:
        """LISTEN on a connection of its own (psycopg's async connection: no thread)."""
        me = server_instance_id()
        while True:
            try:
                async with await _pg_connect() as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    await conn.execute(f"LISTEN {LIVE_CHANNEL}")
                    self._wake.set()  # what committed while not listening
                    async for notify in conn.notifies():
                        if notify.channel != LIVE_CHANNEL:
                            self._wake.set()
                            continue
                        message = json.loads(notify.payload)
                        if message.get("p") != me:
                            self.live(uuid.UUID(message["s"]), message["f"])
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the poll carries on meanwhile
                logger.warning("event log LISTEN connection lost; reconnecting", exc_info=True)
                await asyncio.sleep(1.0)

    def _watch_sqlite(self) -> None:
        """Wake on another process's commit to the embedded SQLite file (a `manage.py`
        command, a second server process), within EVENT_WATCH_INTERVAL instead of the poll.

        SQLite has no NOTIFY. A thread of this tail's own asks its own connection for
        `PRAGMA data_version` (it changes when any other connection has committed: a
        read of the WAL index, no table and no lock) and, only when it changed, for the
        log's newest id; the tail is woken when that moved. Nothing of this runs on the
        event loop or on Django's database thread, where the handshakes' queries run."""
        interval = runtime_settings.EVENT_WATCH_INTERVAL.total_seconds()
        database = connections["default"]
        path = database.settings_dict["NAME"]
        if database.vendor != "sqlite" or interval <= 0 or database.creation.is_in_memory_db(path):
            return  # one process only: its own commits wake it already
        from core.models import SessionEvent

        newest = f"SELECT max(id) FROM {database.ops.quote_name(SessionEvent._meta.db_table)}"
        self._watcher = threading.Thread(
            target=self._watch, args=(str(path), newest, interval), name="event-log-watch", daemon=True
        )
        self._watcher.start()

    def _watch(self, path: str, newest: str, interval: float) -> None:
        """Until `close()` (or the event loop closes), every `interval`."""
        version = top = None
        watcher: sqlite3.Connection | None = None
        while not self._stopping.wait(interval) and not self.loop.is_closed():
            try:
                if watcher is None:
                    watcher = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=1.0)
                current = watcher.execute("PRAGMA data_version").fetchone()[0]
                if current == version:
                    continue
                version = current
                latest = watcher.execute(newest).fetchone()[0]
                if latest != top:
                    top = latest
                    self.wake()
            except sqlite3.Error:  # a locked or replaced file: the poll covers it meanwhile
                logger.warning("event log watcher could not read the database; retrying", exc_info=True)
                if watcher is not None:
                    watcher.close()
                watcher = None
                self._stopping.wait(1.0)
        if watcher is not None:
            watcher.close()

    def forward_live(self, session_id: uuid.UUID, frame: dict[str, Any]) -> None:
        """Hand an ephemeral frame to the other processes (PostgreSQL only), in order."""
        if self._closed:
            return
        if self._live_out is None:
            self._live_out = asyncio.Queue(maxsize=10_000)
            self._tasks.append(self.loop.create_task(self._send_live()))
        payload = json.dumps({"p": server_instance_id(), "s": str(session_id), "f": frame}, separators=(",", ":"))
        if len(payload.encode()) > LIVE_PAYLOAD_MAX or self._live_out.full():
            logger.info("live frame for %s not forwarded to other processes (too big or backlogged)", session_id)
            return
        self._live_out.put_nowait(payload)

    async def _send_live(self) -> None:
        assert self._live_out is not None
        while True:
            payload = await self._live_out.get()
            try:
                async with await _pg_connect() as conn:
                    while True:
                        await conn.execute("SELECT pg_notify(%s, %s)", [LIVE_CHANNEL, payload])
                        payload = await self._live_out.get()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - live frames are best effort; the log is not
                logger.warning("could not forward a live frame; reconnecting", exc_info=True)
                await asyncio.sleep(1.0)

    # --- Reading ----------------------------------------------------------------------
    async def read_once(self) -> int:
        """One read of the log, delivered. Returns how many rows were new."""
        if self.high is None:
            return 0
        now = time.monotonic()
        give_up = now - runtime_settings.EVENT_GAP_WAIT.total_seconds()
        for missing in [i for i, since in self.gaps.items() if since < give_up]:
            del self.gaps[missing]
        rows, epoch = await database_sync_to_async(_read)(self.high, list(self.gaps))
        EVENT_TAIL_READS.inc()
        if epoch:
            self.epoch = epoch
        fresh = []
        for row in rows:
            if row.id in self.gaps:
                del self.gaps[row.id]
            elif row.id > self.high:
                if row.id - self.high - 1 <= MAX_GAP:
                    for missing in range(self.high + 1, row.id):
                        self.gaps[missing] = now
                self.high = row.id
            else:
                continue
            fresh.append(row)
            if row.seq > self.positions.get(row.session_id, 0):
                self.positions[row.session_id] = row.seq
        if len(self.positions) > MAX_POSITIONS:
            self.positions.clear()  # a socket then takes its snapshot's position, never a later one
        if fresh:
            EVENT_TAIL_LAG.observe(max(0.0, time.time() - fresh[-1].at.timestamp()))
            self._deliver(fresh)
        if len(rows) >= READ_LIMIT:
            self._wake.set()
        return len(fresh)

    def _deliver(self, rows: list[LoggedEvent]) -> None:
        frames: dict[Subscriber, list[LoggedEvent]] = defaultdict(list)
        delivered = 0
        for row in rows:
            if row.kind in CONTROL_KINDS:
                # A snapshot of this session in this process's cache is stale now.
                access_cache_drop_local([row.session_id])
                targets = self.by_session.get(row.session_id, set()) | self.by_token_session.get(row.session_id, set())
                for subscriber in targets:
                    if row.kind == SESSION_ENDED:
                        subscriber.log_ended(
                            int(row.data.get("close_code", CloseCode.SESSION_ENDED)), str(row.data.get("reason", "")), row.at.timestamp()
                        )
                    elif row.kind == ACCESS_CHANGED:
                        subscriber.log_access_changed(str(row.data.get("role", "")))
                delivered += len(targets)
            else:
                for subscriber in self.by_session.get(row.session_id, ()):
                    frames[subscriber].append(row)
        for subscriber, events in frames.items():
            subscriber.log_events(events, self.epoch)
            delivered += len(events)
        if delivered:
            EVENT_TAIL_DELIVERED.inc(delivered)

    def live(self, session_id: uuid.UUID, frame: dict[str, Any]) -> None:
        for subscriber in list(self.by_session.get(session_id, ())):
            subscriber.live_frame(frame)

    # --- The index --------------------------------------------------------------------
    def subscribe(self, subscriber: Subscriber, *, session_id: uuid.UUID, token_session_id: uuid.UUID) -> None:
        self.by_session[session_id].add(subscriber)
        if token_session_id != session_id:
            self.by_token_session[token_session_id].add(subscriber)

    def unsubscribe(self, subscriber: Subscriber, *, session_id: uuid.UUID, token_session_id: uuid.UUID) -> None:
        for index, key in ((self.by_session, session_id), (self.by_token_session, token_session_id)):
            members = index.get(key)
            if members is not None:
                members.discard(subscriber)
                if not members:
                    del index[key]


async def _pg_connect() -> Any:
    import psycopg

    params = connections["default"].get_connection_params()
    for name in ("cursor_factory", "context", "prepare_threshold"):
        params.pop(name, None)
    return await psycopg.AsyncConnection.connect(**params, autocommit=True)


def _start_position() -> tuple[int, str]:
    return log_last_id(), log_epoch()


def _read(after: int, also: list[int]) -> tuple[list[LoggedEvent], str]:
    # The epoch too, every time (a primary-key read): a log recreated under a running
    # process (a flush, a restore) is noticed within one poll.
    return log_read(after=after, also=also, limit=READ_LIMIT), log_epoch()


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
