"""Socket clients for the tests, written once.

Two kinds: `Socket` drives the full ASGI application in this process (channels'
WebsocketCommunicator); the functions after it speak to a real server process (a
`tests.live.LiveServer`, or anything with its `ws` address) with a real client
(`websockets`), as a browser would.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from websockets.exceptions import ConnectionClosed

from tests import factories
from tests.frames import CheckedConnection

PATH = "/api/runtime/agent"
# The ASGI socket's Host and Origin, as a page of the service at http://localhost sends them.
ASGI_HOST = b"localhost"
ASGI_ORIGIN = b"http://localhost"
OWN_ORIGIN: Any = object()  # `connect`'s default: the origin of the server's own pages


def page_origin(server: Any) -> str:
    """The Origin a page served by `server` sends (scheme, host and port, as the origin
    check compares them): for ws://127.0.0.1:8101, http://127.0.0.1:8101."""
    scheme, _, rest = server.ws.partition("://")
    return f"{'https' if scheme == 'wss' else 'http'}://{rest.split('/', 1)[0]}"


def bearer(token: str) -> list[str]:
    """The subprotocols that carry a token: the protocol's name, then the bearer."""
    return ["symphainy.v1", f"bearer.{token}"]


@database_sync_to_async
def login_new_user(**kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """A new user, logged in through the REST API in this process: (user, login body)."""
    _, body, user = factories.as_user(**kwargs)
    return user, body


# --- In this process, through the full ASGI application -----------------------------------
class Socket:
    """A WebsocketCommunicator with the protocol's vocabulary."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.communicator = communicator
        self.subprotocol: str | None = None

    async def open(self) -> "Socket":
        connected, subprotocol = await self.communicator.connect(timeout=5)
        assert connected, f"handshake refused with {subprotocol}"
        self.subprotocol = subprotocol
        return self

    async def receive(self, timeout: float = 5) -> dict[str, Any]:
        output = await self.communicator.receive_output(timeout)
        assert output["type"] == "websocket.send", output
        return json.loads(output["text"])

    async def receive_close(self, timeout: float = 5) -> int:
        """The close code of the next output; fails if a data frame comes first."""
        output = await self.communicator.receive_output(timeout)
        assert output["type"] == "websocket.close", f"expected a close, got {output}"
        # What the server does next: deliver the disconnect, so the consumer finishes.
        await self.communicator.disconnect()
        return output.get("code", 1000)

    async def send(self, payload: Any) -> None:
        await self.communicator.send_to(text_data=payload if isinstance(payload, str) else json.dumps(payload))

    async def send_bytes(self, data: bytes) -> None:
        await self.communicator.send_to(bytes_data=data)

    async def nothing(self, timeout: float = 0.2) -> bool:
        return await self.communicator.receive_nothing(timeout)

    async def close(self) -> None:
        await self.communicator.disconnect()


def make_socket(
    token: str | None = None,
    *,
    transport: str = "subprotocol",
    session_id: str | None = None,
    origin: bytes | None = ASGI_ORIGIN,
    query: str = "",
) -> Socket:
    """A socket to the ASGI application, not yet opened; the token travels by `transport`."""
    from symphainy.asgi import application

    headers: list[tuple[bytes, bytes]] = [(b"host", ASGI_HOST)]
    subprotocols: list[str] | None = None
    params = [query] if query else []
    if origin is not None:
        headers.append((b"origin", origin))
    if token is not None:
        if transport == "subprotocol":
            subprotocols = bearer(token)
        elif transport == "header":
            headers.append((b"authorization", f"Bearer {token}".encode()))
        elif transport in ("access_token", "session_token"):
            params.append(f"{transport}={token}")
        else:
            raise ValueError(transport)
    if session_id is not None:
        params.append(f"session_id={session_id}")
    path = PATH + ("?" + "&".join(params) if params else "")
    return Socket(WebsocketCommunicator(application, path, headers=headers, subprotocols=subprotocols))


async def open_ready(token: str, **kwargs: Any) -> tuple[Socket, dict[str, Any]]:
    """An opened ASGI socket and its first frame, which must be session.ready."""
    sock = await make_socket(token, **kwargs).open()
    ready = await sock.receive()
    assert ready["type"] == "session.ready", ready
    return sock, ready


# --- Over the network, to a real server process -------------------------------------------
async def connect(server: Any, token: str | None = None, *, query: str = "", origin: Any = OWN_ORIGIN,
                  **kwargs: Any) -> Any:
    """A real client's handshake to `server`'s socket path, from one of its own pages unless
    `origin` says otherwise (None: no Origin). The token, if given, goes in the subprotocol
    header; other keywords go to `websockets.connect`."""
    if origin is OWN_ORIGIN:
        origin = page_origin(server)
    if token is not None:
        kwargs.setdefault("subprotocols", bearer(token))
    kwargs.setdefault("open_timeout", 10)
    kwargs.setdefault("create_connection", CheckedConnection)  # what it receives is checked (tests/frames.py)
    url = server.ws + PATH + (f"?{query}" if query else "")
    return await websockets.connect(url, origin=origin, **kwargs)


async def connect_ready(server: Any, token: str | None = None, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """`connect`, then the first frame, which must be session.ready."""
    ws = await connect(server, token, **kwargs)
    ready = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert ready["type"] == "session.ready", ready
    return ws, ready


async def close_code(ws: Any, timeout: float = 10) -> int:
    """The code of the close frame the client receives next; fails if a frame comes first."""
    with pytest.raises(ConnectionClosed) as closed:
        frame = await asyncio.wait_for(ws.recv(), timeout)
        raise AssertionError(f"expected a close, got a frame: {frame}")
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd.code


async def close_code_after_frames(ws: Any, timeout: float = 10) -> int:
    """The code of the close frame the client receives, after any frames before it (each
    within `timeout`)."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd.code


async def refusal_code(server: Any, token: str | None = None, *, timeout: float = 10, **kwargs: Any) -> int:
    """Open a socket that the server must close before any frame: its close code."""
    async with await connect(server, token, **kwargs) as ws:
        return await close_code(ws, timeout)


async def next_event(ws: Any, event_type: str, timeout: float = 10) -> dict[str, Any]:
    """The next runtime_event frame of `event_type`, skipping any other frame."""
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("type") == "runtime_event" and frame.get("event_type") == event_type:
                return frame
