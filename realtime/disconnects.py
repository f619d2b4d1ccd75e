"""Disconnecting one socket: the one service the admin and `manage.py sockets disconnect`
call. The close travels as an event of the socket's session (the session event log,
docs/architecture.md#the-session-event-log), so whichever process holds the socket closes
it, as it closes a session's sockets at its end; the session and its other sockets carry on.
"""

from __future__ import annotations

from django.db import transaction

from core.audit import audit_record
from core.caller import Caller
from core.events import socket_disconnect_record
from core.exceptions import CloseCode
from core.models import AuditEvent
from realtime.models import Connection


@transaction.atomic
def socket_disconnect(*, connection_id: int, caller: Caller) -> Connection | None:
    """Close the socket of this connection record with 4001 (`CloseCode.DISCONNECTED`: the
    client may come back and resume; ending the session keeps it out), audited with the
    actor and their address. Returns the record, or None when there is none (the socket
    has closed, or its process died and the record was swept): nothing is recorded then.
    Asking twice before the socket has closed asks twice; the socket closes once."""
    connection = Connection.objects.select_related("session").filter(pk=connection_id).first()
    if connection is None:
        return None
    socket_disconnect_record(connection.session_id, channel_name=connection.channel_name,
                             close_code=CloseCode.DISCONNECTED)
    audit_record(
        kind=AuditEvent.Kind.SOCKET_DISCONNECTED, caller=caller, user_id=connection.user_id,
        tenant_id=connection.session.tenant_id, session_id=connection.session_id,
        data={
            "connection_id": connection.pk, "server_instance": connection.server_instance,
            "socket_address": connection.client_address, "close_code": int(CloseCode.DISCONNECTED),
        },
    )
    return connection
