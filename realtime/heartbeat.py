"""This process's heartbeat, and the sweeps: connection records of dead processes,
executions whose runner stopped, sessions past an expiry, expired idempotency records.

Daphne has no startup hook (no ASGI lifespan), so the loop starts with the first socket a
process accepts: that first start also sweeps, which is the "on startup" cleanup.
"""

from __future__ import annotations

import asyncio
import logging

from channels.db import database_sync_to_async
from django.db import DatabaseError

from realtime.services import connections_sweep, server_heartbeat, socket_refusals_flush

logger = logging.getLogger(__name__)
HEARTBEAT_EVERY_S = 30.0
_task: asyncio.Task | None = None


def _beat_and_sweep() -> int:
    from sessions_runtime.executions import executions_sweep, idempotency_records_prune
    from sessions_runtime.services import sessions_expire_due

    server_heartbeat()
    swept = connections_sweep()
    executions_sweep()
    # Reads already treat a session past an expiry as expired; this writes it down,
    # audits it and closes its sockets, without waiting for a cron job.
    sessions_expire_due()
    idempotency_records_prune()
    socket_refusals_flush()
    return swept


async def _loop() -> None:
    while True:
        await asyncio.sleep(HEARTBEAT_EVERY_S)
        try:
            swept = await database_sync_to_async(_beat_and_sweep)()
            if swept:
                logger.info("swept %d connection records of dead server processes", swept)
        except DatabaseError:
            logger.warning("heartbeat failed; will retry", exc_info=True)


async def ensure_running() -> None:
    """Start the heartbeat loop on this event loop unless it runs already."""
    global _task
    loop = asyncio.get_running_loop()
    if _task is not None and not _task.done() and _task.get_loop() is loop:
        return
    _task = loop.create_task(_loop())
    await database_sync_to_async(_beat_and_sweep)()
