"""The Redis channel layer's receive: timeouts are retried, a lost Redis is not."""

from __future__ import annotations

import pytest
from channels_redis.core import RedisChannelLayer as BaseRedisChannelLayer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from realtime.layers import RECEIVE_TIMEOUT_RETRIES, RedisChannelLayer


def _layer_raising(monkeypatch, errors: list[Exception]) -> tuple[RedisChannelLayer, list[int]]:
    calls: list[int] = []

    async def receive(self, channel):
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return {"type": "runtime.event"}

    monkeypatch.setattr(BaseRedisChannelLayer, "receive", receive)
    return RedisChannelLayer(hosts=["redis://127.0.0.1:1/0"]), calls


async def test_a_timed_out_read_is_retried(monkeypatch):
    layer, calls = _layer_raising(monkeypatch, [RedisTimeoutError("slow"), RedisTimeoutError("slow")])
    assert await layer.receive("specific.x!y") == {"type": "runtime.event"}
    assert len(calls) == 3


async def test_endless_timeouts_raise_after_the_retries(monkeypatch):
    layer, calls = _layer_raising(monkeypatch, [RedisTimeoutError("slow")] * 10)
    with pytest.raises(RedisTimeoutError):
        await layer.receive("specific.x!y")
    assert len(calls) == RECEIVE_TIMEOUT_RETRIES + 1


async def test_a_lost_redis_raises_at_once(monkeypatch):
    layer, calls = _layer_raising(monkeypatch, [RedisConnectionError("gone")])
    with pytest.raises(RedisConnectionError):
        await layer.receive("specific.x!y")
    assert len(calls) == 1
