"""Load test: one daphne process holds thousands of sockets while logins, REST reads and
session ends run against it, and every ended session's sockets must close.

    .venv/bin/python bench/load.py                  # 2,000 sockets, 60 s, PostgreSQL + Redis when reachable
    .venv/bin/python bench/load.py --sockets 500 --duration 15 --backend sqlite

Loopback only, bounded in sockets and time. Results: bench/results/load.json and load.md.
An "unexpected error" is any answer other than the one the contract gives: a failed
handshake, a non-2xx login or read, a held socket of a live session that closed, or an
ended session's socket that stayed open or closed with a code other than 4409.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402 - the benchmark's process, data and client helpers

SOCKETS_PER_SESSION = 10


async def open_socket(url: str, token: str) -> Any:
    import websockets

    ws = await websockets.connect(url, subprotocols=["symphainy.v1", f"bearer.{token}"], origin=bench.page_origin(url),
                                  open_timeout=60, ping_interval=None, max_queue=None)
    frame = json.loads(await asyncio.wait_for(ws.recv(), 60))
    if frame.get("type") != "session.ready":
        raise RuntimeError(f"unexpected first frame {frame}")
    return ws


async def close_code(ws: Any, timeout: float) -> int | None:
    """The close code the socket receives within `timeout`, or None if it stays open."""
    from websockets.exceptions import ConnectionClosed

    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else -1
    except asyncio.TimeoutError:
        return None


async def scenario(server: bench.Server, holders: list[dict], doomed: list[dict], logins: list[dict],
                   readers: list[dict], duration: float, http_concurrency: int) -> dict[str, Any]:
    url = server.ws + "/api/runtime/agent"
    loop = asyncio.get_running_loop()
    errors: dict[str, int] = {}

    def error(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    # 1. Hold the sockets: SOCKETS_PER_SESSION on every session, 50 handshakes at a time.
    gate = asyncio.Semaphore(50)

    async def held(user: dict) -> Any:
        async with gate:
            try:
                return await open_socket(url, user["access"])
            except Exception:  # noqa: BLE001 - counted
                error("handshake")
                return None

    began = time.perf_counter()
    by_session: dict[str, list[Any]] = {}
    for user in holders + doomed:
        by_session[user["session_id"]] = [None] * SOCKETS_PER_SESSION
    opened = await asyncio.gather(*(held(u) for u in holders + doomed for _ in range(SOCKETS_PER_SESSION)))
    for index, ws in enumerate(opened):
        user = (holders + doomed)[index // SOCKETS_PER_SESSION]
        by_session[user["session_id"]][index % SOCKETS_PER_SESSION] = ws
    open_seconds = time.perf_counter() - began
    rss_held = server.rss_kib()

    # 2. Logins, REST reads and session ends, spread at random over `duration` seconds.
    latencies: dict[str, list[float]] = {"login": [], "read": [], "end": []}
    ended_at: dict[str, float] = {}
    plan: list[tuple[float, str, dict]] = (
        [(random.uniform(0, duration), "login", u) for u in logins]
        + [(random.uniform(0, duration), "read", u) for u in readers]
        + [(random.uniform(0, duration), "end", u) for u in doomed]
    )
    plan.sort(key=lambda item: item[0])

    def call(kind: str, user: dict) -> None:
        start = time.perf_counter()
        if kind == "login":
            status, _ = bench.http("POST", server.http + "/api/auth/login",
                                   {"email": user["email"], "password": "bench-password-123"})
            ok = status == 200
        elif kind == "read":
            path = random.choice(["/api/auth/me", f"/api/session/{user['session_id']}", "/api/sessions"])
            status, _ = bench.http("GET", server.http + path, token=user["access"])
            ok = status == 200
        else:
            status, _ = bench.http("DELETE", server.http + f"/api/session/{user['session_id']}", token=user["access"])
            ok = status == 204
            ended_at[user["session_id"]] = time.perf_counter()
        latencies[kind].append(time.perf_counter() - start)
        if not ok:
            error(f"{kind}_{status}")

    pool = ThreadPoolExecutor(http_concurrency)
    t0 = time.perf_counter()
    pending = []
    for at, kind, user in plan:
        delay = at - (time.perf_counter() - t0)
        if delay > 0:
            await asyncio.sleep(delay)
        pending.append(loop.run_in_executor(pool, call, kind, user))
    await asyncio.gather(*pending)
    pool.shutdown()
    load_seconds = time.perf_counter() - t0

    # 3. Every socket of an ended session closed with 4409; every other socket is open.
    doomed_sockets = [ws for u in doomed for ws in by_session[u["session_id"]] if ws is not None]
    codes = await asyncio.gather(*(close_code(ws, 5) for ws in doomed_sockets))
    for code in codes:
        if code != 4409:
            error(f"ended_session_socket_{code}")
    alive = [ws for u in holders for ws in by_session[u["session_id"]] if ws is not None]
    for ws in alive:
        if ws.close_code is not None:
            error(f"held_socket_closed_{ws.close_code}")
    sample = random.sample(alive, min(100, len(alive)))

    async def ping(ws: Any) -> None:
        await ws.send('{"type":"ping"}')
        while json.loads(await asyncio.wait_for(ws.recv(), 10)).get("type") != "pong":
            pass

    pings = await asyncio.gather(*(ping(ws) for ws in sample), return_exceptions=True)
    for outcome in pings:
        if isinstance(outcome, BaseException):
            error("held_socket_ping")
    await asyncio.gather(*(ws.close() for ws in alive), return_exceptions=True)

    return {
        "sockets_held": sum(1 for ws in opened if ws is not None),
        "sockets_open_seconds": round(open_seconds, 1),
        "server_rss_mib_with_sockets": round(rss_held / 1024, 1),
        "load_seconds": round(load_seconds, 1),
        "logins": len(latencies["login"]), "login_p50_ms": round(bench.pct(latencies["login"], 0.5) * 1000, 1),
        "login_p99_ms": round(bench.pct(latencies["login"], 0.99) * 1000, 1),
        "reads": len(latencies["read"]), "read_p50_ms": round(bench.pct(latencies["read"], 0.5) * 1000, 1),
        "read_p99_ms": round(bench.pct(latencies["read"], 0.99) * 1000, 1),
        "session_ends": len(latencies["end"]), "end_p50_ms": round(bench.pct(latencies["end"], 0.5) * 1000, 1),
        "end_p99_ms": round(bench.pct(latencies["end"], 0.99) * 1000, 1),
        "ended_session_sockets": len(doomed_sockets),
        "ended_session_sockets_closed_4409": sum(1 for c in codes if c == 4409),
        "held_sockets_answering_ping": sum(1 for p in pings if not isinstance(p, BaseException)),
        "held_sockets_pinged": len(sample),
        "unexpected_errors": sum(errors.values()),
        "errors_by_kind": errors,
    }


def report(result: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [f"# Load test — {meta['date']}", "",
             f"Machine: {meta['machine']}. Backend: {meta['backend']}. One daphne process.", "",
             "| measure | value |", "| --- | --- |"]
    lines += [f"| {key} | {value} |" for key, value in result.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description="Hold sockets while logins, reads and session ends run")
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--logins", type=int, default=200)
    parser.add_argument("--reads", type=int, default=1000)
    parser.add_argument("--ends", type=int, default=100)
    parser.add_argument("--backend", choices=["auto", "sqlite", "pg_redis"], default="auto")
    parser.add_argument("--http-concurrency", type=int, default=16)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    backend = args.backend if args.backend != "auto" else ("pg_redis" if bench.services_up() else "sqlite")
    sessions = max(args.ends + 1, args.sockets // SOCKETS_PER_SESSION)
    env = bench.configure(backend)
    login_users = max(1, args.logins // 2)  # each logs in twice: under the per-user session cap
    users = bench.make_users(env, sessions + login_users)
    doomed, holders = users[: args.ends], users[args.ends: sessions]
    logins = [u for u in users[sessions:] for _ in range(2)][: args.logins]
    readers = [random.choice(holders) for _ in range(args.reads)]

    server = bench.start("daphne", env)
    try:
        result = asyncio.run(scenario(server, holders, doomed, logins, readers, args.duration, args.http_concurrency))
    finally:
        server.stop()
    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "backend": backend, "args": vars(args),
    }
    bench.RESULTS.mkdir(parents=True, exist_ok=True)
    (bench.RESULTS / "load.json").write_text(json.dumps({"meta": meta, "results": result}, indent=2))
    (bench.RESULTS / "load.md").write_text(report(result, meta))
    print(report(result, meta))
    sys.exit(1 if result["unexpected_errors"] else 0)


if __name__ == "__main__":
    main()
