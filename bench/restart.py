"""A rolling restart of two daphne processes under 1,000 or 10,000 sockets, drained (SIGTERM)
beside killed (SIGKILL) and beside its floor in the same run: events lost and duplicated,
handshakes refused, the time from each signal until every client of the stopped process is
back and resumed, and the memory of the restarted process
(docs/deployment.md#restarts-and-deploys).

    .venv/bin/python bench/restart.py --backend pg_redis --sockets 1000,10000
    .venv/bin/python bench/restart.py                        # SQLite, 1,000 sockets
    .venv/bin/python bench/restart.py --how floor            # the floor alone

Two daphne processes on one database (PostgreSQL + Redis: BENCH_DATABASE_URL,
BENCH_REDIS_URL); users with 20 sockets each (the default per-user cap, so the ghosts of a
killed process refuse reconnects with 4429 until they are swept), half of each user's on
either process; a writer appends EVENTS_PER_S events a second to the sessions' logs, in
turn, throughout. Then the rolling restart: the first process is stopped, started again on
its port once it has exited, and when it answers /ready and every client it held is back,
the second; killed, each is started again at once (as systemd's Restart= would). Clients
run in worker processes (asyncio and `websockets`, ~2,500 sockets each) and reconnect as
the browser client does: full jitter from 0.5 s, doubling, capped at 30 s; 4429 at least
2.5 s; a `server.restart` frame's `reconnect_after_ms` instead of the jitter when one was
sent; a refused connection tries the other process at once, as nginx does. Each resumes
with since/epoch. After the restart the writer stops and every client must reach its
session's last event within 30 s: an event after its first position that a client never
received counts as lost, one received twice as duplicated, a client short of the last as
not caught up.

The floor (`--how floor`): the same clients, phases and report against two processes of
bench/bare.py's `/restart` (see its docstring): the product's daphne, a socket accepted with
no check and answered `session.ready` at once, and on SIGTERM the product's closes
(`server.restart`, 1012, over the same window) with none of its database work. The writer
writes as in the other runs (the machine's other work is the same), but the floor forwards
nothing, so its lost / duplicated / behind are null (not measured). What the
floor needs is what daphne, autobahn and these clients need on this machine; the report
gives drained ÷ floor beside killed ÷ drained (p99 signal → resumed, each stop).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import PYTHON, ROOT, SERVER_ENV, Publisher, configure, make_users, pct, pythonpath, start  # noqa: E402

FLOOR_APP = "bench.bare:application"
PER_USER = 20
EVENTS_PER_S = 50
SOCKETS_PER_WORKER = 2500


# --- The clients (a worker process: `restart.py --worker`, its spec on stdin) -----------------
class Client:
    __slots__ = ("ports", "path", "token", "session", "index", "port", "seqs", "first_seq", "position", "history",
                 "hint", "stop", "refused", "ready_at")

    def __init__(self, ports: list[int], path: str, token: str, session: str, first: int) -> None:
        self.ports, self.path, self.token, self.session, self.index = ports, path, token, session, first
        self.port: int | None = None  # the process it is connected to
        self.seqs: list[int] = []
        self.first_seq: int | None = None
        self.position: tuple[int, str] | None = None
        # (what, wall-clock time, detail): "close" code, "try" port, "open", "ready" recovered
        self.history: list[tuple[str, float, object]] = []
        self.hint: float | None = None
        self.stop = False
        self.refused: dict[str, int] = {}
        self.ready_at = 0.0

    async def run(self) -> None:
        import websockets

        attempt = 0
        while not self.stop:
            port = self.ports[self.index % len(self.ports)]
            query = f"?since={self.position[0]}&epoch={self.position[1]}" if self.position else ""
            url = f"ws://127.0.0.1:{port}{self.path}{query}"
            self.history.append(("try", time.time(), port))
            try:
                ws = await websockets.connect(url, origin=f"http://127.0.0.1:{port}", open_timeout=60, max_queue=None,
                                              ping_interval=None, subprotocols=["symphainy.v1", f"bearer.{self.token}"])
            except OSError:  # not listening (stopped or stopping): the other one, as nginx would
                self.index += 1
                await asyncio.sleep(random.random() * 0.02)
                continue
            except Exception as error:  # noqa: BLE001 - an HTTP refusal or a timeout: counted, retried
                name = type(error).__name__
                self.refused[name] = self.refused.get(name, 0) + 1
                self.history.append(("close", time.time(), name))
            else:
                self.history.append(("open", time.time(), port))
                served = self.ready_at
                code = await self._serve(ws, port)
                if code >= 4000:
                    self.refused[str(code)] = self.refused.get(str(code), 0) + 1
                if self.ready_at != served:  # it was back: the backoff starts again
                    attempt = 0
            if self.stop:
                return
            last_code = self.history[-1][2]
            base = min(30.0, 0.5 * 2**attempt)
            if self.hint is not None:
                delay, self.hint = self.hint, None
            elif last_code == 4429:
                base = max(base, 5.0)
                delay = base / 2 + random.random() * base / 2
            else:
                delay = random.random() * base
            attempt += 1
            await asyncio.sleep(delay)

    async def _serve(self, ws, port: int) -> int:
        import websockets

        try:
            ready = json.loads(await ws.recv())
            if ready.get("type") != "session.ready":
                raise websockets.ConnectionClosed(None, None)
            self.port, self.ready_at = port, time.time()
            self.history.append(("ready", self.ready_at, ready.get("recovered")))
            if self.position is None:
                self.position = (ready["seq"], ready["epoch"])
                self.first_seq = ready["seq"]
            while True:
                frame = json.loads(await ws.recv())
                if "seq" in frame:
                    self.seqs.append(frame["seq"])
                    self.position = (frame["seq"], frame["epoch"])
                elif frame.get("type") == "server.restart":
                    self.hint = max(0.0, float(frame.get("reconnect_after_ms", 0))) / 1000
        except websockets.ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd is not None else 1006
            self.history.append(("close", time.time(), code))
            return code
        finally:
            self.port = None


def phase_report(clients: list[Client], began: float, affected: list[int]) -> list[dict]:
    """For each client of the stopped process: when it was closed, tried again, opened and was
    back (session.ready), in seconds after the signal; its close code; how many tries."""
    out = []
    for index in affected:
        client = clients[index]
        row: dict = {"tries": 0}
        for kind, at, detail in client.history:
            if at < began:
                continue
            if kind == "close" and "closed" not in row:
                row["closed"], row["code"] = at - began, detail
            elif kind == "try" and "closed" in row:
                row["tries"] += 1
                row.setdefault("retried", at - began)
            elif kind == "open" and "closed" in row and "ready" not in row:
                row["opened"] = at - began
            elif kind == "ready" and "closed" in row and "ready" not in row:
                row["ready"], row["recovered"] = at - began, detail
        out.append(row)
    return out


async def worker(spec: dict) -> None:
    import gc

    loop = asyncio.get_running_loop()
    lines: asyncio.Queue = asyncio.Queue()
    threading.Thread(target=lambda: [loop.call_soon_threadsafe(lines.put_nowait, line) for line in sys.stdin],
                     daemon=True).start()
    clients = [Client(spec["ports"], spec["path"], c["token"], c["session"], c["first"]) for c in spec["clients"]]
    tasks = []
    for batch in range(0, len(clients), 25):
        tasks += [asyncio.ensure_future(client.run()) for client in clients[batch:batch + 25]]
        while not all(client.position for client in clients[:batch + 25]):
            await asyncio.sleep(0.02)
    gc.freeze()  # what the client holds is not scanned by its own collector's passes
    say = lambda **data: print(json.dumps(data), flush=True)  # noqa: E731
    say(ready=True)
    phases: list[tuple[float, list[int]]] = []
    while True:
        try:
            line = await asyncio.wait_for(lines.get(), 0.25)
        except asyncio.TimeoutError:
            line = None
        if line:
            command = json.loads(line)
            if command["cmd"] == "phase":
                affected = [i for i, client in enumerate(clients) if client.port == command["port"]]
                phases.append((command["t"], affected))
            elif command["cmd"] == "last":
                break
        if phases:
            began, affected = phases[-1]
            back = sum(1 for i in affected if clients[i].ready_at > began)
            say(back=back, affected=len(affected), open=sum(1 for client in clients if client.port))
    last = command["last"]
    settle = time.monotonic() + 30
    while time.monotonic() < settle and not all(c.position and c.position[0] >= last[c.session] for c in clients):
        await asyncio.sleep(0.05)
    for client in clients:
        client.stop = True
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    lost = duplicated = behind = 0
    refused: dict[str, int] = {}
    for client in clients:
        expected = set(range(client.first_seq + 1, last[client.session] + 1))
        lost += len(expected - set(client.seqs))
        duplicated += len(client.seqs) - len(set(client.seqs))
        behind += not client.seqs or max(client.seqs) < last[client.session]
        for key, count in client.refused.items():
            refused[key] = refused.get(key, 0) + count
    say(result={"phases": [phase_report(clients, began, affected) for began, affected in phases],
                "lost": lost, "duplicated": duplicated, "not_caught_up": behind, "refused": refused})


# --- The run -----------------------------------------------------------------------------------
class Workers:
    def __init__(self, spec_clients: list[dict], ports: list[int], path: str) -> None:
        count = max(1, -(-len(spec_clients) // SOCKETS_PER_WORKER))
        self.procs = []
        for n in range(count):
            proc = subprocess.Popen([PYTHON, __file__, "--worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    text=True, bufsize=1, cwd=ROOT)
            proc.stdin.write(json.dumps({"ports": ports, "path": path, "clients": spec_clients[n::count]}) + "\n")
            proc.stdin.flush()
            self.procs.append(proc)
        self.latest = [{} for _ in self.procs]
        self.results: list[dict | None] = [None for _ in self.procs]
        self.ready = [False for _ in self.procs]
        for n, proc in enumerate(self.procs):
            threading.Thread(target=self._read, args=(n, proc), daemon=True).start()

    def _read(self, n: int, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            data = json.loads(line)
            if data.get("ready"):
                self.ready[n] = True
            elif "result" in data:
                self.results[n] = data["result"]
            else:
                self.latest[n] = data

    def send(self, **command) -> None:
        for proc in self.procs:
            proc.stdin.write(json.dumps(command) + "\n")
            proc.stdin.flush()

    def wait(self, check, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return True
            time.sleep(0.05)
        return False

    def all_back(self) -> bool:
        return all(latest.get("affected") is not None and latest["back"] >= latest["affected"] for latest in self.latest)


def start_on(port: int, env: dict[str, str], app: str | None):
    """A daphne process on `port` (the one a stopped process held: retried until it binds)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return start("daphne", env, app=app, port=port)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def answers_ready(server) -> bool:
    try:
        with urllib.request.urlopen(f"{server.http}/ready", timeout=2) as response:
            return response.status == 200
    except Exception:  # noqa: BLE001 - 503 or not listening yet
        return False


def profile(how: str, n: int, *, draining, taking) -> None:
    """With BENCH_PROFILE_DIR, py-spy samples both processes from the signal on (50 Hz, the
    stopped one until it exits, the one taking its clients for BENCH_PROFILE_S): raw stacks
    in that directory, `<how>-<stop>-{drain,take}.txt`."""
    folder = os.environ.get("BENCH_PROFILE_DIR")
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    spy = str(Path(PYTHON).with_name("py-spy"))
    for role, server, seconds in (("drain", draining, "60"), ("take", taking, os.environ.get("BENCH_PROFILE_S", "40"))):
        subprocess.Popen([spy, "record", "--nonblocking", "-r", "50", "-d", seconds, "-t", "-f", "raw", "-p",
                          str(server.process.pid), "-o", str(Path(folder) / f"{how}-{n + 1}-{role}.txt")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def last_positions(env: dict[str, str], sessions: list[str]) -> dict[str, int]:
    script = ("import json, sys, uuid, django; django.setup(); from core.events import log_position; "
              "print(json.dumps({s: log_position(uuid.UUID(s)) for s in json.load(sys.stdin)}))")
    result = subprocess.run([PYTHON, "-c", script], input=json.dumps(sessions), capture_output=True, text=True, check=True,
                            cwd=ROOT, env={**os.environ, **SERVER_ENV, **env, "PYTHONPATH": pythonpath()})
    return json.loads(result.stdout.strip().splitlines()[-1])


def one_run(env: dict[str, str], users: list[dict], sockets: int, how: str) -> dict:
    users = users[: sockets // PER_USER]
    floor = how == "floor"  # bench/bare.py's /restart: no check, no database, nothing forwarded
    app, path = (FLOOR_APP, "/restart") if floor else (None, "/api/runtime/agent")
    servers = [start("daphne", env, app=app), start("daphne", env, app=app)]
    ports = [server.port for server in servers]
    spec = [{"token": user["access"], "session": user["session_id"], "first": n % 2}
            for user in users for n in range(PER_USER)]
    publisher = Publisher(env)  # in a floor run too: the machine's other work is the same
    writing = threading.Event()
    writing.set()

    def writer() -> None:
        turn = 0
        while writing.is_set():
            began = time.monotonic()
            for _ in range(EVENTS_PER_S // 10):
                publisher.publish(users[turn % len(users)]["session_id"])
                turn += 1
            time.sleep(max(0.0, 0.1 - (time.monotonic() - began)))

    workers = Workers(spec, ports, path)
    opened = time.monotonic()
    try:
        if not workers.wait(lambda: all(workers.ready), 900):
            raise RuntimeError("the clients did not all connect within 900 s")
        out: dict = {"how": how, "sockets": len(spec), "open_s": time.monotonic() - opened,
                     "rss_before_kib": [server.rss_kib() for server in servers], "phases": []}
        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        time.sleep(2.0)  # events flowing before the first stop
        for n in range(2):
            old = servers[n]
            began = time.time()
            old.process.send_signal(signal.SIGKILL if how == "killed" else signal.SIGTERM)
            profile(how, n, draining=old, taking=servers[1 - n])
            workers.send(cmd="phase", t=began, port=old.port)
            exit_status = old.process.wait(180)  # a drain of 10,000 sockets on a busy machine overran 60 s
            exited = time.time() - began
            servers[n] = start_on(old.port, env, app)
            workers.wait(lambda: answers_ready(servers[n]), 60)
            ready = time.time() - began
            back = workers.wait(workers.all_back, 180)
            out["phases"].append({"exit_status": exit_status, "exited_s": exited, "restarted_ready_s": ready,
                                  "all_back": back, "survivor_rss_kib": servers[1 - n].rss_kib()})
        out["restarted_rss_kib"] = servers[0].rss_kib()  # the first, restarted, holds every socket now
        writing.clear()
        thread.join(30)
        sessions = [user["session_id"] for user in users]
        workers.send(cmd="last", last={s: 0 for s in sessions} if floor else last_positions(env, sessions))
        workers.wait(lambda: all(r is not None for r in workers.results), 120)
    finally:
        for proc in workers.procs:
            proc.stdin.close() if not proc.stdin.closed else None
        for proc in workers.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        publisher.close()
        for server in servers:
            server.stop()
    results = [r for r in workers.results if r is not None]
    out.update(lost=sum(r["lost"] for r in results), duplicated=sum(r["duplicated"] for r in results),
               not_caught_up=sum(r["not_caught_up"] for r in results), refused={})
    if floor:  # nothing was forwarded, so nothing could be lost: not measured, not zero
        out.update(lost=None, duplicated=None, not_caught_up=None)
    for r in results:
        for key, count in r["refused"].items():
            out["refused"][key] = out["refused"].get(key, 0) + count
    for n, phase in enumerate(out["phases"]):
        rows = [row for r in results for row in r["phases"][n]]
        phase.update(clients=len(rows), closed_with={})
        for row in rows:
            phase["closed_with"][str(row.get("code"))] = phase["closed_with"].get(str(row.get("code")), 0) + 1
        for key in ("closed", "retried", "opened", "ready"):
            values = [row[key] for row in rows if key in row]
            if values:
                phase[key] = {"n": len(values), "p50": statistics.median(values), "p99": pct(values, 0.99),
                              "max": max(values)}
        # what each client spent between its close and its session.ready
        gaps = [row["ready"] - row["closed"] for row in rows if "ready" in row]
        if gaps:
            phase["close_to_ready"] = {"p50": statistics.median(gaps), "p99": pct(gaps, 0.99), "max": max(gaps)}
        phase["recovered_false"] = sum(1 for row in rows if row.get("recovered") is False)
        phase["tries_max"] = max((row["tries"] for row in rows), default=0)
    return out


def ratios(runs: list[dict]) -> dict[str, list[float | None]]:
    """p99 signal → resumed, stop by stop: the product's drain over the floor's (what the
    product adds to what daphne, autobahn and these clients need here), killed over drained."""
    p99 = {run["how"]: [phase.get("ready", {}).get("p99") for phase in run["phases"]] for run in runs}
    out = {}
    for name, top, bottom in (("drained_over_floor", "drained", "floor"), ("killed_over_drained", "killed", "drained")):
        if top in p99 and bottom in p99:
            out[name] = [a / b if a and b else None for a, b in zip(p99[top], p99[bottom])]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="sqlite", choices=("sqlite", "pg_redis"))
    parser.add_argument("--sockets", default="1000", help="comma-separated socket counts (multiples of 40)")
    parser.add_argument("--how", default="floor,drained,killed", help="comma-separated: floor, drained, killed")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker(json.loads(sys.stdin.readline())))
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the servers and workers inherit it
    counts = [int(n) for n in args.sockets.split(",")]
    env = configure(args.backend)
    env.update(WS_MAX_SOCKETS_PER_USER=str(PER_USER))
    if os.environ.get("BENCH_LOG_DIR"):
        env["LOG_LEVEL"] = "INFO"  # the drains' own lines
    users = make_users(env, max(counts) // PER_USER)
    out = {"backend": args.backend, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "cpus": os.cpu_count(), "nofile": hard, "host": socket.gethostname(), "runs": [], "ratios": {}}
    path = Path(__file__).resolve().parent / "results" / f"restart-{args.backend}.json"
    for count in counts:
        for how in args.how.split(","):
            load = os.getloadavg()[0]
            result = one_run(env, users, count, how)
            result["load_before"] = load
            out["runs"].append(result)
            out["ratios"][str(count)] = ratios([run for run in out["runs"] if run["sockets"] == count])
            print(json.dumps(result), flush=True)
            path.write_text(json.dumps(out, indent=2) + "\n")  # after each run: a later one may fail
    print("\n| sockets | how | stop | signal → resumed p50 / p99 / max s | signal → exited s |\n| --- | --- | --- | --- | --- |")
    for run in out["runs"]:
        for n, phase in enumerate(run["phases"]):
            ready = phase.get("ready", {})
            print(f"| {run['sockets']} | {run['how']} | {n + 1} | {ready.get('p50', float('nan')):.2f} / "
                  f"{ready.get('p99', float('nan')):.2f} / {ready.get('max', float('nan')):.2f} | {phase['exited_s']:.2f} |")
    for count, row in out["ratios"].items():
        print(f"{count} sockets, p99 ratios by stop: " + "; ".join(
            f"{name} {' / '.join('-' if r is None else f'{r:.2f}' for r in values)}" for name, values in row.items()))


if __name__ == "__main__":
    main()
