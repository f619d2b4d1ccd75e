"""Ids from untrusted input."""

from __future__ import annotations

import uuid

MAX_ID_LENGTH = 64  # a UUID in any of its spellings is far shorter


def uuid_parse(raw: object) -> uuid.UUID | None:
    """A UUID (session, execution, file id...) from untrusted input, or None when it is not one."""
    if isinstance(raw, uuid.UUID):
        return raw
    if not isinstance(raw, str) or len(raw) > MAX_ID_LENGTH:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None
