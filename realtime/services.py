"""What the socket gateway does with the database: authorize a socket, record it while it
is open, and sweep the records of server processes that died."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from accounts.models import role_permissions
from accounts.tokens import TokenClaims, claims_authenticate
from core.caller import Caller
from core.conf import runtime_settings
from core.events import log_position
from core.exceptions import NotFound, RateLimited, SessionEnded
from core.ids import uuid_parse
from core.models import ActorType, AuditEvent
from core.process import server_instance_id
from realtime.models import Connection, ServerInstance
from sessions_runtime.access import SessionAccess, access_cache_generation, access_cache_put, access_check
from sessions_runtime.models import RuntimeSession
from sessions_runtime.selectors import session_get_for_token, session_get_owned

# A process whose heartbeat is older than this is taken for dead.
INSTANCE_STALE_AFTER = timedelta(seconds=90)


@dataclass(frozen=True, slots=True)
class SocketGrant:
    """What an accepted socket may talk to. Kept small: it lives as long as the socket."""

    user_id: uuid.UUID
    tenant_id: uuid.UUID
    session_id: uuid.UUID
    session_expires_at: datetime
    role: str
    claims: TokenClaims
    # The session's event-log position as of the check (what `session.ready` starts from).
    event_seq: int = 0

    def caller(self, client_address: str | None = None) -> Caller:
        """The caller this socket stands for, in the session it was opened on."""
        return Caller(
            user_id=self.user_id, tenant_id=self.tenant_id, session_id=self.session_id, role=self.role,
            permissions=role_permissions(self.role), client_address=client_address or None,
        )


def socket_session_id(requested: object | None, own: uuid.UUID) -> uuid.UUID:
    """The session a socket asks for (`?session_id=`), else its token's own."""
    if requested is None:
        return own
    session_id = uuid_parse(requested)
    if session_id is None:
        raise NotFound("Session not found.")
    return session_id


def _target_session(own: RuntimeSession, requested: object | None) -> RuntimeSession:
    session_id = socket_session_id(requested, own.pk)
    if session_id == own.pk:
        return own
    session = session_get_owned(session_id=session_id, user_id=own.user_id, tenant_id=own.tenant_id)
    if session is None:
        raise NotFound("Session not found.")
    if not session.is_usable():
        raise SessionEnded()
    return session


# Sockets open on this process, per user: with the count in the session snapshot, the
# per-user cap is exact on one process and within ACCESS_CACHE_TTL across processes.
_local_sockets: Counter[uuid.UUID] = Counter()


def local_socket_reserve(user_id: uuid.UUID) -> None:
    """Count a socket of this user on this process, or raise RateLimited at the cap. Call
    on the event loop: the check and the count happen with nothing in between."""
    if _local_sockets.get(user_id, 0) >= runtime_settings.WS_MAX_SOCKETS_PER_USER:
        raise RateLimited("Too many open sockets for this user.")
    _local_sockets[user_id] += 1


def local_socket_closed(user_id: uuid.UUID) -> None:
    _local_sockets[user_id] -= 1
    if _local_sockets[user_id] <= 0:
        del _local_sockets[user_id]


def _check_socket_cap(user_id: uuid.UUID, counted: int) -> None:
    """The cap against the sockets recorded on every process (records trail the sockets by
    WS_CONNECTION_FLUSH_INTERVAL); this process's own are counted by `local_socket_reserve`."""
    if counted >= runtime_settings.WS_MAX_SOCKETS_PER_USER:
        raise RateLimited("Too many open sockets for this user.")


def _grant(
    access: SessionAccess, claims: TokenClaims, *, session_id: uuid.UUID, expires_at: datetime, event_seq: int = 0
) -> SocketGrant:
    return SocketGrant(
        user_id=access.user_id,
        tenant_id=access.tenant_id,
        session_id=session_id,
        session_expires_at=expires_at,
        role=access.role or "",
        claims=claims,
        event_seq=event_seq,
    )


def socket_authorize(*, claims: TokenClaims, requested_session_id: object | None) -> SocketGrant:
    """The handshake check against the database: the token's context (user, membership,
    tenant, own session) and the user's socket count in one query, then the requested
    session (exists, active, same user and tenant), then the per-user socket cap. Leaves
    the token session's snapshot in the access cache. Raises the ServiceError whose close
    code the socket is refused with."""
    # The token's session, its user's role and open-socket count: one query (the REST
    # token check does not need the count, so this does not go through it).
    generation = access_cache_generation()
    own = session_get_for_token(
        session_id=claims.session_id, user_id=claims.user_id, tenant_id=claims.tenant_id, for_socket=True
    )
    access = SessionAccess.from_session(own) if own is not None else None
    access_check(access)
    access_cache_put(access, read_at_generation=generation)
    session = _target_session(own, requested_session_id)
    _check_socket_cap(access.user_id, access.user_socket_count)
    event_seq = access.event_seq if session.pk == own.pk else log_position(session.pk)
    return _grant(access, claims, session_id=session.pk, expires_at=session.expires_at, event_seq=event_seq)


def socket_authorize_cached(*, claims: TokenClaims, requested_session_id: object | None, access: SessionAccess) -> SocketGrant | None:
    """The same check from a cached snapshot of the token's session, or None when the
    snapshot cannot answer (another session requested, or another user's snapshot)."""
    if (access.session_id, access.user_id, access.tenant_id) != (claims.session_id, claims.user_id, claims.tenant_id):
        return None
    if socket_session_id(requested_session_id, claims.session_id) != claims.session_id:
        return None
    access_check(access)
    _check_socket_cap(access.user_id, access.user_socket_count)
    return _grant(access, claims, session_id=access.session_id, expires_at=access.expires_at, event_seq=access.event_seq)


def socket_recheck(*, grant: SocketGrant, claims: TokenClaims) -> SocketGrant:
    """Re-run the check for an open socket (on its timer, or with a refreshed token).

    The new claims must name the same user, tenant and session as the socket's own token.
    """
    if (claims.user_id, claims.tenant_id, claims.session_id) != (
        grant.claims.user_id,
        grant.claims.tenant_id,
        grant.claims.session_id,
    ):
        raise NotFound("The token belongs to another user or session.")
    own, _ = claims_authenticate(claims)
    session = _target_session(own, grant.session_id)
    return _grant(SessionAccess.from_session(own), claims, session_id=session.pk, expires_at=session.expires_at)


def connection_record(
    *, grant: SocketGrant, channel_name: str, client_address: str = "", user_agent: str = ""
) -> Connection:
    """The record of an open socket (not saved: see realtime.registry)."""
    return Connection(
        session_id=grant.session_id,
        user_id=grant.user_id,
        channel_name=channel_name,
        server_instance=server_instance_id(),
        client_address=client_address[:64],
        user_agent=user_agent[:256],
    )


def connection_open(**kwargs: object) -> None:
    """Save the record at once (commands and tests; sockets go through the registry)."""
    connection_record(**kwargs).save()  # type: ignore[arg-type]


def connection_close(*, channel_name: str) -> None:
    Connection.objects.filter(channel_name=channel_name).delete()


def server_heartbeat(*, now: datetime | None = None) -> None:
    """Record that this process is alive."""
    now = now or timezone.now()
    ServerInstance.objects.update_or_create(pk=server_instance_id(), defaults={"last_heartbeat_at": now})


@transaction.atomic
def connections_sweep(*, now: datetime | None = None) -> int:
    """Delete the connection records of processes whose heartbeat stopped (and of
    processes never heard of). Returns how many records went."""
    now = now or timezone.now()
    stale = ServerInstance.objects.filter(last_heartbeat_at__lt=now - INSTANCE_STALE_AFTER)
    alive = ServerInstance.objects.exclude(pk__in=stale.values("pk")).values("pk")
    deleted, _ = Connection.objects.exclude(server_instance__in=alive).delete()
    stale.delete()
    return deleted


# --- Refused handshakes in the audit trail, aggregated ---------------------------------
# A flood of refused handshakes must not become a flood of rows: refusals are counted in
# memory per close code and written as one row per code per flush (every heartbeat).
_refusals: dict[int, int] = {}
_refusals_lock = threading.Lock()


def socket_refusal_count(*, close_code: int) -> None:
    with _refusals_lock:
        _refusals[close_code] = _refusals.get(close_code, 0) + 1


def socket_refusals_flush(*, now: datetime | None = None) -> int:
    """Write the counted refusals as `socket.refused` audit rows; returns rows written."""
    with _refusals_lock:
        counts = dict(_refusals)
        _refusals.clear()
    now = now or timezone.now()
    AuditEvent.objects.bulk_create(
        AuditEvent(
            at=now, kind=AuditEvent.Kind.SOCKET_REFUSED, actor_type=ActorType.SYSTEM,
            data={"close_code": code, "count": count, "server_instance": server_instance_id()},
        )
        for code, count in sorted(counts.items())
    )
    return len(counts)
