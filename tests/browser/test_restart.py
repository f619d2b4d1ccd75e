"""A server restarted under the console, in Chromium: the page's socket is closed with 1012
(not dropped, even when the browser is too slow to answer the close), the page comes back
on its own to the restarted process, resumes where it was, and misses no event; the batch
that ran on the stopped process is run again by the new one and finishes on the page
(docs/deployment.md#restarts-and-deploys)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
from pathlib import Path

import pytest

from core.models import SessionEvent
from tests.browser.test_console import SERVER_ENV, _console, browser_ready  # noqa: F401 - a fixture
from tests.live import start_server

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - browser_ready skips
    expect = None

@contextlib.contextmanager
def chromium_frozen():
    """Stop (SIGSTOP) this test's Chromium processes, the descendants of this process, until
    the block ends."""
    def parent(pid: int) -> int:
        with contextlib.suppress(OSError, IndexError, ValueError):
            return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        return 0

    def ours(pid: int) -> bool:
        while pid > 1:
            pid = parent(pid)
            if pid == os.getpid():
                return True
        return False

    pids = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and "chrom" in (entry / "comm").read_text() and ours(int(entry.name)):
                pids.append(int(entry.name))
    assert pids, "no Chromium process of this test found"
    try:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]
ENV = {**SERVER_ENV, "SHUTDOWN_DRAIN_WINDOW_SECONDS": "1", "SHUTDOWN_TIMEOUT_SECONDS": "5"}


def test_a_restart_in_place_closes_with_1012_and_the_page_resumes_without_a_gap(browser_ready, tmp_path):
    first = start_server(tmp_path, **ENV)
    servers = [first]
    try:
        with contextlib.contextmanager(_console)(first) as console:
            page = console.open().login().page
            # A batch of ~4 s: longer than the drain gives it (5 s less a reserve of 3 s).
            page.get_by_label("Items, one per line").fill("\n".join(f"item {n}" for n in range(40)))
            page.get_by_label("Delay per item (seconds)").fill("0.1")
            page.get_by_role("button", name="Run batch").click()
            expect(page.locator("#intent-progress-text")).to_contain_text("running")

            # The browser is frozen from the signal until the process has exited: slower to
            # answer the close frame than the server waits for it (1 s), as a browser on a
            # busy machine can be. It must still read 1012 (it read 1006 while the server
            # reset such connections).
            with chromium_frozen():
                first.process.send_signal(signal.SIGTERM)
                assert first.process.wait(timeout=15) == 0, first.log()
            expect(page.locator("#event-log")).to_contain_text(re.compile(r"close 1012, will retry"))
            servers.append(start_server(tmp_path, port=first.port, **ENV))

            expect(page.locator("#socket-state")).to_have_text("open", timeout=20_000)
            expect(page.locator("#socket-recovery")).to_contain_text("resumed")
            expect(page.locator("#intent-progress-text")).to_contain_text("100 % — completed", timeout=20_000)

            assert console.frames_of("execution.completed")
            frames = list(console.frames)
        # Nothing lost: every event of the session reached the page (progress may be
        # coalesced to its latest value, so only the other kinds are counted one by one).
        # Asked once the browser is gone: Django refuses database calls beside its loop.
        session_id = next(frame for frame in frames if frame.get("type") == "session.ready")["session_id"]
        logged = set(SessionEvent.objects.filter(session_id=session_id)
                     .exclude(kind="execution.progress").values_list("seq", flat=True))
        received = {frame["seq"] for frame in frames if "seq" in frame and frame.get("type") != "session.ready"}
        assert logged and logged <= received, sorted(logged - received)
    finally:
        for server in servers:
            server.stop()
