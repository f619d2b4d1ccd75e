"""Suite-wide fixtures, and the services gate: with SYMPHAINY_REQUIRE_SERVICES=1 a missing
PostgreSQL or Redis fails the run instead of skipping anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.core.cache import cache
from rest_framework.test import APIClient

from sessions_runtime.access import access_cache_clear
from tests import factories, frames
from tests.frames import FrameLog


def _services_problem() -> str | None:
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        return "DATABASE_URL does not point at PostgreSQL"
    if not settings.REDIS_URL:
        return "REDIS_URL is not set"
    import psycopg

    from core.redis_options import RedisTarget

    db = settings.DATABASES["default"]
    try:
        psycopg.connect(
            host=db["HOST"] or None, port=db["PORT"] or None, user=db["USER"] or None,
            password=db["PASSWORD"] or None, dbname=db["NAME"], connect_timeout=5,
        ).close()
    except Exception as exc:  # noqa: BLE001
        return f"PostgreSQL is not reachable: {exc}"
    try:
        RedisTarget.from_settings(settings).client(socket_connect_timeout=5).ping()
    except Exception as exc:  # noqa: BLE001
        return f"Redis is not reachable: {exc}"
    return None


def pytest_sessionstart(session: pytest.Session) -> None:
    # Connections opened in database_sync_to_async's worker thread must not outlive the
    # call, or PostgreSQL refuses to drop the test database at the end of the run.
    from django.db import connections

    connections.settings["default"]["CONN_MAX_AGE"] = 0
    test_name = settings.DATABASES["default"].get("TEST", {}).get("NAME")
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3") and test_name:
        Path(test_name).parent.mkdir(parents=True, exist_ok=True)
    if settings.REQUIRE_SERVICES:
        problem = _services_problem()
        if problem:
            pytest.exit(f"SYMPHAINY_REQUIRE_SERVICES=1 but {problem}", returncode=3)


def services_available() -> bool:
    return settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and bool(settings.REDIS_URL)


def services_server_marks() -> list[pytest.MarkDecorator]:
    """The marks of a module whose tests start servers on the real PostgreSQL and Redis:
    skipped on the embedded defaults, run (never skipped) with SYMPHAINY_REQUIRE_SERVICES=1."""
    return [
        pytest.mark.server,
        pytest.mark.services,
        pytest.mark.django_db(transaction=True),
        pytest.mark.skipif(not services_available(), reason="needs PostgreSQL and Redis (DATABASE_URL, REDIS_URL)"),
    ]


@pytest.fixture(autouse=True)
def _test_settings(settings):
    settings.PASSWORD_HASHERS = ["tests.hashers.FastArgon2PasswordHasher"]
    cache.clear()
    access_cache_clear()
    yield
    cache.clear()
    access_cache_clear()


@pytest.fixture(autouse=True)
def frames_checked(monkeypatch):
    """Every frame an in-process socket exchanges matches /asyncapi.json (tests/frames.py)."""
    log = FrameLog()
    log.install(monkeypatch)
    monkeypatch.setattr(frames, "current", log)
    yield log
    if log.problems:
        pytest.fail(
            f"{len(log.problems)} socket frame(s) do not match the AsyncAPI document (realtime/schema.py):\n"
            + "\n".join(log.problems[:20]), pytrace=False,
        )


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def tenant(db):
    return factories.make_tenant()


@pytest.fixture
def user(db, tenant):
    return factories.make_user(tenant=tenant)


@pytest.fixture
def logged_in(api, user):
    """A client authenticated as `user`, and the login body."""
    body = factories.login(api, user)
    factories.bearer(api, body["access_token"])
    return api, body
