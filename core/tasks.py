"""Background tasks that nothing awaits; calls that wait for an overlapping one, or share
one that has not begun (`Flights`).

asyncio keeps only a weak reference to a task: one that nobody holds may be collected
before it finishes (the warning in the docs of `asyncio.create_task`). Every task the
project starts and does not await goes through `background`, which holds it until done.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from typing import Any, AsyncIterator, Awaitable, Callable, Coroutine, Hashable, Iterable, TypeVar

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
    """Calls by key on one event loop: a call that finds another of its key running can wait
    for it to end, then judge for itself what the first one left (a cache entry, say); or
    (`joined`) share the result of one that has not begun yet. Hand-written: the well-kept
    single-flight libraries share the result of a call whatever its start, and here a
    caller must see the outcome under its own rules, or of a call that began after it came."""

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Future] = {}
        self._unbegun: dict[Hashable, _Unbegun] = {}

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

    async def joined(self, key: Hashable, call: Callable[[Callable[[], None]], Awaitable[T]]) -> T:
        """The result of a call of `key` that begins after this one came: joins the one not
        begun yet, else starts one (in the background, so that a caller that goes away
        stops no one else's). `call(begin)` calls `begin()` just before its work starts,
        on whichever thread: a caller that comes later gets a call of its own."""
        loop = asyncio.get_running_loop()
        unbegun = self._unbegun.get(key)
        # (One left by a loop that closed under it, as a test's may, is no one's to join.)
        if unbegun is None or unbegun.begun or unbegun.result.get_loop() is not loop:
            unbegun = self._unbegun[key] = _Unbegun(loop.create_future())
            background(self._joined_run(key, unbegun, call))
        return await asyncio.shield(unbegun.result)

    async def _joined_run(
        self, key: Hashable, unbegun: _Unbegun, call: Callable[[Callable[[], None]], Awaitable[Any]]
    ) -> None:
        try:
            unbegun.result.set_result(await call(unbegun.begin))
        except asyncio.CancelledError:
            unbegun.result.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - every caller gets it
            unbegun.result.set_exception(exc)
        finally:
            if self._unbegun.get(key) is unbegun:
                del self._unbegun[key]


class _Unbegun:
    """A shared call and whether it has begun (set from the thread that runs it: one store,
    read on the loop before a caller joins)."""

    __slots__ = ("result", "begun")

    def __init__(self, result: asyncio.Future) -> None:
        self.result, self.begun = result, False
        # Read, so that a failure whose callers all went away is not reported as unread.
        result.add_done_callback(lambda done: done.cancelled() or done.exception())

    def begin(self) -> None:
        self.begun = True
