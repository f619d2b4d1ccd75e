import pytest
from channels.db import database_sync_to_async
from rest_framework.test import APIClient

from tests import factories
from tests.realtime.conftest import make_socket

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def _login():
    user = factories.make_user()
    return factories.login(APIClient(), user)


async def test_ready_then_ping():
    body = await _login()
    sock = await make_socket(body["access_token"]).open()
    assert sock.subprotocol == "symphainy.v1"
    ready = await sock.receive()
    assert ready["type"] == "session.ready" and ready["session_id"] == body["session_id"]
    await sock.send({"type": "ping"})
    assert (await sock.receive()) == {"type": "pong"}
    await sock.close()


async def test_no_token_closes_4401():
    sock = await make_socket(None).open()
    assert await sock.receive_close() == 4401
