"""`tasks_stop`, what every drain of a loop goes through: it cancels, waits a bounded time,
and names what would not end instead of waiting for it for ever; `Flights.shared`, what the
sockets of one key share their re-check through."""

from __future__ import annotations

import asyncio

from core.tasks import Flights, tasks_stop
from tests.waiting import wait_until_async


async def test_tasks_stop_cancels_and_waits_for_each_task():
    tasks = [asyncio.get_running_loop().create_task(asyncio.Event().wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert await tasks_stop(tasks, timeout=5) == set()
    assert all(task.cancelled() for task in tasks)


async def test_tasks_stop_returns_a_task_that_swallows_its_cancel_after_the_timeout():
    stop = asyncio.Event()

    async def stubborn() -> None:
        while not stop.is_set():
            try:
                await stop.wait()
            except asyncio.CancelledError:
                pass

    task = asyncio.get_running_loop().create_task(stubborn())
    await asyncio.sleep(0)
    assert await tasks_stop([task], timeout=0.05) == {task}
    stop.set()
    await task


async def test_tasks_stop_leaves_finished_tasks_alone():
    done = asyncio.get_running_loop().create_task(asyncio.sleep(0, result=1))
    await done
    assert await tasks_stop([done], timeout=5) == set()
    assert done.result() == 1


async def test_shared_takes_the_outcome_of_a_call_that_began_within_the_bound_and_no_older():
    flights, calls = Flights(), []

    async def call() -> int:
        calls.append(asyncio.get_running_loop().time())
        return len(calls)

    assert await asyncio.gather(*(flights.shared("k", call, within=60) for _ in range(3))) == [1, 1, 1]
    assert await flights.shared("k", call, within=60) == 1  # ended, began within the bound
    assert await flights.shared("other", call, within=60) == 2  # another key: a call of its own
    loop = asyncio.get_running_loop()
    await wait_until_async(lambda: loop.time() > calls[0] + 0.01, interval=0.001, message="the bound to pass")
    assert await flights.shared("k", call, within=0.01) == 3


async def test_shared_gives_every_caller_the_exception():
    flights, calls = Flights(), []

    async def refused() -> None:
        calls.append(1)
        raise ValueError("refused")

    outcomes = await asyncio.gather(*(flights.shared("k", refused, within=60) for _ in range(3)), return_exceptions=True)
    assert [type(outcome) for outcome in outcomes] == [ValueError] * 3
    assert len(calls) == 1


async def test_a_cancelled_caller_cancels_no_other():
    flights, release = Flights(), asyncio.Event()

    async def slow() -> str:
        await release.wait()
        return "answered"

    first = asyncio.get_running_loop().create_task(flights.shared("k", slow, within=60))
    second = asyncio.get_running_loop().create_task(flights.shared("k", slow, within=60))
    await asyncio.sleep(0)  # both are waiting for the one call
    first.cancel()
    release.set()
    assert await second == "answered"
    assert first.cancelled()
