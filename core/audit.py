"""Writing the audit trail: what happened, and which `Caller` asked for it."""

from __future__ import annotations

import uuid
from typing import Any

from core.caller import Caller
from core.models import AuditEvent


def audit_record(
    *,
    kind: str,
    caller: Caller,
    user_id: Any = None,
    tenant_id: Any = None,
    session_id: uuid.UUID | None = None,
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    return AuditEvent.objects.create(**audit_fields(caller), kind=kind, user_id=user_id, tenant_id=tenant_id,
                                     session_id=session_id, data=data or {})


def audit_fields(caller: Caller) -> dict[str, Any]:
    """The actor's columns of an audit row (for rows built in bulk)."""
    return {"actor_type": caller.kind, "actor_id": caller.user_id, "client_address": caller.client_address}
