"""deploy/render.py: the nginx site from its template."""

from __future__ import annotations

import sys

import pytest

from tests.live import ROOT

sys.path.insert(0, str(ROOT / "deploy"))
import render  # noqa: E402


def test_the_site_routes_the_socket_path_to_daphne_and_overwrites_client_addresses():
    site = render.render_site(listen="80", http_upstream="127.0.0.1:8000", socket_upstreams=["127.0.0.1:8101", "127.0.0.1:8102"])
    assert "server 127.0.0.1:8101;" in site and "server 127.0.0.1:8102;" in site
    assert "location = /api/runtime/agent" in site
    assert "$proxy_add_x_forwarded_for" not in site
    assert site.count("proxy_set_header X-Forwarded-For $remote_addr;") == 2
    assert not render._FIELD.search(site)


def test_no_socket_upstream_is_a_clear_error(capsys):
    assert render.main(["--http", "127.0.0.1:8000"]) == 2
    assert "at least one --socket" in capsys.readouterr().err
    with pytest.raises(ValueError):
        render.render_site(listen="80", http_upstream="x", socket_upstreams=[])
