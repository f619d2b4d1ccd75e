"""The execution worker as a real process (`manage.py runworker symphainy.executions`):
killed mid-execution, its execution is picked up by the sweep and finished by a new worker.

Needs PostgreSQL and Redis (a channel layer that crosses processes): it runs on the
services run, where SYMPHAINY_REQUIRE_SERVICES=1 fails the run rather than skip it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from core.caller import Caller
from sessions_runtime.models import Execution, ExecutionStatus
from sessions_runtime.runner import executions_sweep
from sessions_runtime.submission import intent_submit
from tests import factories
from tests.conftest import services_server_marks
from tests.live import ROOT, child_env, process_stop
from tests.waiting import wait_until

pytestmark = services_server_marks()
STALE_AFTER_S = 2


def start_worker(log_path: Path) -> subprocess.Popen:
    env = child_env(EXECUTION_RUNNER="worker", EXECUTION_STALE_AFTER_SECONDS=str(STALE_AFTER_S), DATABASE_CONN_MAX_AGE="0")
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "manage.py", "runworker", "symphainy.executions"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )


def wait_for(check, timeout: float, what: str, log_path: Path):
    return wait_until(check, timeout=timeout, message=lambda: f"{what}; worker log:\n{log_path.read_text(errors='replace')}")


def test_a_worker_killed_mid_execution_is_recovered_by_the_sweep(settings, tmp_path):
    settings.SYMPHAINY = {
        **settings.SYMPHAINY, "EXECUTION_RUNNER": "worker", "EXECUTION_STALE_AFTER": timedelta(seconds=STALE_AFTER_S),
    }
    log_path = tmp_path / "worker.log"
    user = factories.make_user()
    session = factories.make_session(user)
    items = list(range(12)) + [{"fail": True}]
    first_worker = start_worker(log_path)
    second_worker = None
    try:
        submission = intent_submit(
            caller=Caller(user_id=user.pk, tenant_id=session.tenant_id, role="member", permissions=("read", "write")),
            session_id=session.pk, intent_type="batch", parameters={"items": items, "delay_s": 0.25},
        )
        execution_id = submission.response["execution_id"]
        running = wait_for(
            lambda: Execution.objects.filter(pk=execution_id, status="running", progress__processed__gte=2).first(),
            30, "the first worker to be running the batch", log_path,
        )
        first_name = running.worker
        assert running.attempts == 1 and first_name
        # While its worker is alive and beating, the sweep leaves it alone.
        assert executions_sweep()["requeued"] == 0

        process_stop(first_worker, signal.SIGKILL)
        assert first_worker.returncode == -signal.SIGKILL
        lost = Execution.objects.get(pk=execution_id)
        assert lost.status == ExecutionStatus.RUNNING and lost.progress["processed"] < len(items)
        # The thing tested: time passing until the dead worker's heartbeat is stale, and no
        # one running the execution meanwhile. The rule's window, and half a second.
        time.sleep(STALE_AFTER_S + 0.5)
        assert Execution.objects.get(pk=execution_id).progress == lost.progress  # nobody is running it

        assert executions_sweep() == {"requeued": 1, "failed": 0, "redispatched": 0}
        assert Execution.objects.get(pk=execution_id).status == ExecutionStatus.CREATED

        second_worker = start_worker(log_path)
        done = wait_for(
            lambda: Execution.objects.filter(pk=execution_id, status__in=["completed", "failed", "cancelled"]).first(),
            60, "the new worker to finish the batch", log_path,
        )
        assert done.status == ExecutionStatus.COMPLETED, done.error
        assert done.attempts == 2 and done.worker and done.worker != first_name
        assert done.result == {"processed": 13, "succeeded": 12, "failed": 1}
        assert done.progress == {"total": 13, "processed": 13, "succeeded": 12, "failed": 1}
    finally:
        process_stop(first_worker, signal.SIGKILL)
        if second_worker is not None:
            process_stop(second_worker)
