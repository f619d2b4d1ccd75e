"""Disconnecting one socket (`realtime.disconnects.socket_disconnect`) through the full ASGI
app: that socket closes with 4001, the session's other sockets and the session carry on, the
actor and their address are audited, and a resume afterwards loses nothing."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from core.caller import Caller
from core.events import SOCKET_DISCONNECT
from core.models import ActorType, AuditEvent, SessionEvent
from realtime.disconnects import socket_disconnect
from realtime.models import Connection
from realtime.presence import registry
from sessions_runtime.models import RuntimeSession, SessionStatus
from tests.sockets import login_new_user, open_ready
from tests.waiting import wait_until_async

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def _records(session_id: str) -> list[Connection]:
    return list(Connection.objects.filter(session_id=session_id).order_by("opened_at", "id"))


async def _recorded(session_id: str, count: int) -> list[Connection]:
    await registry().flush()
    await wait_until_async(lambda: _count(session_id, count), message=f"{count} connection records")
    return await _records(session_id)


async def _count(session_id: str, count: int) -> bool:
    return len(await _records(session_id)) == count


async def test_one_socket_closes_with_4001_and_the_rest_carry_on():
    user, body = await login_new_user()
    first, _ = await open_ready(body["access_token"])
    await _recorded(body["session_id"], 1)
    second, ready = await open_ready(body["access_token"])
    older, newer = await _recorded(body["session_id"], 2)
    operator = Caller.admin(user_id=user.pk, client_address="2001:db8::7")

    returned = await database_sync_to_async(socket_disconnect)(connection_id=older.pk, caller=operator)

    assert returned is not None and returned.pk == older.pk
    assert await first.receive_close(timeout=5) == 4001
    await second.send({"type": "ping"})
    assert (await second.receive())["type"] == "pong"
    session = await database_sync_to_async(RuntimeSession.objects.get)(pk=body["session_id"])
    assert session.status == SessionStatus.ACTIVE
    audit = await database_sync_to_async(AuditEvent.objects.get)(kind=AuditEvent.Kind.SOCKET_DISCONNECTED)
    assert (audit.actor_type, audit.actor_id, audit.client_address) == (ActorType.ADMIN, user.pk, "2001:db8::7")
    assert str(audit.session_id) == body["session_id"] and audit.tenant_id == session.tenant_id
    assert audit.data == {"connection_id": older.pk, "server_instance": older.server_instance,
                          "socket_address": older.client_address, "close_code": 4001}
    # The client comes back and resumes: the control event took a position but is no frame.
    resumed, again = await open_ready(body["access_token"], query=f"since={ready['seq']}&epoch={ready['epoch']}")
    assert again["recovered"] is True and again["seq"] == ready["seq"] + 1
    assert await resumed.nothing()
    await resumed.close()
    await second.close()


async def test_a_socket_already_gone_is_not_recorded_or_audited():
    user, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    (record,) = await _recorded(body["session_id"], 1)
    await sock.close()
    await _recorded(body["session_id"], 0)
    assert await database_sync_to_async(socket_disconnect)(connection_id=record.pk, caller=Caller.command()) is None
    assert not await database_sync_to_async(SessionEvent.objects.filter(kind=SOCKET_DISCONNECT).exists)()
    assert not await database_sync_to_async(AuditEvent.objects.filter(kind=AuditEvent.Kind.SOCKET_DISCONNECTED).exists)()
