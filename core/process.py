"""This process's identity, as written into connection records and executions."""

from __future__ import annotations

import os
import socket
import uuid

from core.conf import runtime_settings

_instance_id: str | None = None


def server_instance_id() -> str:
    """This process's name in connection records and executions: the SERVER_INSTANCE
    setting (else host:pid), plus a random suffix, so that a process restarted under the
    same name (systemd's `Restart=on-failure` after a crash) never renews a dead one's
    lease: the dead one's records and executions must go stale to be picked up."""
    global _instance_id
    if _instance_id is None:
        configured = runtime_settings.SERVER_INSTANCE or f"{socket.gethostname()}:{os.getpid()}"
        _instance_id = f"{configured}:{uuid.uuid4().hex[:8]}"
    return _instance_id
