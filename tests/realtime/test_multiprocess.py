"""Two daphne processes sharing PostgreSQL and Redis: an end on one reaches sockets on the
other, and the timer re-check closes a socket whose end event never came."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from sessions_runtime.models import RuntimeSession, SessionStatus
from tests import factories
from tests.conftest import services_server_marks
from tests.live import ORIGIN, running

pytestmark = services_server_marks()
PATH = "/api/runtime/agent"


async def open_ready(server, token: str):
    ws = await websockets.connect(server.ws + PATH, origin=ORIGIN, subprotocols=["symphainy.v1", f"bearer.{token}"], open_timeout=10)
    assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "session.ready"
    return ws


async def closed_with(ws) -> int:
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 10)
    return closed.value.rcvd.code


def test_an_end_on_process_a_closes_sockets_on_process_b_within_a_second(tmp_path):
    with running(tmp_path) as a, running(tmp_path) as b:
        user = factories.make_user()
        status, body = a.request("POST", "/api/auth/login", {"email": user.email, "password": factories.PASSWORD})
        assert status == 200

        async def scenario():
            on_b = [await open_ready(b, body["access_token"]) for _ in range(3)]
            on_a = await open_ready(a, body["access_token"])
            started = time.monotonic()
            status, _ = await asyncio.to_thread(a.request, "DELETE", f"/api/session/{body['session_id']}", None, body["access_token"])
            assert status == 204
            codes = await asyncio.gather(*(closed_with(ws) for ws in on_b + [on_a]))
            elapsed = time.monotonic() - started
            assert codes == [4409] * 4
            assert elapsed < 1.5, elapsed
            # And the other process refuses the ended session at once (its cache was dropped).
            ws = await websockets.connect(b.ws + PATH, origin=ORIGIN, subprotocols=["symphainy.v1", f"bearer.{body['access_token']}"])
            assert await closed_with(ws) == 4409

        asyncio.run(scenario())


def test_the_recheck_closes_a_socket_whose_end_event_was_lost(tmp_path):
    with running(tmp_path, WS_RECHECK_INTERVAL_SECONDS="1") as server:
        user = factories.make_user()
        status, body = server.request("POST", "/api/auth/login", {"email": user.email, "password": factories.PASSWORD})
        assert status == 200

        async def scenario():
            ws = await open_ready(server, body["access_token"])
            # Ended behind the service's back: no channel-layer message is ever sent.
            await asyncio.to_thread(
                lambda: RuntimeSession.objects.filter(pk=body["session_id"]).update(status=SessionStatus.ENDED)
            )
            started = time.monotonic()
            assert await closed_with(ws) == 4409
            assert time.monotonic() - started < 3

        asyncio.run(scenario())
