"""This process's lease (its heartbeat), and the sweeps: what dead processes left
(connection records, executions), executions whose runner stopped, sessions past an
expiry, expired idempotency records.

Every SERVER_HEARTBEAT_INTERVAL a serving process renews its lease (one small write) and
looks for processes whose lease ran out, so that a crash is noticed within seconds; the
other clean-ups run every RUNTIME_SWEEP_INTERVAL. Daphne has no ASGI lifespan: the loop is
started as daphne's reactor starts (`realtime.drain.process_started`, hooked by
`symphainy.serve`), or else with the first socket a process accepts; that first start also
sweeps, which is the "on startup" cleanup.
"""

from __future__ import annotations

import asyncio
import logging
import time

from channels.db import database_sync_to_async

from core.conf import runtime_settings
from core.exceptions import DEPENDENCY_ERRORS
from core.tasks import tasks_stop
from realtime.counts import socket_counts
from realtime.presence import server_heartbeat, socket_refusals_flush
from realtime.sweeps import dead_servers_sweep, runtime_sweep

logger = logging.getLogger(__name__)
_task: asyncio.Task | None = None
_last_full_sweep: float | None = None  # time.monotonic() of this process's last runtime_sweep
_sweeping = True  # off for good once the process drains (`sweeps_stop`)


def sweeps_stop() -> None:
    """A draining process takes on no work: its heartbeat goes on renewing its lease while
    the work in flight finishes, but no longer sweeps, so that an execution it hands over
    (or any other found waiting) is dispatched by another process, not back to itself."""
    global _sweeping
    _sweeping = False


def _beat_and_sweep() -> int:
    """Renew the lease, then sweep: what dead processes left, or everything when a full
    sweep is due. Returns how many connection records of dead processes went."""
    global _last_full_sweep
    server_heartbeat()
    if not _sweeping:
        return 0
    now = time.monotonic()
    if _last_full_sweep is None or now - _last_full_sweep >= runtime_settings.RUNTIME_SWEEP_INTERVAL.total_seconds():
        _last_full_sweep = now
        # Reads already treat a session past an expiry as expired; the sweep writes it
        # down, audits it and closes its sockets, without waiting for a cron job.
        report = runtime_sweep()
        socket_refusals_flush()
    else:
        report = dead_servers_sweep()
    return report.connections


async def _loop() -> None:
    task = asyncio.current_task()
    while True:
        # A cancel() some library swallowed during the last beat (redis-py can turn one
        # into a connection error, which the beat takes for an outage) still ends the loop:
        # the task keeps counting it until it is uncancelled.
        if task is not None and task.cancelling():
            raise asyncio.CancelledError
        await asyncio.sleep(runtime_settings.SERVER_HEARTBEAT_INTERVAL.total_seconds())
        await _beat_counts()  # first: bounded by Redis's short timeout, whatever the database does
        try:
            swept = await database_sync_to_async(_beat_and_sweep)()
            if swept:
                logger.info("swept %d connection records of dead server processes", swept)
        except DEPENDENCY_ERRORS:
            logger.warning("heartbeat failed; will retry", exc_info=True)
        except Exception:  # noqa: BLE001 - one bad sweep must not stop the heartbeat for good
            logger.exception("heartbeat sweep failed; will retry")


async def _beat_counts() -> None:
    """The same sign of life where the per-user socket counts are (Redis), apart from the
    database's: either can be down while the other answers."""
    counts = socket_counts()
    if counts is None:
        return
    try:
        await counts.beat()
    except DEPENDENCY_ERRORS:
        pass  # said once by the counts; the next beat tries again


async def ensure_running() -> None:
    """Start the heartbeat loop on this event loop unless it runs already."""
    global _task
    loop = asyncio.get_running_loop()
    if _task is not None and not _task.done() and _task.get_loop() is loop:
        return
    _task = loop.create_task(_loop())
    await database_sync_to_async(_beat_and_sweep)()


async def stop(*, timeout: float = 5.0) -> None:
    """Stop this event loop's heartbeat loop and wait (at most `timeout`) for it to end;
    then leave the socket counts' list of live processes, so that the others stop counting
    this process's sockets against the per-user cap at once (a drain's last steps)."""
    global _task
    task = _task
    if task is None or task.get_loop() is not asyncio.get_running_loop():
        return
    _task = None
    if await tasks_stop([task], timeout=timeout):
        logger.error("the heartbeat loop did not end when cancelled")
    counts = socket_counts()
    if counts is not None:
        try:
            await asyncio.wait_for(counts.leave(), timeout)
        except (*DEPENDENCY_ERRORS, asyncio.TimeoutError):
            logger.warning("could not leave the socket counts; the others drop them when this process is stale")
