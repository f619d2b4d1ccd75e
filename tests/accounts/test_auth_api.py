"""The auth endpoints against the contract: fields, statuses, and the bad inputs."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import jwt
import pytest
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Membership, Role, TenantStatus, User
from core.models import AuditEvent
from sessions_runtime.models import EndReason, RuntimeSession, SessionStatus
from tests import factories
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db
LOGIN_FIELDS = {
    "access_token", "refresh_token", "token_type", "expires_in", "session_id", "session_expires_at",
    "user_id", "tenant_id", "roles", "permissions",
}


def post(client: APIClient, path: str, body, **extra):
    return client.post(path, body, format="json", **extra)


# --- register ----------------------------------------------------------------------------
def test_register_creates_user_tenant_and_first_session():
    response = post(APIClient(), "/api/auth/register", {"email": "New@Example.com", "password": "a-good-long-passphrase", "tenant_name": "Acme"})
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == LOGIN_FIELDS
    assert body["roles"] == ["owner"] and body["permissions"] == ["read", "write", "admin", "delete"]
    user = User.objects.get(pk=body["user_id"])
    assert user.email == "new@example.com"
    assert Membership.objects.get(user=user).tenant.name == "Acme"
    assert RuntimeSession.objects.get(pk=body["session_id"]).status == SessionStatus.ACTIVE


@pytest.mark.parametrize("email", ["taken@example.com", "TAKEN@example.com"])
def test_register_with_a_registered_email_is_409(email):
    factories.make_user(email="taken@example.com")
    response = post(APIClient(), "/api/auth/register", {"email": email, "password": "a-good-long-passphrase"})
    assert response.status_code == 409 and response.json()["error"] == "email_taken"


@pytest.mark.parametrize(
    "body",
    [
        {"email": "x@example.com", "password": "short"},
        {"email": "x@example.com", "password": "12345678901"},
        {"email": "not-an-email", "password": "a-good-long-passphrase"},
        {"email": "x@example.com"},
        {"email": ["x@example.com"], "password": "a-good-long-passphrase"},
        {"email": "x@example.com", "password": "a-good-long-passphrase", "name": "n" * 10_000},
    ],
    ids=["short", "numeric", "bad-email", "missing-password", "wrong-type", "10kb-name"],
)
def test_register_bad_inputs_are_400_and_create_nothing(body):
    response = post(APIClient(), "/api/auth/register", body)
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_request" and response.json()["details"]
    assert not User.objects.exists() and not RuntimeSession.objects.exists()


# --- login ---------------------------------------------------------------------------------
def test_login_returns_the_contract_fields_and_creates_the_session(user):
    body = factories.login(APIClient(), user)
    assert set(body) == LOGIN_FIELDS
    assert body["token_type"] == "Bearer" and 0 < body["expires_in"] <= 900
    session = RuntimeSession.objects.get(pk=body["session_id"])
    assert str(session.user_id) == body["user_id"] and str(session.tenant_id) == body["tenant_id"]
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sid"] == body["session_id"] and claims["token_type"] == "access"


def test_unknown_user_wrong_password_and_inactive_user_get_the_same_401(user):
    inactive = factories.make_user(is_active=False)
    client = APIClient()
    answers = [
        post(client, "/api/auth/login", {"email": "nobody@example.com", "password": factories.PASSWORD}),
        post(client, "/api/auth/login", {"email": user.email, "password": "wrong-password"}),
        post(client, "/api/auth/login", {"email": inactive.email, "password": factories.PASSWORD}),
    ]
    assert {a.status_code for a in answers} == {401}
    assert len({a.content for a in answers}) == 1
    assert not RuntimeSession.objects.exists()


def test_login_picks_the_primary_tenant_or_the_one_asked_for(user, tenant):
    other = factories.make_tenant()
    Membership.objects.create(user=user, tenant=other, role=Role.VIEWER)
    client = APIClient()
    assert factories.login(client, user)["tenant_id"] == str(tenant.pk)
    chosen = factories.login(client, user, tenant_id=str(other.pk))
    assert chosen["tenant_id"] == str(other.pk) and chosen["roles"] == ["viewer"] and chosen["permissions"] == ["read"]


def _wrong_password_answer(user) -> tuple[int, dict]:
    response = post(APIClient(), "/api/auth/login", {"email": user.email, "password": "not-the-password"})
    return response.status_code, response.json()


def test_login_into_a_tenant_you_are_not_in_is_the_wrong_password_401(user):
    """No password oracle: a right password without a usable membership answers as a wrong one."""
    stranger = factories.make_tenant()
    response = post(APIClient(), "/api/auth/login", {"email": user.email, "password": factories.PASSWORD, "tenant_id": str(stranger.pk)})
    assert (response.status_code, response.json()) == _wrong_password_answer(user)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_credentials"
    assert not RuntimeSession.objects.exists()
    reasons = list(AuditEvent.objects.filter(kind=AuditEvent.Kind.LOGIN_FAILED).values_list("data__reason", flat=True))
    assert "tenant_access" in reasons and "credentials" in reasons


def test_login_into_a_suspended_tenant_is_the_wrong_password_401(user, tenant):
    tenant.status = TenantStatus.SUSPENDED
    tenant.save()
    response = post(APIClient(), "/api/auth/login", {"email": user.email, "password": factories.PASSWORD})
    assert (response.status_code, response.json()) == _wrong_password_answer(user)
    assert response["WWW-Authenticate"]
    assert not RuntimeSession.objects.exists()
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.LOGIN_FAILED, data__reason="tenant_suspended").exists()


@pytest.mark.parametrize(
    "raw, content_type, status, code",
    [
        ("{not json", "application/json", 400, "malformed_json"),
        ("email=a&password=b", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        ("[1, 2]", "application/json", 400, "invalid_request"),
        ('{"email": 5, "password": {}}', "application/json", 400, "invalid_request"),
        ('{"email": "a@b.c", "password": "x", "tenant_id": "nope"}', "application/json", 400, "invalid_request"),
    ],
)
def test_login_bad_bodies(raw, content_type, status, code):
    response = APIClient().generic("POST", "/api/auth/login", raw, content_type=content_type)
    assert response.status_code == status, response.content
    assert response.json()["error"] == code


def test_a_body_over_the_limit_is_413(settings, user):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "MAX_REQUEST_BYTES": 1024}
    raw = json.dumps({"email": user.email, "password": "x" * 2000})
    response = APIClient().generic("POST", "/api/auth/login", raw, content_type="application/json")
    assert response.status_code == 413 and response.json()["error"] == "request_too_large"


def test_wrong_method_is_405():
    response = APIClient().get("/api/auth/login")
    assert response.status_code == 405 and response.json()["error"] == "method_not_allowed"


def _throttle(settings, **rates):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], **rates},
    }


def test_login_is_throttled_per_address_with_retry_after(settings):
    _throttle(settings, login_address="3/min")
    client = APIClient()
    statuses = [post(client, "/api/auth/login", {"email": f"u{i}@example.com", "password": "x"}).status_code for i in range(4)]
    assert statuses == [401, 401, 401, 429]
    response = post(client, "/api/auth/login", {"email": "u9@example.com", "password": "x"})
    assert response.status_code == 429 and int(response["Retry-After"]) > 0
    assert response.json()["error"] == "rate_limited"


def test_failed_logins_lock_the_account_for_that_address_only_with_backoff(settings, user):
    """An attacker from one address cannot keep the owner, from another, locked out."""
    from django.core.cache import cache

    from accounts.throttles import _pair

    settings.SYMPHAINY = {**settings.SYMPHAINY, "LOGIN_LOCKOUT_AFTER_FAILURES": 3}
    client = APIClient()
    attacker, owner = {"REMOTE_ADDR": "10.0.0.66"}, {"REMOTE_ADDR": "10.0.0.2"}
    statuses = [post(client, "/api/auth/login", {"email": user.email, "password": "x"}, **attacker).status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]
    # Locked for that address even with the right password (and the email in another case) ...
    locked = post(client, "/api/auth/login", {"email": user.email.upper(), "password": factories.PASSWORD}, **attacker)
    assert locked.status_code == 429 and 25 <= int(locked["Retry-After"]) <= 30
    assert locked.json()["error"] == "rate_limited"
    # ... while the owner, elsewhere, logs in.
    assert post(client, "/api/auth/login", {"email": user.email, "password": factories.PASSWORD}, **owner).status_code == 200
    # Once the lock runs out, the next failure locks twice as long.
    cache.delete(f"login-lock:{_pair(user.email, '10.0.0.66')}")
    assert post(client, "/api/auth/login", {"email": user.email, "password": "x"}, **attacker).status_code == 401
    again = post(client, "/api/auth/login", {"email": user.email, "password": "x"}, **attacker)
    assert again.status_code == 429 and 55 <= int(again["Retry-After"]) <= 60


def test_a_successful_login_forgets_the_failures(settings, user):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "LOGIN_LOCKOUT_AFTER_FAILURES": 3}
    client = APIClient()
    for _ in range(2):
        assert post(client, "/api/auth/login", {"email": user.email, "password": "x"}).status_code == 401
    assert post(client, "/api/auth/login", {"email": user.email, "password": factories.PASSWORD}).status_code == 200
    for _ in range(2):
        assert post(client, "/api/auth/login", {"email": user.email, "password": "x"}).status_code == 401
    assert post(client, "/api/auth/login", {"email": user.email, "password": factories.PASSWORD}).status_code == 200


def test_a_spoofed_forwarded_for_does_not_dodge_the_address_throttle(settings):
    _throttle(settings, login_address="2/min")
    client = APIClient()
    statuses = [
        post(client, "/api/auth/login", {"email": f"v{i}@example.com", "password": "x"}, HTTP_X_FORWARDED_FOR=f"203.0.113.{i}").status_code
        for i in range(3)
    ]
    assert statuses[-1] == 429


# --- refresh --------------------------------------------------------------------------------
def test_refresh_rotates_and_the_old_token_dies(user):
    body = factories.login(APIClient(), user)
    client = APIClient()
    first = post(client, "/api/auth/refresh", {"refresh_token": body["refresh_token"]})
    assert first.status_code == 200 and set(first.json()) == {"access_token", "refresh_token", "token_type", "expires_in"}
    second = post(client, "/api/auth/refresh", {"refresh_token": first.json()["refresh_token"]})
    assert second.status_code == 200
    me = factories.bearer(APIClient(), second.json()["access_token"]).get("/api/auth/me")
    assert me.status_code == 200 and me.json()["session_id"] == body["session_id"]


@pytest.mark.parametrize("grace_seconds, reuse_address", [(10, "10.9.9.9"), (0, "127.0.0.1")])
def test_reusing_a_refresh_token_ends_the_session(settings, user, grace_seconds, reuse_address):
    """From another client, or with no grace window, a second presentation is theft."""
    settings.SYMPHAINY = {**settings.SYMPHAINY, "REFRESH_REUSE_GRACE": timedelta(seconds=grace_seconds)}
    body = factories.login(APIClient(), user)
    client = APIClient()
    fresh = post(client, "/api/auth/refresh", {"refresh_token": body["refresh_token"]}).json()
    reuse = post(client, "/api/auth/refresh", {"refresh_token": body["refresh_token"]}, REMOTE_ADDR=reuse_address)
    assert reuse.status_code == 401
    session = RuntimeSession.objects.get(pk=body["session_id"])
    assert session.status == SessionStatus.ENDED and session.end_reason == EndReason.TOKEN_REUSE
    for token in (body["access_token"], fresh["access_token"]):
        me = factories.bearer(APIClient(), token).get("/api/auth/me")
        assert me.status_code == 401 and me.json()["error"] == "session_ended"
    assert post(client, "/api/auth/refresh", {"refresh_token": fresh["refresh_token"]}).status_code == 401


def test_refresh_after_logout_is_401(logged_in):
    api, body = logged_in
    assert api.post("/api/auth/logout").status_code == 204
    response = post(APIClient(), "/api/auth/refresh", {"refresh_token": body["refresh_token"]})
    assert response.status_code == 401


def test_an_access_token_at_the_refresh_endpoint_is_401(logged_in):
    _, body = logged_in
    response = post(APIClient(), "/api/auth/refresh", {"refresh_token": body["access_token"]})
    assert response.status_code == 401 and response.json()["error"] == "invalid_token"


@pytest.mark.django_db(transaction=True)
def test_one_refresh_token_presented_twice_at_once():
    user = factories.make_user()
    body = factories.login(APIClient(), user)
    results: list[int] = []
    barrier = threading.Barrier(2)

    def present() -> None:
        barrier.wait()
        results.append(post(APIClient(), "/api/auth/refresh", {"refresh_token": body["refresh_token"]}).status_code)
        connection.close()

    threads = [threading.Thread(target=present) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # Two tabs of one client: both get the successor (the grace window), the session lives.
    assert results == [200, 200]
    assert RuntimeSession.objects.get(pk=body["session_id"]).status == SessionStatus.ACTIVE


def test_the_just_rotated_token_again_from_the_same_client_gets_the_same_successor(user):
    body = factories.login(APIClient(), user)
    client = APIClient()
    first = post(client, "/api/auth/refresh", {"refresh_token": body["refresh_token"]})
    again = post(client, "/api/auth/refresh", {"refresh_token": body["refresh_token"]})
    assert first.status_code == again.status_code == 200
    assert again.json()["refresh_token"] == first.json()["refresh_token"]
    assert again.json()["access_token"] == first.json()["access_token"]
    assert RuntimeSession.objects.get(pk=body["session_id"]).status == SessionStatus.ACTIVE
    # Nothing usable was stored for it: the outstanding-token ledger holds no token text.
    from rest_framework_simplejwt.token_blacklist.models import OutstandingToken

    assert set(OutstandingToken.objects.values_list("token", flat=True)) == {""}
    # The successor works once; after that, the old token is theft again.
    third = post(client, "/api/auth/refresh", {"refresh_token": first.json()["refresh_token"]})
    assert third.status_code == 200
    late = post(client, "/api/auth/refresh", {"refresh_token": body["refresh_token"]})
    assert late.status_code == 401
    session = RuntimeSession.objects.get(pk=body["session_id"])
    assert session.status == SessionStatus.ENDED and session.end_reason == EndReason.TOKEN_REUSE


def _theft_verdict(body: dict) -> None:
    session = RuntimeSession.objects.get(pk=body["session_id"])
    assert session.status == SessionStatus.ENDED and session.end_reason == EndReason.TOKEN_REUSE
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.REFRESH_TOKEN_REUSED, session_id=body["session_id"]).exists()


def test_a_retry_after_the_successor_was_used_ends_the_session(user):
    """The retry window holds only while the successor is unused: once the successor was
    itself rotated, the old token coming back is theft, however soon and from wherever."""
    body = factories.login(APIClient(), user)
    client = APIClient()
    successor = post(client, "/api/auth/refresh", {"refresh_token": body["refresh_token"]}).json()
    newest = post(client, "/api/auth/refresh", {"refresh_token": successor["refresh_token"]}).json()
    retry = post(client, "/api/auth/refresh", {"refresh_token": body["refresh_token"]})
    assert retry.status_code == 401
    _theft_verdict(body)
    for token in (successor["access_token"], newest["access_token"]):
        assert factories.bearer(APIClient(), token).get("/api/auth/me").status_code == 401


def test_a_retry_with_another_user_agent_on_the_same_address_is_reuse(user):
    """"The same client" is its address and its User-Agent: another device behind the same
    NAT or proxy, holding a copy of the token, gets no live pair."""
    body = factories.login(APIClient(), user)
    client = APIClient()
    victim = post(client, "/api/auth/refresh", {"refresh_token": body["refresh_token"]}, HTTP_USER_AGENT="Browser/1.0")
    assert victim.status_code == 200
    thief = post(client, "/api/auth/refresh", {"refresh_token": body["refresh_token"]}, HTTP_USER_AGENT="curl/8.5")
    assert thief.status_code == 401
    _theft_verdict(body)
    assert factories.bearer(APIClient(), victim.json()["access_token"]).get("/api/auth/me").status_code == 401


def test_a_retry_with_the_same_user_agent_gets_the_same_successor(user):
    body = factories.login(APIClient(), user)
    client = APIClient()
    first = post(client, "/api/auth/refresh", {"refresh_token": body["refresh_token"]}, HTTP_USER_AGENT="Browser/1.0")
    again = post(client, "/api/auth/refresh", {"refresh_token": body["refresh_token"]}, HTTP_USER_AGENT="Browser/1.0")
    assert again.status_code == 200 and again.json() == first.json() | {"expires_in": again.json()["expires_in"]}
    assert RuntimeSession.objects.get(pk=body["session_id"]).status == SessionStatus.ACTIVE


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="SQLite serializes writers: no retry can overtake a rotation there"
)
def test_a_retry_while_the_successor_is_being_rotated_is_reuse():
    """The successor's rotation, not yet committed, already counts as a use: the retry
    waits for it (the successor's ledger row is locked) instead of handing out the pair."""
    from accounts.tokens import REFRESH, _refresh_token_consume, token_decode

    user = factories.make_user()
    body = factories.login(APIClient(), user)
    successor = post(APIClient(), "/api/auth/refresh", {"refresh_token": body["refresh_token"]}).json()
    rotating, release = threading.Event(), threading.Event()

    def rotate_the_successor() -> None:
        try:
            with transaction.atomic():
                assert _refresh_token_consume(token_decode(successor["refresh_token"], expected_type=REFRESH))
                rotating.set()
                release.wait(30)
        finally:
            connection.close()

    answers: list[int] = []

    def retry() -> None:
        try:
            answers.append(post(APIClient(), "/api/auth/refresh", {"refresh_token": body["refresh_token"]}).status_code)
        finally:
            connection.close()

    rotation = threading.Thread(target=rotate_the_successor)
    rotation.start()
    assert rotating.wait(30)
    retrying = threading.Thread(target=retry)
    retrying.start()
    try:
        def retry_waits_or_answered() -> bool:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
                return bool(answers) or cursor.fetchone()[0] > 0

        wait_until(retry_waits_or_answered, timeout=30, message="the retry waiting for the rotation, or answering")
        assert not answers, "the retry was answered while the successor's rotation was in flight"
    finally:
        release.set()
        rotation.join(30)
        retrying.join(30)
    assert answers == [401]
    _theft_verdict(body)


# --- bearer tokens on protected endpoints -------------------------------------------------
def _forge(token: str, key: str = "another-key-that-is-long-enough-for-hs256", **changes) -> str:
    claims = {**jwt.decode(token, options={"verify_signature": False}), **changes}
    return jwt.encode(claims, key, algorithm="HS256")


@pytest.mark.parametrize("kind", ["forged", "expired", "alg-none", "refresh", "garbage", "tenant-swapped"])
def test_bad_bearer_tokens_are_401(settings, logged_in, kind):
    _, body = logged_in
    key = settings.SIMPLE_JWT["SIGNING_KEY"]
    token = {
        "forged": lambda: _forge(body["access_token"]),
        "expired": lambda: _forge(body["access_token"], key, exp=int(timezone.now().timestamp()) - 10),
        "alg-none": lambda: jwt.encode(jwt.decode(body["access_token"], options={"verify_signature": False}), None, algorithm="none"),
        "refresh": lambda: body["refresh_token"],
        "garbage": lambda: "not.a.token",
        "tenant-swapped": lambda: _forge(body["access_token"], key, tid=str(factories.make_tenant().pk)),
    }[kind]()
    response = factories.bearer(APIClient(), token).get("/api/auth/me")
    assert response.status_code == 401, response.content
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"] in {"invalid_token", "token_expired"}


def test_no_credentials_is_401():
    response = APIClient().get("/api/auth/me")
    assert response.status_code == 401 and response.json()["error"] == "not_authenticated"


def test_a_huge_authorization_header_is_401(logged_in):
    response = APIClient().get("/api/auth/me", HTTP_AUTHORIZATION="Bearer " + "a" * 1_000_000)
    assert response.status_code == 401


# --- logout, logout-all, me ---------------------------------------------------------------
def test_logout_ends_the_session_and_the_access_token_dies(logged_in):
    api, body = logged_in
    assert api.post("/api/auth/logout").status_code == 204
    response = api.get("/api/auth/me")
    assert response.status_code == 401 and response.json()["error"] == "session_ended"
    assert RuntimeSession.objects.get(pk=body["session_id"]).end_reason == EndReason.LOGOUT


def test_logout_all_ends_every_session(user):
    bodies = [factories.login(APIClient(), user) for _ in range(3)]
    api = factories.bearer(APIClient(), bodies[0]["access_token"])
    assert api.post("/api/auth/logout-all").status_code == 204
    assert not RuntimeSession.objects.filter(user=user, status=SessionStatus.ACTIVE).exists()


def test_me_reads_roles_from_the_database(logged_in, user):
    api, body = logged_in
    me = api.get("/api/auth/me").json()
    assert me == {
        "user_id": str(user.pk), "email": user.email, "name": "", "tenant_id": body["tenant_id"],
        "tenant_name": user.memberships.get().tenant.name, "roles": ["member"], "permissions": ["read", "write"], "session_id": body["session_id"],
    }
    Membership.objects.filter(user=user).update(role=Role.ADMIN)
    assert api.get("/api/auth/me").json()["roles"] == ["admin"]
    Membership.objects.filter(user=user).delete()
    assert api.get("/api/auth/me").status_code == 401


def test_an_idle_expired_session_is_reported_and_refused(logged_in):
    api, body = logged_in
    RuntimeSession.objects.filter(pk=body["session_id"]).update(idle_expires_at=timezone.now() - timedelta(seconds=1))
    assert api.get("/api/auth/me").json()["error"] == "session_ended"


# --- the session cap, and concurrent logins ---------------------------------------------------
def test_over_the_cap_the_oldest_session_is_superseded(settings, user):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "MAX_ACTIVE_SESSIONS_PER_USER": 2}
    bodies = [factories.login(APIClient(), user) for _ in range(3)]
    oldest = RuntimeSession.objects.get(pk=bodies[0]["session_id"])
    assert oldest.status == SessionStatus.ENDED and oldest.end_reason == EndReason.SUPERSEDED
    assert RuntimeSession.objects.filter(user=user, status=SessionStatus.ACTIVE).count() == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_logins_of_one_user_keep_the_cap(settings):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "MAX_ACTIVE_SESSIONS_PER_USER": 3}
    _throttle(settings, login_address="1000/min")
    user = factories.make_user()
    statuses: list[int] = []
    barrier = threading.Barrier(8)

    def login_once() -> None:
        barrier.wait()
        statuses.append(post(APIClient(), "/api/auth/login", {"email": user.email, "password": factories.PASSWORD}).status_code)
        connection.close()

    threads = [threading.Thread(target=login_once) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert statuses == [200] * 8
    assert RuntimeSession.objects.filter(user=user, status=SessionStatus.ACTIVE).count() == 3
    assert RuntimeSession.objects.filter(user=user, end_reason=EndReason.SUPERSEDED).count() == 5


def test_token_responses_are_never_cached(user):
    client = APIClient()
    login = post(client, "/api/auth/login", {"email": user.email, "password": factories.PASSWORD})
    refresh = post(client, "/api/auth/refresh", {"refresh_token": login.json()["refresh_token"]})
    register = post(client, "/api/auth/register", {"email": "new-user@example.com", "password": factories.PASSWORD})
    for response in (login, refresh, register):
        assert response.status_code in (200, 201), response.content
        assert "no-store" in response["Cache-Control"]
