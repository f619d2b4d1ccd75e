"""An open socket's periodic re-check, shared per process by the sockets that would ask the
database the same question.

The re-check's database half (`socket_recheck` without its claims comparison) depends only
on the token's user, tenant and session and on the session the socket serves, never on the
token's jti or expiry. The sockets of one such key (the tabs of a session, a restarted
process's clients) come due at one phase of the interval, and take the outcome of one
check of the key that began at most `recheck_within()` before theirs runs: one query
instead of one each on Channels' one database thread. A refusal is each socket's
refusal, closed with its code; the grant's per-socket parts (claims, log position) stay the
socket's own. A refreshed token never comes here: `auth.refresh` checks its own claims.
How this bounds a lost end event: docs/architecture.md#the-periodic-re-check.
"""

from __future__ import annotations

import dataclasses
import time
import uuid

from channels.db import database_sync_to_async

from core.conf import runtime_settings
from core.tasks import Flights
from realtime.grants import SocketGrant, socket_recheck

# A socket takes the outcome of a check of its key that began at most this long before its
# own check runs (so no earlier than that before it came due), and never more than a tenth
# of WS_RECHECK_INTERVAL: a second covers the tabs of a session opened or resumed together,
# and is what a lost end event may add to the interval.
SHARE_WITHIN_SECONDS = 1.0
SHARE_WITHIN_FRACTION = 0.1

_rechecks = Flights()

Key = tuple[uuid.UUID, uuid.UUID, uuid.UUID, uuid.UUID]


def recheck_key(grant: SocketGrant) -> Key:
    """What the database half of a socket's re-check depends on."""
    claims = grant.claims
    return (claims.user_id, claims.tenant_id, claims.session_id, grant.session_id)


def recheck_within() -> float:
    """How long before a socket's check the shared check it takes may have begun."""
    interval = runtime_settings.WS_RECHECK_INTERVAL.total_seconds()
    return min(SHARE_WITHIN_SECONDS, interval * SHARE_WITHIN_FRACTION)


def recheck_delay(grant: SocketGrant) -> float:
    """Seconds until the socket's timer: its token's expiry, its session's absolute expiry (a
    session past it is over, sweep or not) or its next re-check, whichever is first.

    Re-checks come due at a phase of the interval taken from the key: every socket of a key
    at the same instant (one check), the keys spread over the interval, and never more than
    one interval from now (the first one after the handshake may come sooner)."""
    now = time.time()
    token_left = grant.claims.expires_at.timestamp() - now
    session_left = grant.session_expires_at.timestamp() - now + 0.05
    interval = runtime_settings.WS_RECHECK_INTERVAL.total_seconds()
    phase = hash(recheck_key(grant)) % 1000 / 1000 * interval
    recheck_left = (phase - now) % interval or interval
    return max(0.0, min(recheck_left, token_left, session_left))


async def recheck_shared(grant: SocketGrant) -> SocketGrant:
    """The socket's grant re-checked against the database, with its key's shared answer;
    raises the ServiceError its socket is closed with."""
    shared = await _rechecks.shared(recheck_key(grant), lambda: _recheck(grant), within=recheck_within())
    if shared.role != grant.role:
        # The socket applied a role change the shared read may predate, or the read saw one
        # whose event the socket missed: judged on a read of its own, never undone by an
        # older one (a few queries, only when a role changed).
        return await _recheck(grant)
    return dataclasses.replace(shared, claims=grant.claims, event_seq=grant.event_seq)


async def _recheck(grant: SocketGrant) -> SocketGrant:
    return await database_sync_to_async(socket_recheck)(grant=grant, claims=grant.claims)
