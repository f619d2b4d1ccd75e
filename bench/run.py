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
import contextlib
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
from typing import Any, Awaitable, Callable

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PYTHON = sys.executable
ORIGIN = "http://127.0.0.1"
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


def start(kind: str, env: dict[str, str], *, app: str | None = None) -> Server:
    port = free_port()
    if kind == "daphne":
        command = [PYTHON, "-m", "symphainy.serve", "-b", "127.0.0.1", "-p", str(port), "-v", "0"]
        if app:
            command.append(app)
    else:
        command = [PYTHON, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                   "--ws", "websockets", app or "symphainy.asgi:application"]
    # BENCH_LOG_DIR keeps each server's output (warnings and errors) for a look afterwards.
    log_dir = os.environ.get("BENCH_LOG_DIR")
    output: Any = subprocess.DEVNULL
    if log_dir:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        output = open(Path(log_dir) / f"{kind}-{port}.log", "wb")  # noqa: SIM115 - the child keeps it
    process = subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, **SERVER_ENV, **env, "PYTHONPATH": str(ROOT)},
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
    subprocess.run([PYTHON, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env={**os.environ, **env}, check=True)
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
from sessions_runtime.services import Actor, session_create
tenant = tenant_create(name="bench")
out = []
for i in range({count}):
    user = User.objects.create_user(email=f"bench{{i}}@example.com", password="bench-password-123")
    m = membership_add(user=user, tenant=tenant, role=Role.MEMBER)
    s = session_create(intent=session_intent_build(user=user, tenant=tenant, role=m.role, action=SessionIntentAction.COMMAND), actor=Actor.system())
    t = tokens_issue(session=s)
    out.append({{"email": user.email, "user_id": str(user.pk), "session_id": str(s.pk), "access": t.access_token}})
print(json.dumps(out))
"""
    result = subprocess.run([PYTHON, "-c", script], cwd=ROOT, env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                            check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


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
async def handshake(url: str, token: str | None, expect_frame: bool) -> float:
    import websockets

    protocols = ["symphainy.v1", f"bearer.{token}"] if token else ["symphainy.v1"]
    start = time.perf_counter()
    async with websockets.connect(url, subprotocols=protocols, origin=ORIGIN, open_timeout=30, close_timeout=10) as ws:
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


async def hold(url: str, token: str, count: int, *, concurrency: int = 50) -> tuple[list[Any], list[float]]:
    """Open `count` sockets, at most `concurrency` handshakes at a time, and keep them;
    returns the sockets and their handshake times."""
    import websockets

    sockets: list[Any] = []
    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            start = time.perf_counter()
            ws = await websockets.connect(url, subprotocols=["symphainy.v1", f"bearer.{token}"], origin=ORIGIN,
                                          open_timeout=60, ping_interval=None, max_queue=None)
            await asyncio.wait_for(ws.recv(), 60)
            latencies.append(time.perf_counter() - start)
            sockets.append(ws)

    await asyncio.gather(*(one() for _ in range(count)))
    return sockets, latencies


async def close_all(sockets: list[Any]) -> None:
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


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


# --- Cases -----------------------------------------------------------------------------------
@dataclass
class Bench:
    quick: bool
    reps: int
    results: dict[str, Any] = field(default_factory=dict)

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
        server = start("daphne", env)
        try:
            logins = [
                (lambda u=u: http("POST", f"{server.http}/api/auth/login", {"email": u["email"], "password": "bench-password-123"}))
                for u in users[: self.n(100, 20)]
            ]
            me = [(lambda u=u: http("GET", f"{server.http}/api/auth/me", token=u["access"])) for u in users] * self.n(20, 3)
            http_load(me[:20], 4)
            # One at a time, the login's cost beyond the password hasher shows on its own.
            self.results[f"login_c1_{backend}"] = repeat(self.reps, lambda: http_load(logins[:20], 1))
            self.results[f"login_{backend}"] = repeat(self.reps, lambda: http_load(logins, 4))
            self.results[f"rest_me_{backend}"] = repeat(self.reps, lambda: http_load(me, 10))
        finally:
            server.stop()

    def hasher_cost(self) -> None:
        script = """
import time, django, statistics
django.setup()
from django.contrib.auth.hashers import make_password, check_password
encoded = make_password("bench-password-123")
times = []
for _ in range(15):
    t = time.perf_counter(); check_password("bench-password-123", encoded); times.append(time.perf_counter() - t)
print(statistics.median(times) * 1000)
"""
        result = subprocess.run([PYTHON, "-c", script], cwd=ROOT, env={**os.environ, "DJANGO_SETTINGS_MODULE": "symphainy.settings"},
                                check=True, capture_output=True, text=True)
        self.results["argon2_verify_p50_ms"] = float(result.stdout.strip().splitlines()[-1])

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
from realtime.services import connection_open, socket_authorize
user = factories.make_user()
client = APIClient()
with CaptureQueriesContext(connection) as login:
    body = factories.login(client, user)
factories.bearer(client, body["access_token"])
with CaptureQueriesContext(connection) as rest:
    client.get("/api/auth/me")
claims = token_decode(body["access_token"], expected_type=ACCESS)
with CaptureQueriesContext(connection) as hs:
    connection_open(grant=socket_authorize(claims=claims, requested_session_id=None), channel_name="bench!1")
runner.teardown_databases(old)
print(json.dumps({"login": len(login), "rest_request": len(rest), "handshake": len(hs)}))
"""
        result = subprocess.run([PYTHON, "-c", script], cwd=ROOT,
                                env={**os.environ, "DJANGO_SETTINGS_MODULE": "symphainy.settings", "PYTHONPATH": str(ROOT),
                                     "SQLITE_TEST_PATH": str(ROOT / "var" / "bench-queries.sqlite3")},
                                check=True, capture_output=True, text=True)
        self.results["queries"] = json.loads(result.stdout.strip().splitlines()[-1])

    def idle_sockets(self, backend: str, env: dict[str, str], users: list[dict[str, str]]) -> None:
        server = start("daphne", env)
        token = users[0]["access"]
        out: dict[str, Any] = {}

        async def scenario() -> None:
            await asyncio.sleep(1)
            base = server.rss_kib()
            held: list[Any] = []
            for target in (1000, self.n(5000, 2000)):
                sockets, _ = await hold(server.ws + "/api/runtime/agent", token, target - len(held))
                held += sockets
                await asyncio.sleep(2)
                out[f"kib_per_socket_at_{target}"] = (server.rss_kib() - base) / len(held)
            # How far one process goes: batches of 500 until a handshake fails, the batch's
            # p99 passes one second, or the bound of this run.
            limit = self.n(10000, 3000)
            most = len(held)
            while most < limit:
                try:
                    sockets, latencies = await asyncio.wait_for(
                        hold(server.ws + "/api/runtime/agent", token, min(500, limit - most)), 120
                    )
                except Exception:  # noqa: BLE001 - the first failure ends the climb
                    out["stopped_by"] = "handshake failure"
                    break
                held += sockets
                most = len(held)
                if pct(latencies, 0.99) > 1.0:
                    out["stopped_by"] = "p99 over 1 s"
                    break
            else:
                out["stopped_by"] = f"run bound ({limit})"
            out["most_sockets"] = most
            out["rss_mib_at_most"] = server.rss_kib() / 1024
            await close_all(held)

        try:
            asyncio.run(scenario())
        finally:
            server.stop()
        self.results[f"idle_{backend}"] = out

    def revocation(self, env: dict[str, str], users: list[dict[str, str]]) -> None:
        a, b = start("daphne", env), start("daphne", env)
        out: dict[str, Any] = {}

        async def once(count: int, user: dict[str, str]) -> dict[str, float]:
            status, raw = await asyncio.to_thread(
                http, "POST", f"{a.http}/api/auth/login", {"email": user["email"], "password": "bench-password-123"}
            )
            body = json.loads(raw)
            half = count // 2
            sockets_a, _ = await hold(a.ws + "/api/runtime/agent", body["access_token"], count - half)
            sockets_b, _ = await hold(b.ws + "/api/runtime/agent", body["access_token"], half) if half else ([], [])
            closed: list[float] = []

            async def wait_close(ws: Any) -> None:
                with contextlib.suppress(Exception):
                    await ws.wait_closed()
                closed.append(time.perf_counter())

            waiters = [asyncio.create_task(wait_close(ws)) for ws in sockets_a + sockets_b]
            sent = time.perf_counter()
            status, _ = await asyncio.to_thread(http, "DELETE", f"{a.http}/api/session/{body['session_id']}", None, body["access_token"])
            answered = time.perf_counter()
            await asyncio.wait_for(asyncio.gather(*waiters), 60)
            # The end is announced when its transaction commits, before the response is
            # written: most closes arrive before the client has read the 204. Both
            # clocks are reported; "after the response" counts those as zero.
            since_request = [(t - sent) * 1000 for t in closed]
            after_response = [max(0.0, t - answered) * 1000 for t in closed]
            return {
                "request_to_close_p50_ms": pct(since_request, 0.5),
                "request_to_close_p99_ms": pct(since_request, 0.99),
                "request_to_close_max_ms": max(since_request),
                "response_to_close_p99_ms": pct(after_response, 0.99),
                "response_to_close_max_ms": max(after_response),
                "closed_before_response_pct": 100.0 * sum(t <= answered for t in closed) / len(closed),
            }

        try:
            for count in (1, 100, self.n(1000, 300)):
                out[f"sockets_{count}"] = repeat(self.reps, lambda c=count: asyncio.run(once(c, users[c % len(users)])))
        finally:
            a.stop()
            b.stop()
        self.results["revocation_pg_redis"] = out

    def fanout(self, env: dict[str, str], users: list[dict[str, str]]) -> None:
        a, b = start("daphne", env), start("daphne", env)
        user = users[-1]
        count = self.n(1000, 300)

        async def once() -> dict[str, float]:
            from channels_redis.core import RedisChannelLayer

            half = count // 2
            sockets_a, _ = await hold(a.ws + "/api/runtime/agent", user["access"], count - half)
            sockets_b, _ = await hold(b.ws + "/api/runtime/agent", user["access"], half)
            layer = RedisChannelLayer(hosts=[REDIS_URL], prefix=os.environ.get("REDIS_PREFIX", "symphainy"))
            received: list[float] = []

            async def receive(ws: Any) -> None:
                await asyncio.wait_for(ws.recv(), 30)
                received.append(time.perf_counter())

            waiters = [asyncio.create_task(receive(ws)) for ws in sockets_a + sockets_b]
            sent = time.perf_counter()
            await layer.group_send(f"user.{user['user_id']}", {"type": "runtime.event", "event_type": "bench.fanout", "data": {}, "timestamp": ""})
            await asyncio.gather(*waiters, return_exceptions=True)
            delays = [(t - sent) * 1000 for t in received]
            await close_all(sockets_a + sockets_b)
            return {"delivered": len(delays), "p50_ms": pct(delays, 0.5), "p99_ms": pct(delays, 0.99)}

        try:
            self.results["fanout_pg_redis"] = repeat(self.reps, lambda: asyncio.run(once()))
        finally:
            a.stop()
            b.stop()


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
        if f"login_{backend}" in results:
            login, rest = results[f"login_{backend}"], results[f"rest_me_{backend}"]
            single = results[f"login_c1_{backend}"]
            lines += [f"## Login and REST, {backend}", "", "| call | req/s | p50 ms | errors |", "| --- | --- | --- | --- |",
                      f"| POST /api/auth/login (c=1) | {fmt(single['rate'])} | {fmt(single['p50_ms'])} | {fmt(single['errors'])} |",
                      f"| POST /api/auth/login (c=4) | {fmt(login['rate'])} | {fmt(login['p50_ms'])} | {fmt(login['errors'])} |",
                      f"| GET /api/auth/me (c=10) | {fmt(rest['rate'])} | {fmt(rest['p50_ms'])} | {fmt(rest['errors'])} |", ""]
    if "argon2_verify_p50_ms" in results:
        lines += [f"Argon2 verification alone (the hasher's own cost): {results['argon2_verify_p50_ms']:.1f} ms p50.", ""]
        for backend in ("sqlite", "pg_redis"):
            if f"login_c1_{backend}" in results:
                beyond = results[f"login_c1_{backend}"]["p50_ms"]["median"] - results["argon2_verify_p50_ms"]
                lines += [f"Login beyond the hasher, c=1, {backend}: {beyond:.1f} ms p50.", ""]
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
    if "revocation_pg_redis" in results:
        lines += ["## Revocation over two processes (PostgreSQL + Redis)", "",
                  "Sockets of one session spread over two daphne processes; `DELETE /api/session/{id}` sent to one.", "",
                  "| sockets | request→close p50 ms | request→close p99 ms | request→close max ms | response→close p99 ms | response→close max ms | closed before the response % |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for key, row in results["revocation_pg_redis"].items():
            lines.append(
                f"| {key.split('_')[1]} | {fmt(row['request_to_close_p50_ms'])} | {fmt(row['request_to_close_p99_ms'])} | "
                f"{fmt(row['request_to_close_max_ms'])} | {fmt(row['response_to_close_p99_ms'])} | "
                f"{fmt(row['response_to_close_max_ms'])} | {fmt(row['closed_before_response_pct'])} |"
            )
        lines.append("")
    if "fanout_pg_redis" in results:
        row = results["fanout_pg_redis"]
        lines += ["## Fan-out: one event to every socket of one user, two processes", "",
                  "| delivered | p50 ms | p99 ms |", "| --- | --- | --- |",
                  f"| {fmt(row['delivered'])} | {fmt(row['p50_ms'])} | {fmt(row['p99_ms'])} |", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="Symphainy gateway benchmark")
    parser.add_argument("--quick", action="store_true", help="small, fast repetitions (a smoke run)")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per case (default 3, quick 1)")
    parser.add_argument("--skip-services", action="store_true", help="SQLite only")
    args = parser.parse_args()
    bench = Bench(quick=args.quick, reps=args.reps or (1 if args.quick else 3))
    started = time.monotonic()

    env = configure("sqlite")
    users = make_users(env, 60)
    bench.handshakes("sqlite", env, users)
    bench.login_and_rest("sqlite", env, users)
    bench.idle_sockets("sqlite", env, users)
    bench.hasher_cost()
    bench.query_counts()
    if not args.skip_services and services_up():
        env = configure("pg_redis")
        users = make_users(env, 60)
        bench.handshakes("pg_redis", env, users)
        bench.login_and_rest("pg_redis", env, users)
        bench.idle_sockets("pg_redis", env, users)
        bench.revocation(env, users)
        bench.fanout(env, users)

    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "reps": bench.reps, "quick": bench.quick, "seconds": round(time.monotonic() - started, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "quick" if args.quick else "latest"
    (RESULTS / f"{stem}.json").write_text(json.dumps({"meta": meta, "results": bench.results}, indent=2, default=str))
    (RESULTS / f"{stem}.md").write_text(report(bench.results, meta) + f"\nRun time: {meta['seconds']} s.\n")
    print(report(bench.results, meta))
    print(f"\nwritten: {RESULTS / (stem + '.md')} and .json ({meta['seconds']} s)")


if __name__ == "__main__":
    main()
