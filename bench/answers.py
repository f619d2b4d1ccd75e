"""Agent answers as streams (issue 23): token delivery latency with many answers streaming
at once and another user's ping round trip meanwhile, beside the same tokens sent by a bare
consumer (the baseline, in the same run); the server's CPU per answer; a late socket's time
to its snapshot; the database writes per answer; the cost of the coalesced writes against
writing nothing.

    .venv/bin/python bench/answers.py [--answers 100] [--backends sqlite,pg_redis] [--repeat 3]
    git worktree add --detach /tmp/before <commit>    # then: ... bench/answers.py --before /tmp/before

Each answer is the echo agent's (`AGENT_TOKEN_DELAY_SECONDS`, 40 tokens), asked by one user
of its own (the per-user bound is 3); its tokens are watched by a second socket of the
session, on a second daphne process with PostgreSQL (the tokens cross over NOTIFY), on the
same process on SQLite. Latency is the frame's `timestamp` (set when the agent yielded the
token) to its arrival at the client, on one machine's clock. Rounds, each on fresh servers:

- `bare`: `bench/bare.py`'s `/tokens` on one daphne process: the same frames to the same
  sockets, sent by a Channels consumer with no database, no row and no check (the floor);
- `product`: the gateway, pinged by another user while the answers stream;
- `no_writes`: the same with AGENT_SNAPSHOT_INTERVAL at 60 s, so nothing is written while
  the answers stream (the keeper's text writes and lease renewals wait for it);
- `before` (with `--before PATH`): `product` from another checkout, the code before a
  change; `before:<round>` any other round from it;
- `product@<ms>`: the gateway with AGENT_SNAPSHOT_INTERVAL at `<ms>`;
- `late`: the gateway again, watched as in `product`, and 20 more sockets of the asking
  sessions open on the watching process a third of the way into their answers (connect →
  `agent.snapshot`), then the rows' writes are read.

`--flood` (issue 23's flood) instead: on one daphne process with the default socket and
message bounds, `--flood-accounts` accounts × 20 sockets of one session each send long
`agent.message`s (AGENT_MESSAGE_MAX_CHARS, 1,000 words: 20 s of tokens) as fast as
WS_MESSAGE_RATE allows for `--flood-seconds`, then leave; another user pings meanwhile. The
senders run in a child process (so the pinger's loop is not theirs). Sampled each second:
the process's RSS and CPU. Rounds `bare` (`bench/bare.py` `/tokens`, the same bound of 3
answers per session, no database) and `product`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
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
PINGS_EVERY_S = 0.02
TERMINAL = ("agent.completed", "agent.failed", "agent.cancelled")


async def _open(url: str, subprotocols: list[str]):
    ws = await websockets.connect(url, subprotocols=subprotocols, origin=page_origin(url), open_timeout=60,
                                  max_queue=None)
    assert json.loads(await ws.recv())["type"] == "session.ready"
    return ws


def _product(server, user: dict, group: str):
    return _open(server.ws + "/api/runtime/agent", ["symphainy.v1", f"bearer.{user['access']}"])


def _bare(server, user: dict, group: str):
    return _open(f"{server.ws}/tokens?group={group}", ["symphainy.v1"])


async def _watch(ws, latencies: list[float], after_end: list[int] | None = None) -> None:
    """Until the answer's terminal event: each token's latency; then, with `after_end`, for
    half a second more, the tokens that came after the end (counted there)."""
    while True:
        frame = json.loads(await ws.recv())
        kind = frame.get("event_type")
        if kind == "agent.token":
            sent = datetime.fromisoformat(frame["timestamp"]).timestamp()
            latencies.append((time.time() - sent) * 1000)
        elif kind in TERMINAL:
            break
    if after_end is None:
        return
    try:
        while True:
            if json.loads(await asyncio.wait_for(ws.recv(), 0.5)).get("event_type") == "agent.token":
                after_end.append(1)
    except asyncio.TimeoutError:
        pass


async def _started(ws, began: float) -> float:
    """The asking socket: its message sent → its `agent.started`, in ms (it reads no further)."""
    while json.loads(await ws.recv()).get("event_type") != "agent.started":
        pass
    return (time.perf_counter() - began) * 1000


async def _late(connect, server, user: dict) -> float:
    """A socket opened mid-answer: connect → its agent.snapshot, in ms."""
    began = time.perf_counter()
    ws = await connect(server, user, "")
    try:
        while json.loads(await ws.recv()).get("event_type") != "agent.snapshot":
            pass
        return (time.perf_counter() - began) * 1000
    finally:
        await ws.close()


async def _pings(ws, until: asyncio.Event | None = None, rounds: int = 0, every: float = PINGS_EVERY_S) -> list[float]:
    """Round trips of `ping` → `pong`, one every `every` s: `rounds` of them, or until `until`."""
    samples: list[float] = []
    while (until is not None and not until.is_set()) or len(samples) < rounds:
        began = time.perf_counter()
        await ws.send('{"type":"ping"}')
        while json.loads(await ws.recv())["type"] != "pong":
            pass
        samples.append((time.perf_counter() - began) * 1000)
        await asyncio.sleep(every)
    return samples


async def _client_lag(until: asyncio.Event) -> list[float]:
    """How late this client's own event loop wakes from a 5 ms sleep: what of a round trip
    is the client's."""
    lags = []
    while not until.is_set():
        began = time.perf_counter()
        await asyncio.sleep(0.005)
        lags.append((time.perf_counter() - began) * 1000 - 5)
    return lags


def _cpu_s(pid: int, thread: int | None = None) -> float:
    """CPU time (user + system) of a process, or of one of its threads."""
    path = f"/proc/{pid}/task/{thread}/stat" if thread else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RowReader:
    """A child with the backend's settings, started ahead (Django's set-up takes seconds on
    a busy machine), that reads (writes, next_index) of every answer in flight when told."""

    SCRIPT = ("import json, sys, django\ndjango.setup()\nfrom sessions_runtime.models import AgentAnswer\n"
              "print('ready', flush=True)\nsys.stdin.readline()\n"
              "print(json.dumps(list(AgentAnswer.objects.values_list('writes', 'next_index'))), flush=True)")

    def __init__(self, env: dict[str, str]) -> None:
        self.child = subprocess.Popen(
            [PYTHON, "-c", self.SCRIPT], cwd=ROOT, env={**os.environ, **SERVER_ENV, **env, "PYTHONPATH": pythonpath()},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.child.stdout.readline().strip() == "ready"

    def read(self) -> list[tuple[int, int]]:
        out, _ = self.child.communicate("go\n", timeout=60)
        return [tuple(row) for row in json.loads(out.strip().splitlines()[-1])]


async def streaming(connect, asker_server, watcher_server, users: list[dict]) -> dict:
    """Every asker asks at once; another user pings the asking process until the last
    watching socket has its answer's end."""
    other, *askers = users
    pinger = await connect(asker_server, other, "pinger")
    idle = await _pings(pinger, rounds=50)
    watchers = [await connect(watcher_server, user, str(n)) for n, user in enumerate(askers)]
    asking = [await connect(asker_server, user, str(n)) for n, user in enumerate(askers)]
    latencies: list[float] = []
    done = asyncio.Event()
    servers = {server.process.pid for server in (asker_server, watcher_server)}
    cpu = {pid: (_cpu_s(pid), _cpu_s(pid, pid)) for pid in servers}
    lagging = asyncio.create_task(_client_lag(done))
    busy_task = asyncio.create_task(_pings(pinger, until=done))
    after_end: list[int] = []
    watching = [asyncio.create_task(_watch(ws, latencies, after_end)) for ws in watchers]
    question = " ".join(f"w{n}" for n in range(WORDS))
    began = time.perf_counter()
    starts = [asyncio.create_task(_started(ws, began)) for ws in asking]
    for ws in asking:
        await ws.send(json.dumps({"type": "agent.message", "payload": {"text": question}}))
    await asyncio.gather(*watching)
    started = [task.result() for task in starts if task.done() and not task.exception()]
    elapsed = time.perf_counter() - began
    done.set()
    busy, lags = await busy_task, await lagging
    used = {pid: (_cpu_s(pid) - before, _cpu_s(pid, pid) - loop) for pid, (before, loop) in cpu.items()}
    for ws in [pinger, *watchers, *asking]:
        await ws.close()
    return {
        "answers": len(askers), "tokens": len(latencies), "tokens_after_end": len(after_end), "seconds": elapsed,
        "started_p50_ms": pct(started, 0.5), "started_p99_ms": pct(started, 0.99),
        "token_p50_ms": pct(latencies, 0.5), "token_p99_ms": pct(latencies, 0.99),
        "ping_idle_p99_ms": pct(idle, 0.99), "ping_busy_p50_ms": pct(busy, 0.5),
        "ping_busy_p99_ms": pct(busy, 0.99), "pings": len(busy),
        "client_lag_p99_ms": pct(lags, 0.99),
        "cpu_ms_per_answer": 1000 * sum(total for total, _ in used.values()) / len(askers),
        "loop_cpu_ms_per_answer": 1000 * sum(loop for _, loop in used.values()) / len(askers),
    }


async def late_join(asker_server, watcher_server, users: list[dict], env: dict[str, str]) -> dict:
    """The answers again; a third of the way into each of 20 of them, a new socket of its
    session."""
    _, *askers = users
    reader = await asyncio.to_thread(RowReader, env)
    watchers = [await _product(watcher_server, user, "") for user in askers]
    asking = [await _product(asker_server, user, "") for user in askers]
    latencies: list[float] = []
    watching = [asyncio.create_task(_watch(ws, latencies)) for ws in watchers]
    question = " ".join(f"w{n}" for n in range(WORDS))
    began = time.perf_counter()
    all_started, started = asyncio.Event(), []

    async def ask(ws, user: dict, late: bool) -> float | None:
        await ws.send(json.dumps({"type": "agent.message", "payload": {"text": question}}))
        started.append(await _started(ws, began))
        if len(started) == len(asking):
            all_started.set()
        joined = None
        if late:  # a third of the way into this answer, as its asking socket sees it
            while True:
                frame = json.loads(await ws.recv())
                if frame.get("event_type") in TERMINAL:
                    return None
                if frame.get("event_type") == "agent.token" and frame["data"]["index"] >= WORDS // 3:
                    break
            try:
                joined = await asyncio.wait_for(_late(_product, watcher_server, user), 10)
            except asyncio.TimeoutError:
                return None  # ended before the late socket opened: no snapshot to wait for
        await _watch(ws, [])
        return joined

    asks = [asyncio.create_task(ask(ws, user, n < 20)) for n, (ws, user) in enumerate(zip(asking, askers))]
    await all_started.wait()
    await asyncio.sleep(WORDS * DELAY_S / 2)
    writes = await asyncio.to_thread(reader.read)  # the rows of the answers still in flight
    late = [joined for joined in await asyncio.gather(*asks) if joined is not None]
    await asyncio.gather(*watching)
    for ws in [*watchers, *asking]:
        await ws.close()
    per_token = sum(w for w, _ in writes) / max(1, sum(n for _, n in writes))
    return {
        "late_snapshot_p50_ms": pct(late, 0.5), "late_snapshot_p99_ms": pct(late, 0.99), "late_joined": len(late),
        # The watching sockets' tokens while the late ones join their process.
        "token_p50_ms": pct(latencies, 0.5), "token_p99_ms": pct(latencies, 0.99), "tokens": len(latencies),
        "row_writes_per_token": per_token,
        # The start's insert and the end's delete, and the keeper's updates (`writes`) for the
        # whole answer at the rate read near its end.
        "row_writes_per_answer": 2 + per_token * WORDS,
    }


FLOOD_WORDS, FLOOD_CHARS, FLOOD_RATE = 1000, 16_000, 60 / 10  # messages a second a socket may send
FLOOD_PING_EVERY_S = 0.2  # the pinger too stays within WS_MESSAGE_RATE


def _flood_child(connect_name: str, port: int, users: list[dict], sockets: int, seconds: float, pipe) -> None:
    """The senders (a child process): `sockets` sockets per user, each sending an
    agent.message every 1/FLOOD_RATE s (a little slower) and reading what comes."""
    from run import Server

    server, connect = Server(None, port), globals()[connect_name]
    text = " ".join(f"{n:015d}" for n in range(FLOOD_WORDS))[:FLOOD_CHARS]
    frame = json.dumps({"type": "agent.message", "payload": {"text": text}})
    started: set[str] = set()
    counts = {"sent": 0, "refused": 0, "closed_early": 0, "other_errors": 0}

    async def read(ws) -> None:
        async for raw in ws:  # substring checks: the tokens go by unparsed
            if '"agent.started"' in raw:
                started.add(json.loads(raw)["data"]["message_id"])
            elif "too_many_answers" in raw:
                counts["refused"] += 1
            elif '"type": "error"' in raw or '"type":"error"' in raw:
                counts["other_errors"] += 1

    async def send(ws, until: float) -> None:
        while time.perf_counter() < until:
            try:
                await ws.send(frame)
            except websockets.ConnectionClosed:
                counts["closed_early"] += 1  # over the message rate (4429) or dropped
                return
            counts["sent"] += 1
            await asyncio.sleep(1.05 / FLOOD_RATE)

    async def flood() -> None:
        opened = [await connect(server, user, str(n)) for n, user in enumerate(users) for _ in range(sockets)]
        readers = [asyncio.create_task(read(ws)) for ws in opened]
        pipe.send("flooding")
        until = time.perf_counter() + seconds
        await asyncio.gather(*(send(ws, until) for ws in opened))
        await asyncio.gather(*(ws.close() for ws in opened))
        for task in readers:
            task.cancel()
        pipe.send({**counts, "started": len(started), "sockets": len(opened)})

    asyncio.run(flood())


async def flooding(connect, server, users: list[dict], sockets: int, seconds: float, after: float) -> dict:
    """The flood against `server`, another user's pings meanwhile, RSS and CPU each second."""
    other, *flooders = users
    pinger = await connect(server, other, "pinger")
    idle = await _pings(pinger, rounds=20, every=FLOOD_PING_EVERY_S)
    pid, samples = server.process.pid, []  # (time, RSS MiB, CPU s)

    async def sample(until: asyncio.Event) -> None:
        while not until.is_set():
            samples.append((time.perf_counter(), server.rss_kib() / 1024, _cpu_s(pid)))
            await asyncio.sleep(1)

    done, ended = asyncio.Event(), asyncio.Event()
    sampling = asyncio.create_task(sample(ended))
    ours, theirs = multiprocessing.Pipe()
    child = multiprocessing.get_context("spawn").Process(
        target=_flood_child, args=(connect.__name__, server.port, flooders, sockets, seconds, theirs))
    child.start()
    assert await asyncio.to_thread(ours.recv) == "flooding"
    began = time.perf_counter()
    pinging = asyncio.create_task(_pings(pinger, until=done, every=FLOOD_PING_EVERY_S))
    counts = await asyncio.to_thread(ours.recv)
    left = time.perf_counter()
    done.set()
    busy = await pinging
    await asyncio.to_thread(child.join)
    await asyncio.sleep(after)
    ended.set()
    await sampling
    await pinger.close()

    def cpu_pct(start: float, end: float) -> float:
        inside = [(t, c) for t, _, c in samples if left + start <= t <= left + end]
        if len(inside) < 2:
            return float("nan")
        return 100 * (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])

    def rss_at(t: float) -> float:
        return min(samples, key=lambda row: abs(row[0] - t))[1]

    during = [rss for t, rss, _ in samples if began <= t <= left]
    return {
        **counts, "accounts": len(flooders), "seconds": left - began, "pings": len(busy),
        "ping_idle_p50_ms": pct(idle, 0.5), "ping_idle_p99_ms": pct(idle, 0.99),
        "ping_p50_ms": pct(busy, 0.5), "ping_p99_ms": pct(busy, 0.99), "ping_max_ms": max(busy),
        "rss_before_mib": samples[0][1], "rss_during_mib": during[len(during) // 2], "rss_peak_mib": max(during),
        "rss_at_leave_mib": rss_at(left), "rss_after_30s_mib": rss_at(left + 30),
        "cpu_pct_flooding": cpu_pct(began - left, 0),
        **{f"cpu_pct_after_{a}_{b}s": cpu_pct(a, b) for a, b in ((0, 10), (10, 20), (20, 30), (30, after))},
    }


def _servers(backend: str, env: dict[str, str], app: str | None = None, root: Path = ROOT):
    a = start("daphne", env, app=app, root=root)
    b = start("daphne", env, app=app, root=root) if backend == "pg_redis" and app is None else a
    return a, b


def _median(samples: list[dict]) -> dict:
    """Each measure's median over the repetitions, with its min–max."""
    out: dict = {}
    for key in samples[0]:
        values = sorted(sample[key] for sample in samples)
        out[key] = values[len(values) // 2]
        if len(values) > 1:
            out[f"{key}_range"] = [values[0], values[-1]]
    return out


def _stop(a, b) -> None:
    for server in {id(a): a, id(b): b}.values():
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--answers", type=int, default=100)
    parser.add_argument("--backends", default="sqlite,pg_redis")
    parser.add_argument("--rounds", default="bare,product,no_writes,late")
    parser.add_argument("--repeat", type=int, default=3, help="each round this many times, interleaved")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "answers.json")
    parser.add_argument("--flood", action="store_true", help="issue 23's flood instead (rounds bare,product)")
    parser.add_argument("--flood-accounts", default="1,10", help="flooding accounts, one round each")
    parser.add_argument("--flood-seconds", type=float, default=60)
    parser.add_argument("--flood-after", type=float, default=45, help="seconds watched after the senders leave")
    parser.add_argument("--before", type=Path, help="a checkout of the code before a change: its round `before`, "
                        "the same as `product`, runs interleaved with the others")
    args = parser.parse_args()
    if args.flood:
        return flood_main(args)
    rounds = args.rounds.split(",")
    if args.before and not any(name.startswith("before") for name in rounds):
        rounds.insert(rounds.index("product") if "product" in rounds else 0, "before")
    results = {}
    for backend in args.backends.split(","):
        if backend == "pg_redis" and not services_up():
            continue
        env = configure(backend)
        users = make_users(env, args.answers + 1)
        server_env = {**env, "AGENT_TOKEN_DELAY_SECONDS": str(DELAY_S), "AGENT_ANSWERS_PER_PROCESS": str(args.answers)}
        samples: dict[str, list[dict]] = {name: [] for name in rounds}
        for _ in range(args.repeat):
            for name in rounds:
                before, kind = name.startswith("before"), name.removeprefix("before:")
                round_env = server_env
                if kind == "no_writes" or kind.startswith("product@"):
                    interval = "60000" if kind == "no_writes" else kind.split("@", 1)[1]
                    round_env = {**server_env, "AGENT_SNAPSHOT_INTERVAL_MS": interval}
                a, b = _servers(backend, round_env, "bench.bare:application" if kind == "bare" else None,
                                args.before if before else ROOT)
                try:
                    if kind == "late":
                        result = asyncio.run(late_join(a, b, users, env))
                    else:
                        result = asyncio.run(streaming(_bare if name == "bare" else _product, a, b, users))
                finally:
                    _stop(a, b)
                samples[name].append(result)
                print(backend, name, json.dumps(result), flush=True)
        out = {name: _median(values) for name, values in samples.items()}
        for name in ("before", "product", "no_writes"):
            if name in out and "bare" in out:
                for measure in ("token_p50_ms", "token_p99_ms", "ping_busy_p99_ms", "cpu_ms_per_answer"):
                    out[name][f"{measure}_over_bare"] = out[name][measure] / max(out["bare"][measure], 1e-9)
        if "product" in out and "no_writes" in out:
            out["coalescing_cpu_ratio"] = out["product"]["cpu_ms_per_answer"] / out["no_writes"]["cpu_ms_per_answer"]
        results[backend] = out
    _write(args.out, results)


def _write(path: Path, results: dict) -> None:
    meta = {"at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cores": os.cpu_count(),
            "load_average": os.getloadavg()}
    path.write_text(json.dumps({**meta, **results}, indent=1))


def flood_main(args) -> None:
    """Per backend and per number of flooding accounts: `bare`, then `product`, each on a
    fresh process; the product's ping p99 over the bare one's in the same run."""
    results: dict = {}
    accounts = [int(n) for n in args.flood_accounts.split(",")]
    for backend in args.backends.split(","):
        if backend == "pg_redis" and not services_up():
            continue
        env = configure(backend)
        users = make_users(env, max(accounts) + 1)
        bounds = {"WS_MAX_SOCKETS_PER_USER": "20", "WS_MESSAGE_RATE": "60/10s", "BARE_ANSWERS_PER_GROUP": "3"}
        for count in accounts:
            out = {}
            for name in ("bare", "product"):
                server = start("daphne", {**env, **bounds}, app="bench.bare:application" if name == "bare" else None)
                try:
                    out[name] = asyncio.run(flooding(_bare if name == "bare" else _product, server,
                                                     users[:count + 1], 20, args.flood_seconds, args.flood_after))
                finally:
                    server.stop()
                print(backend, count, name, json.dumps(out[name]), flush=True)
            if "bare" in out and "product" in out:
                out["ping_p99_over_bare"] = out["product"]["ping_p99_ms"] / out["bare"]["ping_p99_ms"]
            results[f"{backend}_{count}"] = out
            _write(args.out.with_name("answers-flood.json"), results)


if __name__ == "__main__":
    main()
