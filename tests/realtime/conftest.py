"""Helpers to drive /api/runtime/agent through the full ASGI application."""

from __future__ import annotations

import json
from typing import Any

from channels.testing import WebsocketCommunicator

from symphainy.asgi import application

PATH = "/api/runtime/agent"
ORIGIN = b"http://localhost"


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
    origin: bytes | None = ORIGIN,
    query: str = "",
) -> Socket:
    headers: list[tuple[bytes, bytes]] = []
    subprotocols: list[str] | None = None
    params = [query] if query else []
    if origin is not None:
        headers.append((b"origin", origin))
    if token is not None:
        if transport == "subprotocol":
            subprotocols = ["symphainy.v1", f"bearer.{token}"]
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
