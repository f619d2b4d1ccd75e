"""Bounds on what one user can start: intent and session-creation rates, executions at
once, batch sizes; and work whose session ended stops."""

from __future__ import annotations

import pytest

from sessions_runtime.executions import execution_claim
from sessions_runtime.models import Execution, ExecutionStatus
from tests.factories import as_user
from tests.sessions_runtime.test_executions import finished, submit
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
SLOW_BATCH = {"items": list(range(200)), "delay_s": 0.2}


@pytest.fixture(autouse=True)
def _no_execution_outlives_its_test():
    """Executions run on the serving loop's thread: they finish inside the test that
    started them, or they would reach the database after its end."""
    yield
    wait_until(lambda: not Execution.objects.filter(status__in=["created", "running"]).exists(),
               timeout=30, message="executions to finish")


def _limit(settings, **values):
    settings.SYMPHAINY = {**settings.SYMPHAINY, **values}


def test_intent_submission_is_rate_limited_per_user_with_retry_after(settings):
    _limit(settings, INTENT_SUBMIT_RATE="2/min")
    api, body, _ = as_user()
    statuses = [submit(api, body, "echo", {"n": n}).status_code for n in range(3)]
    assert statuses == [202, 202, 429]
    refused = submit(api, body, "echo", {"n": 9})
    assert refused.json()["error"] == "rate_limited" and 0 < int(refused["Retry-After"]) <= 60
    # Another user has a budget of their own.
    other_api, other_body, _ = as_user()
    assert submit(other_api, other_body, "echo", {}).status_code == 202


def test_session_creation_is_rate_limited_per_user(settings):
    _limit(settings, SESSION_CREATE_RATE="2/min")
    api, _, _ = as_user()
    statuses = [api.post("/api/session/create", {}, format="json").status_code for _ in range(3)]
    assert statuses == [201, 201, 429]


def test_executions_running_at_once_are_bounded_per_user(settings):
    _limit(settings, MAX_RUNNING_EXECUTIONS_PER_USER=1)
    api, body, _ = as_user()
    first = submit(api, body, "batch", SLOW_BATCH)
    assert first.status_code == 202
    second = submit(api, body, "batch", SLOW_BATCH)
    assert second.status_code == 429 and int(second["Retry-After"]) > 0
    assert second.json()["details"] == {"limit": 1}
    api.post(f"/api/execution/{first.json()['execution_id']}/cancel")
    finished(first.json()["execution_id"])
    assert submit(api, body, "echo", {}).status_code == 202


def test_a_running_execution_stops_when_its_session_ends():
    api, body, _ = as_user()
    accepted = submit(api, body, "batch", SLOW_BATCH).json()
    wait_until(lambda: Execution.objects.filter(pk=accepted["execution_id"], status="running").exists(), message="running")
    assert api.delete(f"/api/session/{body['session_id']}").status_code == 204
    execution = finished(accepted["execution_id"])
    assert execution.status == ExecutionStatus.CANCELLED and execution.progress["processed"] < 200


def test_an_execution_whose_session_ended_never_starts(settings):
    _limit(settings, EXECUTION_RUNNER="worker")  # recorded and sent to a worker that is not there
    api, body, _ = as_user()
    accepted = submit(api, body, "echo", {}).json()
    assert api.delete(f"/api/session/{body['session_id']}").status_code == 204
    assert execution_claim(execution_id=accepted["execution_id"], worker="test") is None
    assert Execution.objects.get(pk=accepted["execution_id"]).status == ExecutionStatus.CANCELLED


def test_batch_accepts_at_most_a_thousand_items():
    api, body, _ = as_user()
    assert submit(api, body, "batch", {"items": [0] * 1001}).status_code == 400
    accepted = submit(api, body, "batch", {"items": [0] * 1000, "delay_s": 0.01})
    assert accepted.status_code == 202
    api.post(f"/api/execution/{accepted.json()['execution_id']}/cancel")
