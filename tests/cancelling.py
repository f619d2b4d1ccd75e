"""What the cancellation tests share: a task must end, cancelled, within a bound."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import pytest

from tests.waiting import wait_until_async

BOUND = 5.0  # seconds: far more than any loop needs to notice a cancel()


async def until(check: Callable[[], Any], *, timeout: float = BOUND, message: str = "") -> Any:
    """Yield to the loop until `check()` is true, at most `timeout` seconds (the suite's
    one poll, `tests.waiting`, at every 5 ms: these wait for a loop's next step)."""
    return await wait_until_async(check, timeout=timeout, interval=0.005, message=message or f"{check}")


async def assert_ends_cancelled(task: asyncio.Task) -> None:
    """`task` ends, cancelled, within BOUND. If it does not, the test fails here, and the
    task is cancelled once more, so that the loop's teardown does not hang in its turn."""
    done, _ = await asyncio.wait({task}, timeout=BOUND)
    if task not in done:
        task.cancel()
        await asyncio.wait({task}, timeout=BOUND)
        pytest.fail(f"{task.get_coro().__qualname__} went on after cancel()")
    assert task.cancelled(), f"{task!r} ended without being cancelled: {task.exception()!r}"
