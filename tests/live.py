"""Real server processes for the tests: daphne (through `python -m symphainy.serve`, or
another documented command) on a free loopback port, using the test run's own database
and Redis; and what any child process of a test needs (a free port, the environment, a
wait for its HTTP answer)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from django.conf import settings

from tests import factories
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
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


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process (a server, a worker, `manage.py`) on this test
    run's database and Redis, plus `extra`."""
    env = {**os.environ, **database_env(), "PYTHONPATH": str(ROOT)}
    if settings.REDIS_URL:
        env["REDIS_URL"] = settings.REDIS_URL
    return {**env, **extra}


def wait_answering(url: str, process: subprocess.Popen, log_path: Path, *, statuses: tuple[int, ...] = (200,),
                   timeout: float = 30) -> None:
    """Wait until `url` answers with one of `statuses`; fail at once, with the process's
    log, if the process exits first."""

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[:3]} exited with {process.returncode}:\n{log_path.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(url, timeout=15) as response:
                return response.status in statuses
        except urllib.error.HTTPError as error:
            return error.code in statuses
        except OSError:
            return False

    try:
        wait_until(answers, timeout=timeout, interval=0.1, message=f"{url} to answer")
    except AssertionError as error:
        raise RuntimeError(f"{error}:\n{log_path.read_text(errors='replace')}") from None


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
        self, method: str, path: str, body: Any = None, token: str | None = None, *, timeout: float = 15,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json", **(headers or {})}
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

    def login(self, user: Any = None) -> dict[str, Any]:
        """Log `user` (a new one by default) in over HTTP; the login's body."""
        user = user or factories.make_user()
        status, body = self.request("POST", "/api/auth/login", {"email": user.email, "password": factories.PASSWORD})
        assert status == 200, body
        return body

    def stop(self) -> None:
        process_stop(self.process)


def process_stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Send `sig` to the process group of a child started with `start_new_session=True`;
    SIGKILL it if it has not ended within 10 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


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


_starts = itertools.count()  # each start its own log, the same port too


def _as_from_a_terminal() -> None:
    """In the child: SIGINT as a server started from a terminal has it. A test run started
    in the background (`cmd &` in a script, as CI may be) ignores SIGINT, children inherit
    that, and Twisted, rightly, leaves an ignored SIGINT ignored: the drain on SIGINT would
    never start."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_server(log_dir: Path, command: str = "serve", *, port: int | None = None, **env: str) -> LiveServer:
    """A server on `port` (a free one by default: a restart in place passes the old one's)."""
    port = port or free_port()
    log_path = log_dir / f"daphne-{port}-{next(_starts)}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            server_command(command, port),
            cwd=ROOT, env=child_env(**env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_as_from_a_terminal,
        )
    server = LiveServer(process, port, log_path)
    try:
        wait_answering(f"{server.http}/health", process, log_path, statuses=(200, 503))
    except RuntimeError:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def running(log_dir: Path, command: str = "serve", **env: str) -> Iterator[LiveServer]:
    server = start_server(log_dir, command, **env)
    try:
        yield server
    finally:
        server.stop()
