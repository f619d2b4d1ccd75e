"""Session intents: every runtime session is created from one, validated against policy.

An intent names who wants a session and the contract it would run under (action, roles,
permissions, policies, a timestamp and a short expiry). It is built by the caller (login,
the session API, the admin, a command) and validated by `session_create` inside the
transaction that creates the session, so the policy is checked against locked rows.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils import timezone

from accounts.models import Membership, Tenant, User, role_permissions
from core.conf import runtime_settings
from core.exceptions import SessionPolicyViolation, TenantAccessDenied


class SessionIntentAction:
    LOGIN = "login"
    REGISTER = "register"
    API_CREATE = "api_create"
    ADMIN = "admin"
    COMMAND = "command"


@dataclass(frozen=True, slots=True)
class SessionIntent:
    user_id: uuid.UUID
    tenant_id: uuid.UUID
    action: str
    roles: tuple[str, ...]
    permissions: tuple[str, ...]
    policies: dict[str, Any]
    issued_at: datetime
    expires_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)

    def contract(self) -> dict[str, Any]:
        """The execution contract as stored on the session (JSON-ready)."""
        return {
            "action": self.action,
            "roles": list(self.roles),
            "permissions": list(self.permissions),
            "policies": dict(self.policies),
            "issued_at": self.issued_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
        }


def session_intent_build(
    *, user_id: uuid.UUID, tenant_id: uuid.UUID, role: str, action: str, metadata: dict[str, Any] | None = None
) -> SessionIntent:
    now = timezone.now()
    return SessionIntent(
        user_id=user_id,
        tenant_id=tenant_id,
        action=action,
        roles=(role,),
        permissions=role_permissions(role),
        policies={"max_active_sessions": runtime_settings.MAX_ACTIVE_SESSIONS_PER_USER},
        issued_at=now,
        expires_at=now + runtime_settings.SESSION_INTENT_TTL,
        metadata=dict(metadata or {}),
    )


def session_intent_validate(
    intent: SessionIntent, *, user: User, tenant: Tenant, membership: Membership | None, now: datetime
) -> None:
    """Raise unless the intent may become a session now."""
    if now >= intent.expires_at:
        raise SessionPolicyViolation("The session intent has expired.", details={"reason": "intent_expired"})
    if not user.is_active:
        raise SessionPolicyViolation("The user is not active.", details={"reason": "user_inactive"})
    if membership is None:
        raise TenantAccessDenied()
    if not tenant.is_active:
        raise TenantAccessDenied("The tenant is suspended.", details={"reason": "tenant_suspended"})
    if membership.role not in intent.roles:
        raise SessionPolicyViolation(
            "The membership's role changed since the intent was made.", details={"reason": "role_changed"}
        )
