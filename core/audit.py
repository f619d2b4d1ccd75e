"""Writing the audit trail: who asked (`Actor`) and what happened (`audit_record`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from core.models import ActorType, AuditEvent


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asked for a change, for the audit trail."""

    type: str
    user: Any = None  # the acting user (accounts.User), when there is one
    client_address: str | None = None

    @classmethod
    def system(cls) -> "Actor":
        return cls(type=ActorType.SYSTEM)


def audit_record(
    *,
    kind: str,
    actor: Actor,
    user_id: Any = None,
    tenant_id: Any = None,
    session_id: uuid.UUID | None = None,
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    return AuditEvent.objects.create(
        kind=kind,
        actor_type=actor.type,
        actor=actor.user,
        user_id=user_id,
        tenant_id=tenant_id,
        session_id=session_id,
        client_address=actor.client_address,
        data=data or {},
    )
