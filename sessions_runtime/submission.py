"""Submitting an intent: validation, idempotency, and the intent and execution rows written
in one transaction; the execution starts once it commits (`runner.execution_dispatch`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import Permission
from core.audit import audit_record
from core.caller import Caller
from core.conf import runtime_settings
from core.exceptions import (
    IdempotencyInFlight,
    IdempotencyKeyReused,
    InvalidRequest,
    NotFound,
    RateLimited,
    SessionNotWritable,
)
from core.ids import uuid_parse
from core.limits import rate_limit_take
from core.models import AuditEvent
from sessions_runtime.executions import execution_announce
from sessions_runtime.models import Execution, ExecutionStatus, IdempotencyRecord, Intent, RuntimeSession
from sessions_runtime.runner import execution_dispatch, intent_handler
from sessions_runtime.selectors import INTENT_SUBMIT, access_owned, access_require_permission
from sessions_runtime.serializers import SubmissionSerializer

logger = logging.getLogger(__name__)
MAX_IDEMPOTENCY_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class Submission:
    response: dict[str, Any]
    replayed: bool


def _request_hash(session_id: uuid.UUID, intent_type: str, parameters: Any) -> str:
    canonical = json.dumps([str(session_id), intent_type, parameters], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(caller: Caller, key: str, request_hash: str) -> Submission | None:
    record = IdempotencyRecord.objects.filter(
        tenant_id=caller.tenant_id, user_id=caller.user_id, key=key, expires_at__gt=timezone.now()
    ).first()
    if record is None:
        return None
    if record.request_hash != request_hash:
        raise IdempotencyKeyReused()
    return Submission(response=record.response, replayed=True)


def intent_submit_parse(message: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of `intent_submit` from an `intent.submit` frame (the REST
    body goes through `IntentSubmitApi`'s serializer); InvalidRequest otherwise."""
    intent_type, parameters = message.get("intent_type"), message.get("parameters", {})
    key = message.get("idempotency_key")
    if not isinstance(intent_type, str) or not isinstance(parameters, dict) or not isinstance(key, (str, type(None))):
        raise InvalidRequest("intent.submit takes 'intent_type' (string), 'parameters' (object), 'idempotency_key'?")
    return {"intent_type": intent_type, "parameters": parameters, "idempotency_key": key}


def intent_submit(
    *,
    caller: Caller,
    session_id: object,
    intent_type: str,
    parameters: dict[str, Any],
    idempotency_key: str | None = None,
) -> Submission:
    """Record an intent and its execution, and start it after commit.

    With an idempotency key (scoped to tenant and user): the same key and body answer the
    first response; the same key with another body is 422; while the first request with
    that key is still being processed, 409.
    """
    access_require_permission(caller=caller, permission=Permission.WRITE, what=INTENT_SUBMIT)
    handler = intent_handler(intent_type)
    validate = getattr(handler, "validate_parameters", None)
    if validate is not None:
        validate(parameters)
    parsed = uuid_parse(session_id)
    session = RuntimeSession.objects.filter(access_owned(caller), pk=parsed).first() if parsed else None
    if session is None:
        raise NotFound("Session not found.")
    if not session.is_usable():
        raise SessionNotWritable()
    if idempotency_key is not None and not (0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_LENGTH):
        raise InvalidRequest(f"An idempotency key has 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters.")

    request_hash = _request_hash(session.pk, intent_type, parameters)
    if idempotency_key is None:
        return _intent_create(caller, session, intent_type, parameters, None, request_hash)

    # A short lock in the shared cache tells "still in flight" (409) from "done" (replay);
    # the unique key on the record stays the final guard against a second execution.
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
    lock = f"idempotency:{caller.tenant_id}:{caller.user_id}:{digest}"
    try:
        locked = cache.add(lock, 1, timeout=runtime_settings.IDEMPOTENCY_LOCK_TTL.total_seconds())
    except Exception:  # noqa: BLE001 - the cache (Redis) is down: the unique key still guards
        logger.warning("idempotency lock unavailable; relying on the unique key", exc_info=True)
        locked, lock = True, None
    if not locked:
        raise IdempotencyInFlight()
    try:
        replay = _replay(caller, idempotency_key, request_hash)
        if replay is not None:
            return replay
        try:
            return _intent_create(caller, session, intent_type, parameters, idempotency_key, request_hash)
        except IntegrityError:
            replay = _replay(caller, idempotency_key, request_hash)
            if replay is None:
                raise
            return replay
    finally:
        if lock is not None:
            with contextlib.suppress(Exception):
                cache.delete(lock)


# How long a caller at the running-executions bound is told to wait before retrying.
RUNNING_BOUND_RETRY_AFTER_S = 5.0


def _submission_bounds(caller: Caller) -> None:
    """INTENT_SUBMIT_RATE and MAX_RUNNING_EXECUTIONS_PER_USER, for new executions only
    (an idempotent replay creates nothing and is not counted)."""
    rate_limit_take(scope="intent_submit", ident=caller.user_id, rate=runtime_settings.INTENT_SUBMIT_RATE)
    bound = runtime_settings.MAX_RUNNING_EXECUTIONS_PER_USER
    unfinished = Execution.objects.filter(
        user_id=caller.user_id, status__in=(ExecutionStatus.CREATED, ExecutionStatus.RUNNING)
    ).count()
    if unfinished >= bound:
        raise RateLimited(
            f"At most {bound} executions may run at once; wait for one to finish.",
            retry_after=RUNNING_BOUND_RETRY_AFTER_S, details={"limit": bound},
        )


@transaction.atomic
def _intent_create(
    caller: Caller,
    session: RuntimeSession,
    intent_type: str,
    parameters: dict[str, Any],
    idempotency_key: str | None,
    request_hash: str,
) -> Submission:
    _submission_bounds(caller)
    now = timezone.now()
    if idempotency_key is not None:
        IdempotencyRecord.objects.filter(
            tenant_id=caller.tenant_id, user_id=caller.user_id, key=idempotency_key, expires_at__lte=now
        ).delete()
    intent = Intent.objects.create(
        session=session, user_id=caller.user_id, tenant_id=caller.tenant_id,
        intent_type=intent_type, parameters=parameters, created_at=now,
    )
    execution = Execution.objects.create(
        intent=intent, session=session, user_id=caller.user_id, tenant_id=caller.tenant_id,
        intent_type=intent_type, created_at=now, updated_at=now,
    )
    response = dict(SubmissionSerializer(execution).data)
    if idempotency_key is not None:
        IdempotencyRecord.objects.create(
            tenant_id=caller.tenant_id, user_id=caller.user_id, key=idempotency_key,
            request_hash=request_hash, execution=execution, response=response,
            created_at=now, expires_at=now + runtime_settings.IDEMPOTENCY_TTL,
        )
    audit_record(
        kind=AuditEvent.Kind.INTENT_RECEIVED,
        caller=caller,
        user_id=caller.user_id, tenant_id=caller.tenant_id, session_id=session.pk,
        data={"intent_id": str(intent.pk), "intent_type": intent_type, "execution_id": str(execution.pk)},
    )
    execution_announce(execution, "execution.created")
    transaction.on_commit(lambda: execution_dispatch(execution.pk))
    return Submission(response=response, replayed=False)


def idempotency_records_prune(*, now: datetime | None = None) -> int:
    deleted, _ = IdempotencyRecord.objects.filter(expires_at__lte=now or timezone.now()).delete()
    return deleted
