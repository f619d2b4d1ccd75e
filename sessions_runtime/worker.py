"""The Channels worker that runs executions when EXECUTION_RUNNER=worker:

    manage.py runworker symphainy.executions

Each message starts one execution as a task, so one worker runs many at once; a worker
that dies leaves its executions `running` with a stale heartbeat, and the sweep hands them
to another runner.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from channels.consumer import AsyncConsumer

from sessions_runtime.executions import execution_run

_running: set[asyncio.Task] = set()


class ExecutionWorkerConsumer(AsyncConsumer):
    async def execution_run(self, message: dict[str, Any]) -> None:
        task = asyncio.create_task(execution_run(uuid.UUID(message["execution_id"])))
        _running.add(task)
        task.add_done_callback(_running.discard)
