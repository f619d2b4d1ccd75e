"""Intents, executions, state changes and agent messages as seen on a socket."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from rest_framework.test import APIClient

from accounts.models import Role
from sessions_runtime.models import Execution, ExecutionStatus
from tests import factories
from tests.sockets import login_new_user, open_ready

pytestmark = pytest.mark.django_db(transaction=True)


async def events_until(sock, final: set[str], timeout: float = 5) -> list[dict]:
    seen = []
    while True:
        frame = await sock.receive(timeout)
        seen.append(frame)
        if frame.get("type") == "runtime_event" and frame["event_type"] in final:
            return seen


async def test_intent_submit_streams_execution_events_in_order():
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    await sock.send({"type": "intent.submit", "intent_type": "batch", "parameters": {"items": [1, 2, {"fail": True}], "delay_s": 0}})
    accepted = await sock.receive()
    assert accepted["type"] == "intent.accepted" and accepted["replayed"] is False
    frames = await events_until(sock, {"execution.completed", "execution.failed"})
    kinds = [f["event_type"] for f in frames]
    assert kinds[0] == "execution.created" and kinds[1] == "execution.started"
    assert kinds[-1] == "execution.completed"
    assert all(k == "execution.progress" for k in kinds[2:-1])
    progress = [f["data"]["progress"]["processed"] for f in frames if f["event_type"] == "execution.progress"]
    assert progress == sorted(progress) and progress[-1] == 3
    final = frames[-1]["data"]
    assert final["execution_id"] == accepted["execution_id"]
    assert final["progress"] == {"total": 3, "processed": 3, "succeeded": 2, "failed": 1}
    assert final["result"] == {"processed": 3, "succeeded": 2, "failed": 1}
    assert all(f["type"] == "runtime_event" and f["timestamp"] for f in frames)
    await sock.close()


async def test_intent_submit_with_an_unknown_type_is_an_error_frame():
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    await sock.send({"type": "intent.submit", "intent_type": "rm -rf", "parameters": {}})
    error = await sock.receive()
    assert error["type"] == "error" and error["error"] == "invalid_request"
    await sock.send({"type": "intent.submit", "intent_type": "batch", "parameters": {"items": "nope"}})
    assert (await sock.receive())["error"] == "invalid_request"
    await sock.send({"type": "intent.submit", "intent_type": "echo", "parameters": []})
    assert (await sock.receive())["error"] == "invalid_request"
    assert await database_sync_to_async(Execution.objects.count)() == 0
    await sock.close()


async def test_a_viewer_cannot_submit_intents():
    _, body = await login_new_user(role=Role.VIEWER)
    sock, _ = await open_ready(body["access_token"])
    await sock.send({"type": "intent.submit", "intent_type": "echo", "parameters": {}})
    assert (await sock.receive())["error"] == "permission_denied"
    await sock.close()


async def test_idempotent_submit_on_the_socket_replays():
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    frame = {"type": "intent.submit", "intent_type": "echo", "parameters": {"a": 1}, "idempotency_key": "k-1"}
    await sock.send(frame)
    first = await sock.receive()
    await events_until(sock, {"execution.completed"})
    await sock.send(frame)
    again = await sock.receive()
    assert again["type"] == "intent.accepted" and again["replayed"] is True
    assert again["execution_id"] == first["execution_id"]
    await sock.send({**frame, "parameters": {"a": 2}})
    assert (await sock.receive())["error"] == "idempotency_key_reused"
    assert await database_sync_to_async(Execution.objects.count)() == 1
    await sock.close()


async def test_cancel_a_running_batch():
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    await sock.send({"type": "intent.submit", "intent_type": "batch", "parameters": {"items": list(range(200)), "delay_s": 0.02}})
    accepted = await sock.receive()
    await events_until(sock, {"execution.started"})
    client = factories.bearer(APIClient(), body["access_token"])
    response = await database_sync_to_async(client.post)(f"/api/execution/{accepted['execution_id']}/cancel")
    assert response.status_code == 202
    frames = await events_until(sock, {"execution.cancelled", "execution.completed"})
    assert frames[-1]["event_type"] == "execution.cancelled"
    execution = await database_sync_to_async(Execution.objects.get)(pk=accepted["execution_id"])
    assert execution.status == ExecutionStatus.CANCELLED and execution.progress["processed"] < 200
    again = await database_sync_to_async(client.post)(f"/api/execution/{accepted['execution_id']}/cancel")
    assert again.status_code == 409
    await sock.close()


async def test_agent_message_streams_tokens_then_completes():
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    await sock.send({"type": "agent.message", "payload": {"text": "hello brave new world", "context": {}}, "conversation_id": "c1"})
    frames = await events_until(sock, {"agent.completed", "agent.failed"})
    kinds = [f["event_type"] for f in frames]
    assert kinds[0] == "agent.started" and kinds[-1] == "agent.completed"
    tokens = [f["data"]["token"] for f in frames if f["event_type"] == "agent.token"]
    assert len(tokens) == 4 and "".join(tokens) == "HELLO BRAVE NEW WORLD"
    assert [f["data"]["index"] for f in frames if f["event_type"] == "agent.token"] == [0, 1, 2, 3]
    assert {f["data"]["conversation_id"] for f in frames} == {"c1"}
    assert frames[-1]["data"]["text"] == "HELLO BRAVE NEW WORLD"
    await sock.close()


async def test_agent_message_with_a_bad_payload_is_an_error_frame():
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    await sock.send({"type": "agent.message", "payload": {"text": ""}})
    assert (await sock.receive())["error"] == "invalid_request"
    await sock.send({"type": "agent.message"})
    assert (await sock.receive())["error"] == "invalid_request"
    await sock.close()


async def test_state_change_is_pushed_with_the_new_version():
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    client = factories.bearer(APIClient(), body["access_token"])
    response = await database_sync_to_async(client.put)(
        f"/api/session/{body['session_id']}/state", {"data": {"x": 1}}, format="json", HTTP_IF_MATCH="0"
    )
    assert response.status_code == 200, response.content
    frame = await sock.receive()
    assert frame["type"] == "runtime_event" and frame["event_type"] == "session.state_changed"
    assert frame["data"] == {"session_id": body["session_id"], "version": 1}
    await sock.close()


async def leaky_agent(message):
    yield "partial "
    raise RuntimeError("db password is hunter2")


async def test_a_failing_agent_reports_its_type_not_its_text(settings, caplog):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "AGENT_HANDLER": "tests.realtime.test_runtime_events.leaky_agent"}
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    await sock.send({"type": "agent.message", "payload": {"text": "hello", "context": {}}})
    frames = await events_until(sock, {"agent.completed", "agent.failed"})
    assert frames[-1]["event_type"] == "agent.failed"
    assert frames[-1]["data"]["error"] == {"type": "RuntimeError", "message": "The agent failed."}
    assert "hunter2" in caplog.text
    await sock.close()


async def test_a_viewer_cannot_send_agent_messages():
    """agent.message writes the conversation into state: it takes the write permission."""
    from core.caller import Caller
    from core.exceptions import PermissionDenied
    from sessions_runtime.agents import agent_message_run

    _, body = await login_new_user(role=Role.VIEWER)
    sock, _ = await open_ready(body["access_token"])
    await sock.send({"type": "agent.message", "payload": {"text": "hello", "context": {}}})
    error = await sock.receive()
    assert error["type"] == "error" and error["error"] == "permission_denied", error
    assert await sock.nothing()  # no agent.started: nothing ran
    await sock.close()
    viewer = Caller(user_id=body["user_id"], tenant_id=body["tenant_id"], session_id=body["session_id"], role=Role.VIEWER,
                    permissions=tuple(body["permissions"]))
    with pytest.raises(PermissionDenied):
        await agent_message_run(caller=viewer, text="hi", context={}, conversation_id="c")
