"""The Channels worker that runs executions when EXECUTION_RUNNER=worker:

    manage.py runworker symphainy.executions

Each message starts one execution as a task, so one worker runs many at once; a worker
that dies leaves its executions `running` with a stale heartbeat, and the sweep hands them
to another runner.
"""

from __future__ import annotations

import uuid
from typing import Any

from channels.consumer import AsyncConsumer

from core.tasks import background
from sessions_runtime.runner import execution_run


class ExecutionWorkerConsumer(AsyncConsumer):
    async def execution_run(self, message: dict[str, Any]) -> None:
        background(execution_run(uuid.UUID(message["execution_id"])))
