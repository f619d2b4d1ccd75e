"""A reload of the console in Chromium: with the refresh cookie (AUTH_REFRESH_COOKIE=1) the
page comes back into the same session through the client's restore(), without a script
ever seeing the refresh token; without it, a reload means a new login
(docs/client.md#keeping-the-session-across-a-reload)."""

from __future__ import annotations

import contextlib
from typing import Iterator

import pytest

from tests.browser.test_console import SERVER_ENV, Console, _console, browser_ready  # noqa: F401 - a fixture
from tests.live import LiveServer, running

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - browser_ready skips
    expect = None

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def cookie_server(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[LiveServer]:
    with running(tmp_path_factory.mktemp("daphne-cookie"), **SERVER_ENV, AUTH_REFRESH_COOKIE="1") as live:
        yield live


@pytest.fixture(scope="module")
def memory_server(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[LiveServer]:
    with running(tmp_path_factory.mktemp("daphne-memory"), **SERVER_ENV) as live:
        yield live


def _reload(console: Console) -> int:
    """Reload the page and wait for its restore's refresh; returns that refresh's status."""
    with console.page.expect_response(lambda r: r.url.endswith("/api/auth/refresh")) as answer:
        console.page.reload()
    return answer.value.status


def _refreshes(console: Console) -> list[str]:
    """From now on, every refresh request the page sends."""
    sent: list[str] = []
    console.page.on("request", lambda r: sent.append(r.url) if r.url.endswith("/api/auth/refresh") else None)
    return sent


def test_a_reload_keeps_the_session_through_the_refresh_cookie(browser_ready, cookie_server):
    with contextlib.contextmanager(_console)(cookie_server) as console:
        page = console.open().login().page
        session_id = page.locator("#session-id").inner_text()
        assert page.evaluate("document.cookie") == ""  # HttpOnly: no script sees it
        assert page.evaluate("Object.entries(localStorage)") == [["symphainy.refresh-cookie", "1"]]  # a note, no token

        assert _reload(console) == 200
        expect(page.locator("#socket-state")).to_have_text("open")
        expect(page.locator("#session-id")).to_have_text(session_id)
        expect(page.locator("#status")).to_contain_text("session ready")
        assert len(console.sockets) == 2
        assert f"session_id={session_id}" in console.sockets[1].url
        assert "token" not in console.sockets[1].url

        # The restored session works over the socket and over HTTP.
        page.get_by_label("Message").fill("after the reload")
        page.get_by_role("button", name="Send").click()
        expect(page.locator("#agent-reply")).to_have_text("AFTER THE RELOAD")
        page.get_by_role("button", name="Reload sessions").click()
        expect(page.locator("#sessions-body")).to_contain_text("(this one)")

        # Logging out clears the cookie (and the client's note of it): the next reload shows
        # the login form without asking the server, and no socket opens.
        page.get_by_role("button", name="Log out").click()
        expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        refreshes = _refreshes(console)
        page.reload()
        expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        expect(page.locator("#status")).to_have_text("Not logged in.")
        console.login()  # the page's script has run (and its restore with it)
        assert refreshes == [] and len(console.sockets) == 3


def test_without_the_cookie_a_reload_means_a_new_login(browser_ready, memory_server):
    with contextlib.contextmanager(_console)(memory_server) as console:
        page = console.open().login().page
        assert page.evaluate("localStorage.length") == 0  # the login got no cookie: no note of one
        session_id = page.locator("#session-id").inner_text()
        refreshes = _refreshes(console)
        page.reload()
        expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        expect(page.locator("#status")).to_have_text("Not logged in.")
        console.login()  # a new session, as before
        assert len(console.sockets) == 2
        assert page.locator("#session-id").inner_text() != session_id
        assert refreshes == []  # the page did not ask for a cookie it was never given
