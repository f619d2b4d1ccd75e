"""Running executions off the request path: the handler registry, what a handler sees
(`ExecutionContext`), the run itself with its heartbeat, where it runs (this server's loop,
a private loop for commands, or a Channels worker), and the sweep that picks up what a
dead runner left behind."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import threading
import uuid
from datetime import datetime
from typing import Any, Awaitable, Callable

from asgiref.sync import SyncToAsync, async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.module_loading import import_string

from core.conf import runtime_settings
from core.exceptions import DEPENDENCY_ERRORS, InvalidRequest, error_for_client
from core.process import server_instance_id
from core.tasks import background, tasks_stop
from sessions_runtime.executions import (
    execution_claim, execution_fail_lost, execution_finish, execution_progress, executions_release,
)
from sessions_runtime.models import Execution, ExecutionStatus, empty_progress

logger = logging.getLogger(__name__)
WORKER_CHANNEL = "symphainy.executions"
EXECUTION_RUNNERS = ("asyncio", "worker")  # checked at start-up by sessions_runtime.checks
HEARTBEAT_STOP_TIMEOUT_S = 5.0


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



def _beat(execution_id: uuid.UUID) -> None:
    Execution.objects.filter(pk=execution_id, status=ExecutionStatus.RUNNING).update(heartbeat_at=timezone.now())


async def _heartbeat(execution_id: uuid.UUID) -> None:
    """Until cancelled. A beat that fails is retried at the next one: a heartbeat that
    stopped would have the sweep run the execution a second time while it still runs."""
    every = max(1.0, runtime_settings.EXECUTION_STALE_AFTER.total_seconds() / 3)
    while True:
        await asyncio.sleep(every)
        try:
            await database_sync_to_async(_beat)(execution_id)
        except DEPENDENCY_ERRORS:
            logger.warning("execution %s: heartbeat failed; will retry", execution_id, exc_info=True)
        except Exception:  # noqa: BLE001 - the run goes on, so must its heartbeat
            logger.exception("execution %s: heartbeat failed; will retry", execution_id)


async def execution_run(execution_id: uuid.UUID) -> None:
    """Claim the execution and run its handler to a final status."""
    execution = await database_sync_to_async(execution_claim)(execution_id=execution_id, worker=server_instance_id())
    if execution is None:
        return
    context = ExecutionContext(execution)
    heartbeat = asyncio.create_task(_heartbeat(execution_id))
    _runs[execution_id] = asyncio.current_task()  # type: ignore[assignment]
    try:
        handler = intent_handler(execution.intent_type)
        result = await handler(context)
    except ExecutionCancelled:
        await database_sync_to_async(execution_finish)(execution_id=execution_id, status=ExecutionStatus.CANCELLED)
    except Exception as exc:  # noqa: BLE001 - a handler's failure is the execution's outcome
        logger.warning("execution %s failed: %s", execution_id, exc, exc_info=True)
        await database_sync_to_async(execution_finish)(
            execution_id=execution_id, status=ExecutionStatus.FAILED,
            error=error_for_client(exc, generic="The intent handler failed."),
        )
    else:
        await database_sync_to_async(execution_finish)(
            execution_id=execution_id, status=ExecutionStatus.COMPLETED, result=result
        )
    finally:
        _runs.pop(execution_id, None)
        # Ended with the run, cancelled or not (a drain waits for the run only).
        if await tasks_stop([heartbeat], timeout=HEARTBEAT_STOP_TIMEOUT_S):
            logger.error("execution %s: its heartbeat did not end when cancelled", execution_id)


# The runs of this process, so that a stopping one can wait for them or hand them over.
_runs: dict[uuid.UUID, asyncio.Task] = {}


async def executions_hand_over(*, timeout: float) -> int:
    """A stopping process: wait (at most `timeout`) for the executions running on this
    event loop, then cancel those still running and release them, so that another process
    runs them at once (`executions_release`). Returns how many were handed over."""
    loop = asyncio.get_running_loop()
    mine = {execution_id: task for execution_id, task in _runs.items() if task.get_loop() is loop}
    if mine:
        await asyncio.wait(mine.values(), timeout=max(0.0, timeout))
    left = [execution_id for execution_id, task in mine.items() if not task.done()]
    if left:
        if await tasks_stop([mine[execution_id] for execution_id in left], timeout=HEARTBEAT_STOP_TIMEOUT_S):
            logger.error("executions of a stopping process did not end when cancelled")
        await database_sync_to_async(executions_release)(execution_ids=left, worker=server_instance_id())
        logger.info("handed over %d running executions", len(left))
    return len(left)


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
            _background["loop"], _background["thread"] = loop, thread
        return loop


def background_loop_stop(*, timeout: float = 5.0) -> int:
    """Cancel what runs on the private loop, then stop the loop and its thread (a command
    that exits, tests). Returns how many tasks did not end within `timeout`."""
    with _background_lock:
        loop, thread = _background.pop("loop", None), _background.pop("thread", None)
    if loop is None or thread is None or not thread.is_alive():
        return 0
    if thread is threading.current_thread():
        raise RuntimeError("background_loop_stop() called from the loop it stops")

    async def cancel_all() -> int:
        return len(await tasks_stop(asyncio.all_tasks() - {asyncio.current_task()}, timeout=timeout))

    left = asyncio.run_coroutine_threadsafe(cancel_all(), loop).result(timeout + 1.0)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout)
    if not thread.is_alive():
        loop.close()
    return left


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
def executions_sweep(*, now: datetime | None = None, dead_workers: list[str] = ()) -> dict[str, int]:  # type: ignore[assignment]
    """Pick up what a dead runner left: running executions of a dead server process
    (`dead_workers`, at once) or whose heartbeat stopped are run again (or failed after
    EXECUTION_MAX_ATTEMPTS); created ones never claimed (or handed over by a stopping
    process) are dispatched again."""
    now = now or timezone.now()
    stale = now - runtime_settings.EXECUTION_STALE_AFTER
    requeued = failed = redispatched = 0
    with transaction.atomic():
        lost = list(
            Execution.objects.select_for_update()
            .filter(status=ExecutionStatus.RUNNING)
            .filter(Q(heartbeat_at__lt=stale) | Q(worker__in=list(dead_workers)))
            .values_list("pk", "attempts")
        )
        for execution_id, attempts in lost:
            if attempts >= runtime_settings.EXECUTION_MAX_ATTEMPTS:
                execution_fail_lost(execution=Execution.objects.get(pk=execution_id), now=now)
                failed += 1
            else:
                Execution.objects.filter(pk=execution_id).update(status=ExecutionStatus.CREATED, worker="", updated_at=now)
                transaction.on_commit(lambda pk=execution_id: execution_dispatch(pk))
                requeued += 1
        waiting = list(Execution.objects.filter(
            status=ExecutionStatus.CREATED, cancel_requested=False, updated_at__lt=stale
        ).values_list("pk", flat=True))
        # Dispatched again once per EXECUTION_STALE_AFTER, not at every sweep.
        Execution.objects.filter(pk__in=waiting).update(updated_at=now)
        for execution_id in waiting:
            transaction.on_commit(lambda pk=execution_id: execution_dispatch(pk))
            redispatched += 1
    return {"requeued": requeued, "failed": failed, "redispatched": redispatched}
