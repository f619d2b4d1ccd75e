"""The socket protocol over a real daphne process and a real client (`websockets`): what a
browser sees, where a close before accept would be an HTTP 403 with no code."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.live import running
from tests.sockets import bearer, close_code, connect, connect_ready, refusal_code
from tests.waiting import wait_until

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, tmp_path_factory):
    with running(tmp_path_factory.mktemp("daphne"), WS_MAX_SOCKETS_PER_USER="2", WS_MAX_MESSAGE_BYTES="1024") as live:
        yield live


def run(coro):
    return asyncio.run(coro)


def test_subprotocol_form(server):
    body = server.login()

    async def scenario():
        ws, ready = await connect_ready(server, body["access_token"])
        assert ws.subprotocol == "symphainy.v1"
        assert ready["session_id"] == body["session_id"]
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv()) == {"type": "pong"}
        await ws.close()

    run(scenario())


def test_authorization_header_form(server):
    body = server.login()

    async def scenario():
        ws, ready = await connect_ready(server, additional_headers={"Authorization": f"Bearer {body['access_token']}"})
        assert ready["user_id"] == body["user_id"]
        await ws.close()

    run(scenario())


@pytest.mark.parametrize("param", ["access_token", "session_token"])
def test_legacy_query_forms_and_the_token_never_reaches_the_log(server, param):
    body = server.login()

    async def scenario():
        ws, _ = await connect_ready(server, query=f"{param}={body['access_token']}")
        await ws.close()
        # A refused one too, and an HTTP request carrying a token in its query.
        assert await refusal_code(server, query=f"{param}=not.a.token") == 4401

    run(scenario())
    logged_before = server.log().count("/health?access_token=")
    server.request("GET", f"/health?access_token={body['access_token']}")
    log = wait_until(lambda: (text := server.log()).count("/health?access_token=") > logged_before and text,
                     message="the request's line in the access log")
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
    body = server.login()
    if protocols == "refresh":
        protocols = bearer(body["refresh_token"])
    assert run(refusal_code(server, subprotocols=protocols)) == expected


@pytest.mark.parametrize("session_id", ["00000000-0000-0000-0000-000000000000", "not-a-uuid"])
def test_4404_reaches_the_client(server, session_id):
    body = server.login()
    assert run(refusal_code(server, body["access_token"], query=f"session_id={session_id}")) == 4404


def test_4409_reaches_the_client(server):
    body = server.login()
    status, _ = server.request("DELETE", f"/api/session/{body['session_id']}", token=body["access_token"])
    assert status == 204
    assert run(refusal_code(server, body["access_token"])) == 4409


def test_4429_over_the_socket_cap(server):
    body = server.login()
    token = body["access_token"]

    async def scenario():
        first, _ = await connect_ready(server, token)
        second, _ = await connect_ready(server, token)
        assert await refusal_code(server, token) == 4429
        await first.close()
        await second.close()

    run(scenario())


def test_1009_for_a_frame_over_the_limit(server):
    body = server.login()

    async def scenario():
        ws, _ = await connect_ready(server, body["access_token"])
        await ws.send(json.dumps({"type": "ping", "pad": "x" * 4096}))
        assert await close_code(ws) == 1009

    run(scenario())


@pytest.mark.parametrize("origin", ["http://evil.example", None], ids=["foreign", "missing"])
def test_cross_origin_is_an_http_403(server, origin):
    body = server.login()

    async def scenario():
        with pytest.raises(InvalidStatus) as refused:
            await connect(server, body["access_token"], origin=origin)
        assert refused.value.response.status_code == 403

    run(scenario())


def test_logout_closes_an_open_socket_within_a_second(server):
    body = server.login()

    async def scenario():
        ws, _ = await connect_ready(server, body["access_token"])
        started = time.monotonic()
        status, _ = await asyncio.to_thread(server.request, "POST", "/api/auth/logout", None, body["access_token"])
        assert status == 204
        assert await close_code(ws, timeout=5) == 4409
        assert time.monotonic() - started < 1.5

    run(scenario())


def test_redis_unreachable_leaves_sockets_and_their_revocation_working(tmp_path):
    # A process whose Redis is a closed port: /ready says so (executions dispatched to
    # workers need it), but sockets open and close on logout through the event log.
    with running(tmp_path, REDIS_URL="redis://127.0.0.1:1/0") as broken:
        body = broken.login()
        assert broken.request("GET", "/api/auth/me", token=body["access_token"])[0] == 200
        status, health = broken.request("GET", "/ready")
        assert status == 503 and health["checks"]["channel_layer"] == "unavailable"

        async def scenario():
            ws, _ = await connect_ready(broken, body["access_token"])
            status, _ = await asyncio.to_thread(broken.request, "POST", "/api/auth/logout", None, body["access_token"])
            assert status == 204
            assert await close_code(ws, timeout=5) == 4409

        run(scenario())


def test_binary_and_malformed_frames_get_error_frames_and_the_socket_stays(server):
    body = server.login()

    async def scenario():
        ws, _ = await connect_ready(server, body["access_token"])
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
    body = server.login()

    async def scenario():
        ws, _ = await connect_ready(server, body["access_token"])
        await ws.send(b'{"type": "ping", "x": "\xff\xfe"}', text=True)
        assert await close_code(ws) == 1007

    run(scenario())


def test_a_message_flood_closes_4429(server):
    body = server.login()

    async def scenario():
        ws, _ = await connect_ready(server, body["access_token"])
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(500):
                await ws.send(json.dumps({"type": "ping"}))
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd.code == 4429

    run(scenario())
