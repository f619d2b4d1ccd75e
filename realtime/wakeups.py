"""What wakes a process's tail of the event log, and how live frames cross processes.

- PostgreSQL: a LISTEN connection of the tail's own (psycopg's async connection: no
  thread) wakes it on each NOTIFY a commit to the log sends, and brings the live frames
  (an agent's tokens) other processes forward on a channel of their own; `LiveForwarder`
  sends this process's live frames there, in order.
- The embedded SQLite has no NOTIFY: `SqliteWatcher`, a thread with a connection of its
  own, wakes the tail when another process's commit adds a row.
Both only shorten the wait: the tail also reads every EVENT_POLL_INTERVAL
(docs/architecture.md#the-session-event-log).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import uuid
from typing import Any, Protocol

from django.db import connections

from core.conf import runtime_settings
from core.events import NOTIFY_CHANNEL
from core.process import server_instance_id



class Woken(Protocol):
    """What is woken: a tail (`realtime.tail.EventTail`, which starts these)."""

    loop: asyncio.AbstractEventLoop

    def wake(self) -> None: ...
    def live(self, session_id: uuid.UUID, frame: dict[str, Any]) -> None: ...

logger = logging.getLogger(__name__)
# Ephemeral frames (agent tokens) for the other processes, on PostgreSQL: a NOTIFY each,
# never written to the log. PostgreSQL caps a payload below 8,000 bytes.
LIVE_CHANNEL = "symphainy_live_frames"
LIVE_PAYLOAD_MAX = 7900
LIVE_BACKLOG_MAX = 10_000
# Payloads sent by one statement (one round trip) when frames queue up faster than round
# trips come back: ~125 KB, delivered in order like separate NOTIFYs of one transaction.
LIVE_NOTIFIES_PER_STATEMENT = 16
# After a lost connection or a failed read, the pause before trying again.
RETRY_PAUSE_S = 1.0


async def pg_connect() -> Any:
    """A connection of its own to the default PostgreSQL database, outside Django's pool."""
    import psycopg

    params = connections["default"].get_connection_params()
    for name in ("cursor_factory", "context", "prepare_threshold"):
        params.pop(name, None)
    return await psycopg.AsyncConnection.connect(**params, autocommit=True)


async def pg_listen(feed: Woken) -> None:
    """LISTEN for commits to the log (wake `feed`) and other processes' live frames."""
    me = server_instance_id()
    while True:
        try:
            async with await pg_connect() as conn:
                await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                await conn.execute(f"LISTEN {LIVE_CHANNEL}")
                feed.wake()  # what committed while not listening
                async for notify in conn.notifies():
                    if notify.channel != LIVE_CHANNEL:
                        feed.wake()
                        continue
                    messages = json.loads(notify.payload)
                    for message in messages if isinstance(messages, list) else [messages]:
                        if message.get("p") != me:
                            feed.live(uuid.UUID(message["s"]), message["f"])
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the poll carries on meanwhile
            logger.warning("event log LISTEN connection lost; reconnecting", exc_info=True)
            await asyncio.sleep(RETRY_PAUSE_S)


class LiveForwarder:
    """This process's live frames for the other processes (PostgreSQL), sent in order by
    one task over one connection; best effort, as live frames are."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=LIVE_BACKLOG_MAX)
        self._held: str | None = None
        self.task = loop.create_task(self._send())

    def forward(self, session_id: uuid.UUID, frame: dict[str, Any]) -> None:
        payload = json.dumps({"p": server_instance_id(), "s": str(session_id), "f": frame}, separators=(",", ":"))
        if len(payload.encode()) > LIVE_PAYLOAD_MAX or self.queue.full():
            logger.info("live frame for %s not forwarded to other processes (too big or backlogged)", session_id)
            return
        self.queue.put_nowait(payload)

    async def _send(self) -> None:
        while True:
            payload = await self._next()
            try:
                async with await pg_connect() as conn:
                    while True:
                        await conn.execute(*self._statement(payload))
                        payload = await self._next()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - live frames are best effort; the log is not
                logger.warning("could not forward a live frame; reconnecting", exc_info=True)
                await asyncio.sleep(RETRY_PAUSE_S)


    def _statement(self, first: str) -> tuple[str, list[str]]:
        """`first` and the frames queued behind it as one statement of up to
        LIVE_NOTIFIES_PER_STATEMENT NOTIFYs: one round trip however far behind the sending is
        (100 answers streaming over two processes on a busy machine fell ~0.5 s behind with
        one NOTIFY per round trip; bench/README.md)."""
        params = [LIVE_CHANNEL, self._batch(first)]
        while len(params) < 2 * LIVE_NOTIFIES_PER_STATEMENT and (self._held is not None or not self.queue.empty()):
            following, self._held = (self._held, None) if self._held is not None else (self.queue.get_nowait(), None)
            params += [LIVE_CHANNEL, self._batch(following)]
        return "SELECT " + ", ".join(["pg_notify(%s, %s)"] * (len(params) // 2)), params

    def _batch(self, first: str) -> str:
        """`first` and the frames queued behind it, as one payload within LIVE_PAYLOAD_MAX (a
        JSON array): one NOTIFY per batch, so many answers streaming at once do not queue
        one round trip per token."""
        payloads, size = [first], len(first.encode())
        while not self.queue.empty():
            following = self.queue.get_nowait()
            length = len(following.encode())
            if size + length + 3 > LIVE_PAYLOAD_MAX:
                self._held = following  # the next batch's first
                break
            payloads.append(following)
            size += length + 1
        return first if len(payloads) == 1 else "[" + ",".join(payloads) + "]"

    async def _next(self) -> str:
        if self._held is not None:
            payload, self._held = self._held, None
            return payload
        return await self.queue.get()


class SqliteWatcher:
    """Wakes a tail on another process's commit to the embedded SQLite file (a `manage.py`
    command, a second server process) within EVENT_WATCH_INTERVAL instead of the poll.

    Its thread asks its own connection for `PRAGMA data_version` (it changes when any
    other connection has committed: a read of the WAL index, no table and no lock) and,
    only when it changed, for the log's newest id; the tail is woken when that moved.
    Nothing of this runs on the event loop or on Django's database thread, where the
    handshakes' queries run."""

    def __init__(self, feed: Woken, *, path: str, newest: str, interval: float) -> None:
        self.feed = feed
        self.stopping = threading.Event()
        self.thread = threading.Thread(
            target=self.watch, args=(path, newest, interval), name="event-log-watch", daemon=True
        )

    @classmethod
    def start_for(cls, feed: Woken) -> SqliteWatcher | None:
        """A started watcher for the default database, or None when none is needed: not
        SQLite, a database in memory (one process), or EVENT_WATCH_INTERVAL zero."""
        interval = runtime_settings.EVENT_WATCH_INTERVAL.total_seconds()
        database = connections["default"]
        path = database.settings_dict["NAME"]
        if database.vendor != "sqlite" or interval <= 0 or database.creation.is_in_memory_db(path):
            return None
        from core.models import SessionEvent

        newest = f"SELECT max(id) FROM {database.ops.quote_name(SessionEvent._meta.db_table)}"
        watcher = cls(feed, path=str(path), newest=newest, interval=interval)
        watcher.thread.start()
        return watcher

    def watch(self, path: str, newest: str, interval: float) -> None:
        """Until `stop()` (or the tail's event loop closes), every `interval`."""
        version = top = None
        connection: sqlite3.Connection | None = None
        while not self.stopping.wait(interval) and not self.feed.loop.is_closed():
            try:
                if connection is None:
                    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=1.0)
                current = connection.execute("PRAGMA data_version").fetchone()[0]
                if current == version:
                    continue
                version = current
                latest = connection.execute(newest).fetchone()[0]
                if latest != top:
                    top = latest
                    self.feed.wake()
            except sqlite3.Error:  # a locked or replaced file: the poll covers it meanwhile
                logger.warning("event log watcher could not read the database; retrying", exc_info=True)
                if connection is not None:
                    connection.close()
                connection = None
                self.stopping.wait(RETRY_PAUSE_S)
        if connection is not None:
            connection.close()

    async def stop(self, timeout: float) -> None:
        self.stopping.set()
        await asyncio.to_thread(self.thread.join, timeout)
