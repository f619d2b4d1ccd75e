"""How every Redis client of the service is built: the channel layer (channels-redis), Django's
cache (throttles) and the Redis state backend all reach Redis through `RedisTarget`.

Two ways to reach it:

- directly: `REDIS_URL` names the server (`redis://` or `rediss://` for TLS);
- through Sentinel: `REDIS_SENTINELS` (``host:port,host:port``) and `REDIS_SENTINEL_MASTER`
  (the monitored service name). The clients ask the sentinels for the current master on
  every new connection, so after a failover they follow it. `REDIS_URL` still gives the db
  number, the username and password and TLS (``rediss://``); its host and port are ignored.
  The sentinels are reached like the master (TLS when the URL says ``rediss://``), with
  `REDIS_SENTINEL_PASSWORD` if they require one.

`REDIS_TLS_CA_FILE` (a PEM file of CA certificates) is handed to redis-py as ``ssl_ca_certs``.
Any other redis-py connection option can ride in the URL's query string, as redis-py reads it
(e.g. ``?ssl_cert_reqs=none``, ``?ssl_check_hostname=false``).

This module reads no Django settings at import: `symphainy.settings` builds CHANNEL_LAYERS and
CACHES with it, and `RedisTarget.from_settings()` builds one from the settings afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import redis
from redis import exceptions as redis_exceptions
from redis.connection import SSLConnection, parse_url
from redis.sentinel import Sentinel, SentinelConnectionPool

# A pooled connection that died with a Redis restart (or a failover) fails its next command;
# each client retries such a command once, on a fresh connection, so the service recovers by
# itself when Redis returns; through Sentinel the fresh connection goes to the new master.
RETRY_ON_ERROR = [redis_exceptions.ConnectionError, redis_exceptions.TimeoutError]
# Asking a sentinel is short: one that hangs must not hold every new connection for long
# (the sentinels are asked in turn until one knows the master).
SENTINEL_SOCKET_TIMEOUT_S = 2.0


def parse_host_port(entry: str) -> tuple[str, int]:
    """``host:port`` or ``[ipv6]:port`` → (host, port); ValueError if it is neither."""
    entry = entry.strip()
    if entry.startswith("["):
        host, sep, rest = entry[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"{entry!r} is not [host]:port")
        port_text = rest[1:]
    else:
        host, sep, port_text = entry.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"{entry!r} is not host:port")
    if not host or not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise ValueError(f"{entry!r} is not host:port with a port from 1 to 65535")
    return host, int(port_text)


def split_list(raw: str | None) -> list[str]:
    return [part.strip() for part in (raw or "").split(",") if part.strip()]


def parse_sentinels(entries: Iterable[str]) -> tuple[list[tuple[str, int]], list[str]]:
    """The entries that parse, and those that do not (reported by core.checks)."""
    good: list[tuple[str, int]] = []
    bad: list[str] = []
    for entry in entries:
        try:
            good.append(parse_host_port(entry))
        except ValueError:
            bad.append(entry)
    return good, bad


def is_tls_url(url: str | None) -> bool:
    return bool(url) and url.startswith("rediss://")


@dataclass(frozen=True)
class RedisTarget:
    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str | None = None
    sentinel_password: str | None = None
    tls_ca_file: str | None = None
    # Extra redis-py connection options for every client (not for the sentinels).
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Any = None, url: str | None = None) -> "RedisTarget":
        if settings is None:
            from django.conf import settings
        sentinels, _ = parse_sentinels(getattr(settings, "REDIS_SENTINELS", []) or [])
        return cls(
            url=url or settings.REDIS_URL,
            sentinels=tuple(sentinels),
            sentinel_master=getattr(settings, "REDIS_SENTINEL_MASTER", None),
            sentinel_password=getattr(settings, "REDIS_SENTINEL_PASSWORD", None),
            tls_ca_file=getattr(settings, "REDIS_TLS_CA_FILE", None),
        )

    # --- the pieces ---------------------------------------------------------------------
    @property
    def tls(self) -> bool:
        return is_tls_url(self.url)

    @property
    def uses_sentinel(self) -> bool:
        return bool(self.sentinels and self.sentinel_master)

    def common_options(self) -> dict[str, Any]:
        """Options every connection to the master takes, beside what the URL says."""
        options: dict[str, Any] = {"retry_on_error": list(RETRY_ON_ERROR), **self.extra}
        if self.tls and self.tls_ca_file:
            options["ssl_ca_certs"] = self.tls_ca_file
        return options

    def master_options(self) -> dict[str, Any]:
        """Through Sentinel: the connection options the URL gives (db, credentials, its query
        string), without its host and port, with ``ssl=True`` for ``rediss://`` (the
        sentinel pools pick their TLS connection class from it), plus `common_options`."""
        options = parse_url(self.url)
        options.pop("host", None)
        options.pop("port", None)
        connection_class = options.pop("connection_class", None)
        if connection_class is SSLConnection:
            options["ssl"] = True
        return {**self.common_options(), **options}

    def sentinel_options(self) -> dict[str, Any]:
        """How to connect to the sentinels themselves."""
        options: dict[str, Any] = {
            "socket_timeout": SENTINEL_SOCKET_TIMEOUT_S,
            "socket_connect_timeout": SENTINEL_SOCKET_TIMEOUT_S,
        }
        if self.sentinel_password:
            options["password"] = self.sentinel_password
        if self.tls:
            options["ssl"] = True
            if self.tls_ca_file:
                options["ssl_ca_certs"] = self.tls_ca_file
        return options

    # --- the three clients --------------------------------------------------------------
    def channel_layer_host(self, **overrides: Any) -> dict[str, Any]:
        """One entry of channels-redis' ``hosts``: an ``address`` (a URL), or, through
        Sentinel, ``master_name``/``sentinels``/``sentinel_kwargs`` (channels_redis.utils.create_pool)."""
        if self.uses_sentinel:
            return {
                "master_name": self.sentinel_master,
                "sentinels": [list(s) for s in self.sentinels],
                "sentinel_kwargs": self.sentinel_options(),
                **self.master_options(),
                **overrides,
            }
        return {"address": self.url, **self.common_options(), **overrides}

    def cache(self, **config: Any) -> dict[str, Any]:
        """A CACHES entry for django.core.cache.backends.redis.RedisCache. Through Sentinel
        its ``pool_class`` is `SentinelPool`, which Django calls as ``from_url(LOCATION, **OPTIONS)``."""
        options: dict[str, Any] = self.common_options()
        if self.uses_sentinel:
            options = {
                "pool_class": "core.redis_options.SentinelPool",
                "service_name": self.sentinel_master,
                "sentinels": [list(s) for s in self.sentinels],
                "sentinel_kwargs": self.sentinel_options(),
                "tls_ca_file": self.tls_ca_file,
            }
        return {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": self.url,
            "OPTIONS": options,
            **config,
        }

    def connection_pool(self, **overrides: Any) -> redis.ConnectionPool:
        """A synchronous redis-py pool (the state backend, health and the tests)."""
        if self.uses_sentinel:
            sentinel = Sentinel(self.sentinels, sentinel_kwargs=self.sentinel_options())
            return SentinelConnectionPool(self.sentinel_master, sentinel, **{**self.master_options(), **overrides})
        return redis.ConnectionPool.from_url(self.url, **{**self.common_options(), **overrides})

    def client(self, **overrides: Any) -> redis.Redis:
        return redis.Redis(connection_pool=self.connection_pool(**overrides))

    def async_client(self, *, connections: int, wait: float, **overrides: Any) -> "redis.asyncio.Redis":
        """An asyncio redis-py client, for one event loop (the socket cap's counts), with at
        most `connections` to Redis; a command waits up to `wait` seconds for a free one.
        redis-py's own pool refuses the 101st command in flight at once ("Too many
        connections"): in a restart's reconnect storm, thousands of handshakes ask at once,
        and each refusal degraded the cap to this process's count for a while."""
        import redis.asyncio as aioredis
        from redis.asyncio.sentinel import Sentinel as AsyncSentinel
        from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelPool

        if self.uses_sentinel:
            sentinel = AsyncSentinel(self.sentinels, sentinel_kwargs=self.sentinel_options())
            return sentinel.master_for(self.sentinel_master, connection_pool_class=_blocking(AsyncSentinelPool),
                                       max_connections=connections, timeout=wait,
                                       **{**self.master_options(), **overrides})
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url, max_connections=connections, timeout=wait, **{**self.common_options(), **overrides})
        return aioredis.Redis(connection_pool=pool)


def _blocking(pool_class: type) -> type:
    """`pool_class` (a Sentinel master's pool) that waits for a free connection, as
    redis-py's BlockingConnectionPool does, instead of refusing over its maximum."""
    from redis.asyncio.connection import BlockingConnectionPool

    return type(f"Blocking{pool_class.__name__}", (pool_class, BlockingConnectionPool), {})


class SentinelPool(SentinelConnectionPool):
    """The pool_class Django's RedisCache gets when Redis is reached through Sentinel."""

    @classmethod
    def from_url(cls, url: str, *, service_name: str, sentinels: list, sentinel_kwargs: dict | None = None,
                 tls_ca_file: str | None = None, **options: Any) -> SentinelConnectionPool:  # type: ignore[override]
        target = RedisTarget(
            url=url,
            sentinels=tuple((host, int(port)) for host, port in sentinels),
            sentinel_master=service_name,
            tls_ca_file=tls_ca_file,
            extra=options,  # Django's parser_class, and anything else set in OPTIONS
        )
        sentinel = Sentinel(target.sentinels, sentinel_kwargs=sentinel_kwargs)
        return cls(service_name, sentinel, **target.master_options())
