"""Reads of runtime sessions, each with its access rule.

The rule, written once (`access_visible`, with `access_owned` for what only the owner may
touch): a session is visible to its own user, and to the admins and owners of its tenant
while they act in that tenant. Anything else is a
`NotFound` identical to a session that does not exist.
"""

from __future__ import annotations

import uuid

from django.db.models import Count, OuterRef, Q, QuerySet, Subquery

from accounts.models import Membership, Permission
from core.caller import Caller
from core.exceptions import NotFound, PermissionDenied
from core.ids import uuid_parse
from sessions_runtime.models import RuntimeSession


def session_get_for_token(
    *, session_id: uuid.UUID, user_id: uuid.UUID, tenant_id: uuid.UUID, for_socket: bool = False
) -> RuntimeSession | None:
    """The token's own session with its user, tenant and the user's current role there.

    One query: the role comes from the membership table through a subquery, so the token
    check never trusts a role or tenant carried by the token. Sockets also need the
    user's open-socket count and the session's event-log position, which ride in the
    same query.
    """
    key = (session_id, user_id, tenant_id)
    return sessions_get_for_tokens([key], for_socket=for_socket).get(key)


def sessions_get_for_tokens(
    keys: list[tuple[uuid.UUID, uuid.UUID, uuid.UUID]], *, for_socket: bool = False
) -> dict[tuple[uuid.UUID, uuid.UUID, uuid.UUID], RuntimeSession]:
    """`session_get_for_token` for many tokens' (session, user, tenant) in one query (a burst
    of handshakes, `realtime.handshake.sockets_authorize`): each key's session, when its
    user and tenant are the token's."""
    role = Membership.objects.filter(user_id=OuterRef("user_id"), tenant_id=OuterRef("tenant_id")).values("role")[:1]
    sessions = RuntimeSession.objects.select_related("user", "tenant").annotate(member_role=Subquery(role))
    if for_socket:
        from core.models import SessionEventSequence
        from realtime.models import Connection

        open_sockets = (
            Connection.objects.filter(user_id=OuterRef("user_id"))
            .order_by()
            .values("user_id")
            .annotate(n=Count("id"))
            .values("n")[:1]
        )
        position = SessionEventSequence.objects.filter(session_id=OuterRef("pk")).values("last_seq")[:1]
        sessions = sessions.annotate(user_socket_count=Subquery(open_sockets), event_seq=Subquery(position))
    if len(keys) == 1:
        [(session_id, user_id, tenant_id)] = keys
        sessions = sessions.filter(pk=session_id, user_id=user_id, tenant_id=tenant_id)
    else:
        sessions = sessions.filter(pk__in={session_id for session_id, _, _ in keys})
    found = {(session.pk, session.user_id, session.tenant_id): session for session in sessions}
    return {key: found[key] for key in keys if key in found}


# --- The access rules, written once: for sessions and for everything a session owns ---
def access_owned(caller: Caller) -> Q:
    """Rows (sessions, executions) of the caller's own user in the tenant they act in."""
    return Q(user_id=caller.user_id, tenant_id=caller.tenant_id)


def access_visible(caller: Caller) -> Q:
    """What the caller may read: their own rows, and every row of their tenant for its
    admins and owners. Always within the tenant the caller acts in: a member of several
    tenants does not reach their rows in another one (another tenant's is a 404)."""
    if caller.can(Permission.ADMIN):
        return Q(tenant_id=caller.tenant_id)
    return access_owned(caller)


# What `access_require_write` calls the writes it guards, in its refusals.
STATE_WRITE = "Writing session state"
FILE_ADD = "Adding files"
INTENT_SUBMIT = "Submitting intents"
EXECUTION_CANCEL = "Cancelling an execution"
AGENT_MESSAGE = "Sending agent messages"


def access_require_permission(*, caller: Caller, permission: str, what: str) -> None:
    if not caller.can(permission):
        raise PermissionDenied(f"{what} needs the {permission} permission.")


def access_require_write(*, caller: Caller, owner_id: object, what: str) -> None:
    """Writing into a session (its state, its files, its intents, cancelling its
    executions) takes the write permission and is for the session's own user: tenant
    admins may read others' sessions and executions and end their sessions, not write
    into them (ending a session stops its executions anyway)."""
    access_require_permission(caller=caller, permission=Permission.WRITE, what=what)
    if owner_id != caller.user_id:
        raise PermissionDenied(f"{what} is for the session's own user.")


def _with_connection_count(sessions: QuerySet[RuntimeSession]) -> QuerySet[RuntimeSession]:
    return sessions.annotate(connection_count=Count("connections", distinct=True))


def session_get_for_caller(*, caller: Caller, session_id: object) -> RuntimeSession:
    parsed = uuid_parse(session_id)
    if parsed is None:
        raise NotFound("Session not found.")
    session = _with_connection_count(RuntimeSession.objects.filter(access_visible(caller), pk=parsed)).first()
    if session is None:
        raise NotFound("Session not found.")
    return session


def session_list_for_caller(
    *, caller: Caller, status: str | None = None, tenant_scope: bool = False
) -> QuerySet[RuntimeSession]:
    """The caller's sessions (or, with `tenant_scope`, their tenant's), newest first."""
    if tenant_scope and not caller.can(Permission.ADMIN):
        raise PermissionDenied("Listing a tenant's sessions needs the admin permission.")
    sessions = RuntimeSession.objects.filter(access_visible(caller) if tenant_scope else access_owned(caller))
    if status:
        sessions = sessions.with_status(status)
    return _with_connection_count(sessions).order_by("-created_at", "-id")


def session_get_owned(*, session_id: uuid.UUID, user_id: uuid.UUID, tenant_id: uuid.UUID) -> RuntimeSession | None:
    """A session only if it belongs to exactly this user in exactly this tenant."""
    return RuntimeSession.objects.filter(pk=session_id, user_id=user_id, tenant_id=tenant_id).first()
