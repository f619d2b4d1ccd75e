"""A peer that stops reading: the server drops it once WS_MAX_SEND_BUFFER_BYTES are queued
for it, instead of buffering its session's events without limit, and the session's other
sockets keep receiving everything.

The guard sits in the transport, under the consumer, which sends what the event log's tail
hands it; the process needs no Redis for this and runs without it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket

import pytest

from tests.live import running
from tests.sockets import PATH, connect_ready

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]
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
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:{port}\r\n"
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
        body = server.login()

        async def talk() -> int:
            ws, _ = await connect_ready(server, body["access_token"], max_size=2**20)
            async with ws:
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

        # The baseline, in the same run: the same replies with no stalled peer, so that what
        # any reply costs the process (its answer's row, the live frames' queues, the
        # allocator's arenas) is paid before the measure starts.
        assert asyncio.run(talk()) == 6
        stalled = _stalled_socket(server.port, body["access_token"])
        rss_before = _rss_kib(server.process.pid)
        # Six replies of 7,900 token events each (~10 MB) reach the reading socket in full.
        assert asyncio.run(talk()) == 6
        rss_after = _rss_kib(server.process.pid)

        # The stalled peer holds what the kernel buffered, no more: either the guard cut it
        # off, or the log does not say that it did. Either way the server kept none of it.
        stalled.settimeout(5)
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
        assert received < 4 * 1024 * 1024
        assert ended or "stopped reading" not in server.log()
        assert rss_after - rss_before < 8 * 1024, (rss_before, rss_after)


# --- the guard itself, deterministic ------------------------------------------------------
class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.aborted = False
        self.producer = None

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def registerProducer(self, producer, streaming: bool) -> None:  # noqa: N802 - Twisted's name
        self.producer = producer

    def unregisterProducer(self) -> None:  # noqa: N802
        self.producer = None

    def abortConnection(self) -> None:  # noqa: N802
        self.aborted = True


def _protocol_with(transport: FakeTransport, monkeypatch):
    from autobahn.websocket.protocol import WebSocketProtocol as AutobahnProtocol

    from symphainy.serve import SendBufferGuard, SymphainyWebSocketProtocol

    # autobahn's own sendData: straight to the transport, as with an empty send queue.
    monkeypatch.setattr(AutobahnProtocol, "sendData", lambda self, data, sync=False, chopsize=None: self.transport.write(data))

    protocol = SymphainyWebSocketProtocol.__new__(SymphainyWebSocketProtocol)
    protocol.transport, protocol.send_queue, protocol.peer = transport, [], "tcp4:127.0.0.1:1"
    protocol._send_guard = SendBufferGuard()
    transport.registerProducer(protocol._send_guard, True)
    return protocol


def test_the_guard_drops_a_peer_once_the_limit_waits_while_paused(settings, monkeypatch):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "WS_MAX_SEND_BUFFER_BYTES": 1000}
    transport = FakeTransport()
    protocol = _protocol_with(transport, monkeypatch)
    protocol.sendData(b"x" * 5000)  # not paused: any amount goes out
    transport.producer.pauseProducing()
    protocol.sendData(b"x" * 600)
    assert not transport.aborted
    protocol.sendData(b"x" * 600)
    assert transport.aborted
    assert [len(w) for w in transport.written] == [5000, 600]  # the frame over the limit never went out
    protocol.sendData(b"x" * 10)  # after the drop, the aborted transport swallows the rest


def test_the_guard_forgets_what_drained(settings, monkeypatch):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "WS_MAX_SEND_BUFFER_BYTES": 1000}
    transport = FakeTransport()
    protocol = _protocol_with(transport, monkeypatch)
    for _ in range(5):
        transport.producer.pauseProducing()
        protocol.sendData(b"x" * 900)
        transport.producer.resumeProducing()
    assert not transport.aborted and len(transport.written) == 5


def test_a_sender_can_wait_for_the_buffer_to_drain(settings, monkeypatch):
    """`send_drained()` returns at once with room in the buffer, waits while it is over the
    high-water mark, and returns when it drains or when the connection goes."""
    transport = FakeTransport()
    protocol = _protocol_with(transport, monkeypatch)

    async def scenario() -> None:
        await asyncio.wait_for(protocol.send_drained(), 1)
        transport.producer.pauseProducing()
        waiting = asyncio.ensure_future(protocol.send_drained())
        assert not await _done_soon(waiting)
        transport.producer.resumeProducing()
        await asyncio.wait_for(waiting, 1)

        transport.producer.pauseProducing()
        waiting = asyncio.ensure_future(protocol.send_drained())
        assert not await _done_soon(waiting)
        transport.producer.stopProducing()  # the connection went
        await asyncio.wait_for(waiting, 1)

    asyncio.run(scenario())


async def _done_soon(task: asyncio.Future) -> bool:
    """Whether `task` finishes once the loop has run everything that was ready."""
    for _ in range(10):
        await asyncio.sleep(0)
    return task.done()
