"""The socket at /api/runtime/agent.

The handshake check ran in `TokenAuthMiddleware`; this consumer accepts (so that a
refusal reaches the client as a close code, not as an HTTP 403 with none), closes at once
when the check refused, and otherwise serves the session. It parses frames, calls a
service, sends the result; errors are translated in `_guarded`, its one `except`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import datetime
from typing import Any, Awaitable, Callable

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.utils import timezone

from accounts.tokens import ACCESS, token_decode
from core.conf import runtime_settings
from core.events import session_group, user_group
from core.exceptions import (
    DEPENDENCY_ERRORS,
    BinaryNotSupported,
    CloseCode,
    DependencyUnavailable,
    InvalidJson,
    InvalidRequest,
    ProtocolError,
    RateLimited,
    RequestTooLarge,
    ServiceError,
    TokenExpired,
    UnknownMessageType,
)
from core.jsonlimits import frame_parse
from core.metrics import HANDSHAKES, OPEN_SOCKETS, SOCKET_CLOSES, SOCKET_REFUSALS
from core.tasks import background
from realtime import heartbeat
from realtime.middleware import SCOPE_CREDENTIALS, SCOPE_GRANT
from realtime.ratelimit import TokenBucket, parse_rate
from realtime.registry import registry
from realtime.services import (
    SocketGrant,
    connection_record,
    local_socket_closed,
    local_socket_opened,
    socket_recheck,
    socket_refusal_count,
)
from sessions_runtime.agents import agent_message_parse, agent_message_run
from sessions_runtime.services import session_touch
from sessions_runtime.submission import intent_submit

logger = logging.getLogger(__name__)



class RuntimeAgentConsumer(AsyncWebsocketConsumer):
    groups: list[str] = []

    # Per-socket state, kept small: idle sockets are the memory budget.
    grant: SocketGrant | None = None
    _bucket: TokenBucket | None = None
    _last_seen: datetime | None = None
    _timer: asyncio.TimerHandle | None = None
    _joined: bool = False
    _gone: bool = False
    # While a client frame is handled: what an error frame answers (its type and id).
    _reply_to: dict[str, Any] | None = None

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        """Channels' loop, with one addition: when the channel layer's receive fails (Redis
        gone), daphne would close the socket with 1011 and log a crash. Such a socket can no
        longer hear that its session ended, so it closes with 1013 (try again later), and
        the client reconnects once Redis is back."""
        try:
            await super().__call__(scope, receive, send)
        except DEPENDENCY_ERRORS as exc:
            logger.warning("channel layer lost on %s: %s; closing with 1013", getattr(self, "channel_name", "?"), exc)
            await self._close(DependencyUnavailable())
            await self.disconnect(int(CloseCode.TRY_AGAIN_LATER))

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch without its `aclose_old_connections()`: that is a thread hop
        before every frame and event, for the sake of handlers that use the ORM on the
        event loop. None here does; every query goes through `database_sync_to_async`,
        which closes stale connections itself."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        credentials = self.scope[SCOPE_CREDENTIALS]
        outcome = self.scope[SCOPE_GRANT]
        await self.accept(subprotocol=credentials.subprotocol)
        if isinstance(outcome, ServiceError):
            await self._refuse(outcome)
            return
        if await self._guarded(self._open(outcome), closing=True):
            HANDSHAKES.labels(outcome="refused_after_check").inc()

    async def _refuse(self, error: ServiceError) -> None:
        HANDSHAKES.labels(outcome=str(int(error.close_code))).inc()
        if error.close_code == CloseCode.RATE_LIMITED:
            SOCKET_REFUSALS.labels(reason="cap").inc()
        socket_refusal_count(close_code=int(error.close_code))
        await self._close(error)
        try:
            await heartbeat.ensure_running()
        except DEPENDENCY_ERRORS:
            pass

    async def _open(self, grant: SocketGrant) -> None:
        await heartbeat.ensure_running()
        self._joined = True
        await asyncio.gather(
            self.channel_layer.group_add(session_group(grant.session_id), self.channel_name),
            self.channel_layer.group_add(user_group(grant.user_id), self.channel_name),
        )
        registry().opened(
            connection_record(
                grant=grant,
                channel_name=self.channel_name,
                client_address=self._client_address(),
                user_agent=self._header(b"user-agent"),
            )
        )
        self.grant = grant
        local_socket_opened(grant.user_id)
        OPEN_SOCKETS.inc()
        self._bucket = TokenBucket(*parse_rate(runtime_settings.WS_MESSAGE_RATE))
        self._last_seen = timezone.now()
        await self._send(
            {
                "type": "session.ready",
                "session_id": str(grant.session_id),
                "user_id": str(grant.user_id),
                "tenant_id": str(grant.tenant_id),
                "expires_at": grant.session_expires_at.isoformat(),
                "token_expires_at": grant.claims.expires_at.isoformat(),
                "heartbeat_s": int(runtime_settings.WS_HEARTBEAT_INTERVAL.total_seconds()),
            }
        )
        self._schedule_check()
        HANDSHAKES.labels(outcome="accepted").inc()

    async def disconnect(self, code: int) -> None:
        self._gone = True
        SOCKET_CLOSES.labels(code=str(code)).inc()
        if self._timer is not None:
            self._timer.cancel()
        if self._joined and self.grant is not None:
            try:
                await asyncio.gather(
                    self.channel_layer.group_discard(session_group(self.grant.session_id), self.channel_name),
                    self.channel_layer.group_discard(user_group(self.grant.user_id), self.channel_name),
                )
            except DEPENDENCY_ERRORS:
                logger.warning("could not leave groups for %s", self.channel_name, exc_info=True)
        if self.grant is not None:
            OPEN_SOCKETS.dec()
            local_socket_closed(self.grant.user_id)
            registry().closed(self.channel_name)

    # --- Frames from the client ------------------------------------------------------
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # AsyncJsonWebsocketConsumer would raise on binary frames and invalid JSON and
        # drop the socket; here both are answered with an error frame instead.
        if self.grant is None:
            return
        try:
            await self._guarded(self._handle_frame(text_data, bytes_data), closing=False)
        finally:
            self._reply_to = None

    async def _handle_frame(self, text_data: str | None, bytes_data: bytes | None) -> None:
        limit = runtime_settings.WS_MAX_MESSAGE_BYTES
        size = len(bytes_data) if bytes_data is not None else len((text_data or "").encode("utf-8"))
        if size > limit:
            raise RequestTooLarge(f"Frames are limited to {limit} bytes.")
        if self._bucket is not None and not self._bucket.take():
            SOCKET_REFUSALS.labels(reason="rate").inc()
            raise RateLimited("Too many messages.")
        if bytes_data is not None:
            raise BinaryNotSupported()
        try:
            message = frame_parse(text_data)
        except ValueError:
            raise InvalidJson() from None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise ProtocolError("A message is a JSON object with a string 'type'.")
        # An error frame names the frame it answers, with the client's own `id` if any.
        self._reply_to = {"in_reply_to": message["type"][:64]}
        frame_id = message.get("id")
        if (isinstance(frame_id, str) and len(frame_id) <= 64) or (isinstance(frame_id, int) and not isinstance(frame_id, bool)):
            self._reply_to["id"] = frame_id
        # Client types are looked up in this allowlist only; they never name a
        # channel-layer handler.
        handler = self._handlers().get(message["type"])
        if handler is None:
            raise UnknownMessageType(details={"type": message["type"][:64]})
        await self._touch()
        await handler(message)

    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[None]]]:
        return {
            "ping": self._on_ping,
            "auth.refresh": self._on_auth_refresh,
            "intent.submit": self._on_intent_submit,
            "agent.message": self._on_agent_message,
        }

    async def _on_ping(self, message: dict[str, Any]) -> None:
        await self._send({"type": "pong"})

    async def _on_auth_refresh(self, message: dict[str, Any]) -> None:
        claims = token_decode(message.get("access_token"), expected_type=ACCESS)
        self.grant = await database_sync_to_async(socket_recheck)(grant=self.grant, claims=claims)
        self._schedule_check()
        await self._send({"type": "auth.refreshed", "token_expires_at": claims.expires_at.isoformat()})

    async def _on_intent_submit(self, message: dict[str, Any]) -> None:
        intent_type, parameters = message.get("intent_type"), message.get("parameters", {})
        key = message.get("idempotency_key")
        if not isinstance(intent_type, str) or not isinstance(parameters, dict) or not isinstance(key, (str, type(None))):
            raise InvalidRequest("intent.submit takes 'intent_type' (string), 'parameters' (object), 'idempotency_key'?")
        grant = self.grant
        submission = await database_sync_to_async(intent_submit)(
            caller=grant.caller(self._client_address()),
            session_id=grant.session_id,
            intent_type=intent_type,
            parameters=parameters,
            idempotency_key=key,
        )
        await self._send({"type": "intent.accepted", **submission.response, "replayed": submission.replayed})

    async def _on_agent_message(self, message: dict[str, Any]) -> None:
        caller = self.grant.caller(self._client_address())
        text, context, conversation_id = agent_message_parse(message, caller=caller)
        background(agent_message_run(caller=caller, text=text, context=context, conversation_id=conversation_id))

    async def _touch(self) -> None:
        # Paced by the same rule as REST requests; only a due touch costs a thread hop.
        if timezone.now() - self._last_seen >= runtime_settings.SESSION_TOUCH_INTERVAL:
            self._last_seen = await database_sync_to_async(session_touch)(
                session_id=self.grant.session_id, last_seen_at=self._last_seen
            ) or self._last_seen

    # --- Events from the channel layer (server-internal types only) -----------------
    async def session_ended(self, event: dict[str, Any]) -> None:
        code = event.get("close_code", CloseCode.SESSION_ENDED)
        await self._close_code(int(code), reason=str(event.get("reason", "session_ended")))

    async def runtime_event(self, event: dict[str, Any]) -> None:
        await self._send(
            {"type": "runtime_event", "event_type": event["event_type"], "data": event.get("data"), "timestamp": event.get("timestamp")}
        )

    # --- The timer: token expiry and the periodic session re-check -------------------
    # A timer handle per socket, not a sleeping task: a few hundred bytes instead of a
    # task and its coroutine frame, for every idle socket.
    def _schedule_check(self) -> None:
        """Wake at the token's expiry or after WS_RECHECK_INTERVAL, whichever is first."""
        if self._timer is not None:
            self._timer.cancel()
        if self._gone:
            return
        interval = runtime_settings.WS_RECHECK_INTERVAL.total_seconds()
        token_left = self.grant.claims.expires_at.timestamp() - time.time()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(0.0, min(interval, token_left)), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        background(self._check())

    async def _check(self) -> None:
        """Close the socket when its token expired unrefreshed; otherwise re-check the
        session (so that a lost end event cannot keep it open) and wait again."""
        if self.grant is None or self._gone:
            return
        if self.grant.claims.expires_at.timestamp() <= time.time():
            await self._close(TokenExpired("The access token expired; send auth.refresh before it does."))
            return
        closed = await self._guarded(
            database_sync_to_async(socket_recheck)(grant=self.grant, claims=self.grant.claims), closing=True
        )
        if not closed and self.grant is not None and self._timer is None:
            self._schedule_check()

    # --- The one translation of errors to close codes and error frames ---------------
    async def _guarded(self, work: Awaitable[Any], *, closing: bool) -> bool:
        """Run `work`; translate what it raises. Returns True when the socket was closed.

        With `closing`, every error closes the socket with its close code (the handshake,
        the re-check). Otherwise only errors marked `closes_socket` close it; the rest are
        answered with an `error` frame and the socket stays open.
        """
        try:
            await work
            return False
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the one place errors become close codes
            if isinstance(exc, DEPENDENCY_ERRORS):
                logger.warning("dependency unavailable on %s: %s", self.channel_name, exc)
                error: ServiceError = DependencyUnavailable()
            elif isinstance(exc, ServiceError):
                error = exc
            else:
                logger.exception("socket error on %s", self.channel_name)
                await self._close_code(CloseCode.SERVER_ERROR, reason="server_error")
                return True
            if closing or error.closes_socket:
                await self._close(error)
                return True
            await self._send({"type": "error", **error.as_body(), **(self._reply_to or {})})
            return False

    async def _close(self, error: ServiceError) -> None:
        await self._close_code(int(error.close_code), reason=error.code)

    async def _close_code(self, code: int, *, reason: str) -> None:
        try:
            await self.close(code=code, reason=reason[:120])
        except Exception:  # noqa: BLE001 - the peer may be gone already
            logger.debug("close after peer left", exc_info=True)

    async def _send(self, payload: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(payload, separators=(",", ":")))

    def _header(self, name: bytes) -> str:
        for key, value in self.scope.get("headers") or []:
            if key == name:
                return value.decode("latin1")
        return ""

    def _client_address(self) -> str:
        client = self.scope.get("client") or ("", 0)
        return str(client[0] or "")
