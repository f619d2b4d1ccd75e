"""The per-user socket counts behind the cap, in this process: a place taken by a handshake
that then fails is given back; with Redis, this process's count there follows its sockets,
and a Redis that does not answer refuses no socket the records and this process's count
allow, and is mended when it answers again. (Over real processes: test_socket_cap.py.)"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from django.conf import settings
from django.db import OperationalError

from realtime.counts import local_sockets, socket_counts
from tests.sockets import login_new_user, make_socket, open_ready
from tests.waiting import wait_until_async

pytestmark = pytest.mark.django_db(transaction=True)
needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis (REDIS_URL)")


@pytest.fixture
def cap_of_two(settings):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "WS_MAX_SOCKETS_PER_USER": 2}


async def redis_count(user_id: uuid.UUID) -> int:
    counts = socket_counts()
    value = await counts.client.hget(counts.key(user_id), counts.owner)
    return int(value or 0)


async def count_is(user_id: uuid.UUID, expected: int) -> bool:
    return await redis_count(user_id) == expected


async def test_a_handshake_that_fails_after_taking_its_place_gives_it_back(cap_of_two, monkeypatch):
    user, body = await login_new_user()

    async def database_gone():
        raise OperationalError("the database went away after the check")

    monkeypatch.setattr("realtime.heartbeat.ensure_running", database_gone)
    for _ in range(3):  # more than the cap: each one's place came back
        sock = await make_socket(body["access_token"]).open()
        assert await sock.receive_close() == 1013
    monkeypatch.undo()
    assert local_sockets(user.pk) == 0
    if socket_counts() is not None:
        await wait_until_async(lambda: count_is(user.pk, 0))
    sockets = [(await open_ready(body["access_token"]))[0] for _ in range(2)]
    for sock in sockets:
        await sock.close()


@needs_redis
async def test_this_process_count_in_redis_follows_its_sockets(cap_of_two):
    user, body = await login_new_user()
    first, _ = await open_ready(body["access_token"])
    second, _ = await open_ready(body["access_token"])
    assert await redis_count(user.pk) == 2
    refused = await make_socket(body["access_token"]).open()
    assert await refused.receive_close() == 4429
    await first.close()
    await wait_until_async(lambda: count_is(user.pk, 1), message="the close in Redis")
    await second.close()
    counts = socket_counts()
    await wait_until_async(lambda: count_is(user.pk, 0), message="the last close in Redis")
    assert not await counts.client.exists(counts.key(user.pk))


@needs_redis
async def test_without_redis_answering_the_cap_holds_on_this_process_and_redis_is_mended_later(cap_of_two,
                                                                                              monkeypatch):
    from redis.exceptions import ConnectionError as RedisConnectionError

    user, body = await login_new_user()
    counts = socket_counts()
    real_admit, real_hset = counts._admit, counts.client.hset

    async def down(*args, **kwargs):
        raise RedisConnectionError("Redis is gone")

    monkeypatch.setattr(counts, "_admit", down)
    monkeypatch.setattr(counts.client, "hset", down)
    # Fails open: sockets open while Redis is away, up to the cap on this process.
    first, _ = await open_ready(body["access_token"])
    second, _ = await open_ready(body["access_token"])
    refused = await make_socket(body["access_token"]).open()
    assert await refused.receive_close() == 4429
    assert await redis_count(user.pk) == 0
    # Redis answers again: the next heartbeat writes what it missed.
    monkeypatch.setattr(counts, "_admit", real_admit)
    monkeypatch.setattr(counts.client, "hset", real_hset)
    await counts.beat()
    await wait_until_async(lambda: count_is(user.pk, 2), message="the missed counts written")
    await first.close()
    await second.close()
    await wait_until_async(lambda: count_is(user.pk, 0), message="the closes in Redis")


@needs_redis
async def test_a_stopped_heartbeat_leaves_the_list_of_live_processes():
    """The drain's last steps: the other processes stop counting this one's sockets at once."""
    from realtime import heartbeat

    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])  # the heartbeat starts with a first socket
    counts = socket_counts()
    assert await counts.client.zscore(counts.processes, counts.owner) is not None
    await sock.close()
    await heartbeat.stop()
    assert await counts.client.zscore(counts.processes, counts.owner) is None


@needs_redis
async def test_a_process_that_left_as_its_drain_began_is_not_counted_again_by_its_heartbeat():
    """A drain leaves the list first (its clients may be back elsewhere before each close's
    own count is written); the heartbeat beats on while the drain lasts, and must not put it
    back."""
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    counts = socket_counts()
    await counts.leave()
    await counts.beat()
    assert await counts.client.zscore(counts.processes, counts.owner) is None
    await sock.close()


@needs_redis
async def test_a_burst_of_handshakes_is_counted_in_redis_not_refused_by_the_client_pool():
    """A restart's reconnect storm: hundreds of admits at once. redis-py's pool refused
    every command over its 100 connections ("Too many connections"), and each refusal
    degraded the cap to this process's count; now they wait for one of the pool's."""
    from realtime.counts import local_socket_add, local_socket_remove

    counts = socket_counts()
    users = [uuid.uuid4() for _ in range(400)]
    for user_id in users:
        local_socket_add(user_id)
    try:
        admitted = await asyncio.gather(*(counts.admit(user_id, cap=20) for user_id in users))
        assert admitted == [True] * len(users) and counts.answering
        assert await redis_count(users[-1]) == 1
    finally:
        for user_id in users:
            local_socket_remove(user_id)
