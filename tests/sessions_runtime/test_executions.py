"""Executions to every final state through the REST API, their events (after commit only),
the access rule on status and cancel, and the sweep that picks up what a dead runner left.

Transactional tests: executions run on another thread with its own database connection,
so what the test writes must be committed for the runner to see it.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Membership, Role
from core.caller import Caller
from core.conf import runtime_settings
from core.models import AuditEvent, SessionEvent
from sessions_runtime.models import Execution, ExecutionStatus, Intent, RuntimeSession
from sessions_runtime.executions import execution_finish
from sessions_runtime.runner import executions_sweep
from sessions_runtime.submission import intent_submit
from tests import factories
from tests.factories import as_user
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
STATUS_FIELDS = {
    "execution_id", "intent_id", "intent_type", "session_id", "status", "progress", "result", "error",
    "created_at", "updated_at",
}


async def explode(ctx) -> None:
    """A handler that fails after reporting some progress."""
    await ctx.progress(total=2, processed=1, succeeded=0, failed=1)
    raise RuntimeError("boom: the handler gave up")


@pytest.fixture
def exploding_handler(settings):
    handlers = {**runtime_settings.INTENT_HANDLERS, "explode": f"{__name__}.explode"}
    settings.SYMPHAINY = {**settings.SYMPHAINY, "INTENT_HANDLERS": handlers}


@pytest.fixture
def sent() -> object:
    """The session event log, read back by `execution_events` (what committed, in order)."""
    return object()


def execution_events(sent, session_id, execution_id=None) -> list[str]:
    rows = SessionEvent.objects.filter(session_id=session_id, kind__startswith="execution.").order_by("seq")
    return [
        row.kind for row in rows
        if execution_id is None or row.data["execution_id"] == str(execution_id)
    ]


def finished(execution_id, timeout: float = 10) -> Execution:
    return wait_until(
        lambda: Execution.objects.filter(pk=execution_id, status__in=["completed", "failed", "cancelled"]).first(),
        timeout=timeout, interval=0.02, message=f"execution {execution_id} to finish",
    )


def submit(api, body, intent_type, parameters, **extra):
    return api.post(
        "/api/intent/submit",
        {"session_id": body["session_id"], "intent_type": intent_type, "parameters": parameters, **extra},
        format="json",
    )


# --- To each final state -----------------------------------------------------------------
def test_echo_completes_with_its_parameters_as_result(sent):
    api, body, user = as_user()
    parameters = {"a": 1, "nested": {"b": [1, 2, None]}, "text": "héllo"}
    response = submit(api, body, "echo", parameters)
    assert response.status_code == 202, response.content
    accepted = response.json()
    assert set(accepted) == {"execution_id", "intent_id", "status", "created_at"} and accepted["status"] == "created"
    execution = finished(accepted["execution_id"])
    assert execution.status == ExecutionStatus.COMPLETED
    status = api.get(f"/api/execution/{accepted['execution_id']}/status").json()
    assert set(status) == STATUS_FIELDS
    assert status["status"] == "completed" and status["result"] == {"echo": parameters} and status["error"] is None
    assert status["progress"] == {"total": 1, "processed": 1, "succeeded": 1, "failed": 0}
    assert status["intent_id"] == accepted["intent_id"] and status["session_id"] == body["session_id"]
    assert Intent.objects.get(pk=accepted["intent_id"]).parameters == parameters
    wait_until(lambda: "execution.completed" in execution_events(sent, body["session_id"]), message="completed event")
    assert execution_events(sent, body["session_id"]) == [
        "execution.created", "execution.started", "execution.progress", "execution.completed",
    ]
    audit = AuditEvent.objects.get(kind=AuditEvent.Kind.EXECUTION_FINISHED, session_id=body["session_id"])
    assert audit.data["status"] == "completed" and audit.user_id == user.pk


def test_a_batch_counts_its_progress():
    api, body, _ = as_user()
    items = [1, {"fail": True}, "x", {"fail": True}, {"fail": False}, None]
    response = submit(api, body, "batch", {"items": items, "delay_s": 0})
    execution = finished(response.json()["execution_id"])
    assert execution.status == ExecutionStatus.COMPLETED
    assert execution.progress == {"total": 6, "processed": 6, "succeeded": 4, "failed": 2}
    assert execution.result == {"processed": 6, "succeeded": 4, "failed": 2}
    assert execution.attempts == 1 and execution.started_at and execution.finished_at


def test_an_empty_batch_completes_with_zero_counts():
    api, body, _ = as_user()
    execution = finished(submit(api, body, "batch", {"items": []}).json()["execution_id"])
    assert execution.status == ExecutionStatus.COMPLETED
    assert execution.progress == {"total": 0, "processed": 0, "succeeded": 0, "failed": 0}


def test_cancel_a_running_batch_then_cancel_again_is_409(sent):
    api, body, _ = as_user()
    execution_id = submit(api, body, "batch", {"items": list(range(100)), "delay_s": 0.02}).json()["execution_id"]
    wait_until(
        lambda: Execution.objects.filter(pk=execution_id, status="running", progress__processed__gte=2).exists(),
        message="the batch to be running",
    )
    response = api.post(f"/api/execution/{execution_id}/cancel")
    assert response.status_code == 202 and set(response.json()) == STATUS_FIELDS
    execution = finished(execution_id)
    assert execution.status == ExecutionStatus.CANCELLED
    assert 2 <= execution.progress["processed"] < 100 and execution.result is None
    again = api.post(f"/api/execution/{execution_id}/cancel")
    assert again.status_code == 409 and again.json()["error"] == "execution_finished"
    assert api.get(f"/api/execution/{execution_id}/status").json()["status"] == "cancelled"
    wait_until(lambda: "execution.cancelled" in execution_events(sent, body["session_id"]), message="cancelled event")
    assert "execution.completed" not in execution_events(sent, body["session_id"])


def test_cancel_a_finished_execution_is_409_and_changes_nothing():
    api, body, _ = as_user()
    execution_id = submit(api, body, "echo", {"x": 1}).json()["execution_id"]
    assert finished(execution_id).status == ExecutionStatus.COMPLETED
    response = api.post(f"/api/execution/{execution_id}/cancel")
    assert response.status_code == 409 and response.json()["error"] == "execution_finished"
    execution = Execution.objects.get(pk=execution_id)
    assert execution.status == ExecutionStatus.COMPLETED and not execution.cancel_requested


def test_cancel_before_any_runner_claimed_it_cancels_at_once(settings, sent):
    # No worker listens: the execution stays `created` until cancelled.
    settings.SYMPHAINY = {**settings.SYMPHAINY, "EXECUTION_RUNNER": "worker"}
    api, body, _ = as_user()
    execution_id = submit(api, body, "echo", {}).json()["execution_id"]
    assert Execution.objects.get(pk=execution_id).status == ExecutionStatus.CREATED
    response = api.post(f"/api/execution/{execution_id}/cancel")
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    assert Execution.objects.get(pk=execution_id).finished_at is not None
    assert execution_events(sent, body["session_id"]) == ["execution.created", "execution.cancelled"]


def test_a_handler_that_raises_fails_the_execution_without_its_text(exploding_handler, sent, caplog):
    """The exception's text stays in the server log; clients get its type and a generic message."""
    api, body, _ = as_user()
    response = submit(api, body, "explode", {})
    assert response.status_code == 202, response.content
    execution = finished(response.json()["execution_id"])
    assert execution.status == ExecutionStatus.FAILED and execution.result is None
    assert execution.error == {"type": "RuntimeError", "message": "The intent handler failed."}
    assert execution.progress == {"total": 2, "processed": 1, "succeeded": 0, "failed": 1}
    status = api.get(f"/api/execution/{execution.pk}/status").json()
    assert status["status"] == "failed" and status["error"]["message"] == "The intent handler failed."
    wait_until(lambda: "execution.failed" in execution_events(sent, body["session_id"]), message="failed event")
    failed = [{"data": e.data} for e in SessionEvent.objects.filter(kind="execution.failed")]
    assert failed[0]["data"]["error"] == {"type": "RuntimeError", "message": "The intent handler failed."}
    assert "boom: the handler gave up" not in json.dumps(status) + json.dumps(failed)
    assert "boom: the handler gave up" in caplog.text
    assert AuditEvent.objects.get(kind=AuditEvent.Kind.EXECUTION_FINISHED).data["status"] == "failed"


# --- Refused submissions -----------------------------------------------------------------
def test_refused_submissions_create_nothing():
    tenant = factories.make_tenant()
    api, body, _ = as_user(tenant=tenant)
    viewer_api, viewer, _ = as_user(tenant=tenant, role=Role.VIEWER)
    _, colleague, _ = as_user(tenant=tenant)
    ended_id = api.post("/api/session/create", {}, format="json").json()["session_id"]
    api.delete(f"/api/session/{ended_id}")
    cases = [
        (submit(api, body, "no-such-intent", {}), 400, "invalid_request"),
        (submit(api, body, "batch", {"items": "not a list"}), 400, "invalid_request"),
        (submit(api, body, "batch", {"items": [], "delay_s": 99}), 400, "invalid_request"),
        (api.post("/api/intent/submit", {"intent_type": "echo"}, format="json"), 400, "invalid_request"),
        (submit(viewer_api, viewer, "echo", {}), 403, "permission_denied"),
        (submit(viewer_api, viewer, "no-such-intent", {}), 403, "permission_denied"),
        (submit(api, colleague, "echo", {}), 404, "not_found"),
        (submit(api, {"session_id": "not-a-uuid"}, "echo", {}), 404, "not_found"),
        (submit(api, {"session_id": ended_id}, "echo", {}), 409, "session_not_active"),
    ]
    for response, status, code in cases:
        assert (response.status_code, response.json()["error"]) == (status, code), response.content
    assert Execution.objects.count() == 0 and Intent.objects.count() == 0


# --- Access ------------------------------------------------------------------------------
def test_another_users_or_tenants_execution_is_404_for_status_and_cancel():
    tenant = factories.make_tenant()
    owner_api, owner, user = as_user(tenant=tenant)
    colleague_api, _, _ = as_user(tenant=tenant)
    stranger_api, _, _ = as_user()
    # The owner, acting in another tenant they also belong to.
    second = factories.make_tenant()
    Membership.objects.create(user=user, tenant=second, role=Role.OWNER)
    elsewhere = factories.bearer(APIClient(), factories.login(APIClient(), user, tenant_id=str(second.pk))["access_token"])
    execution_id = submit(owner_api, owner, "batch", {"items": list(range(50)), "delay_s": 0.02}).json()["execution_id"]
    bodies = set()
    for api in (colleague_api, stranger_api, elsewhere):
        for target in (execution_id, str(uuid.uuid4()), "not-a-uuid"):
            for response in (api.get(f"/api/execution/{target}/status"), api.post(f"/api/execution/{target}/cancel")):
                assert response.status_code == 404, response.content
                bodies.add(response.content)
    assert len(bodies) == 1
    execution = finished(execution_id)
    assert execution.status == ExecutionStatus.COMPLETED and not execution.cancel_requested
    assert owner_api.get(f"/api/execution/{execution_id}/status").status_code == 200


# --- Events after commit only ------------------------------------------------------------
class Rollback(Exception):
    pass


def test_events_are_recorded_with_the_change_and_a_rolled_back_submit_records_none(sent):
    user = factories.make_user()
    session = factories.make_session(user)
    caller = Caller(user_id=user.pk, tenant_id=session.tenant_id, role="member", permissions=("read", "write"))
    with pytest.raises(Rollback):
        with transaction.atomic():
            submission = intent_submit(caller=caller, session_id=session.pk, intent_type="echo", parameters={})
            assert Execution.objects.filter(pk=submission.response["execution_id"]).exists()
            raise Rollback()
    time.sleep(0.3)  # were anything dispatched, it would have run by now
    assert SessionEvent.objects.count() == 0 and Execution.objects.count() == 0 and Intent.objects.count() == 0

    with transaction.atomic():
        submission = intent_submit(caller=caller, session_id=session.pk, intent_type="echo", parameters={})
        # In the transaction, beside the execution it announces.
        assert execution_events(sent, session.pk) == ["execution.created"]
    execution = finished(submission.response["execution_id"])
    assert execution.status == ExecutionStatus.COMPLETED
    wait_until(lambda: "execution.completed" in execution_events(sent, session.pk), message="completed event")
    assert execution_events(sent, session.pk)[0] == "execution.created"


# --- The sweep ---------------------------------------------------------------------------
def make_execution(session: RuntimeSession, *, status: str, attempts: int, age: timedelta, **fields) -> Execution:
    """An execution as a runner left it, `age` since its heartbeat (and last update)."""
    at = timezone.now() - age
    intent = Intent.objects.create(
        session=session, user_id=session.user_id, tenant_id=session.tenant_id,
        intent_type="batch", parameters={"items": [1, 2, 3], "delay_s": 0},
    )
    return Execution.objects.create(
        intent=intent, session=session, user_id=session.user_id, tenant_id=session.tenant_id, intent_type="batch",
        status=status, attempts=attempts, worker="dead-host:1:abc" if status == "running" else "",
        heartbeat_at=at if status == "running" else None, updated_at=at, created_at=at,
        started_at=at if status == "running" else None, **fields,
    )


def test_the_sweep_reruns_lost_executions_and_fails_those_out_of_attempts(settings, sent):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "EXECUTION_STALE_AFTER": timedelta(seconds=30), "EXECUTION_MAX_ATTEMPTS": 3}
    session = factories.make_session(factories.make_user())
    long_ago = timedelta(minutes=5)
    lost = make_execution(session, status="running", attempts=1, age=long_ago, progress={"total": 3, "processed": 1, "succeeded": 1, "failed": 0})
    exhausted = make_execution(session, status="running", attempts=3, age=long_ago)
    alive = make_execution(session, status="running", attempts=1, age=timedelta(seconds=5))
    never_claimed = make_execution(session, status="created", attempts=0, age=long_ago)
    cancelled_early = make_execution(session, status="created", attempts=0, age=long_ago, cancel_requested=True)
    fresh = make_execution(session, status="created", attempts=0, age=timedelta(seconds=1))

    assert executions_sweep() == {"requeued": 1, "failed": 1, "redispatched": 1}

    rerun = finished(lost.pk)
    assert rerun.status == ExecutionStatus.COMPLETED and rerun.attempts == 2
    assert rerun.progress == {"total": 3, "processed": 3, "succeeded": 3, "failed": 0}
    assert rerun.worker != "dead-host:1:abc"
    failed = Execution.objects.get(pk=exhausted.pk)
    assert failed.status == ExecutionStatus.FAILED and failed.error["type"] == "WorkerLost" and failed.attempts == 3
    assert finished(never_claimed.pk).status == ExecutionStatus.COMPLETED
    assert Execution.objects.get(pk=alive.pk).status == ExecutionStatus.RUNNING
    assert Execution.objects.get(pk=alive.pk).attempts == 1
    assert Execution.objects.get(pk=cancelled_early.pk).status == ExecutionStatus.CREATED
    assert Execution.objects.get(pk=fresh.pk).status == ExecutionStatus.CREATED
    assert "execution.failed" in execution_events(sent, session.pk, exhausted.pk)
    # A second sweep finds nothing more to do.
    assert executions_sweep() == {"requeued": 0, "failed": 0, "redispatched": 0}


def test_a_finished_execution_is_timed_in_the_metrics():
    from core.metrics import EXECUTION_DURATION

    def count() -> float:
        for metric in EXECUTION_DURATION.collect():
            for sample in metric.samples:
                if sample.name.endswith("_count") and sample.labels == {"intent_type": "echo", "status": "completed"}:
                    return sample.value
        return 0.0

    before = count()
    api, body, _ = as_user()
    response = submit(api, body, "echo", {"x": 1})
    assert response.status_code == 202
    finished(response.json()["execution_id"])
    wait_until(lambda: count() == before + 1, message="the duration to be observed")


def test_a_tenant_admin_reads_members_executions_but_cancels_only_their_own():
    member_api, member, member_user = as_user()
    admin_api, admin, _ = as_user(tenant=member_user.memberships.get().tenant, role=Role.ADMIN)
    theirs = submit(member_api, member, "batch", {"items": list(range(100)), "delay_s": 0.2}).json()
    assert admin_api.get(f"/api/execution/{theirs['execution_id']}/status").status_code == 200
    refused = admin_api.post(f"/api/execution/{theirs['execution_id']}/cancel")
    assert refused.status_code == 403 and refused.json()["error"] == "permission_denied"
    assert not Execution.objects.get(pk=theirs["execution_id"]).cancel_requested
    own = submit(admin_api, admin, "batch", {"items": list(range(100)), "delay_s": 0.2}).json()
    assert admin_api.post(f"/api/execution/{own['execution_id']}/cancel").status_code == 202
    assert member_api.post(f"/api/execution/{theirs['execution_id']}/cancel").status_code == 202
    finished(theirs["execution_id"])
    finished(own["execution_id"])


# --- What the events carry -----------------------------------------------------------------
@pytest.mark.parametrize("size, carried", [(100, True), (20_000, False)])
def test_a_large_result_is_left_out_of_the_event_and_read_from_the_status(settings, size, carried):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "EVENT_RESULT_MAX_BYTES": 16 * 1024}
    user = factories.make_user()
    session = factories.make_session(user)
    execution = make_execution(session, status="running", attempts=1, age=timedelta(0))
    result = {"text": "r" * size}
    execution_finish(execution_id=execution.pk, status=ExecutionStatus.COMPLETED, result=result)
    event = SessionEvent.objects.get(session_id=session.pk, kind="execution.completed")
    assert set(event.data) >= STATUS_FIELDS
    if carried:
        assert event.data["result"] == result and "result_omitted" not in event.data
    else:
        assert event.data["result"] is None and event.data["result_omitted"] is True
    client = factories.bearer(APIClient(), factories.login(APIClient(), user)["access_token"])
    status = client.get(f"/api/execution/{execution.pk}/status")
    assert status.status_code == 200 and status.json()["result"] == result
