"""The socket's frames as JSON Schemas: one table beside `realtime.protocol.FRAMES`.

Every client frame type of `FRAMES`, every server frame and every event type the domain
declares has its schema here; `realtime.asyncapi` builds the AsyncAPI document from this
table, the REST serializers' own schemas (drf-spectacular's components) and the domain's
constants. Server frames are closed (`additionalProperties: false`), so a field added to a
frame without its schema fails the tests' frame check (tests/conftest.py). Frames and
events: docs/protocol.md.
"""

from __future__ import annotations

from typing import Any

from core.exceptions import CloseCode
from realtime.protocol import MAX_ID_LENGTH, MAX_TYPE_LENGTH
from sessions_runtime.agents import MAX_CONVERSATION_ID_LENGTH
from sessions_runtime.answers import (
    AGENT_CANCELLED, AGENT_COMPLETED, AGENT_FAILED, AGENT_SNAPSHOT, AGENT_STARTED, AGENT_TOKEN, FAILED_ERROR,
    FAILED_INTERRUPTED, FAILED_SESSION_ENDED,
)
from sessions_runtime.executions import EXECUTION_EVENTS
from sessions_runtime.state_writes import SESSION_STATE_CHANGED
from sessions_runtime.submission import MAX_IDEMPOTENCY_KEY_LENGTH

# The REST serializers' schemas, by their names in /openapi.json; `realtime.asyncapi` copies
# them into the AsyncAPI document under the same names.
EXECUTION = "#/components/schemas/Execution"
INTENT_ACCEPTED = "#/components/schemas/IntentAccepted"
INTENT_TYPE = "#/components/schemas/IntentTypeEnum"
OPENAPI_COMPONENTS = ("Execution", "IntentAccepted", "IntentTypeEnum")

UUID = {"type": "string", "format": "uuid"}
TIME = {"type": "string", "format": "date-time"}
TEXT = {"type": "string"}
COUNT = {"type": "integer", "minimum": 0}
FRAME_ID = {
    "description": f"The client's own id of a frame: a string of up to {MAX_ID_LENGTH} characters, or an integer. "
                   "An `error` frame answering the frame names it.",
    "oneOf": [{"type": "string", "maxLength": MAX_ID_LENGTH}, {"type": "integer"}],
}
CONVERSATION_ID = {"type": "string", "maxLength": MAX_CONVERSATION_ID_LENGTH}


def closed(title: str, description: str, required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict:
    """An object schema with exactly these properties (`required` first)."""
    return {
        "title": title, "description": description, "type": "object",
        "properties": {**required, **(optional or {})}, "required": list(required), "additionalProperties": False,
    }


def frame(type_: str, title: str, description: str, required: dict[str, Any] | None = None,
          optional: dict[str, Any] | None = None) -> dict:
    return closed(title, description, {"type": {"const": type_}, **(required or {})}, optional)


def client_frame(type_: str, title: str, description: str, required: dict[str, Any] | None = None,
                 optional: dict[str, Any] | None = None) -> dict:
    return frame(type_, title, description, required, {**(optional or {}), "id": FRAME_ID})


# --- Client → server: one per type of `FRAMES` ------------------------------------------------
CLIENT_FRAMES: dict[str, dict[str, Any]] = {
    "ping": client_frame("ping", "Ping", "Activity: answered with `pong`; pushes the session's idle expiry."),
    "auth.refresh": client_frame(
        "auth.refresh", "AuthRefresh",
        "A new access token for the open socket (same user, tenant and session): answered with `auth.refreshed`.",
        {"access_token": TEXT}),
    "intent.submit": client_frame(
        "intent.submit", "IntentSubmit", "Submit an intent in the socket's session: answered with `intent.accepted`.",
        {"intent_type": {"$ref": INTENT_TYPE}},
        {"parameters": {"type": "object"},
         "idempotency_key": {"type": ["string", "null"], "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY_LENGTH}}),
    "agent.message": client_frame(
        "agent.message", "AgentMessage",
        "Ask the agent: `agent.started`, `agent.token`s and one terminal event follow, on every socket of the session.",
        {"payload": closed("AgentMessagePayload", "What the agent is asked.", {"text": {"type": "string", "minLength": 1}},
                           {"context": {"type": "object"}, "conversation_id": CONVERSATION_ID})},
        {"conversation_id": CONVERSATION_ID}),
    "agent.cancel": client_frame(
        "agent.cancel", "AgentCancel", "Stop an answer of the session: `agent.cancelled` follows.",
        {"message_id": UUID}),
}

# --- Server → client frames, other than the runtime events ------------------------------------
SERVER_FRAMES: dict[str, dict[str, Any]] = {
    "session.ready": frame(
        "session.ready", "SessionReady",
        "The first frame of an accepted socket: what it may talk to, and where the session's event log stands.",
        {"session_id": UUID, "user_id": UUID, "tenant_id": UUID, "expires_at": TIME, "token_expires_at": TIME,
         "heartbeat_s": {"type": "integer", "minimum": 1, "description": "Send `ping` this often."},
         "seq": {**COUNT, "description": "The session's latest event position."},
         "epoch": {"type": "string", "description": "The log's name; a resume from another epoch is not recovered."}},
        {"recovered": {"type": "boolean", "description": "Present when the client asked to resume (`?since=`): "
                       "whether every missed event follows."}}),
    "pong": frame("pong", "Pong", "The answer to `ping`."),
    "server.restart": frame(
        "server.restart", "ServerRestart",
        "The last frame before a draining server's 1012: when to reconnect, a delay within this socket's share "
        "of the drain window.", {"reconnect_after_ms": {"type": "integer", "minimum": 0, "maximum": 1000}}),
    "auth.refreshed": frame("auth.refreshed", "AuthRefreshed", "The socket now carries the new token.",
                            {"token_expires_at": TIME}),
    # `intent.accepted` is the REST answer's serializer plus these: see realtime.asyncapi.
    "intent.accepted": frame("intent.accepted", "IntentAcceptedFrame", "The intent is recorded; its execution's events follow.",
                             {"replayed": {"type": "boolean", "description": "An idempotent repeat's first answer."}}),
    "error": frame(
        "error", "ErrorFrame", "A client frame was refused; the socket stays open.",
        {"error": {"$ref": "#/components/schemas/ErrorCode"}, "message": TEXT},
        {"details": {"description": "More about it, when there is more."},
         "in_reply_to": {"type": "string", "maxLength": MAX_TYPE_LENGTH, "description": "The refused frame's type."},
         "id": FRAME_ID}),
}

# --- Runtime events: `data` of each event type; replayable ones carry `seq` and `epoch` ------
_ANSWER = {"conversation_id": CONVERSATION_ID, "message_id": UUID}
_EXECUTION_EVENT = {"$ref": "#/components/schemas/ExecutionEvent"}
EVENTS: dict[str, tuple[bool, dict[str, Any]]] = {
    **{kind: (True, _EXECUTION_EVENT) for kind in EXECUTION_EVENTS},
    AGENT_STARTED: (True, closed("AgentStarted", "An answer began (recorded).", _ANSWER)),
    AGENT_TOKEN: (False, closed("AgentToken", "One token of an answer, live only; `index` counts from 0.",
                                {**_ANSWER, "index": COUNT, "token": TEXT})),
    AGENT_SNAPSHOT: (False, closed(
        "AgentSnapshot", "An answer in flight as a socket opens: `text` plus the tokens from `next_index` on is "
        "the whole answer.", {**_ANSWER, "question": TEXT, "text": TEXT, "next_index": COUNT})),
    AGENT_COMPLETED: (True, closed("AgentCompleted", "The whole answer.", {**_ANSWER, "text": TEXT, "tokens": COUNT})),
    AGENT_FAILED: (True, closed(
        "AgentFailed", "The answer failed: the agent raised (`error`), its process stopped (`interrupted`), or the "
        "session ended.", {**_ANSWER, "error": closed("AgentError", "What failed.", {"type": TEXT, "message": TEXT}),
                          "reason": {"enum": [FAILED_ERROR, FAILED_INTERRUPTED, FAILED_SESSION_ENDED]}})),
    AGENT_CANCELLED: (True, closed("AgentCancelled", "The answer was cancelled: the text so far.",
                                   {**_ANSWER, "text": TEXT})),
    SESSION_STATE_CHANGED: (True, closed("SessionStateChanged", "The session's state has a new version.",
                                         {"session_id": UUID, "version": {"type": "integer", "minimum": 1}})),
}


def event_frame(event_type: str) -> dict[str, Any]:
    """The `runtime_event` frame schema of one event type."""
    replayable, data = EVENTS[event_type]
    position = {"seq": {"type": "integer", "minimum": 1, "description": "The event's position in the session's log."},
                "epoch": {"type": "string", "description": "The log's name."}} if replayable else {}
    title = "Event" + "".join(part.capitalize() for part in event_type.replace("_", ".").split("."))
    kind = "Recorded and replayable on resume." if replayable else "Live only: no `seq`, never replayed."
    schema = frame("runtime_event", title, f"`{event_type}`. {kind}",
                   {"event_type": {"const": event_type}, "data": data, "timestamp": TIME, **position})
    schema["x-replayable"] = replayable
    return schema


# --- Close codes, and what a client does on each (the table of docs/protocol.md) --------------
# `action`: refresh (refresh tokens over HTTP, reconnect once; a second 4401 is final), stop
# (never retry: log in again), backoff (reconnect with backoff), slow (backoff, waiting at
# least the client's slow-down delay), restart (backoff, first attempt soon, and resume).
CLOSE_CODES: list[dict[str, Any]] = [
    {"code": CloseCode.UNAUTHENTICATED, "action": "refresh",
     "meaning": "No token, a bad or expired one, a user inactive, or a handshake refused for permission."},
    {"code": CloseCode.SESSION_NOT_FOUND, "action": "stop",
     "meaning": "The session is unknown, malformed, or another user's or tenant's."},
    {"code": CloseCode.SESSION_ENDED, "action": "stop",
     "meaning": "The session has ended or expired (logout, DELETE, admin, expiry): log in again."},
    {"code": CloseCode.DISCONNECTED, "action": "backoff",
     "meaning": "An operator closed this one socket; the session is still valid: reconnect and resume."},
    {"code": CloseCode.RATE_LIMITED, "action": "slow",
     "meaning": "Too many sockets for this user, or too many messages."},
    {"code": CloseCode.MESSAGE_TOO_BIG, "action": "backoff", "meaning": "A frame over WS_MAX_MESSAGE_BYTES."},
    {"code": CloseCode.SERVER_ERROR, "action": "backoff", "meaning": "A server error."},
    {"code": CloseCode.SERVICE_RESTART, "action": "restart",
     "meaning": "The server process is stopping (a deploy, a restart): reconnect and resume."},
    {"code": CloseCode.TRY_AGAIN_LATER, "action": "slow", "meaning": "The database is down: try again later."},
    {"code": 1002, "name": "PROTOCOL_ERROR", "action": "backoff", "meaning": "A malformed WebSocket frame."},
    {"code": 1007, "name": "INVALID_PAYLOAD", "action": "backoff", "meaning": "Invalid UTF-8 in a text frame."},
    {"code": CloseCode.NORMAL, "action": "backoff", "meaning": "A normal close."},
]


def close_codes() -> list[dict[str, Any]]:
    """The close codes as the document lists them: code, name, meaning, action."""
    return [{"code": int(row["code"]), "name": row.get("name") or CloseCode(row["code"]).name,
             "meaning": row["meaning"], "action": row["action"]} for row in CLOSE_CODES]
