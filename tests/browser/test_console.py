"""The console page and its JavaScript client in a real browser (headless Chromium through
Playwright's sync API) against a real daphne process.

Playwright's sync API marks an asyncio loop as running in this thread while it is
started, and Django refuses ORM calls then; so each test makes its database rows first
and starts the browser after (the `console` fixture), and reads everything else over HTTP.
Without Chromium or Playwright these tests skip, unless SYMPHAINY_REQUIRE_SERVICES=1,
where that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
from django.conf import settings

from tests import factories
from tests.frames import text_check
from tests.live import ROOT, LiveServer, running
from tests.waiting import wait_until

try:
    from playwright.sync_api import Page, WebSocket, expect, sync_playwright
except ImportError:  # pragma: no cover - the skip below explains
    sync_playwright = None

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("SYMPHAINY_ARTIFACTS_DIR", ROOT / "var" / "artifacts"))
DOCS_SCREENSHOT = ROOT / "docs" / "console.png"
TIMEOUT_MS = 15_000


def _browser_problem() -> str | None:
    if sync_playwright is None:
        return "playwright is not installed (pip install -r requirements.txt)"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def browser_ready() -> None:
    problem = _browser_problem()
    if problem and settings.REQUIRE_SERVICES:
        pytest.fail(f"SYMPHAINY_REQUIRE_SERVICES=1 but {problem}")
    if problem:
        pytest.skip(problem)


# Fast agent tokens and batch items, yet slow enough to see them arrive one by one; the
# throttles are for real clients, not for a test module logging in over and over.
SERVER_ENV = {
    "AGENT_TOKEN_DELAY_SECONDS": "0.05",
    "THROTTLE_LOGIN_ADDRESS": "1000/min",
    "THROTTLE_REFRESH_ADDRESS": "1000/min",
}


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[LiveServer]:
    with running(tmp_path_factory.mktemp("daphne"), **SERVER_ENV) as live:
        yield live


@pytest.fixture(scope="module")
def short_token_server(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[LiveServer]:
    """Access tokens that live 5 s: the client must refresh them every few seconds."""
    env = {**SERVER_ENV, "ACCESS_TOKEN_LIFETIME_SECONDS": "5"}
    with running(tmp_path_factory.mktemp("daphne-short"), **env) as live:
        yield live


@dataclass
class Console:
    """The console page in a fresh browser, with every socket it opened and every frame
    those sockets received."""

    page: "Page"
    server: LiveServer
    email: str
    password: str = factories.PASSWORD
    sockets: list["WebSocket"] = field(default_factory=list)
    frames: list[dict[str, Any]] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)

    def record(self, ws: "WebSocket") -> None:
        self.sockets.append(ws)
        ws.on("framereceived", lambda payload: self.frames.append(json.loads(payload)))
        # Both directions checked against /asyncapi.json (tests/frames.py).
        ws.on("framereceived", lambda payload: text_check(payload, direction="server"))
        ws.on("framesent", lambda payload: text_check(payload, direction="client"))
        ws.on("close", lambda ws: self.closed.append(ws.url))

    def frames_of(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("type") == kind or f.get("event_type") == kind]

    def open(self) -> "Console":
        self.page.goto(self.server.http + "/")
        expect(self.page.get_by_role("heading", name="Log in")).to_be_visible()
        return self

    def login(self) -> "Console":
        self.page.get_by_label("Email").fill(self.email)
        self.page.get_by_label("Password").fill(self.password)
        self.page.get_by_role("button", name="Log in").click()
        expect(self.page.locator("#socket-state")).to_have_text("open")
        return self

    def api_login(self) -> dict[str, Any]:
        """Another login of the same user over HTTP (a second session, for the test's use)."""
        status, body = self.server.request("POST", "/api/auth/login", {"email": self.email, "password": self.password})
        assert status == 200, body
        return body


def _console(server: LiveServer, *, args: tuple[str, ...] = ()) -> Iterator[Console]:
    """The console in a fresh Chromium (`args`: more of its command-line flags)."""
    user = factories.make_user()  # before the browser starts: see the module docstring
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", *args])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            console = Console(page=page, server=server, email=user.email)
            page.on("websocket", console.record)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            yield console
            assert not errors, f"errors in the page: {errors}"
        finally:
            browser.close()


@pytest.fixture
def console(browser_ready, server) -> Iterator[Console]:
    yield from _console(server)


@pytest.fixture
def short_token_console(browser_ready, short_token_server) -> Iterator[Console]:
    yield from _console(short_token_server)


def _screenshot(page: "Page", name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def _watch(page: "Page", selector: str, prop: str) -> None:
    """Record every value `selector`'s `prop` takes from now on, in window.__seen."""
    page.evaluate(
        """([selector, prop]) => {
            const node = document.querySelector(selector);
            window.__seen = [];
            new MutationObserver(() => window.__seen.push(String(node[prop])))
                .observe(node, {childList: true, characterData: true, subtree: true, attributes: true});
            if (prop === "value") {
                const proto = Object.getPrototypeOf(node);
                const descriptor = Object.getOwnPropertyDescriptor(proto, "value");
                Object.defineProperty(node, "value", {
                    get() { return descriptor.get.call(this); },
                    set(v) { descriptor.set.call(this, v); window.__seen.push(String(v)); },
                });
            }
        }""",
        [selector, prop],
    )


# --- The page and its assets, without a browser --------------------------------------------
def test_the_page_links_its_own_assets_only(client):
    response = client.get("/")
    assert response.status_code == 200
    html = response.content.decode()
    assert '<script type="module" src="/static/console/console.js">' in html
    assert 'href="/static/console/console.css"' in html
    assert '<link rel="icon" type="image/svg+xml" href="/static/console/favicon.svg">' in html
    assert "http://" not in html and "https://" not in html  # no CDN, no external asset
    for label in ("login-email", "login-password", "message-text", "intent-items", "intent-delay"):
        assert f'<label for="{label}">' in html
    assert 'id="status" class="status" role="status" aria-live="polite"' in html


def test_collectstatic_collects_the_console_assets(tmp_path, settings):
    from django.core.management import call_command

    settings.STATIC_ROOT = tmp_path
    call_command("collectstatic", interactive=False, verbosity=0)
    for name in ("symphainy-client.js", "console.js", "console.css", "favicon.svg"):
        assert (tmp_path / "console" / name).is_file()
        assert (tmp_path / "console" / f"{name}.gz").is_file()  # whitenoise's compressed copy


def test_daphne_serves_the_assets(server):
    import urllib.request

    for path, kind in (("console/symphainy-client.js", "javascript"), ("console/console.css", "css")):
        with urllib.request.urlopen(f"{server.http}/static/{path}", timeout=10) as response:
            assert response.status == 200
            assert kind in response.headers["Content-Type"]


# --- In the browser ---------------------------------------------------------------------------
def test_login_through_the_form_opens_one_socket_only_after_login(console):
    page = console.open().page
    expect(page.locator("#status")).to_have_text("Not logged in.")
    page.wait_for_timeout(500)  # nothing to wait for: no socket may open in this window
    assert console.sockets == [], "a socket was opened before login"

    console.login()
    expect(page.locator("#status")).to_contain_text("session ready")
    assert len(console.sockets) == 1
    socket_url = console.sockets[0].url
    assert "/api/runtime/agent?session_id=" in socket_url
    assert "token" not in socket_url  # the token travels in the subprotocol header only

    [ready] = console.frames_of("session.ready")
    assert page.locator("#session-id").inner_text() == ready["session_id"]
    # The tenant by name (from /api/auth/me), its id on hover; the next expiry is the idle one.
    expect(page.locator("#session-tenant")).to_have_text(re.compile(r"^Tenant \d+$"))
    assert page.locator("#session-tenant").get_attribute("title") == ready["tenant_id"]
    expect(page.locator("#session-roles")).to_have_text("member")
    expect(page.locator("#session-expires")).to_contain_text("(idle)")
    expect(page.locator("#sessions-body td").nth(3)).to_contain_text("(idle)")
    expect(page.locator("#event-log")).to_contain_text("session.ready")
    # The sessions list shows login's session, marked, with an "End" button.
    expect(page.locator("#sessions-body")).to_contain_text("(this one)")
    expect(page.get_by_role("button", name=f"End session {ready['session_id']}")).to_be_visible()
    expect(page.locator("#state-version")).to_have_text("0")

    expect(page.locator("#sessions-body td").nth(4)).to_have_text("1")  # the socket, counted
    assert _screenshot(page, "console.png").stat().st_size > 10_000

    # Login made exactly one session; the socket did not make another.
    status, page_of_sessions = console.server.request("GET", "/api/sessions", token=console.api_login()["access_token"])
    assert status == 200
    assert page_of_sessions["count"] == 2  # the page's, and the one this check just made


def test_a_wrong_password_is_reported_and_opens_no_socket(console):
    page = console.open().page
    page.get_by_label("Email").fill(console.email)
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("(401)")
    page.wait_for_timeout(300)  # nothing to wait for: no socket may open in this window
    assert console.sockets == []


def test_an_agent_message_streams_its_tokens_into_the_page(console):
    page = console.open().login().page
    _watch(page, "#agent-reply", "textContent")
    page.get_by_label("Message").fill("tokens arrive one word at a time here")
    page.get_by_role("button", name="Send").click()

    expected = "TOKENS ARRIVE ONE WORD AT A TIME HERE"
    expect(page.locator("#agent-reply")).to_have_text(expected)
    expect(page.locator("#agent-reply")).to_have_attribute("aria-busy", "false")
    tokens = console.frames_of("agent.token")
    assert len(tokens) == 8
    assert "".join(f["data"]["token"] for f in tokens) == expected
    seen = page.evaluate("window.__seen")
    partial = [text for text in seen if text and text != expected and expected.startswith(text)]
    assert len(partial) >= 3, f"the reply was not shown while it streamed: {seen}"
    assert console.frames_of("agent.completed")


def test_a_batch_intent_shows_its_progress_up_to_100_percent(console):
    page = console.open().login().page
    page.get_by_role("button", name="Send").click()  # a reply on screen for the screenshot
    expect(page.locator("#agent-reply")).to_have_text("HELLO FROM THE SYMPHAINY CONSOLE")
    _watch(page, "#intent-progress", "value")
    page.get_by_label("Items, one per line").fill("\n".join(f"item {n}" for n in range(8)))
    page.get_by_label("Delay per item (seconds)").fill("0.1")
    page.get_by_role("button", name="Run batch").click()

    expect(page.locator("#intent-progress-text")).to_contain_text("100 % — completed", timeout=20_000)
    assert page.locator("#intent-progress").evaluate("node => node.value") == 100
    seen = [float(v) for v in page.evaluate("window.__seen")]
    assert any(0 < v < 100 for v in seen), f"no intermediate progress shown: {seen}"
    [accepted] = console.frames_of("intent.accepted")
    progress = [f["data"] for f in console.frames_of("execution.progress")]
    assert all(p["execution_id"] == accepted["execution_id"] for p in progress)
    assert progress[-1]["progress"] == {"total": 8, "processed": 8, "succeeded": 8, "failed": 0}
    expect(page.locator("#sessions-body td").nth(4)).to_have_text("1")
    path = _screenshot(page, "console-batch.png")
    if os.environ.get("SYMPHAINY_UPDATE_DOCS_SCREENSHOT") == "1":  # refresh docs/console.png
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(path, DOCS_SCREENSHOT)


def test_a_running_batch_can_be_cancelled_from_the_page(console):
    page = console.open().login().page
    cancel = page.get_by_role("button", name="Cancel")
    expect(cancel).to_be_hidden()
    page.get_by_label("Items, one per line").fill("\n".join(f"item {n}" for n in range(50)))
    page.get_by_label("Delay per item (seconds)").fill("0.2")
    page.get_by_role("button", name="Run batch").click()
    expect(page.locator("#intent-progress-text")).to_contain_text("running")
    expect(cancel).to_be_visible()
    cancel.click()
    expect(page.locator("#intent-progress-text")).to_contain_text("cancelled")
    expect(cancel).to_be_hidden()
    [accepted] = console.frames_of("intent.accepted")
    [cancelled] = console.frames_of("execution.cancelled")
    assert cancelled["data"]["execution_id"] == accepted["execution_id"]
    assert cancelled["data"]["progress"]["processed"] < 50
    expect(page.locator("#event-log")).to_contain_text(f"requested for execution {accepted['execution_id']}")


def test_the_console_fits_a_phone_screen(console):
    page = console.page
    page.set_viewport_size({"width": 390, "height": 844})
    console.open()
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    console.login()
    expect(page.locator("#sessions-body")).to_contain_text("(this one)")
    expect(page.locator("#session-tenant")).to_have_text(re.compile(r"^Tenant \d+$"))
    path = _screenshot(page, "console-390.png")
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than a 390 px phone ({path})"
    for selector in ("#sessions-body", "#event-log", "#session-id", "#intent-form"):
        right = page.locator(selector).evaluate("node => node.getBoundingClientRect().right")
        assert right <= 390, f"{selector} ends at {right}px"
    end = page.get_by_role("button", name=re.compile("^End session "))
    assert end.evaluate("node => node.getBoundingClientRect().right") <= 390  # the End button is reachable
    expect(page.locator("#sessions-body td.optional").first).to_be_hidden()  # "Created" gives way
    expect(page.locator("#sessions-body td").nth(3)).to_contain_text("(idle)")


def test_ending_the_session_through_the_api_reports_it_and_never_reconnects(console):
    page = console.open().login().page
    session_id = page.locator("#session-id").inner_text()
    other = console.api_login()  # the same user's second session may end the first

    status, _ = console.server.request("DELETE", f"/api/session/{session_id}", token=other["access_token"])
    assert status == 204
    expect(page.locator("#status")).to_contain_text("Session ended")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    expect(page.locator("#login-notice")).to_contain_text("Session ended")
    page.wait_for_timeout(1000)  # no reconnect: a window past the client's first retry (at most 500 ms)
    assert len(console.sockets) == 1, "the client reconnected after 4409"
    assert console.closed == [console.sockets[0].url]
    assert "4409" in page.locator("#event-log").inner_text()


def test_ending_the_session_from_its_row_ends_it(console):
    page = console.open().login().page
    session_id = page.locator("#session-id").inner_text()
    page.get_by_role("button", name=f"End session {session_id}").click()
    expect(page.locator("#status")).to_contain_text("Session ended")
    page.wait_for_timeout(1000)  # no reconnect: a window past the client's first retry (at most 500 ms)
    assert len(console.sockets) == 1


def test_logout_ends_the_session_and_closes_the_socket(console):
    page = console.open().login().page
    session_id = page.locator("#session-id").inner_text()
    page.get_by_role("button", name="Log out").click()
    expect(page.locator("#status")).to_have_text("Logged out.")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    _wait_for(page, lambda: console.closed, "the socket's close")
    page.wait_for_timeout(600)  # and no reconnect: a window past the client's first retry (at most 500 ms)
    assert console.closed == [console.sockets[0].url] and len(console.sockets) == 1
    status, session = console.server.request("GET", f"/api/session/{session_id}", token=console.api_login()["access_token"])
    assert status == 200 and session["status"] == "ended"


def test_the_client_refreshes_short_lived_tokens_without_dropping_the_socket(short_token_console):
    console = short_token_console
    page = console.open().login().page
    first_expiry = page.locator("#token-expires").inner_text()
    started = time.monotonic()
    # 12 s is more than two lifetimes: an unrefreshed socket would have closed with 4401.
    while time.monotonic() - started < 12:
        page.wait_for_timeout(500)
    refreshed = console.frames_of("auth.refreshed")
    assert len(refreshed) >= 2, console.frames
    log = page.locator("#event-log").inner_text()
    assert len(console.sockets) == 1 and console.closed == [], f"the socket was dropped:\n{log}"
    expect(page.locator("#socket-state")).to_have_text("open")
    assert page.locator("#token-expires").inner_text() != first_expiry

    # Still usable over the socket and over HTTP with the rotated tokens.
    page.get_by_label("Message").fill("still here")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#agent-reply")).to_have_text("STILL HERE")
    page.get_by_role("button", name="Reload sessions").click()
    expect(page.locator("#sessions-body")).to_contain_text("(this one)")
    assert "4401" not in page.locator("#event-log").inner_text()


def _route_sockets(console: Console, refuse: dict[int, int] | None = None) -> list:
    """Pass the page's sockets through Playwright's WebSocket route, which can drop them
    with any close code; returns the list of routes, one per socket the page opened. The
    n-th socket (0-based) in `refuse` is closed with its code before it reaches the server."""
    routes: list = []

    def handle(route) -> None:
        routes.append(route)
        code = (refuse or {}).get(len(routes) - 1)
        if code is not None:
            route.close(code=code, reason="refused by the test")
            return
        route.connect_to_server()

    console.page.route_web_socket(re.compile(r".*/api/runtime/agent.*"), handle)
    return routes


def _wait_for(page: "Page", predicate, message: str, timeout_s: float = 10) -> None:
    """`wait_until`, pausing through Playwright so that the page's events keep arriving."""
    wait_until(predicate, timeout=timeout_s, message=message, pause=lambda s: page.wait_for_timeout(s * 1000))


def test_a_dropped_socket_reconnects_with_backoff_and_a_final_code_stops_it(console):
    refuse: dict[int, int] = {}
    routes = _route_sockets(console, refuse)
    page = console.open().login().page
    assert len(routes) == 1

    # A network drop (1006): back quickly, within the first backoff step (full jitter).
    dropped = time.monotonic()
    routes[0].close(code=1006, reason="network drop")
    expect(page.locator("#socket-state")).to_contain_text("reconnecting")
    _wait_for(page, lambda: len(routes) == 2, "the second socket")
    assert time.monotonic() - dropped < 3
    expect(page.locator("#event-log")).to_contain_text("close 1006 network drop, will retry")
    expect(page.locator("#socket-state")).to_have_text("open")

    # Too many sockets (4429): the client waits at least half of its slow-down delay (5 s).
    throttled = time.monotonic()
    routes[1].close(code=4429, reason="rate_limited")
    expect(page.locator("#socket-state")).to_contain_text("(closed 4429)")
    _wait_for(page, lambda: len(routes) == 3, "the third socket", timeout_s=10)
    assert time.monotonic() - throttled >= 2.4
    expect(page.locator("#socket-state")).to_have_text("open")

    # 4401: the client refreshes its tokens and reconnects at once ...
    routes[2].close(code=4401, reason="token_expired")
    _wait_for(page, lambda: len(routes) == 4, "the socket after a refresh")
    expect(page.locator("#socket-state")).to_have_text("open")
    expect(page.locator("#event-log")).to_contain_text("access token refreshed")
    # ... and a 4401 that a refresh did not cure is final: reported, and no further attempt.
    refuse[4] = 4401
    routes[3].close(code=4401, reason="token_expired")
    expect(page.locator("#status")).to_contain_text("Log in again")
    page.wait_for_timeout(1500)  # no attempt follows: a window past the client's first retry (at most 500 ms)
    assert len(routes) == 5
