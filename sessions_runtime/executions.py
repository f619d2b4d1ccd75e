"""An execution's life: created → running → completed / failed / cancelled, each change
made here and announced to the session's sockets with the change (`core.events`).
Where executions run is `runner.py`; how they are submitted, `submission.py`."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from core.audit import audit_record
from core.caller import Caller
from core.conf import runtime_settings
from core.events import EXECUTION_PROGRESS, runtime_event_publish
from core.exceptions import ExecutionFinished, NotFound
from core.ids import uuid_parse
from core.metrics import EXECUTION_DURATION
from core.models import ActorType, AuditEvent
from sessions_runtime.models import FINISHED_STATUSES, Execution, ExecutionStatus, empty_progress
from sessions_runtime.selectors import EXECUTION_CANCEL, access_require_write, access_visible
from sessions_runtime.serializers import ExecutionSerializer

# The events of an execution's life, each carrying its status document: one per change of
# status (`execution.<status>`) and its progress reports.
EXECUTION_EVENTS = ("execution.created", "execution.started", EXECUTION_PROGRESS,
                    *(f"execution.{status}" for status in sorted(FINISHED_STATUSES)))


def execution_payload(execution: Execution) -> dict[str, Any]:
    """The execution as the API and the events show it."""
    return dict(ExecutionSerializer(execution).data)


def execution_event_payload(execution: Execution) -> dict[str, Any]:
    """The status document as the `execution.*` events carry it: a result over
    EVENT_RESULT_MAX_BYTES is left out (`result: null, result_omitted: true`), so a large
    result is not copied into the log and into every replay; the status GET has it whole."""
    payload = execution_payload(execution)
    result = payload.get("result")
    if result is not None:
        size = len(json.dumps(result, separators=(",", ":"), default=str).encode())
        if size > runtime_settings.EVENT_RESULT_MAX_BYTES:
            payload["result"], payload["result_omitted"] = None, True
    return payload


def execution_announce(execution: Execution, event_type: str) -> None:
    """Publish the execution's status document as `event_type` to its session's sockets."""
    runtime_event_publish(execution.session_id, event_type, execution_event_payload(execution))


def execution_get_for_caller(*, caller: Caller, execution_id: object) -> Execution:
    """The caller's execution, or their tenant's for tenant admins; otherwise NotFound."""
    parsed = uuid_parse(execution_id)
    if parsed is None:
        raise NotFound("Execution not found.")
    execution = Execution.objects.filter(access_visible(caller), pk=parsed).first()
    if execution is None:
        raise NotFound("Execution not found.")
    return execution


@transaction.atomic
def execution_cancel(*, execution: Execution, caller: Caller) -> Execution:
    """Cancel: at once when not started, at the handler's next progress report when running.
    Only the execution's own user, with the write permission, may cancel it; an operator
    (admin, command) acts outside any tenant and was checked where it acts (the admin's
    `sessions_runtime.cancel_execution` permission)."""
    if caller.kind == ActorType.USER:
        access_require_write(caller=caller, owner_id=execution.user_id, what=EXECUTION_CANCEL)
    execution = Execution.objects.select_for_update().get(pk=execution.pk)
    if execution.is_finished:
        raise ExecutionFinished()
    now = timezone.now()
    if execution.status == ExecutionStatus.CREATED:
        return _finish(execution, status=ExecutionStatus.CANCELLED, now=now)
    Execution.objects.filter(pk=execution.pk).update(cancel_requested=True, updated_at=now)
    execution.cancel_requested, execution.updated_at = True, now
    return execution


def execution_progress(*, execution_id: uuid.UUID, progress: dict[str, int]) -> bool:
    """Store progress of a running execution; returns whether it must stop: cancellation
    was requested, or its session ended (work nobody can use any more)."""
    with transaction.atomic():
        now = timezone.now()
        Execution.objects.filter(pk=execution_id, status=ExecutionStatus.RUNNING).update(
            progress=progress, updated_at=now, heartbeat_at=now
        )
        execution = Execution.objects.select_related("session").get(pk=execution_id)
        if not execution.session.is_usable():
            return True
        if execution.status == ExecutionStatus.RUNNING:
            execution_announce(execution, EXECUTION_PROGRESS)
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
    execution = Execution.objects.select_related("intent", "session").get(pk=execution_id)
    if not execution.session.is_usable():
        # The session ended before the execution started: it never runs.
        _finish(execution, status=ExecutionStatus.CANCELLED, now=now)
        return None
    execution_announce(execution, "execution.started")
    return execution


def _finish(execution: Execution, *, status: str, now: datetime, result: Any = None, error: Any = None) -> Execution:
    Execution.objects.filter(pk=execution.pk).update(
        status=status, result=result, error=error, finished_at=now, updated_at=now
    )
    execution.status, execution.result, execution.error = status, result, error
    execution.finished_at = execution.updated_at = now
    audit_record(
        kind=AuditEvent.Kind.EXECUTION_FINISHED,
        caller=Caller.system(),
        user_id=execution.user_id, tenant_id=execution.tenant_id, session_id=execution.session_id,
        data={"execution_id": str(execution.pk), "intent_type": execution.intent_type, "status": status},
    )
    execution_announce(execution, f"execution.{status}")
    began = execution.started_at or execution.created_at
    if began is not None:
        duration = max(0.0, (now - began).total_seconds())
        transaction.on_commit(
            lambda: EXECUTION_DURATION.labels(intent_type=execution.intent_type, status=status).observe(duration)
        )
    return execution


def execution_fail_lost(*, execution: Execution, now: datetime) -> Execution:
    """A running execution whose runner stopped answering, out of attempts: failed."""
    return _finish(execution, status=ExecutionStatus.FAILED, now=now,
                   error={"type": "WorkerLost", "message": "The runner stopped answering."})


@transaction.atomic
def execution_finish(*, execution_id: uuid.UUID, status: str, result: Any = None, error: Any = None) -> Execution | None:
    """running → a final status (once)."""
    execution = Execution.objects.select_for_update().filter(pk=execution_id, status=ExecutionStatus.RUNNING).first()
    if execution is None:
        return None
    if status == ExecutionStatus.COMPLETED and execution.cancel_requested:
        status = ExecutionStatus.CANCELLED
    return _finish(execution, status=status, now=timezone.now(), result=result, error=error)


def executions_release(*, execution_ids: list[uuid.UUID], worker: str) -> int:
    """running → created for the executions a stopping process hands over (the attempt is
    not counted). Their `updated_at` is set back past EXECUTION_STALE_AFTER, so that the
    next sweep of any other process dispatches them again at once."""
    waited_enough = timezone.now() - runtime_settings.EXECUTION_STALE_AFTER - timedelta(seconds=1)
    return Execution.objects.filter(pk__in=execution_ids, status=ExecutionStatus.RUNNING, worker=worker).update(
        status=ExecutionStatus.CREATED, worker="", attempts=Greatest(F("attempts") - 1, 0), heartbeat_at=None,
        updated_at=waited_enough,
    )
