"""The database half of a socket's check: a `SocketGrant` from verified token claims.

`sockets_authorize` answers the handshakes that reach the database (`realtime.handshake`
batches them: a restarted process's clients arrive by the thousand) with their tokens'
sessions read in one query; `socket_authorize` is one of them; `socket_recheck` runs the
check again for an open socket (on its timer, `realtime.rechecks`, or with a refreshed
token).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from accounts.tokens import TokenClaims, caller_for, claims_resolve, claims_resolve_many
from core.caller import Caller
from core.events import log_position
from core.exceptions import NotFound, SessionEnded
from sessions_runtime.access import SessionAccess
from sessions_runtime.selectors import session_get_owned


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
    # The user's connection records as of the check: the cap's count when Redis cannot give one.
    user_sockets_recorded: int = 0

    def caller(self, client_address: str | None = None) -> Caller:
        """The caller this socket stands for, in the session it was opened on."""
        return caller_for(self, client_address=client_address)


def socket_authorize(*, claims: TokenClaims, session_id: uuid.UUID) -> SocketGrant:
    """The handshake check against the database: the token's context (user, membership,
    tenant, own session) with the user's socket records and the log position in one query,
    then the requested session."""
    [grant] = sockets_authorize([(claims, session_id)])
    if isinstance(grant, Exception):
        raise grant
    return grant


def sockets_authorize(requests: list[tuple[TokenClaims, uuid.UUID]]) -> list[SocketGrant | Exception]:
    """`socket_authorize` for many handshakes, their tokens' sessions in one query: each
    one's grant, or the error it alone is refused with."""
    answers: list[SocketGrant | Exception] = []
    for (claims, session_id), resolved in zip(requests, claims_resolve_many([c for c, _ in requests], for_socket=True)):
        try:
            if isinstance(resolved, Exception):
                raise resolved
            own, access = resolved
            if session_id == own.pk:
                expires_at, event_seq = own.expires_at, access.event_seq
            else:
                expires_at, event_seq = _other_session(session_id, access), log_position(session_id)
            answers.append(grant_for(access, claims, session_id=session_id, expires_at=expires_at, event_seq=event_seq))
        except Exception as error:  # noqa: BLE001 - this handshake's refusal, not the others'
            answers.append(error)
    return answers


def socket_recheck(*, grant: SocketGrant, claims: TokenClaims) -> SocketGrant:
    """Re-run the database check for an open socket (on its timer, or with a refreshed
    token, whose claims must name the same user, tenant and session as the first)."""
    if (claims.user_id, claims.tenant_id, claims.session_id) != (
        grant.claims.user_id, grant.claims.tenant_id, grant.claims.session_id
    ):
        raise NotFound("The token belongs to another user or session.")
    own, access = claims_resolve(claims)
    expires_at = own.expires_at if grant.session_id == own.pk else _other_session(grant.session_id, access)
    return grant_for(access, claims, session_id=grant.session_id, expires_at=expires_at, event_seq=grant.event_seq)


def _other_session(session_id: uuid.UUID, access: SessionAccess) -> datetime:
    """A session other than the token's own: the same user's and tenant's, and usable.
    Returns its absolute expiry."""
    session = session_get_owned(session_id=session_id, user_id=access.user_id, tenant_id=access.tenant_id)
    if session is None:
        raise NotFound("Session not found.")
    if not session.is_usable():
        raise SessionEnded()
    return session.expires_at


def grant_for(
    access: SessionAccess, claims: TokenClaims, *, session_id: uuid.UUID, expires_at: datetime, event_seq: int
) -> SocketGrant:
    return SocketGrant(
        user_id=access.user_id, tenant_id=access.tenant_id, session_id=session_id, session_expires_at=expires_at,
        role=access.role or "", claims=claims, event_seq=event_seq, user_sockets_recorded=access.user_socket_count,
    )
