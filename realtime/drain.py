"""A serving process's life: started, then, on SIGTERM or SIGINT, drained, in one order.

The drain, whatever command started the process (`symphainy.serve` hooks it into daphne):
1. from the first moment, this process is `draining()`: `/ready` answers 503, a handshake
   that still arrives is closed with 1012, and the server stops listening (`stop_accepting`),
   so nginx or a load balancer sends new sockets elsewhere; its heartbeat keeps the lease
   but sweeps no more, so nothing it hands over is dispatched back to it;
2. its connection records go (a client back elsewhere must not meet its own ghost under
   the per-user cap), then every open socket is closed with 1012, spread evenly over
   SHUTDOWN_DRAIN_WINDOW in a random order, so that their clients do not all come back in
   the same instant, each after a `server.restart` frame that says when to come back; a
   loop too busy to keep to that schedule gets until half the time left after the window
   (`closes_until`), and the sockets still open then are cut by the server (`cut`);
3. the work in flight (requests, executions) gets the rest of SHUTDOWN_TIMEOUT, less a
   reserve for the steps below; executions still running then are handed over (another
   process runs them at once) and agent answers end as `interrupted`;
4. the loops stop (the event-log tail, the heartbeat, the connection-record flusher, the
   private execution loop), and the process's connection records and its lease go with it.
The server then stops its loop and the process exits 0. See docs/deployment.md.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Awaitable, Callable, Protocol

from channels.db import database_sync_to_async

from core.conf import runtime_settings
from core.exceptions import DEPENDENCY_ERRORS
from core.tasks import background
from realtime import heartbeat
from realtime.counts import socket_counts
from realtime.presence import registry, server_leave
from realtime.tail import tail
from sessions_runtime import agents, runner

logger = logging.getLogger(__name__)
CLOSE_REASON = "server_restart"
# Kept from SHUTDOWN_TIMEOUT for the last steps (handing over, stopping loops, the last writes).
RESERVE_S = 3.0
# Sockets closed together: one close every few milliseconds is as even as a spread needs.
STEP_S = 0.01
# The longest reconnect delay a drain suggests (`server.restart`): a few sockets spread over
# the whole window need not wait for their share of it.
HINT_MAX_S = 1.0
# Of the time from the window's end to the deadline, the share a loop behind may still close in.
CLOSE_SHARE = 0.5
# Closes started, at most, between two looks at the clock when the loop is behind: a loop
# handed all of them at once runs them all before anything else, its timeouts included.
CLOSES_PER_TURN = 50


class Closable(Protocol):
    async def close_with(self, code: int, reason: str) -> None: ...
    async def restart(self, *, reconnect_after_ms: int) -> None: ...


_sockets: set[Closable] = set()
_draining = False


def draining() -> bool:
    """Whether this process is stopping (`/ready` answers 503 from the first moment)."""
    return _draining


def socket_opened(socket: Closable) -> None:
    """An accepted socket, to be closed with 1012 by a drain."""
    _sockets.add(socket)


def socket_closed(socket: Closable) -> None:
    _sockets.discard(socket)


async def process_started() -> None:
    """Take the lease at once (the heartbeat would otherwise wait for a first socket),
    so that the executions of this process are known to be its own if it dies."""
    try:
        await heartbeat.ensure_running()
    except DEPENDENCY_ERRORS:
        logger.warning("first heartbeat failed; the loop retries", exc_info=True)


def reconnect_hint_ms(window: float, count: int) -> int:
    """The `server.restart` hint of one of `count` sockets closed over `window` seconds: a
    delay drawn within the time between two closes (at most HINT_MAX_S), so that clients
    that honour it come back as evenly spread as the closes, without their own backoff."""
    spacing = min(window / count, HINT_MAX_S) if count else 0.0
    return int(random.uniform(0.0, spacing) * 1000)


def drain_budget() -> tuple[float, float]:
    """The seconds a drain spreads its closes over (SHUTDOWN_DRAIN_WINDOW) and those it gives
    work in flight, both within SHUTDOWN_TIMEOUT less the reserve for the last steps."""
    work = max(0.0, runtime_settings.SHUTDOWN_TIMEOUT.total_seconds() - RESERVE_S)
    return min(runtime_settings.SHUTDOWN_DRAIN_WINDOW.total_seconds(), work), work


def closes_until(*, begun: float, window: float, deadline: float) -> float:
    """When the closes must be over: the window, then half of what is left until the deadline
    (a loop too busy for the schedule still starts every close); the rest is for work in flight."""
    end = min(begun + window, deadline)
    return end + CLOSE_SHARE * max(0.0, deadline - end)


async def sockets_close(*, window: float, until: float) -> tuple[int, int]:
    """Close every open socket with 1012, spread evenly over `window` seconds, each after a
    `server.restart` frame with its reconnect hint; none started, and none waited for, past
    `until` (a `time.monotonic()`). Returns (closes started, closes left unfinished)."""
    sockets = list(_sockets)
    random.shuffle(sockets)
    started = time.monotonic()
    closing = []
    for index, socket in enumerate(sockets):
        due = started + window * index / len(sockets)
        if due - time.monotonic() > STEP_S:
            await asyncio.sleep(due - time.monotonic())
        elif index and not index % CLOSES_PER_TURN:
            # Behind the schedule: the closes started so far run before the next ones start,
            # so that the time is looked at again after a bounded amount of work.
            await asyncio.sleep(0)
        if time.monotonic() >= until:
            # The loop fell this far behind: the rest stay open for the cut.
            break
        _sockets.discard(socket)
        # Each close a task of its own: awaited one after another, a busy process's closes
        # fell behind the schedule (1,000 over 14.7 s instead of 5 on a loaded machine).
        closing.append(background(_restart(socket, reconnect_hint_ms(window, len(sockets)))))
    pending: set[asyncio.Task] = set()
    if closing:
        # Bounded: waited for without limit, 10,000 closes on a saturated loop took 26 s of
        # a 25 s SHUTDOWN_TIMEOUT (bench/README.md).
        _, pending = await asyncio.wait(closing, timeout=max(0.0, until - time.monotonic()))
    for task in pending:
        task.cancel()
    return len(closing), len(pending) + len(sockets) - len(closing)


async def _restart(socket: Closable, reconnect_after_ms: int) -> None:
    try:
        await socket.restart(reconnect_after_ms=reconnect_after_ms)
    except Exception:  # noqa: BLE001 - one socket's failure must not stop the drain
        logger.warning("could not close a socket with 1012", exc_info=True)


async def _until(check: Callable[[], bool], deadline: float) -> bool:
    while not check():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def drain(
    *, stop_accepting: Callable[[], Awaitable[Any]], in_flight: Callable[[], int] = lambda: 0,
    cut: Callable[[], int] = lambda: 0,
) -> None:
    """Drain this process (see the module's docstring); returns when it may exit.

    `stop_accepting` stops the server's listeners; `in_flight` counts the server's
    requests and sockets not yet finished (waited for, within the timeout); `cut` ends, at
    the transport, the sockets still open when the closes' time is over (how many)."""
    global _draining
    if _draining:
        return
    _draining = True
    heartbeat.sweeps_stop()
    begun = time.monotonic()
    timeout = runtime_settings.SHUTDOWN_TIMEOUT.total_seconds()
    window, work = drain_budget()
    deadline = begun + work
    logger.info("draining: %d sockets over %.1f s, work in flight until %.1f s", len(_sockets), window, timeout)
    try:
        await stop_accepting()
    except Exception:  # noqa: BLE001 - a listener that will not stop must not stop the drain
        logger.exception("could not stop listening")
    try:
        await _records_leave()
    except Exception:  # noqa: BLE001 - whatever failed, every socket must still get its 1012
        logger.exception("could not remove this process's records early; removed at the end")
    until = closes_until(begun=time.monotonic(), window=window, deadline=deadline)
    closed, unfinished = await sockets_close(window=window, until=until)
    # Peers answer their close within autobahn's close handshake (1 s) or are closed by it;
    # the sockets still open at `until` (a peer that reads nothing, a close never started)
    # are cut.
    await _until(lambda: not in_flight(), until)
    cut_open = 0
    try:
        cut_open = cut()
    except Exception:  # noqa: BLE001 - what is not cut now is cut as the process exits
        logger.exception("could not cut the sockets still open")
    if unfinished or cut_open:
        logger.warning("draining: %d closes unfinished after %.1f s; %d sockets cut", unfinished,
                       time.monotonic() - begun, cut_open)
    if not await _until(lambda: not in_flight(), deadline):
        logger.warning("draining: %d requests or sockets still open at the deadline", in_flight())
    # Agent answers may finish while the executions do; past the deadline they end as
    # `interrupted` (their terminal event recorded), the executions are handed over.
    loop = asyncio.get_running_loop()
    answers_done = asyncio.ensure_future(
        _until(lambda: not any(run.loop is loop for run in agents.answers_running()), deadline)
    )
    handed_over = await runner.executions_hand_over(timeout=deadline - time.monotonic())
    await answers_done
    interrupted = await agents.agent_answers_interrupt_local(timeout=RESERVE_S / 2)
    await _stop_loops()
    try:
        records = await database_sync_to_async(server_leave)()
    except DEPENDENCY_ERRORS:
        records = -1
        logger.warning("could not remove this process's records; the others sweep them", exc_info=True)
    logger.info(
        "drained in %.1f s: %d sockets closed with 1012 (%d cut), %d executions handed over, %d answers interrupted, "
        "%d connection records removed", time.monotonic() - begun, closed, cut_open, handed_over, interrupted, records,
    )


async def _records_leave() -> None:
    """The records of every socket of this process go before the first socket closes: its
    client may be back on another process before a close's own write (batched every
    WS_CONNECTION_FLUSH_INTERVAL) would have removed it, and be refused with 4429 by its
    own ghost. Pending writes are applied first, so no later flush writes a record back.
    With Redis, the process leaves the socket counts' list of live processes too, for the
    same reason (its count of a user is written only as each close arrives). Each wait is
    bounded: a database that does not answer must not keep a single socket from its 1012."""
    try:
        await asyncio.wait_for(registry().leave(), RESERVE_S / 2)
    except (*DEPENDENCY_ERRORS, asyncio.TimeoutError):
        logger.warning("could not remove this process's records early; removed at the end", exc_info=True)
    counts = socket_counts()
    if counts is not None:
        try:
            await asyncio.wait_for(counts.leave(), RESERVE_S / 2)
        except (*DEPENDENCY_ERRORS, asyncio.TimeoutError):
            logger.warning("could not leave the socket counts early; the others drop them when stale", exc_info=True)


async def _stop_loops() -> None:
    """The loops of this process, each stopped and waited for (a bounded wait each)."""
    await tail().close()
    await heartbeat.stop()
    await registry().close()
    left = await asyncio.to_thread(runner.background_loop_stop)
    if left:
        logger.error("%d tasks of the private execution loop did not end when cancelled", left)
