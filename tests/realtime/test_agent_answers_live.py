"""Agent answers as streams of the session, over real server processes, on the embedded
SQLite and on PostgreSQL + Redis alike: a late or resuming socket gets the whole answer
(snapshot, then the live tokens, none missing, none twice), the answer outlives the socket
that asked, cancel, bounds, the session's end, and the SIGKILL of the running process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest
from django.conf import settings

from core.models import SessionEvent
from sessions_runtime.models import AgentAnswer
from tests import factories
from tests.live import running
from tests.sockets import close_code_after_frames, connect_ready

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]
POSTGRES = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
WORDS = 40
QUESTION = " ".join(f"w{n}" for n in range(WORDS))
ANSWER = " ".join(f"W{n}" for n in range(WORDS))
SLOW = {"AGENT_TOKEN_DELAY_SECONDS": "0.05"}  # 40 tokens: two seconds, time to join mid-answer


class Tab:
    """One socket of the session, reading frames as a client would."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.frames: list[dict] = []

    @classmethod
    async def open(cls, server, token: str, query: str = "") -> "Tab":
        ws, ready = await connect_ready(server, token, query=query)
        tab = cls(ws)
        tab.frames.append(ready)
        return tab

    async def next(self, timeout: float = 15) -> dict:
        frame = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.frames.append(frame)
        return frame

    async def until(self, check, timeout: float = 15) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.next(max(0.01, deadline - time.monotonic()))
            if check(frame):
                return frame

    async def event(self, *kinds: str, timeout: float = 15) -> dict:
        return await self.until(lambda f: f.get("type") == "runtime_event" and f["event_type"] in kinds, timeout)

    async def send(self, frame: dict) -> None:
        await self.ws.send(json.dumps(frame))

    def of(self, kind: str) -> list[dict]:
        return [f["data"] for f in self.frames if f.get("type") == "runtime_event" and f["event_type"] == kind]


def login(server) -> dict:
    status, body = server.request("POST", "/api/auth/login",
                                  {"email": factories.make_user().email, "password": factories.PASSWORD})
    assert status == 200, body
    return body


async def ask(tab: Tab, text: str = QUESTION) -> str:
    """Send an agent message; the message id from its `agent.started`."""
    return (await ask_started(tab, text))["data"]["message_id"]


async def ask_started(tab: Tab, text: str = QUESTION) -> dict:
    await tab.send({"type": "agent.message", "payload": {"text": text}, "conversation_id": "c"})
    return await tab.event("agent.started")


async def tokens_seen(tab: Tab, count: int) -> None:
    await tab.until(lambda f: f.get("event_type") == "agent.token" and f["data"]["index"] >= count - 1)


def stitched(tab: Tab, message_id: str) -> str:
    """What a client shows: the snapshot's text, then each live token from next_index on;
    fails on a gap or a repeat."""
    snapshot = [s for s in tab.of("agent.snapshot") if s["message_id"] == message_id]
    assert len(snapshot) <= 1, snapshot
    text, expected = (snapshot[0]["text"], snapshot[0]["next_index"]) if snapshot else ("", 0)
    for token in tab.of("agent.token"):
        if token["message_id"] != message_id:
            continue
        assert token["index"] == expected, f"token {token['index']} where {expected} was next"
        text += token["token"]
        expected += 1
    return text


def test_a_late_socket_and_a_resumed_one_get_the_whole_answer(tmp_path):
    with running(tmp_path, **SLOW) as server:
        body = login(server)
        token = body["access_token"]

        async def scenario():
            asker = await Tab.open(server, token)
            started = await ask_started(asker)
            message_id = started["data"]["message_id"]
            await tokens_seen(asker, 5)
            late = await Tab.open(server, token)
            resumed = await Tab.open(server, token, f"since={started['seq'] - 1}&epoch={started['epoch']}")
            await asyncio.gather(*(tab.event("agent.completed") for tab in (asker, late, resumed)))
            for tab in (asker, late, resumed):
                assert stitched(tab, message_id) == ANSWER
                assert tab.of("agent.completed")[0]["text"] == ANSWER
            snapshot = late.of("agent.snapshot")[0]
            assert snapshot["next_index"] >= 5 and snapshot["conversation_id"] == "c"
            assert ANSWER.startswith(snapshot["text"])
            assert late.of("agent.started") == []  # before its time: the snapshot stands for it
            kinds = [f.get("event_type") for f in resumed.frames[1:3]]
            assert kinds == ["agent.started", "agent.snapshot"], resumed.frames[:4]

        asyncio.run(scenario())


def test_the_answer_goes_on_when_the_asking_socket_closes(tmp_path):
    with running(tmp_path, **SLOW) as server:
        body = login(server)

        async def scenario():
            other = await Tab.open(server, body["access_token"])
            asker = await Tab.open(server, body["access_token"])
            message_id = await ask(asker)
            await asker.ws.close()
            completed = await other.event("agent.completed")
            assert completed["data"] == {"conversation_id": "c", "message_id": message_id, "text": ANSWER,
                                         "tokens": WORDS}
            assert stitched(other, message_id) == ANSWER

        asyncio.run(scenario())


def test_cancel_from_another_socket_stops_the_answer_within_a_second(tmp_path):
    with running(tmp_path, **SLOW) as server:
        body = login(server)

        async def scenario():
            asker = await Tab.open(server, body["access_token"])
            other = await Tab.open(server, body["access_token"])
            message_id = await ask(asker)
            await tokens_seen(asker, 3)
            await other.send({"type": "agent.cancel", "message_id": message_id})
            asked = time.monotonic()
            cancelled = (await other.event("agent.cancelled", "agent.completed"))["data"]
            assert time.monotonic() - asked < 1.5
            assert cancelled["message_id"] == message_id and ANSWER.startswith(cancelled["text"])
            assert len(cancelled["text"]) < len(ANSWER)
            finished = await asker.event("agent.cancelled")
            assert finished["data"] == cancelled
            # Finished, or never heard of: not_found, and the socket stays.
            for unknown in (message_id, "not-an-id"):
                await other.send({"type": "agent.cancel", "message_id": unknown})
                error = await other.until(lambda f: f["type"] == "error")
                assert error["error"] == "not_found" and error["in_reply_to"] == "agent.cancel"

        asyncio.run(scenario())


def test_answers_in_flight_are_bounded_per_user(tmp_path):
    with running(tmp_path, **SLOW) as server:
        body = login(server)

        async def scenario():
            tab = await Tab.open(server, body["access_token"])
            for _ in range(3):
                await ask(tab)
            await tab.send({"type": "agent.message", "payload": {"text": "one more"}})
            error = await tab.until(lambda f: f["type"] == "error")
            assert error["error"] == "too_many_answers" and error["in_reply_to"] == "agent.message"
            assert len(tab.of("agent.started")) == 3  # nothing started for the fourth
            await tab.event("agent.completed")  # one ends: room for another
            await ask(tab, "again")

        asyncio.run(scenario())


def test_ending_the_session_fails_its_answers_and_stops_their_agents(tmp_path):
    with running(tmp_path, **SLOW) as server:
        body = login(server)

        async def scenario():
            tab = await Tab.open(server, body["access_token"])
            message_id = await ask(tab)
            await tokens_seen(tab, 2)
            status, _ = await asyncio.to_thread(server.request, "DELETE", f"/api/session/{body['session_id']}", None,
                                                body["access_token"])
            assert status == 204
            assert await close_code_after_frames(tab.ws) == 4409
            return message_id

        message_id = asyncio.run(scenario())
        # Recorded with the end, once; the agent stopped: no other terminal event follows.
        failed = SessionEvent.objects.filter(session_id=body["session_id"], kind__startswith="agent.").exclude(
            kind__in=["agent.started"]).values_list("kind", "data")
        assert [(kind, data["message_id"], data["reason"]) for kind, data in failed] == [
            ("agent.failed", message_id, "session_ended")]
        assert not AgentAnswer.objects.exists()
        assert "Traceback" not in server.log()


def test_an_answer_whose_process_is_killed_ends_as_interrupted_within_ten_seconds(tmp_path):
    """Asked on process A, watched from process B; A is SIGKILLed mid-answer: B's sweep
    fails the answer whose lease A no longer renews."""
    with running(tmp_path, **SLOW) as a, running(tmp_path) as b:  # the default heartbeat and lease
        body = login(a)

        async def scenario():
            watcher = await Tab.open(b, body["access_token"])
            asker = await Tab.open(a, body["access_token"])
            message_id = await ask(asker)
            await tokens_seen(asker, 3)
            os.killpg(a.process.pid, signal.SIGKILL)
            killed = time.monotonic()
            failed = (await watcher.event("agent.failed", "agent.completed", timeout=20))["data"]
            assert time.monotonic() - killed < 10
            assert failed["message_id"] == message_id and failed["reason"] == "interrupted"

        asyncio.run(scenario())


@pytest.mark.skipif(not POSTGRES, reason="live tokens cross processes over PostgreSQL's NOTIFY")
def test_a_socket_on_another_process_gets_the_snapshot_and_tokens_and_cancels(tmp_path):
    with running(tmp_path, **SLOW) as a, running(tmp_path) as b:
        body = login(a)
        token = body["access_token"]

        async def scenario():
            asker = await Tab.open(a, token)
            message_id = await ask(asker)
            await tokens_seen(asker, 5)
            late = await Tab.open(b, token)
            await tokens_seen(late, 10)
            await late.send({"type": "agent.cancel", "message_id": message_id})
            asked = time.monotonic()
            cancelled = (await late.event("agent.cancelled", "agent.completed"))["data"]
            assert time.monotonic() - asked < 1.5
            assert late.of("agent.snapshot")[0]["next_index"] >= 5
            # Every token sent before the cancel reached the late socket, after its snapshot.
            assert cancelled["text"].startswith(stitched(late, message_id))

        asyncio.run(scenario())


@pytest.mark.skipif(POSTGRES, reason="the embedded SQLite's own limit (docs/protocol.md#agent-answers)")
def test_on_sqlite_another_process_gets_the_snapshot_and_the_end_but_no_live_tokens(tmp_path):
    """Two processes on one SQLite file: what docs/protocol.md says a socket on the other
    process gets, the recorded events and a snapshot when it opens, and no live token."""
    with running(tmp_path, **SLOW) as a, running(tmp_path) as b:
        token = login(a)["access_token"]

        async def scenario():
            watching = await Tab.open(b, token)
            asker = await Tab.open(a, token)
            message_id = await ask(asker)
            await tokens_seen(asker, 5)
            late = await Tab.open(b, token)
            snapshot = (await late.event("agent.snapshot"))["data"]
            assert snapshot["message_id"] == message_id and snapshot["next_index"] >= 1
            for tab in (watching, late):
                completed = (await tab.event("agent.completed", "agent.failed"))["data"]
                assert completed["text"] == ANSWER
                assert tab.of("agent.token") == []
            assert watching.of("agent.started")[0]["message_id"] == message_id
            await asker.event("agent.completed")
            assert stitched(asker, message_id) == ANSWER  # live on the process that runs it

        asyncio.run(scenario())
