"""Intents and executions: idempotent submission, running a handler off the request path,
progress, cancellation, and the sweep that picks up executions a dead runner left behind.

Every change of an execution is made here and announced to the session's sockets as a
`runtime_event` after its transaction commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import json
import logging
import os
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Awaitable, Callable

from asgiref.sync import SyncToAsync, async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.module_loading import import_string

from accounts.models import Permission
from core.audit import Actor, audit_record
from core.conf import runtime_settings
from core.events import runtime_event_publish
from core.exceptions import (
    ExecutionFinished,
    IdempotencyInFlight,
    IdempotencyKeyReused,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    SessionNotWritable,
)
from core.metrics import EXECUTION_DURATION
from core.models import ActorType, AuditEvent
from core.process import server_instance_id
from core.tasks import background
from sessions_runtime.models import (
    Execution,
    ExecutionStatus,
    IdempotencyRecord,
    Intent,
    RuntimeSession,
    empty_progress,
)
from sessions_runtime.selectors import session_id_parse

logger = logging.getLogger(__name__)
WORKER_CHANNEL = "symphainy.executions"
MAX_IDEMPOTENCY_KEY_LENGTH = 255


class ExecutionCancelled(Exception):
    """Raised inside a handler when its execution was cancelled."""


Handler = Callable[["ExecutionContext"], Awaitable[Any]]


def intent_handler(intent_type: str) -> Handler:
    """The handler registered for `intent_type` in INTENT_HANDLERS, or InvalidRequest."""
    path = runtime_settings.INTENT_HANDLERS.get(intent_type) if isinstance(intent_type, str) else None
    if path is None:
        raise InvalidRequest(
            "Unknown intent type.",
            details={"intent_type": str(intent_type)[:64], "known": sorted(runtime_settings.INTENT_HANDLERS)},
        )
    return import_string(path)


# --- Submission ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Submitter:
    user_id: uuid.UUID
    tenant_id: uuid.UUID
    permissions: tuple[str, ...]
    client_address: str | None = None


@dataclass(frozen=True, slots=True)
class Submission:
    response: dict[str, Any]
    replayed: bool


def _request_hash(session_id: uuid.UUID, intent_type: str, parameters: Any) -> str:
    canonical = json.dumps([str(session_id), intent_type, parameters], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _submission_response(execution: Execution) -> dict[str, Any]:
    return {
        "execution_id": str(execution.pk),
        "intent_id": str(execution.intent_id),
        "status": execution.status,
        "created_at": execution.created_at.isoformat(),
    }


def _replay(submitter: Submitter, key: str, request_hash: str) -> Submission | None:
    record = IdempotencyRecord.objects.filter(
        tenant_id=submitter.tenant_id, user_id=submitter.user_id, key=key, expires_at__gt=timezone.now()
    ).first()
    if record is None:
        return None
    if record.request_hash != request_hash:
        raise IdempotencyKeyReused()
    return Submission(response=record.response, replayed=True)


def intent_submit(
    *,
    submitter: Submitter,
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
    if Permission.WRITE not in submitter.permissions:
        raise PermissionDenied("Submitting intents needs the write permission.")
    handler = intent_handler(intent_type)
    validate = getattr(handler, "validate_parameters", None)
    if validate is not None:
        validate(parameters)
    parsed = session_id_parse(session_id)
    session = (
        RuntimeSession.objects.filter(pk=parsed, user_id=submitter.user_id, tenant_id=submitter.tenant_id).first()
        if parsed
        else None
    )
    if session is None:
        raise NotFound("Session not found.")
    if not session.is_usable():
        raise SessionNotWritable()
    if idempotency_key is not None and not (0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_LENGTH):
        raise InvalidRequest(f"An idempotency key has 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters.")

    request_hash = _request_hash(session.pk, intent_type, parameters)
    if idempotency_key is None:
        return _intent_create(submitter, session, intent_type, parameters, None, request_hash)

    # A short lock in the shared cache tells "still in flight" (409) from "done" (replay);
    # the unique key on the record stays the final guard against a second execution.
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
    lock = f"idempotency:{submitter.tenant_id}:{submitter.user_id}:{digest}"
    try:
        locked = cache.add(lock, 1, timeout=30)
    except Exception:  # noqa: BLE001 - the cache (Redis) is down: the unique key still guards
        logger.warning("idempotency lock unavailable; relying on the unique key", exc_info=True)
        locked, lock = True, None
    if not locked:
        raise IdempotencyInFlight()
    try:
        replay = _replay(submitter, idempotency_key, request_hash)
        if replay is not None:
            return replay
        try:
            return _intent_create(submitter, session, intent_type, parameters, idempotency_key, request_hash)
        except IntegrityError:
            replay = _replay(submitter, idempotency_key, request_hash)
            if replay is None:
                raise
            return replay
    finally:
        if lock is not None:
            with contextlib.suppress(Exception):
                cache.delete(lock)


@transaction.atomic
def _intent_create(
    submitter: Submitter,
    session: RuntimeSession,
    intent_type: str,
    parameters: dict[str, Any],
    idempotency_key: str | None,
    request_hash: str,
) -> Submission:
    now = timezone.now()
    if idempotency_key is not None:
        IdempotencyRecord.objects.filter(
            tenant_id=submitter.tenant_id, user_id=submitter.user_id, key=idempotency_key, expires_at__lte=now
        ).delete()
    intent = Intent.objects.create(
        session=session, user_id=submitter.user_id, tenant_id=submitter.tenant_id,
        intent_type=intent_type, parameters=parameters, created_at=now,
    )
    execution = Execution.objects.create(
        intent=intent, session=session, user_id=submitter.user_id, tenant_id=submitter.tenant_id,
        intent_type=intent_type, created_at=now, updated_at=now,
    )
    response = _submission_response(execution)
    if idempotency_key is not None:
        IdempotencyRecord.objects.create(
            tenant_id=submitter.tenant_id, user_id=submitter.user_id, key=idempotency_key,
            request_hash=request_hash, execution=execution, response=response,
            created_at=now, expires_at=now + runtime_settings.IDEMPOTENCY_TTL,
        )
    audit_record(
        kind=AuditEvent.Kind.INTENT_RECEIVED,
        actor=Actor(type=ActorType.USER, client_address=submitter.client_address),
        user_id=submitter.user_id, tenant_id=submitter.tenant_id, session_id=session.pk,
        data={"intent_id": str(intent.pk), "intent_type": intent_type, "execution_id": str(execution.pk)},
    )
    _announce(execution, "execution.created")
    transaction.on_commit(lambda: execution_dispatch(execution.pk))
    return Submission(response=response, replayed=False)


# --- Reading, cancelling ---------------------------------------------------------------
def execution_payload(execution: Execution) -> dict[str, Any]:
    """The execution as the API and the events show it."""
    return {
        "execution_id": str(execution.pk),
        "intent_id": str(execution.intent_id),
        "intent_type": execution.intent_type,
        "session_id": str(execution.session_id),
        "status": execution.status,
        "progress": execution.progress,
        "result": execution.result,
        "error": execution.error,
        "created_at": execution.created_at.isoformat(),
        "updated_at": execution.updated_at.isoformat(),
    }


def _announce(execution: Execution, event_type: str) -> None:
    runtime_event_publish(execution.session_id, event_type, execution_payload(execution))


def execution_get_for_actor(*, user_id: uuid.UUID, tenant_id: uuid.UUID, permissions: tuple[str, ...], execution_id: object) -> Execution:
    """The caller's execution, or their tenant's for tenant admins; otherwise NotFound."""
    parsed = session_id_parse(execution_id)
    if parsed is None:
        raise NotFound("Execution not found.")
    # Within the caller's tenant only, like sessions (selectors._visible_to).
    rule = Q(user_id=user_id, tenant_id=tenant_id)
    if Permission.ADMIN in permissions:
        rule |= Q(tenant_id=tenant_id)
    execution = Execution.objects.filter(rule, pk=parsed).first()
    if execution is None:
        raise NotFound("Execution not found.")
    return execution


@transaction.atomic
def execution_cancel(*, execution: Execution) -> Execution:
    """Cancel: at once when not started, at the handler's next progress report when running."""
    execution = Execution.objects.select_for_update().get(pk=execution.pk)
    if execution.is_finished:
        raise ExecutionFinished()
    now = timezone.now()
    if execution.status == ExecutionStatus.CREATED:
        return _finish(execution, status=ExecutionStatus.CANCELLED, now=now)
    Execution.objects.filter(pk=execution.pk).update(cancel_requested=True, updated_at=now)
    execution.cancel_requested, execution.updated_at = True, now
    return execution


# --- Running ---------------------------------------------------------------------------
class ExecutionContext:
    """What a handler sees: its parameters, and a way to report progress (which is also
    where cancellation is noticed)."""

    def __init__(self, execution: Execution) -> None:
        self.execution_id = execution.pk
        self.session_id = execution.session_id
        self.intent_type = execution.intent_type
        self.parameters = execution.intent.parameters
        self.progress_state = dict(execution.progress or empty_progress())

    async def progress(self, **counts: int) -> None:
        """Record progress (`total`, `processed`, `succeeded`, `failed`) and announce it.
        Raises ExecutionCancelled when the execution was cancelled meanwhile."""
        unknown = set(counts) - set(empty_progress())
        if unknown:
            raise ValueError(f"Unknown progress fields: {sorted(unknown)}")
        self.progress_state.update({k: int(v) for k, v in counts.items()})
        if await database_sync_to_async(execution_progress)(
            execution_id=self.execution_id, progress=dict(self.progress_state)
        ):
            raise ExecutionCancelled()


def execution_progress(*, execution_id: uuid.UUID, progress: dict[str, int]) -> bool:
    """Store progress of a running execution; returns whether cancellation was requested."""
    with transaction.atomic():
        now = timezone.now()
        Execution.objects.filter(pk=execution_id, status=ExecutionStatus.RUNNING).update(
            progress=progress, updated_at=now, heartbeat_at=now
        )
        execution = Execution.objects.get(pk=execution_id)
        if execution.status == ExecutionStatus.RUNNING:
            _announce(execution, "execution.progress")
        return execution.cancel_requested or execution.status != ExecutionStatus.RUNNING


@transaction.atomic
def execution_claim(*, execution_id: uuid.UUID, worker: str) -> Execution | None:
    """created → running, for exactly one runner. None when someone else has it, or it
    was cancelled or finished meanwhile."""
    now = timezone.now()
    claimed = Execution.objects.filter(pk=execution_id, status=ExecutionStatus.CREATED).update(
        status=ExecutionStatus.RUNNING, started_at=now, updated_at=now, heartbeat_at=now,
        attempts=F("attempts") + 1, worker=worker, progress=empty_progress(),
    )
    if not claimed:
        return None
    execution = Execution.objects.select_related("intent").get(pk=execution_id)
    _announce(execution, "execution.started")
    return execution


def _finish(execution: Execution, *, status: str, now: datetime, result: Any = None, error: Any = None) -> Execution:
    Execution.objects.filter(pk=execution.pk).update(
        status=status, result=result, error=error, finished_at=now, updated_at=now
    )
    execution.status, execution.result, execution.error = status, result, error
    execution.finished_at = execution.updated_at = now
    audit_record(
        kind=AuditEvent.Kind.EXECUTION_FINISHED,
        actor=Actor.system(),
        user_id=execution.user_id, tenant_id=execution.tenant_id, session_id=execution.session_id,
        data={"execution_id": str(execution.pk), "intent_type": execution.intent_type, "status": status},
    )
    _announce(execution, f"execution.{status}")
    began = execution.started_at or execution.created_at
    if began is not None:
        duration = max(0.0, (now - began).total_seconds())
        transaction.on_commit(
            lambda: EXECUTION_DURATION.labels(intent_type=execution.intent_type, status=status).observe(duration)
        )
    return execution


@transaction.atomic
def execution_finish(*, execution_id: uuid.UUID, status: str, result: Any = None, error: Any = None) -> Execution | None:
    """running → a final status (once)."""
    execution = Execution.objects.select_for_update().filter(pk=execution_id, status=ExecutionStatus.RUNNING).first()
    if execution is None:
        return None
    if status == ExecutionStatus.COMPLETED and execution.cancel_requested:
        status = ExecutionStatus.CANCELLED
    return _finish(execution, status=status, now=timezone.now(), result=result, error=error)


def _beat(execution_id: uuid.UUID) -> None:
    Execution.objects.filter(pk=execution_id, status=ExecutionStatus.RUNNING).update(heartbeat_at=timezone.now())


async def _heartbeat(execution_id: uuid.UUID) -> None:
    every = max(1.0, runtime_settings.EXECUTION_STALE_AFTER.total_seconds() / 3)
    while True:
        await asyncio.sleep(every)
        await database_sync_to_async(_beat)(execution_id)


async def execution_run(execution_id: uuid.UUID) -> None:
    """Claim the execution and run its handler to a final status."""
    execution = await database_sync_to_async(execution_claim)(execution_id=execution_id, worker=server_instance_id())
    if execution is None:
        return
    context = ExecutionContext(execution)
    heartbeat = asyncio.create_task(_heartbeat(execution_id))
    try:
        handler = intent_handler(execution.intent_type)
        result = await handler(context)
    except ExecutionCancelled:
        await database_sync_to_async(execution_finish)(execution_id=execution_id, status=ExecutionStatus.CANCELLED)
    except Exception as exc:  # noqa: BLE001 - a handler's failure is the execution's outcome
        logger.warning("execution %s failed: %s", execution_id, exc, exc_info=True)
        await database_sync_to_async(execution_finish)(
            execution_id=execution_id, status=ExecutionStatus.FAILED,
            error={"type": type(exc).__name__, "message": str(exc)[:1000]},
        )
    else:
        await database_sync_to_async(execution_finish)(
            execution_id=execution_id, status=ExecutionStatus.COMPLETED, result=result
        )
    finally:
        heartbeat.cancel()


# --- Dispatch: where executions run ----------------------------------------------------
_background: dict[str, Any] = {}
_background_lock = threading.Lock()


def _serving_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop of the server this code runs under: the running loop, or, from a
    sync view or database thread, the loop that called into it (asgiref keeps it)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    if loop is not None and getattr(SyncToAsync.threadlocal, "main_event_loop_pid", None) == os.getpid():
        if loop.is_running():
            return loop
    return None


def _background_loop() -> asyncio.AbstractEventLoop:
    """A private loop thread for callers with no server loop (management commands, the
    sync test client)."""
    with _background_lock:
        loop = _background.get("loop")
        if loop is None or not loop.is_running():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="symphainy-executions", daemon=True)
            thread.start()
            _background["loop"] = loop
        return loop


def _spawn(execution_id: uuid.UUID) -> None:
    # A fresh context: the caller's (a database thread's) would make asgiref take the
    # execution's own database calls for nested ones and refuse them.
    background(execution_run(execution_id), context=contextvars.Context())


def execution_dispatch(execution_id: uuid.UUID) -> None:
    """Start an execution: on this server's event loop (EXECUTION_RUNNER=asyncio), or on a
    Channels worker (EXECUTION_RUNNER=worker, `manage.py runworker symphainy.executions`)."""
    if runtime_settings.EXECUTION_RUNNER == "worker":
        async_to_sync(get_channel_layer().send)(
            WORKER_CHANNEL, {"type": "execution.run", "execution_id": str(execution_id)}
        )
        return
    loop = _serving_loop() or _background_loop()
    loop.call_soon_threadsafe(_spawn, execution_id, context=contextvars.Context())


# --- The sweep -------------------------------------------------------------------------
def executions_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """Pick up what a dead runner left: running executions whose heartbeat stopped are
    run again (or failed after EXECUTION_MAX_ATTEMPTS); created ones never claimed are
    dispatched again."""
    now = now or timezone.now()
    stale = now - runtime_settings.EXECUTION_STALE_AFTER
    requeued = failed = redispatched = 0
    with transaction.atomic():
        lost = list(
            Execution.objects.select_for_update()
            .filter(status=ExecutionStatus.RUNNING, heartbeat_at__lt=stale)
            .values_list("pk", "attempts")
        )
        for execution_id, attempts in lost:
            if attempts >= runtime_settings.EXECUTION_MAX_ATTEMPTS:
                execution = Execution.objects.get(pk=execution_id)
                _finish(execution, status=ExecutionStatus.FAILED, now=now,
                        error={"type": "WorkerLost", "message": "The runner stopped answering."})
                failed += 1
            else:
                Execution.objects.filter(pk=execution_id).update(status=ExecutionStatus.CREATED, worker="", updated_at=now)
                transaction.on_commit(lambda pk=execution_id: execution_dispatch(pk))
                requeued += 1
        waiting = Execution.objects.filter(
            status=ExecutionStatus.CREATED, cancel_requested=False, updated_at__lt=stale
        ).values_list("pk", flat=True)
        for execution_id in waiting:
            transaction.on_commit(lambda pk=execution_id: execution_dispatch(pk))
            redispatched += 1
    return {"requeued": requeued, "failed": failed, "redispatched": redispatched}


def idempotency_records_prune(*, now: datetime | None = None) -> int:
    deleted, _ = IdempotencyRecord.objects.filter(expires_at__lte=now or timezone.now()).delete()
    return deleted

