"""Waiting for a condition instead of sleeping for a while: `wait_until` polls a predicate
and returns its first truthy value, or fails with `message` once `timeout` has passed.

A fixed sleep is either too short on a busy machine (a flaky failure) or too long
everywhere else (a slow suite); a poll is as short as the condition allows.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any, Awaitable, Callable, TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout: float = 10,
    message: str | Callable[[], str] = "the condition",
    interval: float = 0.05,
    pause: Callable[[float], Any] = time.sleep,
) -> T:
    """Call `predicate` until it returns something truthy, and return that. `message` (or
    a function giving it, called on failure: a log read then) says what was awaited;
    `pause` waits between calls (Playwright's sync API needs its own, to serve the page)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(_timed_out(timeout, message))
        pause(interval)


async def wait_until_async(
    predicate: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = 10,
    message: str | Callable[[], str] = "the condition",
    interval: float = 0.05,
) -> T:
    """`wait_until` on the running loop: `predicate` may be a plain function or a
    coroutine function, and the loop runs other tasks between calls."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(_timed_out(timeout, message))
        await asyncio.sleep(interval)


def _timed_out(timeout: float, message: str | Callable[[], str]) -> str:
    return f"timed out after {timeout} s waiting for {message() if callable(message) else message}"
