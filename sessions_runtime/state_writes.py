"""Reading and writing a session's state through the configured backend: the write rule
(the owner's write permission, an active session, STATE_MAX_BYTES, compare-and-set on the
version) and its announcement to the session's sockets."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from core.caller import Caller
from core.conf import runtime_settings
from core.events import runtime_event_publish
from core.exceptions import RequestTooLarge, SessionNotWritable, VersionConflict
from sessions_runtime.models import RuntimeSession
from sessions_runtime.selectors import STATE_WRITE, access_require_write
from sessions_runtime.state import StateDocument, state_backend, state_key, state_size

# The event announcing a new version of a session's state.
SESSION_STATE_CHANGED = "session.state_changed"


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge, null removes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = _merge_patch(result.get(name), value)
    return result


def session_state_read(*, session: RuntimeSession) -> StateDocument:
    return state_backend().read(state_key(tenant_id=session.tenant_id, session_id=session.pk))


@transaction.atomic
def session_state_write(
    *, caller: Caller, session: RuntimeSession, data: dict[str, Any], expected_version: int, merge: bool = False
) -> StateDocument:
    """Replace (or merge-patch) the session's state if `expected_version` is current;
    announce the new version to the session's sockets after commit."""
    access_require_write(caller=caller, owner_id=session.user_id, what=STATE_WRITE)
    if not session.is_usable():
        raise SessionNotWritable()
    key = state_key(tenant_id=session.tenant_id, session_id=session.pk)
    backend = state_backend()
    if merge:
        current = backend.read(key)
        if current.version != expected_version:
            raise VersionConflict()
        data = _merge_patch(current.data, data)
    limit = runtime_settings.STATE_MAX_BYTES
    if state_size(data) > limit:
        raise RequestTooLarge(f"Session state is limited to {limit} bytes of JSON.", details={"limit_bytes": limit})
    document = backend.write(key, data, expected_version=expected_version)
    runtime_event_publish(session.pk, SESSION_STATE_CHANGED, {"session_id": str(session.pk), "version": document.version})
    return document
