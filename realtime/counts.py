"""Each user's open sockets: counted on this process, exactly, and with Redis on every
process in one place (`SocketCounts`), so that the per-user cap (`realtime.handshake`)
holds in a burst across processes. See docs/architecture.md#the-per-user-socket-cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from typing import Any, AsyncIterator

from django.conf import settings

from core.conf import runtime_settings
from core.exceptions import DEPENDENCY_ERRORS
from core.process import server_instance_id
from core.tasks import background

logger = logging.getLogger(__name__)

# This process's sockets per user, from the handshake's reservation to the close: exact,
# on the event loop, with no await between a check and its count.
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
# connection), then is left alone for COUNTS_RETRY_AFTER_S (the cap falls back meanwhile).
COUNTS_TIMEOUT_S = 0.5
COUNTS_RETRY_AFTER_S = 1.0
COUNTS_CONNECTIONS = 64  # shared by a burst of handshakes, each waiting COUNTS_TIMEOUT_S for one


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
            connections=COUNTS_CONNECTIONS, wait=COUNTS_TIMEOUT_S, socket_timeout=COUNTS_TIMEOUT_S,
            socket_connect_timeout=COUNTS_TIMEOUT_S)
        current = _socket_counts[id(loop)] = SocketCounts(loop, client, settings.REDIS_PREFIX)
    return current
