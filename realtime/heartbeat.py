"""This process's heartbeat, and the sweeps: connection records of dead processes,
executions whose runner stopped, sessions past an expiry, expired idempotency records.

Daphne has no startup hook (no ASGI lifespan), so the loop starts with the first socket a
process accepts: that first start also sweeps, which is the "on startup" cleanup.
"""

from __future__ import annotations

import asyncio
import logging

from channels.db import database_sync_to_async

from core.conf import runtime_settings
from core.exceptions import DEPENDENCY_ERRORS
from core.tasks import tasks_stop
from realtime.presence import server_heartbeat, socket_counts, socket_refusals_flush
from realtime.sweeps import runtime_sweep

logger = logging.getLogger(__name__)
_task: asyncio.Task | None = None


def _beat_and_sweep() -> int:
    server_heartbeat()
    # Reads already treat a session past an expiry as expired; the sweep writes it down,
    # audits it and closes its sockets, without waiting for a cron job.
    report = runtime_sweep()
    socket_refusals_flush()
    return report.connections


async def _loop() -> None:
    while True:
        await asyncio.sleep(runtime_settings.SERVER_HEARTBEAT_INTERVAL.total_seconds())
        try:
            swept = await database_sync_to_async(_beat_and_sweep)()
            if swept:
                logger.info("swept %d connection records of dead server processes", swept)
        except DEPENDENCY_ERRORS:
            logger.warning("heartbeat failed; will retry", exc_info=True)
        except Exception:  # noqa: BLE001 - one bad sweep must not stop the heartbeat for good
            logger.exception("heartbeat sweep failed; will retry")
        await _beat_counts()


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
