"""The admin is a caller like any other: forms, inlines and actions save through the
services, destructive actions need their own permission, and the security records are
read-only (issue 13, items 4-11)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.forms import MultiWidget
from rest_framework.test import APIClient

from accounts.models import Membership, Role, Tenant, TenantStatus, User
from core.models import ActorType, AuditEvent
from sessions_runtime.models import EndReason, RuntimeSession, SessionStatus
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def viewer_client(client, db):
    """A staff user who may only view sessions, users and tenants."""
    viewer = User.objects.create_user(email="viewer@example.com", password=factories.PASSWORD, is_staff=True)
    viewer.user_permissions.set(
        Permission.objects.filter(codename__in=["view_runtimesession", "view_user", "view_tenant"])
    )
    client.force_login(viewer)
    return client


def _login() -> tuple[dict, Membership]:
    tenant = factories.make_tenant()
    user = factories.make_user(tenant=tenant)
    body = factories.login(APIClient(), user)
    return body, Membership.objects.get(user=user, tenant=tenant)


def _me(token: str) -> int:
    return APIClient().get("/api/auth/me", HTTP_AUTHORIZATION=f"Bearer {token}").status_code


def _form_data(page) -> dict:
    """The change form's current values, as the browser would post them back."""
    data: dict = {}
    forms = [page.context["adminform"].form]
    for inline in page.context["inline_admin_formsets"]:
        formset = inline.formset
        forms += list(formset.forms)
        for field in formset.management_form:
            data[field.html_name] = field.value()
    for form in forms:
        for bound in form:
            if bound.field.disabled:
                continue
            value = bound.value()
            widget = bound.field.widget
            if isinstance(widget, MultiWidget):
                parts = value if isinstance(value, (list, tuple)) else widget.decompress(value)
                for i, (sub, part) in enumerate(zip(widget.widgets, parts)):
                    data[f"{bound.html_name}_{i}"] = sub.format_value(part) or ""
            elif isinstance(value, bool):
                if value:
                    data[bound.html_name] = "on"
            elif isinstance(value, (list, tuple)):
                data[bound.html_name] = [str(v) for v in value]
            elif value is not None:
                data[bound.html_name] = value
    return data


def _post_change(client, url: str, **changes) -> None:
    page = client.get(url)
    assert page.status_code == 200
    data = {**_form_data(page), **changes}
    for name, value in list(data.items()):
        if value is None:
            del data[name]
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]


# --- 4: a tenant's status edited in its form goes through the suspend service ---------
def test_suspending_a_tenant_in_its_form_ends_its_sessions_and_reactivating_revives_no_token(admin_client):
    body, membership = _login()
    tenant = membership.tenant
    url = f"/admin/accounts/tenant/{tenant.pk}/change/"
    _post_change(admin_client, url, status=TenantStatus.SUSPENDED)
    session = RuntimeSession.objects.get(pk=body["session_id"])
    assert session.status == SessionStatus.ENDED and session.end_reason == EndReason.TENANT_SUSPENDED
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.TENANT_SUSPENDED, tenant=tenant,
                                     actor_type=ActorType.ADMIN).exists()
    _post_change(admin_client, url, status=TenantStatus.ACTIVE)
    assert Tenant.objects.get(pk=tenant.pk).status == TenantStatus.ACTIVE
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.TENANT_ACTIVATED, tenant=tenant).exists()
    assert _me(body["access_token"]) == 401
    assert APIClient().post("/api/auth/refresh", {"refresh_token": body["refresh_token"]}, format="json").status_code == 401


def test_a_staff_user_without_the_suspend_permission_cannot_change_a_tenants_status(db, client):
    _, membership = _login()
    editor = User.objects.create_user(email="editor@example.com", password=factories.PASSWORD, is_staff=True)
    editor.user_permissions.set(Permission.objects.filter(codename__in=["view_tenant", "change_tenant"]))
    client.force_login(editor)
    url = f"/admin/accounts/tenant/{membership.tenant_id}/change/"
    page = client.get(url)
    assert "status" not in page.context["adminform"].form.fields
    client.post(url, {**_form_data(page), "status": TenantStatus.SUSPENDED})
    assert Tenant.objects.get(pk=membership.tenant_id).status == TenantStatus.ACTIVE


# --- 5: a role edited in the membership inline goes through membership_add -------------
def test_a_role_changed_in_the_inline_is_audited(admin_client):
    body, membership = _login()
    url = f"/admin/accounts/tenant/{membership.tenant_id}/change/"
    page = admin_client.get(url)
    data = _form_data(page)
    index = next(i for i, form in enumerate(page.context["inline_admin_formsets"][0].formset.forms)
                 if form.instance.pk == membership.pk)
    data[f"memberships-{index}-role"] = Role.VIEWER
    assert admin_client.post(url, data).status_code == 302
    assert Membership.objects.get(pk=membership.pk).role == Role.VIEWER
    row = AuditEvent.objects.get(kind=AuditEvent.Kind.MEMBERSHIP_CHANGED, user_id=body["user_id"],
                                 actor_type=ActorType.ADMIN)
    assert row.data["role"] == Role.VIEWER and row.data["previous_role"] == Role.MEMBER
    # The next request sees the new role (no stale snapshot), so writes are refused.
    me = APIClient().get("/api/auth/me", HTTP_AUTHORIZATION=f"Bearer {body['access_token']}")
    assert me.json()["roles"] == [Role.VIEWER]


# --- 6: unticking "active" deactivates through the service, audited ------------------
def test_unticking_active_deactivates_with_an_audit_row(admin_client):
    body, membership = _login()
    _post_change(admin_client, f"/admin/accounts/user/{body['user_id']}/change/", is_active=None)
    assert not User.objects.get(pk=body["user_id"]).is_active
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.USER_DEACTIVATED, user_id=body["user_id"],
                                     actor_type=ActorType.ADMIN).exists()
    assert RuntimeSession.objects.get(pk=body["session_id"]).end_reason == EndReason.USER_DEACTIVATED
    _post_change(admin_client, f"/admin/accounts/user/{body['user_id']}/change/", is_active="on")
    assert User.objects.get(pk=body["user_id"]).is_active
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.USER_ACTIVATED, user_id=body["user_id"]).exists()


# --- 7: an admin's password change ends the user's sessions --------------------------
def test_an_admin_password_change_ends_the_users_sessions(admin_client):
    body, _ = _login()
    response = admin_client.post(
        f"/admin/accounts/user/{body['user_id']}/password/",
        {"password1": "a-brand-new-pass-9", "password2": "a-brand-new-pass-9", "usable_password": "true"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert User.objects.get(pk=body["user_id"]).check_password("a-brand-new-pass-9")
    assert RuntimeSession.objects.get(pk=body["session_id"]).end_reason == EndReason.PASSWORD_CHANGED
    assert _me(body["access_token"]) == 401
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.PASSWORD_CHANGED, user_id=body["user_id"]).exists()


# --- 8: destructive actions need their own permission --------------------------------
@pytest.mark.parametrize(
    "url, action, target",
    [
        ("/admin/sessions_runtime/runtimesession/", "end_sessions", "session_id"),
        ("/admin/accounts/user/", "deactivate_users", "user_id"),
        ("/admin/accounts/tenant/", "suspend_tenants", "tenant_id"),
    ],
)
def test_a_view_only_staff_user_cannot_run_destructive_actions(viewer_client, url, action, target):
    body, _ = _login()
    page = viewer_client.get(url)
    assert page.status_code == 200
    assert action not in page.content.decode()
    viewer_client.post(url, {"action": action, "_selected_action": [body[target]]})
    session = RuntimeSession.objects.get(pk=body["session_id"])
    assert session.status == SessionStatus.ACTIVE
    assert User.objects.get(pk=body["user_id"]).is_active


# --- 9: the admin's login page is throttled and audited ------------------------------
def test_admin_login_is_throttled_and_audited(client, staff, settings):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "ADMIN_LOGIN_FAILURES_PER_MINUTE": 3}
    from django.core.cache import cache

    cache.clear()
    statuses = [
        client.post("/admin/login/", {"username": staff.email, "password": "wrong"}).status_code for _ in range(5)
    ]
    assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429]
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.LOGIN_FAILED, data__via="admin").count() == 3
    response = client.post("/admin/login/", {"username": staff.email, "password": "wrong"})
    assert response.status_code == 429 and int(response["Retry-After"]) >= 1
    assert response.json()["error"] == "rate_limited"


def test_a_right_admin_login_is_audited(client, staff):
    from django.core.cache import cache

    cache.clear()
    response = client.post("/admin/login/?next=/admin/", {"username": staff.email, "password": factories.PASSWORD})
    assert response.status_code == 302
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.LOGIN_SUCCEEDED, data__via="admin", user=staff).exists()


# --- 10: the audit changelist shows events without a user ----------------------------
def test_the_audit_list_shows_events_without_a_user(admin_client):
    APIClient().post("/api/auth/login", {"email": "nobody@example.com", "password": "x"}, format="json")
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.LOGIN_FAILED, user__isnull=True).exists()
    page = admin_client.get("/admin/core/auditevent/", {"kind__exact": AuditEvent.Kind.LOGIN_FAILED, "q": ""})
    assert page.status_code == 200
    assert page.context["cl"].result_count >= 1
    executions = admin_client.get("/admin/sessions_runtime/execution/", {"q": ""})
    assert executions.status_code == 200


# --- 11: simplejwt's token ledger is read-only ---------------------------------------
def test_the_token_ledger_is_read_only(admin_client):
    from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

    _login()
    token = OutstandingToken.objects.first()
    assert admin_client.get(f"/admin/token_blacklist/outstandingtoken/{token.pk}/change/").status_code == 200
    response = admin_client.post(f"/admin/token_blacklist/outstandingtoken/{token.pk}/change/", {"jti": "x"})
    assert response.status_code == 403
    assert admin_client.get("/admin/token_blacklist/blacklistedtoken/add/").status_code == 403
    listing = admin_client.post(
        "/admin/token_blacklist/outstandingtoken/", {"action": "delete_selected", "_selected_action": [token.pk]}
    )
    assert OutstandingToken.objects.filter(pk=token.pk).exists() and listing.status_code in (200, 302)
    assert not BlacklistedToken.objects.exists()
