"""Idempotent intent submission: replay, reuse with another body (422), the first request
still in flight (409), the key's scope (tenant and user), and racing duplicates."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Membership, Role
from sessions_runtime import submission
from sessions_runtime.models import Execution, IdempotencyRecord, Intent
from tests import factories
from tests.factories import as_user

SUBMIT = "/api/intent/submit"


@pytest.fixture(autouse=True)
def _no_runner(settings):
    """Executions stay `created` (nobody listens on the worker channel), so a replayed
    answer can be compared with the first one field for field."""
    settings.SYMPHAINY = {**settings.SYMPHAINY, "EXECUTION_RUNNER": "worker"}


def post(api, body, parameters=None, *, key=None, header=None, intent_type="echo"):
    payload = {"session_id": body["session_id"], "intent_type": intent_type, "parameters": parameters or {"n": 1}}
    if key is not None:
        payload["idempotency_key"] = key
    extra = {"HTTP_IDEMPOTENCY_KEY": header} if header is not None else {}
    return api.post(SUBMIT, payload, format="json", **extra)


@pytest.mark.django_db
@pytest.mark.parametrize("form", ["header", "body"])
def test_a_replay_answers_the_first_response(form):
    api, body, _ = as_user()
    send = (lambda: post(api, body, header="key-1")) if form == "header" else (lambda: post(api, body, key="key-1"))
    first = send()
    assert first.status_code == 202 and "Idempotent-Replayed" not in first
    again = send()
    assert again.status_code == 202 and again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert Execution.objects.count() == 1 and Intent.objects.count() == 1 and IdempotencyRecord.objects.count() == 1


@pytest.mark.django_db
def test_header_and_body_name_the_same_key():
    api, body, _ = as_user()
    first = post(api, body, header="shared")
    assert post(api, body, key="shared").json()["execution_id"] == first.json()["execution_id"]
    assert post(api, body, key="shared", header="shared").json()["execution_id"] == first.json()["execution_id"]
    differ = post(api, body, key="one", header="other")
    assert differ.status_code == 400 and differ.json()["error"] == "invalid_request"
    assert Execution.objects.count() == 1


@pytest.mark.django_db
def test_the_same_key_with_another_body_is_422_and_creates_nothing():
    api, body, _ = as_user()
    first = post(api, body, {"n": 1}, header="k")
    for response in (
        post(api, body, {"n": 2}, header="k"),
        post(api, body, {"items": []}, header="k", intent_type="batch"),
        post(api, {"session_id": api.post("/api/session/create", {}, format="json").json()["session_id"]}, {"n": 1}, header="k"),
    ):
        assert response.status_code == 422, response.content
        assert response.json()["error"] == "idempotency_key_reused"
    assert Execution.objects.count() == 1
    assert post(api, body, {"n": 1}, header="k").json() == first.json()


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", "x" * 256])
def test_an_idempotency_key_of_the_wrong_length_is_400(key):
    api, body, _ = as_user()
    for response in (post(api, body, header=key), post(api, body, key=key)):
        assert response.status_code == 400, response.content
    assert Execution.objects.count() == 0


@pytest.mark.django_db
def test_the_key_is_scoped_to_tenant_and_user():
    tenant = factories.make_tenant()
    api, body, user = as_user(tenant=tenant)
    colleague_api, colleague, _ = as_user(tenant=tenant)
    mine = post(api, body, header="shared-key").json()
    theirs = post(colleague_api, colleague, header="shared-key")
    assert theirs.status_code == 202 and "Idempotent-Replayed" not in theirs
    assert theirs.json()["execution_id"] != mine["execution_id"]
    # The same user acting in another tenant has a key space of its own too.
    second = factories.make_tenant()
    Membership.objects.create(user=user, tenant=second, role=Role.MEMBER)
    login = factories.login(APIClient(), user, tenant_id=str(second.pk))
    elsewhere = post(factories.bearer(APIClient(), login["access_token"]), login, header="shared-key")
    assert elsewhere.status_code == 202 and elsewhere.json()["execution_id"] not in {mine["execution_id"], theirs.json()["execution_id"]}
    assert Execution.objects.count() == 3
    assert Execution.objects.get(pk=theirs.json()["execution_id"]).user_id != user.pk


@pytest.mark.django_db
def test_an_expired_key_may_be_used_again():
    api, body, _ = as_user()
    first = post(api, body, {"n": 1}, header="k").json()
    IdempotencyRecord.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    again = post(api, body, {"n": 2}, header="k")
    assert again.status_code == 202, again.content
    assert again.json()["execution_id"] != first["execution_id"]
    assert str(IdempotencyRecord.objects.get().execution_id) == again.json()["execution_id"]
    assert Execution.objects.count() == 2


def _in_thread(target, *args) -> threading.Thread:
    def run() -> None:
        try:
            target(*args)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.django_db(transaction=True)
def test_while_the_first_request_is_in_flight_a_second_is_409(monkeypatch):
    api, body, _ = as_user()
    entered, release = threading.Event(), threading.Event()
    original = submission._intent_create

    def slow_create(*args, **kwargs):
        entered.set()
        assert release.wait(10)
        return original(*args, **kwargs)

    monkeypatch.setattr(submission, "_intent_create", slow_create)
    results = {}
    first = _in_thread(lambda: results.setdefault("first", post(factories.bearer(APIClient(), body["access_token"]), body, header="k")))
    assert entered.wait(10)
    in_flight = post(api, body, header="k")
    assert in_flight.status_code == 409 and in_flight.json()["error"] == "idempotency_in_flight"
    assert Execution.objects.count() == 0
    release.set()
    first.join(20)
    assert results["first"].status_code == 202
    replay = post(api, body, header="k")
    assert replay.status_code == 202 and replay.json() == results["first"].json()
    assert Execution.objects.count() == 1


class NoLock:
    """A cache whose in-flight lock is always free."""

    def add(self, *args, **kwargs) -> bool:
        return True

    def delete(self, *args, **kwargs) -> None:
        return None


@pytest.mark.django_db
def test_the_in_flight_lock_is_held_for_idempotency_lock_ttl(monkeypatch, settings):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "IDEMPOTENCY_LOCK_TTL": timedelta(seconds=7)}
    timeouts = []

    class Spy(NoLock):
        def add(self, key, value, timeout=None) -> bool:
            timeouts.append(timeout)
            return True

    monkeypatch.setattr(submission, "cache", Spy())
    api, body, _ = as_user()
    assert post(api, body, header="k").status_code == 202
    assert timeouts == [7]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("lock", ["cache lock", "database constraint only"])
def test_racing_duplicates_make_exactly_one_execution(monkeypatch, lock):
    api, body, _ = as_user()
    if lock == "database constraint only":
        # Every racer passes the in-flight lock: the unique key on the record must hold.
        monkeypatch.setattr(submission, "cache", NoLock())
    racers, barrier, responses = 8, threading.Barrier(8), []

    def racer() -> None:
        client = factories.bearer(APIClient(), body["access_token"])
        barrier.wait(10)
        responses.append(post(client, body, {"same": "body"}, header="race"))

    threads = [_in_thread(racer) for _ in range(racers)]
    for thread in threads:
        thread.join(60)
    assert len(responses) == racers
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {202, 409}, [r.content for r in responses]
    accepted = {r.json()["execution_id"] for r in responses if r.status_code == 202}
    assert len(accepted) == 1
    if lock == "database constraint only":
        assert statuses == [202] * racers
    assert Execution.objects.count() == 1 and Intent.objects.count() == 1 and IdempotencyRecord.objects.count() == 1
    assert str(Execution.objects.get().pk) in accepted
