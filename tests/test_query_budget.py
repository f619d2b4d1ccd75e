"""The database budget of the hot paths: one query per authenticated REST request, two
per socket handshake (the check, and the connection record)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from accounts.tokens import ACCESS, token_decode
from realtime.grants import socket_authorize
from realtime.presence import connection_open
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def login_body(db):
    return factories.login(APIClient(), factories.make_user())


def test_an_authenticated_rest_request_takes_one_query(login_body, django_assert_num_queries):
    """The token check is one query; /api/auth/me adds one for the tenant's name."""
    client = factories.bearer(APIClient(), login_body["access_token"])
    with django_assert_num_queries(2) as captured:
        response = client.get("/api/auth/me")
    assert response.status_code == 200
    assert "accounts_tenant" in captured.captured_queries[-1]["sql"]


def test_the_handshake_takes_two_queries(login_body, django_assert_num_queries):
    claims = token_decode(login_body["access_token"], expected_type=ACCESS)
    with django_assert_num_queries(2):
        grant = socket_authorize(claims=claims, session_id=claims.session_id)
        connection_open(session_id=grant.session_id, user_id=grant.user_id, channel_name="test.channel!1")
    assert str(grant.session_id) == login_body["session_id"]


def test_the_users_socket_records_are_counted_in_the_check_query(login_body, django_assert_num_queries):
    """What the socket cap falls back to without Redis comes with the check, at no cost (the
    count in Redis is a Redis round trip, no query: docs/architecture.md#the-per-user-socket-cap)."""
    claims = token_decode(login_body["access_token"], expected_type=ACCESS)
    connection_open(session_id=claims.session_id, user_id=claims.user_id, channel_name="c!1")
    with django_assert_num_queries(1):
        grant = socket_authorize(claims=claims, session_id=claims.session_id)
    assert grant.user_sockets_recorded == 1


def test_a_login_takes_at_most_ten_statements(db, django_assert_max_num_queries):
    """The password read, the membership, the locked policy read, the active sessions, then
    the session, its audit row, the refresh token's ledger row and the login's audit row
    (BEGIN and COMMIT counted too)."""
    from accounts.services import auth_login

    user = factories.make_user()
    with django_assert_max_num_queries(10):
        auth_login(email=user.email, password=factories.PASSWORD)
