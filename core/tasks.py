"""Background tasks that nothing awaits; calls that wait for an overlapping one (`Flights`).

asyncio keeps only a weak reference to a task: one that nobody holds may be collected
before it finishes (the warning in the docs of `asyncio.create_task`). Every task the
project starts and does not await goes through `background`, which holds it until done.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from typing import Any, AsyncIterator, Coroutine, Hashable, Iterable

_running: set[asyncio.Task] = set()


def background(
    coroutine: Coroutine[Any, Any, Any],
    *,
    loop: asyncio.AbstractEventLoop | None = None,
    context: contextvars.Context | None = None,
) -> asyncio.Task:
    """Start `coroutine` as a task on `loop` (the running one by default), referenced until done."""
    task = (loop or asyncio.get_running_loop()).create_task(coroutine, context=context)
    _running.add(task)
    task.add_done_callback(_running.discard)
    return task


def background_tasks() -> frozenset[asyncio.Task]:
    """The tasks started here that have not finished yet (tests, shutdown)."""
    return frozenset(_running)


async def tasks_stop(tasks: Iterable[asyncio.Task], *, timeout: float) -> set[asyncio.Task]:
    """Cancel `tasks` and wait up to `timeout` seconds for them to end; returns those that
    did not (a loop that swallowed its cancellation), so a drain can name them and go on."""
    tasks = {task for task in tasks if not task.done()}
    for task in tasks:
        task.cancel()
    if not tasks:
        return set()
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    return pending


class Flights:
    """Calls by key on one event loop: a call that finds another of its key running can wait
    for it to end, then judge for itself what the first one left (a cache entry, say).
    Hand-written: the well-kept single-flight libraries share the first call's result, and
    here each caller must see the outcome under its own rules."""

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Future] = {}

    async def wait(self, key: Hashable) -> bool:
        """Wait for the running call of `key`, if any; whether there was one."""
        running = self._running.get(key)
        if running is None:
            return False
        await asyncio.wait([running])
        return True

    @contextlib.asynccontextmanager
    async def running(self, key: Hashable) -> AsyncIterator[None]:
        """Mark a call of `key` as running for the block (unless one is already)."""
        done = asyncio.get_running_loop().create_future()
        self._running.setdefault(key, done)
        try:
            yield
        finally:
            if self._running.get(key) is done:
                del self._running[key]
            done.set_result(None)
