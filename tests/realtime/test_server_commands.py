"""Each documented way to start daphne serves the same protections: a frame over
WS_MAX_MESSAGE_BYTES closes with 1009 (not an open socket), `?access_token=` never
reaches the access log, and the listener queues SERVER_LISTEN_BACKLOG connections."""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests import factories
from tests.live import ORIGIN, running

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]
PATH = "/api/runtime/agent"


@pytest.mark.parametrize("command", ["serve", "daphne", "runserver"])
def test_oversized_frame_closes_1009_and_the_query_token_stays_out_of_the_log(tmp_path, command):
    with running(tmp_path, command) as server:
        user = factories.make_user()
        status, body = server.request("POST", "/api/auth/login", {"email": user.email, "password": factories.PASSWORD})
        assert status == 200, body
        token = body["access_token"]

        async def scenario() -> int:
            url = f"{server.ws}{PATH}?access_token={token}"
            async with websockets.connect(url, origin=ORIGIN, open_timeout=10, max_size=None) as ws:
                assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "session.ready"
                await ws.send(json.dumps({"type": "ping", "pad": "x" * 100_000}))
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 10)
                assert closed.value.rcvd is not None, "closed without a close frame"
                return closed.value.rcvd.code

        assert asyncio.run(scenario()) == 1009
        # The access log has the socket's path, redacted.
        log = server.log()
        assert PATH in log, log
        assert token not in log
        assert token.split(".")[2] not in log


def _listen_backlog(port: int) -> int:
    """The listening socket's backlog, as the kernel reports it (`ss`: Send-Q)."""
    output = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], check=True, capture_output=True, text=True).stdout
    return int(output.split()[2])


@pytest.mark.parametrize("command", ["serve", "daphne", "runserver"])
def test_every_command_listens_with_the_configured_backlog(tmp_path, command):
    """Twisted's own backlog is 50: a reconnect storm past it waits for SYN retries."""
    with running(tmp_path, command, SERVER_LISTEN_BACKLOG="1500") as server:
        assert _listen_backlog(server.port) == 1500
