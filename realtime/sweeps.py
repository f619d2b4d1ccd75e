"""The runtime's clean-ups, listed once: run by every serving process's heartbeat and by
`manage.py runtime_sweep` (cron)."""

from __future__ import annotations

from dataclasses import dataclass

from accounts.tokens import token_ledger_prune
from core.events import log_prune, log_size
from core.metrics import EVENT_LOG_PRUNED, EVENT_LOG_ROWS
from realtime.presence import connections_sweep
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
    tokens_pruned: int
    events_pruned: int = 0


def runtime_sweep() -> SweepReport:
    """Connection records of dead server processes, executions whose runner stopped,
    sessions past an expiry (written down, audited, sockets closed), expired idempotency
    records, simplejwt's ledger rows of expired refresh tokens, and the session events no
    resume can ask for any more (the log's size is then in /metrics)."""
    connections = connections_sweep()
    executions = executions_sweep()
    expired = sessions_expire_due()
    pruned = idempotency_records_prune()
    tokens = token_ledger_prune()
    events = log_prune()
    EVENT_LOG_PRUNED.inc(events)
    EVENT_LOG_ROWS.set(log_size())
    return SweepReport(
        connections=connections, expired=expired, idempotency_pruned=pruned, tokens_pruned=tokens,
        events_pruned=events, **executions
    )
