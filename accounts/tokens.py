"""Tokens: issuing them for a session, rotating refresh tokens, and the one token check.

`token_decode` verifies a JWT without the database; `claims_resolve` is the database half
(REST and the socket handshake alike, the socket after answering from a session-access
snapshot when it can); `caller_for` turns the result into the `Caller`. The rules below exist once:
signature (one pinned algorithm), expiry, issuer, token type, user active, membership
current, tenant active, and the token's own session active. Tenant and role come from
the database, never from the token.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from datetime import timezone as dt_timezone
from types import MappingProxyType
from typing import Any, Mapping, Protocol

from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework_simplejwt import settings as simplejwt_settings
from rest_framework_simplejwt import state as simplejwt_state
from rest_framework_simplejwt.exceptions import ExpiredTokenError, TokenError
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken, UntypedToken
from rest_framework_simplejwt.utils import datetime_to_epoch

from accounts.models import role_permissions
from core.audit import audit_record
from core.caller import Caller
from core.conf import runtime_settings
from core.exceptions import DEPENDENCY_ERRORS, InvalidToken, TokenExpired
from core.models import ActorType, AuditEvent
from sessions_runtime.access import SessionAccess, access_cache_generation, access_cache_put, access_check
from sessions_runtime.models import EndReason, RuntimeSession
from sessions_runtime.selectors import sessions_get_for_tokens
from sessions_runtime.services import session_end

logger = logging.getLogger(__name__)

ACCESS = "access"
REFRESH = "refresh"
TENANT_CLAIM = "tid"
SESSION_CLAIM = "sid"
# Real tokens are ~400 bytes; anything far larger is refused before it is parsed.
MAX_TOKEN_LENGTH = 4096
# A derived jti is as long as simplejwt's own (uuid4().hex).
JTI_HEX_LENGTH = 32


def jwt_settings() -> Any:
    """simplejwt's settings, looked up on each use: simplejwt rebinds its module-level
    `api_settings` when SIMPLE_JWT changes, so an imported reference would go stale."""
    return simplejwt_settings.api_settings


@dataclass(frozen=True, slots=True)
class TokenClaims:
    token_type: str
    user_id: uuid.UUID
    tenant_id: uuid.UUID
    session_id: uuid.UUID
    jti: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    access_expires_at: datetime
    refresh_expires_at: datetime

    @property
    def expires_in(self) -> int:
        return max(0, int((self.access_expires_at - timezone.now()).total_seconds()))


def _uuid_claim(payload: Mapping[str, Any], claim: str) -> uuid.UUID:
    value = payload.get(claim)
    if not isinstance(value, str):
        raise InvalidToken(f"The token has no valid '{claim}' claim.")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidToken(f"The token has no valid '{claim}' claim.") from None


# Verified tokens, by the token string: in a reconnect storm one access token comes again
# from each of a user's tabs and on each reconnect, and verifying it (PyJWT prepares the
# key, with its PEM checks, on each decode) took 4.6 % of the event loop. Only what cannot
# change is kept: the signature, issuer and algorithm, checked against this process's one
# token backend (part of the key). What depends on the clock (exp, nbf, iat, with the
# leeway) is checked again on every use below; what depends on state (session, user,
# membership, tenant) was never decided here (`claims_resolve`). A different string, a
# forged signature among them, is a different key and goes through the whole check; a
# refused token is not kept (lru_cache keeps no exception). Bounded: 4,096 tokens of under
# 4 KiB (~400 bytes as issued), held only by this process, which was handed them anyway.
VERIFIED_TOKENS_KEPT = 4096


@functools.lru_cache(maxsize=VERIFIED_TOKENS_KEPT)
def _token_verified(raw: str, backend: object) -> Mapping[str, Any]:
    try:
        return MappingProxyType(UntypedToken(raw).payload)
    except ExpiredTokenError:
        raise TokenExpired() from None
    except TokenError:
        raise InvalidToken() from None


def _token_times_check(payload: Mapping[str, Any], leeway: float) -> None:
    """The clock's part of the check, as PyJWT and simplejwt make it, for each use."""
    now = time.time()
    if int(payload["exp"]) <= now - leeway:
        raise TokenExpired()
    if any(claim in payload and int(payload[claim]) > now + leeway for claim in ("nbf", "iat")):
        raise InvalidToken()


def token_decode(raw: object, *, expected_type: str) -> TokenClaims:
    """Verify a JWT's signature, expiry, issuer and type; return its claims. No database."""
    if not isinstance(raw, str) or not raw or len(raw) > MAX_TOKEN_LENGTH:
        raise InvalidToken()
    backend = simplejwt_state.token_backend  # the one `UntypedToken` verifies with
    payload = _token_verified(raw, backend)
    _token_times_check(payload, backend.get_leeway().total_seconds())
    if payload.get(jwt_settings().TOKEN_TYPE_CLAIM) != expected_type:
        raise InvalidToken(f"An {expected_type} token is required.")
    jti = payload.get(jwt_settings().JTI_CLAIM)
    if not isinstance(jti, str) or not jti:
        raise InvalidToken()
    return TokenClaims(
        token_type=expected_type,
        user_id=_uuid_claim(payload, jwt_settings().USER_ID_CLAIM),
        tenant_id=_uuid_claim(payload, TENANT_CLAIM),
        session_id=_uuid_claim(payload, SESSION_CLAIM),
        jti=jti,
        expires_at=datetime.fromtimestamp(payload["exp"], tz=dt_timezone.utc),
    )


class Principal(Protocol):
    """What a checked token stands for: a session access snapshot, or a socket's grant."""

    user_id: uuid.UUID
    tenant_id: uuid.UUID
    session_id: uuid.UUID
    role: str | None


def caller_for(principal: Principal, *, session_id: uuid.UUID | None = None, client_address: str | None = None) -> Caller:
    """The one `Caller` factory for a checked token (REST requests and sockets): its user
    and tenant, the role the database gives them there, in the token's own session (or
    `session_id`, another of theirs)."""
    role = principal.role or ""
    return Caller(
        kind=ActorType.USER,
        user_id=principal.user_id,
        tenant_id=principal.tenant_id,
        session_id=session_id or principal.session_id,
        role=role,
        permissions=role_permissions(role),
        client_address=client_address or None,
    )


def access_token_authenticate(raw: object, *, client_address: str | None = None) -> tuple[RuntimeSession, Caller]:
    """The one token check for REST: a bearer access token to its session (with its user)
    and the caller it stands for (one query)."""
    session, access = claims_resolve(token_decode(raw, expected_type=ACCESS))
    return session, caller_for(access, client_address=client_address)


def claims_resolve(claims: TokenClaims, *, for_socket: bool = False) -> tuple[RuntimeSession, SessionAccess]:
    """The database half of the token check, for claims already verified by `token_decode`:
    the token's own session and the access it grants, judged by `access_check`. REST calls
    it for every request; sockets at the handshake (`for_socket`: with the user's socket
    count and the log position, and the snapshot left in the access cache) and again on
    their timer, to notice a session that ended meanwhile."""
    [resolved] = claims_resolve_many([claims], for_socket=for_socket)
    if isinstance(resolved, Exception):
        raise resolved
    return resolved


def claims_resolve_many(
    many: list[TokenClaims], *, for_socket: bool = False
) -> list[tuple[RuntimeSession, SessionAccess] | Exception]:
    """`claims_resolve` for many claims in one query: each one's answer, or the error it
    alone is refused with."""
    generation = access_cache_generation()
    keys = [(claims.session_id, claims.user_id, claims.tenant_id) for claims in many]
    found = sessions_get_for_tokens(keys, for_socket=for_socket)
    answers: list[tuple[RuntimeSession, SessionAccess] | Exception] = []
    for key in keys:
        session = found.get(key)
        access = SessionAccess.from_session(session) if session is not None else None
        try:
            access_check(access)
        except Exception as error:  # noqa: BLE001 - this token's refusal, not the others'
            answers.append(error)
            continue
        if for_socket:
            # Only a socket's read carries the socket count the cached handshake checks.
            access_cache_put(access, read_at_generation=generation)
        answers.append((session, access))
    return answers


def _derived_jti(seed: str, purpose: str) -> str:
    """A jti only the signing key can compute from `seed` (see `token_refresh`)."""
    key = jwt_settings().SIGNING_KEY
    key_bytes = key.encode() if isinstance(key, str) else bytes(key)
    return hmac.new(key_bytes, f"{seed}:{purpose}".encode(), hashlib.sha256).hexdigest()[:JTI_HEX_LENGTH]


def tokens_issue(*, session: RuntimeSession, seed: str | None = None, issued_at: datetime | None = None,
                 record: bool = True) -> TokenPair:
    """A new access and refresh token bound to `session`; neither outlives the session.

    With `seed` and `issued_at`, every claim is derived from them, so the same call gives
    the same tokens again (HS256 is deterministic): how a refresh within the grace window
    answers with the successor it already issued without storing it."""
    now = issued_at or timezone.now()
    refresh = RefreshToken()
    refresh[jwt_settings().USER_ID_CLAIM] = str(session.user_id)
    refresh[TENANT_CLAIM] = str(session.tenant_id)
    refresh[SESSION_CLAIM] = str(session.pk)
    refresh_expires_at = min(now + jwt_settings().REFRESH_TOKEN_LIFETIME, session.expires_at)
    refresh["exp"] = datetime_to_epoch(refresh_expires_at)
    if seed is not None:
        refresh["iat"] = datetime_to_epoch(now)
        refresh[jwt_settings().JTI_CLAIM] = _derived_jti(seed, "refresh")

    access = refresh.access_token
    access_expires_at = min(now + jwt_settings().ACCESS_TOKEN_LIFETIME, session.expires_at)
    access["exp"] = datetime_to_epoch(access_expires_at)
    if seed is not None:
        access[jwt_settings().JTI_CLAIM] = _derived_jti(seed, "access")

    # The blacklist app's ledger of issued refresh tokens, which rotation consumes. The
    # encoded token itself is not kept: no usable credential rests in the database.
    if record:
        OutstandingToken.objects.create(
            user_id=session.user_id,
            jti=refresh[jwt_settings().JTI_CLAIM],
            token="",
            created_at=now,
            expires_at=refresh_expires_at,
        )
    return TokenPair(
        access_token=str(access),
        refresh_token=str(refresh),
        access_expires_at=datetime.fromtimestamp(access["exp"], tz=dt_timezone.utc),
        refresh_expires_at=datetime.fromtimestamp(refresh["exp"], tz=dt_timezone.utc),
    )


def _refresh_token_consume(claims: TokenClaims) -> bool:
    """Mark a refresh token used. True on its first use, False when it was used before.

    The blacklist row's unique key decides between concurrent presentations of one
    token: exactly one insert wins. simplejwt's own refresh serializer cannot tell a
    reuse from any other invalid token, which the theft signal needs, hence this.
    """
    # Locked, so a retry of the token before this one, which locks this row to see whether
    # it is still unused (`_grace_successor`), waits for this use to commit or roll back.
    outstanding = OutstandingToken.objects.select_for_update().filter(jti=claims.jti).order_by().first()
    if outstanding is None:
        raise InvalidToken()
    try:
        with transaction.atomic():
            BlacklistedToken.objects.create(token=outstanding)
    except IntegrityError:
        return False
    return True


# --- Refresh with a grace window ---------------------------------------------------------
# Two tabs, or a retry whose response was lost, present the token that was just rotated.
# Within REFRESH_REUSE_GRACE, from the same client (its address and User-Agent), and while
# the successor refresh token is unused (not yet presented for refresh), that is answered
# with the same successor pair; anything else is still a theft verdict. Nothing usable is
# stored for it: the cache keeps the rotation's time and a hash of the client, and the
# successor is signed again from the old token's jti (`tokens_issue(seed=)`), byte for byte
# the same. Why these limits, against other providers' reuse intervals: docs/security.md.
def _grace_key(jti: str) -> str:
    return f"refresh-grace:{hashlib.sha256(jti.encode()).hexdigest()}"


def _client_digest(client_address: str | None, user_agent: str | None) -> str:
    """Who presented a token, as far as a retry is compared: the address and the User-Agent
    (a browser's tabs share both; another device behind the same NAT rarely has the same)."""
    return hashlib.sha256(f"{client_address or '-'}\n{user_agent or ''}".encode()).hexdigest()


def _grace_remember(claims: TokenClaims, *, rotated_at: int, client: str) -> None:
    grace = runtime_settings.REFRESH_REUSE_GRACE.total_seconds()
    if grace <= 0:
        return
    try:
        cache.set(_grace_key(claims.jti), {"at": rotated_at, "client": client}, timeout=grace)
    except DEPENDENCY_ERRORS:  # without the record a repeat is a reuse: fails closed
        logger.warning("cache unavailable; no refresh grace for this rotation", exc_info=True)


@transaction.atomic
def _grace_successor(claims: TokenClaims, *, client: str) -> TokenPair | None:
    """The pair issued when this token was rotated, if it was rotated moments ago by the
    same client and that successor is still unused; else None (a reuse)."""
    try:
        record = cache.get(_grace_key(claims.jti))
    except DEPENDENCY_ERRORS:
        return None
    if not record or not hmac.compare_digest(str(record.get("client", "")), client):
        return None
    if time.time() - record["at"] > runtime_settings.REFRESH_REUSE_GRACE.total_seconds():
        return None
    # The successor's ledger row, locked: a rotation of the successor still in flight
    # (`_refresh_token_consume` locks the row it uses) finishes first, so it is seen as used.
    successor = (
        OutstandingToken.objects.select_for_update().filter(jti=_derived_jti(claims.jti, "refresh")).order_by().first()
    )
    if successor is None or BlacklistedToken.objects.filter(token=successor).exists():
        return None
    session, _ = claims_resolve(claims)
    issued_at = datetime.fromtimestamp(record["at"], tz=dt_timezone.utc)
    return tokens_issue(session=session, seed=claims.jti, issued_at=issued_at, record=False)


def token_refresh(*, raw: object, client_address: str | None = None, user_agent: str | None = None) -> TokenPair:
    """Rotate a refresh token. Presenting a used one again ends its session, except within
    the grace window (see above)."""
    claims = token_decode(raw, expected_type=REFRESH)
    client = _client_digest(client_address, user_agent)
    with transaction.atomic():
        if _refresh_token_consume(claims):
            session, _ = claims_resolve(claims)
            rotated_at = int(time.time())
            # Remembered before the commit: a concurrent presentation of this token waits
            # on the blacklist row's unique key until then, and must find the record.
            _grace_remember(claims, rotated_at=rotated_at, client=client)
            return tokens_issue(
                session=session, seed=claims.jti, issued_at=datetime.fromtimestamp(rotated_at, tz=dt_timezone.utc)
            )
    successor = _grace_successor(claims, client=client)
    if successor is not None:
        return successor

    system = Caller(kind=ActorType.SYSTEM, client_address=client_address)
    with transaction.atomic():
        session_end(session_id=claims.session_id, reason=EndReason.TOKEN_REUSE, caller=system)
        owner = RuntimeSession.objects.filter(pk=claims.session_id).values("user_id", "tenant_id").first() or {}
        audit_record(
            kind=AuditEvent.Kind.REFRESH_TOKEN_REUSED,
            caller=system,
            user_id=owner.get("user_id"),
            tenant_id=owner.get("tenant_id"),
            session_id=claims.session_id,
            data={"jti": claims.jti},
        )
    raise InvalidToken("This refresh token was already used; its session has been ended.")


def token_ledger_prune(*, now: datetime | None = None) -> int:
    """Delete simplejwt's ledger rows of refresh tokens past their expiry, with their blacklist
    rows (a cascade): what its `flushexpiredtokens` command does, run by every sweep so the
    table stops growing. An expired token is refused on its expiry alone, so its row is
    no longer needed. Returns how many outstanding tokens were removed."""
    _, per_model = OutstandingToken.objects.filter(expires_at__lte=now or timezone.now()).delete()
    return per_model.get(OutstandingToken._meta.label, 0)
