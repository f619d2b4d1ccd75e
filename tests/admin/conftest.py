"""The admin's tests sign in as a superuser."""

from __future__ import annotations

import pytest

from accounts.models import User
from tests import factories


@pytest.fixture
def staff(db):
    return User.objects.create_superuser(email="admin@example.com", password=factories.PASSWORD)


@pytest.fixture
def admin_client(client, staff):
    client.force_login(staff)
    return client
