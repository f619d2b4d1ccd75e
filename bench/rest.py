"""REST throughput: the embedded default (one daphne process) and the production layout
(nginx → gunicorn sync workers) against their baseline, one gunicorn sync worker and
gunicorn with one worker per core, in one run, rounds interleaved.

    apt-get install wrk nginx            # Debian's packages: the load generator and the proxy
    .venv/bin/pip install -r bench/requirements.txt
    .venv/bin/python bench/rest.py [--rounds 3] [--seconds 8] [--backend sqlite|postgres]

Each figure is wrk's requests per second for an authenticated read (`GET /api/auth/me`,
`GET /api/session/{id}`) at 10 connections; the report gives the median of the rounds with
their range, and every ratio against the baseline measured beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PYTHON = sys.executable
CORES = os.cpu_count() or 1
ENV = {
    "SYMPHAINY_INSECURE_DEV_KEY": "1", "LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT),
    "DJANGO_SETTINGS_MODULE": "symphainy.settings", "THROTTLE_LOGIN_ADDRESS": "1000000/min",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}: {process.args}")
        with contextlib.suppress(OSError):
            urllib.request.urlopen(url, timeout=1)
            return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


class Servers:
    def __init__(self, env: dict[str, str]) -> None:
        self.env, self.processes, self.tmp = env, [], Path(tempfile.mkdtemp(prefix="symphainy-rest-"))

    def start(self, argv: list[str], url_path: str = "/live", **extra: str) -> subprocess.Popen:
        process = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **self.env, **extra}, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        self.processes.append(process)
        return process

    def gunicorn(self, workers: int) -> str:
        port = free_port()
        process = self.start([PYTHON, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py"],
                             GUNICORN_BIND=f"127.0.0.1:{port}", GUNICORN_WORKERS=str(workers))
        wait_http(f"http://127.0.0.1:{port}/live", process)
        return f"http://127.0.0.1:{port}"

    def daphne(self) -> str:
        port = free_port()
        process = self.start([PYTHON, "-m", "symphainy.serve", "-b", "127.0.0.1", "-p", str(port), "-v", "0"])
        wait_http(f"http://127.0.0.1:{port}/live", process)
        return f"http://127.0.0.1:{port}"

    def layout(self, http: str, socket_base: str) -> str:
        """nginx from Debian's package, the repository's site rendered standalone."""
        sys.path.insert(0, str(ROOT / "deploy"))
        import render

        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        port, prefix = free_port(), self.tmp / "nginx"
        assert render.main(["--listen", f"127.0.0.1:{port}", "--http", http.removeprefix("http://"),
                            "--socket", socket_base.removeprefix("http://"), "--standalone", str(prefix)]) == 0
        process = self.start([nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log"),
                              "-g", "daemon off;"])
        wait_http(f"http://127.0.0.1:{port}/live", process)
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
        shutil.rmtree(self.tmp, ignore_errors=True)


def configure(backend: str) -> dict[str, str]:
    """bench/run.py's fresh schema for the backend, plus what the layout serves: the
    collected static files and the demo user (whose login gives the token)."""
    from bench.run import configure as fresh_schema

    env = {**ENV, **fresh_schema("sqlite" if backend == "sqlite" else "pg_redis")}
    env.pop("REDIS_URL", None)  # REST reads need no Redis; keep the comparison to the database
    full = {**os.environ, **env}
    full.pop("REDIS_URL", None)
    subprocess.run([PYTHON, "manage.py", "collectstatic", "--noinput", "-v", "0"], cwd=ROOT, env=full, check=True)
    subprocess.run([PYTHON, "manage.py", "seed_demo"], cwd=ROOT, env={**full, "SEED_DEMO": "1"}, check=True,
                   capture_output=True)
    return env


def login(base: str) -> dict:
    from core.conf import DEFAULTS

    body = json.dumps({"email": DEFAULTS["DEMO_EMAIL"], "password": DEFAULTS["DEMO_PASSWORD"]}).encode()
    request = urllib.request.Request(base + "/api/auth/login", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def wrk(url: str, token: str, seconds: int) -> float:
    out = subprocess.run(["wrk", "-t", "2", "-c", "10", "-d", f"{seconds}s", "-H", f"Authorization: Bearer {token}", url],
                         capture_output=True, text=True, check=True).stdout
    if re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        raise RuntimeError(f"errors from {url}:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()
    env = configure(args.backend)
    servers = Servers(env)
    try:
        targets = {"gunicorn, 1 worker": servers.gunicorn(1), "daphne, 1 process (make run)": servers.daphne(),
                   f"gunicorn, {CORES} workers": servers.gunicorn(CORES)}
        targets["layout: nginx → gunicorn"] = servers.layout(targets[f"gunicorn, {CORES} workers"],
                                                             targets["daphne, 1 process (make run)"])
        body = login(targets["gunicorn, 1 worker"])
        token, session_id = body["access_token"], body["session_id"]
        results: dict[str, dict[str, list[float]]] = {}
        for _ in range(args.rounds):
            for path in ("/api/auth/me", f"/api/session/{session_id}"):
                view = path if path == "/api/auth/me" else "/api/session/{id}"
                for name, base in targets.items():  # interleaved: each round visits every server
                    results.setdefault(view, {}).setdefault(name, []).append(wrk(base + path, token, args.seconds))
    finally:
        servers.stop()
    lines = [f"REST, {args.backend}, {CORES} cores, wrk -c10, {args.rounds} rounds of {args.seconds} s, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", ""]
    for view, by_server in results.items():
        median = {name: statistics.median(values) for name, values in by_server.items()}
        one, many = median["gunicorn, 1 worker"], median[f"gunicorn, {CORES} workers"]
        lines.append(f"{view}")
        for name, values in by_server.items():
            base = many if name.startswith("layout") or name == f"gunicorn, {CORES} workers" else one
            lines.append(f"  {name:32s} {median[name]:7.0f} req/s ({min(values):.0f}–{max(values):.0f})"
                         f"  ÷ baseline {median[name] / base:.2f}")
        lines.append(f"  layout ÷ one gunicorn worker      {median['layout: nginx → gunicorn'] / one:.2f}")
    report = "\n".join(lines)
    print(report)
    out = ROOT / "bench" / "results" / f"rest-{args.backend}.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(report + "\n")


if __name__ == "__main__":
    main()
