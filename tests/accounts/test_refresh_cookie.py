"""The refresh cookie (AUTH_REFRESH_COOKIE): a login that asks for it keeps its refresh
token where scripts cannot read it, and a reload refreshes from it into the same session.
Through the API here; over a real server and HTTP client at the end; in Chromium in
tests/browser/test_refresh_cookie.py."""

from __future__ import annotations

import http.cookiejar
import json
import urllib.request
from datetime import timedelta
from urllib.parse import urlsplit

import jwt
import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from core.models import AuditEvent
from sessions_runtime.models import EndReason, RuntimeSession, SessionStatus
from tests import factories
from tests.accounts.test_auth_api import LOGIN_FIELDS
from tests.live import running

pytestmark = pytest.mark.django_db
NAME = "symphainy_refresh"
PATH = "/api/auth/refresh"
FROM_COOKIE = {"HTTP_X_SYMPHAINY_REFRESH": "cookie"}
REFRESH_FIELDS = {"access_token", "token_type", "expires_in"}


@pytest.fixture
def cookie_on(settings):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "AUTH_REFRESH_COOKIE": True}


def set_cookies(response) -> dict[str, dict[str, str]]:
    """The response's Set-Cookie lines as the handlers write them (`cookie.output()`), parsed:
    name -> its value and attributes (lower-cased names; a flag attribute maps to "")."""
    found = {}
    for morsel in response.cookies.values():
        first, *attributes = [part.strip() for part in morsel.output(header="").split(";")]
        name, value = first.split("=", 1)
        found[name] = {"value": value.strip('"'), **{
            key.lower(): rest for key, _, rest in (attribute.partition("=") for attribute in attributes)
        }}
    return found


def login(client: APIClient, user, **extra):
    return client.post("/api/auth/login", {"email": user.email, "password": factories.PASSWORD, **extra}, format="json")


def refresh(client: APIClient, body=None, **headers):
    return client.post(PATH, body or {}, format="json", **{**FROM_COOKIE, **headers})


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


# --- login -------------------------------------------------------------------------------
def test_with_the_feature_off_a_login_asking_for_the_cookie_gets_the_token_in_the_body(user):
    response = login(APIClient(), user, refresh_cookie=True)
    assert response.status_code == 200
    body = response.json()
    assert body["refresh_cookie"] is False and body["refresh_token"]
    assert set(body) == LOGIN_FIELDS | {"refresh_cookie"}
    assert not set_cookies(response)


@pytest.mark.parametrize("on", [False, True])
def test_a_login_that_does_not_ask_answers_as_before(settings, user, on):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "AUTH_REFRESH_COOKIE": on}
    response = login(APIClient(), user)
    assert set(response.json()) == LOGIN_FIELDS and not set_cookies(response)
    response = login(APIClient(), user, refresh_cookie=False)
    assert response.json()["refresh_cookie"] is False and response.json()["refresh_token"]
    assert not set_cookies(response)


def test_a_login_asking_for_the_cookie_gets_it_and_no_refresh_token_in_the_body(cookie_on, user):
    response = login(APIClient(), user, refresh_cookie=True)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["refresh_cookie"] is True and "refresh_token" not in body
    assert set(body) == LOGIN_FIELDS - {"refresh_token"} | {"refresh_cookie"}
    assert response["Cache-Control"].startswith("max-age=0") and "no-store" in response["Cache-Control"]
    cookie = set_cookies(response)[NAME]
    assert {"httponly", "secure"} <= set(cookie) and cookie["samesite"] == "Strict" and cookie["path"] == PATH
    assert 86400 - 60 < int(cookie["max-age"]) <= 86400  # the refresh token's lifetime (24 h)
    token = claims(cookie["value"])
    assert token["token_type"] == "refresh" and token["sid"] == body["session_id"]
    assert int(cookie["max-age"]) == pytest.approx(token["exp"] - claims(body["access_token"])["iat"], abs=5)


def test_the_cookie_never_outlives_the_session(cookie_on, settings, user):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "AUTH_REFRESH_COOKIE": True, "SESSION_ABSOLUTE_TTL": timedelta(hours=2)}
    cookie = set_cookies(login(APIClient(), user, refresh_cookie=True))[NAME]
    assert 7200 - 60 < int(cookie["max-age"]) <= 7200


def test_the_cookie_takes_its_name_from_the_setting(settings, user):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "AUTH_REFRESH_COOKIE": True, "AUTH_REFRESH_COOKIE_NAME": "__Secure-r"}
    client = APIClient()
    assert set(set_cookies(login(client, user, refresh_cookie=True))) == {"__Secure-r"}
    assert refresh(client).status_code == 200


@pytest.mark.parametrize("value", ["yes", 1, "true", None])
def test_refresh_cookie_is_a_json_boolean(cookie_on, user, value):
    response = login(APIClient(), user, refresh_cookie=value)
    assert response.status_code == 400 and "refresh_cookie" in response.json()["details"]


def test_a_registration_may_ask_for_the_cookie_too(cookie_on):
    response = APIClient().post("/api/auth/register", {"email": "new@example.com", "password": "a-good-long-passphrase",
                                                      "refresh_cookie": True}, format="json")
    assert response.status_code == 201 and response.json()["refresh_cookie"] is True
    assert "refresh_token" not in response.json() and set_cookies(response)[NAME]["path"] == PATH


# --- refresh from the cookie -------------------------------------------------------------
def test_a_refresh_from_the_cookie_keeps_the_session_and_rotates_the_cookie(cookie_on, user):
    client = APIClient()
    first = login(client, user, refresh_cookie=True)
    session_id, old = first.json()["session_id"], set_cookies(first)[NAME]["value"]

    response = refresh(client, HTTP_ORIGIN="http://testserver", HTTP_SEC_FETCH_SITE="same-origin")
    assert response.status_code == 200, response.content
    assert set(response.json()) == REFRESH_FIELDS and "no-store" in response["Cache-Control"]
    new = set_cookies(response)[NAME]
    assert new["value"] != old and new["path"] == PATH and {"httponly", "secure"} <= set(new)
    assert claims(new["value"])["sid"] == session_id
    access = response.json()["access_token"]
    me = factories.bearer(APIClient(), access).get("/api/auth/me").json()
    assert me["session_id"] == session_id and claims(access)["sid"] == session_id
    assert RuntimeSession.objects.filter(user=user).count() == 1

    again = refresh(client)  # the rotated cookie works in its turn
    assert again.status_code == 200 and claims(set_cookies(again)[NAME]["value"])["sid"] == session_id


def test_a_replayed_old_cookie_ends_the_session_and_clears_the_cookie(cookie_on, settings, user):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "AUTH_REFRESH_COOKIE": True, "REFRESH_REUSE_GRACE": timedelta(0)}
    client = APIClient()
    first = login(client, user, refresh_cookie=True)
    old = set_cookies(first)[NAME]["value"]
    assert refresh(client).status_code == 200

    thief = APIClient()
    thief.cookies[NAME] = old
    response = refresh(thief)
    assert response.status_code == 401 and response.json()["error"] == "invalid_token"
    cleared = set_cookies(response)[NAME]
    assert cleared["value"] == "" and cleared["max-age"] == "0" and cleared["path"] == PATH
    session = RuntimeSession.objects.get(pk=first.json()["session_id"])
    assert session.status == SessionStatus.ENDED and session.end_reason == EndReason.TOKEN_REUSE
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.REFRESH_TOKEN_REUSED, session_id=session.pk).exists()
    assert refresh(client).status_code == 401  # the owner's current cookie died with the session


def test_within_the_grace_window_a_repeat_of_the_old_cookie_gets_the_same_successor(cookie_on, user):
    # Two tabs reloading at once send the same cookie: the second gets the cookie the first got.
    client = APIClient()
    old = set_cookies(login(client, user, refresh_cookie=True))[NAME]["value"]
    first = set_cookies(refresh(client))[NAME]["value"]
    other_tab = APIClient()
    other_tab.cookies[NAME] = old
    response = refresh(other_tab)
    assert response.status_code == 200 and set_cookies(response)[NAME]["value"] == first


def test_a_cookie_without_the_header_is_403_and_changes_nothing(cookie_on, user):
    client = APIClient()
    login(client, user, refresh_cookie=True)
    for headers in ({}, {"HTTP_X_SYMPHAINY_REFRESH": "yes"}):
        response = client.post(PATH, {}, format="json", **headers)
        assert response.status_code == 403, response.content
        assert response.json()["error"] == "csrf_failed" and set(response.json()) == {"error", "message"}
        assert NAME not in set_cookies(response)
    assert client.post(PATH, "a=b", content_type="text/plain").status_code == 415  # a form's body: refused anyway
    assert refresh(client).status_code == 200  # the cookie was not used up


@pytest.mark.parametrize("headers", [
    {"HTTP_ORIGIN": "http://evil.example"},
    {"HTTP_ORIGIN": "https://testserver"},
    {"HTTP_ORIGIN": "http://testserver:8080"},
    {"HTTP_ORIGIN": "null"},
    {"HTTP_ORIGIN": "http://app.example.com"},  # allowed by CORS: still not the cookie's
    {"HTTP_SEC_FETCH_SITE": "same-site"},
    {"HTTP_SEC_FETCH_SITE": "cross-site"},
    {"HTTP_ORIGIN": "http://testserver", "HTTP_SEC_FETCH_SITE": "cross-site"},
], ids=["foreign", "other-scheme", "other-port", "null", "cors-allowed", "same-site", "cross-site", "fetch-site"])
def test_a_cookie_refresh_from_another_origin_is_403(cookie_on, settings, user, headers):
    settings.CORS_ALLOWED_ORIGINS = ["http://app.example.com"]
    client = APIClient()
    session_id = login(client, user, refresh_cookie=True).json()["session_id"]
    response = refresh(client, **headers)
    assert response.status_code == 403 and response.json()["error"] == "csrf_failed"
    assert NAME not in set_cookies(response)
    assert RuntimeSession.objects.get(pk=session_id).status == SessionStatus.ACTIVE
    assert refresh(client).status_code == 200


def test_the_cors_preflight_does_not_allow_the_header(cookie_on, settings):
    settings.CORS_ALLOWED_ORIGINS = ["http://app.example.com"]
    response = APIClient().options(PATH, HTTP_ORIGIN="http://app.example.com",
                                   HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
                                   HTTP_ACCESS_CONTROL_REQUEST_HEADERS="content-type,x-symphainy-refresh")
    assert "x-symphainy-refresh" not in response.get("Access-Control-Allow-Headers", "").lower()
    assert "Access-Control-Allow-Credentials" not in response


def test_a_cookie_refresh_without_a_cookie_is_401(cookie_on):
    response = refresh(APIClient())
    assert response.status_code == 401 and response.json()["error"] == "not_authenticated"
    assert response["WWW-Authenticate"]


def test_a_cookie_that_is_no_token_is_401_and_cleared(cookie_on):
    client = APIClient()
    client.cookies[NAME] = "not-a-token"
    response = refresh(client)
    assert response.status_code == 401 and set_cookies(response)[NAME]["max-age"] == "0"


def test_the_header_and_a_token_in_the_body_is_400(cookie_on, user):
    client = APIClient()
    login(client, user, refresh_cookie=True)
    token = login(APIClient(), user).json()["refresh_token"]
    response = refresh(client, {"refresh_token": token})
    assert response.status_code == 400 and "refresh_token" in response.json()["details"]


def test_a_refresh_with_the_token_in_the_body_is_unchanged_with_the_feature_on(cookie_on, user):
    client = APIClient()
    login(client, user, refresh_cookie=True)  # the client carries a cookie too
    token = login(APIClient(), user).json()["refresh_token"]
    response = client.post(PATH, {"refresh_token": token}, format="json")
    assert response.status_code == 200 and response.json()["refresh_token"] and not set_cookies(response)
    assert client.post(PATH, {}, format="json").status_code == 403  # no token of its own: the cookie's shape


def test_with_the_feature_off_the_cookie_and_the_header_are_ignored(user):
    client = APIClient()
    token = login(client, user).json()["refresh_token"]
    client.cookies[NAME] = token
    response = refresh(client)
    assert response.status_code == 400 and response.json()["details"] == {"refresh_token": ["This field is required."]}
    assert not set_cookies(response)
    assert client.post(PATH, {}, format="json").status_code == 400


# --- logout ------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/api/auth/logout", "/api/auth/logout-all"])
def test_logout_clears_the_cookie(cookie_on, user, path):
    client = APIClient()
    body = login(client, user, refresh_cookie=True).json()
    response = factories.bearer(client, body["access_token"]).post(path)
    assert response.status_code == 204
    cleared = set_cookies(response)[NAME]
    assert cleared["value"] == "" and cleared["max-age"] == "0" and cleared["path"] == PATH
    assert {"httponly", "secure"} <= set(cleared) and cleared["samesite"] == "Strict"


def test_deleting_the_callers_own_session_clears_the_cookie_and_another_does_not(cookie_on, user):
    client = APIClient()
    body = login(client, user, refresh_cookie=True).json()
    factories.bearer(client, body["access_token"])
    other = client.post("/api/session/create", {}, format="json").json()["session_id"]
    response = client.delete(f"/api/session/{other}")
    assert response.status_code == 204 and not set_cookies(response)
    response = client.delete(f"/api/session/{body['session_id']}")
    assert response.status_code == 204 and set_cookies(response)[NAME]["max-age"] == "0"


def test_with_the_feature_off_logout_sets_no_cookie(user):
    body = login(APIClient(), user).json()
    response = factories.bearer(APIClient(), body["access_token"]).post("/api/auth/logout")
    assert response.status_code == 204 and not set_cookies(response)


def test_a_cookie_name_that_is_no_token_is_refused_at_start(settings):
    from django.core.management.base import SystemCheckError

    settings.SYMPHAINY = {**settings.SYMPHAINY, "AUTH_REFRESH_COOKIE_NAME": "a;b"}
    with pytest.raises(SystemCheckError, match="AUTH_REFRESH_COOKIE_NAME.. must be a cookie name"):
        call_command("check")


# --- over a real server ------------------------------------------------------------------
class LoopbackIsSecure(http.cookiejar.DefaultCookiePolicy):
    """The jar of a browser: Secure cookies go to http://127.0.0.1 too, a loopback address
    being a secure context (the standard library sends them over https only)."""

    def return_ok_secure(self, cookie: http.cookiejar.Cookie, request: urllib.request.Request) -> bool:
        return not cookie.secure or request.type == "https" or urlsplit(request.full_url).hostname == "127.0.0.1"


@pytest.mark.server
@pytest.mark.django_db(transaction=True)
def test_a_reload_keeps_the_session_over_a_real_server(tmp_path):
    user = factories.make_user()
    jar = http.cookiejar.CookieJar(policy=LoopbackIsSecure())
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

    def call(server, path, body=None, **headers):
        request = urllib.request.Request(server.http + path, data=json.dumps(body or {}).encode(), method="POST",
                                         headers={"Content-Type": "application/json", **headers})
        try:
            with opener.open(request, timeout=15) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    with running(tmp_path, AUTH_REFRESH_COOKIE="1") as server:
        status, body = call(server, "/api/auth/login", {"email": user.email, "password": factories.PASSWORD,
                                                       "refresh_cookie": True})
        assert status == 200 and body["refresh_cookie"] is True and "refresh_token" not in body
        (cookie,) = list(jar)
        assert (cookie.name, cookie.path, cookie.secure) == (NAME, PATH, True)
        assert cookie.has_nonstandard_attr("HttpOnly") and cookie.get_nonstandard_attr("SameSite") == "Strict"
        session_id, first = body["session_id"], cookie.value

        # The page reloads: the tokens in memory are gone, the jar is not.
        status, body = call(server, PATH, **{"X-Symphainy-Refresh": "cookie", "Origin": server.http})
        assert status == 200 and set(body) == REFRESH_FIELDS
        assert server.request("GET", "/api/auth/me", token=body["access_token"])[1]["session_id"] == session_id
        assert list(jar)[0].value != first

        assert call(server, PATH)[0] == 403  # the cookie alone
        assert call(server, PATH, **{"X-Symphainy-Refresh": "cookie", "Origin": "http://evil.example"})[0] == 403

        status, _ = call(server, "/api/auth/logout", Authorization=f"Bearer {body['access_token']}")
        assert status == 204 and not list(jar)
        status, body = call(server, PATH, **{"X-Symphainy-Refresh": "cookie"})
        assert status == 401 and body["error"] == "not_authenticated"
