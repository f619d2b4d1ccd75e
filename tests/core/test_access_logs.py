"""With LOG_FORMAT=json, the access lines of a real daphne (symphainy.serve) and a real
gunicorn (deploy/gunicorn.conf.py) carry method, path (no query string), status, duration,
bytes, client address and request id as keys of their own, the request id the same one the
service's own lines of that request carry (core.logs.access_line)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.live import ROOT, child_env, free_port, process_stop, running, wait_answering
from tests.sockets import refusal_code
from tests.waiting import wait_until

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
KEYS = {"method", "path", "status", "duration_ms", "bytes", "client", "request_id"}


def get(url: str, headers: dict[str, str]) -> tuple[int, str]:
    """The status and the X-Request-ID the service answered with."""
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.headers["X-Request-ID"]
    except urllib.error.HTTPError as error:
        return error.code, error.headers["X-Request-ID"]


def records(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def access_record(log: Path, logger: str, request_id: str, **fields: Any) -> dict[str, Any]:
    """The one access line of `request_id` (waited for: written after the response)."""
    def found() -> dict[str, Any] | None:
        lines = [r for r in records(log) if r["logger"] == logger and r.get("request_id") == request_id
                 and all(r.get(k) == v for k, v in fields.items())]
        assert len(lines) <= 1, lines
        return lines[0] if lines else None

    return wait_until(found, timeout=15, interval=0.05, message=f"the access line of {request_id}")


def check_requests(base: str, log: Path, logger: str, *, forwarded_client: str | None) -> None:
    # A 404 with a token in its query string and the client's own request id.
    status, answered = get(f"{base}/nope/here?access_token={TOKEN}&page=2", {"X-Request-ID": "req-404"})
    assert (status, answered) == (404, "req-404")
    line = access_record(log, logger, "req-404")
    assert KEYS <= set(line), line
    assert (line["method"], line["path"], line["status"]) == ("GET", "/nope/here", 404)
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert isinstance(line["bytes"], int) and line["bytes"] > 0
    assert line["client"] == "127.0.0.1"
    # The service's own line of that request carries the same id.
    own = [r for r in records(log) if r["logger"] == "django.request" and r["request_id"] == "req-404"]
    assert own and own[0]["message"].startswith("Not Found"), own

    # No id sent: the access line has the one the service chose and answered with.
    headers = {"X-Forwarded-For": forwarded_client} if forwarded_client else {}
    status, answered = get(f"{base}/live", headers)
    assert status == 200 and len(answered) == 32
    line = access_record(log, logger, answered, path="/live")
    assert (line["status"], line["client"]) == (200, forwarded_client or "127.0.0.1")
    assert TOKEN not in log.read_text() and "page=2" not in "".join(str(r.get("path")) for r in records(log))


def test_daphnes_access_lines_are_structured_with_the_services_request_id(tmp_path):
    with running(tmp_path, LOG_FORMAT="json") as server:
        check_requests(server.http, server.log_path, "daphne.access", forwarded_client=None)
        # A socket's lines (refused: no credentials) carry the handshake's request id.
        assert asyncio.run(refusal_code(server, None, additional_headers={"X-Request-ID": "sock-1"})) == 4401
        opened = access_record(server.log_path, "daphne.access", "sock-1", socket="connected")
        assert (opened["method"], opened["path"], opened["status"], opened["client"]) == ("GET", "/api/runtime/agent", 101, "127.0.0.1")
        access_record(server.log_path, "daphne.access", "sock-1", socket="disconnected")


def test_gunicorns_access_lines_are_structured_with_the_services_request_id(tmp_path):
    port, log = free_port(), tmp_path / "gunicorn.log"
    env = child_env(LOG_FORMAT="json", GUNICORN_BIND=f"127.0.0.1:{port}", GUNICORN_WORKERS="1", TRUSTED_PROXY_COUNT="1")
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py"], cwd=ROOT, env=env,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_answering(f"http://127.0.0.1:{port}/live", process, log, timeout=40)
        # Behind one trusted proxy the client is the address it forwarded, as the service sees it.
        check_requests(f"http://127.0.0.1:{port}", log, "gunicorn.access", forwarded_client="198.51.100.9")
        assert not [r for r in records(log) if r["logger"] == "gunicorn.access" and r["request_id"] == "-"]
    finally:
        process_stop(process)
