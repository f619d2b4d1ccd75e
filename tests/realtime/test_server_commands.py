"""Each documented way to start daphne serves the same protections: a frame over
WS_MAX_MESSAGE_BYTES closes with 1009 (not an open socket), `?access_token=` never
reaches the access log, and the listener queues SERVER_LISTEN_BACKLOG connections."""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest

from tests.live import running
from tests.sockets import PATH, close_code, connect_ready

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("command", ["serve", "daphne", "runserver"])
def test_oversized_frame_closes_1009_and_the_query_token_stays_out_of_the_log(tmp_path, command):
    with running(tmp_path, command) as server:
        token = server.login()["access_token"]

        async def scenario() -> int:
            ws, _ = await connect_ready(server, query=f"access_token={token}", max_size=None)
            async with ws:
                await ws.send(json.dumps({"type": "ping", "pad": "x" * 100_000}))
                return await close_code(ws)

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
