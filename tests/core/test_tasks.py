"""`tasks_stop`, what every drain of a loop goes through: it cancels, waits a bounded time,
and names what would not end instead of waiting for it for ever."""

from __future__ import annotations

import asyncio

from core.tasks import Flights, tasks_stop


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


async def test_joined_shares_a_call_not_yet_begun_and_starts_another_once_it_has():
    flights, calls, release = Flights(), [], asyncio.Event()

    async def call(begin) -> int:
        await release.wait()
        begin()
        calls.append(len(calls) + 1)
        return len(calls)

    early = [asyncio.get_running_loop().create_task(flights.joined("k", call)) for _ in range(3)]
    await asyncio.sleep(0)
    early[0].cancel()  # a caller that goes away stops no one else's call
    release.set()
    assert await asyncio.gather(*early[1:]) == [1, 1]
    assert await flights.joined("k", call) == 2


async def test_joined_gives_every_caller_the_failure():
    flights = Flights()

    async def call(begin) -> None:
        begin()
        raise LookupError("down")

    results = await asyncio.gather(*(flights.joined("k", call) for _ in range(3)), return_exceptions=True)
    assert [type(result) for result in results] == [LookupError] * 3
