"""Disconnecting one socket across real processes, on the embedded SQLite and on PostgreSQL
+ Redis alike: `manage.py sockets disconnect` in a process of its own closes that socket of
a daphne process with 4001; the session's other socket stays open, and the client resumes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
from channels.db import database_sync_to_async

from core.models import ActorType, AuditEvent
from realtime.models import Connection
from tests import factories
from tests.live import ROOT, child_env, running
from tests.sockets import close_code, connect_ready
from tests.waiting import wait_until_async

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]


def manage(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=child_env(), capture_output=True,
                          text=True, timeout=120)


def _records(session_id: str) -> list[Connection]:
    return list(Connection.objects.filter(session_id=session_id).order_by("opened_at", "id"))


async def _recorded(session_id: str, count: int) -> list[Connection]:
    async def there() -> bool:
        return len(await database_sync_to_async(_records)(session_id)) == count

    await wait_until_async(there, timeout=15, message=f"{count} connection records of the server")
    return await database_sync_to_async(_records)(session_id)


def test_manage_py_disconnects_one_socket_of_a_daphne_process(tmp_path):
    with running(tmp_path) as server:
        body = server.login(factories.make_user())

        async def scenario() -> None:
            first, _ = await connect_ready(server, body["access_token"])
            await _recorded(body["session_id"], 1)
            second, ready = await connect_ready(server, body["access_token"])
            older, _ = await _recorded(body["session_id"], 2)

            result = await asyncio.to_thread(manage, "sockets", "disconnect", str(older.pk))
            assert result.returncode == 0, result.stdout + result.stderr
            assert f"Disconnecting socket {older.pk} (session {body['session_id']}" in result.stdout
            assert await close_code(first) == 4001
            await second.send(json.dumps({"type": "ping"}))
            assert json.loads(await asyncio.wait_for(second.recv(), 10))["type"] == "pong"
            # The closed socket's record goes; the client comes back and resumes.
            await _recorded(body["session_id"], 1)
            again, resumed = await connect_ready(server, body["access_token"],
                                                 query=f"since={ready['seq']}&epoch={ready['epoch']}")
            assert resumed["recovered"] is True
            await again.close()
            await second.close()

        asyncio.run(scenario())
        audit = AuditEvent.objects.get(kind=AuditEvent.Kind.SOCKET_DISCONNECTED)
        assert audit.actor_type == ActorType.COMMAND and str(audit.session_id) == body["session_id"]


def test_manage_py_refuses_an_unknown_or_malformed_connection_id(db):
    unknown = manage("sockets", "disconnect", "987654")
    assert unknown.returncode == 1
    assert "CommandError: No live socket with connection id 987654; nothing was disconnected." in unknown.stderr
    malformed = manage("sockets", "disconnect", "abc")
    assert malformed.returncode == 1 and "'abc' is not a connection id" in malformed.stderr
    assert not AuditEvent.objects.filter(kind=AuditEvent.Kind.SOCKET_DISCONNECTED).exists()
