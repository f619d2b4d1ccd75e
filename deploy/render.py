"""Render the nginx site of the production layout from deploy/nginx/symphainy.conf.in.

    python deploy/render.py --listen 80 --http 127.0.0.1:8000 \
        --socket 127.0.0.1:8101 --socket 127.0.0.1:8102 > /etc/nginx/sites-enabled/symphainy

The site is its port's default server (`--no-default-server`: not), so Debian's own
default site must go (docs/deployment.md).

Behind a load balancer (a cloud LB, HAProxy) that connects to nginx, name its addresses
with `--trusted-lb NETWORK` (repeat; or TRUSTED_LB_NETWORKS, comma-separated): nginx then
takes the client's address from the X-Forwarded-For the balancer appends (its realip
module), and the service's throttles, lockout and metrics allowlist see each client
instead of the balancer. See docs/deployment.md.

With `--standalone PREFIX` it writes a whole nginx.conf that keeps every file under
PREFIX (pid, logs, temp files), for a run as an ordinary process:
`nginx -p PREFIX -c PREFIX/nginx.conf -e PREFIX/error.log` (the tests do this).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent / "nginx" / "symphainy.conf.in"
_FIELD = re.compile(r"@[A-Z_]+@")
ACCESS_LOG = "/var/log/nginx/symphainy.access.log"  # Debian's logrotate rotates /var/log/nginx/*.log


def _networks(values: list[str]) -> list[str]:
    networks = []
    for value in values:
        try:
            networks.append(str(ipaddress.ip_network(value.strip(), strict=False)))
        except ValueError:
            raise ValueError(f"--trusted-lb {value!r} is not an address or network") from None
    return networks


def real_ip_block(networks: list[str]) -> str:
    """nginx's realip lines for load balancers at `networks`: $remote_addr becomes the
    right-most X-Forwarded-For entry that is not one of them, so a client's own
    X-Forwarded-For (to the left of what the balancer appended) is never believed, and a
    request that does not come from a balancer keeps its peer address."""
    if not networks:
        return "    # No load balancer in front: $remote_addr is the peer (render.py --trusted-lb for one)."
    lines = ["    # Load balancers in front (render.py --trusted-lb): the client's address is the one they saw."]
    lines += [f"    set_real_ip_from {network};" for network in networks]
    lines += ["    real_ip_header X-Forwarded-For;", "    real_ip_recursive on;"]
    return "\n".join(lines)


def trusted_lb_geo(networks: list[str]) -> str:
    """$symphainy_via_lb: 1 when the peer (before realip) is one of the balancers."""
    lines = ["geo $realip_remote_addr $symphainy_via_lb {", "    default 0;"]
    lines += [f"    {network} 1;" for network in networks]
    return "\n".join([*lines, "}"])


def listen_lines(listen: str, *, default_server: bool = True) -> str:
    """nginx's listen lines: a bare port on IPv4 and IPv6, as Debian's default site has it."""
    suffix = " default_server" if default_server else ""
    addresses = [listen, f"[::]:{listen}"] if listen.isdigit() else [listen]
    return "\n    ".join(f"listen {address}{suffix};" for address in addresses)


def render_site(
    *, listen: str, http_upstream: str, socket_upstreams: list[str], server_name: str = "_",
    access_log: str = ACCESS_LOG, trusted_lb: list[str] | None = None, default_server: bool = True,
) -> str:
    if not socket_upstreams:
        raise ValueError("at least one --socket upstream (a daphne process) is needed")
    text = TEMPLATE.read_text()
    networks = _networks(trusted_lb or [])
    fields = {
        "@LISTEN@": listen_lines(listen, default_server=default_server),
        "@HTTP_UPSTREAM@": http_upstream,
        "@SOCKET_SERVERS@": "\n".join(f"    server {address} max_fails=0;" for address in socket_upstreams),
        "@SERVER_NAME@": server_name,
        "@ACCESS_LOG@": access_log,
        "@REAL_IP@": real_ip_block(networks),
        "@TRUSTED_LB_GEO@": trusted_lb_geo(networks),
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
    parser.add_argument("--no-default-server", dest="default_server", action="store_false",
                        help="not the default server of its port (another site on this nginx is)")
    parser.add_argument("--access-log", help=f"the access log's path (default {ACCESS_LOG}, PREFIX/access.log with --standalone)")
    parser.add_argument(
        "--trusted-lb", action="append", metavar="NETWORK",
        default=[n for n in os.environ.get("TRUSTED_LB_NETWORKS", "").split(",") if n.strip()],
        help="a load balancer's address or network in front of nginx (repeat; default TRUSTED_LB_NETWORKS, comma-separated)",
    )
    parser.add_argument("--standalone", type=Path, help="write PREFIX/nginx.conf for a run outside /etc/nginx")
    args = parser.parse_args(argv)
    access_log = args.access_log or (str(args.standalone.resolve() / "access.log") if args.standalone else ACCESS_LOG)
    try:
        site = render_site(
            listen=args.listen, http_upstream=args.http, socket_upstreams=args.socket, server_name=args.server_name,
            access_log=access_log, trusted_lb=args.trusted_lb, default_server=args.default_server,
        )
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
