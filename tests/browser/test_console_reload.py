"""A reload of the console in Chromium: with the refresh cookie (AUTH_REFRESH_COOKIE=1) the
page comes back into the same session through the client's restore(), without showing the
login form and without a script ever seeing the refresh token; in the middle of an agent
answer it shows the text so far (the server's `agent.snapshot`), then the rest, and its
Stop button cancels that answer. Without the cookie a reload means a new login
(docs/client.md#the-console-page)."""

from __future__ import annotations

import contextlib
from typing import Iterator

import pytest

from tests.browser.test_console import SERVER_ENV, Console, _console, _wait_for, browser_ready  # noqa: F401 - a fixture
from tests.live import LiveServer, running

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - browser_ready skips
    expect = None

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]

# 50 words 0.2 s apart: ten seconds of answer, time enough for a reload, the restore and a
# new socket on a busy machine, with the answer still in flight when the page is back.
WORDS = 50
QUESTION = " ".join(f"word{n}" for n in range(WORDS))
ANSWER = QUESTION.upper()

# In every page, the reloaded one too: each text the reply takes, and whether the login
# form was ever on screen (the observer sees the panel as the parser inserts it).
WATCH = """
window.__replies = [];
window.__loginShown = false;
new MutationObserver(() => {
  const login = document.getElementById("login-panel");
  if (login && !login.hidden) window.__loginShown = true;
  const reply = document.getElementById("agent-reply");
  if (reply && reply.textContent !== window.__replies.at(-1)) window.__replies.push(reply.textContent);
}).observe(document, {subtree: true, childList: true, characterData: true, attributes: true});
"""


@pytest.fixture(scope="module")
def cookie_server(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[LiveServer]:
    env = {**SERVER_ENV, "AGENT_TOKEN_DELAY_SECONDS": "0.2", "AUTH_REFRESH_COOKIE": "1"}
    with running(tmp_path_factory.mktemp("daphne-cookie"), **env) as live:
        yield live


@pytest.fixture(scope="module")
def memory_server(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[LiveServer]:
    with running(tmp_path_factory.mktemp("daphne-memory"), **SERVER_ENV) as live:
        yield live


# A name for the loopback address that no browser takes as secure (only `localhost` and
# loopback addresses are): a host reached without TLS, where a Secure cookie is dropped.
PLAIN_HOST = "console.test"


@pytest.fixture(scope="module")
def plain_http_server(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[LiveServer]:
    """The cookie offered, access tokens that live 5 s (refreshed within seconds), and
    PLAIN_HOST a host of its own."""
    env = {**SERVER_ENV, "AUTH_REFRESH_COOKIE": "1", "ACCESS_TOKEN_LIFETIME_SECONDS": "5",
           "ALLOWED_HOSTS": f"localhost,127.0.0.1,{PLAIN_HOST}"}
    with running(tmp_path_factory.mktemp("daphne-plain"), **env) as live:
        yield live


@contextlib.contextmanager
def _watched(server: LiveServer, *, args: tuple[str, ...] = ()) -> Iterator[Console]:
    with contextlib.contextmanager(_console)(server, args=args) as console:
        console.page.add_init_script(WATCH)
        yield console


@pytest.fixture
def console(browser_ready, cookie_server) -> Iterator[Console]:
    with _watched(cookie_server) as console:
        yield console


def _reload(console: Console) -> int:
    """Reload the page and wait for its restore attempt; returns that refresh's status."""
    with console.page.expect_response(lambda r: r.url.endswith("/api/auth/refresh")) as answer:
        console.page.reload()
    return answer.value.status


def _restored(console: Console, session_id: str) -> None:
    """The reloaded page is back in `session_id` on a new socket, and never showed the login form."""
    page = console.page
    expect(page.locator("#socket-state")).to_have_text("open")
    expect(page.locator("#session-id")).to_have_text(session_id)
    assert page.evaluate("window.__loginShown") is False, "the reloaded page showed the login form"
    assert f"session_id={session_id}" in console.sockets[-1].url
    assert "token" not in console.sockets[-1].url
    assert page.evaluate("document.cookie") == ""  # HttpOnly: no script sees the refresh token


def test_a_reload_keeps_the_session_through_the_refresh_cookie(console):
    page = console.open().login().page
    session_id = page.locator("#session-id").inner_text()
    assert page.evaluate("document.cookie") == ""
    # The client notes that this browser holds a cookie (a flag, no token), so that a page
    # asks the server only then.
    assert page.evaluate("Object.entries(localStorage)") == [["symphainy.refresh-cookie", "1"]]

    assert _reload(console) == 200
    _restored(console, session_id)
    expect(page.locator("#status")).to_contain_text("session ready")
    assert len(console.sockets) == 2

    # The restored session works over the socket and over HTTP.
    page.get_by_label("Message").fill("after the reload")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#agent-reply")).to_have_text("AFTER THE RELOAD")
    page.get_by_role("button", name="Reload sessions").click()
    expect(page.locator("#sessions-body")).to_contain_text("(this one)")

    # Logging out clears the cookie, and the client's note of it: the next reload shows the
    # login form without asking the server, and no socket opens.
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    assert page.evaluate("localStorage.length") == 0
    refreshes: list[str] = []
    page.on("request", lambda r: refreshes.append(r.url) if "/api/auth/refresh" in r.url else None)
    page.reload()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    expect(page.locator("#status")).to_have_text("Not logged in.")
    assert len(console.sockets) == 2
    console.login()  # the page's script has run, and its restore with it
    assert refreshes == [] and len(console.sockets) == 3


def test_a_restore_that_fails_shows_the_login_form_and_why(console):
    page = console.open().login().page
    page.route("**/api/auth/refresh", lambda route: route.abort())  # the network is gone
    page.reload()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    expect(page.locator("#login-notice")).to_contain_text("Could not restore the session")
    expect(page.locator("#status")).to_have_text("Not logged in.")
    assert len(console.sockets) == 1


def _reload_mid_answer(console: Console) -> None:
    """Log in, ask, and reload once the first words are on screen."""
    page = console.open().login().page
    session_id = page.locator("#session-id").inner_text()
    page.get_by_label("Message").fill(QUESTION)
    page.get_by_role("button", name="Send").click()
    _wait_for(page, lambda: len(page.locator("#agent-reply").inner_text().split()) >= 3, "the first words on screen")
    assert _reload(console) == 200
    _restored(console, session_id)
    assert len(console.sockets) == 2


def test_a_reload_mid_answer_shows_the_text_so_far_then_the_rest(console):
    _reload_mid_answer(console)
    page = console.page
    reply = page.locator("#agent-reply")
    expect(reply).to_have_text(ANSWER, timeout=30_000)
    expect(reply).to_have_attribute("aria-busy", "false")

    [snapshot] = console.frames_of("agent.snapshot")  # the second socket's catch-up
    so_far = snapshot["data"]["text"]
    assert so_far and ANSWER.startswith(so_far) and len(so_far) < len(ANSWER), snapshot
    [completed] = console.frames_of("agent.completed")
    assert completed["data"]["text"] == ANSWER
    seen = [text for text in page.evaluate("window.__replies") if text]
    assert seen[0] == so_far, f"the reloaded page did not start from the snapshot: {seen[:3]}"
    assert seen[-1] == ANSWER, "the whole text, exactly once"
    assert all(ANSWER.startswith(text) for text in seen), f"a gap or a repeat on screen: {seen}"
    lengths = [len(text) for text in seen]
    assert lengths == sorted(lengths), f"the reply went backwards: {seen}"
    assert len(seen) >= 3, f"the rest did not stream in after the snapshot: {seen}"


def test_stop_after_a_reload_cancels_the_answer_known_from_its_snapshot(console):
    _reload_mid_answer(console)
    page = console.page
    stop = page.get_by_role("button", name="Stop")
    expect(stop).to_be_enabled()  # the answer is on screen, from the snapshot
    stop.click()
    expect(page.locator("#event-log")).to_contain_text("agent.cancelled")
    expect(page.locator("#agent-reply")).to_have_attribute("aria-busy", "false")
    expect(stop).to_be_disabled()
    [cancelled] = console.frames_of("agent.cancelled")
    text = page.locator("#agent-reply").inner_text().strip()
    assert text == cancelled["data"]["text"].strip()
    assert ANSWER.startswith(text) and 0 < len(text) < len(ANSWER)
    assert not console.frames_of("agent.completed")


def test_without_the_cookie_a_reload_means_a_new_login(browser_ready, memory_server):
    with _watched(memory_server) as console:
        refreshes: list[str] = []
        console.page.on("request", lambda r: refreshes.append(r.url) if "/api/auth/refresh" in r.url else None)
        page = console.open().login().page
        page.reload()
        expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        expect(page.locator("#status")).to_have_text("Not logged in.")
        assert refreshes == []  # the page knows the server keeps no cookie: it does not ask
        assert len(console.sockets) == 1
        console.login()  # a new session, as before
        assert len(console.sockets) == 2


def test_where_the_browser_drops_a_secure_cookie_the_tokens_stay_in_memory(browser_ready, plain_http_server):
    """Over plain HTTP on a host other than loopback (as Safari on any host over HTTP) the
    server's Secure cookie would be dropped, and a session that relied on it would end at
    its first refresh: the page keeps its tokens in memory instead."""
    args = (f"--host-resolver-rules=MAP {PLAIN_HOST} 127.0.0.1",)
    with _watched(plain_http_server, args=args) as console:
        logins: list[dict] = []
        console.page.on("request", lambda r: logins.append(r.post_data_json) if r.url.endswith("/api/auth/login") else None)
        page = console.page
        page.goto(f"http://{PLAIN_HOST}:{plain_http_server.port}/")
        assert page.evaluate("window.isSecureContext") is False
        expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        console.login()
        assert "refresh_cookie" not in logins[0]
        # Refreshed twice (tokens of 5 s), on the one socket, and still usable.
        _wait_for(page, lambda: len(console.frames_of("auth.refreshed")) >= 2, "two refreshes", timeout_s=30)
        expect(page.locator("#socket-state")).to_have_text("open")
        page.get_by_label("Message").fill("still here")
        page.get_by_role("button", name="Send").click()
        expect(page.locator("#agent-reply")).to_have_text("STILL HERE")
        assert len(console.sockets) == 1 and "Log in again" not in page.locator("#status").inner_text()
