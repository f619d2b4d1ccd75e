"""Writing the audit trail: what happened, and which `Caller` asked for it."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from core.caller import Caller
from core.conf import runtime_settings
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


def audit_events_prune(*, older_than: timedelta | None = None, now: datetime | None = None) -> int:
    """Delete audit rows older than the retention (AUDIT_RETENTION by default)."""
    keep = older_than if older_than is not None else runtime_settings.AUDIT_RETENTION
    cutoff = (now or timezone.now()) - keep
    deleted, _ = AuditEvent.objects.filter(at__lt=cutoff).delete()
    return deleted
