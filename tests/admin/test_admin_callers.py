"""The admin is a caller like any other: it creates users and tenants through the services
(audited), and every action it takes is audited with the operator's address, read as the
throttles read it (X-Forwarded-For behind TRUSTED_PROXY_COUNT proxies)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from accounts.models import Membership, Role, Tenant, TenantStatus, User
from core.models import ActorType, AuditEvent
from tests import factories

pytestmark = pytest.mark.django_db

BEHIND_NGINX = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.9"}


@pytest.fixture
def one_proxy(settings):
    """TRUSTED_PROXY_COUNT=1, as settings.py puts it."""
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}


def test_an_end_in_the_admin_behind_a_proxy_is_audited_with_the_operators_address(admin_client, staff, one_proxy):
    tenant = factories.make_tenant()
    session_id = factories.login(APIClient(), factories.make_user(tenant=tenant))["session_id"]
    response = admin_client.post(
        f"/admin/sessions_runtime/runtimesession/{session_id}/end/", {"note": ""}, **BEHIND_NGINX
    )
    assert response.status_code == 302
    row = AuditEvent.objects.get(kind=AuditEvent.Kind.SESSION_ENDED, session_id=session_id)
    assert (row.actor_type, row.actor_id, row.client_address) == (ActorType.ADMIN, staff.pk, "203.0.113.9")


def test_an_accounts_action_behind_a_proxy_is_audited_with_the_operators_address(admin_client, one_proxy):
    user = factories.make_user(tenant=factories.make_tenant())
    response = admin_client.post(
        "/admin/accounts/user/", {"action": "deactivate_users", "_selected_action": [str(user.pk)]}, **BEHIND_NGINX
    )
    assert response.status_code == 302
    row = AuditEvent.objects.get(kind=AuditEvent.Kind.USER_DEACTIVATED, user_id=user.pk)
    assert row.client_address == "203.0.113.9"


def test_the_add_user_form_creates_through_user_create(admin_client, staff):
    tenant = factories.make_tenant()
    response = admin_client.post("/admin/accounts/user/add/", {
        "email": "New.Person@Example.com", "name": "New Person",
        "password1": factories.PASSWORD, "password2": factories.PASSWORD,
        "memberships-TOTAL_FORMS": "1", "memberships-INITIAL_FORMS": "0",
        "memberships-0-tenant": str(tenant.pk), "memberships-0-role": Role.MEMBER,
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    user = User.objects.get(email__iexact="new.person@example.com")
    assert response["Location"].endswith(f"/admin/accounts/user/{user.pk}/change/")
    assert user.check_password(factories.PASSWORD) and not user.is_staff
    created = AuditEvent.objects.get(kind=AuditEvent.Kind.USER_CREATED, user_id=user.pk)
    assert (created.actor_type, created.actor_id) == (ActorType.ADMIN, staff.pk)
    # The inline saved on the add page belongs to the row the service created.
    assert Membership.objects.get(user=user).tenant_id == tenant.pk
    assert User.objects.filter(email__iexact="new.person@example.com").count() == 1


def test_the_add_tenant_form_creates_through_tenant_create(admin_client, staff):
    response = admin_client.post("/admin/accounts/tenant/add/", {
        "name": "Acme", "slug": "acme", "status": TenantStatus.SUSPENDED,
        "memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0",
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    tenant = Tenant.objects.get(slug="acme")
    assert tenant.status == TenantStatus.SUSPENDED
    created = AuditEvent.objects.get(kind=AuditEvent.Kind.TENANT_CREATED, tenant_id=tenant.pk)
    assert (created.actor_type, created.actor_id) == (ActorType.ADMIN, staff.pk)
    assert created.data == {"slug": "acme", "status": TenantStatus.SUSPENDED}
