"""Every HTTP error answer, inside DRF or outside it, is the declared error's, byte for byte."""

from __future__ import annotations

import json

import pytest
from django.core.cache import cache

from accounts.models import User
from core.exceptions import InvalidRequest, RateLimited, RequestTooLarge
from core.http import error_response, request_too_large_response_bytes
from tests import factories


def test_the_body_limit_answers_as_the_server_level_refusal_does(client, settings):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "MAX_REQUEST_BYTES": 1024}
    response = client.post("/api/auth/login", data=b"{}", content_type="application/json", CONTENT_LENGTH="4096")
    assert response.status_code == 413
    assert response.content == request_too_large_response_bytes(1024).split(b"\r\n\r\n", 1)[1]
    assert response.content == error_response(RequestTooLarge(details={"limit_bytes": 1024})).content


def test_a_bad_content_length_is_the_declared_invalid_request(client):
    response = client.post("/api/auth/login", data=b"{}", content_type="application/json", CONTENT_LENGTH="-1")
    assert response.status_code == 400
    assert response.content == error_response(InvalidRequest("Content-Length is not a number of bytes.")).content


def test_error_response_carries_the_headers_the_api_handler_gives():
    response = error_response(RateLimited(retry_after=2.2))
    assert response.status_code == 429 and response["Retry-After"] == "3"
    assert json.loads(response.content) == {"error": "rate_limited", "message": "Too many requests."}


@pytest.mark.django_db
def test_the_admin_login_throttle_answers_with_the_declared_error(client, settings):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "ADMIN_LOGIN_FAILURES_PER_MINUTE": 1}
    staff = User.objects.create_superuser(email="admin@example.com", password=factories.PASSWORD)
    cache.clear()
    client.post("/admin/login/", {"username": staff.email, "password": "wrong"})
    response = client.post("/admin/login/", {"username": staff.email, "password": "wrong"})
    assert response.status_code == 429 and 1 <= int(response["Retry-After"]) <= 60
    expected = error_response(RateLimited("Too many failed logins from this address. Retry later."))
    assert response.content == expected.content
