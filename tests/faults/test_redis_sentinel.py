"""Redis through Sentinel, and over TLS, with real processes: a private redis-server, a replica
and a sentinel (`redis-server --sentinel`) on free ports in the test's directory. Each of the
three Redis clients (Django's cache, the channel layer, the Redis state backend) is built as the
settings build it (core.redis_options.RedisTarget) and used; a real server process is pointed
at the sentinel and must be ready; and after the master is killed the clients follow the
sentinel to the promoted replica.

These need only the redis-server binary (and openssl for TLS), not the shared services: they run
whenever it is installed, and with SYMPHAINY_REQUIRE_SERVICES=1 its absence is a failure.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from django.core.cache.backends.redis import RedisCache

from core.redis_options import RedisTarget
from realtime.layers import RedisChannelLayer
from sessions_runtime.state import RedisStateBackend, StateKey
from tests.live import running
from tests.redis_servers import MASTER_NAME, Certificates, RedisProcess, Replica, SentinelProcess
from tests.waiting import wait_until


@pytest.fixture
def redis_set(tmp_path: Path):
    """A master, a replica of it and a sentinel; stopped at the end whatever happened."""
    started: list[RedisProcess] = []

    def start(tls: Certificates | None = None, replica: bool = False):
        master = RedisProcess(tmp_path, "master", tls=tls).start()
        started.append(master)
        copy = None
        if replica:
            copy = Replica(tmp_path, "replica", master, tls=tls).start()
            started.append(copy)
        sentinel = SentinelProcess(tmp_path, "sentinel", master, tls=tls).start()
        started.append(sentinel)
        return master, copy, sentinel

    yield start
    for process in reversed(started):
        process.stop()


def sentinel_target(sentinel: SentinelProcess, *, db: int = 3, tls: Certificates | None = None) -> RedisTarget:
    scheme = "rediss" if tls else "redis"
    return RedisTarget(
        url=f"{scheme}://ignored-host:1/{db}",
        sentinels=(("127.0.0.1", sentinel.port),),
        sentinel_master=MASTER_NAME,
        tls_ca_file=str(tls.ca) if tls else None,
    )


def layer_for(target: RedisTarget) -> RedisChannelLayer:
    return RedisChannelLayer(hosts=[target.channel_layer_host(socket_timeout=15)], prefix=f"t{uuid.uuid4().hex[:8]}")


def cache_for(target: RedisTarget) -> RedisCache:
    config = target.cache(KEY_PREFIX=f"t{uuid.uuid4().hex[:8]}")
    return RedisCache(config["LOCATION"], config)


def state_for(settings, target: RedisTarget) -> RedisStateBackend:
    settings.REDIS_URL = target.url
    settings.REDIS_SENTINELS = [f"{host}:{port}" for host, port in target.sentinels]
    settings.REDIS_SENTINEL_MASTER = target.sentinel_master
    settings.REDIS_TLS_CA_FILE = target.tls_ca_file
    return RedisStateBackend(prefix=f"t{uuid.uuid4().hex[:8]}")


def layer_roundtrip(layer: RedisChannelLayer, message: dict) -> dict:
    async def go() -> dict:
        try:
            channel = await layer.new_channel("test.")
            await layer.send(channel, message)
            return await asyncio.wait_for(layer.receive(channel), 10)
        finally:
            await layer.flush()

    return asyncio.run(go())


def all_three_work(settings, target: RedisTarget, master: RedisProcess) -> None:
    """Cache set/get, channel layer send/receive and a state write/read, and the data is on
    `master` (so the sentinel, not the URL's host, chose where it went)."""
    import redis

    cache = cache_for(target)
    cache.set("k", {"v": 1}, 30)
    assert cache.get("k") == {"v": 1}
    pool = cache._cache._get_connection_pool(write=True)
    assert pool.master_address == ("127.0.0.1", master.port)

    assert layer_roundtrip(layer_for(target), {"type": "t.ping", "n": 7}) == {"type": "t.ping", "n": 7}

    state = state_for(settings, target)
    key = StateKey(tenant_id=uuid.uuid4(), session_id=uuid.uuid4())
    written = state.write(key, {"a": 1}, expected_version=state.read(key).version)
    assert state.read(key).data == {"a": 1} and state.read(key).version == written.version

    kwargs = {"ssl": True, "ssl_ca_certs": str(master.tls.ca)} if master.tls else {}
    direct = redis.Redis(host="127.0.0.1", port=master.port, db=3, **kwargs)
    assert direct.exists(f"{state._prefix}:state:{key}")
    direct.close()


def test_the_cache_the_channel_layer_and_the_state_backend_reach_the_master_through_sentinel(settings, redis_set):
    master, _, sentinel = redis_set()
    all_three_work(settings, sentinel_target(sentinel), master)


def test_after_a_failover_the_clients_follow_the_sentinel_to_the_new_master(settings, redis_set):
    master, replica, sentinel = redis_set(replica=True)
    target = sentinel_target(sentinel)
    # The clients are built (and have connected) before the failover.
    cache, layer = cache_for(target), layer_for(target)
    cache.set("before", 1, 60)
    assert layer_roundtrip(layer, {"type": "t.before"}) == {"type": "t.before"}
    state = state_for(settings, target)
    key = StateKey(tenant_id=uuid.uuid4(), session_id=uuid.uuid4())
    state.write(key, {"n": 1}, expected_version=0)
    # The replica must have the data and the sentinel must know the replica before the kill.
    import redis

    copy = redis.Redis(host="127.0.0.1", port=replica.port, db=3)
    wait_until(lambda: copy.exists(f"{state._prefix}:state:{key}")
               and redis.Redis(host="127.0.0.1", port=sentinel.port).sentinel_slaves(MASTER_NAME),
               timeout=20, interval=0.2, message="the replica to sync and the sentinel to see it")

    master.stop()
    wait_until(lambda: sentinel.master_address() == ("127.0.0.1", replica.port), timeout=30, interval=0.2,
               message="the sentinel to promote the replica")

    # The same client objects, no restart: each command lands on the promoted replica.
    def cache_set_after() -> bool:
        try:
            cache.set("after", 2, 60)
        except redis.ConnectionError:
            return False
        return True

    wait_until(cache_set_after, timeout=15, interval=0.2, message="the cache to follow the failover")
    assert cache.get("before") == 1 and cache.get("after") == 2
    assert layer_roundtrip(layer, {"type": "t.after"}) == {"type": "t.after"}
    assert state.read(key).data == {"n": 1}
    state.write(key, {"n": 2}, expected_version=1)
    assert copy.exists(f"{state._prefix}:state:{key}") and state.read(key).data == {"n": 2}
    copy.close()


@pytest.mark.server
@pytest.mark.django_db(transaction=True)
def test_a_server_pointed_at_the_sentinel_is_ready(tmp_path, redis_set):
    master, _, sentinel = redis_set()
    env = {"REDIS_URL": "redis://unused:1/4", "REDIS_SENTINELS": f"127.0.0.1:{sentinel.port}",
           "REDIS_SENTINEL_MASTER": MASTER_NAME}
    with running(tmp_path, **env) as server:
        status, body = server.request("GET", "/ready")
        assert status == 200, (body, server.log())
        assert body["checks"]["channel_layer"] == "ok"
    # A wrong service name is not ready: the sentinel was really asked.
    with running(tmp_path, **{**env, "REDIS_SENTINEL_MASTER": "no-such-master"}) as server:
        status, body = server.request("GET", "/ready")
        assert status == 503 and body["checks"]["channel_layer"] == "unavailable"


# --- TLS -------------------------------------------------------------------------------------
@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    return Certificates(tmp_path)


def test_a_rediss_url_with_the_ca_file_works_for_all_three(settings, tmp_path, certificates):
    master = RedisProcess(tmp_path, "tls", tls=certificates).start()
    try:
        target = RedisTarget(url=f"rediss://127.0.0.1:{master.port}/3", tls_ca_file=str(certificates.ca))
        cache = cache_for(target)
        cache.set("k", "v", 30)
        assert cache.get("k") == "v"
        assert layer_roundtrip(layer_for(target), {"type": "t.tls"}) == {"type": "t.tls"}
        settings.REDIS_URL, settings.REDIS_SENTINELS, settings.REDIS_SENTINEL_MASTER = target.url, [], None
        settings.REDIS_TLS_CA_FILE = target.tls_ca_file
        state = RedisStateBackend(prefix="tls")
        key = StateKey(tenant_id=uuid.uuid4(), session_id=uuid.uuid4())
        state.write(key, {"tls": True}, expected_version=0)
        assert state.read(key).data == {"tls": True}

        # Without the CA the server's certificate is refused: TLS is really verified.
        import redis

        untrusted = RedisTarget(url=target.url)
        with pytest.raises(redis.ConnectionError):
            untrusted.client().ping()
    finally:
        master.stop()


def test_sentinel_over_tls_works_for_all_three(settings, redis_set, certificates):
    master, _, sentinel = redis_set(tls=certificates)
    all_three_work(settings, sentinel_target(sentinel, tls=certificates), master)


@pytest.mark.server
@pytest.mark.django_db(transaction=True)
def test_a_server_over_tls_is_ready(tmp_path, certificates):
    master = RedisProcess(tmp_path, "tls", tls=certificates).start()
    try:
        with running(tmp_path, REDIS_URL=f"rediss://127.0.0.1:{master.port}/4",
                     REDIS_TLS_CA_FILE=str(certificates.ca)) as server:
            status, body = server.request("GET", "/ready")
            assert status == 200, (body, server.log())
    finally:
        master.stop()
