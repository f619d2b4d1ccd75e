"""The socket at /api/runtime/agent, as an ASGI adapter.

It accepts (so that a refusal reaches the client as a close code, not as an HTTP 403
with none), runs the handshake (`realtime.handshake`) and hands the socket's life to an
`OpenSocket` (`realtime.socket`) and its frames to the frame table (`realtime.protocol`).
What any of them raises becomes a close code or an `error` frame in `guarded`, the one
translation of errors on the socket side (`core.http.exception_handler` is the HTTP one).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer

from core.exceptions import DEPENDENCY_ERRORS, CloseCode, DependencyUnavailable, ServerError, ServiceError
from core.ids import local_id
from core.metrics import SOCKET_CLOSES
from core.process import server_instance_id
from realtime import drain
from realtime.handshake import SCOPE_CREDENTIALS, SocketCredentials, handshake_authorize, handshake_refused
from realtime.protocol import frame_dumps, frame_receive, server_restart
from realtime.socket import OpenSocket

logger = logging.getLogger(__name__)
MAX_CLOSE_REASON = 120


class RuntimeAgentConsumer(AsyncWebsocketConsumer):
    groups: list[str] = []
    socket: OpenSocket | None = None

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        """Channels' loop without the channel layer: a socket hears of changes through its
        process's tail of the event log, so a handshake costs no Redis round trip and a
        Redis outage closes no socket. The id names the socket in connection records."""
        self.scope = scope
        self.channel_layer = None
        self.channel_name = f"ws.{server_instance_id()}.{local_id()}"
        self.base_send = send
        # One source, so one plain loop: channels' `await_many_dispatch` keeps a task and
        # an `asyncio.wait` per socket to multiplex sources this consumer does not have.
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch without its `aclose_old_connections()`: that is a thread hop
        before every frame, for the sake of handlers that use the ORM on the event loop.
        None here does; every query goes through `database_sync_to_async`, which closes
        stale connections itself."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        """Channels' disconnect without its `aclose_old_connections()` (for the reason given
        in `dispatch`). That call is a hop to the one thread-sensitive thread per closed
        socket: when a session's 1,000 sockets close at once they queue 1,000 hops, one
        after another, and the request that ended the session, whose view runs on that
        same thread, answers behind them. This consumer joins no groups."""
        await self.disconnect(message["code"])
        raise StopConsumer()

    async def connect(self) -> None:
        # The credentials (the token among them) are not kept past the handshake.
        credentials: SocketCredentials = self.scope.pop(SCOPE_CREDENTIALS)
        await self.accept(subprotocol=credentials.subprotocol)
        if drain.draining():  # a handshake that came in as the process began to stop
            await self.close_with(int(CloseCode.SERVICE_RESTART), drain.CLOSE_REASON)
            return
        drain.socket_opened(self)
        self.socket = OpenSocket(self, client_address=self._client_address(), user_agent=self._header(b"user-agent"))
        await self.guarded(self._open(self.socket, credentials), closing=True)

    async def _open(self, socket: OpenSocket, credentials: SocketCredentials) -> None:
        grant = await handshake_authorize(credentials, subscribe=socket.subscribe)
        await socket.open(grant, credentials)

    async def disconnect(self, code: int) -> None:
        SOCKET_CLOSES.labels(code=str(code)).inc()
        drain.socket_closed(self)
        if self.socket is not None:
            self.socket.closed()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # AsyncJsonWebsocketConsumer would raise on binary frames and invalid JSON and
        # drop the socket; here both are answered with an error frame instead.
        socket = self.socket
        if socket is None or socket.grant is None or socket.opening:
            return
        reply_to: dict[str, Any] = {}
        await self.guarded(frame_receive(socket, text_data, bytes_data, reply_to), closing=False, reply_to=reply_to)

    # --- The one translation of errors to close codes and error frames ---------------
    async def guarded(self, work: Awaitable[Any], *, closing: bool, reply_to: dict[str, Any] | None = None) -> bool:
        """Run `work`; translate what it raises. Returns True when it completed.

        With `closing`, every error closes the socket with its close code (the handshake,
        the re-check). Otherwise only errors marked `closes_socket` close it; the rest are
        answered with an `error` frame naming the frame it answers, and the socket stays open.
        """
        try:
            await work
            return True
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the socket side's one translation of errors
            if isinstance(exc, ServiceError):
                error = exc
            elif isinstance(exc, DEPENDENCY_ERRORS):
                logger.warning("dependency unavailable on %s: %s", self.channel_name, exc)
                error = DependencyUnavailable()
            else:
                logger.exception("socket error on %s", self.channel_name)
                error = ServerError()
        if closing or error.closes_socket:
            await self.close_with(int(error.close_code), error.code)
        else:
            await self.send_frame({"type": "error", **error.as_body(), **(reply_to or {})})
        return False

    # --- The transport an OpenSocket talks through -------------------------------------
    async def send_frame(self, frame: dict[str, Any]) -> None:
        await self.send(text_data=frame_dumps(frame))

    async def drained(self) -> None:
        """Wait until the connection's send buffer drains under the server's high-water
        mark: daphne run with `symphainy.serve`'s protections offers that wait as a scope
        extension ("symphainy.send_buffer", see SEND_BUFFER_EXTENSION there); a server
        without it (the tests' communicator) buffers nothing, so there is nothing to wait for."""
        extension = (self.scope.get("extensions") or {}).get("symphainy.send_buffer")
        if extension is not None:
            await extension["drained"]()

    async def close_with(self, code: int, reason: str) -> None:
        socket = self.socket
        if socket is not None and socket.opening:
            socket.unsubscribe()
            await handshake_refused(code, checked=socket.grant is not None)
        try:
            await self.close(code=code, reason=reason[:MAX_CLOSE_REASON])
        except Exception:  # noqa: BLE001 - the peer may be gone already
            logger.debug("close after peer left", exc_info=True)

    async def restart(self, *, reconnect_after_ms: int) -> None:
        """A drain's close: `server.restart` with the reconnect hint (only on a socket whose
        `session.ready` is out: nothing precedes that frame), then 1012."""
        socket = self.socket
        if socket is not None and socket.grant is not None and not socket.opening and not socket.gone:
            try:
                await self.send_frame(server_restart(reconnect_after_ms))
            except Exception:  # noqa: BLE001 - the peer may be gone already; the close says the rest
                logger.debug("restart frame after peer left", exc_info=True)
        await self.close_with(int(CloseCode.SERVICE_RESTART), drain.CLOSE_REASON)

    def _header(self, name: bytes) -> str:
        return next((v.decode("latin1") for k, v in self.scope.get("headers") or [] if k == name), "")

    def _client_address(self) -> str:
        client = self.scope.get("client") or ("", 0)
        return str(client[0] or "")
