"""File references of a session: add, list, read; the access rule; field validation."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from accounts.models import Role
from sessions_runtime.models import FileReference
from tests import factories
from tests.factories import as_user

pytestmark = pytest.mark.django_db
FIELDS = {"file_id", "session_id", "name", "size", "sha256", "content_type", "location", "created_at"}


def reference(**overrides):
    return {
        "name": "report.pdf", "size": 1234, "sha256": hashlib.sha256(b"report").hexdigest(),
        "content_type": "application/pdf", "location": "s3://bucket/report.pdf", **overrides,
    }


def files_url(session_id) -> str:
    return f"/api/session/{session_id}/files"


def test_add_list_and_read_a_file_reference():
    api, body, user = as_user()
    created = api.post(files_url(body["session_id"]), reference(), format="json")
    assert created.status_code == 201, created.content
    added = created.json()
    assert set(added) == FIELDS and added["session_id"] == body["session_id"]
    assert {k: added[k] for k in reference()} == reference()
    stored = FileReference.objects.get(pk=added["file_id"])
    assert stored.user_id == user.pk and str(stored.tenant_id) == body["tenant_id"]
    second = api.post(files_url(body["session_id"]), reference(name="b.txt", content_type="text/plain"), format="json").json()
    listed = api.get(files_url(body["session_id"]))
    assert listed.status_code == 200 and [f["file_id"] for f in listed.json()] == [second["file_id"], added["file_id"]]
    detail = api.get(f"{files_url(body['session_id'])}/{added['file_id']}")
    assert detail.status_code == 200 and detail.json() == added


def test_another_users_or_tenants_files_are_the_same_404():
    tenant = factories.make_tenant()
    api, _, _ = as_user(tenant=tenant)
    owner_api, owner, _ = as_user(tenant=tenant)
    stranger_api, stranger, _ = as_user()
    file_ids = {}
    for client, body in ((owner_api, owner), (stranger_api, stranger)):
        file_ids[body["session_id"]] = client.post(files_url(body["session_id"]), reference(), format="json").json()["file_id"]
    bodies = set()
    for session_id, file_id in file_ids.items():
        for response in (
            api.get(files_url(session_id)),
            api.get(f"{files_url(session_id)}/{file_id}"),
            api.post(files_url(session_id), reference(name="planted"), format="json"),
        ):
            assert response.status_code == 404, response.content
            bodies.add(response.content)
    assert len(bodies) == 1
    assert not FileReference.objects.filter(name="planted").exists()


def test_a_file_is_only_found_under_its_own_session():
    api, body, _ = as_user()
    other_session = api.post("/api/session/create", {}, format="json").json()["session_id"]
    file_id = api.post(files_url(body["session_id"]), reference(), format="json").json()["file_id"]
    assert api.get(f"{files_url(other_session)}/{file_id}").status_code == 404
    assert api.get(f"{files_url(body['session_id'])}/{uuid.uuid4()}").status_code == 404
    assert api.get(f"{files_url(body['session_id'])}/not-a-uuid").status_code == 404
    assert api.get(files_url(other_session)).json() == []


@pytest.mark.parametrize(
    "bad",
    [
        {"name": ""},
        {"name": "x" * 256},
        {"size": -1},
        {"size": "big"},
        {"size": 2**63},
        {"sha256": "abc"},
        {"sha256": "G" * 64},
        {"sha256": hashlib.sha256(b"x").hexdigest().upper()},
        {"content_type": "pdf"},
        {"content_type": "text/plain; charset=utf-8"},
        {"location": ""},
        {"location": "x" * 1025},
    ],
)
def test_bad_fields_are_400_and_add_nothing(bad):
    api, body, _ = as_user()
    response = api.post(files_url(body["session_id"]), reference(**bad), format="json")
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_request" and set(bad) <= set(response.json()["details"])
    assert FileReference.objects.count() == 0


@pytest.mark.parametrize("missing", ["name", "size", "sha256", "content_type", "location"])
def test_a_missing_field_is_400(missing):
    api, body, _ = as_user()
    payload = reference()
    del payload[missing]
    response = api.post(files_url(body["session_id"]), payload, format="json")
    assert response.status_code == 400 and missing in response.json()["details"]
    assert FileReference.objects.count() == 0


def test_fields_that_name_another_owner_are_ignored():
    api, body, user = as_user()
    other = factories.make_user()
    response = api.post(
        files_url(body["session_id"]),
        reference(file_id=str(uuid.uuid4()), session_id=str(uuid.uuid4()), user_id=str(other.pk)),
        format="json",
    )
    assert response.status_code == 201
    stored = FileReference.objects.get()
    assert str(stored.session_id) == body["session_id"] and stored.user_id == user.pk


def test_a_viewer_lists_but_does_not_add_and_an_admin_does_not_add_to_others():
    tenant = factories.make_tenant()
    viewer_api, viewer, _ = as_user(tenant=tenant, role=Role.VIEWER)
    admin_api, _, _ = as_user(tenant=tenant, role=Role.ADMIN)
    assert viewer_api.get(files_url(viewer["session_id"])).status_code == 200
    for client in (viewer_api, admin_api):
        response = client.post(files_url(viewer["session_id"]), reference(), format="json")
        assert response.status_code == 403 and response.json()["error"] == "permission_denied"
    assert admin_api.get(files_url(viewer["session_id"])).status_code == 200
    assert FileReference.objects.count() == 0


def test_an_ended_session_takes_no_files():
    api, _, _ = as_user()
    ended = api.post("/api/session/create", {}, format="json").json()["session_id"]
    api.delete(f"/api/session/{ended}")
    response = api.post(files_url(ended), reference(), format="json")
    assert response.status_code == 409 and response.json()["error"] == "session_not_active"
    assert FileReference.objects.count() == 0
