"""The operators' admin: pages load without per-row queries, actions go through services."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from accounts.models import Membership, Role, User
from core.models import ActorType, AuditEvent
from realtime.models import Connection
from sessions_runtime.models import EndReason, Execution, RuntimeSession, SessionStatus
from tests import factories


@pytest.fixture
def staff(db):
    return User.objects.create_superuser(email="admin@example.com", password=factories.PASSWORD)


@pytest.fixture
def admin_client(client, staff):
    client.force_login(staff)
    return client


def _sessions(count: int) -> list[dict]:
    tenant = factories.make_tenant()
    bodies = []
    for _ in range(count):
        user = factories.make_user(tenant=tenant)
        bodies.append(factories.login(APIClient(), user))
    return bodies


def _queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, response.content[:500]
    return len(captured)


@pytest.mark.parametrize(
    "url",
    [
        "/admin/sessions_runtime/runtimesession/",
        "/admin/sessions_runtime/runtimesession/?status=active",
        "/admin/sessions_runtime/execution/",
        "/admin/core/auditevent/",
        "/admin/realtime/connection/",
        "/admin/accounts/user/",
        "/admin/accounts/tenant/",
    ],
)
def test_list_pages_make_no_per_row_queries(admin_client, url):
    _sessions(3)
    few = _queries(admin_client, url)
    _sessions(25)
    many = _queries(admin_client, url)
    assert many == few


def test_session_search_by_id_email_and_tenant(admin_client):
    body = _sessions(2)[0]
    session = RuntimeSession.objects.select_related("user", "tenant").get(pk=body["session_id"])
    for term in (body["session_id"], session.user.email, session.tenant.slug):
        response = admin_client.get("/admin/sessions_runtime/runtimesession/", {"q": term})
        assert response.status_code == 200
        assert body["session_id"] in response.content.decode()


def test_session_detail_shows_state_connections_and_executions(admin_client):
    body = _sessions(1)[0]
    session = RuntimeSession.objects.get(pk=body["session_id"])
    Connection.objects.create(session=session, user=session.user, channel_name="chan-1", server_instance="proc-1")
    api = factories.bearer(APIClient(), body["access_token"])
    assert api.put(f"/api/session/{session.pk}/state", {"data": {"answer": 42}}, format="json", HTTP_IF_MATCH="0").status_code == 200
    response = admin_client.get(f"/admin/sessions_runtime/runtimesession/{session.pk}/change/")
    page = response.content.decode()
    assert response.status_code == 200
    assert "&quot;answer&quot;: 42" in page and "chan-1" in page


def test_end_selected_sessions_goes_through_the_service(admin_client, staff):
    bodies = _sessions(3)
    chosen = [b["session_id"] for b in bodies[:2]]
    response = admin_client.post(
        "/admin/sessions_runtime/runtimesession/",
        {"action": "end_sessions", "_selected_action": chosen},
        follow=True,
    )
    assert response.status_code == 200
    ended = RuntimeSession.objects.filter(pk__in=chosen)
    assert {s.status for s in ended} == {SessionStatus.ENDED}
    assert {s.end_reason for s in ended} == {EndReason.ADMIN}
    assert {s.ended_by_id for s in ended} == {staff.pk}
    assert RuntimeSession.objects.get(pk=bodies[2]["session_id"]).status == SessionStatus.ACTIVE
    audit = AuditEvent.objects.filter(kind=AuditEvent.Kind.SESSION_ENDED, actor_type=ActorType.ADMIN)
    assert audit.count() == 2


def test_sessions_cannot_be_added_changed_or_deleted_by_hand(admin_client):
    body = _sessions(1)[0]
    assert admin_client.get("/admin/sessions_runtime/runtimesession/add/").status_code == 403
    assert admin_client.post(f"/admin/sessions_runtime/runtimesession/{body['session_id']}/delete/").status_code == 403
    assert admin_client.get("/admin/core/auditevent/add/").status_code == 403


def test_removing_a_membership_inline_ends_the_users_sessions(admin_client):
    body = _sessions(1)[0]
    membership = Membership.objects.get(user_id=body["user_id"])
    tenant = membership.tenant
    page = admin_client.get(f"/admin/accounts/tenant/{tenant.pk}/change/")
    assert page.status_code == 200
    data = {
        "name": tenant.name, "slug": tenant.slug, "status": tenant.status, "created_at_0": "2026-01-01", "created_at_1": "00:00:00",
        "memberships-TOTAL_FORMS": "1", "memberships-INITIAL_FORMS": "1",
        "memberships-MIN_NUM_FORMS": "0", "memberships-MAX_NUM_FORMS": "1000",
        "memberships-0-id": str(membership.pk), "memberships-0-tenant": str(tenant.pk),
        "memberships-0-user": str(membership.user_id), "memberships-0-role": Role.MEMBER,
        "memberships-0-DELETE": "on",
    }
    response = admin_client.post(f"/admin/accounts/tenant/{tenant.pk}/change/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert not Membership.objects.filter(pk=membership.pk).exists()
    session = RuntimeSession.objects.get(pk=body["session_id"])
    assert session.status == SessionStatus.ENDED and session.end_reason == EndReason.MEMBERSHIP_REMOVED


def test_deactivating_a_user_ends_their_sessions(admin_client):
    body = _sessions(1)[0]
    response = admin_client.post(
        "/admin/accounts/user/", {"action": "deactivate_users", "_selected_action": [body["user_id"]]}, follow=True
    )
    assert response.status_code == 200
    assert not User.objects.get(pk=body["user_id"]).is_active
    assert RuntimeSession.objects.get(pk=body["session_id"]).end_reason == EndReason.USER_DEACTIVATED


def test_non_staff_cannot_reach_the_admin(client, db):
    user = factories.make_user()
    client.force_login(user)
    response = client.get("/admin/sessions_runtime/runtimesession/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_execution_list_filters(admin_client):
    _sessions(1)
    for params in ({"status__exact": "completed"}, {"intent_type": "echo"}):
        assert admin_client.get("/admin/sessions_runtime/execution/", params).status_code == 200
    assert Execution.objects.count() == 0


@pytest.mark.django_db(transaction=True)
async def test_the_end_action_closes_a_live_socket():
    from channels.db import database_sync_to_async
    from django.test import Client

    from tests.realtime.conftest import make_socket

    def prepare():
        staff = User.objects.create_superuser(email="ops@example.com", password=factories.PASSWORD)
        client = Client()
        client.force_login(staff)
        return client, _sessions(1)[0]

    client, body = await database_sync_to_async(prepare)()
    sock = await make_socket(body["access_token"]).open()
    assert (await sock.receive())["type"] == "session.ready"
    response = await database_sync_to_async(client.post)(
        "/admin/sessions_runtime/runtimesession/", {"action": "end_sessions", "_selected_action": [body["session_id"]]}
    )
    assert response.status_code == 302
    assert await sock.receive_close(timeout=2) == 4409
