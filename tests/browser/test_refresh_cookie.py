"""The refresh cookie in Chromium, over plain http://127.0.0.1 (a secure context for cookies,
so the Secure cookie is kept and sent): a reload keeps the session, no script sees the
token, and a page on another origin allowed by CORS cannot use the cookie."""

from __future__ import annotations

import pytest

from tests import factories
from tests.browser.test_console import CHROMIUM, TIMEOUT_MS, browser_ready, sync_playwright  # noqa: F401
from tests.browser.test_cross_origin import frontend
from tests.live import running

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]

SCRIPT = """
window.call = async (api, path, body, headers) => {
  const response = await fetch(api + path, {method: "POST", credentials: "include",
                                            headers: {"Content-Type": "application/json", ...headers},
                                            body: JSON.stringify(body)});
  const text = await response.text();
  return {status: response.status, body: text ? JSON.parse(text) : null};
};
window.me = async (token) => (await fetch("/api/auth/me", {headers: {Authorization: "Bearer " + token}})).json();
"""
FROM_COOKIE = {"X-Symphainy-Refresh": "cookie"}


def test_a_reload_keeps_the_session_through_the_cookie_in_chromium(browser_ready, tmp_path):  # noqa: F811
    user = factories.make_user()  # before the browser starts (see test_console)
    with frontend(tmp_path / "other") as other, running(
        tmp_path, AUTH_REFRESH_COOKIE="1", CORS_ALLOWED_ORIGINS=other, THROTTLE_LOGIN_ADDRESS="1000/min"
    ) as api:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
            try:
                context = browser.new_context()
                context.add_init_script(SCRIPT)  # in every page, the reloaded one too
                page = context.new_page()
                page.set_default_timeout(TIMEOUT_MS)

                def call(path, body=None, headers=None, origin=""):
                    return page.evaluate("([a, p, b, h]) => call(a, p, b, h)", [origin, path, body or {}, headers or {}])

                page.goto(api.http + "/live")
                login = call("/api/auth/login", {"email": user.email, "password": factories.PASSWORD,
                                                 "refresh_cookie": True})
                assert login["status"] == 200 and login["body"]["refresh_cookie"] is True
                assert "refresh_token" not in login["body"]
                assert page.evaluate("document.cookie") == ""  # HttpOnly: no script sees it
                (cookie,) = context.cookies()
                assert (cookie["path"], cookie["secure"], cookie["httpOnly"], cookie["sameSite"]) == (
                    "/api/auth/refresh", True, True, "Strict")

                page.reload()  # the tokens in the page's memory are gone
                restored = call("/api/auth/refresh", headers=FROM_COOKIE)
                assert restored["status"] == 200, restored
                assert set(restored["body"]) == {"access_token", "token_type", "expires_in"}
                me = page.evaluate("(t) => me(t)", restored["body"]["access_token"])
                assert me["session_id"] == login["body"]["session_id"]
                assert context.cookies()[0]["value"] != cookie["value"]  # rotated

                assert call("/api/auth/refresh")["status"] == 403  # the cookie without the header

                # A page on another origin, allowed by CORS (and the same site): the preflight
                # refuses the header, and nothing was used up.
                page.goto(other + "/index.html")
                with pytest.raises(Exception, match="Failed to fetch"):
                    call("/api/auth/refresh", headers=FROM_COOKIE, origin=api.http)
                page.goto(api.http + "/live")
                again = call("/api/auth/refresh", headers=FROM_COOKIE)
                assert again["status"] == 200

                out = call("/api/auth/logout", headers={"Authorization": "Bearer " + again["body"]["access_token"]})
                assert out["status"] == 204 and context.cookies() == []
                assert call("/api/auth/refresh", headers=FROM_COOKIE)["status"] == 401
            finally:
                browser.close()
