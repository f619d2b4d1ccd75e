"""docs/deployment.md's nginx steps on Debian's nginx as the package leaves it: its default
site enabled (`listen 80 default_server`, "Welcome to nginx"). Followed literally, the
service answers /live by address; a site that is not its port's default server loses to
Debian's. nginx runs as an ordinary process on a copy of that layout."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

from tests.live import ROOT, free_port, process_stop, running, wait_answering

sys.path.insert(0, str(ROOT / "deploy"))
import render  # noqa: E402

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
pytestmark = [
    pytest.mark.server,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(NGINX is None and not settings.REQUIRE_SERVICES, reason="nginx is not installed (.ci/run installs it)"),
]

# Debian's /etc/nginx/sites-available/default without its comments (nginx 1.22, bookworm),
# used when this machine's copy is missing.
DEBIAN_DEFAULT_SITE = """server {
\tlisten 80 default_server;
\tlisten [::]:80 default_server;
\troot /var/www/html;
\tindex index.html index.htm index.nginx-debian.html;
\tserver_name _;
\tlocation / {
\t\ttry_files $uri $uri/ =404;
\t}
}
"""
DOCS = (ROOT / "docs" / "deployment.md").read_text()


def debian_layout(prefix: Path, port: int) -> Path:
    """/etc/nginx as Debian leaves it, under `prefix`: sites-enabled/default, on `port`
    (loopback, IPv4: this run cannot bind :80) instead of 80."""
    installed = Path("/etc/nginx/sites-available/default")
    default = installed.read_text() if installed.exists() else DEBIAN_DEFAULT_SITE
    default = re.sub(r"^\s*listen \[::\]:80 default_server;\n", "", default, flags=re.M)
    default = default.replace("listen 80 default_server;", f"listen 127.0.0.1:{port} default_server;")
    www = prefix / "www"
    www.mkdir(parents=True)
    (www / "index.nginx-debian.html").write_text("<h1>Welcome to nginx!</h1>")
    default = default.replace("root /var/www/html;", f"root {www};")
    sites = prefix / "sites-enabled"
    sites.mkdir()
    (sites / "default").write_text(default)
    (prefix / "nginx.conf").write_text(render.render_standalone(prefix, f"include {sites}/*;"))
    return sites


def site_steps(sites: Path, port: int, upstream: str) -> None:
    """The doc's two nginx steps: Debian's default site out, the rendered site in."""
    assert "rm -f /etc/nginx/sites-enabled/default" in DOCS
    assert re.search(r"deploy/render\.py --listen 80 .*\\\n.*> /etc/nginx/sites-enabled/symphainy", DOCS)
    (sites / "default").unlink()
    assert render.main(["--listen", f"127.0.0.1:{port}", "--http", upstream, "--socket", upstream,
                        "--access-log", str(sites.parent / "access.log")], ) == 0


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_following_the_doc_on_debians_nginx_the_service_answers_live_by_address(tmp_path, capsys):
    port = free_port()
    prefix = tmp_path / "nginx"
    sites = debian_layout(prefix, port)
    with running(tmp_path) as server:
        upstream = f"127.0.0.1:{server.port}"
        # Left beside Debian's default site, the rendered site would fight it for the port: nginx
        # refuses to start (loud), instead of answering "Welcome to nginx" for the service.
        (sites / "symphainy").write_text(render.render_site(
            listen=f"127.0.0.1:{port}", http_upstream=upstream, socket_upstreams=[upstream],
            access_log=str(prefix / "access.log")))
        test = subprocess.run([NGINX, "-t", "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log")],
                              capture_output=True, text=True, timeout=60)
        assert test.returncode != 0 and "duplicate default server" in test.stderr, test.stderr

        site_steps(sites, port, upstream)
        (sites / "symphainy").write_text(capsys.readouterr().out)
        nginx = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log"),
                                  "-g", "daemon off;"], start_new_session=True)
        try:
            wait_answering(f"http://127.0.0.1:{port}/live", nginx, prefix / "error.log", timeout=30)
            status, body = get(f"http://127.0.0.1:{port}/live")
            assert (status, body) == (200, b'{"status":"ok"}')
            assert b"Welcome to nginx" not in get(f"http://127.0.0.1:{port}/")[1]
        finally:
            process_stop(nginx)


def test_a_site_that_is_not_the_default_server_loses_to_debians_default_site(tmp_path):
    """What the doc's steps prevent: the site as rendered before (no default_server) beside
    Debian's default site answers /live with Debian's 404."""
    port = free_port()
    prefix = tmp_path / "nginx"
    sites = debian_layout(prefix, port)
    (sites / "symphainy").write_text(render.render_site(
        listen=f"127.0.0.1:{port}", http_upstream="127.0.0.1:9", socket_upstreams=["127.0.0.1:9"],
        access_log=str(prefix / "access.log"), default_server=False))
    nginx = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log"),
                              "-g", "daemon off;"], start_new_session=True)
    try:
        wait_answering(f"http://127.0.0.1:{port}/", nginx, prefix / "error.log", timeout=30)
        assert get(f"http://127.0.0.1:{port}/live")[0] == 404
        assert b"Welcome to nginx" in get(f"http://127.0.0.1:{port}/")[1]
    finally:
        process_stop(nginx)
