"""The console resumes after a reconnect, in Chromium against a real daphne process: the
client reconnects with `since` and `epoch`, the server replays what the page missed (or
says it cannot, and the page re-reads its state over HTTP), and the page says which.

The socket is dropped through Playwright's WebSocket route (as in test_console), and what
the page misses is made over HTTP with a second session of the same user, inside the
route's handler of the next socket: before that socket reaches the server, so every such
event happens while the page has no socket at all.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any, Callable

import pytest

from tests.browser.test_console import (  # noqa: F401 - fixtures, used by name
    Console,
    browser_ready,
    console,
    server,
)
from tests.waiting import wait_until

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - browser_ready skips
    expect = None

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]

REPLAYED = re.compile(r"^resumed \((\d+) events? replayed\)$")


def _route_sockets(console: Console, before_connect: dict[int, Callable[[], None]]) -> list:
    """Route the page's sockets through Playwright (see test_console._route_sockets); the
    n-th socket (0-based) first runs `before_connect[n]`, then reaches the server."""
    routes: list = []

    def handle(route) -> None:
        routes.append(route)
        action = before_connect.get(len(routes) - 1)
        if action is not None:
            action()
        route.connect_to_server()

    console.page.route_web_socket(re.compile(r".*/api/runtime/agent.*"), handle)
    return routes


def _call(console: Console, method: str, path: str, token: str, body: Any = None,
          headers: dict[str, str] | None = None) -> tuple[int, Any]:
    return console.server.request(method, path, body, token, headers=headers)


def _state_write(console: Console, session_id: str, token: str, data: dict[str, Any]) -> int:
    """Merge `data` into the session's state; returns the new version."""
    status, state = _call(console, "GET", f"/api/session/{session_id}/state", token)
    assert status == 200, state
    status, state = _call(console, "PATCH", f"/api/session/{session_id}/state", token, {"data": data},
                          {"If-Match": str(state["version"])})
    assert status == 200, state
    return state["version"]


def _execution_finished(console: Console, execution_id: str, token: str, timeout_s: float = 15) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        status, execution = _call(console, "GET", f"/api/execution/{execution_id}/status", token)
        assert status == 200, execution
        return execution if execution["status"] not in ("created", "running") else None

    return wait_until(finished, timeout=timeout_s, interval=0.1, message=f"execution {execution_id} to finish")


def _agent_answer_recorded(timeout_s: float = 30) -> None:
    """Wait until the server has logged an agent's whole answer (a condition, not a time).
    Asked from a thread of its own: Playwright runs route handlers beside its event loop,
    where Django refuses database calls."""
    from core.models import SessionEvent

    failures: list[AssertionError] = []

    def poll() -> None:
        from django.db import connection

        try:
            wait_until(SessionEvent.objects.filter(kind="agent.completed").exists, timeout=timeout_s,
                       message="the agent's answer to be recorded")
        except AssertionError as failure:
            failures.append(failure)
        finally:
            connection.close()  # this thread's own; with PostgreSQL's pool, handed back

    waiter = threading.Thread(target=poll)
    waiter.start()
    waiter.join()
    assert not failures, failures


def _after_ready(console: Console, n: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The n-th session.ready frame (0-based) and the frames received after it."""
    readies = [i for i, f in enumerate(console.frames) if f.get("type") == "session.ready"]
    index = readies[n]
    return console.frames[index], console.frames[index + 1:]


def test_a_reconnect_resumes_and_shows_the_events_missed_meanwhile(console):
    away: dict[str, Any] = {}

    def while_away() -> None:
        token = away["token"]
        away["version"] = _state_write(console, away["session_id"], token, {"while": "away"})
        status, accepted = _call(console, "POST", "/api/intent/submit", token, {
            "session_id": away["session_id"], "intent_type": "batch",
            "parameters": {"items": ["one", "two", "three"], "delay_s": 0.05},
        })
        assert status == 202, accepted
        away["execution_id"] = accepted["execution_id"]
        assert _execution_finished(console, accepted["execution_id"], token)["status"] == "completed"

    routes = _route_sockets(console, {1: while_away})
    page = console.open().login().page
    away["session_id"] = page.locator("#session-id").inner_text()
    away["token"] = console.api_login()["access_token"]
    expect(page.locator("#socket-recovery")).to_be_hidden()  # a first connect resumes nothing

    # An event while connected: the page's position moves to it.
    assert _state_write(console, away["session_id"], away["token"], {"before": "drop"}) == 1
    expect(page.locator("#state-version")).to_have_text("1")
    [seen] = console.frames_of("session.state_changed")
    first_ready, _ = _after_ready(console, 0)
    assert seen["seq"] > first_ready["seq"] and seen["epoch"] == first_ready["epoch"]

    routes[0].close(code=1006, reason="network drop")
    expect(page.locator("#socket-recovery")).to_have_text(REPLAYED)
    assert len(routes) == 2 and away["version"] == 2
    second = console.sockets[1].url
    assert f"since={seen['seq']}&epoch={seen['epoch']}" in second
    assert "token" not in second

    # Everything missed arrived as a replay (positions up to session.ready's), and the
    # page counted exactly those.
    ready, after = _after_ready(console, 1)
    assert ready["recovered"] is True
    replayed = [f for f in after if "seq" in f and f["seq"] <= ready["seq"]]
    kinds = [f["event_type"] for f in replayed]
    assert kinds[0] == "session.state_changed" and "execution.completed" in kinds, kinds
    count = int(REPLAYED.match(page.locator("#socket-recovery").inner_text()).group(1))
    assert count == len(replayed)
    expect(page.locator("#state-version")).to_have_text("2")
    log = page.locator("#event-log")
    expect(log).to_contain_text("session.state_changed version 2")
    expect(log).to_contain_text(f"execution.completed execution {away['execution_id']}")
    expect(log).to_contain_text(f"{count} event{'s' if count != 1 else ''} replayed")
    expect(page.locator("#status")).to_contain_text("Reconnected: resumed")

    # A frame at or below the last position is a duplicate: dropped, never shown. The next
    # real event still is.
    stale = {**replayed[0], "data": {**replayed[0]["data"], "version": 99}}
    routes[1].send(json.dumps(stale))
    assert _state_write(console, away["session_id"], away["token"], {"after": "resume"}) == 3
    expect(log).to_contain_text("session.state_changed version 3")
    expect(page.locator("#state-version")).to_have_text("3")
    assert "version 99" not in log.inner_text()
    expect(page.locator("#socket-state")).to_have_text("open")

    # The note beside the socket state fits a phone screen too.
    page.set_viewport_size({"width": 390, "height": 844})
    note = page.locator("#socket-recovery")
    expect(note).to_be_visible()
    assert note.evaluate("node => node.getBoundingClientRect().right") <= 390
    assert page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth") <= 0


def test_a_reconnect_the_log_cannot_resume_re_reads_the_state_and_executions(console):
    away: dict[str, Any] = {}

    def while_away() -> None:
        away["version"] = _state_write(console, away["session_id"], away["token"], {"while": "away"})
        away["execution"] = _execution_finished(console, away["execution_id"], away["token"])

    routes = _route_sockets(console, {1: while_away})
    # The page's sockets name another log's epoch when they resume (a restored database,
    # say): the server cannot tell what the page missed.
    console.page.add_init_script("""(() => {
        const Native = window.WebSocket;
        window.WebSocket = class extends Native {
            constructor(url, protocols) {
                super(String(url).replace(/([?&]epoch=)[^&]*/, "$1not-this-log"), protocols);
            }
        };
    })()""")
    page = console.open().login().page
    away["session_id"] = page.locator("#session-id").inner_text()
    away["token"] = console.api_login()["access_token"]
    page.get_by_label("Items, one per line").fill("\n".join(f"item {n}" for n in range(6)))
    page.get_by_label("Delay per item (seconds)").fill("0.2")
    page.get_by_role("button", name="Run batch").click()
    expect(page.locator("#intent-progress-text")).to_contain_text("running")
    [accepted] = console.frames_of("intent.accepted")
    away["execution_id"] = accepted["execution_id"]

    routes[0].close(code=1006, reason="network drop")
    expect(page.locator("#socket-recovery")).to_have_text("re-synced (state re-read)")
    assert len(routes) == 2 and away["execution"]["status"] == "completed" and away["version"] == 1
    assert "epoch=not-this-log" in console.sockets[1].url
    ready, after = _after_ready(console, 1)
    assert ready["recovered"] is False
    assert not [f for f in after if "seq" in f and f["seq"] <= ready["seq"]], "events were replayed"

    # What happened while away is on screen all the same, read over HTTP.
    expect(page.locator("#state-version")).to_have_text("1")
    expect(page.locator("#state-data")).to_contain_text('"while": "away"')
    expect(page.locator("#intent-progress-text")).to_contain_text("100 % — completed")
    expect(page.locator("#status")).to_contain_text("re-synced (state re-read)")
    expect(page.locator("#event-log")).to_contain_text("re-reading the state")
    expect(page.locator("#socket-state")).to_have_text("open")


def test_a_reply_cut_off_by_a_drop_is_shown_whole_after_the_reconnect(console):
    words = [f"word{n}" for n in range(30)]  # 1.5 s of tokens at 0.05 s each
    routes = _route_sockets(console, {1: _agent_answer_recorded})  # the agent finishes meanwhile
    page = console.open().login().page
    page.get_by_label("Message").fill(" ".join(words))
    page.get_by_role("button", name="Send").click()
    reply = page.locator("#agent-reply")
    expect(reply).to_contain_text("WORD0")
    routes[0].close(code=1006, reason="network drop")
    streamed = "".join(f["data"]["token"] for f in console.frames_of("agent.token"))
    assert streamed != " ".join(words).upper(), "the reply was complete before the drop"

    expect(page.locator("#socket-recovery")).to_have_text(REPLAYED)
    expect(reply).to_have_text(" ".join(words).upper())
    expect(reply).to_have_attribute("aria-busy", "false")
    ready, after = _after_ready(console, 1)
    [completed] = [f for f in after if f.get("event_type") == "agent.completed"]
    assert completed["seq"] <= ready["seq"], "agent.completed came live, not as a replay"
    expect(page.locator("#event-log")).to_contain_text("agent.completed 30 tokens")
