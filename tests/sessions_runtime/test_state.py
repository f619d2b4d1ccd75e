"""The state surface: every backend against one interface suite, and the REST endpoints
GET/PUT/PATCH /api/session/{id}/state with their refusals (none of which writes)."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.conf import settings as django_settings
from django.db import connections
from rest_framework.test import APIClient

from accounts.models import Membership, Role
from core.exceptions import RequestTooLarge, SessionNotWritable, VersionConflict
from sessions_runtime.state import (
    CONVERSATION_NAMESPACE,
    MemoryStateBackend,
    RedisStateBackend,
    StateDocument,
    state_backend,
    state_key,
)
from sessions_runtime.state_writes import session_state_read, session_state_write
from tests import factories
from tests.factories import as_user

BACKENDS = ["database", "memory", "redis"]


@pytest.fixture(params=BACKENDS)
def backend_name(request, settings):
    """Each backend in turn, configured as STATE_BACKEND. Redis needs REDIS_URL; with
    SYMPHAINY_REQUIRE_SERVICES=1 it always runs (the run stops at start without Redis)."""
    name = request.param
    if name == "redis" and not django_settings.REDIS_URL:
        if django_settings.REQUIRE_SERVICES:
            pytest.fail("SYMPHAINY_REQUIRE_SERVICES=1 but REDIS_URL is not set")
        pytest.skip("the redis state backend needs REDIS_URL")
    settings.SYMPHAINY = {**settings.SYMPHAINY, "STATE_BACKEND": name}
    return name


@pytest.fixture
def backend(backend_name):
    return state_backend()


@pytest.fixture
def session(db):
    return factories.make_session(factories.make_user())


def key_of(session, namespace="session"):
    return state_key(tenant_id=session.tenant_id, session_id=session.pk, namespace=namespace)


# --- The backend interface ------------------------------------------------------------------
def test_the_configured_backend_is_the_one_asked_for(backend_name, backend):
    from sessions_runtime.state import DatabaseStateBackend

    expected = {"database": DatabaseStateBackend, "memory": MemoryStateBackend, "redis": RedisStateBackend}
    assert type(backend) is expected[backend_name]


def test_a_key_never_written_reads_as_version_zero(backend, session):
    document = backend.read(key_of(session))
    assert document.version == 0 and document.data == {}


def test_each_write_names_the_version_it_read_and_bumps_it(backend, session):
    key = key_of(session)
    first = backend.write(key, {"step": 1}, expected_version=0)
    assert first.version == 1 and first.data == {"step": 1}
    second = backend.write(key, {"step": 2, "nested": {"a": [1, 2]}}, expected_version=1)
    assert second.version == 2
    read = backend.read(key)
    assert read.version == 2 and read.data == {"step": 2, "nested": {"a": [1, 2]}}
    assert read.updated_at is not None


@pytest.mark.parametrize("stale", [0, 1, 3, 99])
def test_a_stale_version_is_a_conflict_and_writes_nothing(backend, session, stale):
    key = key_of(session)
    backend.write(key, {"v": 1}, expected_version=0)
    backend.write(key, {"v": 2}, expected_version=1)
    with pytest.raises(VersionConflict) as raised:
        backend.write(key, {"v": "lost"}, expected_version=stale)
    assert raised.value.status_code == 412
    after = backend.read(key)
    assert after.version == 2 and after.data == {"v": 2}


def test_what_a_read_returns_is_the_callers_copy(backend, session):
    key = key_of(session)
    written = backend.write(key, {"list": [1], "obj": {"a": 1}}, expected_version=0)
    written.data["list"].append("from the writer")
    read = backend.read(key)
    read.data["list"].append("from a reader")
    read.data["obj"]["a"] = "changed"
    assert backend.read(key).data == {"list": [1], "obj": {"a": 1}}


def test_a_merge_patch_merges_objects_and_null_removes(backend, session):
    session_state_write(caller=factories.caller_for(session), session=session, data={"a": 1, "b": {"c": 1, "d": 2}, "gone": True}, expected_version=0)
    document = session_state_write(caller=factories.caller_for(session),
        session=session, data={"b": {"c": None, "e": 3}, "gone": None, "f": [1, 2]}, expected_version=1, merge=True
    )
    assert document.version == 2
    assert document.data == {"a": 1, "b": {"d": 2, "e": 3}, "f": [1, 2]}
    assert backend.read(key_of(session)).data == document.data
    with pytest.raises(VersionConflict):
        session_state_write(caller=factories.caller_for(session), session=session, data={"a": 2}, expected_version=1, merge=True)
    assert backend.read(key_of(session)).version == 2 and backend.read(key_of(session)).data["a"] == 1


def test_keys_are_scoped_by_tenant_session_and_namespace(backend, db):
    user = factories.make_user()
    mine, other_session = factories.make_session(user), factories.make_session(user)
    other_tenant = factories.make_tenant()
    backend.write(key_of(mine), {"owner": "mine"}, expected_version=0)
    # The same session id under another tenant is another key: nothing of mine is visible.
    foreign = state_key(tenant_id=other_tenant.pk, session_id=mine.pk)
    assert str(foreign) != str(key_of(mine))
    assert backend.read(foreign).version == 0
    backend.write(foreign, {"owner": "foreign"}, expected_version=0)
    assert backend.read(key_of(mine)).data == {"owner": "mine"}
    # Another session of the same tenant, and another namespace of the same session.
    assert backend.read(key_of(other_session)).version == 0
    assert backend.read(key_of(mine, CONVERSATION_NAMESPACE)).version == 0
    backend.delete(foreign)
    assert backend.read(foreign).version == 0 and backend.read(key_of(mine)).version == 1
    # Through the service a session only ever reaches its own tenant's key.
    assert session_state_read(session=mine).data == {"owner": "mine"}


def test_state_over_the_size_limit_is_refused_and_not_written(backend, session, settings):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "STATE_MAX_BYTES": 64}
    session_state_write(caller=factories.caller_for(session), session=session, data={"small": "x"}, expected_version=0)
    with pytest.raises(RequestTooLarge) as raised:
        session_state_write(caller=factories.caller_for(session), session=session, data={"big": "x" * 100}, expected_version=1)
    assert raised.value.status_code == 413
    with pytest.raises(RequestTooLarge):  # a patch that makes the whole document too big
        session_state_write(caller=factories.caller_for(session), session=session, data={"more": "y" * 60}, expected_version=1, merge=True)
    document = backend.read(key_of(session))
    assert document.version == 1 and document.data == {"small": "x"}


def test_an_ended_session_takes_no_state(backend, session):
    from core.caller import Caller
    from sessions_runtime.models import EndReason
    from sessions_runtime.services import session_end

    session_end(session_id=session.pk, reason=EndReason.ADMIN, caller=Caller.system())
    session.refresh_from_db()
    with pytest.raises(SessionNotWritable):
        session_state_write(caller=factories.caller_for(session), session=session, data={"x": 1}, expected_version=0)
    assert backend.read(key_of(session)).version == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_of_one_version_exactly_one_wins(backend):
    session = factories.make_session(factories.make_user())
    key = key_of(session)
    backend.write(key, {"n": 0}, expected_version=0)
    barrier, outcomes = threading.Barrier(6), []

    def writer(n: int) -> None:
        try:
            barrier.wait()
            backend.write(key, {"n": n}, expected_version=1)
            outcomes.append(("won", n))
        except VersionConflict:
            outcomes.append(("lost", n))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(1, 7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    winners = [n for outcome, n in outcomes if outcome == "won"]
    assert len(outcomes) == 6 and len(winners) == 1
    assert backend.read(key).version == 2 and backend.read(key).data == {"n": winners[0]}


# --- REST -----------------------------------------------------------------------------------
def state_url(session_id) -> str:
    return f"/api/session/{session_id}/state"


def stored(session_id) -> StateDocument:
    from sessions_runtime.models import RuntimeSession

    return session_state_read(session=RuntimeSession.objects.get(pk=session_id))


@pytest.fixture
def member(db):
    return as_user()


@pytest.fixture
def written(member):
    """The member's session with state at version 1."""
    api, body, _ = member
    response = api.put(state_url(body["session_id"]), {"data": {"a": 1}}, format="json", HTTP_IF_MATCH="0")
    assert response.status_code == 200, response.content
    return api, body


def test_get_put_patch_round_trip(member):
    api, body, _ = member
    url = state_url(body["session_id"])
    first = api.get(url)
    assert first.status_code == 200 and first.json() == {"version": 0, "data": {}} and first["ETag"] == '"0"'
    put = api.put(url, {"data": {"a": 1, "b": {"c": 2}}}, format="json", HTTP_IF_MATCH="0")
    assert put.status_code == 200 and put.json() == {"version": 1, "data": {"a": 1, "b": {"c": 2}}}
    assert put["ETag"] == '"1"'
    patch = api.patch(url, {"data": {"b": {"c": None, "d": 3}}}, format="json", HTTP_IF_MATCH='"1"')
    assert patch.status_code == 200 and patch.json() == {"version": 2, "data": {"a": 1, "b": {"d": 3}}}
    weak = api.put(url, {"data": {"z": 0}}, format="json", HTTP_IF_MATCH='W/"2"')
    assert weak.status_code == 200 and weak.json()["version"] == 3
    assert api.get(url).json() == {"version": 3, "data": {"z": 0}}
    assert stored(body["session_id"]).version == 3


def assert_refused(response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    payload = response.json()
    assert set(payload) <= {"error", "message", "details"} and payload["message"]
    if code:
        assert payload["error"] == code


@pytest.mark.parametrize("method", ["put", "patch"])
def test_a_write_without_if_match_is_428(written, method):
    api, body = written
    response = getattr(api, method)(state_url(body["session_id"]), {"data": {"a": 2}}, format="json")
    assert_refused(response, 428, "precondition_required")
    assert stored(body["session_id"]).version == 1 and stored(body["session_id"]).data == {"a": 1}


@pytest.mark.parametrize("method", ["put", "patch"])
@pytest.mark.parametrize("if_match", ["0", "2", '"7"'])
def test_a_stale_if_match_is_412(written, method, if_match):
    api, body = written
    response = getattr(api, method)(state_url(body["session_id"]), {"data": {"a": 2}}, format="json", HTTP_IF_MATCH=if_match)
    assert_refused(response, 412, "version_conflict")
    assert stored(body["session_id"]).version == 1 and stored(body["session_id"]).data == {"a": 1}


@pytest.mark.parametrize("if_match", ["abc", "-1", "1.0", "*", "9" * 20, "", "\u00b2", "\u0663"])
def test_an_if_match_that_is_not_a_version_is_400(written, if_match):
    api, body = written
    response = api.put(state_url(body["session_id"]), {"data": {"a": 2}}, format="json", HTTP_IF_MATCH=if_match)
    assert response.status_code in (400, 428), response.content
    assert stored(body["session_id"]).version == 1


@pytest.mark.parametrize("method", ["put", "patch"])
def test_state_over_the_limit_is_413(written, settings, method):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "STATE_MAX_BYTES": 1024}
    api, body = written
    response = getattr(api, method)(
        state_url(body["session_id"]), {"data": {"big": "x" * 2000}}, format="json", HTTP_IF_MATCH="1"
    )
    assert_refused(response, 413, "request_too_large")
    assert stored(body["session_id"]).version == 1


def test_a_body_over_the_request_limit_is_413(written, settings):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "MAX_REQUEST_BYTES": 1024}
    api, body = written
    response = api.put(state_url(body["session_id"]), {"data": {"big": "x" * 2000}}, format="json", HTTP_IF_MATCH="1")
    assert_refused(response, 413)
    assert stored(body["session_id"]).version == 1


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
def test_a_body_that_is_not_json_is_415(written, content_type):
    api, body = written
    response = api.generic(
        "PUT", state_url(body["session_id"]), b"data=1", content_type=content_type, HTTP_IF_MATCH="1"
    )
    assert_refused(response, 415, "unsupported_media_type")
    assert stored(body["session_id"]).version == 1


@pytest.mark.parametrize(
    "raw",
    [b"{", b'{"data": {"a": 1}', b"\xff\xfe", b'{"data": [1, 2]}', b'{"data": "text"}', b"[]", b'{"other": 1}', b'{"data": null}'],
)
def test_malformed_json_or_a_data_that_is_not_an_object_is_400(written, raw):
    api, body = written
    response = api.generic("PUT", state_url(body["session_id"]), raw, content_type="application/json", HTTP_IF_MATCH="1")
    assert_refused(response, 400)
    assert stored(body["session_id"]).version == 1


@pytest.mark.django_db
def test_a_viewer_reads_but_may_not_write():
    tenant = factories.make_tenant()
    owner_api, owner, _ = as_user(tenant=tenant)
    viewer_api, viewer, _ = as_user(tenant=tenant, role=Role.VIEWER)
    url = state_url(viewer["session_id"])
    assert viewer_api.get(url).status_code == 200
    for method in ("put", "patch"):
        response = getattr(viewer_api, method)(url, {"data": {"x": 1}}, format="json", HTTP_IF_MATCH="0")
        assert_refused(response, 403, "permission_denied")
    assert stored(viewer["session_id"]).version == 0


@pytest.mark.django_db
def test_a_tenant_admin_reads_a_members_state_but_does_not_write_it():
    tenant = factories.make_tenant()
    member_api, member, _ = as_user(tenant=tenant)
    admin_api, _, _ = as_user(tenant=tenant, role=Role.ADMIN)
    url = state_url(member["session_id"])
    member_api.put(url, {"data": {"mine": True}}, format="json", HTTP_IF_MATCH="0")
    assert admin_api.get(url).json() == {"version": 1, "data": {"mine": True}}
    for method in ("put", "patch"):
        response = getattr(admin_api, method)(url, {"data": {"admin": True}}, format="json", HTTP_IF_MATCH="1")
        assert_refused(response, 403, "permission_denied")
    assert stored(member["session_id"]).data == {"mine": True}


@pytest.mark.django_db
def test_another_users_or_tenants_or_a_missing_session_is_the_same_404():
    tenant = factories.make_tenant()
    api, _, _ = as_user(tenant=tenant)
    colleague_api, colleague, _ = as_user(tenant=tenant)
    stranger_api, stranger, _ = as_user()
    for owner_api, owner in ((colleague_api, colleague), (stranger_api, stranger)):
        owner_api.put(state_url(owner["session_id"]), {"data": {"secret": 1}}, format="json", HTTP_IF_MATCH="0")
    bodies = set()
    for session_id in (colleague["session_id"], stranger["session_id"], str(uuid.uuid4()), "not-a-uuid"):
        url = state_url(session_id)
        for response in (
            api.get(url),
            api.put(url, {"data": {"x": 1}}, format="json", HTTP_IF_MATCH="1"),
            api.patch(url, {"data": {"x": 1}}, format="json", HTTP_IF_MATCH="1"),
            api.put(url, {"data": {"x": 1}}, format="json"),  # 404 before 428: nothing leaks
        ):
            assert_refused(response, 404, "not_found")
            bodies.add(response.content)
    assert len(bodies) == 1
    assert stored(colleague["session_id"]).data == {"secret": 1} and stored(stranger["session_id"]).version == 1


@pytest.mark.django_db
def test_a_users_own_session_in_another_tenant_is_404():
    """A member of two tenants acting in one does not reach their sessions in the other."""
    user = factories.make_user()
    second = factories.make_tenant()
    Membership.objects.create(user=user, tenant=second, role=Role.MEMBER)
    in_first = factories.login(APIClient(), user)
    in_second = factories.login(APIClient(), user, tenant_id=str(second.pk))
    assert in_first["tenant_id"] != in_second["tenant_id"]
    api = factories.bearer(APIClient(), in_second["access_token"])
    url = state_url(in_first["session_id"])
    assert_refused(api.get(url), 404, "not_found")
    assert_refused(api.put(url, {"data": {"x": 1}}, format="json", HTTP_IF_MATCH="0"), 404, "not_found")
    assert stored(in_first["session_id"]).version == 0


@pytest.mark.django_db
def test_an_ended_or_expired_session_takes_no_writes():
    from datetime import timedelta

    from django.utils import timezone

    from sessions_runtime.models import RuntimeSession

    api, body, user = as_user()
    ended_id = api.post("/api/session/create", {}, format="json").json()["session_id"]
    expired_id = api.post("/api/session/create", {}, format="json").json()["session_id"]
    for session_id in (ended_id, expired_id):
        assert api.put(state_url(session_id), {"data": {"v": 1}}, format="json", HTTP_IF_MATCH="0").status_code == 200
    assert api.delete(f"/api/session/{ended_id}").status_code == 204
    RuntimeSession.objects.filter(pk=expired_id).update(idle_expires_at=timezone.now() - timedelta(seconds=1))
    for session_id in (ended_id, expired_id):
        url = state_url(session_id)
        assert api.get(url).json() == {"version": 1, "data": {"v": 1}}  # still readable
        for method in ("put", "patch"):
            response = getattr(api, method)(url, {"data": {"v": 2}}, format="json", HTTP_IF_MATCH="1")
            assert_refused(response, 409, "session_not_active")
        assert stored(session_id).data == {"v": 1} and stored(session_id).version == 1
