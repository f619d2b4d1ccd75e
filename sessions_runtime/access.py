"""What the token check needs to know about a session, and the short-lived cache of it
that keeps the socket handshake off the database.

`SessionAccess` is a snapshot: the session's status and expiries, whether its user and
tenant are active, the user's role there, and the user's open-socket count. The rules
that judge it are `access_check`, the only copy of them (REST and sockets both use it).

The cache holds a snapshot for at most ACCESS_CACHE_TTL (a few seconds). Ending a session
deletes its snapshot when the transaction commits, and so does a role change; a lost
deletion is bounded by the TTL, and open sockets re-check against the database on their
own timer. Correctness therefore never rests on a cached value older than the TTL.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Iterable

from django.db import transaction

from core.conf import runtime_settings
from core.exceptions import DEPENDENCY_ERRORS, InvalidToken, SessionNotActive
from sessions_runtime.models import SessionStatus, expiry_reason

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SessionAccess:
    session_id: uuid.UUID
    user_id: uuid.UUID
    tenant_id: uuid.UUID
    status: str
    expires_at: datetime
    idle_expires_at: datetime
    user_active: bool
    tenant_active: bool
    role: str | None
    user_socket_count: int = 0

    def usable(self, now: datetime | None = None) -> bool:
        return self.status == SessionStatus.ACTIVE and not expiry_reason(
            expires_at=self.expires_at, idle_expires_at=self.idle_expires_at, now=now
        )

    @classmethod
    def from_session(cls, session: Any) -> "SessionAccess":
        """From a RuntimeSession fetched by `session_get_for_token` (user, tenant, role)."""
        return cls(
            session_id=session.pk,
            user_id=session.user_id,
            tenant_id=session.tenant_id,
            status=session.status,
            expires_at=session.expires_at,
            idle_expires_at=session.idle_expires_at,
            user_active=session.user.is_active,
            tenant_active=session.tenant.is_active,
            role=getattr(session, "member_role", None),
            user_socket_count=getattr(session, "user_socket_count", None) or 0,
        )


def access_check(access: SessionAccess | None) -> None:
    """The rules of the token check, applied to what the database (or the cache) says."""
    if access is None:
        raise InvalidToken("The token's session does not exist.")
    if not access.user_active:
        raise InvalidToken("The user is not active.")
    if not access.role:
        raise InvalidToken("The user is no longer a member of the token's tenant.")
    if not access.tenant_active:
        raise InvalidToken("The tenant is suspended.")
    if not access.usable():
        raise SessionNotActive()


# --- The cache -----------------------------------------------------------------------------
# Written here rather than through Django's cache API: that API is synchronous (its async
# methods hop to a thread) and, under ASGI, local to each asyncio context, so every
# handshake would build a new client. The read below stays on the event loop: an
# in-process dict for the embedded default, a native asyncio Redis client when REDIS_URL
# is set (shared by every process, so an end on one process reaches the others' reads).
def _encode(access: SessionAccess) -> str:
    return json.dumps({k: (v.isoformat() if isinstance(v, datetime) else str(v) if isinstance(v, uuid.UUID) else v)
                       for k, v in asdict(access).items()})


def _decode(raw: str | bytes | None) -> SessionAccess | None:
    if not raw:
        return None
    data = json.loads(raw)
    for name in ("session_id", "user_id", "tenant_id"):
        data[name] = uuid.UUID(data[name])
    for name in ("expires_at", "idle_expires_at"):
        data[name] = datetime.fromisoformat(data[name])
    return SessionAccess(**data)


class _LocalStore:
    def __init__(self) -> None:
        self._items: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def put(self, key: str, value: str, ttl: float) -> None:
        with self._lock:
            if len(self._items) > 100_000:
                now = time.monotonic()
                self._items = {k: v for k, v in self._items.items() if v[0] > now}
            self._items[key] = (time.monotonic() + ttl, value)

    async def get(self, key: str) -> str | None:
        with self._lock:
            item = self._items.get(key)
        return item[1] if item and item[0] > time.monotonic() else None

    def forget(self, keys: list[str]) -> None:
        with self._lock:
            for key in keys:
                self._items.pop(key, None)


class _RedisStore:
    def __init__(self, url: str, prefix: str) -> None:
        import redis
        from django.conf import settings

        self._url, self._prefix = url, prefix
        self._options = settings.REDIS_CONNECTION_OPTIONS
        self._sync = redis.Redis.from_url(url, **self._options)
        self._async: dict[int, Any] = {}

    def _name(self, key: str) -> str:
        return f"{self._prefix}:{key}"

    def put(self, key: str, value: str, ttl: float) -> None:
        self._sync.set(self._name(key), value, px=max(1, int(ttl * 1000)))

    async def get(self, key: str) -> str | None:
        import redis.asyncio

        loop = asyncio.get_running_loop()
        client = self._async.get(id(loop))
        if client is None:
            client = self._async[id(loop)] = redis.asyncio.Redis.from_url(self._url, max_connections=200, **self._options)
        return await client.get(self._name(key))

    def forget(self, keys: list[str]) -> None:
        self._sync.delete(*(self._name(key) for key in keys))


_stores: dict[str, Any] = {}
_stores_lock = threading.Lock()


def _store() -> Any:
    from django.conf import settings

    url = settings.REDIS_URL or ""
    with _stores_lock:
        if url not in _stores:
            _stores[url] = _RedisStore(url, settings.REDIS_PREFIX) if url else _LocalStore()
        return _stores[url]


def _key(session_id: uuid.UUID | str) -> str:
    return f"session-access:{session_id}"


# The cache is an accelerator, never a dependency: when it cannot be reached, reads miss
# (the database answers) and writes are skipped (the TTL bounds what is left behind).
def access_cache_put(access: SessionAccess) -> None:
    ttl = runtime_settings.ACCESS_CACHE_TTL.total_seconds()
    if ttl > 0:
        try:
            _store().put(_key(access.session_id), _encode(access), ttl)
        except DEPENDENCY_ERRORS:
            logger.warning("access cache unavailable; not cached", exc_info=True)


async def access_cache_get(session_id: uuid.UUID) -> SessionAccess | None:
    """The cached snapshot, or None; read without leaving the event loop."""
    if runtime_settings.ACCESS_CACHE_TTL.total_seconds() <= 0:
        return None
    try:
        return _decode(await _store().get(_key(session_id)))
    except DEPENDENCY_ERRORS:
        logger.warning("access cache unavailable; asking the database", exc_info=True)
        return None


def _forget(keys: list[str]) -> None:
    try:
        _store().forget(keys)
    except DEPENDENCY_ERRORS:
        logger.warning("access cache unavailable; %d snapshots left to expire", len(keys), exc_info=True)


def access_cache_forget(session_ids: Iterable[uuid.UUID | str]) -> None:
    """Drop the snapshots of these sessions once the current transaction commits."""
    keys = [_key(session_id) for session_id in session_ids]
    if keys:
        transaction.on_commit(lambda: _forget(keys))


def access_cache_clear() -> None:
    """Forget every snapshot of this process's in-memory store (tests)."""
    store = _store()
    if isinstance(store, _LocalStore):
        store._items.clear()
