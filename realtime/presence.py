"""Presence: the records of open sockets, each process's heartbeat, and the counts of
refused handshakes.

Each open and close of a socket changes a `Connection` row. Written one by one, those
writes would cost every handshake a database round trip; `ConnectionRegistry` buffers them
per event loop and applies them together every WS_CONNECTION_FLUSH_INTERVAL, so the
records trail the sockets by at most that much (a socket that opens and closes within one
interval never touches the database). A process records that it is alive every
SERVER_HEARTBEAT_INTERVAL (`realtime.heartbeat`): a lease; the records of a process whose
lease ran out are swept by any other, and a process that stops takes its own with it.

The per-user socket counts the cap (`realtime.handshake`) is judged by live here too: this
process's count of each user's sockets, exact, and with Redis every process's count of
them in one place (`SocketCounts`). See docs/architecture.md#the-per-user-socket-cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections import Counter
from datetime import datetime
from typing import Any, AsyncIterator

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.conf import runtime_settings
from core.exceptions import DEPENDENCY_ERRORS
from core.models import ActorType, AuditEvent
from core.process import server_instance_id
from core.tasks import background, tasks_stop
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


# --- Each user's open sockets: on this process, and on every process (Redis) -----------------
# This process's sockets per user, counted from the handshake's reservation to the close
# (reservations in flight included): exact, on the event loop, with no await between a
# check and its count.
_local_sockets: Counter[uuid.UUID] = Counter()


def local_sockets(user_id: uuid.UUID) -> int:
    return _local_sockets.get(user_id, 0)


def local_socket_add(user_id: uuid.UUID) -> int:
    """Count one more socket of the user here; returns the new count."""
    _local_sockets[user_id] += 1
    return _local_sockets[user_id]


def local_socket_remove(user_id: uuid.UUID) -> None:
    """Count one socket of the user less here, and say so to Redis (in the background)."""
    _local_sockets[user_id] -= 1
    if _local_sockets[user_id] <= 0:
        del _local_sockets[user_id]
    counts = socket_counts()
    if counts is not None:
        background(counts.write(user_id))


# Every process's count, in Redis: a hash per user (`<prefix>:sockets:<user id>`) of process
# -> that process's count, and a sorted set (`<prefix>:sockets:processes`) of processes by
# their last sign of life on Redis's clock. A process only ever writes its own field, and
# writes the count it holds (not +1/-1): a write that failed is mended by the next one.
# Admitting reads the others' fields, drops those of processes silent for longer than
# SERVER_STALE_AFTER (a killed process's sockets), and writes this process's, in one script.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local fresh = redis.call('ZADD', KEYS[2], now, ARGV[1])
local others = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local owner = fields[i]
  if owner ~= ARGV[1] then
    local seen = redis.call('ZSCORE', KEYS[2], owner)
    if seen and tonumber(seen) >= now - tonumber(ARGV[4]) then
      others = others + tonumber(fields[i + 1])
    else
      redis.call('HDEL', KEYS[1], owner)
      if seen then redis.call('ZREM', KEYS[2], owner) end
    end
  end
end
if others + tonumber(ARGV[2]) > tonumber(ARGV[3]) then return {0, fresh} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {1, fresh}
"""
_BEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[2])))
return redis.call('ZADD', KEYS[1], now, ARGV[1])
"""
# A Redis that does not answer costs a handshake at most this (plus one retry on a fresh
# connection), and then is left alone for COUNTS_RETRY_AFTER_S: the cap falls back to the
# records and this process's count meanwhile.
COUNTS_TIMEOUT_S = 0.5
COUNTS_RETRY_AFTER_S = 1.0


class SocketCounts:
    """This process's field in every user's count in Redis, on one event loop.

    Writes of one user's field are made one at a time, in order (`_serial`), each with
    this process's count at that moment. When Redis does not answer, the users whose field
    may be wrong are remembered and written again once it does (`reconcile`).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, client: Any, prefix: str) -> None:
        self.loop = loop
        self.client = client
        self.prefix = prefix
        # This process's name in the counts: unique per start, even with SERVER_INSTANCE set.
        self.owner = f"{server_instance_id()}/{uuid.uuid4().hex[:8]}"
        self.processes = f"{prefix}:sockets:processes"
        self._admit = client.register_script(_ADMIT)
        self._beat = client.register_script(_BEAT)
        self._written: dict[uuid.UUID, int] = {}
        self._unsure: set[uuid.UUID] = set()
        self._serials: dict[uuid.UUID, list] = {}
        self._quiet_until = 0.0
        self._reconciling: asyncio.Task | None = None

    def key(self, user_id: uuid.UUID) -> str:
        return f"{self.prefix}:sockets:{user_id}"

    @property
    def answering(self) -> bool:
        return time.monotonic() >= self._quiet_until

    @contextlib.asynccontextmanager
    async def _serial(self, user_id: uuid.UUID) -> AsyncIterator[None]:
        entry = self._serials.get(user_id)
        if entry is None:
            entry = self._serials[user_id] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._serials[user_id]

    def _failed(self, user_id: uuid.UUID | None, exc: BaseException) -> None:
        if user_id is not None:
            self._unsure.add(user_id)
        if self.answering:
            logger.warning("socket counts: Redis did not answer (%s); the cap falls back to this process's "
                           "count and the records", exc)
        self._quiet_until = time.monotonic() + COUNTS_RETRY_AFTER_S

    def _answered(self, fresh: int) -> None:
        """Redis answered; `fresh`: this process was missing from its list of processes (taken
        for dead, or Redis lost its data), so every field it wrote may be gone."""
        if fresh:
            self._unsure.update(_local_sockets)
        if self._unsure and (self._reconciling is None or self._reconciling.done()):
            self._reconciling = background(self.reconcile())

    async def admit(self, user_id: uuid.UUID, *, cap: int) -> bool | None:
        """Whether this process's sockets of the user (this one counted already) and every
        other live process's stay within `cap`; if so, this process's count is written.
        None when Redis does not answer."""
        if not self.answering:
            self._unsure.add(user_id)
            return None
        async with self._serial(user_id):
            count = local_sockets(user_id)
            try:
                admitted, fresh = await self._admit(
                    keys=[self.key(user_id), self.processes],
                    args=[self.owner, count, cap, runtime_settings.SERVER_STALE_AFTER.total_seconds()],
                )
            except DEPENDENCY_ERRORS as exc:
                self._failed(user_id, exc)
                return None
            except BaseException:
                self._unsure.add(user_id)  # cancelled: written or not, nobody knows
                raise
            if admitted:
                self._written[user_id] = count
                self._unsure.discard(user_id)
        self._answered(fresh)
        return bool(admitted)

    async def write(self, user_id: uuid.UUID) -> None:
        """Write this process's count of the user's sockets, unless Redis has it already."""
        if not self.answering:
            self._unsure.add(user_id)
            return
        async with self._serial(user_id):
            count = local_sockets(user_id)
            if self._written.get(user_id, 0) == count and user_id not in self._unsure:
                return
            try:
                if count:
                    await self.client.hset(self.key(user_id), self.owner, count)
                else:
                    await self.client.hdel(self.key(user_id), self.owner)
            except DEPENDENCY_ERRORS as exc:
                self._failed(user_id, exc)
                return
            if count:
                self._written[user_id] = count
            else:
                self._written.pop(user_id, None)
            self._unsure.discard(user_id)

    async def reconcile(self) -> None:
        """Write every count Redis may have wrong."""
        for user_id in list(self._unsure):
            if not self.answering:
                return
            await self.write(user_id)

    async def beat(self) -> None:
        """A sign of life (with the heartbeat), then what a silence of Redis left to mend.
        Raises what Redis raises."""
        if self.left:  # draining: a sign of life would have the others count this process again
            return
        stale = runtime_settings.SERVER_STALE_AFTER.total_seconds()
        try:
            fresh = await self._beat(keys=[self.processes], args=[self.owner, stale])
        except DEPENDENCY_ERRORS as exc:
            self._failed(None, exc)
            raise
        self._quiet_until = 0.0
        self._answered(fresh)

    left = False  # this process left the list (it drains): its beats stop re-entering it

    async def leave(self) -> None:
        """Leave the list of processes (as a drain begins): the others drop this
        process's counts at once instead of after SERVER_STALE_AFTER."""
        self.left = True
        await self.client.zrem(self.processes, self.owner)


_socket_counts: dict[int, SocketCounts] = {}


def socket_counts() -> SocketCounts | None:
    """This event loop's `SocketCounts`; None without Redis (the embedded defaults)."""
    if not settings.REDIS_URL:
        return None
    loop = asyncio.get_running_loop()
    current = _socket_counts.get(id(loop))
    if current is None or current.loop is not loop:
        from core.redis_options import RedisTarget

        for key, counts in list(_socket_counts.items()):  # of loops that ended (tests run one each)
            if counts.loop.is_closed():
                del _socket_counts[key]

        client = RedisTarget.from_settings(settings).async_client(
            socket_timeout=COUNTS_TIMEOUT_S, socket_connect_timeout=COUNTS_TIMEOUT_S
        )
        current = _socket_counts[id(loop)] = SocketCounts(loop, client, settings.REDIS_PREFIX)
    return current
