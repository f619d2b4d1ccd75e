"""Agent answers through the full ASGI application in this process: the coalesced writes of
the text so far, the snapshot that waits for a lagging row, the agent's generator closed on
cancel, the per-process bound, a session that stops being active while its agent runs,
and the drain's interruption."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async

from core.models import SessionEvent
from sessions_runtime import agents
from sessions_runtime.models import AgentAnswer, RuntimeSession, SessionStatus
from tests.sockets import login_new_user, open_ready
from tests.waiting import wait_until_async

pytestmark = pytest.mark.django_db(transaction=True)
HERE = "tests.realtime.test_agent_answers"
TOKENS = 60
closed_agents: list[str] = []


async def fast_then_hanging_agent(message):
    """TOKENS tokens at once, then waits for ever (a model that stalls): only a stop ends it."""
    try:
        for n in range(TOKENS):
            yield f"t{n} "
            await asyncio.sleep(0)
        await asyncio.Event().wait()
    finally:
        closed_agents.append(message.text)  # an HTTP stream would be closed here


async def steady_agent(message):
    for n in range(TOKENS):
        await asyncio.sleep(0.02)
        yield f"t{n} "


async def events_until(sock, kinds: set[str], timeout: float = 10) -> list[dict]:
    seen = []
    while True:
        frame = await sock.receive(timeout)
        seen.append(frame)
        if frame.get("type") == "error" or frame.get("event_type") in kinds:
            return seen


@database_sync_to_async
def answer_row() -> AgentAnswer | None:
    return AgentAnswer.objects.first()


async def test_the_text_so_far_is_written_in_steps_and_cancel_closes_the_generator(settings):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "AGENT_HANDLER": f"{HERE}.fast_then_hanging_agent"}
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    await sock.send({"type": "agent.message", "payload": {"text": "question one"}})
    message_id = (await events_until(sock, {"agent.started"}))[-1]["data"]["message_id"]

    async def written():
        row = await answer_row()
        return row if row is not None and row.next_index == TOKENS else None

    row = await wait_until_async(written, message="every token in the row")
    assert row.text == "".join(f"t{n} " for n in range(TOKENS))
    assert row.writes < TOKENS / 5, f"{row.writes} writes for {TOKENS} tokens"
    await sock.send({"type": "agent.cancel", "message_id": message_id})
    frames = await events_until(sock, {"agent.cancelled"}, timeout=2)
    cancelled = frames[-1]["data"]
    assert cancelled["message_id"] == message_id and cancelled["text"] == row.text
    assert "question one" in closed_agents
    assert await answer_row() is None
    await sock.close()


async def test_a_late_socket_gets_every_token_even_when_the_row_lags(settings):
    """The row is written only every 300 ms here: a socket that opens between two writes
    must wait for the row to catch up with the first token it holds, or it would show a gap."""
    settings.SYMPHAINY = {**settings.SYMPHAINY, "AGENT_HANDLER": f"{HERE}.steady_agent",
                          "AGENT_SNAPSHOT_INTERVAL": timedelta(milliseconds=300)}
    _, body = await login_new_user()
    asker, _ = await open_ready(body["access_token"])
    await asker.send({"type": "agent.message", "payload": {"text": "q"}})
    seen = await events_until(asker, {"agent.token"})
    while seen[-1]["data"]["index"] < 15:
        seen.append(await asker.receive())
    late, _ = await open_ready(body["access_token"])
    frames = await events_until(late, {"agent.completed"})
    snapshot = [f["data"] for f in frames if f.get("event_type") == "agent.snapshot"]
    assert len(snapshot) == 1 and snapshot[0]["next_index"] >= 15
    text, expected = snapshot[0]["text"], snapshot[0]["next_index"]
    for frame in frames:
        if frame.get("event_type") == "agent.token":
            assert frame["data"]["index"] == expected
            text += frame["data"]["token"]
            expected += 1
    assert text == frames[-1]["data"]["text"] == "".join(f"t{n} " for n in range(TOKENS))
    await asker.close()
    await late.close()


async def test_over_the_process_bound_nothing_starts(settings):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "AGENT_HANDLER": f"{HERE}.fast_then_hanging_agent",
                          "AGENT_ANSWERS_PER_PROCESS": 1}
    _, first = await login_new_user()
    _, second = await login_new_user()
    one, _ = await open_ready(first["access_token"])
    other, _ = await open_ready(second["access_token"])
    await one.send({"type": "agent.message", "payload": {"text": "a"}})
    message_id = (await events_until(one, {"agent.started"}))[-1]["data"]["message_id"]
    await other.send({"type": "agent.message", "payload": {"text": "b"}})
    error = (await events_until(other, set()))[-1]
    assert error["type"] == "error" and error["error"] == "too_many_answers"
    assert await database_sync_to_async(AgentAnswer.objects.count)() == 1
    await one.send({"type": "agent.cancel", "message_id": message_id})
    await events_until(one, {"agent.cancelled"})
    await one.close()
    await other.close()


async def test_over_the_user_bound_a_message_is_refused_without_a_database_transaction(settings, monkeypatch):
    """The user's answers running here already reach AGENT_ANSWERS_PER_USER: the next one is
    refused in memory (a flood of them queued one locking transaction each on the one
    database thread); once one ends, the next starts."""
    settings.SYMPHAINY = {**settings.SYMPHAINY, "AGENT_HANDLER": f"{HERE}.fast_then_hanging_agent",
                          "AGENT_ANSWERS_PER_USER": 2}
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    started = []
    for text in ("a", "b"):
        await sock.send({"type": "agent.message", "payload": {"text": text}})
        started.append((await events_until(sock, {"agent.started"}))[-1]["data"]["message_id"])
    transactions = []
    real_start = agents.agent_answer_start
    monkeypatch.setattr(agents, "agent_answer_start", lambda **kw: transactions.append(kw) or real_start(**kw))
    await sock.send({"type": "agent.message", "payload": {"text": "c"}})
    error = (await events_until(sock, set()))[-1]
    assert error["type"] == "error" and error["error"] == "too_many_answers"
    assert transactions == [], "a refusal the process could decide alone went to the database"
    await sock.send({"type": "agent.cancel", "message_id": started[0]})
    await events_until(sock, {"agent.cancelled"})
    await sock.send({"type": "agent.message", "payload": {"text": "d"}})
    third = (await events_until(sock, {"agent.started"}))[-1]["data"]["message_id"]
    assert len(transactions) == 1
    for message_id in (started[1], third):
        await sock.send({"type": "agent.cancel", "message_id": message_id})
        await events_until(sock, {"agent.cancelled"})
    await sock.close()


async def test_an_agent_whose_session_stops_being_active_is_stopped(settings):
    """Ended behind the service's back (no event, no answer failed with it): the running
    process notices at its check and fails the answer as session_ended."""
    settings.SYMPHAINY = {**settings.SYMPHAINY, "AGENT_HANDLER": f"{HERE}.fast_then_hanging_agent"}
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    await sock.send({"type": "agent.message", "payload": {"text": "question two"}})
    await events_until(sock, {"agent.token"})
    await database_sync_to_async(
        lambda: RuntimeSession.objects.filter(pk=body["session_id"]).update(status=SessionStatus.ENDED)
    )()
    failed = (await events_until(sock, {"agent.failed"}, timeout=3))[-1]["data"]
    assert failed["reason"] == "session_ended"
    assert "question two" in closed_agents
    await sock.close()


async def test_the_drain_interrupts_this_process_answers(settings):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "AGENT_HANDLER": f"{HERE}.fast_then_hanging_agent"}
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    await sock.send({"type": "agent.message", "payload": {"text": "question three"}})
    await events_until(sock, {"agent.token"})
    assert await agents.agent_answers_interrupt_local(timeout=5) == 1
    failed = (await events_until(sock, {"agent.failed"}))[-1]["data"]
    assert failed["reason"] == "interrupted" and failed["error"]["type"] == "Interrupted"
    assert "question three" in closed_agents
    kinds = await database_sync_to_async(
        lambda: list(SessionEvent.objects.filter(kind__startswith="agent.").values_list("kind", flat=True))
    )()
    assert kinds == ["agent.started", "agent.failed"]
    await sock.close()


async def test_live_frames_queued_together_cross_in_one_notify_within_the_payload_limit():
    """Many answers streaming at once: one NOTIFY per batch of queued frames, not per token."""
    import json

    from realtime.wakeups import LIVE_PAYLOAD_MAX, LiveForwarder

    forwarder = LiveForwarder.__new__(LiveForwarder)  # its queue only: no connection, no task
    forwarder.queue, forwarder._held = asyncio.Queue(), None
    frames = [json.dumps({"p": "x", "s": "s", "f": {"index": n, "token": "t" * 300}}) for n in range(60)]
    for frame in frames[1:]:
        forwarder.queue.put_nowait(frame)
    sent, batches = [], 0
    payload = forwarder._batch(frames[0])
    while True:
        batches += 1
        assert len(payload.encode()) <= LIVE_PAYLOAD_MAX
        batch = json.loads(payload)
        sent += [item["f"]["index"] for item in (batch if isinstance(batch, list) else [batch])]
        if forwarder.queue.empty() and forwarder._held is None:
            break
        payload = forwarder._batch(await forwarder._next())
    assert sent == list(range(60))  # each once, in order
    assert batches <= 4, f"{batches} notifies for 60 frames of ~340 bytes"


async def test_a_backlog_of_live_frames_crosses_in_one_statement_of_several_notifies():
    """Frames queued faster than round trips come back: several NOTIFYs, in order, each
    within the payload limit, in one statement (one round trip)."""
    import json

    from realtime.wakeups import LIVE_CHANNEL, LIVE_NOTIFIES_PER_STATEMENT, LIVE_PAYLOAD_MAX, LiveForwarder

    forwarder = LiveForwarder.__new__(LiveForwarder)  # its queue only: no connection, no task
    forwarder.queue, forwarder._held = asyncio.Queue(), None
    frames = [json.dumps({"p": "x", "s": "s", "f": {"index": n, "token": "t" * 300}}) for n in range(1000)]
    for frame in frames[1:]:
        forwarder.queue.put_nowait(frame)
    sent, statements = [], 0
    sql, params = forwarder._statement(frames[0])
    while True:
        statements += 1
        assert sql.count("pg_notify(%s, %s)") == len(params) // 2 <= LIVE_NOTIFIES_PER_STATEMENT
        for channel, payload in zip(params[::2], params[1::2]):
            assert channel == LIVE_CHANNEL and len(payload.encode()) <= LIVE_PAYLOAD_MAX
            batch = json.loads(payload)
            sent += [item["f"]["index"] for item in (batch if isinstance(batch, list) else [batch])]
        if forwarder.queue.empty() and forwarder._held is None:
            break
        sql, params = forwarder._statement(await forwarder._next())
    assert sent == list(range(1000))  # each once, in order
    assert statements <= 3, f"{statements} round trips for 1,000 frames of ~340 bytes"
