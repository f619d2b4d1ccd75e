"""The Redis channel layer of the execution worker (EXECUTION_RUNNER=worker), riding out
a slow read. Sockets use no channel layer: they hear of changes through the event log.

Under load a blocking pop can time out at the socket before Redis answers; channels-redis
lets that end the consumer's receive loop, which closes the socket. A timeout is retried a
few times instead (the pop is at-most-once either way); a Redis that is gone still raises
ConnectionError at once, and the consumer closes with 1013.
"""

from __future__ import annotations

import logging

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
