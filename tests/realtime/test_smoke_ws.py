import pytest

from tests.sockets import login_new_user, make_socket

pytestmark = pytest.mark.django_db(transaction=True)


async def test_ready_then_ping():
    _, body = await login_new_user()
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
