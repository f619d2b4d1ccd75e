"""File references of a session: metadata only, the bytes live elsewhere (`location`)."""

from __future__ import annotations

from django.db.models import QuerySet

from core.caller import Caller
from core.exceptions import NotFound, SessionNotWritable
from core.ids import uuid_parse
from sessions_runtime.models import FileReference, RuntimeSession
from sessions_runtime.selectors import FILE_ADD, access_require_write


def file_reference_add(
    *, caller: Caller, session: RuntimeSession, name: str, size: int, sha256: str, content_type: str, location: str
) -> FileReference:
    """Record a file's metadata in a session; the bytes stay where `location` says."""
    access_require_write(caller=caller, owner_id=session.user_id, what=FILE_ADD)
    if not session.is_usable():
        raise SessionNotWritable()
    return FileReference.objects.create(
        session=session, tenant_id=session.tenant_id, user_id=caller.user_id,
        name=name, size=size, sha256=sha256, content_type=content_type, location=location,
    )


def file_references_for_session(*, session: RuntimeSession) -> QuerySet[FileReference]:
    return FileReference.objects.filter(session_id=session.pk, tenant_id=session.tenant_id)


def file_reference_get(*, session: RuntimeSession, file_id: object) -> FileReference:
    parsed = uuid_parse(file_id)
    reference = file_references_for_session(session=session).filter(pk=parsed).first() if parsed else None
    if reference is None:
        raise NotFound("File not found.")
    return reference
