"""Agent messages: the interface a real agent plugs into, the built-in echo agent, and the
run that streams an agent's tokens to the session's sockets.

An agent is an async generator `agent(message: AgentMessage) -> AsyncIterator[str]`
named in `SYMPHAINY["AGENT_HANDLER"]`. Each string it yields is sent at once as an
`agent.token` event; the run brackets them with `agent.started` and `agent.completed`
(or `agent.failed`), all carrying the conversation id. The conversation is kept in the
session's state surface, namespace `conversation`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from channels.db import database_sync_to_async
from django.utils.module_loading import import_string

from accounts.models import Permission
from core.caller import Caller
from core.conf import runtime_settings
from core.events import live_event_send, runtime_event_publish
from core.exceptions import InvalidRequest, VersionConflict, error_for_client
from sessions_runtime.selectors import AGENT_MESSAGE, access_require_permission
from sessions_runtime.state import CONVERSATION_NAMESPACE, state_backend, state_key, state_size

logger = logging.getLogger(__name__)
# Of the protocol: a conversation id is a client's own short name for it.
MAX_CONVERSATION_ID_LENGTH = 64
# Compare-and-set rounds before a conversation write gives up (each lost round means
# another writer of the same session state got there first).
CONVERSATION_WRITE_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class AgentMessage:
    text: str
    conversation_id: str
    session_id: uuid.UUID
    user_id: uuid.UUID
    tenant_id: uuid.UUID
    context: dict[str, Any] = field(default_factory=dict)
    history: tuple[dict[str, Any], ...] = ()


Agent = Callable[[AgentMessage], AsyncIterator[str]]


async def echo_agent(message: AgentMessage) -> AsyncIterator[str]:
    """The built-in agent: streams the message back word by word, upper-cased."""
    words = message.text.split()
    for index, word in enumerate(words):
        await asyncio.sleep(runtime_settings.AGENT_TOKEN_DELAY)
        yield word.upper() + (" " if index < len(words) - 1 else "")


def agent_message_authorize(caller: Caller) -> None:
    """An agent message writes the conversation into session state: it takes the write
    permission (a viewer may read, not talk to the agent)."""
    access_require_permission(caller=caller, permission=Permission.WRITE, what=AGENT_MESSAGE)


def agent_message_parse(message: dict[str, Any], *, caller: Caller) -> tuple[str, dict[str, Any], str]:
    """(text, context, conversation_id) from an `agent.message` frame that `caller` may
    send; InvalidRequest or PermissionDenied (an error frame) otherwise."""
    agent_message_authorize(caller)
    payload = message.get("payload")
    if not isinstance(payload, dict):
        raise InvalidRequest("'payload' must be an object with 'text'.")
    text, context = payload.get("text"), payload.get("context", {})
    longest = runtime_settings.AGENT_MESSAGE_MAX_CHARS
    if not isinstance(text, str) or not text.strip() or len(text) > longest:
        raise InvalidRequest(f"'payload.text' must be 1 to {longest} characters.")
    if not isinstance(context, dict):
        raise InvalidRequest("'payload.context' must be an object.")
    conversation_id = message.get("conversation_id") or payload.get("conversation_id") or str(uuid.uuid4())
    if not isinstance(conversation_id, str) or len(conversation_id) > MAX_CONVERSATION_ID_LENGTH:
        raise InvalidRequest(f"'conversation_id' must be a string of at most {MAX_CONVERSATION_ID_LENGTH} characters.")
    return text, context, conversation_id


def conversation_history(*, tenant_id: uuid.UUID, session_id: uuid.UUID, conversation_id: str) -> tuple[dict, ...]:
    key = state_key(tenant_id=tenant_id, session_id=session_id, namespace=CONVERSATION_NAMESPACE)
    return tuple(state_backend().read(key).data.get(conversation_id, []))


def _conversations_bounded(data: dict[str, Any], *, current: str, limit: int) -> dict[str, Any] | None:
    """Drop the least recently used conversations, then the current one's oldest turns,
    until the document fits STATE_MAX_BYTES; None when even the newest exchange does not.
    Recency is each conversation's last `at`: jsonb keeps no key order to go by."""
    def last_used(conversation_id: str) -> float:
        turns = data[conversation_id]
        return float(turns[-1].get("at", 0)) if turns and isinstance(turns[-1], dict) else 0.0

    others = sorted((cid for cid in data if cid != current), key=last_used)
    while state_size(data) > limit and others:
        del data[others.pop(0)]
    while state_size(data) > limit and len(data[current]) > 2:
        data[current] = data[current][2:]  # one user turn and its reply at a time
    return data if state_size(data) <= limit else None


def conversation_append(
    *, tenant_id: uuid.UUID, session_id: uuid.UUID, conversation_id: str, turns: list[dict[str, Any]]
) -> None:
    """Append turns with compare-and-set, retrying when another writer got there first.
    The document stays within STATE_MAX_BYTES like every other state write."""
    key = state_key(tenant_id=tenant_id, session_id=session_id, namespace=CONVERSATION_NAMESPACE)
    backend = state_backend()
    at = time.time()
    stamped = [{**turn, "at": at} for turn in turns]
    for _ in range(CONVERSATION_WRITE_ATTEMPTS):
        document = backend.read(key)
        data = dict(document.data)
        data[conversation_id] = (list(data.get(conversation_id, [])) + stamped)[-runtime_settings.AGENT_HISTORY_MAX_TURNS:]
        bounded = _conversations_bounded(data, current=conversation_id, limit=runtime_settings.STATE_MAX_BYTES)
        if bounded is None:
            logger.warning("conversation %s: one exchange exceeds STATE_MAX_BYTES; not saved", conversation_id)
            return
        try:
            backend.write(key, bounded, expected_version=document.version)
            return
        except VersionConflict:
            continue
    logger.warning("conversation %s not saved after repeated conflicts", conversation_id)


async def agent_message_run(*, caller: Caller, text: str, context: dict[str, Any], conversation_id: str) -> None:
    """Run the configured agent in the caller's session and stream its tokens to the
    session's sockets."""
    agent_message_authorize(caller)  # before any event: a refused message leaves no trace
    session_id, user_id, tenant_id = caller.session_id, caller.user_id, caller.tenant_id
    message_id = str(uuid.uuid4())
    base = {"conversation_id": conversation_id, "message_id": message_id}
    await live_event_send(session_id, "agent.started", base)
    tokens: list[str] = []
    try:
        history = await database_sync_to_async(conversation_history)(
            tenant_id=tenant_id, session_id=session_id, conversation_id=conversation_id
        )
        agent: Agent = import_string(runtime_settings.AGENT_HANDLER)
        message = AgentMessage(
            text=text, conversation_id=conversation_id, session_id=session_id,
            user_id=user_id, tenant_id=tenant_id, context=context, history=history,
        )
        async for token in agent(message):
            tokens.append(token)
            await live_event_send(session_id, "agent.token", {**base, "index": len(tokens) - 1, "token": token})
        reply = "".join(tokens)
        await database_sync_to_async(conversation_append)(
            tenant_id=tenant_id, session_id=session_id, conversation_id=conversation_id,
            turns=[{"role": "user", "text": text}, {"role": "agent", "text": reply}],
        )
    except Exception as exc:  # noqa: BLE001 - an agent's failure is reported, not raised
        logger.warning("agent failed in session %s", session_id, exc_info=True)
        await database_sync_to_async(runtime_event_publish)(session_id, "agent.failed", {**base, "error": error_for_client(exc, generic="The agent failed.")})
        return
    await database_sync_to_async(runtime_event_publish)(session_id, "agent.completed", {**base, "text": reply, "tokens": len(tokens)})
