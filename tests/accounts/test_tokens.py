"""Hostile tokens against the one token check, through the REST API (the socket uses the
same function; tests/realtime covers the close codes)."""

from __future__ import annotations

import base64
import json
import socket
import time
from datetime import timedelta
from types import SimpleNamespace
from unittest import mock

import jwt
import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Membership, Role
from accounts import tokens
from accounts.tokens import ACCESS, REFRESH, token_decode
from core.exceptions import InvalidToken, TokenExpired
from tests import factories

pytestmark = pytest.mark.django_db
OTHER_KEY = "another-key-that-is-long-enough-for-hs256-signing"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _parts(token: str) -> tuple[dict, dict, str]:
    header, payload, signature = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return (json.loads(base64.urlsafe_b64decode(pad(header))), json.loads(base64.urlsafe_b64decode(pad(payload))), signature)


def _sign(settings, claims: dict, *, headers: dict | None = None, key: str | None = None) -> str:
    return jwt.encode(claims, key or settings.SIMPLE_JWT["SIGNING_KEY"], algorithm="HS256", headers=headers)


def _me(token: str):
    return factories.bearer(APIClient(), token).get("/api/auth/me")


@pytest.fixture
def issued(db):
    user = factories.make_user()
    body = factories.login(APIClient(), user)
    return user, body, _parts(body["access_token"])[1]


def test_the_issued_token_works(issued):
    _, body, _ = issued
    assert _me(body["access_token"]).status_code == 200


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_in_any_case_is_refused(issued, alg):
    _, _, claims = issued
    token = f"{_b64(json.dumps({'alg': alg, 'typ': 'JWT'}).encode())}.{_b64(json.dumps(claims).encode())}."
    assert _me(token).status_code == 401


@pytest.mark.parametrize("alg", ["HS384", "HS512"])
def test_another_hmac_algorithm_with_the_right_key_is_refused(settings, issued, alg):
    """The algorithm is pinned: a token must not pick its own."""
    _, _, claims = issued
    token = jwt.encode(claims, settings.SIMPLE_JWT["SIGNING_KEY"], algorithm=alg)
    assert _me(token).status_code == 401


def test_a_token_signed_with_another_key_is_refused(settings, issued):
    _, _, claims = issued
    assert _me(_sign(settings, claims, key=OTHER_KEY)).status_code == 401


def test_a_flipped_payload_bit_is_refused(issued):
    _, body, _ = issued
    header, payload, signature = body["access_token"].split(".")
    raw = bytearray(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    raw[10] ^= 0x01
    assert _me(f"{header}.{_b64(bytes(raw))}.{signature}").status_code == 401


def test_an_empty_signature_is_refused(issued):
    _, body, _ = issued
    header, payload, _ = body["access_token"].split(".")
    assert _me(f"{header}.{payload}.").status_code == 401


def test_a_passed_exp_is_refused_as_expired(settings, issued):
    _, _, claims = issued
    response = _me(_sign(settings, {**claims, "exp": int(timezone.now().timestamp()) - 60}))
    assert response.status_code == 401 and response.json()["error"] == "token_expired"


def test_nbf_in_the_future_is_refused(settings, issued):
    _, _, claims = issued
    assert _me(_sign(settings, {**claims, "nbf": int(timezone.now().timestamp()) + 3600})).status_code == 401


@pytest.mark.parametrize("claim", ["token_type", "exp", "jti", "user_id", "tid", "sid", "iss"])
def test_a_missing_claim_is_refused(settings, issued, claim):
    _, _, claims = issued
    claims = {k: v for k, v in claims.items() if k != claim}
    assert _me(_sign(settings, claims)).status_code == 401


def test_another_issuer_is_refused(settings, issued):
    _, _, claims = issued
    assert _me(_sign(settings, {**claims, "iss": "someone-else"})).status_code == 401


def test_an_unknown_critical_header_is_refused(settings, issued):
    _, _, claims = issued
    token = _sign(settings, claims, headers={"crit": ["exp-magic"], "exp-magic": True})
    assert _me(token).status_code == 401


def test_key_locating_headers_are_ignored_and_nothing_is_fetched(settings, issued):
    """kid/jku/x5u name keys elsewhere; the service has one key and opens no connection."""
    _, _, claims = issued
    headers = {"kid": "../../etc/passwd", "jku": "http://127.0.0.1:9/jwks.json", "x5u": "http://127.0.0.1:9/cert.pem"}
    with mock.patch.object(socket, "create_connection", side_effect=AssertionError("fetched")) as connect:
        assert _me(_sign(settings, claims, headers=headers)).status_code == 200
        assert _me(_sign(settings, claims, headers=headers, key=OTHER_KEY)).status_code == 401
    connect.assert_not_called()


def test_altered_role_claims_are_ignored(settings, issued):
    user, _, claims = issued
    token = _sign(settings, {**claims, "role": "owner", "roles": ["owner"], "permissions": ["admin", "delete"]})
    body = _me(token).json()
    assert body["roles"] == [Role.MEMBER]
    assert sorted(body["permissions"]) == ["read", "write"]


def test_an_altered_tenant_claim_is_refused(settings, issued):
    """Even a tenant the user belongs to: the token's session belongs to the original one."""
    user, _, claims = issued
    other = factories.make_tenant()
    Membership.objects.create(user=user, tenant=other, role=Role.OWNER)
    assert _me(_sign(settings, {**claims, "tid": str(other.pk)})).status_code == 401


def test_an_altered_user_claim_is_refused(settings, issued):
    _, _, claims = issued
    other = factories.make_user()
    assert _me(_sign(settings, {**claims, "user_id": str(other.pk)})).status_code == 401


def test_a_deleted_users_token_is_refused(issued):
    user, body, _ = issued
    user.delete()
    assert _me(body["access_token"]).status_code == 401


def test_a_deactivated_users_token_is_refused(issued):
    user, body, _ = issued
    type(user).objects.filter(pk=user.pk).update(is_active=False)
    assert _me(body["access_token"]).status_code == 401


def test_a_refresh_token_as_a_bearer_is_refused(issued):
    _, body, _ = issued
    response = _me(body["refresh_token"])
    assert response.status_code == 401 and response.json()["error"] == "invalid_token"


def test_a_removed_membership_refuses_the_token(issued):
    user, body, _ = issued
    Membership.objects.filter(user=user).delete()
    assert _me(body["access_token"]).status_code == 401


@pytest.mark.parametrize("raw", [None, "", 42, "a" * 5000, "a.b", "a.b.c.d", "\x00.\x00.\x00", "ünïcödé.🙂.x"])
def test_token_decode_refuses_junk_with_one_error(raw):
    with pytest.raises(InvalidToken):
        token_decode(raw, expected_type=ACCESS)


def test_expiry_honours_only_the_configured_leeway(settings, issued):
    _, _, claims = issued
    just_expired = _sign(settings, {**claims, "exp": int((timezone.now() - timedelta(seconds=5)).timestamp())})
    assert _me(just_expired).status_code == 401


# --- Verified tokens kept by their string (accounts.tokens._token_verified) -------------------
def _verified_now(settings, claims: dict) -> str:
    """A token verified once, so that it is kept."""
    token = _sign(settings, claims)
    token_decode(token, expected_type=ACCESS)
    return token


def test_a_token_seen_before_is_not_verified_again(settings, issued):
    _, _, claims = issued
    token = _sign(settings, claims)
    with mock.patch("accounts.tokens.UntypedToken", wraps=tokens.UntypedToken) as verify:
        first = token_decode(token, expected_type=ACCESS)
        assert [token_decode(token, expected_type=ACCESS) for _ in range(3)] == [first] * 3
    assert verify.call_count == 1


def test_a_kept_token_is_refused_once_it_expires(settings, issued, monkeypatch):
    """The clock is read on every use: being kept while valid does not keep it valid."""
    _, _, claims = issued
    exp = int(time.time()) + 60
    token = _verified_now(settings, {**claims, "exp": exp})
    monkeypatch.setattr(tokens, "time", SimpleNamespace(time=lambda: exp))
    with pytest.raises(TokenExpired):
        token_decode(token, expected_type=ACCESS)
    assert _me(token).json()["error"] == "token_expired"


def test_a_kept_token_under_another_signature_is_verified_and_refused(settings, issued):
    _, _, claims = issued
    token = _verified_now(settings, claims)
    header, payload, signature = token.split(".")
    forged = _sign(settings, claims, key=OTHER_KEY)
    flipped = signature[:5] + ("A" if signature[5] != "A" else "B") + signature[6:]
    for other in (forged, f"{header}.{payload}.{flipped}", f"{header}.{payload}.", f"{header}.{payload}"):
        with pytest.raises(InvalidToken):
            token_decode(other, expected_type=ACCESS)
    assert token_decode(token, expected_type=ACCESS).jti == claims["jti"]


def test_a_kept_token_of_the_wrong_type_is_still_refused(settings, issued):
    _, _, claims = issued
    token = _verified_now(settings, claims)
    with pytest.raises(InvalidToken):
        token_decode(token, expected_type=REFRESH)


def test_kept_tokens_are_bounded(settings, issued):
    _, _, claims = issued
    for n in range(tokens.VERIFIED_TOKENS_KEPT + 10):
        token_decode(_sign(settings, {**claims, "jti": f"jti-{n}"}), expected_type=ACCESS)
    assert tokens._token_verified.cache_info().currsize == tokens.VERIFIED_TOKENS_KEPT
