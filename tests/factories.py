"""Test data, made in one place."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from rest_framework.test import APIClient

from accounts.models import Membership, Role, Tenant, TenantStatus, User
from core.events import Event

PASSWORD = "correct-horse-battery-staple"
_seq = itertools.count(1)


def make_tenant(*, name: str | None = None, status: str = TenantStatus.ACTIVE) -> Tenant:
    n = next(_seq)
    return Tenant.objects.create(name=name or f"Tenant {n}", slug=f"tenant-{n}", status=status)


def make_user(
    *,
    email: str | None = None,
    password: str = PASSWORD,
    tenant: Tenant | None = None,
    role: str = Role.MEMBER,
    is_active: bool = True,
    **extra: Any,
) -> User:
    user = User.objects.create_user(
        email=email or f"user{next(_seq)}@example.com", password=password, is_active=is_active, **extra
    )
    tenant = tenant if tenant is not None else make_tenant()
    Membership.objects.create(user=user, tenant=tenant, role=role, is_primary=True)
    return user


def login(client: APIClient, user: User, *, password: str = PASSWORD, **extra: Any) -> dict[str, Any]:
    """Log in through the API and return the response body (asserts success)."""
    response = client.post("/api/auth/login", {"email": user.email, "password": password, **extra}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def bearer(client: APIClient, access_token: str) -> APIClient:
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token}")
    return client


def as_user(**kwargs: Any) -> tuple[APIClient, dict[str, Any], User]:
    """A new user (made with `kwargs`), logged in: an API client carrying the access token,
    the login's body, and the user."""
    user = make_user(**kwargs)
    body = login(APIClient(), user)
    return bearer(APIClient(), body["access_token"]), body, user


def make_session(user: User, *, tenant: Tenant | None = None, **metadata: Any):
    """A runtime session of `user` made through the one creation path (a session intent)."""
    from core.caller import Caller
    from sessions_runtime.services import session_create
    from sessions_runtime.session_intents import SessionIntentAction, session_intent_build

    membership = Membership.objects.get(user=user, **({"tenant": tenant} if tenant else {"is_primary": True}))
    intent = session_intent_build(
        user_id=user.pk, tenant_id=membership.tenant_id, role=membership.role, action=SessionIntentAction.COMMAND,
        metadata=metadata,
    )
    return session_create(intent=intent, caller=Caller.system())


def caller_for(session, *, role: str = "member"):
    """The caller a token of `session`'s owner stands for, with `role`."""
    from accounts.models import role_permissions
    from core.caller import Caller

    return Caller(user_id=session.user_id, tenant_id=session.tenant_id, session_id=session.pk, role=role,
                  permissions=role_permissions(role))


def event_numbered(session_id: Any, number: int, text: str = "") -> Event:
    """A recorded event numbered `number` (`event_number(frame)` reads it back), carrying
    `text` to be as large as wanted, of a shape a socket may send (the tests check every
    frame against /asyncapi.json): the `agent.cancelled` of an answer no longer in flight."""
    return Event(session_id=uuid.UUID(str(session_id)), kind="agent.cancelled",
                 data={"conversation_id": str(number), "message_id": str(uuid.UUID(int=number)), "text": text})


def event_number(frame: dict[str, Any]) -> int:
    """The number of an `event_numbered` event's frame."""
    return int(frame["data"]["conversation_id"])
