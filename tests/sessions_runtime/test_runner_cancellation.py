"""An execution's run and its heartbeat end when cancelled (a server that stops), at any
moment of either; a failed beat does not stop the heartbeat; the private loop that runs
executions for commands can be stopped with what runs on it."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.db import OperationalError

from core.conf import runtime_settings
from sessions_runtime import runner
from sessions_runtime.models import Execution, ExecutionStatus
from tests import factories
from tests.cancelling import BOUND, assert_ends_cancelled, until

# `database_sync_to_async` looks at its thread's connection before each call.
pytestmark = pytest.mark.django_db

handler_started: asyncio.Event | None = None


@pytest.fixture(autouse=True)
def beat_every_second(settings):
    """The shortest heartbeat there is (a third of EXECUTION_STALE_AFTER, at least 1 s)."""
    settings.SYMPHAINY = {**settings.SYMPHAINY, "EXECUTION_STALE_AFTER": timedelta(seconds=3)}


async def wait_for_ever(ctx) -> None:
    """A handler that runs until cancelled."""
    if handler_started is not None:
        handler_started.set()
    await asyncio.Event().wait()


def heartbeats() -> set[asyncio.Task]:
    return {task for task in asyncio.all_tasks() if task.get_coro().__qualname__ == "_heartbeat"}


@pytest.fixture
def beats(monkeypatch) -> list[uuid.UUID]:
    """Heartbeats recorded instead of written."""
    record: list[uuid.UUID] = []
    monkeypatch.setattr(runner, "_beat", record.append)
    return record


async def test_the_heartbeat_ends_when_cancelled_while_it_waits(beats):
    heartbeat = asyncio.get_running_loop().create_task(runner._heartbeat(uuid.uuid4()))
    await asyncio.sleep(0)
    heartbeat.cancel()
    await assert_ends_cancelled(heartbeat)


@pytest.mark.parametrize("moment", ["during", "as_it_returns"])
async def test_the_heartbeat_ends_when_cancelled_during_a_beat(monkeypatch, moment):
    entered, release = threading.Event(), threading.Event()

    def blocked_beat(execution_id: uuid.UUID) -> None:
        entered.set()
        release.wait(BOUND)

    monkeypatch.setattr(runner, "_beat", blocked_beat)
    heartbeat = asyncio.get_running_loop().create_task(runner._heartbeat(uuid.uuid4()))
    try:
        await until(entered.is_set)
        if moment == "as_it_returns":
            release.set()
        heartbeat.cancel()
        await assert_ends_cancelled(heartbeat)
    finally:
        release.set()


@pytest.mark.parametrize("error", [OperationalError("database is locked"), ValueError("a bug")])
async def test_a_failed_beat_does_not_stop_the_heartbeat(monkeypatch, beats, error):
    """Beats are at least a second apart: this test takes two."""
    def beat(execution_id: uuid.UUID) -> None:
        beats.append(execution_id)
        if len(beats) == 1:
            raise error

    monkeypatch.setattr(runner, "_beat", beat)
    heartbeat = asyncio.get_running_loop().create_task(runner._heartbeat(uuid.uuid4()))
    await until(lambda: len(beats) >= 2 or heartbeat.done(), timeout=BOUND + 2)
    assert not heartbeat.done(), f"the heartbeat stopped: {heartbeat.exception()!r}"
    heartbeat.cancel()
    await assert_ends_cancelled(heartbeat)


@pytest.fixture
def waiting_handler(settings):
    global handler_started
    handlers = {**runtime_settings.INTENT_HANDLERS, "wait": f"{__name__}.wait_for_ever"}
    settings.SYMPHAINY = {**settings.SYMPHAINY, "INTENT_HANDLERS": handlers}
    handler_started = None
    yield
    handler_started = None


@database_sync_to_async
def created_execution() -> Execution:
    from sessions_runtime.models import Intent

    session = factories.make_session(factories.make_user())
    intent = Intent.objects.create(
        session=session, user_id=session.user_id, tenant_id=session.tenant_id, intent_type="wait", parameters={},
    )
    return Execution.objects.create(
        intent=intent, session=session, user_id=session.user_id, tenant_id=session.tenant_id, intent_type="wait",
        status=ExecutionStatus.CREATED,
    )


@pytest.mark.django_db(transaction=True)
async def test_a_cancelled_run_ends_with_its_heartbeat_and_is_left_to_the_sweep(waiting_handler):
    global handler_started
    handler_started = asyncio.Event()
    execution = await created_execution()
    run = asyncio.get_running_loop().create_task(runner.execution_run(execution.pk))
    await until(handler_started.is_set)
    (heartbeat,) = heartbeats()
    run.cancel()
    await assert_ends_cancelled(run)
    assert heartbeat.done(), "the run ended and left its heartbeat running"
    # Still `running`: its heartbeat stops, and the sweep hands it to another runner.
    assert (await Execution.objects.aget(pk=execution.pk)).status == ExecutionStatus.RUNNING


def test_background_loop_stop_cancels_what_runs_on_it_and_ends_its_thread(waiting_handler):
    loop = runner._background_loop()
    thread = next(t for t in threading.enumerate() if t.name == "symphainy-executions" and t.is_alive())

    async def start() -> asyncio.Task:
        global handler_started
        handler_started = asyncio.Event()
        task = asyncio.get_running_loop().create_task(wait_for_ever(None))
        await handler_started.wait()
        return task

    task = asyncio.run_coroutine_threadsafe(start(), loop).result(BOUND)
    assert runner.background_loop_stop(timeout=BOUND) == 0
    assert task.cancelled()
    assert not thread.is_alive() and loop.is_closed()
    assert runner._background_loop() is not loop, "a stopped loop is handed out again"
    runner.background_loop_stop()
