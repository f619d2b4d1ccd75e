"""A drain deletes its process's connection records at once (`ConnectionRegistry.leave`),
and the closes that follow write nothing: in a 10,000-socket drain their deletes by name
were most of the database thread's time, holding the GIL the closes needed."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from core.process import server_instance_id
from realtime import presence
from realtime.models import Connection
from realtime.presence import connection_record, registry
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


async def test_after_leaving_closes_write_nothing_and_the_records_are_gone(monkeypatch):
    session = await database_sync_to_async(factories.make_session)(await database_sync_to_async(factories.make_user)())
    names = [f"test.leave.{n}" for n in range(3)]
    for name in names:
        registry().opened(connection_record(session_id=session.pk, user_id=session.user_id, channel_name=name,
                                            client_address="", user_agent=""))
    await registry().leave()  # what is pending is written first, then every record goes
    mine = database_sync_to_async(lambda: Connection.objects.filter(server_instance=server_instance_id()).count())
    assert await mine() == 0
    writes = []
    monkeypatch.setattr(presence, "_apply", lambda opened, closed: writes.append((opened, closed)))
    for name in names:
        registry().closed(name)
    await registry().flush()
    assert writes == []
