"""Health, readiness, metrics and request ids."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests import factories

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/health", "/ready"])
def test_health_and_ready_check_the_database_and_the_channel_layer(path):
    response = APIClient().get(path)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "channel_layer": "ok"}}


def test_ready_is_503_when_the_database_is_down(monkeypatch):
    monkeypatch.setattr("symphainy.health.database_check", lambda: False)
    response = APIClient().get("/ready")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "unavailable", "channel_layer": "ok"}


def test_ready_is_503_when_the_channel_layer_is_down(monkeypatch):
    monkeypatch.setattr("symphainy.health.channel_layer_check", lambda: False)
    assert APIClient().get("/ready").status_code == 503


def test_metrics_count_logins_by_outcome():
    user = factories.make_user()
    client = APIClient()
    client.post("/api/auth/login", {"email": user.email, "password": "nope-nope-nope"}, format="json")
    factories.login(client, user)
    text = client.get("/metrics").content.decode()
    assert 'symphainy_logins_total{outcome="failed"}' in text
    assert 'symphainy_logins_total{outcome="succeeded"}' in text
    for name in ("symphainy_open_sockets", "symphainy_handshakes_total", "symphainy_session_ends_total", "symphainy_execution_duration_seconds"):
        assert name in text


def test_request_id_is_returned_and_a_sane_incoming_one_kept():
    client = APIClient()
    generated = client.get("/health")["X-Request-ID"]
    assert len(generated) == 32
    assert client.get("/health", HTTP_X_REQUEST_ID="abc-123")["X-Request-ID"] == "abc-123"
    assert client.get("/health", HTTP_X_REQUEST_ID="bad id\n")["X-Request-ID"] != "bad id\n"
