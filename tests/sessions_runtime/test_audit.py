"""The audit trail: each event kind is written, refusals are aggregated, retention prunes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from core.models import AuditEvent
from realtime.presence import socket_refusal_count, socket_refusals_flush
from tests import factories

pytestmark = pytest.mark.django_db


def kinds() -> list[str]:
    return list(AuditEvent.objects.order_by("id").values_list("kind", flat=True))


def test_login_success_and_failure_are_audited_without_the_password():
    user = factories.make_user()
    client = APIClient()
    client.post("/api/auth/login", {"email": user.email, "password": "wrong-password-123"}, format="json", REMOTE_ADDR="10.1.2.3")
    factories.login(client, user)
    failed = AuditEvent.objects.get(kind=AuditEvent.Kind.LOGIN_FAILED)
    assert failed.client_address == "10.1.2.3" and failed.data["email"] == user.email
    assert "wrong-password-123" not in str(failed.data)
    assert AuditEvent.Kind.LOGIN_SUCCEEDED in kinds() and AuditEvent.Kind.SESSION_CREATED in kinds()


def test_refresh_reuse_and_session_end_are_audited():
    user = factories.make_user()
    body = factories.login(APIClient(), user)
    client = APIClient()
    assert client.post("/api/auth/refresh", {"refresh_token": body["refresh_token"]}, format="json").status_code == 200
    assert client.post("/api/auth/refresh", {"refresh_token": body["refresh_token"]}, format="json", REMOTE_ADDR="10.9.9.9").status_code == 401  # another client: theft
    reuse = AuditEvent.objects.get(kind=AuditEvent.Kind.REFRESH_TOKEN_REUSED)
    assert str(reuse.session_id) == body["session_id"] and str(reuse.user_id) == body["user_id"]
    ended = AuditEvent.objects.get(kind=AuditEvent.Kind.SESSION_ENDED)
    assert ended.data == {"reason": "refresh_token_reuse"} and ended.actor_type == "system"


def test_refused_sockets_are_aggregated_into_one_row_per_code():
    for _ in range(500):
        socket_refusal_count(close_code=4401)
    socket_refusal_count(close_code=4404)
    assert socket_refusals_flush() == 2
    rows = {row.data["close_code"]: row.data["count"] for row in AuditEvent.objects.filter(kind=AuditEvent.Kind.SOCKET_REFUSED)}
    assert rows == {4401: 500, 4404: 1}
    assert socket_refusals_flush() == 0


def test_prune_keeps_recent_rows(capsys):
    old = AuditEvent.objects.create(kind=AuditEvent.Kind.LOGIN_FAILED, actor_type="user", at=timezone.now() - timedelta(days=100))
    recent = AuditEvent.objects.create(kind=AuditEvent.Kind.LOGIN_FAILED, actor_type="user")
    call_command("audit", "prune", "--dry-run")
    assert "Would delete 1" in capsys.readouterr().out
    assert AuditEvent.objects.filter(pk=old.pk).exists()
    call_command("audit", "prune")
    assert "Deleted 1" in capsys.readouterr().out
    assert not AuditEvent.objects.filter(pk=old.pk).exists() and AuditEvent.objects.filter(pk=recent.pk).exists()
    call_command("audit", "prune", "--days", "0")
    assert not AuditEvent.objects.exists()


def test_prune_rejects_bad_arguments():
    with pytest.raises(CommandError):
        call_command("audit", "prune", "--days", "-1")
    with pytest.raises(CommandError):
        call_command("audit", "nonsense")


def test_account_changes_are_audited_with_their_actor():
    from accounts.models import Role
    from accounts.services import membership_add, membership_remove, tenant_create, tenant_suspend, user_deactivate
    from core.caller import Caller
    from core.models import ActorType

    command = Caller.command()
    user = factories.make_user()
    AuditEvent.objects.all().delete()

    tenant = tenant_create(name="Audited", caller=command)
    membership_add(user=user, tenant=tenant, role=Role.MEMBER, caller=command)
    membership_add(user=user, tenant=tenant, role=Role.ADMIN, caller=command)
    membership_remove(user=user, tenant=tenant, caller=command)
    membership_remove(user=user, tenant=tenant, caller=command)  # already gone: nothing more
    tenant_suspend(tenant=tenant, caller=command)
    tenant_suspend(tenant=tenant, caller=command)  # already suspended: nothing more
    user_deactivate(user=user, caller=command)
    user_deactivate(user=user, caller=command)

    events = list(AuditEvent.objects.order_by("id"))
    assert [e.kind for e in events] == [
        "tenant.created", "membership.changed", "membership.changed", "membership.removed",
        "tenant.suspended", "user.deactivated",
    ]
    assert {e.actor_type for e in events} == {ActorType.COMMAND}
    assert events[1].data["previous_role"] is None and events[2].data == {
        "role": Role.ADMIN, "previous_role": Role.MEMBER, "primary": False,
    }
    assert events[3].user_id == user.pk and events[3].tenant_id == tenant.pk


def test_registration_audits_the_tenant_and_membership_as_the_user(db):
    response = APIClient().post(
        "/api/auth/register", {"email": "audit-reg@example.com", "password": "a-long-enough-password"}, format="json"
    )
    assert response.status_code == 201
    rows = AuditEvent.objects.filter(user_id=response.json()["user_id"]) | AuditEvent.objects.filter(
        tenant_id=response.json()["tenant_id"], kind="tenant.created"
    )
    by_kind = {row.kind: row for row in rows}
    assert {"tenant.created", "membership.changed", "user.registered", "session.created"} <= set(by_kind)
    assert by_kind["tenant.created"].actor_id == by_kind["user.registered"].actor_id == by_kind["membership.changed"].user_id


def test_seed_demo_goes_through_the_services_and_a_rerun_audits_nothing(capsys):
    call_command("seed_demo")
    first = kinds()
    assert "tenant.created" in first and "membership.changed" in first
    call_command("seed_demo")
    assert kinds() == first
