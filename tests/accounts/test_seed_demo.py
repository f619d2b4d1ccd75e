"""`seed_demo` creates its user through `user_create`, so the audit trail has it."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from accounts.models import User
from core.models import ActorType, AuditEvent

pytestmark = pytest.mark.django_db


def test_seed_demo_creates_its_user_through_the_service(settings, capsys):
    call_command("seed_demo", email="seed@example.com", password="a-long-enough-password")
    user = User.objects.get(email="seed@example.com")
    created = AuditEvent.objects.get(kind=AuditEvent.Kind.USER_CREATED, user_id=user.pk)
    assert created.actor_type == ActorType.COMMAND
