"""Agent answers as streams (issue 23): token delivery latency with many answers streaming
at once, a late socket's time to its snapshot, the database writes per answer, and another
user's ping round trip meanwhile beside the same ping with nothing streaming (the baseline,
in the same run).

    .venv/bin/python bench/answers.py [--answers 100] [--backends sqlite,pg_redis]

Each answer is the echo agent's (`AGENT_TOKEN_DELAY_SECONDS`, 40 tokens), asked by one user
of its own (the per-user bound is 3); its tokens are watched by a second socket of the
session, on a second daphne process with PostgreSQL (the tokens cross over NOTIFY), on the
same process on SQLite (they do not cross there). Latency is the frame's `timestamp` (set
when the agent yielded the token) to its arrival at the client, on one machine's clock.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (  # noqa: E402
    PYTHON, ROOT, SERVER_ENV, configure, make_users, page_origin, pct, pythonpath, services_up, start,
)

WORDS = 40
DELAY_S = 0.05


async def _connect(server, token: str):
    url = server.ws + "/api/runtime/agent"
    ws = await websockets.connect(url, subprotocols=["symphainy.v1", f"bearer.{token}"], origin=page_origin(url),
                                  open_timeout=30, max_queue=None)
    assert json.loads(await ws.recv())["type"] == "session.ready"
    return ws


async def _watch(ws, latencies: list[float]) -> None:
    """Until the answer's terminal event: each token's latency."""
    while True:
        frame = json.loads(await ws.recv())
        kind = frame.get("event_type")
        if kind == "agent.token":
            sent = datetime.fromisoformat(frame["timestamp"]).timestamp()
            latencies.append((time.time() - sent) * 1000)
        elif kind in ("agent.completed", "agent.failed", "agent.cancelled"):
            return


async def _late(server, token: str) -> float:
    """A socket opened mid-answer: connect → its agent.snapshot, in ms."""
    began = time.perf_counter()
    ws = await _connect(server, token)
    try:
        while json.loads(await ws.recv()).get("event_type") != "agent.snapshot":
            pass
        return (time.perf_counter() - began) * 1000
    finally:
        await ws.close()


async def _pings(ws, rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        began = time.perf_counter()
        await ws.send('{"type":"ping"}')
        while json.loads(await ws.recv())["type"] != "pong":
            pass
        samples.append((time.perf_counter() - began) * 1000)
        await asyncio.sleep(0.02)
    return samples


def _writes_per_answer(env: dict[str, str]) -> list[tuple[int, int]]:
    """(writes, tokens) of each answer still in flight, read by a child with the backend's settings."""
    script = ("import json, django\ndjango.setup()\nfrom sessions_runtime.models import AgentAnswer\n"
              "print(json.dumps(list(AgentAnswer.objects.values_list('writes', 'next_index'))))")
    out = subprocess.run([PYTHON, "-c", script], cwd=ROOT, env={**os.environ, **SERVER_ENV, **env, "PYTHONPATH": pythonpath()},
                         capture_output=True, text=True, check=True)
    return [tuple(row) for row in json.loads(out.stdout.strip().splitlines()[-1])]


async def scenario(asker_server, watcher_server, users: list[dict], env: dict[str, str]) -> dict:
    other, *askers = users
    pinger = await _connect(asker_server, other["access"])
    idle = await _pings(pinger, 50)
    watchers = [await _connect(watcher_server, user["access"]) for user in askers]
    asking = [await _connect(asker_server, user["access"]) for user in askers]
    latencies: list[float] = []
    watching = [asyncio.create_task(_watch(ws, latencies)) for ws in watchers]
    question = " ".join(f"w{n}" for n in range(WORDS))
    for ws in asking:
        await ws.send(json.dumps({"type": "agent.message", "payload": {"text": question}}))
    await asyncio.sleep(WORDS * DELAY_S / 3)  # a third of the way: a late join, and pings meanwhile
    busy_task = asyncio.create_task(_pings(pinger, 50))
    late = await asyncio.gather(*(_late(watcher_server, user["access"]) for user in askers[:20]))
    writes = await asyncio.to_thread(_writes_per_answer, env)
    busy = await busy_task
    await asyncio.gather(*watching)
    for ws in [pinger, *watchers, *asking]:
        await ws.close()
    return {
        "answers": len(askers), "tokens": len(latencies),
        "token_p50_ms": pct(latencies, 0.5), "token_p99_ms": pct(latencies, 0.99),
        "late_snapshot_p50_ms": pct(late, 0.5), "late_snapshot_p99_ms": pct(late, 0.99),
        "writes_per_token_mid_answer": sum(w for w, _ in writes) / max(1, sum(n for _, n in writes)),
        "ping_idle_p99_ms": pct(idle, 0.99), "ping_busy_p99_ms": pct(busy, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--answers", type=int, default=100)
    parser.add_argument("--backends", default="sqlite,pg_redis")
    args = parser.parse_args()
    results = {}
    for backend in args.backends.split(","):
        if backend == "pg_redis" and not services_up():
            continue
        env = configure(backend)
        users = make_users(env, args.answers + 1)
        server_env = {**env, "AGENT_TOKEN_DELAY_SECONDS": str(DELAY_S), "AGENT_ANSWERS_PER_PROCESS": str(args.answers)}
        a = start("daphne", server_env)
        b = start("daphne", server_env) if backend == "pg_redis" else a
        try:
            results[backend] = asyncio.run(scenario(a, b, users, env))
        finally:
            for server in {id(a): a, id(b): b}.values():
                server.stop()
        print(backend, json.dumps(results[backend], indent=1), flush=True)
    out = ROOT / "bench" / "results" / "answers.json"
    out.write_text(json.dumps({"at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **results}, indent=1))


if __name__ == "__main__":
    main()
