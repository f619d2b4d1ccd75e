"""The runtime's clean-ups, listed once: run by every serving process's heartbeat and by
`manage.py runtime_sweep` (cron)."""

from __future__ import annotations

from dataclasses import dataclass

from realtime.services import connections_sweep
from sessions_runtime.runner import executions_sweep
from sessions_runtime.services import sessions_expire_due
from sessions_runtime.submission import idempotency_records_prune


@dataclass(frozen=True, slots=True)
class SweepReport:
    connections: int
    requeued: int
    failed: int
    redispatched: int
    expired: int
    idempotency_pruned: int


def runtime_sweep() -> SweepReport:
    """Connection records of dead server processes, executions whose runner stopped,
    sessions past an expiry (written down, audited, sockets closed), expired idempotency
    records."""
    connections = connections_sweep()
    executions = executions_sweep()
    expired = sessions_expire_due()
    pruned = idempotency_records_prune()
    return SweepReport(connections=connections, expired=expired, idempotency_pruned=pruned, **executions)
