"""Presence: the records of open sockets, each process's heartbeat, and the counts of
refused handshakes.

Each open and close of a socket changes a `Connection` row. Written one by one, those
writes would cost every handshake a database round trip; `ConnectionRegistry` buffers them
per event loop and applies them together every WS_CONNECTION_FLUSH_INTERVAL, so the
records trail the sockets by at most that much (a socket that opens and closes within one
interval never touches the database). A process records that it is alive every
SERVER_HEARTBEAT_INTERVAL (`realtime.heartbeat`): a lease; the records of a process whose
lease ran out are swept by any other, and a process that stops takes its own with it.

The per-user counts of open sockets that the cap is judged by are in `realtime.counts`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from datetime import datetime

from channels.db import database_sync_to_async
from django.db import transaction
from django.utils import timezone

from core.conf import runtime_settings
from core.exceptions import DEPENDENCY_ERRORS
from core.models import ActorType, AuditEvent
from core.process import server_instance_id
from core.tasks import tasks_stop
from realtime.models import Connection, ServerInstance

logger = logging.getLogger(__name__)

def connection_record(
    *, session_id: uuid.UUID, user_id: uuid.UUID, channel_name: str, client_address: str = "", user_agent: str = ""
) -> Connection:
    """The record of an open socket (not saved: sockets hand it to their `registry()`)."""
    return Connection(
        session_id=session_id,
        user_id=user_id,
        channel_name=channel_name,
        server_instance=server_instance_id(),
        client_address=client_address[:64],
        user_agent=user_agent[:256],
    )


def connection_open(**kwargs: object) -> None:
    """Save the record at once (commands and tests; sockets go through `registry()`)."""
    connection_record(**kwargs).save()  # type: ignore[arg-type]


def connection_close(*, channel_name: str) -> None:
    Connection.objects.filter(channel_name=channel_name).delete()


def server_heartbeat(*, now: datetime | None = None) -> None:
    """Renew this process's lease: one UPDATE (an INSERT the first time)."""
    now = now or timezone.now()
    if not ServerInstance.objects.filter(pk=server_instance_id()).update(last_heartbeat_at=now):
        ServerInstance.objects.update_or_create(pk=server_instance_id(), defaults={"last_heartbeat_at": now})


def servers_dead(*, now: datetime | None = None) -> list[str]:
    """The processes whose lease (heartbeat) is older than SERVER_STALE_AFTER."""
    now = now or timezone.now()
    stale = ServerInstance.objects.filter(last_heartbeat_at__lt=now - runtime_settings.SERVER_STALE_AFTER)
    return list(stale.values_list("pk", flat=True))


@transaction.atomic
def connections_sweep(*, dead: list[str] | None = None, now: datetime | None = None, orphans: bool = True) -> int:
    """Delete the connection records of the `dead` processes (by default those of
    `servers_dead()`) and their rows; with `orphans`, also the records of processes never
    heard of (a scan of the table: the periodic sweep's, not every lease beat's). Returns
    how many records went."""
    dead = servers_dead(now=now) if dead is None else dead
    deleted = 0
    if dead:
        deleted, _ = Connection.objects.filter(server_instance__in=dead).delete()
        ServerInstance.objects.filter(pk__in=dead).delete()
    if orphans:
        alive = ServerInstance.objects.values("pk")
        deleted += Connection.objects.exclude(server_instance__in=alive).delete()[0]
    return deleted


def connections_leave() -> int:
    """Delete this process's connection records (a drain's first write: its sockets are
    about to close, and a client that comes back elsewhere must not find its own ghost
    under the per-user cap)."""
    return Connection.objects.filter(server_instance=server_instance_id()).delete()[0]


@transaction.atomic
def server_leave() -> int:
    """A stopping process takes its connection records and its row with it (the drain's
    last write), so that no ghost counts against a user's socket cap elsewhere."""
    deleted = connections_leave()
    ServerInstance.objects.filter(pk=server_instance_id()).delete()
    return deleted


# --- Refused handshakes in the audit trail, aggregated ---------------------------------
# A flood of refused handshakes must not become a flood of rows: refusals are counted in
# memory per close code and written as one row per code per flush (every heartbeat).
_refusals: dict[int, int] = {}
_refusals_lock = threading.Lock()


def socket_refusal_count(*, close_code: int) -> None:
    with _refusals_lock:
        _refusals[close_code] = _refusals.get(close_code, 0) + 1


def socket_refusals_flush(*, now: datetime | None = None) -> int:
    """Write the counted refusals as `socket.refused` audit rows; returns rows written."""
    with _refusals_lock:
        counts = dict(_refusals)
        _refusals.clear()
    now = now or timezone.now()
    AuditEvent.objects.bulk_create(
        AuditEvent(
            at=now, kind=AuditEvent.Kind.SOCKET_REFUSED, actor_type=ActorType.SYSTEM,
            data={"close_code": code, "count": count, "server_instance": server_instance_id()},
        )
        for code, count in sorted(counts.items())
    )
    return len(counts)


# --- The records' writes, batched per event loop ------------------------------------
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
        self._left = False  # the process's records were deleted at once (`leave`)

    def opened(self, connection: Connection) -> None:
        self._closed.discard(connection.channel_name)
        self._opened[connection.channel_name] = connection
        self._schedule()

    def closed(self, channel_name: str) -> None:
        if self._opened.pop(channel_name, None) is None and not self._left:
            self._closed.add(channel_name)
            self._schedule()

    async def leave(self) -> None:
        """Apply what is pending, then delete every record of this process at once (a
        drain's first write); the closes that follow write nothing: their records are gone,
        and 10,000 deletes by name were, in a drain's profile, most of the database thread's
        time, holding the GIL its event loop needed to close the sockets."""
        await self.flush()
        await database_sync_to_async(connections_leave)()
        self._left = True
        async with self._lock:
            self._closed = set()

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
