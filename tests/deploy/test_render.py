"""deploy/render.py: the nginx site from its template."""

from __future__ import annotations

import sys

import pytest

from tests.live import ROOT

sys.path.insert(0, str(ROOT / "deploy"))
import render  # noqa: E402


def test_the_site_routes_the_socket_path_to_daphne_and_overwrites_client_addresses():
    site = render.render_site(listen="80", http_upstream="127.0.0.1:8000", socket_upstreams=["127.0.0.1:8101", "127.0.0.1:8102"])
    assert "server 127.0.0.1:8101 max_fails=0;" in site and "server 127.0.0.1:8102 max_fails=0;" in site
    assert "location = /api/runtime/agent" in site
    assert "$proxy_add_x_forwarded_for" not in site
    assert site.count("proxy_set_header X-Forwarded-For $remote_addr;") == 2
    assert not render._FIELD.search(site)


def test_no_socket_upstream_is_a_clear_error(capsys):
    assert render.main(["--http", "127.0.0.1:8000"]) == 2
    assert "at least one --socket" in capsys.readouterr().err
    with pytest.raises(ValueError):
        render.render_site(listen="80", http_upstream="x", socket_upstreams=[])


def _site(**options) -> str:
    return render.render_site(listen="80", http_upstream="127.0.0.1:8000", socket_upstreams=["127.0.0.1:8101"], **options)


def test_the_access_log_has_no_query_string_and_the_host_keeps_its_port():
    site = _site(access_log="/var/log/x.log")
    assert "access_log /var/log/x.log symphainy;" in site
    log_format = site[site.index("log_format symphainy"):site.index(";", site.index("log_format symphainy"))]
    assert "$request " not in log_format and "$request_uri" not in log_format and "$args" not in log_format
    assert "$http_referer" not in log_format and "$symphainy_log_path" in log_format
    assert site.count("proxy_set_header Host $symphainy_host;") == 2 and "Host $host;" not in site


def test_trusted_balancers_render_realip_lines_and_garbage_is_refused():
    assert "set_real_ip_from" not in _site() and "real_ip_header" not in _site()
    site = _site(trusted_lb=["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"])
    for line in ("set_real_ip_from 10.0.0.0/8;", "set_real_ip_from 192.0.2.7/32;", "set_real_ip_from 2001:db8::/32;",
                 "real_ip_header X-Forwarded-For;", "real_ip_recursive on;", "    10.0.0.0/8 1;"):
        assert line in site
    with pytest.raises(ValueError, match="not an address"):
        _site(trusted_lb=["10.0.0.0/8; include /etc/passwd"])
    assert render.main(["--socket", "127.0.0.1:1", "--trusted-lb", "nonsense"]) == 2


def test_trusted_lb_networks_is_the_options_default(monkeypatch, capsys):
    monkeypatch.setenv("TRUSTED_LB_NETWORKS", "10.0.0.0/24, 10.0.1.5")
    assert render.main(["--socket", "127.0.0.1:8101"]) == 0
    site = capsys.readouterr().out
    assert "set_real_ip_from 10.0.0.0/24;" in site and "set_real_ip_from 10.0.1.5/32;" in site
