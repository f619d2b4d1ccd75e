"""The socket protocol through the full ASGI application (origin, route and credentials,
consumer), with WebsocketCommunicator."""

from __future__ import annotations

import asyncio
import gc
import types
import uuid
from datetime import timedelta

import jwt
import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Membership, Role
from accounts.services import membership_remove, tenant_suspend, user_deactivate
from accounts.tokens import tokens_issue
from core.caller import Caller
from core.models import ActorType
from core.tasks import background_tasks
from realtime.handshake import SocketCredentials
from realtime.models import Connection
from realtime.presence import registry
from sessions_runtime.access import access_cache_get
from sessions_runtime.models import EndReason, RuntimeSession, SessionStatus
from sessions_runtime.services import session_end, sessions_expire_due
from symphainy.asgi import application
from tests import factories
from tests.sockets import login_new_user, make_socket, open_ready
from tests.waiting import wait_until_async

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def api_call(method: str, path: str, token: str, data=None):
    client = factories.bearer(APIClient(), token)
    response = getattr(client, method)(path, data, format="json") if data is not None else getattr(client, method)(path)
    return response.status_code, (response.json() if response.content else None)


# --- Handshake -----------------------------------------------------------------------
async def test_handshakes_of_one_session_arriving_together_make_one_database_check(monkeypatch):
    """A restarted process's clients come back at once: their handshakes wait for the first
    one's check and take the snapshot it leaves, instead of a query each on the one
    thread-sensitive thread (bench/README.md, the rolling restart)."""
    from realtime import handshake
    from sessions_runtime.access import access_cache_clear

    _, body = await login_new_user()
    access_cache_clear()
    checks = []
    authorize = handshake.sockets_authorize

    def counted(requests):
        checks.extend(session_id for _, session_id in requests)
        return authorize(requests)

    monkeypatch.setattr(handshake, "sockets_authorize", counted)
    sockets = await asyncio.gather(*(make_socket(body["access_token"]).open() for _ in range(5)))
    frames = await asyncio.gather(*(sock.receive() for sock in sockets))
    assert [frame["type"] for frame in frames] == ["session.ready"] * 5
    assert len(checks) == 1, checks
    await asyncio.gather(*(sock.close() for sock in sockets))


@pytest.mark.parametrize("transport", ["subprotocol", "header", "access_token", "session_token"])
async def test_each_transport_is_accepted(transport):
    user, body = await login_new_user()
    sock, ready = await open_ready(body["access_token"], transport=transport)
    assert ready["session_id"] == body["session_id"]
    assert ready["user_id"] == str(user.pk)
    assert ready["tenant_id"] == body["tenant_id"]
    assert set(ready) == {
        "type", "session_id", "user_id", "tenant_id", "expires_at", "token_expires_at", "heartbeat_s", "seq", "epoch"
    }
    assert sock.subprotocol == ("symphainy.v1" if transport == "subprotocol" else None)
    await sock.close()


async def test_session_ready_is_the_first_frame_and_records_the_connection():
    user, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    await registry().flush()
    rows = await database_sync_to_async(lambda: list(Connection.objects.values_list("session_id", "user_id")))()
    assert rows == [(uuid.UUID(body["session_id"]), user.pk)]
    await sock.close()
    await registry().flush()
    assert await database_sync_to_async(Connection.objects.count)() == 0


async def test_records_are_written_in_bulk_after_the_flush_interval(settings):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "WS_CONNECTION_FLUSH_INTERVAL": timedelta(milliseconds=100)}
    _, body = await login_new_user()
    socks = [(await open_ready(body["access_token"]))[0] for _ in range(3)]
    await wait_until_async(database_sync_to_async(lambda: Connection.objects.count() == 3), message="three records")
    await socks[0].close()
    await wait_until_async(database_sync_to_async(lambda: Connection.objects.count() == 2), message="one record gone")
    for sock in socks[1:]:
        await sock.close()


async def test_a_handshake_writes_no_record_of_its_own(settings):
    """Records wait for the flush (one bulk write), whatever the machine's speed: with an
    interval no test outlasts, nothing is written until the flush is asked for. (Asserting
    "nothing yet" 100 ms into the interval failed on a loaded machine.)"""
    settings.SYMPHAINY = {**settings.SYMPHAINY, "WS_CONNECTION_FLUSH_INTERVAL": timedelta(hours=1)}
    _, body = await login_new_user()
    socks = [(await open_ready(body["access_token"]))[0] for _ in range(3)]
    assert await database_sync_to_async(Connection.objects.count)() == 0
    await registry().flush()
    assert await database_sync_to_async(Connection.objects.count)() == 3
    for sock in socks:
        await sock.close()


async def test_a_socket_closed_before_the_flush_never_touches_the_table():
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    await sock.close()
    assert not registry()._opened and not registry()._closed
    await registry().flush()
    assert await database_sync_to_async(Connection.objects.count)() == 0


@pytest.mark.parametrize(
    "token",
    [None, "", "garbage", "a.b.c", "x" * 5000],
    ids=["missing", "empty", "garbage", "three-parts", "oversized"],
)
async def test_bad_tokens_close_4401(token):
    await login_new_user()
    sock = await make_socket(token, transport="access_token" if token is not None else "subprotocol").open()
    assert await sock.receive_close() == 4401


async def test_forged_token_closes_4401():
    _, body = await login_new_user()
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    forged = jwt.encode(claims, "not-the-key-but-long-enough-for-hs256-0123456789", algorithm="HS256")
    sock = await make_socket(forged).open()
    assert await sock.receive_close() == 4401


async def test_alg_none_token_closes_4401():
    _, body = await login_new_user()
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    unsigned = jwt.encode(claims, None, algorithm="none")
    sock = await make_socket(unsigned).open()
    assert await sock.receive_close() == 4401


async def test_refresh_token_closes_4401():
    _, body = await login_new_user()
    sock = await make_socket(body["refresh_token"]).open()
    assert await sock.receive_close() == 4401


async def test_expired_token_closes_4401(settings):
    _, body = await login_new_user()
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    claims["exp"] = int(timezone.now().timestamp()) - 5
    expired = jwt.encode(claims, settings.SIMPLE_JWT["SIGNING_KEY"], algorithm="HS256")
    sock = await make_socket(expired).open()
    assert await sock.receive_close() == 4401


async def test_inactive_user_closes_4401():
    user, body = await login_new_user()
    await database_sync_to_async(type(user).objects.filter(pk=user.pk).update)(is_active=False)
    sock = await make_socket(body["access_token"]).open()
    assert await sock.receive_close() == 4401


@pytest.mark.parametrize("session_id", [str(uuid.uuid4()), "not-a-uuid", "%00", "1' OR '1'='1", "😀"])
async def test_unknown_or_malformed_session_closes_4404(session_id):
    _, body = await login_new_user()
    sock = await make_socket(body["access_token"], query=f"session_id={session_id}").open()
    assert await sock.receive_close() == 4404


async def test_other_users_and_other_tenants_sessions_close_4404():
    tenant = await database_sync_to_async(factories.make_tenant)()
    _, mine = await login_new_user(tenant=tenant)
    _, same_tenant = await login_new_user(tenant=tenant, role=Role.OWNER)
    _, other_tenant = await login_new_user()
    for foreign in (same_tenant["session_id"], other_tenant["session_id"]):
        sock = await make_socket(mine["access_token"], session_id=foreign).open()
        assert await sock.receive_close() == 4404


async def test_another_own_session_in_the_same_tenant_is_allowed():
    user, body = await login_new_user()
    status, created = await api_call("post", "/api/session/create", body["access_token"], {})
    assert status == 201
    sock, ready = await open_ready(body["access_token"], session_id=created["session_id"])
    assert ready["session_id"] == created["session_id"]
    await sock.close()


async def test_own_session_ended_closes_4409():
    _, body = await login_new_user()
    status, _ = await api_call("delete", f"/api/session/{body['session_id']}", body["access_token"])
    assert status == 204
    sock = await make_socket(body["access_token"]).open()
    assert await sock.receive_close() == 4409


async def test_own_session_past_idle_expiry_closes_4409():
    _, body = await login_new_user()
    await database_sync_to_async(RuntimeSession.objects.filter(pk=body["session_id"]).update)(
        idle_expires_at=timezone.now() - timedelta(seconds=1)
    )
    sock = await make_socket(body["access_token"]).open()
    assert await sock.receive_close() == 4409


async def test_requested_session_ended_closes_4409():
    _, body = await login_new_user()
    _, created = await api_call("post", "/api/session/create", body["access_token"], {})
    await api_call("delete", f"/api/session/{created['session_id']}", body["access_token"])
    sock = await make_socket(body["access_token"], session_id=created["session_id"]).open()
    assert await sock.receive_close() == 4409


async def test_socket_cap_per_user_closes_4429(settings):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "WS_MAX_SOCKETS_PER_USER": 2}
    _, body = await login_new_user()
    first, _ = await open_ready(body["access_token"])
    second, _ = await open_ready(body["access_token"])
    await registry().flush()
    third = await make_socket(body["access_token"]).open()
    assert await third.receive_close() == 4429
    await first.close()
    await registry().flush()
    fourth, _ = await open_ready(body["access_token"])
    await second.close()
    await fourth.close()


async def test_the_socket_cap_holds_under_concurrent_handshakes(settings):
    """35 handshakes of one user at once against a cap of 20: the slot is checked and taken
    with nothing in between, so exactly 20 open and 15 are refused with 4429."""
    settings.SYMPHAINY = {**settings.SYMPHAINY, "WS_MAX_SOCKETS_PER_USER": 20}
    _, body = await login_new_user()
    sockets = [make_socket(body["access_token"]) for _ in range(35)]
    await asyncio.gather(*(sock.open() for sock in sockets))
    firsts = await asyncio.gather(*(sock.communicator.receive_output(10) for sock in sockets))
    opened = [f for f in firsts if f["type"] == "websocket.send"]
    refused = [f for f in firsts if f["type"] == "websocket.close"]
    assert (len(opened), len(refused)) == (20, 15)
    assert {f["code"] for f in refused} == {4429}
    for sock in sockets:
        await sock.close()


@pytest.mark.parametrize("origin", [b"http://evil.example", None], ids=["foreign", "missing"])
async def test_cross_origin_is_refused_at_the_handshake(origin):
    _, body = await login_new_user()
    communicator = make_socket(body["access_token"], origin=origin).communicator
    connected, code = await communicator.connect(timeout=5)
    # Closed before accept: daphne turns that into HTTP 403 (checked over a real server
    # in test_live_daphne); in-process it shows as a refused connect.
    assert connected is False
    await communicator.disconnect()


async def test_configured_extra_origin_is_accepted(settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"], origin=b"https://app.example.com")
    await sock.close()


@pytest.mark.parametrize("path", ["/api/runtime/other", "/api/runtime/agent/", "/api/runtime"])
async def test_a_socket_path_with_no_consumer_is_refused_at_the_handshake(path):
    """Denied before accept (HTTP 403 over daphne), not an unhandled routing error."""
    _, body = await login_new_user()
    communicator = WebsocketCommunicator(
        application, path, headers=[(b"origin", b"http://localhost")], subprotocols=["symphainy.v1", f"bearer.{body['access_token']}"]
    )
    connected, _ = await communicator.connect(timeout=5)
    assert connected is False
    await communicator.disconnect()


async def test_an_open_socket_keeps_no_credentials_and_no_routing_layers():
    """Every object an idle socket holds is memory and garbage-collector work for as long
    as it is open: once the socket is ready, its credentials (the token among them) are
    gone, and nothing but the consumer's own loop is suspended above the server."""
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    gc.collect()
    # `type(o) is`, not isinstance: the heap holds weak proxies, which isinstance would call.
    token = body["access_token"]
    assert not [o for o in gc.get_objects() if type(o) is SocketCredentials and o.token == token]
    suspended = [o for o in gc.get_objects() if type(o) is types.CoroutineType and o.cr_frame is not None]
    names = {coroutine.cr_code.co_qualname for coroutine in suspended}
    assert "RuntimeAgentConsumer.__call__" in names
    # channels' OriginValidator, URLRouter and BaseMiddleware layers stay suspended for the
    # socket's life when stacked; the one layer in front of the consumer is ours.
    assert not names & {"OriginValidator.__call__", "URLRouter.__call__", "BaseMiddleware.__call__",
                        "TokenAuthMiddleware.__call__", "ConsumerMixin.as_asgi.<locals>.app",
                        "AsyncConsumer.as_asgi.<locals>.app"}
    await sock.close()


async def test_refused_handshake_sends_no_other_frame():
    sock = await make_socket("garbage").open()
    output = await sock.communicator.receive_output(5)
    assert output["type"] == "websocket.close"
    await sock.communicator.disconnect()


# --- Messages ------------------------------------------------------------------------
@pytest.mark.parametrize("frame", ["[" * 50_000 + "]" * 50_000, '{"type": "ping", "x": NaN}', '{"type": "ping", "x": -Infinity}',
                                   '{"type": "ping", "x": ' + "[" * 65 + "]" * 65 + "}"])
async def test_deep_or_non_finite_frames_get_an_error_frame_and_the_socket_stays(frame, settings):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "WS_MAX_MESSAGE_BYTES": 200_000}
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    await sock.send(frame)
    error = await sock.receive()
    assert error["type"] == "error" and error["error"] == "invalid_json", error
    await sock.send({"type": "ping"})
    assert (await sock.receive())["type"] == "pong"


async def test_ping_pong_and_errors_keep_the_socket_open():
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    await sock.send("{not json")
    error = await sock.receive()
    assert error["type"] == "error" and error["error"] == "invalid_json"
    await sock.send({"type": "no.such.thing"})
    assert (await sock.receive())["error"] == "unknown_message_type"
    await sock.send([1, 2, 3])
    assert (await sock.receive())["error"] == "invalid_message"
    await sock.send({"type": 5})
    assert (await sock.receive())["error"] == "invalid_message"
    await sock.send_bytes(b"\x00\x01")
    assert (await sock.receive())["error"] == "binary_not_supported"
    await sock.send({"type": "ping"})
    assert await sock.receive() == {"type": "pong"}
    await sock.close()


async def test_error_frames_name_the_frame_they_answer():
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    await sock.send({"type": "intent.submit", "intent_type": "no-such-intent", "parameters": {}, "id": "req-7"})
    error = await sock.receive()
    assert error["error"] == "invalid_request"
    assert error["in_reply_to"] == "intent.submit" and error["id"] == "req-7"
    await sock.send({"type": "auth.refresh", "access_token": "garbage", "id": 42})
    error = await sock.receive()
    assert (error["in_reply_to"], error["id"]) == ("auth.refresh", 42)
    await sock.send({"type": "no.such.thing", "id": {"not": "an id"}})
    error = await sock.receive()
    assert error["in_reply_to"] == "no.such.thing" and "id" not in error
    await sock.send("{not json")
    error = await sock.receive()
    assert "in_reply_to" not in error
    await sock.close()


@pytest.mark.parametrize("internal", ["session.ended", "session_ended", "runtime.event", "runtime_event", "websocket.close"])
async def test_client_cannot_name_internal_handlers(internal):
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    await sock.send({"type": internal, "close_code": 1000, "event_type": "x"})
    reply = await sock.receive()
    assert reply["error"] == "unknown_message_type"
    await sock.send({"type": "ping"})
    assert await sock.receive() == {"type": "pong"}
    await sock.close()


async def test_oversized_frame_closes_1009(settings):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "WS_MAX_MESSAGE_BYTES": 1024}
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    await sock.send({"type": "ping", "pad": "x" * 2000})
    assert await sock.receive_close() == 1009


async def test_message_flood_closes_4429(settings):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "WS_MESSAGE_RATE": "5/10s"}
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    for _ in range(5):
        await sock.send({"type": "ping"})
        assert await sock.receive() == {"type": "pong"}
    await sock.send({"type": "ping"})
    assert await sock.receive_close() == 4429


async def test_auth_refresh_extends_the_token():
    user, body = await login_new_user()
    sock, ready = await open_ready(body["access_token"])
    session = await database_sync_to_async(RuntimeSession.objects.get)(pk=body["session_id"])
    pair = await database_sync_to_async(tokens_issue)(session=session)
    await sock.send({"type": "auth.refresh", "access_token": pair.access_token})
    reply = await sock.receive()
    assert reply["type"] == "auth.refreshed"
    assert reply["token_expires_at"] >= ready["token_expires_at"]
    await sock.close()


async def test_auth_refresh_for_another_user_or_session_is_refused():
    _, body = await login_new_user()
    _, other = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    await sock.send({"type": "auth.refresh", "access_token": other["access_token"]})
    reply = await sock.receive()
    assert reply["type"] == "error" and reply["error"] == "not_found"
    # A second login of the same user is another session: refused as well.
    user_id = body["user_id"]
    again = await database_sync_to_async(
        lambda: factories.login(APIClient(), RuntimeSession.objects.select_related("user").get(pk=body["session_id"]).user)
    )()
    await sock.send({"type": "auth.refresh", "access_token": again["access_token"]})
    assert (await sock.receive())["error"] == "not_found"
    await sock.send({"type": "auth.refresh", "access_token": "garbage"})
    assert (await sock.receive())["error"] == "invalid_token"
    await sock.send({"type": "auth.refresh", "access_token": body["refresh_token"]})
    assert (await sock.receive())["error"] == "invalid_token"
    await sock.send({"type": "ping"})
    assert await sock.receive() == {"type": "pong"}
    assert user_id
    await sock.close()


async def test_unrefreshed_token_expiry_closes_4401(settings):
    # Long enough for the login and the handshake on a busy machine, which must come first.
    settings.SIMPLE_JWT = {**settings.SIMPLE_JWT, "ACCESS_TOKEN_LIFETIME": timedelta(seconds=3)}
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    assert await sock.receive_close(timeout=10) == 4401


# --- Revocation ----------------------------------------------------------------------
async def _assert_closes(sock, code: int) -> None:
    assert await sock.receive_close(timeout=2) == code


async def test_logout_closes_the_socket_4409():
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    status, _ = await api_call("post", "/api/auth/logout", body["access_token"])
    assert status == 204
    await _assert_closes(sock, 4409)


async def test_logout_all_closes_every_socket_of_every_session():
    user, body = await login_new_user()
    second = await database_sync_to_async(factories.login)(APIClient(), user)
    a, _ = await open_ready(body["access_token"])
    b, _ = await open_ready(second["access_token"])
    status, _ = await api_call("post", "/api/auth/logout-all", body["access_token"])
    assert status == 204
    await _assert_closes(a, 4409)
    await _assert_closes(b, 4409)


async def test_delete_closes_all_sockets_of_that_session_only():
    user, body = await login_new_user()
    other = await database_sync_to_async(factories.login)(APIClient(), user)
    a1, _ = await open_ready(body["access_token"])
    a2, _ = await open_ready(body["access_token"])
    b, _ = await open_ready(other["access_token"])
    status, _ = await api_call("delete", f"/api/session/{body['session_id']}", other["access_token"])
    assert status == 204
    await _assert_closes(a1, 4409)
    await _assert_closes(a2, 4409)
    await b.send({"type": "ping"})
    assert await b.receive() == {"type": "pong"}
    await b.close()


async def test_refresh_token_reuse_closes_the_socket():
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    client = APIClient()
    first = await database_sync_to_async(client.post)("/api/auth/refresh", {"refresh_token": body["refresh_token"]}, format="json")
    assert first.status_code == 200
    reuse = await database_sync_to_async(client.post)("/api/auth/refresh", {"refresh_token": body["refresh_token"]}, format="json", REMOTE_ADDR="10.9.9.9")
    assert reuse.status_code == 401
    await _assert_closes(sock, 4409)


async def test_expiry_sweep_closes_the_socket():
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    await database_sync_to_async(RuntimeSession.objects.filter(pk=body["session_id"]).update)(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert await database_sync_to_async(sessions_expire_due)() == 1
    await _assert_closes(sock, 4409)


async def test_admin_end_closes_the_socket():
    user, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    await database_sync_to_async(session_end)(
        session_id=uuid.UUID(body["session_id"]), reason=EndReason.ADMIN, caller=Caller(kind=ActorType.ADMIN)
    )
    await _assert_closes(sock, 4409)


async def test_user_deactivated_closes_4401():
    user, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    await database_sync_to_async(user_deactivate)(user=user, caller=Caller.command())
    await _assert_closes(sock, 4401)


async def test_membership_removed_closes_4409():
    user, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    membership = await database_sync_to_async(Membership.objects.select_related("tenant").get)(user=user)
    await database_sync_to_async(membership_remove)(user=user, tenant=membership.tenant, caller=Caller.command())
    await _assert_closes(sock, 4409)


async def test_tenant_suspended_closes_4409():
    user, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    membership = await database_sync_to_async(Membership.objects.select_related("tenant").get)(user=user)
    await database_sync_to_async(tenant_suspend)(tenant=membership.tenant, caller=Caller.command())
    await _assert_closes(sock, 4409)


async def test_recheck_timer_closes_a_socket_whose_end_event_was_lost(settings):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "WS_RECHECK_INTERVAL": timedelta(seconds=0.3)}
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    # Ended behind the service's back: no event is ever published.
    await database_sync_to_async(RuntimeSession.objects.filter(pk=body["session_id"]).update)(
        status=SessionStatus.ENDED, ended_at=timezone.now()
    )
    await _assert_closes(sock, 4409)


async def test_ending_twice_sends_one_event():
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    sid = uuid.UUID(body["session_id"])
    assert await database_sync_to_async(session_end)(session_id=sid, reason=EndReason.ADMIN, caller=Caller.system())
    assert not await database_sync_to_async(session_end)(session_id=sid, reason=EndReason.ADMIN, caller=Caller.system())
    await _assert_closes(sock, 4409)


async def test_activity_touches_the_session_at_most_once_per_interval(settings):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "SESSION_TOUCH_INTERVAL": timedelta(seconds=0)}
    _, body = await login_new_user()
    before = await database_sync_to_async(RuntimeSession.objects.get)(pk=body["session_id"])
    sock, _ = await open_ready(body["access_token"])
    await sock.send({"type": "ping"})
    await sock.receive()
    after = await database_sync_to_async(RuntimeSession.objects.get)(pk=body["session_id"])
    assert after.last_seen_at > before.last_seen_at
    settings.SYMPHAINY = {**settings.SYMPHAINY, "SESSION_TOUCH_INTERVAL": timedelta(minutes=5)}
    await sock.send({"type": "ping"})
    await sock.receive()
    later = await database_sync_to_async(RuntimeSession.objects.get)(pk=body["session_id"])
    assert later.last_seen_at == after.last_seen_at
    await sock.close()


# --- Dependencies down -----------------------------------------------------------------
async def test_database_down_during_the_handshake_closes_1013(monkeypatch):
    from django.db import OperationalError

    _, body = await login_new_user()

    def down(requests):
        raise OperationalError("connection refused")

    monkeypatch.setattr("realtime.handshake.sockets_authorize", down)
    sock = await make_socket(body["access_token"]).open()
    assert await sock.receive_close() == 1013


async def test_a_socket_needs_no_channel_layer_to_open_or_to_hear_its_end(monkeypatch):
    """Sockets hear of changes through the event log: a broken channel layer neither
    refuses them nor keeps them open past their session's end."""
    _, body = await login_new_user()
    from channels.layers import get_channel_layer

    async def down(*args, **kwargs):
        raise ConnectionError("redis is gone")

    layer_type = type(get_channel_layer())
    for name in ("group_add", "group_send", "group_discard", "send", "receive", "new_channel"):
        monkeypatch.setattr(layer_type, name, down)
    sock, _ = await open_ready(body["access_token"])
    await api_call("delete", f"/api/session/{body['session_id']}", body["access_token"])
    assert await sock.receive_close() == 4409


async def test_an_unexpected_error_in_the_check_closes_1011(monkeypatch, caplog):
    _, body = await login_new_user()

    def broken(requests):
        raise RuntimeError("bug")

    monkeypatch.setattr("realtime.handshake.sockets_authorize", broken)
    sock = await make_socket(body["access_token"]).open()
    assert await sock.receive_close() == 1011


# --- The access cache --------------------------------------------------------------------
async def test_a_second_handshake_is_answered_from_the_cache(monkeypatch):
    _, body = await login_new_user()
    first, _ = await open_ready(body["access_token"])

    def no_database(requests):
        raise AssertionError("the database path was taken")

    monkeypatch.setattr("realtime.handshake.sockets_authorize", no_database)
    second, ready = await open_ready(body["access_token"])
    assert ready["session_id"] == body["session_id"]
    await first.close()
    await second.close()


async def test_ending_a_session_drops_its_cached_snapshot_at_once():
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    status, _ = await api_call("delete", f"/api/session/{body['session_id']}", body["access_token"])
    assert status == 204
    await _assert_closes(sock, 4409)
    again = await make_socket(body["access_token"]).open()
    assert await again.receive_close() == 4409


async def test_deactivation_drops_the_snapshot_at_once():
    user, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    await database_sync_to_async(user_deactivate)(user=user, caller=Caller.command())
    await _assert_closes(sock, 4401)
    again = await make_socket(body["access_token"]).open()
    assert await again.receive_close() == 4401


async def test_a_cached_snapshot_is_not_used_past_its_ttl(settings):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "ACCESS_CACHE_TTL": timedelta(seconds=0.3)}
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    await sock.close()
    # Ended behind the services' back: nothing drops the snapshot, only its TTL.
    await database_sync_to_async(RuntimeSession.objects.filter(pk=body["session_id"]).update)(status=SessionStatus.ENDED)

    async def snapshot_expired() -> bool:
        return await access_cache_get(uuid.UUID(body["session_id"])) is None

    await wait_until_async(snapshot_expired, message="the snapshot's TTL to pass")
    again = await make_socket(body["access_token"]).open()
    assert await again.receive_close() == 4409


async def test_a_snapshot_does_not_answer_for_another_session():
    user, body = await login_new_user()
    _, created = await api_call("post", "/api/session/create", body["access_token"], {})
    first, _ = await open_ready(body["access_token"])
    await api_call("delete", f"/api/session/{created['session_id']}", body["access_token"])
    other = await make_socket(body["access_token"], session_id=created["session_id"]).open()
    assert await other.receive_close() == 4409
    await first.close()


async def test_a_closed_socket_leaves_no_timer_behind(settings):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "WS_RECHECK_INTERVAL": timedelta(seconds=0.1)}
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])

    def checks() -> list[asyncio.Task]:
        return [task for task in background_tasks() if "_check" in repr(task.get_coro())]

    # A re-check ran and re-armed the timer: its task seen (polled at every turn of the
    # loop, as it waits for the database), then done.
    [check] = await wait_until_async(checks, interval=0, message="a re-check")
    await wait_until_async(check.done, message="the re-check to finish")
    await sock.close()
    await wait_until_async(lambda: not checks(), message="no re-check left after the close")
