"""The session endpoints: create, read, list, end — and the access rule's 404s."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import Role
from core.models import AuditEvent
from sessions_runtime.models import EndReason, RuntimeSession, SessionStatus
from tests import factories
from tests.factories import as_user

pytestmark = pytest.mark.django_db
SESSION_FIELDS = {
    "session_id", "user_id", "tenant_id", "status", "created_at", "last_seen_at", "expires_at",
    "idle_expires_at", "ended_at", "end_reason", "metadata", "connections",
}


def test_create_returns_a_new_session_of_the_caller():
    api, body, user = as_user()
    response = api.post("/api/session/create", {"metadata": {"device": "tablet"}}, format="json")
    assert response.status_code == 201
    created = response.json()
    assert set(created) == SESSION_FIELDS
    assert created["user_id"] == body["user_id"] and created["tenant_id"] == body["tenant_id"]
    assert created["metadata"] == {"device": "tablet"} and created["status"] == "active" and created["connections"] == 0
    assert created["session_id"] != body["session_id"]
    assert RuntimeSession.objects.get(pk=created["session_id"]).intent["action"] == "api_create"


@pytest.mark.parametrize("metadata", [[1, 2], "text", {"big": "x" * 20_000}])
def test_create_with_bad_metadata_is_400(metadata):
    api, _, user = as_user()
    response = api.post("/api/session/create", {"metadata": metadata}, format="json")
    assert response.status_code == 400
    assert RuntimeSession.objects.filter(user=user).count() == 1


def test_create_ignores_fields_that_try_to_set_owner_or_status():
    api, body, _ = as_user()
    other = factories.make_user()
    response = api.post("/api/session/create", {"user_id": str(other.pk), "tenant_id": "x", "status": "ended"}, format="json")
    assert response.status_code == 201
    assert response.json()["user_id"] == body["user_id"] and response.json()["status"] == "active"


def test_get_own_session_has_the_contract_fields():
    api, body, _ = as_user()
    response = api.get(f"/api/session/{body['session_id']}")
    assert response.status_code == 200 and set(response.json()) == SESSION_FIELDS


def test_expiry_is_applied_on_read():
    api, body, _ = as_user()
    _, created = api.post("/api/session/create", {}, format="json"), None
    other_id = RuntimeSession.objects.exclude(pk=body["session_id"]).get().pk
    RuntimeSession.objects.filter(pk=other_id).update(idle_expires_at=timezone.now() - timedelta(seconds=1))
    shown = api.get(f"/api/session/{other_id}").json()
    assert shown["status"] == "expired" and shown["end_reason"] == "expired_idle"
    assert RuntimeSession.objects.get(pk=other_id).status == SessionStatus.ACTIVE  # nothing written on read
    assert [s["session_id"] for s in api.get("/api/sessions?status=expired").json()["results"]] == [str(other_id)]


def test_foreign_missing_and_malformed_ids_are_the_same_404():
    tenant = factories.make_tenant()
    api, _, _ = as_user(tenant=tenant)
    _, colleague, _ = as_user(tenant=tenant)
    _, stranger, _ = as_user()
    bodies = set()
    for session_id in (
        colleague["session_id"], stranger["session_id"], "00000000-0000-0000-0000-000000000000",
        "not-a-uuid", "1' OR '1'='1", "%00", "😀",
    ):
        for method in ("get", "delete"):
            response = getattr(api, method)(f"/api/session/{session_id}")
            assert response.status_code == 404, (session_id, method, response.content)
            bodies.add(response.content)
    assert len(bodies) == 1
    traversal = api.get("/api/session/..%2f..%2fetc")
    assert traversal.status_code == 404 and traversal.json()["error"] == "not_found"
    assert RuntimeSession.objects.filter(status=SessionStatus.ACTIVE).count() == 3


def test_tenant_admins_may_read_and_end_their_tenants_sessions():
    tenant = factories.make_tenant()
    admin, _, admin_user = as_user(tenant=tenant, role=Role.ADMIN)
    _, member, _ = as_user(tenant=tenant)
    assert admin.get(f"/api/session/{member['session_id']}").status_code == 200
    assert admin.delete(f"/api/session/{member['session_id']}").status_code == 204
    ended = RuntimeSession.objects.get(pk=member["session_id"])
    assert ended.end_reason == EndReason.ADMIN and ended.ended_by == admin_user


def test_delete_twice_is_204_with_one_event():
    api, body, _ = as_user()
    _ = api.post("/api/session/create", {}, format="json").json()
    other = RuntimeSession.objects.exclude(pk=body["session_id"]).get()
    assert api.delete(f"/api/session/{other.pk}").status_code == 204
    assert api.delete(f"/api/session/{other.pk}").status_code == 204
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.SESSION_ENDED, session_id=other.pk).count() == 1
    assert api.get(f"/api/session/{other.pk}").json()["status"] == "ended"


def test_list_is_newest_first_paginated_and_filtered():
    api, body, user = as_user()
    for _ in range(3):
        api.post("/api/session/create", {}, format="json")
    newest = RuntimeSession.objects.filter(user=user).order_by("-created_at").first()
    api.delete(f"/api/session/{newest.pk}")
    page = api.get("/api/sessions?page_size=2").json()
    assert page["count"] == 4 and len(page["results"]) == 2 and page["next"]
    assert page["results"][0]["session_id"] == str(newest.pk)
    assert api.get("/api/sessions?status=ended").json()["count"] == 1
    assert api.get("/api/sessions?status=active").json()["count"] == 3
    assert api.get("/api/sessions?status=bogus").status_code == 400


def test_tenant_scope_needs_the_admin_permission():
    tenant = factories.make_tenant()
    admin, _, _ = as_user(tenant=tenant, role=Role.OWNER)
    member, _, _ = as_user(tenant=tenant)
    as_user()  # another tenant's session never shows
    assert admin.get("/api/sessions?scope=tenant").json()["count"] == 2
    response = member.get("/api/sessions?scope=tenant")
    assert response.status_code == 403 and response.json()["error"] == "permission_denied"
    assert member.get("/api/sessions").json()["count"] == 1
