"""Background tasks that nothing awaits; calls that wait for, or share, an overlapping one (`Flights`).

asyncio keeps only a weak reference to a task: one that nobody holds may be collected
before it finishes (the warning in the docs of `asyncio.create_task`). Every task the
project starts and does not await goes through `background`, which holds it until done.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from typing import Any, AsyncIterator, Callable, Coroutine, Hashable, Iterable, TypeVar

T = TypeVar("T")

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
    """Calls by key on one event loop. A call that finds another of its key running can wait
    for it to end, then judge for itself what the first one left (a cache entry, say:
    `wait`, `running`); or, where any recent answer of the key will do, take the outcome of
    one that began recently enough (`shared`). Hand-written: the well-kept single-flight
    libraries share only a call in flight, with no bound on when it began."""

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Future] = {}
        # key -> (loop time it began, its task): the newest shared call of each key.
        self._shared: dict[Hashable, tuple[float, asyncio.Task]] = {}

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

    async def shared(self, key: Hashable, call: Callable[[], Coroutine[Any, Any, T]], *, within: float) -> T:
        """The outcome, value or exception, of the call of `key` that began at most `within`
        seconds ago, in flight or ended; else of `call()`, started now as the one of `key`.
        It runs as a task of its own (shielded), so a caller cancelled meanwhile cancels no other."""
        loop = asyncio.get_running_loop()
        entry = self._shared.get(key)
        if entry is None or entry[0] < loop.time() - within:
            entry = (loop.time(), background(call()))
            self._shared[key] = entry
            # Past `within` after its end it began too long ago for anyone: forget it then.
            entry[1].add_done_callback(lambda task: loop.call_later(within, self._forget, key, entry))
        return await asyncio.shield(entry[1])

    def _forget(self, key: Hashable, entry: tuple[float, asyncio.Task]) -> None:
        if self._shared.get(key) is entry:
            del self._shared[key]
