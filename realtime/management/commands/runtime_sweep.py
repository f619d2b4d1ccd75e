"""`manage.py runtime_sweep`: the clean-ups a serving process's heartbeat does, run once
(from cron, or after every server died): connection records of dead server processes,
executions whose runner stopped, sessions past an expiry, expired idempotency records and
simplejwt's ledger rows of expired refresh tokens."""

from __future__ import annotations

import asyncio
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from core.conf import runtime_settings
from realtime.sweeps import runtime_sweep
from sessions_runtime import runner


def _wait_for_local_executions(timeout: float) -> int:
    """With EXECUTION_RUNNER=asyncio the sweep starts requeued executions on this
    process's private loop (see runner._background_loop). Wait for them, so that the
    command does not exit under them; returns how many were still running at the timeout
    (the next sweep hands those to another runner)."""

    async def wait() -> int:
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        if not tasks:
            return 0
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        return len(pending)

    loop = runner._background_loop()
    return asyncio.run_coroutine_threadsafe(wait(), loop).result()


class Command(BaseCommand):
    help = (
        "Run the runtime's sweeps once and print what each did: connection records of dead server "
        "processes, executions whose runner stopped, sessions past an expiry. Safe to run from cron "
        "and next to running servers."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--wait",
            type=float,
            default=60.0,
            metavar="SECONDS",
            help="With EXECUTION_RUNNER=asyncio, requeued executions run in this process: wait this long "
            "for them before exiting (default 60).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        wait = options["wait"]
        if wait is None or wait < 0:
            raise CommandError("--wait must be zero or more seconds.")
        report = runtime_sweep()
        say = self.stdout.write if options["verbosity"] >= 1 else (lambda line: None)
        say(f"connections: removed {report.connections} record(s) of dead server processes")
        say(f"executions: requeued {report.requeued}, failed {report.failed}, redispatched {report.redispatched}")
        say(f"agent answers: failed {report.answers_interrupted} as interrupted (their process stopped)")
        say(f"sessions: expired {report.expired}")
        say(f"idempotency records: removed {report.idempotency_pruned} past their retention")
        say(f"refresh token ledger: removed {report.tokens_pruned} expired token(s) and their blacklist rows")
        say(f"session events: removed {report.events_pruned} past their retention")
        dispatched = report.requeued + report.redispatched
        if dispatched and runtime_settings.EXECUTION_RUNNER != "worker":
            say(f"waiting up to {wait:g}s for {dispatched} execution(s) started in this process")
            left = _wait_for_local_executions(wait)
            if left:
                say(f"{left} execution(s) still running; the next sweep picks them up")
