"""The one way events reach sockets: after the transaction commits, through the channel layer.

Group names are derived here only. The channel layer delivers at most once, so every
socket also re-checks its session on a timer; these events make the common case instant.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.utils import timezone

from core.exceptions import CloseCode

logger = logging.getLogger(__name__)


def session_group(session_id: uuid.UUID | str) -> str:
    return f"session.{session_id}"


def user_group(user_id: uuid.UUID | str) -> str:
    return f"user.{user_id}"


def _send_now(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, message)
    except Exception:  # noqa: BLE001 - a lost event is covered by the sockets' re-check timer
        logger.warning("could not publish %s to %s", message.get("type"), group, exc_info=True)


def publish_after_commit(group: str, message: dict[str, Any]) -> None:
    """Send `message` to `group` once the current transaction commits (now, outside one)."""
    transaction.on_commit(lambda: _send_now(group, message))


def session_ended_broadcast(session_id: uuid.UUID | str, *, reason: str, close_code: CloseCode) -> None:
    """Tell every socket of the session, on every process, to close with `close_code`."""
    publish_after_commit(
        session_group(session_id),
        {"type": "session.ended", "session_id": str(session_id), "reason": reason, "close_code": int(close_code)},
    )


def runtime_event_publish(session_id: uuid.UUID | str, event_type: str, data: dict[str, Any]) -> None:
    """A `runtime_event` frame for every socket of the session, after commit."""
    publish_after_commit(
        session_group(session_id),
        {"type": "runtime.event", "event_type": event_type, "data": data, "timestamp": timezone.now().isoformat()},
    )


async def runtime_event_send(session_id: uuid.UUID | str, event_type: str, data: dict[str, Any]) -> None:
    """The same frame from async code outside any transaction (agent streams), sent now."""
    layer = get_channel_layer()
    if layer is not None:
        await layer.group_send(
            session_group(session_id),
            {"type": "runtime.event", "event_type": event_type, "data": data, "timestamp": timezone.now().isoformat()},
        )
