"""Render the nginx site of the production layout from deploy/nginx/symphainy.conf.in.

    python deploy/render.py --listen 80 --http 127.0.0.1:8000 \
        --socket 127.0.0.1:8101 --socket 127.0.0.1:8102 > /etc/nginx/sites-available/symphainy

With `--standalone PREFIX` it writes a whole nginx.conf that keeps every file under
PREFIX (pid, logs, temp files), for a run as an ordinary process:
`nginx -p PREFIX -c PREFIX/nginx.conf -e PREFIX/error.log` (the tests do this).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent / "nginx" / "symphainy.conf.in"
_FIELD = re.compile(r"@[A-Z_]+@")


def render_site(*, listen: str, http_upstream: str, socket_upstreams: list[str], server_name: str = "_") -> str:
    if not socket_upstreams:
        raise ValueError("at least one --socket upstream (a daphne process) is needed")
    text = TEMPLATE.read_text()
    fields = {
        "@LISTEN@": listen,
        "@HTTP_UPSTREAM@": http_upstream,
        "@SOCKET_SERVERS@": "\n".join(f"    server {address};" for address in socket_upstreams),
        "@SERVER_NAME@": server_name,
    }
    for field, value in fields.items():
        text = text.replace(field, value)
    left = _FIELD.findall(text)
    if left:
        raise ValueError(f"template fields left unrendered: {sorted(set(left))}")
    return text


def render_standalone(prefix: Path, site: str) -> str:
    # nginx started as root switches its workers to `nobody`, which could not read a
    # private prefix; such a test run keeps them as root instead.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (
        f"{user}worker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log info;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        f"    access_log {prefix}/access.log;\n"
        f"    client_body_temp_path {prefix}/client_body;\n    proxy_temp_path {prefix}/proxy;\n"
        f"    fastcgi_temp_path {prefix}/fastcgi;\n    uwsgi_temp_path {prefix}/uwsgi;\n    scgi_temp_path {prefix}/scgi;\n"
        f"{site}\n}}\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="80", help="nginx's listen argument, e.g. 80 or 127.0.0.1:8080")
    parser.add_argument("--http", default="127.0.0.1:8000", help="gunicorn's address")
    parser.add_argument("--socket", action="append", default=[], help="a daphne process's address (repeat)")
    parser.add_argument("--server-name", default="_")
    parser.add_argument("--standalone", type=Path, help="write PREFIX/nginx.conf for a run outside /etc/nginx")
    args = parser.parse_args(argv)
    try:
        site = render_site(listen=args.listen, http_upstream=args.http, socket_upstreams=args.socket, server_name=args.server_name)
    except ValueError as error:
        print(f"render.py: {error}", file=sys.stderr)
        return 2
    if args.standalone is None:
        sys.stdout.write(site)
        return 0
    args.standalone.mkdir(parents=True, exist_ok=True)
    (args.standalone / "nginx.conf").write_text(render_standalone(args.standalone.resolve(), site))
    print(args.standalone / "nginx.conf")
    return 0


if __name__ == "__main__":
    sys.exit(main())
