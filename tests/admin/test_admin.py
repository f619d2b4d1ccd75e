"""The operators' admin: pages load without per-row queries, actions go through services."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from accounts.models import Membership, Role, User
from core.models import ActorType, AuditEvent
from realtime.models import Connection
from sessions_runtime.models import EndReason, Execution, ExecutionStatus, Intent, RuntimeSession, SessionStatus
from tests import factories


def _sessions(count: int) -> list[dict]:
    tenant = factories.make_tenant()
    bodies = []
    for _ in range(count):
        user = factories.make_user(tenant=tenant)
        bodies.append(factories.login(APIClient(), user))
    return bodies


def _execution(session: RuntimeSession, *, status: str = ExecutionStatus.RUNNING, **fields) -> Execution:
    intent = Intent.objects.create(
        session=session, user_id=session.user_id, tenant_id=session.tenant_id, intent_type="batch", parameters={}
    )
    return Execution.objects.create(
        intent=intent, session=session, user_id=session.user_id, tenant_id=session.tenant_id, intent_type="batch",
        status=status, **fields,
    )


def _populate(count: int) -> None:
    """Sessions, each with a live socket and an execution, so every list page has rows."""
    for body in _sessions(count):
        session = RuntimeSession.objects.get(pk=body["session_id"])
        Connection.objects.create(session=session, user_id=session.user_id, channel_name=f"chan-{session.pk}",
                                  server_instance="web-1:1:abc", client_address="192.0.2.7", user_agent="curl/8")
        _execution(session, progress={"total": 4, "processed": 1, "succeeded": 1, "failed": 0})


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
    _populate(3)
    few = _queries(admin_client, url)
    _populate(25)
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
    assert "&quot;answer&quot;: 42" in page and "proc-1" in page
    connection = Connection.objects.get()
    assert f'formaction="/admin/realtime/connection/{connection.pk}/disconnect/"' in page  # a superuser may


def test_end_selected_sessions_asks_first_then_goes_through_the_service(admin_client, staff):
    bodies = _sessions(3)
    chosen = [b["session_id"] for b in bodies[:2]]
    url = "/admin/sessions_runtime/runtimesession/"
    confirm = admin_client.post(url, {"action": "end_sessions", "_selected_action": chosen})
    page = confirm.content.decode()
    assert confirm.status_code == 200 and "End 2 active sessions?" in page
    assert all(session_id in page for session_id in chosen) and bodies[2]["session_id"] not in page
    assert 'name="post" value="yes"' in page and "csrfmiddlewaretoken" in page
    assert RuntimeSession.objects.filter(status=SessionStatus.ENDED).count() == 0  # asking ends nothing

    response = admin_client.post(
        url, {"action": "end_sessions", "_selected_action": chosen, "post": "yes", "note": " laptop stolen "},
        follow=True,
    )
    assert response.status_code == 200 and "Ended 2 sessions" in response.content.decode()
    ended = RuntimeSession.objects.filter(pk__in=chosen)
    assert {s.status for s in ended} == {SessionStatus.ENDED}
    assert {s.end_reason for s in ended} == {EndReason.ADMIN}
    assert {s.ended_by_id for s in ended} == {staff.pk}
    assert RuntimeSession.objects.get(pk=bodies[2]["session_id"]).status == SessionStatus.ACTIVE
    audit = AuditEvent.objects.filter(kind=AuditEvent.Kind.SESSION_ENDED, actor_type=ActorType.ADMIN)
    assert audit.count() == 2
    assert {row.data["note"] for row in audit} == {"laptop stolen"}


def test_end_confirmation_refuses_an_overlong_note(admin_client):
    body = _sessions(1)[0]
    response = admin_client.post(
        "/admin/sessions_runtime/runtimesession/",
        {"action": "end_sessions", "_selected_action": [body["session_id"]], "post": "yes", "note": "x" * 201},
    )
    assert response.status_code == 200 and "at most 200 characters" in response.content.decode()
    assert RuntimeSession.objects.get(pk=body["session_id"]).status == SessionStatus.ACTIVE


def test_the_end_button_on_a_sessions_page(admin_client, staff):
    body = _sessions(1)[0]
    session_id = body["session_id"]
    change = admin_client.get(f"/admin/sessions_runtime/runtimesession/{session_id}/change/").content.decode()
    end_url = f"/admin/sessions_runtime/runtimesession/{session_id}/end/"
    assert f'href="{end_url}"' in change and "End session" in change
    confirm = admin_client.get(end_url)
    assert confirm.status_code == 200 and "End 1 active session?" in confirm.content.decode()
    assert f'href="/admin/sessions_runtime/runtimesession/{session_id}/change/" class="button cancel-link"' in confirm.content.decode()
    assert RuntimeSession.objects.get(pk=session_id).status == SessionStatus.ACTIVE

    response = admin_client.post(end_url, {"note": "asked by the user"})
    assert response.status_code == 302 and response["Location"].endswith(f"/{session_id}/change/")
    session = RuntimeSession.objects.get(pk=session_id)
    assert (session.status, session.end_reason, session.ended_by_id) == (SessionStatus.ENDED, EndReason.ADMIN, staff.pk)
    row = AuditEvent.objects.get(kind=AuditEvent.Kind.SESSION_ENDED, session_id=session_id)
    assert row.actor_type == ActorType.ADMIN and row.data["note"] == "asked by the user"
    # An ended session has no button, and a second POST ends nothing.
    assert end_url not in admin_client.get(f"/admin/sessions_runtime/runtimesession/{session_id}/change/").content.decode()
    assert "already ended" in admin_client.post(end_url, {}, follow=True).content.decode()
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.SESSION_ENDED, session_id=session_id).count() == 1


def test_the_end_button_needs_csrf_and_the_end_permission(client, staff, db):
    from django.contrib.auth.models import Permission
    from django.test import Client

    body = _sessions(1)[0]
    end_url = f"/admin/sessions_runtime/runtimesession/{body['session_id']}/end/"
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(staff)
    assert strict.post(end_url, {}).status_code == 403

    viewer = User.objects.create_user(email="viewer@example.com", password=factories.PASSWORD, is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_runtimesession"))
    client.force_login(viewer)
    change = client.get(f"/admin/sessions_runtime/runtimesession/{body['session_id']}/change/")
    assert change.status_code == 200 and end_url not in change.content.decode()
    assert client.get(end_url).status_code == 403
    assert client.post(end_url, {}).status_code == 403
    assert RuntimeSession.objects.get(pk=body["session_id"]).status == SessionStatus.ACTIVE
    assert client.put(end_url).status_code == 405


def test_session_list_shows_short_id_next_expiry_with_seconds_and_zone(admin_client):
    from datetime import timedelta

    body = _sessions(1)[0]
    session = RuntimeSession.objects.get(pk=body["session_id"])
    idle = session.idle_expires_at.replace(microsecond=0) - timedelta(seconds=1)  # the sooner one
    RuntimeSession.objects.filter(pk=session.pk).update(idle_expires_at=idle)
    page = admin_client.get("/admin/sessions_runtime/runtimesession/").content.decode()
    assert f'title="{session.pk}">{session.pk.hex[:8]}<span class="id-rest">' in page and "Next expiry" in page and "Live sockets" in page
    assert idle.strftime("%Y-%m-%d %H:%M:%S") + " UTC" in page
    assert session.expires_at.strftime("%Y-%m-%d %H:%M:%S") not in page  # the later, absolute one is not shown
    by_expiry = admin_client.get("/admin/sessions_runtime/runtimesession/", {"o": "6"})  # sort by the annotation
    assert by_expiry.status_code == 200


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


def test_executions_show_progress_and_link_their_session(admin_client):
    session = RuntimeSession.objects.get(pk=_sessions(1)[0]["session_id"])
    execution = _execution(session, progress={"total": 40, "processed": 12, "succeeded": 11, "failed": 1})
    page = admin_client.get("/admin/sessions_runtime/execution/").content.decode()
    assert "12/40 (30%), 1 failed" in page and f'title="{execution.pk}">{execution.pk.hex[:8]}<span' in page
    link = f'href="/admin/sessions_runtime/runtimesession/{session.pk}/change/"><span class="short-id" title="{session.pk}">'
    assert link + session.pk.hex[:8] in page


def test_cancel_selected_executions_goes_through_the_service(admin_client):
    session = RuntimeSession.objects.get(pk=_sessions(1)[0]["session_id"])
    waiting = _execution(session, status=ExecutionStatus.CREATED)
    running = _execution(session, status=ExecutionStatus.RUNNING)
    done = _execution(session, status=ExecutionStatus.COMPLETED)
    response = admin_client.post(
        "/admin/sessions_runtime/execution/",
        {"action": "cancel_executions", "_selected_action": [str(e.pk) for e in (waiting, running, done)]},
        follow=True,
    )
    assert "Cancelling 2 executions. 1 had already finished." in response.content.decode()
    waiting, running, done = (Execution.objects.get(pk=e.pk) for e in (waiting, running, done))
    assert waiting.status == ExecutionStatus.CANCELLED  # not started: at once
    assert (running.status, running.cancel_requested) == (ExecutionStatus.RUNNING, True)  # at its next report
    assert (done.status, done.cancel_requested) == (ExecutionStatus.COMPLETED, False)


def test_cancelling_executions_needs_its_permission(client, db):
    from django.contrib.auth.models import Permission

    session = RuntimeSession.objects.get(pk=_sessions(1)[0]["session_id"])
    running = _execution(session)
    viewer = User.objects.create_user(email="viewer@example.com", password=factories.PASSWORD, is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_execution"))
    client.force_login(viewer)
    page = client.get("/admin/sessions_runtime/execution/")
    assert page.status_code == 200 and "cancel_executions" not in page.content.decode()
    client.post("/admin/sessions_runtime/execution/", {"action": "cancel_executions", "_selected_action": [str(running.pk)]})
    assert not Execution.objects.get(pk=running.pk).cancel_requested
    viewer.user_permissions.add(Permission.objects.get(codename="cancel_execution"))
    assert "cancel_executions" in client.get("/admin/sessions_runtime/execution/").content.decode()


def test_connections_say_who_which_session_since_when_from_where_and_which_process(admin_client):
    session = RuntimeSession.objects.select_related("user").get(pk=_sessions(1)[0]["session_id"])
    Connection.objects.create(
        session=session, user=session.user, channel_name="specific.abc!xyz", server_instance="web-2:4242:deadbeef",
        client_address="198.51.100.4", user_agent="Mozilla/5.0 " + "X" * 200,
    )
    page = admin_client.get("/admin/realtime/connection/").content.decode().replace("<wbr>", "")  # wrap points
    table = page[page.index('id="result_list"'):]
    headers = table[:table.index("</thead>")]
    assert headers.index("User") < headers.index("Session") < headers.index("Opened at")
    assert "Channel name" not in headers and "specific.abc!xyz" not in page
    for shown in (session.user.email, session.pk.hex[:8], "198.51.100.4", "web-2:4242:deadbeef", "Mozilla/5.0 XXX"):
        assert shown in page
    assert table.count("X" * 200) == 1  # the whole agent only in the cell's title; the cell is cut
    assert "Mozilla/5.0 " + "X" * 47 + "…" in table
    assert " UTC" in table
    assert admin_client.get("/admin/realtime/connection/", {"q": "198.51.100.4"}).status_code == 200


@pytest.mark.django_db(transaction=True)
async def test_the_end_action_closes_a_live_socket():
    from channels.db import database_sync_to_async
    from django.test import Client

    from tests.sockets import make_socket

    def prepare():
        staff = User.objects.create_superuser(email="ops@example.com", password=factories.PASSWORD)
        client = Client()
        client.force_login(staff)
        return client, _sessions(1)[0]

    client, body = await database_sync_to_async(prepare)()
    sock = await make_socket(body["access_token"]).open()
    assert (await sock.receive())["type"] == "session.ready"
    response = await database_sync_to_async(client.post)(
        "/admin/sessions_runtime/runtimesession/",
        {"action": "end_sessions", "_selected_action": [body["session_id"]], "post": "yes"},
    )
    assert response.status_code == 302
    assert await sock.receive_close(timeout=2) == 4409
