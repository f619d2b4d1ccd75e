"""The suite's poll (tests/waiting.py): the value that ended the wait, or a failure that
says what was awaited."""

from __future__ import annotations

import itertools
import time

import pytest

from tests.waiting import wait_until, wait_until_async


def test_the_first_truthy_value_ends_the_wait():
    calls = itertools.count()
    assert wait_until(lambda: [n] if (n := next(calls)) >= 3 else None, interval=0) == [3]


def test_a_condition_never_met_fails_saying_what_was_awaited():
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        time.sleep(seconds)

    with pytest.raises(AssertionError, match="waiting for the answer: still 0"):
        wait_until(lambda: False, timeout=0.05, interval=0.01, message=lambda: "the answer: still 0", pause=pause)
    assert pauses and set(pauses) == {0.01}


async def test_the_async_wait_awaits_a_coroutine_predicate():
    calls = itertools.count()

    async def ready() -> str | None:
        return "ready" if next(calls) >= 2 else None

    assert await wait_until_async(ready, interval=0) == "ready"
    with pytest.raises(AssertionError, match="waiting for nothing"):
        await wait_until_async(lambda: 0, timeout=0.02, message="nothing")
