"""Connection records, written in bulk.

Each open and close of a socket changes a `Connection` row. Written one by one, those
writes would cost every handshake a database round trip; here they are buffered per
process and applied together every WS_CONNECTION_FLUSH_INTERVAL (a quarter second by
default), so the records trail the sockets by at most that much. A socket that opens and
closes within one interval never touches the database.
"""

from __future__ import annotations

import asyncio
import logging

from channels.db import database_sync_to_async

from core.conf import runtime_settings
from core.exceptions import DEPENDENCY_ERRORS
from core.tasks import tasks_stop
from realtime.models import Connection

logger = logging.getLogger(__name__)
MAX_PENDING = 50_000


def _apply(opened: list[Connection], closed: list[str]) -> None:
    if opened:
        Connection.objects.bulk_create(opened, ignore_conflicts=True, batch_size=500)
    if closed:
        for start in range(0, len(closed), 500):
            Connection.objects.filter(channel_name__in=closed[start : start + 500]).delete()


class ConnectionRegistry:
    """The pending connection-record writes of one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._opened: dict[str, Connection] = {}
        self._closed: set[str] = set()
        self._flusher: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    def opened(self, connection: Connection) -> None:
        self._closed.discard(connection.channel_name)
        self._opened[connection.channel_name] = connection
        self._schedule()

    def closed(self, channel_name: str) -> None:
        if self._opened.pop(channel_name, None) is None:
            self._closed.add(channel_name)
            self._schedule()

    def _schedule(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = self.loop.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        # Until nothing is pending: a write that failed is retried an interval later, not
        # only when the next socket opens or closes.
        while True:
            await asyncio.sleep(runtime_settings.WS_CONNECTION_FLUSH_INTERVAL.total_seconds())
            await self.flush()
            if not self._opened and not self._closed:
                return

    async def close(self, *, timeout: float = 5.0) -> None:
        """Stop the flusher and write what is pending once more (a drain's last step)."""
        if self._flusher is not None:
            if await tasks_stop([self._flusher], timeout=timeout):
                logger.error("the connection-record flusher did not end when cancelled")
            self._flusher = None
        await self.flush()

    async def flush(self) -> None:
        """Apply what is pending now (also called by tests and at shutdown)."""
        async with self._lock:
            opened, closed = list(self._opened.values()), list(self._closed)
            self._opened, self._closed = {}, set()
            if not opened and not closed:
                return
            try:
                await database_sync_to_async(_apply)(opened, closed)
            except DEPENDENCY_ERRORS:
                logger.warning("could not write %d connection records; retrying", len(opened) + len(closed), exc_info=True)
                if len(self._opened) + len(opened) < MAX_PENDING:
                    for connection in opened:
                        self._opened.setdefault(connection.channel_name, connection)
                    self._closed.update(closed)
                self._schedule()


_registries: dict[int, ConnectionRegistry] = {}


def registry() -> ConnectionRegistry:
    """This event loop's registry."""
    loop = asyncio.get_running_loop()
    current = _registries.get(id(loop))
    if current is None or current.loop is not loop:
        current = _registries[id(loop)] = ConnectionRegistry(loop)
    return current
