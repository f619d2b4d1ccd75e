"""Fuzzing: the REST API from its own OpenAPI schema (schemathesis), and the token parser
(hypothesis). No input may produce a server error."""

from __future__ import annotations

import contextlib

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from accounts.tokens import ACCESS, REFRESH, token_decode
from core.exceptions import InvalidToken
from tests import factories

schema = schemathesis.openapi.from_wsgi("/openapi.json", get_wsgi_application())


@pytest.fixture
def bearer_token(db):
    return factories.login(APIClient(), factories.make_user())["access_token"]


@contextlib.contextmanager
def _test_connection_kept():
    """The raw WSGI app closes the database connection after each request, as a server
    would; inside a test transaction it must stay open (Django's test client does this)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.mark.django_db
@schema.parametrize()
@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_generated_request_is_a_server_error(case, bearer_token):
    with _test_connection_kept():
        response = case.call(headers={"Authorization": f"Bearer {bearer_token}"})
    assert response.status_code < 500, (case.method, case.formatted_path, response.status_code, response.text[:300])
    if response.status_code >= 400:
        body = response.json()
        assert set(body) >= {"error", "message"}, body


@pytest.mark.parametrize("expected", [ACCESS, REFRESH])
@given(raw=st.one_of(st.text(max_size=600), st.binary(max_size=300).map(lambda b: b.decode("latin1")), st.none(), st.integers()))
@hypothesis_settings(max_examples=300, deadline=None)
def test_the_token_parser_only_ever_raises_invalid_token(raw, expected):
    with pytest.raises(InvalidToken):
        token_decode(raw, expected_type=expected)


_segment = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=", max_size=80)


@given(_segment, _segment, _segment)
@hypothesis_settings(max_examples=300, deadline=None)
def test_jwt_shaped_garbage_is_refused(header, payload, signature):
    with pytest.raises(InvalidToken):
        token_decode(f"{header}.{payload}.{signature}", expected_type=ACCESS)
