"""What the token check needs to know about a session, and the short-lived cache of it
that keeps the socket handshake off the database.

`SessionAccess` is a snapshot: the session's status and expiries, whether its user and
tenant are active, the user's role there, and the user's open-socket count. The rules
that judge it are `access_check`, the only copy of them (REST and sockets both use it).

The cache holds a snapshot for at most ACCESS_CACHE_TTL (a few seconds), per process. An
end or an access change drops it on every process through the session event log, so a
new socket never opens on a snapshot older than the change once the tail has read it;
the TTL bounds what a tail that cannot reach the database leaves behind. See
docs/architecture.md#the-session-access-snapshot.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

from django.db import transaction

from core.conf import runtime_settings
from core.exceptions import InvalidToken, SessionEnded
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
    # The session's event-log position when the snapshot was read (sockets only).
    event_seq: int = 0

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
            event_seq=getattr(session, "event_seq", None) or 0,
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
        raise SessionEnded()


# --- The cache -----------------------------------------------------------------------------
# Each process keeps its own snapshots, in memory, read on the event loop without a thread
# hop; dropped as the module docstring says. A snapshot read from the database just before
# such a drop is not stored after it (the generation check in `put`). Written here rather
# than through Django's cache API, whose async methods hop to a thread.
class _LocalStore:
    MAX_ITEMS = 100_000

    def __init__(self) -> None:
        self._items: dict[uuid.UUID, tuple[float, SessionAccess]] = {}
        # session id -> the generation at which its snapshot was last dropped
        self._dropped: dict[uuid.UUID, int] = {}
        self.generation = 0
        self._lock = threading.Lock()

    def put(self, key: uuid.UUID, value: SessionAccess, ttl: float, read_at_generation: int) -> None:
        with self._lock:
            if self._dropped.get(key, -1) >= read_at_generation:
                return  # dropped after the read began: the snapshot may predate the change
            if len(self._items) > self.MAX_ITEMS:
                now = time.monotonic()
                self._items = {k: v for k, v in self._items.items() if v[0] > now}
            self._items[key] = (time.monotonic() + ttl, value)

    def get(self, key: uuid.UUID) -> SessionAccess | None:
        with self._lock:
            item = self._items.get(key)
        return item[1] if item and item[0] > time.monotonic() else None

    def forget(self, keys: Iterable[uuid.UUID]) -> None:
        with self._lock:
            self.generation += 1
            if len(self._dropped) > self.MAX_ITEMS:
                # Old drops matter only to reads begun before them; reads take milliseconds.
                horizon = self.generation - self.MAX_ITEMS // 2
                self._dropped = {k: g for k, g in self._dropped.items() if g > horizon}
            for key in keys:
                self._items.pop(key, None)
                self._dropped[key] = self.generation

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_store = _LocalStore()


def access_cache_generation() -> int:
    """Taken before reading a snapshot from the database; handed back to `access_cache_put`."""
    return _store.generation


def access_cache_put(access: SessionAccess, *, read_at_generation: int) -> None:
    ttl = runtime_settings.ACCESS_CACHE_TTL.total_seconds()
    if ttl > 0:
        _store.put(access.session_id, access, ttl, read_at_generation)


async def access_cache_get(session_id: uuid.UUID) -> SessionAccess | None:
    """The cached snapshot, or None; read without leaving the event loop."""
    if runtime_settings.ACCESS_CACHE_TTL.total_seconds() <= 0:
        return None
    return _store.get(session_id)


def access_cache_drop_local(session_ids: Iterable[uuid.UUID]) -> None:
    """Drop this process's snapshots of these sessions now (the tail, on a change)."""
    _store.forget([uuid.UUID(str(s)) for s in session_ids])


def access_cache_forget(session_ids: Iterable[uuid.UUID | str]) -> None:
    """Drop the snapshots of these sessions once the current transaction commits (other
    processes drop theirs when they read the change from the event log)."""
    keys = [uuid.UUID(str(session_id)) for session_id in session_ids]
    if keys:
        transaction.on_commit(lambda: _store.forget(keys))


def access_cache_clear() -> None:
    """Forget every snapshot of this process (tests)."""
    _store.clear()
