"""The socket's origin check compares RFC 6454 origins (scheme, host and port): a host of
ALLOWED_HOSTS is the service's own origin only with the request's own scheme and port, and
CORS_ALLOWED_ORIGINS are exact origins. Refused before the handshake (HTTP 403 over
daphne), through the ASGI application and through a real server."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.testing import WebsocketCommunicator
from websockets.exceptions import InvalidStatus

from realtime.app import origin_parse, socket_origin_allowed
from tests.live import running
from tests.sockets import PATH, bearer, connect, login_new_user, page_origin


def scope(origin: str | None, *, host: str | None = "localhost:8000", scheme: str | None = None,
          extra: list[tuple[bytes, bytes]] = ()) -> dict:
    headers = [*([(b"host", host.encode())] if host is not None else []),
               *([(b"origin", origin.encode())] if origin is not None else []), *extra]
    return {"type": "websocket", "path": PATH, "headers": headers, **({"scheme": scheme} if scheme else {})}


# A server at http://localhost:8000 (the Host header), ALLOWED_HOSTS as by default.
@pytest.mark.parametrize("origin, allowed", [
    ("http://localhost:8000", True),                   # its own origin
    ("http://127.0.0.1:8000", True),                   # another name of ALLOWED_HOSTS, same scheme and port
    ("HTTP://LOCALHOST:8000", True),                   # scheme and host are case-insensitive
    ("https://localhost:8000", False),                 # the wrong scheme
    ("https://localhost", False),                      # ... and the default https port
    ("http://localhost:1", False),                     # the wrong port: another app on the same host
    ("http://localhost", False),                       # port 80 is not 8000
    ("http://evil.example:8000", False),               # a host not in ALLOWED_HOSTS
    ("null", False), ("", False),                      # an opaque origin (sandboxed frame, file://)
    ("http://localhost:8000/page", False),             # not a serialised origin
    ("http://user@localhost:8000", False),
    ("http://localhost:99999", False),
    ("ws://localhost:8000", False),                    # a page's origin is never ws://
])
def test_an_origin_is_the_services_own_only_with_its_scheme_and_port(origin, allowed):
    assert socket_origin_allowed(scope(origin)) is allowed


@pytest.mark.parametrize("host, origin, scheme, allowed", [
    ("localhost", "http://localhost:80", None, True),     # default ports, written or not
    ("localhost:80", "http://localhost", None, True),
    ("localhost:443", "https://localhost", "wss", True),
    ("localhost", "https://localhost:443", "wss", True),
    ("localhost", "http://localhost", "wss", False),      # a TLS socket from a plain-HTTP page
    (None, "http://localhost", None, True),               # no Host (no browser omits it): the scheme's default port
    (None, "http://localhost:8000", None, False),
    ("[::1]:8000", "http://[::1]:8000", None, True),       # IPv6, bracketed as ALLOWED_HOSTS writes it
    ("localhost:x", "http://localhost", None, False),     # a Host that does not parse
])
def test_the_requests_own_port_and_scheme_with_defaults_filled_in(host, origin, scheme, allowed):
    assert socket_origin_allowed(scope(origin, host=host, scheme=scheme)) is allowed


def test_a_missing_or_repeated_origin_is_refused():
    assert not socket_origin_allowed(scope(None))
    twice = scope("http://localhost:8000", extra=[(b"origin", b"http://localhost:8000")])
    assert not socket_origin_allowed(twice)


def test_cors_allowed_origins_are_exact_origins(settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com", "http://localhost:5173"]
    for origin in ("https://app.example.com", "https://app.example.com:443", "HTTPS://App.Example.com",
                   "http://localhost:5173"):
        assert socket_origin_allowed(scope(origin)), origin
    for origin in ("http://app.example.com", "https://app.example.com:8443", "https://x.app.example.com",
                   "https://example.com", "http://localhost:5174"):
        assert not socket_origin_allowed(scope(origin)), origin
    assert origin_parse("https://app.example.com:443") == origin_parse("https://app.example.com")


def test_subdomain_entries_of_allowed_hosts_still_need_the_own_scheme_and_port(settings):
    settings.ALLOWED_HOSTS = [".example.com"]
    assert socket_origin_allowed(scope("https://app.example.com", host="api.example.com", scheme="wss"))
    assert not socket_origin_allowed(scope("http://app.example.com", host="api.example.com", scheme="wss"))
    assert not socket_origin_allowed(scope("https://app.example.org", host="api.example.com", scheme="wss"))


def test_a_wildcard_allowed_host_allows_no_origin(settings):
    settings.ALLOWED_HOSTS = ["*"]
    assert not socket_origin_allowed(scope("http://localhost:8000"))


def test_behind_a_tls_proxy_the_scheme_is_the_forwarded_one_only_when_trusted(settings):
    forwarded = [(b"x-forwarded-proto", b"https")]
    # Not trusted (SECURE_PROXY_SSL_HEADER unset): the socket's own scheme, ws -> http.
    assert not socket_origin_allowed(scope("https://localhost", host="localhost", extra=forwarded))
    assert socket_origin_allowed(scope("http://localhost", host="localhost", extra=forwarded))
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert socket_origin_allowed(scope("https://localhost", host="localhost", extra=forwarded))
    assert not socket_origin_allowed(scope("http://localhost", host="localhost", extra=forwarded))
    plain = [(b"x-forwarded-proto", b"http")]
    assert socket_origin_allowed(scope("http://localhost", host="localhost", extra=plain))
    assert not socket_origin_allowed(scope("https://localhost", host="localhost", extra=plain))


# --- Through the ASGI application ---------------------------------------------------------
async def _handshake(token: str, origin: str, host: str = "localhost:8000") -> bool:
    from symphainy.asgi import application

    communicator = WebsocketCommunicator(application, PATH, headers=[(b"host", host.encode()), (b"origin", origin.encode())],
                                         subprotocols=bearer(token))
    connected, _ = await communicator.connect(timeout=5)
    if connected:
        assert json.loads(await communicator.receive_from(5))["type"] == "session.ready"
    await communicator.disconnect()
    return connected


@pytest.mark.django_db(transaction=True)
async def test_the_asgi_application_refuses_another_scheme_or_port_before_the_handshake(settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]
    _, body = await login_new_user()
    token = body["access_token"]
    assert await _handshake(token, "http://localhost:8000")
    assert await _handshake(token, "http://localhost", host="localhost:80")
    assert await _handshake(token, "https://app.example.com:443")
    assert not await _handshake(token, "https://localhost:8000")
    assert not await _handshake(token, "http://localhost:1")
    assert not await _handshake(token, "http://app.example.com")


# --- Through a real daphne ----------------------------------------------------------------
@pytest.mark.server
@pytest.mark.django_db(transaction=True)
def test_a_real_server_answers_403_to_another_scheme_or_port(tmp_path):
    with running(tmp_path, CORS_ALLOWED_ORIGINS="http://localhost:5173") as server:
        body = server.login()
        own = page_origin(server)
        assert own == f"http://127.0.0.1:{server.port}"

        async def status(origin: str) -> int:
            try:
                ws = await connect(server, body["access_token"], origin=origin)
            except InvalidStatus as refused:
                return refused.response.status_code
            async with ws:
                assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "session.ready"
            return 101

        async def scenario() -> dict[str, int]:
            origins = [own, f"http://localhost:{server.port}", "http://localhost:5173",  # allowed
                       f"https://127.0.0.1:{server.port}", "http://127.0.0.1:1", "http://127.0.0.1",
                       "http://localhost:5174"]
            return {origin: await status(origin) for origin in origins}

        assert asyncio.run(scenario()) == {
            own: 101, f"http://localhost:{server.port}": 101, "http://localhost:5173": 101,
            f"https://127.0.0.1:{server.port}": 403, "http://127.0.0.1:1": 403, "http://127.0.0.1": 403,
            "http://localhost:5174": 403,
        }
        assert "socket origin 'http://127.0.0.1:1' refused" in server.log()
