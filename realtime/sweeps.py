"""The runtime's clean-ups, listed once: run by every serving process's heartbeat and by
`manage.py runtime_sweep` (cron)."""

from __future__ import annotations

from dataclasses import dataclass

from accounts.tokens import token_ledger_prune
from core.events import log_prune, log_size
from core.metrics import EVENT_LOG_PRUNED, EVENT_LOG_ROWS
from realtime.presence import connections_sweep, servers_dead
from sessions_runtime.answers import agent_answers_sweep
from sessions_runtime.runner import executions_sweep
from sessions_runtime.services import sessions_expire_due
from sessions_runtime.submission import idempotency_records_prune


@dataclass(frozen=True, slots=True)
class SweepReport:
    connections: int
    requeued: int
    failed: int
    redispatched: int
    expired: int = 0
    idempotency_pruned: int = 0
    tokens_pruned: int = 0
    events_pruned: int = 0
    answers_interrupted: int = 0


def dead_servers_sweep(*, orphans: bool = False) -> SweepReport:
    """What dead server processes left (run at every heartbeat, SERVER_HEARTBEAT_INTERVAL;
    `orphans`: also records of processes never heard of, in the periodic sweep):
    their running executions run again at once, their agent answers (and any whose lease
    ran out) fail as `interrupted`, their connection records go; and the executions whose
    own heartbeat stopped, or that wait unclaimed, are dispatched again. The executions
    first, while the dead processes' rows still name them."""
    dead = servers_dead()
    executions = executions_sweep(dead_workers=dead)
    answers = agent_answers_sweep(dead=dead)
    connections = connections_sweep(dead=dead, orphans=orphans)
    return SweepReport(connections=connections, answers_interrupted=answers, **executions)


def runtime_sweep() -> SweepReport:
    """`dead_servers_sweep`, then sessions past an expiry (written down, audited, sockets
    closed), expired idempotency records, simplejwt's ledger rows of expired refresh
    tokens, and the session events no resume can ask for any more (the log's size is then
    in /metrics)."""
    dead = dead_servers_sweep(orphans=True)
    expired = sessions_expire_due()
    pruned = idempotency_records_prune()
    tokens = token_ledger_prune()
    events = log_prune()
    EVENT_LOG_PRUNED.inc(events)
    EVENT_LOG_ROWS.set(log_size())
    return SweepReport(
        connections=dead.connections, requeued=dead.requeued, failed=dead.failed, redispatched=dead.redispatched,
        answers_interrupted=dead.answers_interrupted, expired=expired, idempotency_pruned=pruned,
        tokens_pruned=tokens, events_pruned=events,
    )
