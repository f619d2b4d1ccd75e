"""Agent answers in the console, in Chromium against a real daphne process: a socket dropped
mid-answer comes back to the text so far (the server's `agent.snapshot`), then the rest,
never a gap or a repeat on screen; Stop cancels the answer."""

from __future__ import annotations

import pytest

from tests.browser.test_console import (  # noqa: F401 - fixtures, used by name
    _route_sockets,
    _wait_for,
    _watch,
    browser_ready,
    console,
    server,
)

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - browser_ready skips
    expect = None

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]
# 50 ms apart (the module's server): ten seconds of answer, so that on a loaded machine the
# drop, the reconnect and Stop still happen mid-answer (30 words, 1.5 s, was once over
# before the second socket opened: "0 snapshots").
WORDS = 200
QUESTION = " ".join(f"word{n}" for n in range(WORDS))
ANSWER = QUESTION.upper()


def _tokens_shown(page, count: int) -> bool:
    return len(page.locator("#agent-reply").inner_text().split()) >= count


def test_a_socket_dropped_mid_answer_comes_back_to_the_text_so_far_then_the_rest(console):
    routes = _route_sockets(console)
    page = console.open().login().page
    _watch(page, "#agent-reply", "textContent")
    page.get_by_label("Message").fill(QUESTION)
    page.get_by_role("button", name="Send").click()
    _wait_for(page, lambda: _tokens_shown(page, 3), "the first tokens on screen")
    routes[0].close(code=1006, reason="network drop")
    _wait_for(page, lambda: len(routes) == 2, "the second socket")
    expect(page.locator("#agent-reply")).to_have_text(ANSWER, timeout=15_000)
    expect(page.locator("#agent-reply")).to_have_attribute("aria-busy", "false")
    snapshots = console.frames_of("agent.snapshot")
    assert len(snapshots) == 1, "the reconnected socket's catch-up"
    assert ANSWER.startswith(snapshots[0]["data"]["text"]) and snapshots[0]["data"]["next_index"] >= 3
    seen = [text for text in page.evaluate("window.__seen") if text]
    assert all(ANSWER.startswith(text) for text in seen), f"a gap or a repeat on screen: {seen}"
    lengths = [len(text) for text in seen]
    assert lengths == sorted(lengths), f"the reply went backwards: {seen}"


def test_stop_cancels_the_answer_on_screen(console):
    page = console.open().login().page
    page.get_by_label("Message").fill(QUESTION)
    page.get_by_role("button", name="Send").click()
    _wait_for(page, lambda: _tokens_shown(page, 3), "the first tokens on screen")
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#agent-reply")).to_have_attribute("aria-busy", "false")
    expect(page.get_by_role("button", name="Stop")).to_be_disabled()
    cancelled = console.frames_of("agent.cancelled")
    assert len(cancelled) == 1
    text = page.locator("#agent-reply").inner_text()
    assert text.strip() == cancelled[0]["data"]["text"].strip() and len(text) < len(ANSWER)
    expect(page.locator("#event-log")).to_contain_text("agent.cancelled")
