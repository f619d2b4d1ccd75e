"""The socket at /api/runtime/agent.

`RuntimeSocketApp` found the credentials; this consumer accepts (so that a refusal
reaches the client as a close code, not as an HTTP 403 with none), checks them once it
listens to the event log, closes at once when the check refused, and otherwise serves
the session. It parses frames, calls a
service, sends the result; errors are translated in `_guarded`, its one `except`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
import uuid
from collections import deque
from datetime import datetime
from typing import Any, Awaitable, Callable

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.utils import timezone

from accounts.tokens import ACCESS, token_decode
from core.conf import runtime_settings
from core.events import LoggedEvent, Replay, log_replay
from core.exceptions import (
    DEPENDENCY_ERRORS,
    BinaryNotSupported,
    CloseCode,
    DependencyUnavailable,
    InvalidJson,
    InvalidRequest,
    NotAuthenticated,
    ProtocolError,
    RateLimited,
    RequestTooLarge,
    ServerError,
    ServiceError,
    TokenExpired,
    UnknownMessageType,
)
from core.jsonlimits import frame_parse
from core.metrics import HANDSHAKES, OPEN_SOCKETS, REVOCATION_LATENCY, SOCKET_CLOSES, SOCKET_REFUSALS
from core.process import server_instance_id
from core.tasks import background
from realtime import heartbeat
from realtime.middleware import SCOPE_CREDENTIALS, SocketCredentials, authorize_claims
from realtime.ratelimit import TokenBucket, parse_rate
from realtime.registry import registry
from realtime.services import (
    SocketGrant,
    connection_record,
    local_socket_closed,
    local_socket_reserve,
    socket_recheck,
    socket_refusal_count,
    socket_session_id,
)
from realtime.tail import EventTail, tail
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
    _gone: bool = False
    # While a client frame is handled: what an error frame answers (its type and id).
    _reply_to: dict[str, Any] | None = None
    # The event log: where this socket is subscribed, the last position it was sent, and
    # what arrived while the handshake was still under way (or while a send was).
    _feed: EventTail | None = None
    _keys: tuple[uuid.UUID, uuid.UUID] | None = None  # (session, token's session)
    _last_seq: int = 0
    _opening: bool = True
    _outbox: deque | None = None
    _drainer: asyncio.Task | None = None
    _ended: tuple[int, str] | None = None
    _role: str | None = None

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        """Channels' loop without the channel layer: a socket hears of changes through its
        process's tail of the event log, so a handshake costs no Redis round trip and a
        Redis outage closes no socket. The id names the socket in connection records."""
        self.scope = scope
        self.channel_layer = None
        self.channel_name = f"ws.{server_instance_id()}.{uuid.uuid4().hex}"
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
        outcome = await self._authorize(credentials)
        if not isinstance(outcome, ServiceError):
            try:
                # Checked and counted with no await between: concurrent handshakes of one
                # user on this process cannot all pass the cap.
                local_socket_reserve(outcome.user_id)
            except RateLimited as error:
                outcome = error
        if isinstance(outcome, ServiceError):
            await self._refuse(outcome)
            return
        if await self._guarded(self._open(outcome, credentials), closing=True):
            HANDSHAKES.labels(outcome="refused_after_check").inc()

    async def _authorize(self, credentials: SocketCredentials) -> SocketGrant | ServiceError:
        """Subscribe to the event log first, then check: an end or access change that
        commits after the check reaches this socket through the tail, and one that
        committed before it is what the check (or the cache, which the tail already
        cleared) sees. Returns the grant or the error the socket is refused with."""
        try:
            if credentials.token is None:
                raise NotAuthenticated()
            claims = token_decode(credentials.token, expected_type=ACCESS)
            session_id = socket_session_id(credentials.session_id, claims.session_id)
            feed = tail()
            await feed.start()
            self._feed, self._keys = feed, (session_id, claims.session_id)
            feed.subscribe(self, session_id=session_id, token_session_id=claims.session_id)
            return await authorize_claims(claims, credentials.session_id)
        except ServiceError as error:
            return error
        except DEPENDENCY_ERRORS:
            logger.warning("dependency unavailable during a socket handshake", exc_info=True)
            return DependencyUnavailable()
        except Exception:  # noqa: BLE001 - a refusal with 1011, never an unhandled handshake
            logger.exception("socket handshake check failed")
            return ServerError()

    async def _refuse(self, error: ServiceError) -> None:
        self._unsubscribe()
        HANDSHAKES.labels(outcome=str(int(error.close_code))).inc()
        if error.close_code == CloseCode.RATE_LIMITED:
            SOCKET_REFUSALS.labels(reason="cap").inc()
        socket_refusal_count(close_code=int(error.close_code))
        await self._close(error)
        try:
            await heartbeat.ensure_running()
        except DEPENDENCY_ERRORS:
            pass

    async def _open(self, grant: SocketGrant, credentials: SocketCredentials) -> None:
        self.grant = grant
        await heartbeat.ensure_running()
        OPEN_SOCKETS.inc()
        registry().opened(
            connection_record(
                grant=grant,
                channel_name=self.channel_name,
                client_address=self._client_address(),
                user_agent=self._header(b"user-agent"),
            )
        )
        self._bucket = TokenBucket(*parse_rate(runtime_settings.WS_MESSAGE_RATE))
        self._last_seen = timezone.now()
        feed = self._feed
        if credentials.since is None and feed is not None:
            # A fresh socket starts from the newest position known here: the check's, or a
            # later one its process's tail read since. Newer events reach it through the
            # tail (it subscribed before the check), so nothing falls between the two.
            seq = max(grant.event_seq, feed.positions.get(grant.session_id, 0))
            replay = Replay(seq=seq, epoch=feed.epoch, recovered=None, events=[])
        else:
            replay = await database_sync_to_async(log_replay)(
                session_id=grant.session_id, since=credentials.since, epoch=credentials.epoch
            )
        self._last_seq = replay.seq
        ready = {
            "type": "session.ready",
            "session_id": str(grant.session_id),
            "user_id": str(grant.user_id),
            "tenant_id": str(grant.tenant_id),
            "expires_at": grant.session_expires_at.isoformat(),
            "token_expires_at": grant.claims.expires_at.isoformat(),
            "heartbeat_s": int(runtime_settings.WS_HEARTBEAT_INTERVAL.total_seconds()),
            "seq": replay.seq,
            "epoch": replay.epoch,
        }
        if replay.recovered is not None:
            ready["recovered"] = replay.recovered
        await self._send(ready)
        for event in replay.events:
            await self._send(event.frame(replay.epoch))
        self._opening = False
        HANDSHAKES.labels(outcome="accepted").inc()
        # What the tail handed over meanwhile: an end, a new role, newer events.
        if self._ended is not None:
            await self._close_code(self._ended[0], reason=self._ended[1])
            return
        if self._role is not None:
            self.log_access_changed(self._role)
        self._schedule_check()
        self._drain_soon()

    async def disconnect(self, code: int) -> None:
        self._gone = True
        SOCKET_CLOSES.labels(code=str(code)).inc()
        if self._timer is not None:
            self._timer.cancel()
        self._unsubscribe()
        if self.grant is not None:
            OPEN_SOCKETS.dec()
            local_socket_closed(self.grant.user_id)
            registry().closed(self.channel_name)

    def _unsubscribe(self) -> None:
        if self._feed is not None and self._keys is not None:
            self._feed.unsubscribe(self, session_id=self._keys[0], token_session_id=self._keys[1])
        self._feed = None

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

    # --- From the event log (called by this process's tail, on the event loop) ---------
    def log_events(self, events: list[LoggedEvent], epoch: str) -> None:
        self._queue(("log", events, epoch))

    def live_frame(self, frame: dict[str, Any]) -> None:
        self._queue(("live", frame, ""))

    def log_ended(self, close_code: int, reason: str, ended_at: float) -> None:
        if self._gone:
            return
        if self._opening:
            self._ended = (close_code, reason or "session_ended")
            return
        self._gone = True
        background(self._revoke(close_code, reason or "session_ended", ended_at))

    async def _revoke(self, close_code: int, reason: str, ended_at: float) -> None:
        await self._close_code(close_code, reason=reason)
        REVOCATION_LATENCY.observe(max(0.0, time.time() - ended_at))

    def log_access_changed(self, role: str) -> None:
        """The user's role in the tenant changed: carry on with the new one (a lost role
        ends the session instead, which arrives as `log_ended`)."""
        if self._opening or self.grant is None:
            self._role = role
            return
        self._role = None
        self.grant = dataclasses.replace(self.grant, role=role)

    def _queue(self, item: tuple[str, Any, str]) -> None:
        if self._gone:
            return
        if self._outbox is None:
            self._outbox = deque()
        self._outbox.append(item)
        if not self._opening:
            self._drain_soon()

    def _drain_soon(self) -> None:
        if self._outbox and (self._drainer is None or self._drainer.done()):
            self._drainer = background(self._drain())

    async def _drain(self) -> None:
        """Send what the tail handed over, in order, each logged event once (a position
        at or below the last one sent was in the replay or predates the socket)."""
        try:
            while self._outbox and not self._gone:
                kind, payload, epoch = self._outbox.popleft()
                if kind == "live":
                    await self._send(payload)
                    continue
                for event in payload:
                    if event.seq <= self._last_seq:
                        continue
                    self._last_seq = event.seq
                    await self._send(event.frame(epoch))
        except Exception:  # noqa: BLE001 - the peer went while we sent; its disconnect follows
            logger.debug("send to a departed peer on %s", self.channel_name, exc_info=True)
            self._gone = True
        self._outbox = None

    # --- The timer: token expiry and the periodic session re-check -------------------
    # A timer handle per socket, not a sleeping task: a few hundred bytes instead of a
    # task and its coroutine frame, for every idle socket.
    def _schedule_check(self) -> None:
        """Wake at the token's expiry, at the session's absolute expiry (a session past it
        is over, sweep or not) or after WS_RECHECK_INTERVAL, whichever is first."""
        if self._timer is not None:
            self._timer.cancel()
        if self._gone:
            return
        interval = runtime_settings.WS_RECHECK_INTERVAL.total_seconds()
        now = time.time()
        token_left = self.grant.claims.expires_at.timestamp() - now
        session_left = self.grant.session_expires_at.timestamp() - now + 0.05
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(0.0, min(interval, token_left, session_left)), self._on_timer)

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
