"""Reads of runtime sessions, each with its access rule.

The rule, written once (`_visible_to`): a session is visible to its own user, and to the
admins and owners of its tenant while they act in that tenant. Anything else is a
`NotFound` identical to a session that does not exist.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING

from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from accounts.models import Membership, Permission
from core.exceptions import NotFound, PermissionDenied
from sessions_runtime.models import FileReference, RuntimeSession, SessionStatus

if TYPE_CHECKING:
    from accounts.tokens import AuthContext


def session_id_parse(raw: object) -> uuid.UUID | None:
    """A session id from untrusted input, or None when it is not a UUID."""
    if isinstance(raw, uuid.UUID):
        return raw
    if not isinstance(raw, str) or len(raw) > 64:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None


def session_get_for_token(
    *, session_id: uuid.UUID, user_id: uuid.UUID, tenant_id: uuid.UUID, with_socket_count: bool = False
) -> RuntimeSession | None:
    """The token's own session with its user, tenant and the user's current role there.

    One query: the role comes from the membership table through a subquery, so the token
    check never trusts a role or tenant carried by the token. Sockets also need the
    user's open-socket count, which rides in the same query.
    """
    role = Membership.objects.filter(user_id=OuterRef("user_id"), tenant_id=OuterRef("tenant_id")).values("role")[:1]
    sessions = RuntimeSession.objects.select_related("user", "tenant").annotate(member_role=Subquery(role))
    if with_socket_count:
        from realtime.models import Connection

        open_sockets = (
            Connection.objects.filter(user_id=OuterRef("user_id"))
            .order_by()
            .values("user_id")
            .annotate(n=Count("id"))
            .values("n")[:1]
        )
        sessions = sessions.annotate(user_socket_count=Subquery(open_sockets))
    return sessions.filter(pk=session_id, user_id=user_id, tenant_id=tenant_id).first()


def _visible_to(actor: "AuthContext") -> Q:
    # Always within the tenant the caller acts in: a member of several tenants does not
    # reach their sessions in another one (another tenant's session is a 404).
    rule = Q(user_id=actor.user.pk, tenant_id=actor.tenant.pk)
    if Permission.ADMIN in actor.permissions:
        rule |= Q(tenant_id=actor.tenant.pk)
    return rule


def session_check_write(*, actor: "AuthContext", session: RuntimeSession, what: str) -> None:
    """Writing into a session (its state, its files) takes the write permission and is
    for the session's own user: tenant admins may read and end others' sessions, not
    write into them."""
    if Permission.WRITE not in actor.permissions:
        raise PermissionDenied(f"{what} needs the write permission.")
    if session.user_id != actor.user.pk:
        raise PermissionDenied(f"{what} is for the session's own user.")


def _with_connection_count(sessions: QuerySet[RuntimeSession]) -> QuerySet[RuntimeSession]:
    return sessions.annotate(connection_count=Count("connections", distinct=True))


def session_get_for_actor(*, actor: "AuthContext", session_id: object) -> RuntimeSession:
    parsed = session_id_parse(session_id)
    if parsed is None:
        raise NotFound("Session not found.")
    session = _with_connection_count(RuntimeSession.objects.filter(_visible_to(actor), pk=parsed)).first()
    if session is None:
        raise NotFound("Session not found.")
    return session


def session_status_filter(status: str, *, now: datetime | None = None) -> Q:
    """Filter by the status clients see, expiry applied on read."""
    now = now or timezone.now()
    past_expiry = Q(expires_at__lte=now) | Q(idle_expires_at__lte=now)
    if status == SessionStatus.ACTIVE:
        return Q(status=SessionStatus.ACTIVE) & ~past_expiry
    if status == SessionStatus.EXPIRED:
        return Q(status=SessionStatus.EXPIRED) | (Q(status=SessionStatus.ACTIVE) & past_expiry)
    return Q(status=status)


def session_list_for_actor(
    *, actor: "AuthContext", status: str | None = None, tenant_scope: bool = False
) -> QuerySet[RuntimeSession]:
    """The caller's sessions (or, with `tenant_scope`, their tenant's), newest first."""
    if tenant_scope:
        if Permission.ADMIN not in actor.permissions:
            raise PermissionDenied("Listing a tenant's sessions needs the admin permission.")
        sessions = RuntimeSession.objects.filter(tenant_id=actor.tenant.pk)
    else:
        sessions = RuntimeSession.objects.filter(user_id=actor.user.pk, tenant_id=actor.tenant.pk)
    if status:
        sessions = sessions.filter(session_status_filter(status))
    return _with_connection_count(sessions).order_by("-created_at", "-id")


def session_get_owned(*, session_id: uuid.UUID, user_id: uuid.UUID, tenant_id: uuid.UUID) -> RuntimeSession | None:
    """A session only if it belongs to exactly this user in exactly this tenant."""
    return RuntimeSession.objects.filter(pk=session_id, user_id=user_id, tenant_id=tenant_id).first()


def file_references_for_session(*, session: RuntimeSession) -> QuerySet[FileReference]:
    return FileReference.objects.filter(session_id=session.pk, tenant_id=session.tenant_id)


def file_reference_get(*, session: RuntimeSession, file_id: object) -> FileReference:
    parsed = session_id_parse(file_id)
    reference = file_references_for_session(session=session).filter(pk=parsed).first() if parsed else None
    if reference is None:
        raise NotFound("File not found.")
    return reference
