"""The audit trail: each event kind is written, refusals are aggregated, retention prunes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from realtime.services import socket_refusal_count, socket_refusals_flush
from sessions_runtime.models import AuditEvent
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
    assert client.post("/api/auth/refresh", {"refresh_token": body["refresh_token"]}, format="json").status_code == 401
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
