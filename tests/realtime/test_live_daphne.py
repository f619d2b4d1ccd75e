"""The socket protocol over a real daphne process and a real client (`websockets`): what a
browser sees, where a close before accept would be an HTTP 403 with no code."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests import factories
from tests.live import ORIGIN, running

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]
PATH = "/api/runtime/agent"


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, tmp_path_factory):
    with running(tmp_path_factory.mktemp("daphne"), WS_MAX_SOCKETS_PER_USER="2", WS_MAX_MESSAGE_BYTES="1024") as live:
        yield live


def login(server, **kwargs) -> dict:
    user = factories.make_user(**kwargs)
    status, body = server.request("POST", "/api/auth/login", {"email": user.email, "password": factories.PASSWORD})
    assert status == 200, body
    return body


async def ready_socket(url: str, **kwargs):
    ws = await websockets.connect(url, origin=kwargs.pop("origin", ORIGIN), open_timeout=10, **kwargs)
    frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert frame["type"] == "session.ready", frame
    return ws, frame


async def close_code(url: str, **kwargs) -> int:
    """Open, expect no frame at all, return the close code the client received."""
    async with websockets.connect(url, origin=kwargs.pop("origin", ORIGIN), open_timeout=10, **kwargs) as ws:
        try:
            frame = await asyncio.wait_for(ws.recv(), 10)
        except ConnectionClosed as closed:
            assert closed.rcvd is not None, "closed without a close frame"
            return closed.rcvd.code
        raise AssertionError(f"expected a close, got a frame: {frame}")


def run(coro):
    return asyncio.run(coro)


def test_subprotocol_form(server):
    body = login(server)

    async def scenario():
        ws, ready = await ready_socket(server.ws + PATH, subprotocols=["symphainy.v1", f"bearer.{body['access_token']}"])
        assert ws.subprotocol == "symphainy.v1"
        assert ready["session_id"] == body["session_id"]
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv()) == {"type": "pong"}
        await ws.close()

    run(scenario())


def test_authorization_header_form(server):
    body = login(server)

    async def scenario():
        ws, ready = await ready_socket(server.ws + PATH, additional_headers={"Authorization": f"Bearer {body['access_token']}"})
        assert ready["user_id"] == body["user_id"]
        await ws.close()

    run(scenario())


@pytest.mark.parametrize("param", ["access_token", "session_token"])
def test_legacy_query_forms_and_the_token_never_reaches_the_log(server, param):
    body = login(server)

    async def scenario():
        ws, _ = await ready_socket(f"{server.ws}{PATH}?{param}={body['access_token']}")
        await ws.close()
        # A refused one too, and an HTTP request carrying a token in its query.
        assert await close_code(f"{server.ws}{PATH}?{param}=not.a.token") == 4401

    run(scenario())
    server.request("GET", f"/health?access_token={body['access_token']}")
    time.sleep(0.3)
    log = server.log()
    assert body["access_token"] not in log
    assert "[redacted]" in log


@pytest.mark.parametrize(
    "protocols, expected",
    [
        (["symphainy.v1"], 4401),
        (["symphainy.v1", "bearer.garbage"], 4401),
        ("refresh", 4401),
    ],
    ids=["no-token", "garbage", "refresh-type"],
)
def test_4401_reaches_the_client(server, protocols, expected):
    body = login(server)
    if protocols == "refresh":
        protocols = ["symphainy.v1", f"bearer.{body['refresh_token']}"]
    assert run(close_code(server.ws + PATH, subprotocols=protocols)) == expected


@pytest.mark.parametrize("session_id", ["00000000-0000-0000-0000-000000000000", "not-a-uuid"])
def test_4404_reaches_the_client(server, session_id):
    body = login(server)
    url = f"{server.ws}{PATH}?session_id={session_id}"
    assert run(close_code(url, subprotocols=["symphainy.v1", f"bearer.{body['access_token']}"])) == 4404


def test_4409_reaches_the_client(server):
    body = login(server)
    status, _ = server.request("DELETE", f"/api/session/{body['session_id']}", token=body["access_token"])
    assert status == 204
    assert run(close_code(server.ws + PATH, subprotocols=["symphainy.v1", f"bearer.{body['access_token']}"])) == 4409


def test_4429_over_the_socket_cap(server):
    body = login(server)
    protocols = ["symphainy.v1", f"bearer.{body['access_token']}"]

    async def scenario():
        first, _ = await ready_socket(server.ws + PATH, subprotocols=protocols)
        second, _ = await ready_socket(server.ws + PATH, subprotocols=protocols)
        assert await close_code(server.ws + PATH, subprotocols=protocols) == 4429
        await first.close()
        await second.close()

    run(scenario())


def test_1009_for_a_frame_over_the_limit(server):
    body = login(server)

    async def scenario():
        ws, _ = await ready_socket(server.ws + PATH, subprotocols=["symphainy.v1", f"bearer.{body['access_token']}"])
        await ws.send(json.dumps({"type": "ping", "pad": "x" * 4096}))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd.code == 1009

    run(scenario())


@pytest.mark.parametrize("origin", ["http://evil.example", None], ids=["foreign", "missing"])
def test_cross_origin_is_an_http_403(server, origin):
    body = login(server)

    async def scenario():
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(
                server.ws + PATH, origin=origin, open_timeout=10,
                subprotocols=["symphainy.v1", f"bearer.{body['access_token']}"],
            )
        assert refused.value.response.status_code == 403

    run(scenario())


def test_logout_closes_an_open_socket_within_a_second(server):
    body = login(server)

    async def scenario():
        ws, _ = await ready_socket(server.ws + PATH, subprotocols=["symphainy.v1", f"bearer.{body['access_token']}"])
        started = time.monotonic()
        status, _ = await asyncio.to_thread(server.request, "POST", "/api/auth/logout", None, body["access_token"])
        assert status == 204
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd.code == 4409
        assert time.monotonic() - started < 1.5

    run(scenario())


def test_redis_unreachable_leaves_sockets_and_their_revocation_working(tmp_path):
    # A process whose Redis is a closed port: /ready says so (executions dispatched to
    # workers need it), but sockets open and close on logout through the event log.
    with running(tmp_path, REDIS_URL="redis://127.0.0.1:1/0") as broken:
        body = login(broken)
        assert broken.request("GET", "/api/auth/me", token=body["access_token"])[0] == 200
        status, health = broken.request("GET", "/ready")
        assert status == 503 and health["checks"]["channel_layer"] == "unavailable"

        async def scenario():
            ws, _ = await ready_socket(broken.ws + PATH, subprotocols=_bearer(body))
            status, _ = await asyncio.to_thread(broken.request, "POST", "/api/auth/logout", None, body["access_token"])
            assert status == 204
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd.code == 4409

        run(scenario())


def _bearer(body: dict) -> list[str]:
    return ["symphainy.v1", f"bearer.{body['access_token']}"]


def test_binary_and_malformed_frames_get_error_frames_and_the_socket_stays(server):
    body = login(server)

    async def scenario():
        ws, _ = await ready_socket(server.ws + PATH, subprotocols=_bearer(body))
        await ws.send(b"\x00\x01binary")
        assert json.loads(await ws.recv())["error"] == "binary_not_supported"
        await ws.send("{not json")
        assert json.loads(await ws.recv())["error"] == "invalid_json"
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv()) == {"type": "pong"}
        await ws.close()

    run(scenario())


def test_invalid_utf8_in_a_text_frame_closes_1007(server):
    """The protocol layer refuses it before the consumer: 1007, not a crash."""
    body = login(server)

    async def scenario():
        ws, _ = await ready_socket(server.ws + PATH, subprotocols=_bearer(body))
        await ws.send(b'{"type": "ping", "x": "\xff\xfe"}', text=True)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd.code == 1007

    run(scenario())


def test_a_message_flood_closes_4429(server):
    body = login(server)

    async def scenario():
        ws, _ = await ready_socket(server.ws + PATH, subprotocols=_bearer(body))
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(500):
                await ws.send(json.dumps({"type": "ping"}))
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd.code == 4429

    run(scenario())
