"""A frontend on another origin logs in, reads `me` and opens the socket, in Chromium:
the origins allowed by CORS_ALLOWED_ORIGINS (django-cors-headers) and by the socket's
origin check are one setting. An origin not listed cannot read the API."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from pathlib import Path
from typing import Iterator

import pytest

from tests import factories
from tests.browser.test_console import CHROMIUM, TIMEOUT_MS, browser_ready, sync_playwright  # noqa: F401
from tests.live import free_port, running

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]

PAGE = """<!doctype html><title>frontend</title><pre id="out"></pre>
<script>
async function attempt(api, email, password) {
  const login = await fetch(api + "/api/auth/login", {method: "POST", headers: {"Content-Type": "application/json"},
                                                      body: JSON.stringify({email, password})});
  const body = await login.json();
  const me = await (await fetch(api + "/api/auth/me", {headers: {Authorization: "Bearer " + body.access_token}})).json();
  const ready = await new Promise((resolve, reject) => {
    const ws = new WebSocket(api.replace("http", "ws") + "/api/runtime/agent", ["symphainy.v1", "bearer." + body.access_token]);
    ws.onmessage = (event) => { resolve(JSON.parse(event.data).type); ws.close(); };
    ws.onclose = (event) => reject(new Error("closed " + event.code));
  });
  return {status: login.status, requestId: login.headers.get("X-Request-ID"), me: me.email, ready};
}
</script>"""


@contextlib.contextmanager
def frontend(directory: Path) -> Iterator[str]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "index.html").write_text(PAGE)
    port = free_port()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_frontend_on_another_origin_logs_in_and_opens_the_socket(browser_ready, tmp_path):  # noqa: F811
    user = factories.make_user()  # before the browser starts (see test_console)
    with frontend(tmp_path / "allowed") as allowed, frontend(tmp_path / "other") as other, \
            running(tmp_path, CORS_ALLOWED_ORIGINS=allowed, THROTTLE_LOGIN_ADDRESS="1000/min") as api:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
            try:
                page = browser.new_page()
                page.set_default_timeout(TIMEOUT_MS)
                page.goto(allowed + "/index.html")
                result = page.evaluate("([api, e, p]) => attempt(api, e, p)", [api.http, user.email, factories.PASSWORD])
                assert result["status"] == 200 and result["me"] == user.email and result["ready"] == "session.ready"
                assert result["requestId"]  # an exposed header

                page.goto(other + "/index.html")
                with pytest.raises(Exception, match="Failed to fetch"):
                    page.evaluate("([api, e, p]) => attempt(api, e, p)", [api.http, user.email, factories.PASSWORD])
            finally:
                browser.close()
