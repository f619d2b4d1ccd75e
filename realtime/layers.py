"""The Redis channel layer, riding out a slow read, and joining a group in one round trip.

Under load a blocking pop can time out at the socket before Redis answers; channels-redis
lets that end the consumer's receive loop, which closes the socket. A timeout is retried a
few times instead (the pop is at-most-once either way); a Redis that is gone still raises
ConnectionError at once, and the consumer closes with 1013.
"""

from __future__ import annotations

import logging
import time

from channels_redis.core import RedisChannelLayer as BaseRedisChannelLayer
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)
RECEIVE_TIMEOUT_RETRIES = 3


class RedisChannelLayer(BaseRedisChannelLayer):
    async def receive(self, channel: str) -> dict:
        for attempt in range(RECEIVE_TIMEOUT_RETRIES + 1):
            try:
                return await super().receive(channel)
            except RedisTimeoutError:
                if attempt == RECEIVE_TIMEOUT_RETRIES:
                    raise
                logger.info("channel layer read timed out on %s; retrying", channel)
        raise AssertionError("unreachable")

    async def group_add(self, group: str, channel: str) -> None:
        """channels-redis' group_add (ZADD, then EXPIRE), pipelined: every handshake joins
        two groups, and each round trip to Redis is paid on the handshake's hot path."""
        assert self.require_valid_group_name(group), "Group name not valid"
        assert self.require_valid_channel_name(channel), "Channel name not valid"
        group_key = self._group_key(group)
        connection = self.connection(self.consistent_hash(group))
        async with connection.pipeline(transaction=False) as pipe:
            pipe.zadd(group_key, {channel: time.time()})
            pipe.expire(group_key, self.group_expiry)
            await pipe.execute()
