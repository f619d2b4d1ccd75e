"""Observability: health, liveness and readiness probes, metrics and request ids."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests import factories

pytestmark = pytest.mark.django_db


def test_ready_checks_the_database_and_the_channel_layer():
    response = APIClient().get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "channel_layer": "ok"}}


def test_live_is_liveness_only_and_asks_no_dependency(monkeypatch):
    monkeypatch.setattr("symphainy.health.database_check", lambda: False)
    monkeypatch.setattr("symphainy.health.channel_layer_check", lambda: False)
    response = APIClient().get("/live")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    assert APIClient().get("/ready").status_code == 503
    # /health is the contract's dependency check, like /ready.
    assert APIClient().get("/health").status_code == 503


@pytest.mark.parametrize("path", ["/live", "/health", "/ready", "/metrics"])
def test_probes_and_scrapes_by_ip_are_not_refused_by_allowed_hosts(settings, path):
    settings.ALLOWED_HOSTS = ["gateway.example.com"]
    assert APIClient().get(path, HTTP_HOST="10.1.2.3:8000").status_code == 200
    # Every other path still validates the Host.
    assert APIClient().get("/api/auth/me", HTTP_HOST="10.1.2.3:8000").status_code == 400


def test_metrics_answer_only_allowed_networks_or_the_token(settings):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "METRICS_ALLOWED_NETWORKS": ["10.0.0.0/8"], "METRICS_TOKEN": "s3cret"}
    client = APIClient()
    response = client.get("/metrics")  # from 127.0.0.1
    assert response.status_code == 403 and response.json()["error"] == "permission_denied"
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.9.9.9").status_code == 200


def test_metrics_count_http_requests_by_view_and_status_class():
    from prometheus_client import REGISTRY

    labels = {"method": "GET", "status": "4xx", "view": "auth-me"}
    before = REGISTRY.get_sample_value("symphainy_http_requests_total", labels) or 0
    client = APIClient()
    client.get("/api/auth/me")
    assert REGISTRY.get_sample_value("symphainy_http_requests_total", labels) == before + 1
    text = client.get("/metrics").content.decode()
    assert 'symphainy_http_requests_total{method="GET",status="4xx",view="auth-me"}' in text
    assert "symphainy_http_request_duration_seconds_bucket" in text


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
    for name in ("symphainy_socket_closes_total", "symphainy_socket_refusals_total", "symphainy_open_sockets", "symphainy_handshakes_total", "symphainy_session_ends_total", "symphainy_execution_duration_seconds"):
        assert name in text


def test_request_id_is_returned_and_a_sane_incoming_one_kept():
    client = APIClient()
    generated = client.get("/health")["X-Request-ID"]
    assert len(generated) == 32
    assert client.get("/health", HTTP_X_REQUEST_ID="abc-123")["X-Request-ID"] == "abc-123"
    assert client.get("/health", HTTP_X_REQUEST_ID="bad id\n")["X-Request-ID"] != "bad id\n"


def test_django_request_lines_carry_the_request_id():
    import logging

    from core.middleware import RequestIdFilter

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("django.request")
    logger.addHandler(handler)
    try:
        APIClient().get("/api/nothing/here", HTTP_X_REQUEST_ID="req-404")
    finally:
        logger.removeHandler(handler)
    assert [record.request_id for record in records] == ["req-404"]


@pytest.mark.django_db(transaction=True)
async def test_socket_log_lines_carry_the_handshake_request_id(monkeypatch):
    from channels.db import database_sync_to_async
    from channels.testing import WebsocketCommunicator

    from core.exceptions import NotAuthenticated
    from core.middleware import request_id_var
    from realtime.presence import socket_refusals_flush
    from symphainy.asgi import application

    seen: list[str] = []

    async def authorize(credentials, *, subscribe):
        seen.append(request_id_var.get())
        raise NotAuthenticated()

    monkeypatch.setattr("realtime.consumers.handshake_authorize", authorize)
    communicator = WebsocketCommunicator(
        application, "/api/runtime/agent", headers=[(b"origin", b"http://127.0.0.1"), (b"x-request-id", b"sock-1")]
    )
    await communicator.connect(timeout=5)
    await communicator.disconnect()
    assert seen == ["sock-1"]
    # The refusal is counted for the audit trail; written now, not left to the next test.
    await database_sync_to_async(socket_refusals_flush)()
