"""Safe defaults: self-registration can be closed; the demo seed never resets a user."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from accounts.models import User
from tests import factories

pytestmark = pytest.mark.django_db


def test_register_is_open_by_default(api):
    response = api.post("/api/auth/register", {"email": "new@example.com", "password": "a-long-pass-phrase-1"}, format="json")
    assert response.status_code == 201


def test_register_is_403_with_the_contract_body_when_closed(api, settings):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "REGISTRATION_OPEN": False}
    response = api.post("/api/auth/register", {"email": "new@example.com", "password": "a-long-pass-phrase-1"}, format="json")
    assert response.status_code == 403
    assert response.json()["error"] == "registration_closed" and response.json()["message"]
    assert not User.objects.filter(email="new@example.com").exists()


def test_seed_demo_never_resets_a_password_or_reactivates_a_user(settings):
    call_command("seed_demo")
    user = User.objects.get(email="demo@symphainy.local")
    user.set_password("changed-by-the-operator-1")
    user.is_active = False
    user.save()
    call_command("seed_demo")
    user.refresh_from_db()
    assert user.check_password("changed-by-the-operator-1")
    assert user.is_active is False
    assert not user.check_password(factories.PASSWORD)
