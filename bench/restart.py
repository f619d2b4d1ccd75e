"""A server process stopped under 1,000 sockets, drained (SIGTERM) beside killed (SIGKILL),
in the same run: events lost and duplicated, handshakes refused, and the time from the
signal until every client is back and resumed (docs/deployment.md#restarts-and-deploys).

    .venv/bin/python bench/restart.py                        # SQLite
    .venv/bin/python bench/restart.py --backend pg_redis     # PostgreSQL + Redis (BENCH_DATABASE_URL)

Two daphne processes on one database; 50 users with 20 sockets each (the default per-user
cap, so ghosts of a killed process refuse reconnects with 4429 until they are swept), all on
the first process; a writer appends one event to each session's log every second
throughout (50 events/s). The first process is then stopped (the first step of a rolling restart); each
client reconnects as the browser client does (full jitter from 0.5 s, doubling, capped at
30 s; 4429 at least 2.5 s) to either process (a refused connection tries the other, as nginx
does) and resumes with since/epoch. Then the writer stops and every client must reach the
last event of its session within 30 s: an event missing before the last one a client
received counts as lost, one received twice as duplicated, and a client still behind after
the 30 s as not caught up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import Publisher, configure, make_users, pct, start, page_origin  # noqa: E402

USERS, PER_USER = 50, 20


class Client:
    def __init__(self, servers: list, user: dict) -> None:
        self.servers, self.user = servers, user
        self.seqs: list[int] = []
        self.position: tuple[int, str] | None = None
        self.refused = 0
        self.back_at: float | None = None  # when the resumed socket's session.ready came
        self.closed_at: float | None = None
        self.codes: list[int | None] = []
        self.stop = False
        self.recovered: list[bool] = []

    async def run(self, first: int) -> None:
        attempt, index = 0, first
        while not self.stop:
            server = self.servers[index % len(self.servers)]
            query = f"?since={self.position[0]}&epoch={self.position[1]}" if self.position else ""
            try:
                ws = await websockets.connect(server.ws + "/api/runtime/agent" + query, origin=page_origin(server.ws),
                                              subprotocols=["symphainy.v1", f"bearer.{self.user['access']}"],
                                              open_timeout=30, max_queue=None)
            except OSError:  # not listening (stopped or stopping): the other one, as nginx would
                index += 1
                await asyncio.sleep(random.random() * 0.05)
                continue
            try:
                ready = json.loads(await ws.recv())
                if ready.get("type") != "session.ready":
                    raise websockets.ConnectionClosed(None, None)
                if self.position is not None:
                    self.back_at = time.monotonic()
                    self.recovered.append(ready.get("recovered") is True)
                else:
                    self.position = (ready["seq"], ready["epoch"])
                attempt = 0
                while True:
                    frame = json.loads(await ws.recv())
                    if "seq" in frame:
                        self.seqs.append(frame["seq"])
                        self.position = (frame["seq"], frame["epoch"])
            except websockets.ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd is not None else None
                if code is not None and code >= 4000:
                    self.refused += 1
                self.codes.append(code)
                self.closed_at = self.closed_at or time.monotonic()
            if self.stop:
                return
            base = min(30.0, 0.5 * 2**attempt)
            if self.codes and self.codes[-1] == 4429:
                base = max(base, 5.0)
                delay = base / 2 + random.random() * base / 2
            else:
                delay = random.random() * base
            attempt += 1
            await asyncio.sleep(delay)


def one_run(backend: str, how: str) -> dict:
    env = configure(backend)
    env.update(WS_MAX_SOCKETS_PER_USER=str(PER_USER))
    users = make_users(env, USERS)
    first, second = start("daphne", env), start("daphne", env)
    publisher = Publisher(env)
    writing = threading.Event()
    writing.set()

    def writer() -> None:
        while writing.is_set():
            for user in users:
                publisher.publish(user["session_id"])
            time.sleep(1.0)

    async def scenario() -> dict:
        clients = [Client([first, second], user) for user in users for _ in range(PER_USER)]
        tasks = []
        for batch in range(0, len(clients), 50):
            tasks += [asyncio.ensure_future(client.run(0)) for client in clients[batch:batch + 50]]
            while not all(client.position for client in clients[:batch + 50]):
                await asyncio.sleep(0.05)
        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        await asyncio.sleep(1.0)  # events flowing before the stop
        stopped = time.monotonic()
        first.process.send_signal(signal.SIGTERM if how == "drained" else signal.SIGKILL)
        deadline = stopped + 120
        while not all(client.back_at for client in clients) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        exit_status = await asyncio.to_thread(first.process.wait, 60)
        writing.clear()
        await asyncio.to_thread(thread.join, 30)
        # Every client must reach its session's last event.
        await asyncio.sleep(0)
        last = {}
        for client in clients:
            last[client.user["session_id"]] = max(last.get(client.user["session_id"], 0), max(client.seqs or [0]))
        settle = time.monotonic() + 30
        while time.monotonic() < settle and not all(
            client.position and client.position[0] >= last[client.user["session_id"]] for client in clients
        ):
            await asyncio.sleep(0.05)
        for client in clients:
            client.stop = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        lost = duplicated = behind = 0
        for client in clients:
            if not client.seqs:
                continue
            received = client.seqs
            lost += len(set(range(received[0], max(received) + 1)) - set(received))
            duplicated += len(received) - len(set(received))
            behind += max(received) < last[client.user["session_id"]]
        back = [client.back_at - stopped for client in clients if client.back_at]
        return {
            "how": how, "sockets": len(clients), "exit_status": exit_status,
            "closed_with": {str(code): sum(1 for c in clients if c.codes[:1] == [code]) for code in {c.codes[0] if c.codes else None for c in clients}},
            "back": len(back), "back_p50_s": statistics.median(back) if back else None,
            "back_p99_s": pct(back, 0.99) if back else None, "back_max_s": max(back) if back else None,
            "refused": sum(client.refused for client in clients),
            "recovered_false": sum(1 for client in clients for ok in client.recovered if not ok),
            "lost": lost, "duplicated": duplicated, "not_caught_up": behind,
        }

    try:
        return asyncio.run(scenario())
    finally:
        publisher.close()
        for server in (first, second):
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="sqlite", choices=("sqlite", "pg_redis"))
    args = parser.parse_args()
    results = [one_run(args.backend, "drained"), one_run(args.backend, "killed")]
    drained, killed = results
    ratio = {key: (killed[key] / drained[key] if drained[key] else None) for key in ("back_p50_s", "back_p99_s", "back_max_s")}
    out = {"backend": args.backend, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "cpus": os.cpu_count(), "load": os.getloadavg()[0], "results": results, "killed_over_drained": ratio}
    path = Path(__file__).resolve().parent / "results" / f"restart-{args.backend}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
