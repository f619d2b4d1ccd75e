"""The gateway's benchmark: what the JWT + session check costs, how fast revocation reaches
every socket, how many sockets one process holds — beside baselines measured in the same
run, so the ratios hold on a noisy machine.

    .venv/bin/pip install -r bench/requirements.txt
    .venv/bin/python bench/run.py                 # SQLite, plus PostgreSQL + Redis when reachable
    .venv/bin/python bench/run.py --quick         # fewer, smaller repetitions (a smoke run)

Servers are started on 127.0.0.1 only; every loop is bounded. Results: a Markdown table and
a JSON file under bench/results/ (median of the repetitions, with min and max).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PYTHON = sys.executable
PG_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/symphainy_bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
SERVER_ENV = {
    "WS_MAX_SOCKETS_PER_USER": "1000000",
    "WS_MESSAGE_RATE": "100000/s",
    "THROTTLE_LOGIN_ADDRESS": "1000000/min",
    "SESSION_CREATE_RATE": "1000000/min",
    "INTENT_SUBMIT_RATE": "1000000/min",
    # The benchmark runs on the public development key, as `make run` does.
    "SYMPHAINY_INSECURE_DEV_KEY": "1",
    "LOG_LEVEL": "WARNING",
}


# --- Processes ---------------------------------------------------------------------------
def pythonpath() -> str:
    """The project first, then whatever the caller had (bench extras installed elsewhere)."""
    return os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    port: int

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def start(kind: str, env: dict[str, str], *, app: str | None = None, port: int | None = None,
          root: Path = ROOT) -> Server:
    """A server of `kind` on `port` (a free one by default), from the checkout at `root`
    (this one unless a benchmark compares with another)."""
    port = port or free_port()
    if kind == "daphne":
        command = [PYTHON, "-m", "symphainy.serve", "-b", "127.0.0.1", "-p", str(port), "-v", "0"]
        if app:
            command.append(app)
    elif kind == "gunicorn":  # the layout's HTTP tier: sync workers, one per core
        command = [PYTHON, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py"]
        env = {**env, "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": str(os.cpu_count() or 1)}
    else:
        command = [PYTHON, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                   "--ws", "websockets", app or "symphainy.asgi:application"]
    # BENCH_LOG_DIR keeps each server's output (warnings and errors) for a look afterwards.
    log_dir = os.environ.get("BENCH_LOG_DIR")
    output: Any = subprocess.DEVNULL
    if log_dir:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        # Appended: a process started again on its port (bench/restart.py) keeps the old one's lines.
        output = open(Path(log_dir) / f"{kind}-{port}.log", "ab")  # noqa: SIM115 - the child keeps it
    path = os.pathsep.join(p for p in (str(root), pythonpath()) if p)
    process = subprocess.Popen(
        command, cwd=root, env={**os.environ, **SERVER_ENV, **env, "PYTHONPATH": path},
        stdout=output, stderr=subprocess.STDOUT if log_dir else subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return Server(process, port)
        if process.poll() is not None:
            raise RuntimeError(f"{command} exited with {process.returncode}")
        time.sleep(0.1)
    raise RuntimeError(f"{command} did not listen on {port}")


# --- Data --------------------------------------------------------------------------------
def configure(backend: str) -> dict[str, str]:
    """The environment of one backend, with a fresh schema."""
    env = {"DJANGO_SETTINGS_MODULE": "symphainy.settings"}
    if backend == "sqlite":
        path = ROOT / "var" / "bench.sqlite3"
        path.parent.mkdir(exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        env["SQLITE_PATH"] = str(path)
    else:
        import psycopg

        name = PG_URL.rsplit("/", 1)[1]
        admin = PG_URL.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            connection.execute(f'CREATE DATABASE "{name}"')
        env["DATABASE_URL"] = PG_URL
        env["REDIS_URL"] = REDIS_URL
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
    subprocess.run([PYTHON, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env={**os.environ, **SERVER_ENV, **env}, check=True)
    return env


def make_users(env: dict[str, str], count: int) -> list[dict[str, str]]:
    """Users with a session and tokens each, made in a child with this backend's settings."""
    script = f"""
import json, django
django.setup()
from accounts.models import Role
from accounts.services import membership_add, tenant_create
from accounts.models import User
from accounts.tokens import tokens_issue
from sessions_runtime.session_intents import SessionIntentAction, session_intent_build
from core.caller import Caller
from sessions_runtime.services import session_create
from django.contrib.auth.hashers import make_password
tenant = tenant_create(name="bench")
hashed = make_password("bench-password-123")  # once: the hasher takes ~150 ms a password
out = []
for i in range({count}):
    user = User.objects.create_user(email=f"bench{{i}}@example.com")
    user.password = hashed
    user.save(update_fields=["password"])
    m = membership_add(user=user, tenant=tenant, role=Role.MEMBER)
    s = session_create(intent=session_intent_build(user_id=user.pk, tenant_id=tenant.pk, role=m.role, action=SessionIntentAction.COMMAND), caller=Caller.system())
    t = tokens_issue(session=s)
    out.append({{"email": user.email, "user_id": str(user.pk), "session_id": str(s.pk), "access": t.access_token}})
print(json.dumps(out))
"""
    result = subprocess.run([PYTHON, "-c", script], cwd=ROOT, env={**os.environ, **SERVER_ENV, **env, "PYTHONPATH": pythonpath()},
                            capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"making users failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


class Publisher:
    """A child process with this backend's settings that writes events to the session event
    log, as the product does (`core.events`), one transaction per request; it reports the
    wall-clock time of the commit, so delivery is measured from there."""

    SCRIPT = """
import json, sys, time, uuid, django
django.setup()
from core.events import Event, events_record
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    session_id, n = uuid.UUID(request["session_id"]), int(request["n"])
    began = time.time()
    events_record(Event(session_id=session_id, kind="session.state_changed",
                        data={"session_id": str(session_id), "version": i + 1, "bench": True}) for i in range(n))
    print(json.dumps({"began": began, "committed": time.time()}), flush=True)
"""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [PYTHON, "-c", self.SCRIPT], cwd=ROOT, env={**os.environ, **SERVER_ENV, **env, "PYTHONPATH": pythonpath()},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        assert json.loads(self.process.stdout.readline())["ready"]

    def publish(self, session_id: str, n: int = 1) -> dict[str, float]:
        self.process.stdin.write(json.dumps({"session_id": session_id, "n": n}) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=10)


# --- Statistics ----------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(samples: list[float]) -> dict[str, float]:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "n": len(samples)}


def repeat(times: int, fn: Callable[[], dict[str, float]]) -> dict[str, dict[str, float]]:
    runs = [fn() for _ in range(times)]
    return {key: summary([run[key] for run in runs]) for key in runs[0]}


# --- Socket clients --------------------------------------------------------------------------
def page_origin(url: str) -> str:
    """The Origin a page served by the socket's own server sends: scheme, host and port
    (the origin check compares all three)."""
    parts = urlsplit(url)
    return f"{'https' if parts.scheme == 'wss' else 'http'}://{parts.netloc}"


async def handshake(url: str, token: str | None, expect_frame: bool) -> float:
    import websockets

    protocols = ["symphainy.v1", f"bearer.{token}"] if token else ["symphainy.v1"]
    start = time.perf_counter()
    async with websockets.connect(url, subprotocols=protocols, origin=page_origin(url), open_timeout=30, close_timeout=10) as ws:
        if expect_frame:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if frame.get("type") != "session.ready":
                raise RuntimeError(f"unexpected frame {frame}")
    return time.perf_counter() - start


async def handshake_load(url: str, tokens: list[str | None], total: int, concurrency: int, expect_frame: bool) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))

    async def worker(index: int) -> None:
        nonlocal errors
        token = tokens[index % len(tokens)]
        for _ in counter:
            try:
                latencies.append(await handshake(url, token, expect_frame))
            except Exception:  # noqa: BLE001 - counted, the run goes on
                errors += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - began
    return {"rate": len(latencies) / elapsed, "p50_ms": pct(latencies, 0.5) * 1000,
            "p99_ms": pct(latencies, 0.99) * 1000, "errors": errors}


@dataclass
class Held:
    """What `hold` opened: the sockets, their handshake times, and the handshakes that
    failed (counted, with the first failure's text; the run goes on)."""
    sockets: list[Any]
    latencies: list[float]
    errors: int = 0
    first_error: str = ""


async def hold(url: str, token: str, count: int, *, concurrency: int = 50) -> Held:
    """Open `count` sockets, at most `concurrency` handshakes at a time, and keep them.

    Afterwards the client freezes what it holds out of its own garbage collector: with
    thousands of sockets, a full pass of the *client's* collector pauses it for hundreds
    of milliseconds, which would be counted as the server's handshake time."""
    import gc

    import websockets

    held = Held([], [])
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            start = time.perf_counter()
            try:
                ws = await websockets.connect(url, subprotocols=["symphainy.v1", f"bearer.{token}"], origin=page_origin(url),
                                              open_timeout=60, ping_interval=None, max_queue=None)
            except Exception as error:  # noqa: BLE001 - counted and reported, the run goes on
                held.errors += 1
                held.first_error = held.first_error or f"{type(error).__name__}: {error}"[:200]
                return
            try:
                await asyncio.wait_for(ws.recv(), 60)
            except Exception as error:  # noqa: BLE001 - idem; the socket is closed, not kept
                held.errors += 1
                held.first_error = held.first_error or f"{type(error).__name__} after the handshake: {error}"[:200]
                await ws.close()
                return
            held.latencies.append(time.perf_counter() - start)
            held.sockets.append(ws)

    await asyncio.gather(*(one() for _ in range(count)))
    gc.freeze()
    return held


async def close_all(sockets: list[Any]) -> None:
    import gc

    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    gc.unfreeze()  # what `hold` froze can be collected again


# --- HTTP ------------------------------------------------------------------------------------
def http(method: str, url: str, body: dict | None = None, token: str | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                     headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def http_load(calls: list[Callable[[], tuple[int, bytes]]], concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0

    def timed(call: Callable[[], tuple[int, bytes]]) -> None:
        nonlocal errors
        start = time.perf_counter()
        status, _ = call()
        if status >= 400:
            errors += 1
        latencies.append(time.perf_counter() - start)

    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(timed, calls))
    elapsed = time.perf_counter() - began
    return {"rate": len(calls) / elapsed, "p50_ms": pct(latencies, 0.5) * 1000, "errors": errors}


# --- The hasher on its own: the login's baseline ----------------------------------------------
HASHER_PROBE = """
import statistics, sys, threading, time
import django
django.setup()
from django.contrib.auth.hashers import check_password, make_password
encoded = make_password("bench-password-123")
check_password("bench-password-123", encoded)
for line in sys.stdin:
    concurrency, count = map(int, line.split())
    times, lock, left = [], threading.Lock(), [count]
    def work():
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            began = time.perf_counter()
            check_password("bench-password-123", encoded)
            with lock:
                times.append(time.perf_counter() - began)
    began = time.perf_counter()
    threads = [threading.Thread(target=work) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    print(count / elapsed, statistics.median(times) * 1000, flush=True)
"""


class HasherProbe:
    """Django's password check (the project's hasher settings) in a process of its own,
    with no server work: `run(c, n)` verifies n times on c threads and returns the rate
    and the p50. Run beside the logins, round by round, so both see the same machine."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [PYTHON, "-c", HASHER_PROBE], cwd=ROOT, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env={**os.environ, **SERVER_ENV, "DJANGO_SETTINGS_MODULE": "symphainy.settings", "PYTHONPATH": pythonpath()},
        )

    def run(self, concurrency: int, count: int) -> dict[str, float]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{concurrency} {count}\n")
        self.process.stdin.flush()
        rate, p50 = map(float, self.process.stdout.readline().split())
        return {"rate": rate, "p50_ms": p50}

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


# --- Cases -----------------------------------------------------------------------------------
@dataclass
class Bench:
    quick: bool
    reps: int
    results: dict[str, Any] = field(default_factory=dict)
    user_index: int = 0

    def n(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def handshakes(self, backend: str, env: dict[str, str], users: list[dict[str, str]]) -> None:
        tokens = [u["access"] for u in users]
        out: dict[str, Any] = {}
        servers = {
            "bare_daphne": (start("daphne", env, app="bench.bare:application"), "/bare", False),
            "product_daphne": (start("daphne", env), "/api/runtime/agent", True),
            "peer_uvicorn": (start("uvicorn", env, app="bench.peer:app"), "/agent", True),
            "product_uvicorn": (start("uvicorn", env), "/api/runtime/agent", True),
        }
        try:
            for concurrency, total in ((1, self.n(300, 60)), (50, self.n(1500, 200))):
                for name, (server, path, frame) in servers.items():
                    url = server.ws + path
                    asyncio.run(handshake_load(url, tokens, 20, 5, frame))  # warm-up
                    out[f"{name}_c{concurrency}"] = repeat(
                        self.reps, lambda: asyncio.run(handshake_load(url, tokens, total, concurrency, frame))
                    )
        finally:
            for server, _, _ in servers.values():
                server.stop()
        for c in (1, 50):
            bare = out[f"bare_daphne_c{c}"]["rate"]["median"]
            out[f"ratio_product_over_bare_c{c}"] = out[f"product_daphne_c{c}"]["rate"]["median"] / bare
            out[f"ratio_product_over_peer_c{c}"] = (
                out[f"product_daphne_c{c}"]["rate"]["median"] / out[f"peer_uvicorn_c{c}"]["rate"]["median"]
            )
            out[f"ratio_product_uvicorn_over_peer_c{c}"] = (
                out[f"product_uvicorn_c{c}"]["rate"]["median"] / out[f"peer_uvicorn_c{c}"]["rate"]["median"]
            )
        self.results[f"handshake_{backend}"] = out

    def login_and_rest(self, backend: str, env: dict[str, str], users: list[dict[str, str]]) -> None:
        servers = {"daphne": start("daphne", env), "gunicorn": start("gunicorn", env)}
        probe = HasherProbe()
        try:
            # Each login takes the next user in turn, so that no user reaches the active-session
            # cap (MAX_ACTIVE_SESSIONS_PER_USER, 10) during the run: over it, a login also ends
            # the user's oldest session, a different path (and the REST case's tokens would
            # die with those sessions). The three last users are kept for other cases.
            pool = users[:-3]
            turn = itertools.count()

            def logins(name: str, count: int) -> list[Callable[[], tuple[int, bytes]]]:
                chosen = [pool[next(turn) % len(pool)] for _ in range(count)]
                return [(lambda u=u: http("POST", f"{servers[name].http}/api/auth/login",
                                          {"email": u["email"], "password": "bench-password-123"}))
                        for u in chosen]

            me = [(lambda u=u: http("GET", f"{servers['daphne'].http}/api/auth/me", token=u["access"]))
                  for u in users] * self.n(20, 3)
            http_load(me[:20], 4)
            for name in servers:
                http_load(logins(name, 2), 1)
            # Round by round: the hasher alone, then the logins on each server, at c=1 and
            # at c=4. At c=1 the login's cost beyond the hasher shows on its own; at c=4 the
            # throughput is set against the hasher's own at the same concurrency. Served by
            # the embedded default (one daphne process) and by the layout's HTTP tier
            # (gunicorn, one sync worker per core), on the same database.
            rounds: list[dict[str, float]] = []
            for _ in range(self.reps):
                row: dict[str, float] = {}
                hasher_c1 = probe.run(1, 15)
                row["hasher_c1_p50_ms"] = hasher_c1["p50_ms"]
                row["cores_over_hash_time"] = (os.cpu_count() or 1) / (hasher_c1["p50_ms"] / 1000)
                for name in servers:
                    single = http_load(logins(name, self.n(15, 6)), 1)
                    row[f"{name}_login_c1_p50_ms"] = single["p50_ms"]
                    row[f"{name}_login_c1_beyond_hasher_ms"] = single["p50_ms"] - hasher_c1["p50_ms"]
                    row[f"{name}_login_errors"] = single["errors"]
                hasher_c4 = probe.run(4, 24)
                row["hasher_c4_rate"] = hasher_c4["rate"]
                for name in servers:
                    four = http_load(logins(name, self.n(24, 8)), 4)
                    row[f"{name}_login_c4_rate"] = four["rate"]
                    row[f"{name}_login_c4_p50_ms"] = four["p50_ms"]
                    row[f"{name}_login_c4_over_hasher_c4"] = four["rate"] / hasher_c4["rate"]
                    row[f"{name}_login_errors"] += four["errors"]
                rounds.append(row)
            self.results[f"login_{backend}"] = {key: summary([r[key] for r in rounds]) for key in rounds[0]}
            self.results[f"rest_me_{backend}"] = repeat(self.reps, lambda: http_load(me, 10))
        finally:
            probe.close()
            for server in servers.values():
                server.stop()

    def query_counts(self) -> None:
        script = """
import json, django
django.setup()
from django.test.utils import setup_test_environment
setup_test_environment()
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.test.runner import DiscoverRunner
runner = DiscoverRunner(verbosity=0)
old = runner.setup_databases()
from rest_framework.test import APIClient
from tests import factories
from accounts.tokens import ACCESS, token_decode
from realtime.grants import socket_authorize
from realtime.presence import connection_open
user = factories.make_user()
client = APIClient()
with CaptureQueriesContext(connection) as login:
    body = factories.login(client, user)
factories.bearer(client, body["access_token"])
with CaptureQueriesContext(connection) as rest:
    client.get("/api/auth/me")
claims = token_decode(body["access_token"], expected_type=ACCESS)
with CaptureQueriesContext(connection) as hs:
    socket_authorize(claims=claims, session_id=claims.session_id)
    connection_open(session_id=claims.session_id, user_id=claims.user_id, channel_name="bench!1")
runner.teardown_databases(old)
print(json.dumps({"login": len(login), "rest_request": len(rest), "handshake": len(hs)}))
"""
        result = subprocess.run([PYTHON, "-c", script], cwd=ROOT,
                                env={**os.environ, **SERVER_ENV, "DJANGO_SETTINGS_MODULE": "symphainy.settings", "PYTHONPATH": pythonpath(),
                                     "SQLITE_TEST_PATH": str(ROOT / "var" / "bench-queries.sqlite3")},
                                check=True, capture_output=True, text=True)
        self.results["queries"] = json.loads(result.stdout.strip().splitlines()[-1])

    def idle_sockets(self, backend: str, env: dict[str, str], users: list[dict[str, str]]) -> None:
        server = start("daphne", env)
        # A user no other case logs in as: the login case's logins would end its first
        # session by the per-user cap, and every socket on it would be refused with 4409.
        token = users[-3]["access"]
        out: dict[str, Any] = {}

        async def scenario() -> None:
            await asyncio.sleep(1)
            base = server.rss_kib()
            held: list[Any] = []
            errors, first_error = 0, ""
            # How far one process goes: batches of 500 at c=50, each batch's handshake p99
            # recorded, memory per socket read at 1,000, 5,000 and 10,000. The climb stops
            # at the run's bound or when a batch's p99 passes one second; a failed handshake
            # is counted (and its first error kept), and the climb goes on.
            limit = self.n(12000, 3000)
            marks = {1000, 5000, 10000} if not self.quick else {1000, 2000}
            worst, worst_at = 0.0, 0
            batches: list[str] = []  # "sockets held:that batch's p99 ms", for the record
            every: list[float] = []  # every handshake's time up to 10,000 sockets
            while len(held) < limit:
                batch = await hold(server.ws + "/api/runtime/agent", token, min(500, limit - len(held)))
                held += batch.sockets
                errors += batch.errors
                first_error = first_error or batch.first_error
                p99 = pct(batch.latencies, 0.99) if batch.latencies else float("inf")
                batches.append(f"{len(held)}:{p99 * 1000:.0f}")
                if len(held) <= 10000:
                    every += batch.latencies
                if len(held) <= 10000 and p99 > worst:
                    worst, worst_at = p99, len(held)
                if len(held) in marks:
                    await asyncio.sleep(2)
                    out[f"kib_per_socket_at_{len(held)}"] = (server.rss_kib() - base) / len(held)
                if p99 > 1.0:
                    out["stopped_by"] = f"p99 over 1 s ({p99 * 1000:.0f} ms) in the batch ending at {len(held)}"
                    break
                if batch.errors and not batch.sockets:
                    out["stopped_by"] = "a batch with no handshake at all"
                    break
            else:
                out["stopped_by"] = f"run bound ({limit})"
            out["most_sockets"] = len(held)
            out["worst_batch_p99_ms_up_to_10000"] = worst * 1000
            out["worst_batch_ends_at"] = worst_at
            out["p99_ms_of_every_handshake_up_to_10000"] = pct(every, 0.99) * 1000 if every else float("inf")
            out["handshake_errors"] = errors
            out["batch_p99_ms"] = " ".join(batches)
            if first_error:
                out["first_error"] = first_error
            out["rss_mib_at_most"] = server.rss_kib() / 1024
            await close_all(held)

        try:
            asyncio.run(scenario())
        finally:
            server.stop()
        self.results[f"idle_{backend}"] = out

    # --- Ends and events: the session event log ------------------------------------------
    def _user(self, users: list[dict[str, str]]) -> dict[str, str]:
        """The next user for a case that logs in (a fresh session each time). The last two
        users are kept for fan-out and resume and the third last for the idle sockets, whose
        sessions must stay open."""
        pool = users[:-3]
        self.user_index = (self.user_index + 1) % len(pool)
        return pool[self.user_index]

    async def _end_once(self, a: Server, b: Server, env: dict[str, str], count: int, user: dict[str, str], *,
                        how: str, flush_redis: bool = False) -> dict[str, float]:
        """`count` sockets of one new session over two processes, then the session ended by
        `how`: "delete" (`DELETE /api/session/{id}` sent to the first process) or
        "command" (`manage.py sessions end <id> --yes`, a process of its own)."""
        status, raw = await asyncio.to_thread(
            http, "POST", f"{a.http}/api/auth/login", {"email": user["email"], "password": "bench-password-123"}
        )
        if status != 200:
            raise RuntimeError(f"login answered {status}: {raw[:200]!r}")
        body = json.loads(raw)
        half = count // 2
        held_a = await hold(a.ws + "/api/runtime/agent", body["access_token"], count - half)
        held_b = await hold(b.ws + "/api/runtime/agent", body["access_token"], half) if half else Held([], [])
        sockets_a, sockets_b = held_a.sockets, held_b.sockets
        closed: list[float] = []
        codes: list[Any] = []

        async def wait_close(ws: Any) -> None:
            with contextlib.suppress(Exception):
                await ws.wait_closed()
            closed.append(time.perf_counter())
            codes.append((getattr(ws, "close_code", None), getattr(ws, "close_reason", None)))

        waiters = [asyncio.create_task(wait_close(ws)) for ws in sockets_a + sockets_b]
        if flush_redis:
            import redis

            await asyncio.to_thread(redis.Redis.from_url(REDIS_URL).flushdb)
        sent = time.perf_counter()
        if how == "delete":
            status, raw = await asyncio.to_thread(
                http, "DELETE", f"{a.http}/api/session/{body['session_id']}", None, body["access_token"]
            )
            if status >= 400:
                raise RuntimeError(f"DELETE answered {status}: {raw[:200]!r}")
        else:
            command = await asyncio.create_subprocess_exec(
                PYTHON, "manage.py", "sessions", "end", body["session_id"], "--yes", cwd=ROOT,
                env={**os.environ, **SERVER_ENV, **env, "PYTHONPATH": pythonpath()},
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )
            _, err = await command.communicate()
            if command.returncode:
                raise RuntimeError(f"sessions end exited with {command.returncode}: {err[-500:]!r}")
        answered = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*waiters), 60)
        # The end is announced when its transaction commits, before the response is written
        # (before the command exits): most closes arrive before the client has read the 204.
        # Both clocks are reported; "after the response" counts those as zero.
        others = collections.Counter(pair for pair in codes if pair[0] != 4409)
        if others:  # the run goes on; what they were is written down beside it
            print(f"bench: {sum(others.values())} of {len(codes)} closes not 4409: {dict(others)}", file=sys.stderr)
        since_request = [(t - sent) * 1000 for t in closed]
        after_response = [max(0.0, t - answered) * 1000 for t in closed]
        return {
            "request_to_close_p50_ms": pct(since_request, 0.5),
            "request_to_close_p99_ms": pct(since_request, 0.99),
            "request_to_close_max_ms": max(since_request),
            "response_to_close_p99_ms": pct(after_response, 0.99),
            "response_to_close_max_ms": max(after_response),
            "closed_before_response_pct": 100.0 * sum(t <= answered for t in closed) / len(closed),
            "request_ms": (answered - sent) * 1000,
            "not_4409": float(sum(others.values())),
            "handshake_errors": float(held_a.errors + held_b.errors),
        }

    async def _floor_once(self, a: Server, b: Server, count: int, token: str) -> dict[str, float]:
        """The baseline of a revocation: `count` sockets over two bare processes, closed with
        4409 by `POST /close-all` sent to both at once; request → last close."""
        half = count // 2
        held_a = await hold(a.ws + "/held", token, count - half)
        held_b = await hold(b.ws + "/held", token, half) if half else Held([], [])
        closed: list[float] = []

        async def wait_close(ws: Any) -> None:
            with contextlib.suppress(Exception):
                await ws.wait_closed()
            closed.append(time.perf_counter())

        waiters = [asyncio.create_task(wait_close(ws)) for ws in held_a.sockets + held_b.sockets]
        sent = time.perf_counter()
        await asyncio.gather(*(asyncio.to_thread(http, "POST", f"{s.http}/close-all") for s in (a, b)))
        await asyncio.wait_for(asyncio.gather(*waiters), 60)
        since_request = [(t - sent) * 1000 for t in closed]
        return {"request_to_close_p50_ms": pct(since_request, 0.5), "request_to_close_p99_ms": pct(since_request, 0.99),
                "handshake_errors": float(held_a.errors + held_b.errors)}

    def revocation_floor(self, backend: str, env: dict[str, str], users: list[dict[str, str]]) -> None:
        """The same counts as `revocation`, on the bare baseline, in the same run."""
        a, b = start("daphne", env, app="bench.bare:application"), start("daphne", env, app="bench.bare:application")
        out: dict[str, Any] = {}
        try:
            for count in (1, 100, self.n(1000, 300)):
                out[f"sockets_{count}"] = repeat(
                    self.reps, lambda c=count: asyncio.run(self._floor_once(a, b, c, users[0]["access"]))
                )
        finally:
            a.stop()
            b.stop()
        self.results[f"revocation_floor_{backend}"] = out

    def _two(self, env: dict[str, str]) -> tuple[Server, Server]:
        return start("daphne", env), start("daphne", env)

    def revocation(self, backend: str, env: dict[str, str], users: list[dict[str, str]]) -> None:
        """`DELETE /api/session/{id}` → the last of 1 / 100 / 1,000 sockets closed, over two
        processes."""
        a, b = self._two(env)
        out: dict[str, Any] = {}
        try:
            for count in (1, 100, self.n(1000, 300)):
                out[f"sockets_{count}"] = repeat(
                    self.reps, lambda c=count: asyncio.run(self._end_once(a, b, env, c, self._user(users), how="delete"))
                )
        finally:
            a.stop()
            b.stop()
        self.results[f"revocation_{backend}"] = out

    def revocation_command(self, backend: str, env: dict[str, str], users: list[dict[str, str]]) -> None:
        """`manage.py sessions end <id> --yes` (a process with no socket of its own) → the last
        of 1,000 sockets closed: the command's own wall time, and its exit → the last close."""
        a, b = self._two(env)
        count = self.n(1000, 300)
        try:
            self.results[f"revocation_command_{backend}"] = {f"sockets_{count}": repeat(
                self.reps, lambda: asyncio.run(self._end_once(a, b, env, count, self._user(users), how="command"))
            )}
        finally:
            a.stop()
            b.stop()

    def revocation_flushed(self, backend: str, env: dict[str, str], users: list[dict[str, str]]) -> None:
        """Redis flushed (FLUSHDB) just before the DELETE: sockets do not use Redis, so the
        close time should not move."""
        a, b = self._two(env)
        count = self.n(1000, 300)
        try:
            self.results[f"revocation_flushed_{backend}"] = {f"sockets_{count}": repeat(self.reps, lambda: asyncio.run(
                self._end_once(a, b, env, count, self._user(users), how="delete", flush_redis=True)
            ))}
        finally:
            a.stop()
            b.stop()

    def revocation_10k(self, backend: str, env: dict[str, str], users: list[dict[str, str]]) -> None:
        """10,000 sockets over two processes, once per repetition (opt-in: minutes to open)."""
        a, b = self._two(env)
        try:
            self.results[f"revocation_10k_{backend}"] = {"sockets_10000": repeat(self.reps, lambda: asyncio.run(
                self._end_once(a, b, env, 10000, self._user(users), how="delete")
            ))}
        finally:
            a.stop()
            b.stop()

    def fanout(self, backend: str, env: dict[str, str], users: list[dict[str, str]]) -> None:
        """One event written to the log (`core.events.events_record`, by a process with no
        socket of its own) → each of 1,000 sockets of that session over two processes."""
        a, b = self._two(env)
        publisher = Publisher(env)
        user = users[-1]
        count = self.n(1000, 300)

        async def once() -> dict[str, float]:
            half = count // 2
            held_a = await hold(a.ws + "/api/runtime/agent", user["access"], count - half)
            held_b = await hold(b.ws + "/api/runtime/agent", user["access"], half)
            sockets_a, sockets_b = held_a.sockets, held_b.sockets
            received: list[float] = []

            async def receive(ws: Any) -> None:
                while True:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
                    if frame.get("type") == "runtime_event" and frame.get("data", {}).get("bench"):
                        received.append(time.time())  # wall clock: the publisher's is the same
                        return

            waiters = [asyncio.create_task(receive(ws)) for ws in sockets_a + sockets_b]
            await asyncio.sleep(0.5)
            stamp = await asyncio.to_thread(publisher.publish, user["session_id"], 1)
            await asyncio.gather(*waiters, return_exceptions=True)
            delays = [(t - stamp["committed"]) * 1000 for t in received]
            await close_all(sockets_a + sockets_b)
            return {"delivered": float(len(delays)), "p50_ms": pct(delays, 0.5), "p99_ms": pct(delays, 0.99),
                    "max_ms": max(delays) if delays else float("nan"),
                    "publish_ms": (stamp["committed"] - stamp["began"]) * 1000}

        try:
            self.results[f"fanout_{backend}"] = repeat(self.reps, lambda: asyncio.run(once()))
        finally:
            publisher.close()
            a.stop()
            b.stop()

    def resume(self, backend: str, env: dict[str, str], users: list[dict[str, str]]) -> None:
        """A socket reconnecting with `?since=&epoch=` after N missed events: connect → the
        last replayed frame, beside a plain connect (→ `session.ready`) of the same session."""
        import websockets

        server = start("daphne", env)
        publisher = Publisher(env)
        user = users[-2]
        url = server.ws + "/api/runtime/agent"

        async def connect(query: str = "") -> tuple[Any, dict[str, Any], float]:
            began = time.perf_counter()
            ws = await websockets.connect(url + query, subprotocols=["symphainy.v1", f"bearer.{user['access']}"],
                                          origin=page_origin(url), open_timeout=30, ping_interval=None, max_queue=None)
            ready = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if ready.get("type") != "session.ready":
                raise RuntimeError(f"unexpected frame {ready}")
            return ws, ready, began

        async def once(missed: int) -> dict[str, float]:
            plains = []
            for _ in range(7):
                ws, ready, began = await connect()
                plains.append(time.perf_counter() - began)
                await ws.close()
            await asyncio.to_thread(publisher.publish, user["session_id"], missed) if missed else None
            ws, resumed_ready, began = await connect(f"?since={ready['seq']}&epoch={ready['epoch']}")
            if resumed_ready.get("recovered") is not True:
                raise RuntimeError(f"not recovered: {resumed_ready}")
            replayed = 0
            while replayed < missed:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if frame.get("type") == "runtime_event":
                    replayed += 1
            resumed = time.perf_counter() - began
            await ws.close()
            plain = statistics.median(plains)
            return {"plain_connect_ms": plain * 1000, "resume_ms": resumed * 1000, "ratio": resumed / plain,
                    "replayed": float(replayed)}

        out: dict[str, Any] = {}
        try:
            asyncio.run(once(0))  # warm-up
            for missed in (0, 100, 1000):
                out[f"missed_{missed}"] = repeat(self.reps, lambda m=missed: asyncio.run(once(m)))
        finally:
            publisher.close()
            server.stop()
        self.results[f"resume_{backend}"] = out


def services_up() -> bool:
    try:
        import psycopg
        import redis

        psycopg.connect(PG_URL.rsplit("/", 1)[0] + "/postgres", connect_timeout=3).close()
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
        return True
    except Exception:  # noqa: BLE001
        return False


# --- Report ----------------------------------------------------------------------------------
def fmt(value: Any) -> str:
    if isinstance(value, dict) and "median" in value:
        return f"{value['median']:.1f} ({value['min']:.1f}–{value['max']:.1f})"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def report(results: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [f"# Benchmark — {meta['date']}", "", f"Machine: {meta['machine']}. Repetitions: {meta['reps']} "
             f"(median, with min–max).{' Quick run.' if meta['quick'] else ''}", ""]
    dates = sorted(set((meta.get("cases") or {}).values()))
    if len(dates) > 1:  # a partial run merged into an earlier one
        lines += ["Cases run at: " + "; ".join(
            f"{date}: {', '.join(k for k, v in meta['cases'].items() if v == date)}" for date in dates), ""]
    for backend in ("sqlite", "pg_redis"):
        hs = results.get(f"handshake_{backend}")
        if not hs:
            continue
        lines += [f"## Handshakes, {backend}", "", "| server | concurrency | sockets/s | p50 ms | p99 ms | errors |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for c in (1, 50):
            for name in ("bare_daphne", "product_daphne", "peer_uvicorn", "product_uvicorn"):
                row = hs[f"{name}_c{c}"]
                lines.append(f"| {name} | {c} | {fmt(row['rate'])} | {fmt(row['p50_ms'])} | {fmt(row['p99_ms'])} | {fmt(row['errors'])} |")
        lines += ["", "| ratio | c=1 | c=50 |", "| --- | --- | --- |"]
        for ratio in ("product_over_bare", "product_over_peer", "product_uvicorn_over_peer"):
            lines.append(f"| {ratio} | {hs[f'ratio_{ratio}_c1']:.2f} | {hs[f'ratio_{ratio}_c50']:.2f} |")
        lines.append("")
    for backend in ("sqlite", "pg_redis"):
        login, rest = results.get(f"login_{backend}"), results.get(f"rest_me_{backend}")
        if login and rest and "hasher_c1_p50_ms" in login:
            lines += [f"## Login and REST, {backend}", "",
                      "The hasher alone (Django's password check with the project's settings, in a process of its own) "
                      "and the logins, round by round, on one daphne process (`make run`) and on the layout's HTTP "
                      "tier (gunicorn, one sync worker per core).", "",
                      f"Hasher alone: c=1 p50 {fmt(login['hasher_c1_p50_ms'])} ms; c=4 "
                      f"{fmt(login['hasher_c4_rate'])} verifications/s; cores ÷ hash time "
                      f"{fmt(login['cores_over_hash_time'])}/s.", "",
                      "| measure | daphne | gunicorn |", "| --- | --- | --- |"]
            for label, key in (("login c=1 p50 ms", "login_c1_p50_ms"),
                               ("login beyond the hasher, c=1, ms", "login_c1_beyond_hasher_ms"),
                               ("logins/s, c=4", "login_c4_rate"), ("login c=4 p50 ms", "login_c4_p50_ms"),
                               ("logins ÷ hasher, c=4", "login_c4_over_hasher_c4"), ("login errors", "login_errors")):
                lines.append(f"| {label} | {fmt(login[f'daphne_{key}'])} | {fmt(login[f'gunicorn_{key}'])} |")
            lines += ["", f"`GET /api/auth/me` on daphne (c=10, Python client): {fmt(rest['rate'])} req/s, "
                          f"p50 {fmt(rest['p50_ms'])} ms.", ""]
    if "queries" in results:
        q = results["queries"]
        lines += ["## Database queries (counted)", "", "| path | queries |", "| --- | --- |",
                  f"| login | {q['login']} |", f"| authenticated REST request | {q['rest_request']} |",
                  f"| socket handshake | {q['handshake']} |", ""]
    for backend in ("sqlite", "pg_redis"):
        idle = results.get(f"idle_{backend}")
        if idle:
            lines += [f"## Idle sockets, one process, {backend}", "", "| measure | value |", "| --- | --- |"]
            lines += [f"| {k} | {fmt(v)} |" for k, v in idle.items()] + [""]
    titles = {"sqlite": "SQLite (WAL, two processes on one file)", "pg_redis": "PostgreSQL + Redis"}
    ends = (
        ("revocation", "`DELETE /api/session/{id}` sent to the first process; request → close"),
        ("revocation_command", "`manage.py sessions end <id> --yes`, a process of its own; command start → close, "
                               "and its exit → close (\"after the response\")"),
        ("revocation_flushed", "Redis flushed (FLUSHDB) just before the `DELETE`"),
        ("revocation_10k", "10,000 sockets, `DELETE`"),
    )
    for backend in ("sqlite", "pg_redis"):
        present = [(key, text) for key, text in ends if f"{key}_{backend}" in results]
        if not present:
            continue
        lines += [f"## Session ends over two processes ({titles[backend]})", "",
                  "Sockets of one session spread over two daphne processes; the close is read from the session event "
                  "log by each process's tail.", "",
                  "| path | sockets | request→close p50 ms | request→close p99 ms | request→close max ms | "
                  "request (or command) ms | response→close p99 ms | response→close max ms | closed before the response % "
                  "| closes not 4409 | handshakes failed |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for key, text in present:
            for count, row in results[f"{key}_{backend}"].items():
                lines.append(
                    f"| {text} | {count.split('_')[1]} | {fmt(row['request_to_close_p50_ms'])} | "
                    f"{fmt(row['request_to_close_p99_ms'])} | {fmt(row['request_to_close_max_ms'])} | "
                    f"{fmt(row['request_ms'])} | {fmt(row['response_to_close_p99_ms'])} | "
                    f"{fmt(row['response_to_close_max_ms'])} | {fmt(row['closed_before_response_pct'])} | "
                    f"{fmt(row['not_4409'])} | {fmt(row.get('handshake_errors', 0.0))} |"
                )
        lines.append("")
    for backend in ("sqlite", "pg_redis"):
        floor, product = results.get(f"revocation_floor_{backend}"), results.get(f"revocation_{backend}")
        if floor and product:
            lines += [f"## Revocation beside its floor ({titles[backend]})", "",
                      "The floor: the same sockets on two bare daphne processes (`bench/bare.py`), closed with 4409 "
                      "by `POST /close-all` to both, no log and no check in between.", "",
                      "| sockets | floor p99 ms | product p99 ms | product ÷ floor |", "| --- | --- | --- | --- |"]
            for count, row in floor.items():
                if count in product:
                    p, f = product[count]["request_to_close_p99_ms"], row["request_to_close_p99_ms"]
                    lines.append(f"| {count.split('_')[1]} | {fmt(f)} | {fmt(p)} | {p['median'] / f['median']:.2f} |")
            lines.append("")
    for backend in ("sqlite", "pg_redis"):
        row = results.get(f"fanout_{backend}")
        if row:
            lines += [f"## Fan-out: one event written to the log → every socket of one session, two processes "
                      f"({titles[backend]})", "",
                      "Written by a process with no socket (`core.events.events_record`); delay from its commit.", "",
                      "| delivered | commit→delivery p50 ms | p99 ms | max ms | the write itself ms |",
                      "| --- | --- | --- | --- | --- |",
                      f"| {fmt(row['delivered'])} | {fmt(row['p50_ms'])} | {fmt(row['p99_ms'])} | {fmt(row['max_ms'])} | "
                      f"{fmt(row['publish_ms'])} |", ""]
    for backend in ("sqlite", "pg_redis"):
        res = results.get(f"resume_{backend}")
        if res:
            lines += [f"## Resume: reconnect with `since=` after N missed events ({titles[backend]})", "",
                      "Connect → the last replayed frame, beside a plain connect → `session.ready` (median of 7) of "
                      "the same session on the same process.", "",
                      "| missed | plain connect ms | resume ms | resume ÷ plain |", "| --- | --- | --- | --- |"]
            for key, row in res.items():
                lines.append(f"| {key.split('_')[1]} | {fmt(row['plain_connect_ms'])} | {fmt(row['resume_ms'])} | "
                             f"{fmt(row['ratio'])} |")
            lines.append("")
    return "\n".join(lines)


CASES = ("handshake", "login", "idle", "queries", "revocation", "command", "flushed", "fanout", "resume", "revocation10k")
DEFAULT_CASES = tuple(case for case in CASES if case != "revocation10k")


def main() -> None:
    parser = argparse.ArgumentParser(description="Symphainy gateway benchmark")
    parser.add_argument("--quick", action="store_true", help="small, fast repetitions (a smoke run)")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per case (default 3, quick 1)")
    parser.add_argument("--skip-services", action="store_true", help="SQLite only")
    parser.add_argument("--only", default=None,
                        help=f"comma-separated cases of {','.join(CASES)} (default: all but revocation10k); "
                             "the results are merged into the existing results file")
    parser.add_argument("--backends", default="sqlite,pg_redis", help="comma-separated: sqlite, pg_redis")
    args = parser.parse_args()
    cases = set(args.only.split(",")) if args.only else set(DEFAULT_CASES)
    if cases - set(CASES):
        parser.error(f"unknown cases: {', '.join(sorted(cases - set(CASES)))}")
    backends = args.backends.split(",")
    bench = Bench(quick=args.quick, reps=args.reps or (1 if args.quick else 3))
    started = time.monotonic()

    def run(backend: str) -> None:
        env = configure(backend)
        users = make_users(env, 60)
        if "handshake" in cases:
            bench.handshakes(backend, env, users)
        if "login" in cases:
            bench.login_and_rest(backend, env, users)
        if "idle" in cases:
            bench.idle_sockets(backend, env, users)
        if "revocation" in cases:
            bench.revocation_floor(backend, env, users)
            bench.revocation(backend, env, users)
        if "command" in cases:
            bench.revocation_command(backend, env, users)
        if "flushed" in cases and backend == "pg_redis":
            bench.revocation_flushed(backend, env, users)
        if "fanout" in cases:
            bench.fanout(backend, env, users)
        if "resume" in cases:
            bench.resume(backend, env, users)
        if "revocation10k" in cases:
            bench.revocation_10k(backend, env, users)

    if "sqlite" in backends:
        run("sqlite")
    if "queries" in cases:
        bench.query_counts()
    if "pg_redis" in backends and not args.skip_services and services_up():
        run("pg_redis")

    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta = {
        "date": now,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "reps": bench.reps, "quick": bench.quick, "seconds": round(time.monotonic() - started, 1),
        "load_average": os.getloadavg(),
        "cases": {key: now for key in bench.results},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "quick" if args.quick else "latest"
    results = bench.results
    if args.only and (RESULTS / f"{stem}.json").exists():
        # A partial run: the other cases keep their numbers, each dated in meta["cases"].
        previous = json.loads((RESULTS / f"{stem}.json").read_text())
        meta["cases"] = {**previous["meta"].get("cases", {}), **meta["cases"]}
        meta["seconds"] = None
        results = {**previous["results"], **bench.results}
    (RESULTS / f"{stem}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2, default=str))
    (RESULTS / f"{stem}.md").write_text(report(results, meta) + (f"\nRun time: {meta['seconds']} s.\n" if meta["seconds"] else ""))
    print(report(results, meta))
    print(f"\nwritten: {RESULTS / (stem + '.md')} and .json ({round(time.monotonic() - started, 1)} s)")


if __name__ == "__main__":
    main()
