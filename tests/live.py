"""Real server processes for the tests: daphne (through `python -m symphainy.serve`) on a
free loopback port, using the test run's own database and Redis."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
ORIGIN = "http://127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_env() -> dict[str, str]:
    """Environment that points a child process at the database this test run uses."""
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return {"SQLITE_PATH": str(db["NAME"])}
    user = db.get("USER") or ""
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return {"DATABASE_URL": f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"}


@dataclass
class LiveServer:
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(
        self, method: str, path: str, body: Any = None, token: str | None = None, *, timeout: float = 15
    ) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.http + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as error:
            raw = error.read()
            return error.code, json.loads(raw) if raw else None

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def server_command(command: str, port: int) -> list[str]:
    """Each documented way to start the service: the project's command line, daphne's
    own, and daphne's runserver."""
    if command == "serve":
        return [sys.executable, "-m", "symphainy.serve", "-b", "127.0.0.1", "-p", str(port), "-v", "1", "--access-log", "-"]
    if command == "daphne":
        return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "-v", "1", "--access-log", "-",
                "symphainy.asgi:application"]
    if command == "runserver":
        return [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"]
    raise ValueError(f"unknown server command {command!r}")


def start_server(log_dir: Path, command: str = "serve", **env: str) -> LiveServer:
    port = _free_port()
    log_path = log_dir / f"daphne-{port}.log"
    child_env = {**os.environ, **database_env(), "PYTHONPATH": str(ROOT)}
    if settings.REDIS_URL:
        child_env["REDIS_URL"] = settings.REDIS_URL
    child_env.update(env)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            server_command(command, port),
            cwd=ROOT, env=child_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    server = LiveServer(process, port, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daphne exited with {process.returncode}:\n{server.log()}")
        with contextlib.suppress(OSError):
            status, _ = server.request("GET", "/health")
            if status in (200, 503):
                return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"daphne did not answer on {port}:\n{server.log()}")


@contextlib.contextmanager
def running(log_dir: Path, command: str = "serve", **env: str) -> Iterator[LiveServer]:
    server = start_server(log_dir, command, **env)
    try:
        yield server
    finally:
        server.stop()
