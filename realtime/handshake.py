"""The socket handshake: credentials in, a `SocketGrant` out, in one order of steps.

`handshake_authorize` owns the order: decode the token (no database), parse the requested
session id once, subscribe to the event log, then judge access from this process's
snapshot of the token's session or from the database, and last take the socket's place
under the per-user cap (so no refusal comes after a place was taken). Subscribing before
judging means an end or an access change that commits after the check reaches the socket
through the tail, and one that committed before it is what the check (or the snapshot,
which the tail has dropped by then) sees. Every step raises the `ServiceError` whose close
code refuses the socket (`realtime.consumers` translates it). The database half, and its
re-run for an open socket, is `realtime.grants`.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl, urlencode


from accounts.tokens import ACCESS, TokenClaims, token_decode
from core.batches import Batches
from core.conf import runtime_settings
from core.exceptions import DEPENDENCY_ERRORS, CloseCode, NotAuthenticated, NotFound, RateLimited
from core.ids import uuid_parse
from core.metrics import HANDSHAKES, SOCKET_REFUSALS
from core.tasks import Flights
from realtime import heartbeat
from realtime.grants import SocketGrant, grant_for, sockets_authorize
from realtime.counts import local_socket_add, local_socket_remove, local_sockets, socket_counts
from realtime.presence import socket_refusal_count
from sessions_runtime.access import access_cache_get, access_check

SUBPROTOCOL = "symphainy.v1"
BEARER_SUBPROTOCOL_PREFIX = "bearer."
TOKEN_QUERY_PARAMS = ("access_token", "session_token")
# Where the ASGI app hands the credentials to the consumer, which takes them out.
SCOPE_CREDENTIALS = "runtime_credentials"


@dataclass(frozen=True, slots=True)
class SocketCredentials:
    """What the client presented; the token is not kept past the handshake."""

    token: str | None
    session_id: str | None
    subprotocol: str | None
    # Resume: the last position the client saw (`?since=`) and the log's epoch then.
    since: int | None = None
    epoch: str | None = None


def credentials_from_scope(scope: dict[str, Any]) -> tuple[SocketCredentials, bytes]:
    """Find the token (subprotocol, then Authorization header, then legacy query) and the
    requested session. Also returns the query string with any token removed."""
    offered = [p for p in scope.get("subprotocols") or [] if isinstance(p, str)]
    token = next((p[len(BEARER_SUBPROTOCOL_PREFIX):] for p in offered if p.startswith(BEARER_SUBPROTOCOL_PREFIX)), None)
    if token is None:
        for name, value in scope.get("headers") or []:
            if name == b"authorization":
                parts = value.decode("latin1").split()
                if len(parts) == 2 and parts[0].lower() == "bearer":
                    token = parts[1]
                break
    query = parse_qsl((scope.get("query_string") or b"").decode("latin1"), keep_blank_values=True)
    if token is None:
        token = next((v for k, v in query if k in TOKEN_QUERY_PARAMS and v), None)
    session_id = next((v for k, v in query if k == "session_id"), None)
    cleaned = urlencode([(k, v) for k, v in query if k not in TOKEN_QUERY_PARAMS]).encode("latin1")
    subprotocol = SUBPROTOCOL if SUBPROTOCOL in offered else None
    since_text = next((v for k, v in query if k == "since"), None)
    # A `since` that is no position at all (not a whole number >= 0) is answered like a
    # position the log no longer holds: recovered false, the client re-reads state.
    since = -1 if since_text is not None else None
    # ASCII digits only: str.isdigit() also takes '²', which int() refuses.
    if since_text is not None and since_text.isascii() and since_text.isdigit() and len(since_text) <= 18:
        since = int(since_text)
    epoch = next((v for k, v in query if k == "epoch"), None)
    return SocketCredentials(
        token=token or None, session_id=session_id, subprotocol=subprotocol, since=since, epoch=epoch
    ), cleaned


def requested_session_id(requested: str | None, own: uuid.UUID) -> uuid.UUID:
    """The session a socket asks for (`?session_id=`), else its token's own."""
    if requested is None:
        return own
    session_id = uuid_parse(requested)
    if session_id is None:
        raise NotFound("Session not found.")
    return session_id


Subscribe = Callable[[uuid.UUID, uuid.UUID], Awaitable[None]]


async def handshake_authorize(credentials: SocketCredentials, *, subscribe: Subscribe) -> SocketGrant:
    """The grant for a socket's credentials, with its place under the per-user cap taken
    (given back by `socket_cap_release`); `subscribe(session_id, token_session_id)` is
    awaited before access is judged. Raises the ServiceError the socket is refused with."""
    if credentials.token is None:
        raise NotAuthenticated()
    claims = token_decode(credentials.token, expected_type=ACCESS)
    session_id = requested_session_id(credentials.session_id, claims.session_id)
    await subscribe(session_id, claims.session_id)
    grant = await _grant_from_snapshot(claims, session_id)
    if grant is None:
        grant = await _grant_from_database(claims, session_id)
    # The last step: a refusal after it would have to give the place back.
    await socket_cap_reserve(grant.user_id, recorded=grant.user_sockets_recorded)
    return grant


async def _grant_from_snapshot(claims: TokenClaims, session_id: uuid.UUID) -> SocketGrant | None:
    """The grant from this process's cached snapshot of the token's session, or None when
    it cannot answer (none cached, or another session requested)."""
    if session_id != claims.session_id:
        return None
    access = await access_cache_get(claims.session_id)
    if access is None or (access.user_id, access.tenant_id) != (claims.user_id, claims.tenant_id):
        return None
    access_check(access)
    return grant_for(access, claims, session_id=session_id, expires_at=access.expires_at, event_seq=access.event_seq)


# Handshakes of one session that arrive together (a restarted process's clients) wait for the
# first one's database check and take the snapshot it leaves: one query, not one each. The
# checks of different sessions that arrive together are read together (`core.batches`).
_checks = Flights()
_batches = Batches(lambda requests: sockets_authorize(requests), name="socket-check", readers=2, size=200)


async def _grant_from_database(claims: TokenClaims, session_id: uuid.UUID) -> SocketGrant:
    if session_id == claims.session_id and await _checks.wait(session_id):
        grant = await _grant_from_snapshot(claims, session_id)  # a refusal is judged again below
        if grant is not None:
            return grant
    async with _checks.running(claims.session_id):
        return await _batches.answer((claims, session_id))


async def handshake_refused(close_code: int, *, checked: bool) -> None:
    """Count a handshake that failed with `close_code`, before the access check passed
    or (`checked`) after it; refusals also reach the audit trail, aggregated."""
    if checked:
        HANDSHAKES.labels(outcome="refused_after_check").inc()
        return
    HANDSHAKES.labels(outcome=str(close_code)).inc()
    if close_code == CloseCode.RATE_LIMITED:
        SOCKET_REFUSALS.labels(reason="cap").inc()
    socket_refusal_count(close_code=close_code)
    with contextlib.suppress(*DEPENDENCY_ERRORS):
        await heartbeat.ensure_running()  # whose beat writes the refusal counts


# --- The per-user socket cap -------------------------------------------------------------
# How it holds across processes: docs/architecture.md#the-per-user-socket-cap.
async def socket_cap_reserve(user_id: uuid.UUID, *, recorded: int) -> None:
    """Take a place under WS_MAX_SOCKETS_PER_USER for a socket of the user, or raise
    RateLimited. Counted on this process first (no await between that check and its count),
    then against every process's count in Redis. Without Redis, or while it does not
    answer, the cap holds on this process and against the `recorded` connection records
    (every process's, as of the check: they trail the sockets by a flush interval)."""
    cap = runtime_settings.WS_MAX_SOCKETS_PER_USER
    if local_sockets(user_id) >= cap:
        raise RateLimited("Too many open sockets for this user.")
    local_socket_add(user_id)
    try:
        counts = socket_counts()
        admitted = None if counts is None else await counts.admit(user_id, cap=cap)
    except BaseException:
        local_socket_remove(user_id)
        raise
    if admitted is None:
        admitted = recorded < cap
    if not admitted:
        local_socket_remove(user_id)
        raise RateLimited("Too many open sockets for this user.")


def socket_cap_release(user_id: uuid.UUID) -> None:
    """Give back the place of a socket that `socket_cap_reserve` admitted (on its close)."""
    local_socket_remove(user_id)
