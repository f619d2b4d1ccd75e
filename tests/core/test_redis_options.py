"""core.redis_options: what each Redis client is given, directly and through Sentinel, with and
without TLS (checked against the pools the libraries themselves build from it, without a
network); the settings built from the environment; and the checks core.E009-E011."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core import checks
from django.core.cache.backends.redis import RedisCache
from redis import exceptions as redis_exceptions

from core.redis_options import RedisTarget, SentinelPool, parse_host_port, parse_sentinels, split_list

BASE_DIR = Path(__file__).resolve().parents[2]
RETRY = [redis_exceptions.ConnectionError, redis_exceptions.TimeoutError]


# --- parsing ---------------------------------------------------------------------------------
@pytest.mark.parametrize("entry, parsed", [
    ("10.0.0.1:26379", ("10.0.0.1", 26379)),
    (" sentinel-a.internal:26379 ", ("sentinel-a.internal", 26379)),
    ("[2001:db8::1]:26380", ("2001:db8::1", 26380)),
])
def test_host_port_parses(entry, parsed):
    assert parse_host_port(entry) == parsed


@pytest.mark.parametrize("entry", ["sentinel", "sentinel:", ":26379", "a:b", "a:0", "a:65536", "2001:db8::1:26379",
                                   "[2001:db8::1]", "[::1]26379", "a:26379:1", "a:\u00b2"])
def test_host_port_refuses(entry):
    with pytest.raises(ValueError):
        parse_host_port(entry)


def test_sentinel_lists_split_and_keep_the_bad_entries_apart():
    assert split_list(" a:1, ,b:2,") == ["a:1", "b:2"]
    assert split_list(None) == []
    assert parse_sentinels(["a:1", "nope", "[::1]:2"]) == ([("a", 1), ("::1", 2)], ["nope"])


# --- direct ----------------------------------------------------------------------------------
def test_direct_is_the_url_as_before():
    target = RedisTarget(url="redis://:pw@10.0.0.5:6380/2")
    assert not target.uses_sentinel and not target.tls
    assert target.channel_layer_host(max_connections=5) == {
        "address": "redis://:pw@10.0.0.5:6380/2", "retry_on_error": RETRY, "max_connections": 5}
    cache = target.cache(KEY_PREFIX="p")
    assert cache == {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://:pw@10.0.0.5:6380/2",
                     "OPTIONS": {"retry_on_error": RETRY}, "KEY_PREFIX": "p"}
    pool = target.connection_pool()
    assert pool.connection_kwargs["host"] == "10.0.0.5" and pool.connection_kwargs["db"] == 2


def test_a_ca_file_goes_to_tls_connections_only():
    assert "ssl_ca_certs" not in RedisTarget(url="redis://h/0", tls_ca_file="/ca.pem").common_options()
    target = RedisTarget(url="rediss://h:6380/0", tls_ca_file="/ca.pem")
    assert target.channel_layer_host()["ssl_ca_certs"] == "/ca.pem"
    assert target.cache()["OPTIONS"]["ssl_ca_certs"] == "/ca.pem"
    pool = target.connection_pool()
    assert pool.connection_class.__name__ == "SSLConnection"
    assert pool.connection_kwargs["ssl_ca_certs"] == "/ca.pem"


def test_query_options_of_the_url_reach_redis_py():
    pool = RedisTarget(url="rediss://h/0?ssl_cert_reqs=none&ssl_check_hostname=false").connection_pool()
    assert pool.connection_kwargs["ssl_cert_reqs"] == "none" and pool.connection_kwargs["ssl_check_hostname"] is False


# --- Sentinel --------------------------------------------------------------------------------
SENTINEL = RedisTarget(url="rediss://app:secret@ignored:1/5", sentinels=(("s1", 26379), ("s2", 26380)),
                       sentinel_master="main", sentinel_password="sentinel-pw", tls_ca_file="/ca.pem")


def test_through_sentinel_the_url_gives_db_credentials_and_tls_not_the_host():
    options = SENTINEL.master_options()
    assert options == {"retry_on_error": RETRY, "ssl_ca_certs": "/ca.pem", "username": "app", "password": "secret",
                       "db": 5, "ssl": True}
    assert SENTINEL.sentinel_options() == {"socket_timeout": 2.0, "socket_connect_timeout": 2.0,
                                           "password": "sentinel-pw", "ssl": True, "ssl_ca_certs": "/ca.pem"}
    plain = RedisTarget(url="redis://h/0", sentinels=(("s", 1),), sentinel_master="m")
    assert "ssl" not in plain.master_options() and "ssl" not in plain.sentinel_options()
    assert "password" not in plain.sentinel_options()


def test_half_a_sentinel_configuration_is_direct():
    assert not RedisTarget(url="redis://h/0", sentinels=(("s", 1),)).uses_sentinel
    assert not RedisTarget(url="redis://h/0", sentinel_master="m").uses_sentinel


def test_the_channel_layer_host_builds_channels_redis_sentinel_pool():
    from channels_redis.utils import create_pool
    from redis.asyncio.sentinel import SentinelConnectionPool, SentinelManagedSSLConnection

    host = SENTINEL.channel_layer_host(max_connections=7, socket_timeout=15)
    json.dumps({**host, "retry_on_error": None})  # plain data, as settings should be
    pool = create_pool(host)
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "main"
    assert pool.connection_class is SentinelManagedSSLConnection
    assert pool.max_connections == 7
    kwargs = pool.connection_kwargs
    assert (kwargs["db"], kwargs["username"], kwargs["password"]) == (5, "app", "secret")
    assert kwargs["ssl_ca_certs"] == "/ca.pem" and kwargs["socket_timeout"] == 15
    sentinels = pool.sentinel_manager.sentinels
    assert [(s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
            for s in sentinels] == [("s1", 26379), ("s2", 26380)]
    assert sentinels[0].connection_pool.connection_kwargs["password"] == "sentinel-pw"
    assert sentinels[0].connection_pool.connection_kwargs["ssl_ca_certs"] == "/ca.pem"


def test_the_cache_builds_a_sentinel_pool_through_django():
    from redis.sentinel import SentinelManagedSSLConnection

    config = SENTINEL.cache(KEY_PREFIX="p")
    assert config["OPTIONS"]["pool_class"] == "core.redis_options.SentinelPool"
    cache = RedisCache(config["LOCATION"], config)
    pool = cache._cache._get_connection_pool(write=True)
    assert isinstance(pool, SentinelPool) and pool.service_name == "main"
    assert pool.connection_class is SentinelManagedSSLConnection
    kwargs = pool.connection_kwargs
    assert (kwargs["db"], kwargs["password"], kwargs["ssl_ca_certs"]) == (5, "secret", "/ca.pem")
    assert kwargs["retry_on_error"] == RETRY and "parser_class" in kwargs  # Django's option kept
    assert [s.connection_pool.connection_kwargs["port"] for s in pool.sentinel_manager.sentinels] == [26379, 26380]


def test_the_sync_client_goes_through_sentinel():
    from redis.sentinel import SentinelConnectionPool

    pool = SENTINEL.client().connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.connection_kwargs["db"] == 5


def test_from_settings_reads_the_settings(settings):
    settings.REDIS_URL = "redis://h/1"
    settings.REDIS_SENTINELS = ["a:1", "bad"]
    settings.REDIS_SENTINEL_MASTER = "m"
    settings.REDIS_SENTINEL_PASSWORD = None
    settings.REDIS_TLS_CA_FILE = None
    target = RedisTarget.from_settings()
    assert target.sentinels == (("a", 1),) and target.sentinel_master == "m" and target.uses_sentinel


# --- settings from the environment -----------------------------------------------------------
def _settings_in_a_fresh_process(**env: str) -> dict:
    code = ("import json, django; django.setup(); from django.conf import settings as s; "
            "h = s.CHANNEL_LAYERS['default'].get('CONFIG', {}).get('hosts', [{}])[0]; "
            "print(json.dumps({'host': {k: v for k, v in h.items() if k != 'retry_on_error'}, "
            "'cache': s.CACHES['default'], 'sentinels': s.REDIS_SENTINELS}, default=str))")
    names = ("REDIS_URL", "REDIS_SENTINELS", "REDIS_SENTINEL_MASTER", "REDIS_SENTINEL_PASSWORD", "REDIS_TLS_CA_FILE",
             "DATABASE_URL")
    child = {k: v for k, v in os.environ.items() if k not in names}
    child.update(DJANGO_SETTINGS_MODULE="symphainy.settings", **env)
    result = subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, env=child, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_environment_configures_sentinel_for_the_layer_and_the_cache():
    seen = _settings_in_a_fresh_process(REDIS_URL="rediss://:pw@x/2", REDIS_SENTINELS="s1:26379, s2:26380",
                                        REDIS_SENTINEL_MASTER="main", REDIS_TLS_CA_FILE="/etc/ssl/redis-ca.pem")
    assert seen["sentinels"] == ["s1:26379", "s2:26380"]
    host = seen["host"]
    assert host["master_name"] == "main" and host["sentinels"] == [["s1", 26379], ["s2", 26380]]
    assert (host["db"], host["password"], host["ssl"], host["ssl_ca_certs"]) == (2, "pw", True, "/etc/ssl/redis-ca.pem")
    assert host["max_connections"] == 1000 and host["socket_timeout"] == 15
    assert seen["cache"]["OPTIONS"]["pool_class"] == "core.redis_options.SentinelPool"
    assert seen["cache"]["OPTIONS"]["service_name"] == "main"


def test_without_sentinel_the_environment_gives_the_url_as_before():
    seen = _settings_in_a_fresh_process(REDIS_URL="redis://127.0.0.1:6379/0")
    assert seen["host"]["address"] == "redis://127.0.0.1:6379/0" and "master_name" not in seen["host"]
    assert seen["cache"]["LOCATION"] == "redis://127.0.0.1:6379/0" and "pool_class" not in seen["cache"]["OPTIONS"]


# --- checks ----------------------------------------------------------------------------------
def redis_errors(settings, **values) -> list[checks.CheckMessage]:
    defaults = {"REDIS_URL": "redis://h/0", "REDIS_SENTINELS": [], "REDIS_SENTINEL_MASTER": None,
                "REDIS_SENTINEL_PASSWORD": None, "REDIS_TLS_CA_FILE": None}
    for name, value in {**defaults, **values}.items():
        setattr(settings, name, value)
    return [m for m in checks.run_checks() if m.is_serious() and m.id in ("core.E009", "core.E010", "core.E011")]


def test_a_whole_sentinel_configuration_passes(settings, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert redis_errors(settings, REDIS_URL="rediss://h/0", REDIS_SENTINELS=["a:1", "[::1]:2"],
                        REDIS_SENTINEL_MASTER="m", REDIS_SENTINEL_PASSWORD="pw", REDIS_TLS_CA_FILE=str(ca)) == []
    assert redis_errors(settings) == []
    assert redis_errors(settings, REDIS_URL=None) == []  # no Redis at all


@pytest.mark.parametrize("values, error_id, says", [
    ({"REDIS_SENTINELS": ["a:1"]}, "core.E009", "REDIS_SENTINEL_MASTER is not"),
    ({"REDIS_SENTINEL_MASTER": "m"}, "core.E009", "REDIS_SENTINELS is not"),
    ({"REDIS_SENTINEL_PASSWORD": "pw"}, "core.E009", "REDIS_SENTINEL_PASSWORD is set"),
    ({"REDIS_URL": None, "REDIS_SENTINELS": ["a:1"], "REDIS_SENTINEL_MASTER": "m"}, "core.E009", "REDIS_URL is not"),
    ({"REDIS_SENTINELS": ["a:1", "sentinel-b"], "REDIS_SENTINEL_MASTER": "m"}, "core.E010", "'sentinel-b'"),
    ({"REDIS_URL": "rediss://h/0", "REDIS_TLS_CA_FILE": "/no/such/ca.pem"}, "core.E011", "not a readable file"),
    ({"REDIS_TLS_CA_FILE": __file__}, "core.E011", "not rediss://"),
])
def test_a_bad_redis_configuration_is_an_error(settings, values, error_id, says):
    found = redis_errors(settings, **values)
    assert [m.id for m in found] == [error_id], found
    assert says in found[0].msg


def test_a_bad_sentinel_environment_stops_a_server_at_start_up(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(SQLITE_PATH=str(tmp_path / "checks.sqlite3"), REDIS_URL="redis://h/0",
               REDIS_SENTINELS="sentinel-without-port", REDIS_SENTINEL_MASTER="m")
    result = subprocess.run([sys.executable, "-c", "import symphainy.asgi"], cwd=BASE_DIR, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "Refusing to start" in result.stderr and "core.E010" in result.stderr
