"""The one write path of the runtime-session lifecycle: create from an intent, touch, end,
expire. The login view, the session API, the consumer, the admin and the management
commands all call these; none of them writes a session row itself.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Iterable

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import Membership, Tenant, User
from core.audit import audit_fields, audit_record
from core.caller import Caller
from core.conf import runtime_settings
from core.events import sessions_ended_record
from core.exceptions import CloseCode
from core.limits import rate_limit_take
from core.metrics import SESSION_ENDS
from core.models import AuditEvent
from sessions_runtime.access import access_cache_forget
from sessions_runtime.answers import agent_answers_end
from sessions_runtime.models import (
    EXPIRY_REASONS,
    EndReason,
    RuntimeSession,
    SessionStatus,
    expiry_reason,
)
from sessions_runtime.session_intents import SessionIntent, SessionIntentAction, session_intent_validate

# The longest operator's note an end keeps in the audit trail (the admin's form, `sessions end --reason`).
END_NOTE_MAX_LENGTH = 200


# No savepoint: inside a caller's transaction (login) a failure here fails it whole anyway.
@transaction.atomic(savepoint=False)
def session_create(*, intent: SessionIntent, caller: Caller) -> RuntimeSession:
    """Validate the intent against policy and create the session it asks for.

    The user's row is locked, so concurrent logins of one user are serialized and the
    active-session cap holds; over the cap the oldest active sessions are superseded.
    Two reads in the common case: the membership with its user (locked) and tenant, then
    the user's active sessions.
    """
    if intent.action == SessionIntentAction.API_CREATE:
        # Logins have their own throttles; another tab or device is bounded per user.
        rate_limit_take(scope="session_create", ident=intent.user_id, rate=runtime_settings.SESSION_CREATE_RATE)
    now = timezone.now()
    membership = (
        Membership.objects.select_related("user", "tenant")
        .select_for_update(of=("user",))
        .filter(user_id=intent.user_id, tenant_id=intent.tenant_id)
        .first()
    )
    if membership is not None:
        user, tenant = membership.user, membership.tenant
    else:  # refused below; still read under the same lock for the right refusal
        user = User.objects.select_for_update().get(pk=intent.user_id)
        tenant = Tenant.objects.get(pk=intent.tenant_id)
    session_intent_validate(intent, user=user, tenant=tenant, membership=membership, now=now)

    # The user's active sessions, read once: those past an expiry are expired, then the
    # oldest over the cap are superseded.
    system = Caller.system()
    live: list[uuid.UUID] = []
    due: dict[str, list[uuid.UUID]] = {}
    rows = RuntimeSession.objects.filter(user_id=user.pk, status=SessionStatus.ACTIVE).order_by("created_at", "id")
    for session_id, expires_at, idle_expires_at in rows.values_list("id", "expires_at", "idle_expires_at"):
        reason = expiry_reason(expires_at=expires_at, idle_expires_at=idle_expires_at, now=now)
        (due.setdefault(reason, []) if reason else live).append(session_id)
    for reason, ids in due.items():
        _sessions_end(RuntimeSession.objects.filter(id__in=ids), reason=reason, caller=system, now=now)
    cap = max(1, int(intent.policies.get("max_active_sessions", runtime_settings.MAX_ACTIVE_SESSIONS_PER_USER)))
    if len(live) >= cap:
        oldest = live[: len(live) - cap + 1]
        _sessions_end(
            RuntimeSession.objects.filter(id__in=oldest), reason=EndReason.SUPERSEDED, caller=system, now=now
        )

    session = RuntimeSession.objects.create(
        user=user,
        tenant=tenant,
        created_at=now,
        last_seen_at=now,
        idle_expires_at=now + runtime_settings.SESSION_IDLE_TTL,
        expires_at=now + runtime_settings.SESSION_ABSOLUTE_TTL,
        metadata=intent.metadata,
        intent=intent.contract(),
    )
    audit_record(
        kind=AuditEvent.Kind.SESSION_CREATED,
        caller=caller,
        user_id=user.pk,
        tenant_id=tenant.pk,
        session_id=session.pk,
        data={"action": intent.action},
    )
    return session


def session_touch_due(last_seen_at: datetime, *, now: datetime | None = None) -> bool:
    """Whether activity after `last_seen_at` pushes the idle expiry now: the one pacer, for
    REST requests and socket frames alike (a socket asks before it hops to a thread)."""
    return (now or timezone.now()) - last_seen_at >= runtime_settings.SESSION_TOUCH_INTERVAL


def session_touch(*, session_id: uuid.UUID, last_seen_at: datetime, now: datetime | None = None) -> datetime | None:
    """Push the idle expiry forward on activity, at most once per SESSION_TOUCH_INTERVAL
    after `last_seen_at` (`session_touch_due`).

    Returns the new `last_seen_at` when a touch was due (pace from it), None when not. A
    session already past an expiry is not revived: the conditional update matches nothing.
    """
    now = now or timezone.now()
    if not session_touch_due(last_seen_at, now=now):
        return None
    RuntimeSession.objects.usable(now=now).filter(pk=session_id).update(
        last_seen_at=now, idle_expires_at=now + runtime_settings.SESSION_IDLE_TTL
    )
    return now


def session_end(
    *,
    session_id: uuid.UUID,
    reason: str,
    caller: Caller,
    close_code: CloseCode = CloseCode.SESSION_ENDED,
    note: str = "",
) -> bool:
    """End one session. Idempotent: returns False (and sends nothing) when it had already ended."""
    return (
        sessions_end(
            sessions=RuntimeSession.objects.filter(pk=session_id),
            reason=reason,
            caller=caller,
            close_code=close_code,
            note=note,
        )
        == 1
    )


@transaction.atomic
def sessions_end(
    *,
    sessions: QuerySet[RuntimeSession],
    reason: str,
    caller: Caller,
    close_code: CloseCode = CloseCode.SESSION_ENDED,
    note: str = "",
) -> int:
    """End every still-active session of `sessions`; returns how many this call ended.
    `note` is free text from an operator, kept in the audit rows beside the reason."""
    return _sessions_end(sessions, reason=reason, caller=caller, now=timezone.now(), close_code=close_code, note=note)


@transaction.atomic
def sessions_expire_due(*, now: datetime | None = None) -> int:
    """Mark every active session past an expiry as expired and close its sockets."""
    return _sessions_expire(RuntimeSession.objects.filter(status=SessionStatus.ACTIVE), now=now or timezone.now())


def _sessions_expire(sessions: QuerySet[RuntimeSession], *, now: datetime) -> int:
    return sum(
        _sessions_end(sessions.past_expiry(reason=reason, now=now), reason=reason, caller=Caller.system(), now=now)
        for reason in (EndReason.EXPIRED_ABSOLUTE, EndReason.EXPIRED_IDLE)
    )


def _sessions_end(
    sessions: QuerySet[RuntimeSession],
    *,
    reason: str,
    caller: Caller,
    now: datetime,
    close_code: CloseCode = CloseCode.SESSION_ENDED,
    note: str = "",
) -> int:
    """Lock the still-active rows, end them, audit each and log the end (the sockets'
    close when their process's tail reads it).

    Must run inside a transaction. Rows ended concurrently by another caller are skipped,
    so each session is ended, audited and announced exactly once.
    """
    rows: Iterable[tuple[uuid.UUID, uuid.UUID, uuid.UUID]] = list(
        sessions.filter(status=SessionStatus.ACTIVE)
        .select_for_update()
        .values_list("id", "user_id", "tenant_id")
    )
    if not rows:
        return 0
    status = SessionStatus.EXPIRED if reason in EXPIRY_REASONS else SessionStatus.ENDED
    ids = [row[0] for row in rows]
    RuntimeSession.objects.filter(id__in=ids, status=SessionStatus.ACTIVE).update(
        status=status, ended_at=now, end_reason=reason, ended_by_type=caller.kind, ended_by_id=caller.user_id
    )
    AuditEvent.objects.bulk_create(
        AuditEvent(
            at=now,
            kind=AuditEvent.Kind.SESSION_ENDED,
            **audit_fields(caller),
            user_id=user_id,
            tenant_id=tenant_id,
            session_id=session_id,
            data={"reason": reason, "note": note} if note else {"reason": reason},
        )
        for session_id, user_id, tenant_id in rows
    )
    access_cache_forget(ids)
    agent_answers_end(ids)  # their answers in flight fail, before the end closes the sockets
    sessions_ended_record(ids, reason=reason, close_code=close_code)
    transaction.on_commit(lambda: SESSION_ENDS.labels(reason=reason).inc(len(ids)))
    return len(ids)
