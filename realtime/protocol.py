"""The frames of the protocol: those a client may send, each checked, parsed, then
answered by one service; and the server's own `session.ready` and `server.restart`.

`frame_receive` checks a frame (size, rate, JSON, shape), finds its type in `FRAMES` (the
allowlist: a client's type never names anything else), paces the session touch and calls
the type's handler. A handler parses with the domain's own parser, calls one service and
sends the result; what any step raises is translated by the consumer.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Awaitable, Callable, Protocol

from channels.db import database_sync_to_async

from accounts.tokens import ACCESS, token_decode
from core.conf import runtime_settings
from core.events import Replay
from core.exceptions import (
    BinaryNotSupported,
    InvalidJson,
    ProtocolError,
    RateLimited,
    RequestTooLarge,
    UnknownMessageType,
)
from core.jsonlimits import frame_parse
from core.limits import TokenBucket
from core.metrics import SOCKET_REFUSALS
from realtime.grants import SocketGrant, socket_recheck
from sessions_runtime.agents import agent_message_cancel, agent_message_parse, agent_message_start
from sessions_runtime.services import session_touch, session_touch_due
from sessions_runtime.submission import intent_submit, intent_submit_parse



class FrameSocket(Protocol):
    """What the table uses of an open socket (`realtime.socket.OpenSocket`, which calls it)."""

    grant: SocketGrant
    bucket: TokenBucket | None
    client_address: str
    transport: Any
    last_seen: datetime

    def refreshed(self, grant: SocketGrant) -> None: ...

MAX_TYPE_LENGTH = 64
MAX_ID_LENGTH = 64


async def frame_receive(socket: FrameSocket, text_data: str | None, bytes_data: bytes | None, reply_to: dict[str, Any]) -> None:
    """Handle one client frame. `reply_to` is filled with what an error frame answering it
    names: the frame's type and the client's own `id`, once they are known."""
    limit = runtime_settings.WS_MAX_MESSAGE_BYTES
    size = len(bytes_data) if bytes_data is not None else len((text_data or "").encode("utf-8"))
    if size > limit:
        raise RequestTooLarge(f"Frames are limited to {limit} bytes.")
    if socket.bucket is not None and not socket.bucket.take():
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
    reply_to["in_reply_to"] = message["type"][:MAX_TYPE_LENGTH]
    frame_id = message.get("id")
    if (isinstance(frame_id, str) and len(frame_id) <= MAX_ID_LENGTH) or (
        isinstance(frame_id, int) and not isinstance(frame_id, bool)
    ):
        reply_to["id"] = frame_id
    handler = FRAMES.get(message["type"])
    if handler is None:
        raise UnknownMessageType(details={"type": message["type"][:MAX_TYPE_LENGTH]})
    await _touch(socket)
    await handler(socket, message)


async def _touch(socket: FrameSocket) -> None:
    """Activity pushes the session's idle expiry; a thread hop only when a touch is due."""
    if session_touch_due(socket.last_seen):
        socket.last_seen = await database_sync_to_async(session_touch)(
            session_id=socket.grant.session_id, last_seen_at=socket.last_seen
        ) or socket.last_seen


async def _send(socket: FrameSocket, frame: dict[str, Any]) -> None:
    await socket.transport.send_frame(frame)


async def ping(socket: FrameSocket, message: dict[str, Any]) -> None:
    await _send(socket, {"type": "pong"})


async def auth_refresh(socket: FrameSocket, message: dict[str, Any]) -> None:
    """A new access token on the open socket: the same user, tenant and session, checked."""
    claims = token_decode(message.get("access_token"), expected_type=ACCESS)
    socket.refreshed(await database_sync_to_async(socket_recheck)(grant=socket.grant, claims=claims))
    await _send(socket, {"type": "auth.refreshed", "token_expires_at": claims.expires_at.isoformat()})


async def submit_intent(socket: FrameSocket, message: dict[str, Any]) -> None:
    submission = await database_sync_to_async(intent_submit)(
        caller=socket.grant.caller(socket.client_address),
        session_id=socket.grant.session_id,
        **intent_submit_parse(message),
    )
    await _send(socket, {"type": "intent.accepted", **submission.response, "replayed": submission.replayed})


async def agent_message(socket: FrameSocket, message: dict[str, Any]) -> None:
    """Start an answer of the session (it goes on when this socket closes); every socket
    of the session hears of it, this one too, from `agent.started` on."""
    caller = socket.grant.caller(socket.client_address)
    text, context, conversation_id = agent_message_parse(message, caller=caller)
    await agent_message_start(caller=caller, text=text, context=context, conversation_id=conversation_id)


async def agent_cancel(socket: FrameSocket, message: dict[str, Any]) -> None:
    """Stop an answer of the session, on whatever process runs it; `agent.cancelled` follows."""
    await agent_message_cancel(caller=socket.grant.caller(socket.client_address), message_id=message.get("message_id"))


Handler = Callable[[FrameSocket, dict[str, Any]], Awaitable[None]]
FRAMES: dict[str, Handler] = {
    "ping": ping,
    "auth.refresh": auth_refresh,
    "intent.submit": submit_intent,
    "agent.message": agent_message,
    "agent.cancel": agent_cancel,
}


def session_ready(grant: SocketGrant, replay: Replay) -> dict[str, Any]:
    """The first frame of an accepted socket: what it may talk to, and where the log stands."""
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
    return ready


def server_restart(reconnect_after_ms: int) -> dict[str, Any]:
    """The last frame before a drain's 1012 (daphne drops close reasons, so the hint travels
    as a frame): when to reconnect, a delay within this socket's share of the drain window."""
    return {"type": "server.restart", "reconnect_after_ms": reconnect_after_ms}


def frame_dumps(frame: dict[str, Any]) -> str:
    """A server frame as sent: compact JSON."""
    return json.dumps(frame, separators=(",", ":"))
