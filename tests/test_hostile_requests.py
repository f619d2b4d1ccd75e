"""Hostile HTTP requests: each gets the contract's JSON error and writes nothing."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from accounts.models import User
from sessions_runtime.models import Execution, RuntimeSession, SessionState, SessionStatus
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def caller(db):
    user = factories.make_user()
    body = factories.login(APIClient(), user)
    return user, body, factories.bearer(APIClient(), body["access_token"])


def _is_contract_error(response, status: int) -> None:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["error"], str) and isinstance(body["message"], str)


# --- ids that are not ids -----------------------------------------------------------------
HOSTILE_IDS = [
    "1' OR '1'='1",
    "1;DROP TABLE sessions_runtime_runtimesession;--",
    "..%2F..%2Fetc%2Fpasswd",
    "%00",
    "abc%00def",
    "%F0%9F%99%82",
    "00000000-0000-0000-0000-000000000000",
    "x" * 300,
]


@pytest.mark.parametrize("raw", HOSTILE_IDS)
@pytest.mark.parametrize("template", [
    "/api/session/{}", "/api/session/{}/state", "/api/session/{}/files", "/api/execution/{}/status",
])
def test_hostile_ids_are_404_and_change_nothing(caller, template, raw):
    _, body, client = caller
    response = client.get(template.format(raw))
    assert response.status_code in {400, 404}, response.content
    _is_contract_error(response, response.status_code)
    assert RuntimeSession.objects.get(pk=body["session_id"]).status == SessionStatus.ACTIVE


@pytest.mark.parametrize("raw", HOSTILE_IDS)
def test_hostile_ids_cannot_end_anything(caller, raw):
    _, body, client = caller
    response = client.delete(f"/api/session/{raw}")
    assert response.status_code in {400, 404}
    assert RuntimeSession.objects.filter(status=SessionStatus.ACTIVE).count() == 1


@pytest.mark.parametrize("raw", ["1' OR 1=1--", "\x00", "🙂", "../../x"])
def test_hostile_session_ids_in_bodies_are_refused(caller, raw):
    _, _, client = caller
    response = client.post("/api/intent/submit", {"session_id": raw, "intent_type": "echo", "parameters": {}}, format="json")
    assert response.status_code in {400, 404}
    _is_contract_error(response, response.status_code)
    assert not Execution.objects.exists()


def test_a_nul_byte_in_a_login_email_is_a_clear_error(db):
    response = APIClient().post("/api/auth/login", {"email": "a\x00@example.com", "password": "x"}, format="json")
    assert response.status_code in {400, 401}
    _is_contract_error(response, response.status_code)


def test_a_nul_byte_in_register_fields_is_400_and_creates_nothing(db):
    response = APIClient().post(
        "/api/auth/register", {"email": "nul@example.com", "password": "long-enough-pass\x00word", "name": "N\x00"},
        format="json",
    )
    _is_contract_error(response, 400)
    assert not User.objects.filter(email="nul@example.com").exists()


# --- fields that try to set what the server owns -----------------------------------------
def test_register_ignores_owner_fields(db):
    other = factories.make_tenant()
    response = APIClient().post("/api/auth/register", {
        "email": "grab@example.com", "password": "a-long-enough-password", "tenant_id": str(other.pk),
        "user_id": "00000000-0000-0000-0000-000000000001", "is_staff": True, "is_superuser": True, "role": "owner",
    }, format="json")
    assert response.status_code == 201, response.content
    user = User.objects.get(email="grab@example.com")
    assert not user.is_staff and not user.is_superuser
    assert str(user.pk) != "00000000-0000-0000-0000-000000000001"
    assert response.json()["tenant_id"] != str(other.pk)
    assert not other.memberships.filter(user=user).exists()


def test_session_create_ignores_user_tenant_and_status_fields(caller):
    user, body, client = caller
    stranger = factories.make_user()
    response = client.post("/api/session/create", {
        "user_id": str(stranger.pk), "tenant_id": str(stranger.memberships.get().tenant_id),
        "status": "ended", "metadata": {"device": "tablet"},
    }, format="json")
    assert response.status_code == 201, response.content
    session = RuntimeSession.objects.get(pk=response.json()["session_id"])
    assert session.user_id == user.pk and str(session.tenant_id) == body["tenant_id"]
    assert session.status == SessionStatus.ACTIVE
    assert not RuntimeSession.objects.filter(user=stranger).exists()


def test_intent_submit_cannot_name_another_users_session(caller):
    _, _, client = caller
    stranger = factories.make_user()
    theirs = factories.login(APIClient(), stranger)["session_id"]
    response = client.post("/api/intent/submit", {"session_id": theirs, "intent_type": "echo", "parameters": {}}, format="json")
    _is_contract_error(response, 404)
    assert not Execution.objects.exists()


def test_state_cannot_be_written_into_another_tenants_session(caller):
    _, _, client = caller
    stranger = factories.make_user()
    theirs = factories.login(APIClient(), stranger)["session_id"]
    response = client.put(f"/api/session/{theirs}/state", {"x": 1}, format="json", HTTP_IF_MATCH="0")
    _is_contract_error(response, 404)
    assert not SessionState.objects.filter(session_id=theirs).exclude(data={}).exists()


# --- transport ------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/api/auth/login", "/api/session/create", "/api/intent/submit"])
def test_ten_megabyte_bodies_are_413(caller, path):
    _, _, client = caller
    before = RuntimeSession.objects.count()
    response = client.generic("POST", path, b'{"x": "' + b"a" * (10 * 1024 * 1024) + b'"}', content_type="application/json")
    _is_contract_error(response, 413)
    assert RuntimeSession.objects.count() == before


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
def test_a_wrong_content_type_is_415(caller, content_type):
    _, _, client = caller
    response = client.generic("POST", "/api/session/create", b"metadata=1", content_type=content_type)
    _is_contract_error(response, 415)


@pytest.mark.parametrize("method, path", [
    ("get", "/api/auth/logout"), ("put", "/api/auth/me"), ("delete", "/api/sessions"), ("get", "/api/intent/submit"),
])
def test_a_wrong_method_is_405(caller, method, path):
    _, _, client = caller
    _is_contract_error(getattr(client, method)(path), 405)


@pytest.mark.parametrize("raw", [b"{", b"[1, 2", b'{"a": }', b"\xff\xfe", b"null", b'"text"'])
def test_malformed_json_is_400_and_creates_nothing(caller, raw):
    _, _, client = caller
    before = RuntimeSession.objects.count()
    response = client.generic("POST", "/api/session/create", raw, content_type="application/json")
    _is_contract_error(response, 400)
    assert RuntimeSession.objects.count() == before


@pytest.mark.parametrize("host", ["evil.example.com", "127.0.0.1:8000@evil.example.com", "localhost\r\nX: y"])
def test_a_spoofed_host_is_400(settings, host):
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
    response = APIClient().get("/api/auth/me", HTTP_HOST=host)
    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/json")


def test_unknown_paths_are_json_404(db):
    response = APIClient().get("/api/nothing/here")
    _is_contract_error(response, 404)



# --- JSON that parses badly ---------------------------------------------------------------
@pytest.mark.parametrize("raw", [
    "[" * 100_000 + "]" * 100_000,
    '{"email": "a@b.c", "password": ' + "[" * 65 + "]" * 65 + "}",
    '{"email": "a@b.c", "password": NaN}',
    '{"email": "a@b.c", "password": Infinity}',
    '{"email": "a@b.c", "password": -Infinity}',
])
def test_deep_or_non_finite_json_is_400_not_500(raw):
    response = APIClient().post("/api/auth/login", data=raw, content_type="application/json")
    _is_contract_error(response, 400)
    assert response.json()["error"] == "malformed_json"


def test_nesting_at_the_limit_is_accepted(caller):
    _, body, client = caller
    nested = {"data": {"x": [[[[[[[[1]]]]]]]]}}
    response = client.put(f"/api/session/{body['session_id']}/state", nested, format="json", HTTP_IF_MATCH="0")
    assert response.status_code == 200, response.content


def test_a_csrf_failure_is_the_contract_json(db):
    from django.test import Client

    response = Client(enforce_csrf_checks=True).post("/admin/login/", {"username": "a", "password": "b"})
    _is_contract_error(response, 403)
    assert response.json()["error"] == "csrf_failed"


def test_testserver_is_no_default_allowed_host():
    from symphainy import settings as project_settings

    assert "testserver" not in project_settings.ALLOWED_HOSTS
