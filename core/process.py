"""This process's identity, as written into connection records and executions."""

from __future__ import annotations

import os
import socket
import uuid

from core.conf import runtime_settings

_instance_id: str | None = None


def server_instance_id() -> str:
    """This process's name in connection records: the SERVER_INSTANCE setting, or
    host:pid plus a random suffix so a restarted process never reuses a dead one's name."""
    global _instance_id
    if _instance_id is None:
        configured = runtime_settings.SERVER_INSTANCE
        _instance_id = configured or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    return _instance_id
