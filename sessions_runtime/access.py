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

import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Iterable

from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from sessions_runtime.models import SessionStatus
from symphainy.conf import runtime_settings
from symphainy.exceptions import InvalidToken, SessionNotActive


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
        now = now or timezone.now()
        return self.status == SessionStatus.ACTIVE and now < self.expires_at and now < self.idle_expires_at

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
def _key(session_id: uuid.UUID | str) -> str:
    return f"session-access:{session_id}"


def access_cache_put(access: SessionAccess) -> None:
    ttl = runtime_settings.ACCESS_CACHE_TTL.total_seconds()
    if ttl > 0:
        cache.set(_key(access.session_id), asdict(access), timeout=ttl)


def _from_cache(value: Any) -> SessionAccess | None:
    return SessionAccess(**value) if isinstance(value, dict) else None


async def access_cache_get(session_id: uuid.UUID) -> SessionAccess | None:
    """The cached snapshot, or None. Off the event loop, and off the database thread."""
    if runtime_settings.ACCESS_CACHE_TTL.total_seconds() <= 0:
        return None
    return _from_cache(await sync_to_async(cache.get, thread_sensitive=False)(_key(session_id)))


def access_cache_forget(session_ids: Iterable[uuid.UUID | str]) -> None:
    """Drop the snapshots of these sessions once the current transaction commits."""
    keys = [_key(session_id) for session_id in session_ids]
    if keys:
        transaction.on_commit(lambda: cache.delete_many(keys))
