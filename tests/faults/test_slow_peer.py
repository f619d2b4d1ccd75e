"""A peer that stops reading: the server drops it once WS_MAX_SEND_BUFFER_BYTES are queued
for it, instead of buffering its session's events without limit, and the session's other
sockets keep receiving everything.

The guard sits in the transport, below the channel layer, so the process runs on the
in-memory layer here: ~50,000 events through Redis would only make the test slow.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time

import pytest
import websockets

from tests import factories
from tests.live import ORIGIN, running

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]
PATH = "/api/runtime/agent"
WORDS = " ".join(["w"] * 7900)


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def _stalled_socket(port: int, token: str) -> socket.socket:
    """A real WebSocket client that completes the handshake and then never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: {ORIGIN}\r\n"
        f"Sec-WebSocket-Protocol: symphainy.v1, bearer.{token}\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def test_a_peer_that_stops_reading_is_dropped_and_others_are_served(tmp_path):
    with running(tmp_path, WS_MAX_SEND_BUFFER_BYTES=str(256 * 1024), AGENT_TOKEN_DELAY_SECONDS="0",
                 WS_MESSAGE_RATE="1000/1s", REDIS_URL="") as server:
        user = factories.make_user()
        status, body = server.request("POST", "/api/auth/login", {"email": user.email, "password": factories.PASSWORD})
        assert status == 200
        stalled = _stalled_socket(server.port, body["access_token"])
        rss_before = _rss_kib(server.process.pid)

        async def talk() -> int:
            async with websockets.connect(
                server.ws + PATH, origin=ORIGIN, subprotocols=["symphainy.v1", f"bearer.{body['access_token']}"],
                max_size=2**20,
            ) as ws:
                assert json.loads(await ws.recv())["type"] == "session.ready"
                completed = 0
                for _ in range(6):
                    await ws.send(json.dumps({"type": "agent.message", "payload": {"text": WORDS}}))
                    while True:
                        frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
                        if frame.get("event_type") == "agent.completed":
                            assert frame["data"]["tokens"] == 7900
                            completed += 1
                            break
                return completed

        # Six replies of 7,900 token events each (~10 MB) reach the reading socket in full.
        assert asyncio.run(talk()) == 6
        rss_after = _rss_kib(server.process.pid)

        # The stalled peer was cut off: after what the kernel buffered, the stream ends.
        stalled.settimeout(10)
        received, ended = 0, False
        try:
            while chunk := stalled.recv(65536):
                received += len(chunk)
            ended = True
        except ConnectionResetError:
            ended = True
        except socket.timeout:
            pass
        stalled.close()
        assert ended, "the server kept a peer that stopped reading"
        assert received < 4 * 1024 * 1024
        assert "stopped reading" in server.log()
        # Nothing like the ~10 MB the stalled peer was sent stayed in the server.
        assert rss_after - rss_before < 8 * 1024, (rss_before, rss_after)
